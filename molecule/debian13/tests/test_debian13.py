"""Debian 13 without recommends: the engine the docker_engine role installs can build the image.

The endpoint and image checks of the default scenario run here too (linked modules); these
check what is particular to this release.
"""

from __future__ import annotations

import json


def test_target_is_debian_13_without_recommends(host):
    assert host.system_info.distribution == "debian"
    assert host.system_info.release.split(".")[0] == "13"
    # Like a minimal server install: packages that are only recommended are not installed.
    config = host.run("apt-config dump APT::Install-Recommends").stdout
    assert 'APT::Install-Recommends "false"' in config, config


def test_the_split_cli_and_buildx_were_installed(host):
    for package in ("docker.io", "docker-cli", "docker-buildx"):
        assert host.package(package).is_installed, package
    assert host.package("docker.io").version.startswith("26.")


def test_docker_builds_with_buildkit_through_buildx(host):
    """What a 23+ CLI needs for `DOCKER_BUILDKIT=1 docker build`, the role's build command."""
    version = host.run("docker buildx version")
    assert version.rc == 0, version.stderr
    builders = host.run("docker buildx ls")
    assert builders.rc == 0 and "docker" in builders.stdout, builders.stdout + builders.stderr


def test_engine_is_docker_26(host):
    result = host.run("docker version --format '{{json .Server}}'")
    assert result.rc == 0, result.stderr
    assert json.loads(result.stdout)["Version"].startswith("26.")
