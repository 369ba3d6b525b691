"""Filters of the stack_image role: name the image after what went into it.

The tag says which llama.cpp ref and which GPU architectures the image holds, and ends with a
digest of the rendered build context. The role builds only when no image carries that tag, so a
second run rebuilds nothing, while a new ref, a new GPU or any edit of the context does.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping

# Docker: a tag is [A-Za-z0-9_.-], at most 128 characters, not starting with '.' or '-'.
_TAG_MAX = 128
_TAG_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_FULL_COMMIT = re.compile(r"[0-9a-f]{40}")
_ARCH = re.compile(r"^[0-9]{2,3}[af]?$")
DIGEST_LENGTH = 12
_CERT_SUFFIX = re.compile(r"\.(crt|pem|cer)$", re.IGNORECASE)


def stack_image_arch_list(archs: str) -> list[str]:
    """Split a CMAKE_CUDA_ARCHITECTURES string ("75;86") into its entries.

    Empty means a CPU build. Raises ValueError on anything that is not like "61" or "90a", so a
    typo never reaches CMake (which would fail only minutes into the build).
    """
    text = (archs or "").strip()
    if not text:
        return []
    entries = [entry.strip() for entry in text.split(";")]
    bad = [entry for entry in entries if not _ARCH.match(entry)]
    if bad:
        msg = f"CUDA architectures {archs!r}: {bad!r} not like '61' or '75;86'"
        raise ValueError(msg)
    return entries


def stack_image_arch_slug(archs: str) -> str:
    """Return the tag part for the architectures: "cpu", or "sm61-75" for "61;75"."""
    entries = stack_image_arch_list(archs)
    return "sm" + "-".join(entries) if entries else "cpu"


def stack_image_context_digest(
    files: Iterable[Mapping[str, str]], root: str = "", length: int = DIGEST_LENGTH
) -> str:
    """Digest the build context from its files' paths and checksums.

    Takes ansible.builtin.find's "files" (each with "path" and "checksum"). Paths count relative
    to root (the context directory), so moving the build directory does not rebuild. Sorted, so
    the order files were found in does not matter; a renamed, added or removed file changes the
    digest. An empty context is allowed: in check mode on a fresh host nothing is rendered yet.
    """
    lines = sorted(
        f"{os.path.relpath(item['path'], root) if root else item['path']}\0{item['checksum']}"
        for item in files
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:length]


def stack_image_cert_names(paths: Iterable[str]) -> list[str]:
    """Name the extra CA files inside the image: "00-corp-root.crt", "01-proxy.crt", ...

    update-ca-certificates picks up only *.crt files, whatever the source was called (.pem,
    .cer); the index keeps two files with the same basename from different folders apart.
    """
    names = []
    for index, path in enumerate(paths):
        stem = _CERT_SUFFIX.sub("", os.path.basename(path)) or "ca"
        names.append(f"{index:02d}-{stem}.crt")
    return names


def _tag_safe(text: str) -> str:
    """Make a llama.cpp ref ("b6800", "v1.2/rc", a commit id) usable inside a Docker tag."""
    cleaned = _TAG_BAD_CHARS.sub("-", text.strip()).lstrip(".-")
    return cleaned or "unknown"


def stack_image_tag(name: str, ref: str, archs: str, digest: str) -> str:
    """Return "<name>:<ref>-<cpu|smXX-YY>-<digest>", shortening the ref if the tag gets too long.

    A full 40-digit commit id is written as its first 12 digits (git's own short form is
    unique at that length in llama.cpp's history), so tags stay readable.
    """
    suffix = f"-{stack_image_arch_slug(archs)}-{digest}"
    ref = ref.strip()
    if _FULL_COMMIT.fullmatch(ref):
        ref = ref[:12]
    ref_part = _tag_safe(ref)[: max(1, _TAG_MAX - len(suffix))]
    return f"{name}:{ref_part}{suffix}"


_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def stack_image_requirements(text: str) -> list[dict[str, object]]:
    """The pins of a pip-compile --generate-hashes file: [{"pin": "aiohttp==3.14.5", "hashes":
    ["<sha256>", ...]}, ...], one per requirement, with the hashes of its continuation lines.
    """
    pins: list[dict[str, object]] = []
    for line in text.splitlines():
        stripped = line.strip()
        requirement = _REQUIREMENT.match(stripped)
        if requirement:
            pins.append({"pin": f"{requirement.group(1)}=={requirement.group(2)}", "hashes": []})
        if pins and not stripped.startswith("#"):
            hashes = pins[-1]["hashes"]
            assert isinstance(hashes, list)
            hashes.extend(_HASH.findall(stripped))
    return pins


def stack_image_wheels_missing(text: str, files: Iterable[Mapping[str, object]]) -> list[str]:
    """The pins of a hashed requirements file that no wheel of `files` satisfies.

    `files` are the bundle's wheels, [{"name": "x.whl", "sha256": "..."}]. A pin is met when a
    .whl file's sha256 is one of its hashes: that is exactly what `pip install --no-index
    --require-hashes` will accept, so a miss here is a build that would fail, said before it runs.
    """
    have = {str(entry["sha256"]) for entry in files if str(entry["name"]).endswith(".whl")}
    return [
        str(pin["pin"])
        for pin in stack_image_requirements(text)
        if not have.intersection(pin["hashes"])  # type: ignore[arg-type]
    ]


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, object]:
        """Map filter names to functions."""
        return {
            "stack_image_arch_list": stack_image_arch_list,
            "stack_image_arch_slug": stack_image_arch_slug,
            "stack_image_cert_names": stack_image_cert_names,
            "stack_image_context_digest": stack_image_context_digest,
            "stack_image_tag": stack_image_tag,
            "stack_image_wheels_missing": stack_image_wheels_missing,
        }
