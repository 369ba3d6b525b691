"""Import the project's plugins, modules and scripts by path, for the unit tests.

They live in role folders and script folders that are not Python packages (Ansible finds them by
path), so the tests load them the same way. Registered in sys.modules under the given name so
dataclasses and intra-module imports resolve.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import jinja2
import yaml

REPO = Path(__file__).resolve().parents[2]


def load(name: str, relative_path: str) -> ModuleType:
    """Load the file at REPO/relative_path as module `name`."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def container_interface() -> dict:
    """The container's interface (roles/stack_container/vars/main.yml), its templates resolved."""
    values = yaml.safe_load((REPO / "roles/stack_container/vars/main.yml").read_text())
    return {
        key: jinja2.Template(value).render(values) if isinstance(value, str) else value
        for key, value in values.items()
    }


def default_models() -> list[dict]:
    """The default model list (`localai_models` in group_vars/all/models.yml, the one place).

    Its entries are plain values (sizes the plan cannot know are "auto"), so they are used as
    read; a Jinja expression in one would need Ansible to render it, and fails here instead.
    """
    models = yaml.safe_load((REPO / "group_vars/all/models.yml").read_text())["localai_models"]
    templated = [f"{e['name']}.{k}" for e in models for k, v in e.items() if "{{" in str(v)]
    assert not templated, f"default model fields need Ansible to render: {templated}"
    return models
