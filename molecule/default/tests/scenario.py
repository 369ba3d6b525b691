"""What the default scenario deploys, named once for its test modules."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
# The target publishes the stack's port 28000 on the controller's loopback as 28100.
BASE_URL = "http://127.0.0.1:28100/v1"
API_KEY = "molecule-test-key-0123456789abcdef"  # host_vars/localai-default.yml
CONTAINER = "localai-llamacpp"
UNIT = "/etc/systemd/system/localai-llamacpp.service"
