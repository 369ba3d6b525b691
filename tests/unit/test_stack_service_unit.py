"""The systemd unit's `docker run` line: how the container gets its GPUs.

Rendered with Jinja2 as Ansible renders it (its `comment` filter stubbed), so the GPU flags a
real host gets are checked here, where no GPU is.
"""

import shlex
from pathlib import Path

import jinja2
import pytest
from project import REPO, container_interface

TEMPLATE = Path(REPO, "roles/stack_service/templates/localai-llamacpp.service.j2")

BASE = {
    "ansible_managed": "managed",
    "stack_service_config_dir": "/etc/localai-llamacpp",
    "stack_service_container_name": "localai-llamacpp",
    "stack_service_env_file": "/etc/localai-llamacpp/stack.env",
    "stack_service_run_proxy": True,
    "stack_service_bind_address": "0.0.0.0",
    "stack_service_port": 28000,
    "stack_service_engine_publish_address": "",
    "stack_service_engines": [],
    "stack_service_models_dir": "/opt/localai-llamacpp/models",
    "stack_service_logs_dir": "/var/log/localai-llamacpp",
    "stack_service_image": "localai-llamacpp:0c1e57098bba-sm61-0123456789ab",
}


def render(**overrides) -> str:
    env = jinja2.Environment(trim_blocks=True, keep_trailing_newline=True)
    env.filters["comment"] = lambda text: f"# {text}"
    return env.from_string(TEMPLATE.read_text()).render(
        {**container_interface(), **BASE, **overrides}
    )


def docker_run(unit: str) -> list[str]:
    """The ExecStart command line, as the shell would split it."""
    line = unit.split("ExecStart=", 1)[1].split("\nExecStop=", 1)[0]
    return shlex.split(line.replace("\\\n", " "))


@pytest.mark.parametrize(("devices", "wanted"), [([], ["all"]), ([0, 2], ["0", "2"])])
def test_cdi_names_each_gpu_as_a_cdi_device(devices, wanted):
    unit = render(
        stack_service_gpu_mode="gpu",
        __stack_service_gpu_access="cdi",
        stack_service_gpu_devices=devices,
    )
    argv = docker_run(unit)
    assert "--gpus" not in argv
    got = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--device"]
    assert got == [f"nvidia.com/gpu={name}" for name in wanted]
    assert "nvidia-cdi-refresh.service" in unit.split("[Service]")[0]


@pytest.mark.parametrize(("devices", "flag"), [([], "all"), ([0, 2], '"device=0,2"')])
def test_runtime_uses_the_gpus_flag(devices, flag):
    argv = docker_run(
        render(
            stack_service_gpu_mode="gpu",
            __stack_service_gpu_access="runtime",
            stack_service_gpu_devices=devices,
        )
    )
    assert argv[argv.index("--gpus") + 1] == flag
    assert "--device" not in argv


def test_cpu_hosts_get_no_gpu_flags():
    unit = render(stack_service_gpu_mode="cpu", stack_service_gpu_devices=[])
    argv = docker_run(unit)
    assert "--gpus" not in argv
    assert "--device" not in argv
    assert "nvidia-cdi-refresh" not in unit
    # Only the proxy's port is published.
    assert argv[argv.index("--publish") + 1] == "0.0.0.0:28000:8000"
