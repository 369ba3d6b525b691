"""Filters of the models role's record: the lock file and the models placed on a host.

The code lives in plugins/plugin_utils/model_lock.py (the models role and the unit tests).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.localai.llamacpp.plugins.plugin_utils.model_lock import (
    models_lock,
    models_placed,
)


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {"models_lock": models_lock, "models_placed": models_placed}
