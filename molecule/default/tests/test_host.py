"""The host layer: GPU facts in CPU mode and a working nested Docker engine."""

from __future__ import annotations

import json


def test_cpu_mode_facts_are_recorded(host):
    """No NVIDIA GPU in the container: the role records CPU mode and no CUDA architectures."""
    facts = json.loads(host.file("/etc/ansible/facts.d/nvidia_toolkit.fact").content_string)
    assert facts["mode"] == "cpu"
    assert facts["cuda_architectures"] == ""
    assert facts["gpus"] == []


def test_docker_service_is_running_and_enabled(host):
    docker = host.service("docker")
    assert docker.is_running
    assert docker.is_enabled


def test_nested_engine_runs_a_container(host):
    """Import a two-file image from the target's own echo binary and run it: no registry needed."""
    script = r"""
set -eu
root=$(mktemp -d)
for f in /usr/bin/echo $(ldd /usr/bin/echo | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$f")"; cp -L "$f" "$root$f"
done
tar -C "$root" -c . | docker import - localai-test/echo:latest >/dev/null
rm -rf "$root"
docker run --rm localai-test/echo:latest /usr/bin/echo nested-engine-ok
"""
    result = host.run(script)
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "nested-engine-ok"
