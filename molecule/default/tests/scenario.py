"""What the default scenario deploys, named once for its test modules."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
# The target publishes the stack's port 28000 on the controller's loopback: default as 28100,
# debian13 (which runs these endpoint checks too) as 28300 (molecule.yml, published_ports).
PORTS = {"default": 28100, "debian13": 28300}
SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "default")
BASE_URL = f"http://127.0.0.1:{PORTS[SCENARIO]}/v1"
# The default scenario also serves a model with Infinity (host_vars/localai-default/infinity.yml).
INFINITY_PROGRAMS = {"infinity-embeddings"} if SCENARIO == "default" else set()
# The test overrides every molecule target gets (its host_vars link to them).
TEST_VARS = yaml.safe_load((PROJECT / "molecule/shared/vars/airgap-test.yml").read_text())
API_KEY = TEST_VARS["litellm_config_master_key"]
# The llama.cpp commit the role builds by default; the tests' source archive holds the same one.
LLAMACPP_REF = yaml.safe_load((PROJECT / "roles/stack_image/defaults/main.yml").read_text())[
    "stack_image_llamacpp_ref"
]
CONTAINER = "localai-llamacpp"
UNIT = "/etc/systemd/system/localai-llamacpp.service"
