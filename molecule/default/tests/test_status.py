"""playbooks/status.yml on the serving target: what runs, read from the host, changing nothing."""

from __future__ import annotations

import json
import os
import subprocess

from scenario import CONTAINER, PROJECT
from test_bad_input import ansible_playbook, playbook_env


def run_status() -> tuple[list[str], dict]:
    """Run the status playbook against molecule's inventory: (the target's lines, the stats)."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    assert inventory, "run under `molecule verify` (MOLECULE_INVENTORY_FILE is not set)"
    result = subprocess.run(
        [ansible_playbook(), "-i", inventory, str(PROJECT / "playbooks/status.yml")],
        env={**playbook_env(), "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"},
        cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    ((host, stats),) = report["stats"].items()
    last = report["plays"][0]["tasks"][-1]
    assert last["task"]["name"] == "Show the status"
    return last["hosts"][host]["msg"], stats


def test_status_names_the_running_image_programs_models_and_load(host):
    image = host.check_output(f"docker inspect --format '{{{{.Config.Image}}}}' {CONTAINER}")
    lines, stats = run_status()
    assert stats["changed"] == 0 and stats["failures"] == 0
    assert lines[0].startswith(f"localai-llamacpp.service active; image {image} (container running")
    assert "not the deployed image" not in lines[0]
    assert "litellm RUNNING: the proxy, port 28000" in lines
    assert "balancer RUNNING: one frontend per alias, least connections" in lines
    balanced = next(line for line in lines if line.startswith("balancer gpt-3.5-turbo -> "))
    assert balanced.startswith("balancer gpt-3.5-turbo -> llamacpp-chat: UP, in flight 0, queued 0")
    chat = next(line for line in lines if line.startswith("llamacpp-chat "))
    assert chat == (
        "llamacpp-chat RUNNING: gpt-3.5-turbo = SmolLM2-135M-Instruct, 2 slots, ctx 2048,"
        " in flight 0, waiting 0"
    )
    embed = next(line for line in lines if line.startswith("llamacpp-embeddings "))
    assert embed.startswith("llamacpp-embeddings RUNNING: text-embedding-ada-002 = all-MiniLM")
    assert embed.endswith("in flight 0, waiting 0")
    assert not any(line.startswith("GPU ") for line in lines)  # a CPU host has none to show


def test_status_says_a_stopped_engine(host):
    """A program supervisord holds stopped reads as such, and its engine as not answering."""
    host.check_output(f"docker exec {CONTAINER} supervisorctl stop llamacpp-embeddings")
    try:
        lines, _ = run_status()
        embed = next(line for line in lines if line.startswith("llamacpp-embeddings "))
        assert embed.startswith("llamacpp-embeddings STOPPED: ")
        assert embed.endswith("in flight unknown (no answer on port 8080)")
    finally:
        host.check_output(f"docker exec {CONTAINER} supervisorctl start llamacpp-embeddings")
