"""Bad input (issue 7): each case is a real run of the site playbook on the serving target.

Every run must stop in the "Preflight checks" play, before any change, with a message that names
the variable and the fix, and the stack that was serving before must still serve afterwards
(nothing lost). The runs only read, so they run side by side (BAD_INPUT_WORKERS, default 4):
the module costs about as much as a few playbook runs, not one per case.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from scenario import API_KEY, BASE_URL, PROJECT, TEST_VARS

SCENARIO = PROJECT / "molecule" / "default"
FIXTURES = PROJECT / ".cache" / "fixtures"
PREFLIGHT_PLAY = "PLAY [Preflight checks (change nothing)]"
STACK_PLAY = "PLAY [Provision the localai-llamacpp stack]"
# Substituted in a case's vars and messages: a port a listener holds during the runs.
LISTEN_PORT = "{listen_port}"


def fixture_sha(name: str) -> str:
    """The sha256 of a fixture model, from the fixtures' SHA256SUMS (as host_vars reads it)."""
    sums = (FIXTURES / "SHA256SUMS").read_text(encoding="utf-8")
    match = re.search(rf"^([0-9a-f]{{64}})  {re.escape(name)}$", sums, re.MULTILINE)
    assert match, f"{name} is not in {FIXTURES}/SHA256SUMS"
    return match.group(1)


def fixture_models() -> list[dict[str, Any]]:
    """The deployed model list (molecule/shared/vars/airgap-test.yml) with its lookups resolved."""
    models = copy.deepcopy(TEST_VARS["localai_models"])
    for model in models:
        model["src"] = str(FIXTURES / model["file"])
        model["sha256"] = fixture_sha(model["file"])
    return models


def models_with(index: int, change: dict[str, Any], drop: tuple[str, ...] = ()) -> list[dict]:
    """The full fixture list with one entry changed (a -e override replaces the whole list)."""
    models = fixture_models()
    models[index].update(change)
    for field in drop:
        del models[index][field]
    return models


# id, extra vars, substrings the failure output must hold (the variable, then the fix).
CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "wrong-sha256",
        {"localai_models": models_with(0, {"sha256": "0" * 64})},
        ["localai_models entry 'SmolLM2-135M-Instruct': field 'sha256'", "fix: correct sha256"],
    ),
    (
        "model-src-missing",
        {"localai_models": models_with(0, {"src": str(FIXTURES / "no-such-model.gguf")})},
        ["localai_models[0] (name 'SmolLM2-135M-Instruct'): field 'src'", "does not exist", "fix:"],
    ),
    (
        "chat-template-file-missing",
        {
            "localai_models": models_with(
                0, {"chat_template_file": str(FIXTURES / "no-such-template.jinja")}
            )
        },
        [
            "localai_models[0] (name 'SmolLM2-135M-Instruct'): field 'chat_template_file'",
            "does not exist",
            "fix:",
        ],
    ),
    (
        "cuda-cannot-build-for-capability",
        {
            "nvidia_toolkit_cuda_architectures_override": "61",
            "nvidia_toolkit_cuda_version": "13.0",
        },
        [
            "compute capability 6.1) needs CUDA 12.x",
            "nvidia_toolkit_cuda_version is '13.0'",
            "set nvidia_toolkit_cuda_version: '12.9'",
        ],
    ),
    (
        "context-per-slot-too-small",
        {"localai_models": models_with(0, {"ctx_size": 1024, "parallel": 2})},
        [
            "fields 'ctx_size'/'parallel' give 512 tokens per slot",
            "less than prompt_tokens + max_tokens = 768",
            "fix: raise ctx_size to at least 1536",
        ],
    ),
    (
        "duplicate-alias",
        {"localai_models": models_with(1, {"alias": "gpt-3.5-turbo"})},
        [
            "field 'alias' 'gpt-3.5-turbo' is already used by localai_models[0]",
            "fix: give each model its own alias",
        ],
    ),
    (
        "port-in-use",
        {"stack_service_port": LISTEN_PORT},
        [
            f"Port {LISTEN_PORT} is already in use on this host",
            "choose another port with stack_service_port",
        ],
    ),
    (
        "too-little-disk",
        {"models_disk_margin_mb": 1_000_000_000},
        ["lacks space", "models_disk_margin_mb 1000000000 MiB", "fix: free space"],
    ),
    (
        "api-key-placeholder",
        {"litellm_config_master_key": "none"},
        ["litellm_config_master_key is not a usable key", "fix: put a random key in ansible-vault"],
    ),
    (
        "api-key-too-short",
        {"litellm_config_master_key": "sk-short"},
        ["litellm_config_master_key is not a usable key", "16+ characters"],
    ),
    (
        "bind-address-not-an-address",
        {"stack_service_bind_address": "not-an-ip"},
        ["stack_service_bind_address (an IPv4 address such as 0.0.0.0", "got 'not-an-ip'"],
    ),
    (
        "no-proxy-workers",
        {"stack_service_litellm_workers": 0},
        ["stack_service_litellm_workers is '0'", "fix: set it to a whole number of 1 or more"],
    ),
    (
        "unknown-gpu-layout",
        {"localai_gpu_layout": "bogus"},
        ["localai_gpu_layout is 'bogus'", "fix: one of auto, replicas, split, single"],
    ),
    (
        "gpu-index-not-on-this-host",
        {"localai_gpu_indexes": [7]},
        [
            "localai_gpu_indexes lists GPU 7, which this host does not have",
            "GPUs here: none",
            "fix: list indexes from `nvidia-smi -L`",
        ],
    ),
    (
        "unknown-gpu-mode",
        {"localai_gpu_mode": "bogus"},
        ["gpu_mode is 'bogus'", "fix: one of cpu, gpu"],
    ),
    (
        "gpu-mode-the-service-cannot-run",
        {"localai_gpu_mode": "replicas"},
        ["stack_service_gpu_mode (localai_gpu_mode in group_vars) is 'replicas'", "fix: keep"],
    ),
    (
        "model-entry-missing-kind",
        {"localai_models": models_with(0, {}, drop=("kind",))},
        ["localai_models[0] (name 'SmolLM2-135M-Instruct'): field 'kind' is missing", "fix: add"],
    ),
    (
        "model-entry-unknown-field",
        {"localai_models": models_with(1, {"colour": "blue"})},
        ["localai_models[1] (name 'all-MiniLM-L6-v2'): field 'colour' is unknown", "fix: remove"],
    ),
    (
        "model-src-without-sha256",
        {"localai_models": models_with(0, {"sha256": ""})},
        ["field 'sha256' is missing for a controller file", "models_allow_unverified: true"],
    ),
    (
        "compromised-litellm",
        {"stack_image_litellm_version": "1.82.7"},
        ["stack_image_litellm_version=1.82.7", "compromised releases and are refused"],
    ),
]


def case_id(case: Any) -> str:
    """The id of a CASES row (plain tuple or pytest.param)."""
    return case.values[0] if hasattr(case, "values") else case[0]


def substitute(value: Any, port: int) -> Any:
    """Put the listener's port where a case says {listen_port} (an int where the whole value)."""
    if value == LISTEN_PORT:
        return port
    if isinstance(value, str):
        return value.replace(LISTEN_PORT, str(port))
    return value


def ansible_playbook() -> str:
    """The ansible-playbook of the Python that runs the tests (molecule's venv)."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    return (
        str(beside) if beside.exists() else shutil.which("ansible-playbook") or "ansible-playbook"
    )


def playbook_env() -> dict[str, str]:
    """molecule's provisioner environment (the verifier inherits it), with plain output."""
    env = dict(os.environ)
    env.setdefault("ANSIBLE_ROLES_PATH", str(PROJECT / "roles"))
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT / "collections"))
    env.update(
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    return env


def run_converge(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """Run molecule's converge playbook (site.yml) on the target again, with extra arguments."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    assert inventory, "run under `molecule verify` (MOLECULE_INVENTORY_FILE is not set)"
    return subprocess.run(
        [ansible_playbook(), "-i", inventory, str(SCENARIO / "converge.yml"), *args],
        env=playbook_env(),
        cwd=SCENARIO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_site(extra_vars: dict[str, Any], workdir: Path, name: str) -> subprocess.CompletedProcess:
    """Run molecule's converge playbook (site.yml) with the case's vars as a -e file."""
    vars_file = workdir / f"{name}.json"
    vars_file.write_text(json.dumps(extra_vars), encoding="utf-8")
    return run_converge("-e", f"@{vars_file}", timeout=900)


def chat_serves() -> tuple[int, str]:
    """One tiny chat through the published proxy port with the molecule key: (status, body)."""
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    request = urllib.request.Request(
        f"{BASE_URL}/chat/completions",
        data=json.dumps({**body, "max_tokens": 2}).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except OSError as err:
        return 0, str(err)


def start_listener(host) -> tuple[int, str]:
    """Hold a free TCP port on the target with a throwaway HTTP server; return (port, pid)."""
    port = int(
        host.check_output(
            'python3 -c \'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); '
            "print(s.getsockname()[1])'"
        )
    )
    pid = host.check_output(
        f"setsid nohup python3 -m http.server {port} --bind 127.0.0.1 "
        ">/dev/null 2>&1 < /dev/null & echo $!"
    )
    for _ in range(50):
        if host.run(f"ss -H -ltn 'sport = :{port}' | grep -q LISTEN").rc == 0:
            return port, pid
        time.sleep(0.2)
    host.run(f"kill {pid}")
    pytest.fail(f"the test listener on port {port} did not start")


@pytest.fixture(scope="module")
def listener(host):
    """A port in use on the target during the runs (cleaned up afterwards)."""
    port, pid = start_listener(host)
    yield port
    host.run(f"kill {pid}")


@pytest.fixture(scope="module")
def runs(listener) -> dict[str, tuple[subprocess.CompletedProcess, list[str]]]:
    """Every case's playbook run, side by side: {id: (result, expected substrings)}."""
    status, body = chat_serves()
    assert status == 200, f"the stack does not serve before the runs: {status} {body}"
    todo = {}
    for case in CASES:
        if hasattr(case, "marks") and case.marks:
            continue
        name, extra, expected = case
        extra = {key: substitute(value, listener) for key, value in extra.items()}
        todo[name] = (extra, [substitute(text, listener) for text in expected])
    workers = int(os.environ.get("BAD_INPUT_WORKERS", "4"))
    with (
        tempfile.TemporaryDirectory(prefix="bad-input-") as tmp,
        ThreadPoolExecutor(workers) as pool,
    ):
        futures = {
            name: pool.submit(run_site, extra, Path(tmp), name) for name, (extra, _) in todo.items()
        }
        return {name: (futures[name].result(), todo[name][1]) for name in todo}


def flat(text: str) -> str:
    """Output with whitespace runs collapsed: a message may be wrapped or folded."""
    return re.sub(r"\s+", " ", text.replace("\\n", " "))


def recap_of(output: str) -> dict[str, int]:
    """The counters of the target's PLAY RECAP line."""
    match = re.search(r"^localai-default\s*:\s*(.+)$", output, re.MULTILINE)
    assert match, f"no PLAY RECAP line for localai-default:\n{output[-3000:]}"
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.mark.parametrize(("name", "extra_vars", "expected"), CASES, ids=[case_id(c) for c in CASES])
def test_bad_input_fails_in_preflight_and_keeps_serving(runs, name, extra_vars, expected):
    """rc != 0, failed in the preflight play, nothing changed, message says what and how."""
    result, expected = runs[name]
    output = result.stdout + result.stderr
    tail = output[-6000:]
    assert result.returncode != 0, f"the run succeeded with {extra_vars}:\n{tail}"
    failure = re.search(r"^(fatal|failed): \[localai-default\]", output, re.MULTILINE)
    assert failure, f"no failed task on the target:\n{tail}"
    last_play = output.rfind("PLAY [", 0, failure.start())
    assert output.startswith(PREFLIGHT_PLAY, last_play), f"failed outside preflight:\n{tail}"
    assert STACK_PLAY not in output, f"the stack play ran:\n{tail}"
    recap = recap_of(output)
    assert recap.get("changed") == 0, recap
    assert recap.get("failed", 0) >= 1, recap
    message = flat(output[failure.start() :])
    for text in expected:
        assert text in message, f"{text!r} is not in the failure:\n{output[failure.start() :]}"
    assert API_KEY not in output, "the API key is in the playbook output"
    status, body = chat_serves()
    assert status == 200, f"the old stack stopped serving: {status} {body}"
