"""Security (issue 7): secrets stay root-only and out of logs, the container and unit are locked.

The API key of the molecule target is known (host_vars), so every place it must never be is
grepped for it: the logs directory, the journal, the unit, the image, Ansible's own output.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest
from scenario import API_KEY, CONTAINER, PROJECT, UNIT
from test_bad_input import recap_of, run_converge

CONFIG_DIR = "/etc/localai-llamacpp"
LOGS_DIR = "/var/log/localai-llamacpp"
REQUIREMENTS = PROJECT / "roles" / "stack_image" / "files" / "requirements-stack.txt"
COMPROMISED_LITELLM = ("1.82.7", "1.82.8")


def inspect(host, what: str) -> dict:
    """`docker inspect` of a container or image, as a dict."""
    return json.loads(host.check_output(f"docker inspect {shlex.quote(what)}"))[0]


def grep_key(host, *paths: str) -> str:
    """Files under paths that hold the key (as root, binary files included)."""
    quoted = " ".join(shlex.quote(p) for p in paths)
    return host.run(f"grep -rlaF -- {shlex.quote(API_KEY)} {quoted} 2>/dev/null").stdout.strip()


def test_env_file_is_root_only(host):
    env_file = host.file(f"{CONFIG_DIR}/stack.env")
    assert env_file.is_file
    assert env_file.user == "root"
    assert env_file.group == "root"
    assert env_file.mode == 0o600, oct(env_file.mode)
    assert f"LITELLM_MASTER_KEY={API_KEY}" in env_file.content_string


def test_every_file_holding_the_key_is_root_only(host):
    """The key lives in stack.env (or master.key) only, each 0600 root:root."""
    holders = grep_key(host, CONFIG_DIR).splitlines()
    assert holders, "the key is in no file under the config dir"
    assert set(holders) <= {f"{CONFIG_DIR}/stack.env", f"{CONFIG_DIR}/master.key"}, holders
    for path in holders:
        secret = host.file(path)
        assert (secret.user, secret.group, secret.mode) == ("root", "root", 0o600), path
    litellm_yaml = host.file(f"{CONFIG_DIR}/litellm.yaml").content_string
    assert "os.environ/LITELLM_MASTER_KEY" in litellm_yaml


def test_key_is_not_in_the_logs(host):
    assert host.file(LOGS_DIR).is_directory
    assert host.run(f"ls -A {LOGS_DIR}").stdout.strip(), "the logs directory is empty"
    assert grep_key(host, LOGS_DIR) == ""


def test_key_is_not_in_the_journal_or_container_output(host):
    journal = host.run("journalctl --no-pager -u localai-llamacpp -u docker").stdout
    assert journal, "the journal is empty"
    assert API_KEY not in journal
    logs = host.run(f"docker logs {CONTAINER}")
    assert API_KEY not in logs.stdout + logs.stderr


def test_key_is_not_in_the_unit_or_the_image(host):
    unit = host.file(UNIT).content_string
    assert API_KEY not in unit
    assert "--env-file" in unit
    image = inspect(host, CONTAINER)["Config"]["Image"]
    assert API_KEY not in host.check_output(f"docker image inspect {shlex.quote(image)}")
    assert API_KEY not in host.check_output(f"docker history --no-trunc {shlex.quote(image)}")


def test_container_is_non_root_without_capabilities(host):
    container = inspect(host, CONTAINER)
    config, hostconfig = container["Config"], container["HostConfig"]
    assert config["User"] not in ("", "0", "root"), config["User"]
    assert [cap.upper() for cap in hostconfig["CapDrop"] or []] == ["ALL"], hostconfig["CapDrop"]
    assert not hostconfig["CapAdd"], hostconfig["CapAdd"]
    assert any(opt.startswith("no-new-privileges") for opt in hostconfig["SecurityOpt"] or [])
    assert hostconfig["ReadonlyRootfs"] is True
    assert hostconfig["Privileged"] is False
    # Every process in the container: not root, and no effective or bounding capabilities.
    status = host.check_output(
        f"docker exec {CONTAINER} sh -c 'cat /proc/[0-9]*/status 2>/dev/null'"
    )
    uids = re.findall(r"^Uid:\s+(\d+)\s+(\d+)", status, re.MULTILINE)
    assert uids
    assert all(real != "0" and effective != "0" for real, effective in uids), uids
    for field in ("CapEff", "CapPrm", "CapBnd"):
        values = set(re.findall(rf"^{field}:\s+([0-9a-f]+)", status, re.MULTILINE))
        assert values == {"0" * 16}, (field, values)


def test_only_the_proxy_port_is_published(host):
    ports = inspect(host, CONTAINER)["NetworkSettings"]["Ports"]
    assert set(ports) == {"8000/tcp"}, ports


def test_unit_is_hardened(host):
    keys = ["NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"]
    keys += ["ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups"]
    keys += ["RestrictSUIDSGID", "LockPersonality"]
    shown = host.check_output(
        "systemctl show localai-llamacpp " + " ".join(f"-p {key}" for key in keys)
    )
    values = dict(line.split("=", 1) for line in shown.splitlines())
    assert values["NoNewPrivileges"] == "yes", values
    assert values["ProtectSystem"] == "strict", values
    assert values["ProtectHome"] == "read-only", values
    for key in keys[3:]:
        assert values[key] == "yes", (key, values)


def test_requirements_are_hash_pinned_and_exclude_compromised_litellm():
    """Every requirement is `name==version` with at least one sha256 (pip --require-hashes)."""
    text = REQUIREMENTS.read_text(encoding="utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", re.sub(r"(?m)^\s*#.*\n?", "", text).strip())
    assert len(blocks) > 10
    for block in blocks:
        assert re.match(r"^[A-Za-z0-9._-]+==[^\s\\]+ \\", block), block
        assert "--hash=sha256:" in block, block
    litellm = re.search(r"(?m)^litellm==(\S+)", text)
    assert litellm, "litellm is not pinned"
    assert litellm.group(1) not in COMPROMISED_LITELLM


def test_image_litellm_is_not_a_compromised_release(host):
    image = inspect(host, CONTAINER)["Config"]["Image"]
    version = host.check_output(
        f"docker run --rm --entrypoint /opt/localai/venv/bin/python {shlex.quote(image)} -c "
        "'import importlib.metadata as m; print(m.version(\"litellm\"))'"
    )
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert version not in COMPROMISED_LITELLM


@pytest.fixture(scope="module")
def verbose_rerun() -> subprocess.CompletedProcess:
    """A full rerun of the site playbook with -v --diff, as a user would run it."""
    return run_converge("-v", "--diff", timeout=1200)


def test_key_is_not_in_verbose_ansible_output(verbose_rerun):
    output = verbose_rerun.stdout + verbose_rerun.stderr
    assert API_KEY not in output, "the API key is printed in the playbook output"
    assert verbose_rerun.returncode == 0, output[-6000:]
    assert recap_of(output).get("failed") == 0
    # The tasks that handle it ran and were hidden, not skipped.
    assert "the output has been hidden" in output
