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


def default_models(gpu_mode: str = "gpu") -> list[dict]:
    """The default model list (`localai_models` in group_vars/all.yml), as Ansible templates it.

    The one place the defaults are named; string values that are Jinja expressions are rendered
    with `localai_gpu_mode` set, and all-digit results become ints, as Ansible's native types do.
    """
    models = yaml.safe_load((REPO / "group_vars/all.yml").read_text())["localai_models"]
    env = jinja2.Environment()

    def render(value: object) -> object:
        if isinstance(value, str) and "{{" in value:
            value = env.from_string(value).render(localai_gpu_mode=gpu_mode)
            return int(value) if value.isdigit() else value
        return value

    return [{key: render(value) for key, value in entry.items()} for entry in models]
