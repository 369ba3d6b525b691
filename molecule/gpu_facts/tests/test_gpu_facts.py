"""Verify nvidia_toolkit on a container whose fake nvidia-smi reports three Tesla P40s."""

import json

import pytest

FACTS = "/etc/ansible/facts.d/nvidia_toolkit.fact"


@pytest.fixture(scope="module")
def facts(host):
    """The facts file the role writes for operators and for ansible_local."""
    fact_file = host.file(FACTS)
    assert fact_file.exists, f"{FACTS} was not written"
    assert fact_file.user == "root"
    assert fact_file.mode == 0o644
    return json.loads(fact_file.content_string)


def test_mode_is_gpu(facts):
    assert facts["mode"] == "gpu"


def test_three_p40s_are_listed(facts):
    assert len(facts["gpus"]) == 3
    assert [g["index"] for g in facts["gpus"]] == [0, 1, 2]
    for gpu in facts["gpus"]:
        assert gpu["name"] == "Tesla P40"
        assert gpu["compute_cap"] == "6.1"
        assert gpu["memory_mib"] == 24576
    assert facts["driver_version"] == "535.247.01"


def test_cuda_architectures_are_deduplicated(facts):
    assert facts["cuda_architectures"] == "61"


def test_auto_selects_cuda_12_for_pascal(facts):
    assert facts["cuda_version_requested"] == "auto"
    # 12.9 on driver 535: through the 12.9 image's forward-compatibility branch for data-center
    # GPUs (its NVIDIA_REQUIRE_CUDA lists brand=tesla,driver>=535,driver<536).
    assert facts["cuda_version_selected"] == "12.9"


def test_facts_file_is_read_by_ansible(host):
    local = host.ansible("setup", "filter=ansible_local")["ansible_facts"]["ansible_local"]
    assert local["nvidia_toolkit"]["cuda_architectures"] == "61"


def test_test_mode_is_recorded_and_no_nvidia_source_is_left(host, facts):
    assert "not installed" in facts["container_toolkit_version"]
    # The unreachable-repository case must not leave a source that breaks `apt-get update`.
    assert not host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources").exists


def test_daemon_json_registers_the_nvidia_runtime(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert "default-runtime" not in config


def test_daemon_json_turns_on_cdi_and_keeps_the_administrators_keys(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["features"]["cdi"] is True
    # What the administrator had (prepare.yml) is still there.
    assert config["log-level"] == "warn"
    assert config["runtimes"]["other"] == {"path": "/usr/bin/runc"}


def test_docker_runs_with_the_nvidia_runtime(host):
    assert host.service("docker").is_running
    runtimes = host.run("docker info --format '{{json .Runtimes}}'")
    journal = host.run("journalctl -u docker --no-pager -n 30").stdout
    assert runtimes.rc == 0, f"docker info failed: {runtimes.stderr}\n{journal}"
    assert "nvidia" in json.loads(runtimes.stdout), f"{runtimes.stdout}\n{journal}"


def test_docker_comes_from_the_pinned_repository_source(host):
    """docker_engine_source: docker, against the signed stand-in of Docker's repository."""
    assert host.package("python3-debian").is_installed  # deb822_repository needs it
    source = host.file("/etc/apt/sources.list.d/docker.sources").content_string
    assert "URIs: http://127.0.0.1:8080" in source, source
    assert "Signed-By: /etc/apt/keyrings/docker.asc" in source, source
    version = host.package("docker-ce").version
    assert version.startswith("5:28.5.2"), version
    assert host.package("docker-buildx-plugin").is_installed
