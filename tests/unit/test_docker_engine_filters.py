"""docker_engine's package plan: the CLI and buildx come along where the release splits them."""

import pytest
from project import load

f = load("docker_engine_filters", "roles/docker_engine/filter_plugins/docker_engine.py")

CONFIGURED = ["docker.io", "python3-docker"]

# `apt-cache policy docker.io docker-cli docker-buildx` as each release prints it (abridged
# version tables). Debian 12 knows neither docker-cli nor docker-buildx: apt prints nothing.
BOOKWORM = """\
docker.io:
  Installed: (none)
  Candidate: 20.10.24+dfsg1-1+deb12u1+b6
  Version table:
     20.10.24+dfsg1-1+deb12u1+b6 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
"""
TRIXIE = """\
docker.io:
  Installed: (none)
  Candidate: 26.1.5+dfsg1-9+deb13u1+b1
  Version table:
     26.1.5+dfsg1-9+deb13u1+b1 500
        500 http://deb.debian.org/debian trixie/main amd64 Packages
docker-cli:
  Installed: (none)
  Candidate: 26.1.5+dfsg1-9+deb13u1+b1
  Version table:
     26.1.5+dfsg1-9+deb13u1+b1 500
        500 http://deb.debian.org/debian trixie/main amd64 Packages
docker-buildx:
  Installed: (none)
  Candidate: 0.13.1+ds1-3
  Version table:
     0.13.1+ds1-3 500
        500 http://deb.debian.org/debian trixie/main amd64 Packages
"""
NOBLE = """\
docker.io:
  Installed: (none)
  Candidate: 27.5.1-0ubuntu3~24.04.2
  Version table:
     27.5.1-0ubuntu3~24.04.2 500
        500 http://archive.ubuntu.com/ubuntu noble-updates/universe amd64 Packages
docker-buildx:
  Installed: (none)
  Candidate: 0.14.1-0ubuntu1~24.04.1
  Version table:
     0.14.1-0ubuntu1~24.04.1 500
        500 http://archive.ubuntu.com/ubuntu noble-updates/universe amd64 Packages
"""


def plan(stdout: str) -> dict:
    return f.docker_engine_distribution_plan(f.docker_engine_apt_policy(stdout), CONFIGURED)


def test_policy_parses_installed_and_candidate():
    policy = f.docker_engine_apt_policy(TRIXIE.replace("Installed: (none)", "Installed: 1:2.3", 1))
    assert policy["docker.io"] == {"installed": "1:2.3", "candidate": "26.1.5+dfsg1-9+deb13u1+b1"}
    assert policy["docker-buildx"] == {"installed": "", "candidate": "0.13.1+ds1-3"}
    assert set(policy) == {"docker.io", "docker-cli", "docker-buildx"}


def test_debian_12_engine_20_needs_nothing_more():
    result = plan(BOOKWORM)
    assert result["packages"] == CONFIGURED
    assert (result["buildx"], result["cli"], result["error"]) == (False, False, "")


def test_debian_13_gets_the_split_cli_and_buildx():
    result = plan(TRIXIE)
    assert result["packages"] == [*CONFIGURED, "docker-cli", "docker-buildx"]
    assert result["engine_version"] == "26.1.5+dfsg1-9+deb13u1+b1"
    assert result["buildx"] and result["cli"]


def test_ubuntu_24_04_gets_buildx():
    result = plan(NOBLE)
    assert result["packages"] == [*CONFIGURED, "docker-buildx"]


def test_installed_engine_version_wins_over_the_candidate():
    # An old 20.10 engine already installed stays (state: present): no buildx needed for it.
    stdout = NOBLE.replace("Installed: (none)", "Installed: 20.10.21-0ubuntu1~22.04.3", 1)
    assert plan(stdout)["buildx"] is False


def test_engine_23_without_buildx_package_fails_with_the_fix():
    stdout = NOBLE.split("docker-buildx:", maxsplit=1)[0]
    result = plan(stdout)
    assert "docker-buildx" in result["error"]
    assert "docker_engine_source: docker" in result["error"]


def test_no_engine_candidate_fails_with_the_fix():
    result = plan("")
    assert "no candidate for docker.io" in result["error"]


@pytest.mark.parametrize(
    ("version", "major"),
    [
        ("5:28.5.2-1~debian.13~trixie", 28),
        ("26.1.5+dfsg1-9", 26),
        ("20.10.24+dfsg1", 20),
        ("x", None),
    ],
)
def test_upstream_major(version, major):
    assert f._upstream_major(version) == major
