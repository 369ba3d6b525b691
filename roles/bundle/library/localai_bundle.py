"""Write, verify and pack an air-gapped bundle of localai-llamacpp (runs on the controller)."""

# Ansible modules keep DOCUMENTATION/RETURN above the imports (ansible-doc reads them).
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: localai_bundle
short_description: Manifest, verification and packing of an air-gapped bundle
description:
  - A bundle is a directory of pieces (flat apt repositories, wheel folders, saved base images,
    the llama.cpp source, model files) and C(manifest.json), which names every file with its size,
    sha256 and the piece it belongs to, and says what each piece is for.
  - C(state=written) hashes every file under I(path) and writes C(manifest.json) and
    C(SHA256SUMS) (readable by C(sha256sum -c)); I(pieces) says what each piece is (its C(path)
    relative to the bundle, C(kind), C(for), C(meta)).
  - C(state=verified) checks every file of the manifest (present, same size, same sha256) and
    that no file under a piece is unlisted, and packs each apt and wheel piece into one
    reproducible tar under I(cache_dir) (named by the piece's content digest, so a second run
    packs nothing), since a directory of hundreds of files is slow to copy to a host file by file.
author: localai-llamacpp
options:
  path:
    description: The bundle directory.
    type: path
    required: true
  state:
    description: What to do.
    type: str
    choices: [written, verified]
    required: true
  pieces:
    description: state=written. Piece name -> {path, kind, for, meta}.
    type: dict
    default: {}
  inputs:
    description: state=written. The inputs the bundle was made from (recorded as they are).
    type: dict
    default: {}
  cache_dir:
    description: state=verified. Controller folder for the packed pieces.
    type: path
  remake_command:
    description: >-
      state=verified. The command that remakes the bundle, for messages; empty: the bundle
      playbook with the inputs the manifest records.
    type: str
    default: ""
"""

RETURN = r"""
pieces:
  description: >-
    Piece name -> {path (absolute), kind, for, meta, files: [{name, sha256, size}], size, and for
    apt and wheel pieces archive (absolute path of the packed tar)}.
  type: dict
  returned: always
errors:
  description: What is wrong with the bundle, each with the fix (state=verified); empty when sound.
  type: list
  returned: always
remake_command:
  description: The command that makes the bundle again (with the manifest's inputs).
  type: str
  returned: state=verified
size:
  description: Total bytes of the bundle's files.
  type: int
  returned: always
"""

import hashlib
import json
import os
import tarfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
FORMAT = 1
CHUNK = 1 << 20
# Pieces copied to hosts as one tar (a directory of many files); the rest are single files.
PACKED_KINDS = ("apt-host", "apt-image", "wheels")


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _walk(root: str) -> list[str]:
    """Every regular file under root, as sorted '/'-separated relative paths."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(found)


def piece_of(relative: str, pieces: dict[str, dict[str, Any]]) -> str | None:
    """The piece whose path is relative or a folder above it (the longest match), or None."""
    best = None
    for name, piece in pieces.items():
        base = piece["path"].rstrip("/")
        if (relative == base or relative.startswith(base + "/")) and (
            best is None or len(base) > len(pieces[best]["path"].rstrip("/"))
        ):
            best = name
    return best


def build_manifest(
    root: str, pieces: dict[str, dict[str, Any]], inputs: dict[str, Any]
) -> dict[str, Any]:
    """The manifest of the bundle at root: every file hashed and assigned to its piece.

    Raises ValueError for a file that belongs to no piece (the manifest must say what each file
    is for) or a piece with no file.
    """
    files = []
    for relative in _walk(root):
        if relative in (MANIFEST, SUMS):
            continue
        piece = piece_of(relative, pieces)
        if piece is None:
            raise ValueError(f"{relative} belongs to no piece of the bundle: remove it")
        full = os.path.join(root, relative)
        files.append(
            {
                "path": relative,
                "size": os.path.getsize(full),
                "sha256": sha256_file(full),
                "piece": piece,
            }
        )
    empty = sorted(set(pieces) - {entry["piece"] for entry in files})
    if empty:
        raise ValueError(f"pieces without files: {', '.join(empty)}")
    return {
        "format": FORMAT,
        "product": "localai-llamacpp",
        "inputs": inputs,
        "pieces": pieces,
        "files": files,
        "size": sum(entry["size"] for entry in files),
    }


def write_manifest(root: str, manifest: dict[str, Any]) -> bool:
    """Write manifest.json and SHA256SUMS atomically; True when either changed."""
    texts = {
        MANIFEST: json.dumps(manifest, indent=2, sort_keys=True) + "\n",
        SUMS: "".join(f"{entry['sha256']}  {entry['path']}\n" for entry in manifest["files"]),
    }
    changed = False
    for name, text in texts.items():
        target = os.path.join(root, name)
        if os.path.exists(target):
            with open(target, encoding="utf-8") as handle:
                if handle.read() == text:
                    continue
        with open(target + ".part", "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(target + ".part", target)
        changed = True
    return changed


def read_manifest(root: str) -> dict[str, Any]:
    """The bundle's manifest; ValueError with the fix when it is missing or not one."""
    path = os.path.join(root, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: {root} is not a bundle") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON ({error})") from None
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), list):
        raise ValueError(f"{path} is not a bundle manifest of format {FORMAT}")
    return manifest


def remake_command(manifest: dict[str, Any], root: str) -> str:
    """The bundle playbook with the inputs this bundle was made from, writing it where it is now,
    ready to paste (with the group_vars and -e files the site uses)."""
    inputs = dict(manifest.get("inputs", {}), bundle_dir=root)
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return f"ansible-playbook playbooks/bundle.yml -e '{text}'"


def verify_files(root: str, manifest: dict[str, Any], remake: str) -> list[str]:
    """Errors for files that are missing, changed, or present but unlisted under a piece."""
    errors = []
    listed = set()
    for entry in manifest["files"]:
        listed.add(entry["path"])
        full = os.path.join(root, entry["path"])
        what = f"bundle file {entry['path']} ({manifest['pieces'][entry['piece']]['for']})"
        if not os.path.isfile(full):
            errors.append(f"{what} is missing; add it back: {remake}")
        elif os.path.getsize(full) != entry["size"]:
            errors.append(
                f"{what} has {os.path.getsize(full)} bytes, the manifest says {entry['size']}; "
                f"make it again: {remake}"
            )
        elif sha256_file(full) != entry["sha256"]:
            errors.append(
                f"{what} does not have the manifest's sha256 {entry['sha256']}; make it again: "
                f"{remake}"
            )
    for piece in manifest["pieces"].values():
        base = os.path.join(root, piece["path"])
        if os.path.isdir(base):
            for relative in _walk(base):
                path = f"{piece['path'].rstrip('/')}/{relative}"
                if path not in listed:
                    errors.append(
                        f"bundle file {path} is not in {MANIFEST}: remove it, or make the bundle "
                        f"again: {remake}"
                    )
    return errors


def pack(root: str, piece: dict[str, Any], files: list[dict[str, Any]], cache_dir: str) -> str:
    """Pack a piece's folder into a reproducible tar in cache_dir; return its path.

    Same files, same bytes: members sorted, mtime 0, owner 0, mode 0644. The name carries the
    digest of the members' names and sha256, so an unchanged piece is packed once.
    """
    base = piece["path"].rstrip("/")
    members = sorted((entry["path"][len(base) + 1 :], entry["sha256"]) for entry in files)
    digest = hashlib.sha256(json.dumps(members).encode()).hexdigest()[:16]
    target = os.path.join(cache_dir, f"{base.replace('/', '-')}-{digest}.tar")
    if os.path.exists(target):
        return target
    os.makedirs(cache_dir, exist_ok=True)
    with tarfile.open(target + ".part", "w", format=tarfile.GNU_FORMAT) as archive:
        for name, _sha in members:
            info = tarfile.TarInfo(name)
            info.size = os.path.getsize(os.path.join(root, base, name))
            info.mode = 0o644
            info.mtime = 0
            with open(os.path.join(root, base, name), "rb") as handle:
                archive.addfile(info, handle)
    os.replace(target + ".part", target)
    return target


def site_pieces(
    root: str, manifest: dict[str, Any], cache_dir: str | None
) -> dict[str, dict[str, Any]]:
    """The pieces with absolute paths, their files, sizes and (apt, wheels) packed archives."""
    result = {}
    for name, piece in manifest["pieces"].items():
        files = [entry for entry in manifest["files"] if entry["piece"] == name]
        item = dict(piece)
        item["path"] = os.path.join(root, piece["path"])
        item["files"] = [
            {
                "name": os.path.basename(entry["path"]),
                "sha256": entry["sha256"],
                "size": entry["size"],
            }
            for entry in files
        ]
        item["size"] = sum(entry["size"] for entry in files)
        if cache_dir and piece["kind"] in PACKED_KINDS:
            item["archive"] = pack(root, piece, files, cache_dir)
        result[name] = item
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "required": True, "choices": ["written", "verified"]},
            "pieces": {"type": "dict", "default": {}},
            "inputs": {"type": "dict", "default": {}},
            "cache_dir": {"type": "path"},
            "remake_command": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    root = module.params["path"]
    if module.params["state"] == "written":
        try:
            manifest = build_manifest(root, module.params["pieces"], module.params["inputs"])
        except ValueError as error:
            module.fail_json(msg=f"bundle {root}: {error}")
        changed = False if module.check_mode else write_manifest(root, manifest)
        module.exit_json(
            changed=changed,
            pieces=site_pieces(root, manifest, None),
            errors=[],
            size=manifest["size"],
        )
    try:
        manifest = read_manifest(root)
    except ValueError as error:
        module.exit_json(
            changed=False,
            pieces={},
            errors=[f"{error}; make one with playbooks/bundle.yml (README, 'Air-gapped sites')"],
            size=0,
            remake_command="ansible-playbook playbooks/bundle.yml -e bundle_dir=" + root,
        )
    remake = module.params["remake_command"] or remake_command(manifest, root)
    errors = verify_files(root, manifest, remake)
    # Pack only a sound bundle: the errors stop the run before anything uses the archives.
    cache = None if errors else module.params["cache_dir"]
    module.exit_json(
        changed=False,
        pieces=site_pieces(root, manifest, cache),
        errors=errors,
        size=manifest.get("size", 0),
        remake_command=remake,
    )


if __name__ == "__main__":
    main()
