"""The image (issue 3): built for this host, the pinned pieces inside, supervised, non-root."""

from __future__ import annotations

import configparser
import re

from scenario import CONTAINER, INFINITY_PROGRAMS, LLAMACPP_REF, UNIT

PROGRAMS = {"llamacpp-chat", "llamacpp-embeddings", "litellm", "balancer"} | INFINITY_PROGRAMS


def image_of_unit(host) -> str:
    """The image reference the systemd unit runs (the role's stack_image_tag)."""
    unit = host.file(UNIT).content_string
    match = re.search(r"^\s+(localai-llamacpp:\S+)\s*$", unit, re.MULTILINE)
    assert match, unit
    return match.group(1)


def test_image_exists_with_expected_tag(host):
    """CPU build of the default ref: <name>:<commit[:12]>-cpu-<12 hex digest of the context>."""
    image = image_of_unit(host)
    assert re.fullmatch(rf"localai-llamacpp:{LLAMACPP_REF[:12]}-cpu-[0-9a-f]{{12}}", image), image
    assert host.run(f"docker image inspect {image}").rc == 0


def test_llama_server_version_runs_in_image(host):
    image = image_of_unit(host)
    result = host.run(
        f"docker run --rm --entrypoint /opt/localai/bin/llama-server {image} --version"
    )
    assert result.rc == 0, result.stderr
    assert "version:" in (result.stdout + result.stderr)
    # The binary reports the commit it was built from: the pinned default.
    assert LLAMACPP_REF[:7] in (result.stdout + result.stderr)


def test_litellm_imports_at_pinned_version(host):
    image = image_of_unit(host)
    result = host.run(
        f"docker run --rm --entrypoint /opt/localai/venv/bin/python {image} -c "
        "'import litellm, importlib.metadata as m; print(m.version(\"litellm\"))'"
    )
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "1.108.0"


def test_image_user_is_not_root(host):
    image = image_of_unit(host)
    user = host.check_output(f"docker image inspect -f '{{{{.Config.User}}}}' {image}")
    assert user not in ("", "0", "root"), user
    uid = host.check_output(f"docker exec {CONTAINER} id -u")
    assert uid != "0"


def test_supervisor_runs_every_program(host):
    status = host.run(f"docker exec {CONTAINER} supervisorctl status")
    running = {line.split()[0] for line in status.stdout.splitlines() if " RUNNING " in f" {line} "}
    assert running >= PROGRAMS, status.stdout


def test_litellm_workers_are_not_replaced_for_a_slow_health_answer(host):
    """uvicorn kills a worker that answers its health ping later than 5 s (its default), which
    a CPU-starved worker under load does: the running proxy is given 60 s."""
    pid = host.check_output(f"docker exec {CONTAINER} supervisorctl pid litellm")
    cmd = host.check_output(f"docker exec {CONTAINER} cat /proc/{pid}/cmdline").split("\x00")
    workers = int(cmd[cmd.index("--num_workers") + 1])  # one per core, up to 4
    if workers > 1:
        assert cmd[cmd.index("--timeout_worker_healthcheck") + 1] == "60", cmd
    else:  # one worker: no supervisor to ping it
        assert "--timeout_worker_healthcheck" not in cmd, cmd


def test_every_log_is_bounded_by_configuration(host):
    """Each supervised program logs to its own file in /logs with a size limit and backups."""
    conf = configparser.RawConfigParser()
    conf.read_string(host.file("/etc/localai-llamacpp/supervisor/programs.conf").content_string)
    programs = {s.split(":", 1)[1]: conf[s] for s in conf.sections() if s.startswith("program:")}
    assert set(programs) == PROGRAMS
    for name, section in programs.items():
        assert section["stdout_logfile"] == f"/logs/{name}.log"
        assert section["stdout_logfile_maxbytes"] == "1MB"
        assert section["stdout_logfile_backups"] == "2"
        assert section["redirect_stderr"] == "true"
    supervisord = host.check_output(f"docker exec {CONTAINER} cat /etc/localai/supervisord.conf")
    assert re.search(r"^logfile_maxbytes\s*=\s*\d+", supervisord, re.MULTILINE), supervisord
    logs = host.file("/var/log/localai-llamacpp")
    assert logs.is_directory
    for name in PROGRAMS:
        assert host.file(f"/var/log/localai-llamacpp/{name}.log").exists
