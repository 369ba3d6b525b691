"""Filters of the bundle role: names of bundle pieces, wheel platforms, models from a bundle."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The oldest glibc a manylinux wheel can target (manylinux1 = glibc 2.5, PEP 600).
_MANYLINUX_OLDEST_MINOR = 5
# PEP 600's aliases of the legacy tags: manylinux1 = 2.5, manylinux2010 = 2.12, 2014 = 2.17.
_LEGACY = {5: "manylinux1", 12: "manylinux2010", 17: "manylinux2014"}
# Debian architecture -> the machine name wheel tags use.
_WHEEL_MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}


def bundle_slug(name: str) -> str:
    """A folder-safe name of an image or release: "nvidia/cuda:12.9.1-runtime-ubuntu24.04" ->
    "nvidia-cuda-12.9.1-runtime-ubuntu24.04"."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def bundle_python_tag(python3_version: str) -> str:
    """pip's --python-version of a Debian python3 package version: "3.11.2-1+b1" -> "3.11".

    Raises ValueError for a version that is not one (the collection found no python3).
    """
    match = re.match(r"^(?:\d+:)?(3)\.(\d+)", python3_version or "")
    if not match:
        raise ValueError(f"not a python3 package version: {python3_version!r}")
    return f"{match.group(1)}.{match.group(2)}"


def bundle_pip_platforms(libc6_version: str, architecture: str) -> list[str]:
    """Every manylinux tag a glibc runs, newest first: pip download's --platform list.

    pip (23.x) matches --platform literally, so a base image with glibc 2.36 needs each of
    manylinux_2_36 ... manylinux_2_5 and the legacy aliases spelled out (PEP 600: a wheel for
    glibc 2.X runs on every glibc >= 2.X). "2.36-9+deb12u13", "amd64" -> ["manylinux_2_36_x86_64",
    ..., "manylinux2014_x86_64", ...].
    """
    match = re.match(r"^(?:\d+:)?2\.(\d+)", libc6_version or "")
    if not match:
        raise ValueError(f"not a libc6 package version: {libc6_version!r}")
    machine = _WHEEL_MACHINE.get(architecture)
    if machine is None:
        raise ValueError(f"no wheel machine name for architecture {architecture!r}")
    platforms = []
    for minor in range(int(match.group(1)), _MANYLINUX_OLDEST_MINOR - 1, -1):
        platforms.append(f"manylinux_2_{minor}_{machine}")
        if minor in _LEGACY:
            platforms.append(f"{_LEGACY[minor]}_{machine}")
    return platforms


def bundle_pieces_of(pieces: Mapping[str, Mapping[str, Any]], kind: str) -> dict[str, Any]:
    """The pieces of one kind, keyed by what they are for (meta.key): image name, release, file."""
    return {
        str(piece["meta"]["key"]): dict(piece)
        for piece in pieces.values()
        if piece.get("kind") == kind and "key" in piece.get("meta", {})
    }


def bundle_archives(
    pieces: Mapping[str, Mapping[str, Any]], kind: str, with_files: bool = False
) -> dict[str, Any]:
    """{what a piece is for: its packed archive} for the pieces of one kind.

    With with_files, each value is {"archive": path, "files": [{name, sha256, size}]} (wheels: the
    image role checks every pinned requirement against the files before it builds).
    """
    return {
        key: {"archive": piece["archive"], "files": piece["files"]}
        if with_files
        else piece["archive"]
        for key, piece in bundle_pieces_of(pieces, kind).items()
    }


def bundle_models(
    models: list[Mapping[str, Any]], pieces: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The model list with every URL source replaced by the bundle's file.

    Returns {"models": [...], "errors": [...]}. A model with a URL must be in the bundle, with
    the entry's pinned sha256 when it has one; its `src` becomes the bundle's file and its sha256
    the one the bundle verified it against when it was made. Entries with `src` stay as they are.
    """
    files = bundle_pieces_of(pieces, "model")
    result: list[dict[str, Any]] = []
    errors: list[str] = []
    for entry in models:
        model = dict(entry)
        if not model.get("url"):
            result.append(model)
            continue
        piece = files.get(str(model.get("file")))
        label = f"localai_models entry '{model.get('name')}' ({model.get('file')})"
        pinned = str(model.get("sha256") or "")
        if piece is None:
            errors.append(f"{label} is not in the bundle")
        elif re.fullmatch(r"[0-9a-f]{64}", pinned) and pinned != piece["meta"]["sha256"]:
            errors.append(
                f"{label}: the bundle's file has sha256 {piece['meta']['sha256']}, the entry "
                f"pins {pinned}"
            )
        else:
            model.pop("url")
            model["src"] = piece["path"]
            model["sha256"] = piece["meta"]["sha256"]
        result.append(model)
    return {"models": result, "errors": errors}


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        """Map filter names to functions."""
        return {
            "bundle_archives": bundle_archives,
            "bundle_models": bundle_models,
            "bundle_pieces_of": bundle_pieces_of,
            "bundle_pip_platforms": bundle_pip_platforms,
            "bundle_python_tag": bundle_python_tag,
            "bundle_slug": bundle_slug,
        }
