"""Look at the models dir on the host: what is in place, what must be placed, is there room."""

# Ansible modules keep DOCUMENTATION/RETURN above the imports (ansible-doc reads them).
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: localai_models_inspect
short_description: Read-only check of the model files on the host
description:
  - For each model, decide whether the file in the models dir already has the expected sha256
    (using the checksum stamp, or a full hash when the stamp is stale or I(verify_existing)).
  - For files that must be placed from a URL, HEAD the URL from the host (it is the host that
    downloads) and take the size. Sum what still has to land and compare with the free space
    of the file system that holds I(models_dir).
options:
  models_dir:
    description: Directory of the model files (may not exist yet).
    type: path
    required: true
  models:
    description: Output of localai_models_resolve (file, url, src, sha256, size).
    type: list
    elements: dict
    required: true
  verify_existing:
    description: Re-hash every present file instead of trusting current stamps.
    type: bool
    default: false
  timeout:
    description: Seconds per HTTP request.
    type: int
    default: 30
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
author: localai-llamacpp
"""

RETURN = r"""
files:
  description: Per model - file, path, state (ok, missing, mismatch, unverified-present),
    sha256 (of the present file, '' if none), needs_placing, stamp_current, size, url_status.
  type: list
  returned: always
needed_bytes:
  description: Bytes that still have to be written (sizes minus resumable partial downloads).
  type: int
  returned: always
free_bytes:
  description: Free bytes for unprivileged+root writes on the models dir's file system.
  type: int
  returned: always
errors:
  description: Messages naming the model, the field and the fix.
  type: list
  returned: always
"""

import os
from typing import Any
from urllib.error import HTTPError, URLError

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.localai_model_files import (
    clean_etag,
    head_without_redirect,
    read_stamp,
    sha256_file,
)
from ansible.module_utils.urls import open_url


def existing_parent(path: str) -> str:
    """The nearest existing directory: the models dir may not have been created yet."""
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def free_bytes(path: str) -> int:
    """Free space on the file system of `path` (what root can still write)."""
    stat = os.statvfs(existing_parent(path))
    return stat.f_bfree * stat.f_frsize


def present_sha(path: str, verify_existing: bool) -> tuple[str, bool]:
    """Return (sha256 of the file, whether its stamp was current)."""
    stamped = None if verify_existing else read_stamp(path)
    if stamped:
        return stamped, True
    return sha256_file(path), False


def probe_url(module: AnsibleModule, url: str) -> tuple[int | None, int | None, str]:
    """HEAD the URL (following redirects); return (status, size, error)."""
    try:
        response = open_url(
            url,
            method="HEAD",
            timeout=module.params["timeout"],
            validate_certs=module.params["validate_certs"],
        )
        length = response.headers.get("Content-Length")
        return response.getcode(), int(length) if length and length.isdigit() else None, ""
    except HTTPError as err:
        return err.code, None, f"HTTP {err.code}"
    except (URLError, OSError, ValueError) as err:
        return None, None, str(getattr(err, "reason", err))


def published_mismatch(module: AnsibleModule, index: int, model: dict[str, Any]) -> str:
    """A pinned sha256 that the source contradicts fails here, before any byte is fetched."""
    expected = model.get("sha256") or ""
    try:
        _status, headers = head_without_redirect(open_url, model["url"], module.params["timeout"])
    except (URLError, OSError, ValueError):
        return ""  # reachability is reported by probe_url with a better message
    published = clean_etag(headers.get("X-Linked-Etag") if headers is not None else None)
    if expected and published and published != expected:
        return (
            f"localai_models[{index}] (name '{model['name']}'): field 'sha256' is {expected} but "
            f"the source publishes {published} for {model['url']}; fix: correct sha256 (or, if "
            "the upstream file changed on purpose, delete its entry from the lock file)"
        )
    return ""


def inspect_one(module: AnsibleModule, index: int, model: dict[str, Any]) -> dict[str, Any]:
    """State of one model file and, if it must be placed, of its source."""
    path = os.path.join(module.params["models_dir"], model["file"])
    expected = model.get("sha256") or ""
    out: dict[str, Any] = {
        "name": model["name"],
        "file": model["file"],
        "path": path,
        "expected_sha256": expected,
        "sha256": "",
        "stamp_current": False,
        "size": model.get("size"),
        "partial_bytes": 0,
        "url_status": None,
        "error": "",
    }
    if os.path.isfile(path):
        out["sha256"], out["stamp_current"] = present_sha(path, module.params["verify_existing"])
        if not expected:
            out["state"] = "unverified-present"
        else:
            out["state"] = "ok" if out["sha256"] == expected else "mismatch"
    else:
        out["state"] = "missing"
    out["needs_placing"] = out["state"] in ("missing", "mismatch")
    if out["needs_placing"] and os.path.isfile(path + ".partial"):
        out["partial_bytes"] = os.path.getsize(path + ".partial")
    if out["needs_placing"] and model.get("url"):
        out["error"] = published_mismatch(module, index, model)
        if out["error"]:
            return out
        status, size, error = probe_url(module, model["url"])
        out["url_status"] = status
        out["size"] = out["size"] or size
        if error:
            out["error"] = (
                f"localai_models[{index}] (name '{model['name']}'): field 'url' "
                f"{model['url']} does not answer from this host ({error}); fix: correct the URL, "
                "or the host's proxy settings, or use src: with a file on the controller"
            )
    return out


def main() -> None:
    """Module entry point: read-only."""
    module = AnsibleModule(
        argument_spec={
            "models_dir": {"type": "path", "required": True},
            "models": {"type": "list", "elements": "dict", "required": True},
            "verify_existing": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 30},
            "validate_certs": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    files = [inspect_one(module, i, m) for i, m in enumerate(module.params["models"])]
    needed = sum(
        max((f["size"] or 0) - (f["partial_bytes"] if f["url_status"] else 0), 0)
        for f in files
        if f["needs_placing"]
    )
    module.exit_json(
        changed=False,
        files=files,
        needed_bytes=needed,
        free_bytes=free_bytes(module.params["models_dir"]),
        errors=[f["error"] for f in files if f["error"]],
    )


if __name__ == "__main__":
    main()
