"""Filters of the model list: its validation, its files, a chat template's place.

The rules live in plugins/plugin_utils/model_list.py (the models role's preflight and bundle
tasks, the engine plan and the unit tests share them).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.localai.llamacpp.plugins.plugin_utils.model_list import (
    chat_template_path,
    model_files,
    models_validate,
)


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {
            "models_validate": models_validate,
            "model_files": model_files,
            "chat_template_path": chat_template_path,
        }
