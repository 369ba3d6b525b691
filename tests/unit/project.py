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

REPO = Path(__file__).resolve().parents[2]


def load(name: str, relative_path: str) -> ModuleType:
    """Load the file at REPO/relative_path as module `name`."""
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
