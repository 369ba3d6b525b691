"""The container's interface (roles/stack_container) is what the image and its users agree on."""

from __future__ import annotations

import re

from ansible_collections.localai.llamacpp.plugins.plugin_utils.engine_plan import (
    INFINITY_COMMAND,
    LLAMA_SERVER_COMMAND,
)
from project import REPO, container_interface
from test_bundle import render_dockerfile

INTERFACE = container_interface()


def test_the_engine_plan_runs_the_programs_where_the_image_puts_them():
    prefix = INTERFACE["stack_container_prefix"]
    commands = (LLAMA_SERVER_COMMAND, INFINITY_COMMAND)
    assert commands == (f"{prefix}/bin/llama-server", f"{prefix}/embed-venv/bin/infinity_emb")


def test_the_image_runs_as_the_interface_user_with_its_programs_under_the_prefix():
    dockerfile = render_dockerfile()
    uid, gid = INTERFACE["stack_container_uid"], INTERFACE["stack_container_gid"]
    assert f"--uid {uid} --gid {gid}" in dockerfile
    assert f"\nUSER {uid}:{gid}\n" in dockerfile
    assert f'"{INTERFACE["stack_container_prefix"]}/venv/bin/supervisord"' in dockerfile
    assert (
        INTERFACE["stack_container_python"]
        == f"{INTERFACE['stack_container_prefix']}/venv/bin/python"
    )


def test_the_tests_that_read_the_published_port_name_the_interface_port():
    port = f"{INTERFACE['stack_container_proxy_port']}/tcp"
    for test in ("default/tests/test_endpoint.py", "default/tests/test_security.py"):
        text = (REPO / "molecule" / test).read_text()
        assert re.search(rf'== \{{"{port}"\}}', text), f"{test} does not check {port}"
