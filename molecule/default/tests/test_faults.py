"""Faults (issue 7): every process, the container and the host come back on their own."""

from __future__ import annotations

import subprocess
import time

import pytest
from scenario import CONTAINER
from test_bad_input import chat_serves, fixture_sha, run_site

MODEL = "/opt/localai-llamacpp/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def serves_within(seconds: float) -> float:
    """Poll a tiny chat through the published port until it answers 200; return the wait."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            if chat_serves()[0] == 200:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"not serving again within {seconds} s")


EMBED_PROBE = (
    "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:8080/v1/embeddings',"
    " data=b'{\"input\": \"x\"}', headers={'Content-Type': 'application/json'}), timeout=5)"
)


def embeddings_serve(host) -> bool:
    """One embedding straight from the engine inside the container."""
    python = "/opt/localai/venv/bin/python"
    return host.run("docker exec %s %s -c %s", CONTAINER, python, EMBED_PROBE).rc == 0


def pid_of(host, program: str) -> str:
    return host.check_output(f"docker exec {CONTAINER} supervisorctl pid {program}")


@pytest.mark.parametrize("program", ["llamacpp-embeddings", "litellm", "balancer"])
def test_killed_program_is_restarted(host, program):
    before = pid_of(host, program)
    assert host.run(f"docker exec {CONTAINER} supervisorctl signal KILL {program}").rc == 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = host.run(f"docker exec {CONTAINER} supervisorctl pid {program}").stdout.strip()
        if now.isdigit() and now not in ("0", before) and embeddings_serve(host):
            break
        time.sleep(1)
    else:
        pytest.fail(f"{program} did not come back within 60 s")
    assert serves_within(60) <= 60
    if program == "litellm":
        # Its worker processes belong to the new master: none of the killed one's outlived it
        # (orphans would hold port 8000 and serve unsupervised).
        master = pid_of(host, program).strip()
        parents = host.check_output(
            "docker exec %s bash -c %s",
            CONTAINER,
            'for s in /proc/[0-9]*/status; do d=${s%/status}; [ "$d" = /proc/$$ ] && continue; '
            "grep -qa multiprocessing $d/cmdline 2>/dev/null && "
            "awk '/^PPid/{print $2}' $s; done; true",
        ).split()
        # (One worker runs inside the master: then there are none to check.)
        assert set(parents) <= {master}, f"workers' parents {parents}, master {master}"


def test_killed_container_is_restarted_by_systemd(host):
    assert host.run(f"docker kill {CONTAINER}").rc == 0
    serves_within(240)
    assert host.service("localai-llamacpp").is_running


def test_stack_comes_back_after_a_reboot_of_the_host(host):
    """Restart the whole target container: systemd, Docker and the unit start on their own."""
    subprocess.run(["docker", "restart", "localai-default"], check=True, timeout=120)
    serves_within(300)


def test_corrupted_model_is_repaired_by_the_next_run(host, tmp_path):
    good = fixture_sha("SmolLM2-135M-Instruct.Q4_1.gguf")
    host.run(f"printf 'corrupt' | dd of={MODEL} bs=1 seek=4096 conv=notrunc status=none")
    assert host.check_output(f"sha256sum {MODEL}").split()[0] != good
    result = run_site({}, tmp_path, "repair")
    assert result.returncode == 0, result.stdout[-4000:]
    assert host.check_output(f"sha256sum {MODEL}").split()[0] == good
    serves_within(120)
