"""Filters of the docker_engine role: which distribution packages make a working engine.

Distributions package Docker differently, and the differences break first runs:

- Docker 23 and newer build with BuildKit only through the buildx CLI plugin; without it,
  `DOCKER_BUILDKIT=1 docker build` stops with "BuildKit is enabled but the buildx component is
  missing or broken" (Docker 23.0 release notes, "BuildKit is now the default builder"). Ubuntu
  22.04/24.04 and Debian 13 package buildx apart (`docker-buildx`), and their docker.io does not
  depend on it (Debian 13: a Recommends of docker-cli; Ubuntu: not even that).
- Debian 13 split the client out of docker.io into `docker-cli`, which docker.io only recommends:
  an install without recommends has a daemon and no `docker` command.

So the role reads `apt-cache policy` for the packages involved and adds what the engine it is
about to install (or already has) needs.
"""

from __future__ import annotations

import re
from typing import Any

# The first Docker release whose CLI needs the buildx plugin to build with BuildKit.
BUILDX_FROM_MAJOR = 23

_PACKAGE = re.compile(r"^(\S+):$")
_FIELD = re.compile(r"^\s+(Installed|Candidate):\s*(\S+)")


def docker_engine_apt_policy(stdout: str | None) -> dict[str, dict[str, str]]:
    """Parse `apt-cache policy PKG...` into {package: {"installed": v, "candidate": v}}.

    A version apt reports as "(none)" becomes "". A package apt does not know at all is left out
    (apt-cache prints nothing for it, or only a warning on stderr).

    Example: "docker.io:\\n  Installed: (none)\\n  Candidate: 26.1.5+dfsg1-9+b1\\n..." ->
    {"docker.io": {"installed": "", "candidate": "26.1.5+dfsg1-9+b1"}}.
    """
    policy: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in (stdout or "").splitlines():
        header = _PACKAGE.match(line)
        if header:
            current = policy.setdefault(header.group(1), {"installed": "", "candidate": ""})
            continue
        field = _FIELD.match(line)
        if field and current is not None:
            value = "" if field.group(2) == "(none)" else field.group(2)
            current[field.group(1).lower()] = value
    return policy


def _upstream_major(version: str) -> int | None:
    """Upstream major of a Debian version: "5:28.5.2-1~debian.13" -> 28, "26.1.5+dfsg1" -> 26."""
    match = re.match(r"^(?:\d+:)?(\d+)\.", version)
    return int(match.group(1)) if match else None


def docker_engine_distribution_plan(
    policy: dict[str, dict[str, str]], packages: list[str], engine: str = "docker.io"
) -> dict[str, Any]:
    """The packages to install for the distribution's engine, and why.

    Args:
        policy: docker_engine_apt_policy() of the engine, docker-cli and docker-buildx.
        packages: the configured packages (docker_engine_distribution_packages).
        engine: the package that carries the daemon.

    Returns:
        {"packages": [...], "engine_version": "26.1.5+dfsg1-9", "buildx": bool, "cli": bool,
        "error": ""}; error names what is missing and the fix when the distribution cannot give a
        working engine (no engine package, or an engine of 23+ without a buildx package).
    """
    entry = policy.get(engine, {})
    version = entry.get("installed") or entry.get("candidate") or ""
    plan: dict[str, Any] = {
        "packages": list(packages),
        "engine_version": version,
        "buildx": False,
        "cli": False,
        "error": "",
    }
    if not version:
        plan["error"] = (
            f"apt has no candidate for {engine}: enable the component that carries it (Ubuntu: "
            "universe) or set docker_engine_source: docker"
        )
        return plan
    if policy.get("docker-cli", {}).get("candidate") or policy.get("docker-cli", {}).get(
        "installed"
    ):
        plan["cli"] = True
        if "docker-cli" not in plan["packages"]:
            plan["packages"].append("docker-cli")
    major = _upstream_major(version)
    if major is not None and major >= BUILDX_FROM_MAJOR:
        buildx = policy.get("docker-buildx", {})
        if not (buildx.get("candidate") or buildx.get("installed")):
            plan["error"] = (
                f"{engine} {version} builds images only with the buildx plugin, and apt has no "
                "docker-buildx package: enable the component that carries it (Ubuntu: universe) "
                "or set docker_engine_source: docker (Docker's repository ships "
                "docker-buildx-plugin)"
            )
            return plan
        plan["buildx"] = True
        if "docker-buildx" not in plan["packages"]:
            plan["packages"].append("docker-buildx")
    return plan


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {
            "docker_engine_apt_policy": docker_engine_apt_policy,
            "docker_engine_distribution_plan": docker_engine_distribution_plan,
        }
