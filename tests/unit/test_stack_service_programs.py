"""programs.conf: the supervised programs a host gets (the GPU exporter, the proxy's start)."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import jinja2
import pytest
from project import REPO, container_interface

TEMPLATE = Path(REPO, "roles/stack_service/templates/programs.conf.j2")
ENGINE = {"program": "llamacpp-chat", "args": ["--port", "8090"], "gpu": None}
BASE = {
    "ansible_managed": "managed",
    "stack_service_engines": [ENGINE],
    "stack_service_gpu_mode": "cpu",
    "stack_service_run_proxy": True,
    "stack_service_litellm_workers": 1,
    "stack_service_litellm_worker_healthcheck_timeout": 60,
    "stack_service_log_max_bytes": "50MB",
    "stack_service_log_backups": 5,
    "stack_service_metrics": True,
    "stack_service_gpu_metrics": True,
    "stack_service_gpu_metrics_port": 9400,
}


def programs(**overrides) -> dict[str, dict[str, str]]:
    """The rendered file, parsed as supervisord reads it: program name -> its settings."""
    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True)
    env.filters["comment"] = lambda text, decoration="": f"{decoration}{text}"
    env.filters["quote"] = shlex.quote
    env.filters["bool"] = bool
    text = env.from_string(TEMPLATE.read_text()).render(
        {**container_interface(), **BASE, **overrides}
    )
    parser = configparser.RawConfigParser(inline_comment_prefixes=None)
    parser.read_string(text)
    return {
        section.removeprefix("program:"): dict(parser[section])
        for section in parser.sections()
        if section.startswith("program:")
    }


def test_gpu_hosts_run_the_gpu_exporter_on_loopback():
    found = programs(stack_service_gpu_mode="gpu")
    assert shlex.split(found["gpu-metrics"]["command"]) == [
        "/opt/localai/venv/bin/nvitop-exporter",
        "--bind-address",
        "127.0.0.1",
        "--port",
        "9400",
        "--interval",
        "5",
    ]
    assert found["gpu-metrics"]["autorestart"] == "true"
    assert found["gpu-metrics"]["stdout_logfile"] == "/logs/gpu-metrics.log"


@pytest.mark.parametrize(
    "overrides",
    [
        {"stack_service_gpu_mode": "cpu"},
        {"stack_service_gpu_mode": "gpu", "stack_service_gpu_metrics": False},
        # A fleet node has no proxy to serve the route.
        {"stack_service_gpu_mode": "gpu", "stack_service_run_proxy": False},
    ],
)
def test_no_gpu_exporter_elsewhere(overrides):
    assert "gpu-metrics" not in programs(**overrides)


@pytest.mark.parametrize("workers", [1, 4])
def test_the_proxy_starts_from_empty_shared_series(workers):
    command = programs(stack_service_litellm_workers=workers)["litellm"]["command"]
    argv = shlex.split(command)
    assert argv[:2] == ["/bin/bash", "-c"]
    script = argv[2]
    reset = 'rm -rf "$PROMETHEUS_MULTIPROC_DIR"; mkdir -p "$PROMETHEUS_MULTIPROC_DIR"'
    assert reset in script
    assert script.index(reset) < script.index("exec /opt/localai/venv/bin/litellm")
    assert f"--num_workers {workers}" in script


def test_without_metrics_the_proxy_starts_directly():
    command = programs(stack_service_metrics=False)["litellm"]["command"]
    assert command.startswith("/opt/localai/venv/bin/litellm --config /config/litellm.yaml")
