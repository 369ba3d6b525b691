"""Filters of the engine plan: the engines of a host's models and the GPUs they may use.

The plan lives in plugins/plugin_utils/engine_plan.py (group_vars/all/wiring.yml, the
litellm_config preflight, bench/render_configs.yml and the unit tests share it).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.localai.llamacpp.plugins.plugin_utils.engine_plan import (
    engine_plan,
    select_gpus,
)


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {"engine_plan": engine_plan, "select_gpus": select_gpus}
