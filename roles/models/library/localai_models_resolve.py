"""Decide, on the controller, which sha256 every model must have (and read/extend the lock)."""

# Ansible modules keep DOCUMENTATION/RETURN above the imports (ansible-doc reads them).
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: localai_models_resolve
short_description: Resolve the expected sha256 of each model (pinned, lock file, or the source)
description:
  - Runs on the controller (delegate_to localhost, run_once). Reads the lock file, checks that
    controller sources and chat templates exist, and for models without a pinned sha256 learns
    the checksum the source publishes (Hugging Face X-Linked-Etag, else its model API lfs.oid).
  - Never writes anything; the role writes the returned lock after the files are verified.
options:
  models:
    description: The validated model list.
    type: list
    elements: dict
    required: true
  lock_file:
    description: Path of the lock file on the controller (may not exist yet).
    type: path
    required: true
  base_dir:
    description: Directory that relative C(src) paths are relative to.
    type: path
    required: true
  allow_unverified:
    description: Accept models whose checksum cannot be learned (trust on first use).
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
models:
  description: One entry per model with file, url, src (absolute), sha256 ('' when unknown),
    origin (pinned, lock, learned, unverified), size (bytes or null) and chat_template_src
    (the chat_template_file's absolute path on the controller, '' without one).
  type: list
  returned: always
lock:
  description: The lock content to write (models keyed by file name).
  type: dict
  returned: always
lock_changed:
  description: Whether the lock content differs from the file.
  type: bool
  returned: always
errors:
  description: Human messages naming the model, the field and the fix.
  type: list
  returned: always
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.localai_model_files import SHA256_RE, learn_sha256
from ansible.module_utils.urls import open_url

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - ansible-core requires PyYAML on the controller
    HAS_YAML = False


def read_lock(path: str) -> dict[str, Any]:
    """Return {file: entry} from the lock file; a missing file is an empty lock."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    models = data.get("models") if isinstance(data, dict) else None
    return dict(models) if isinstance(models, dict) else {}


def _label(index: int, model: dict[str, Any]) -> str:
    """Same naming as the validation filter."""
    return f"localai_models[{index}] (name '{model.get('name')}')"


def _controller_path(value: Any, base_dir: str) -> str:
    """A path on the controller as an entry gives it: ~ expanded, relative to base_dir."""
    path = os.path.expanduser(str(value))
    return path if os.path.isabs(path) else os.path.join(base_dir, path)


def _resolve_src(index: int, model: dict[str, Any], base_dir: str) -> tuple[dict, list[str]]:
    """A controller file: it must exist; its size feeds the disk check."""
    src = _controller_path(model["src"], base_dir)
    out = {"src": src, "size": None}
    if not os.path.isfile(src):
        return out, [
            f"{_label(index, model)}: field 'src' {src} does not exist on the controller; fix: "
            "put the file there or correct the path (relative paths start at the playbook dir)"
        ]
    out["size"] = os.path.getsize(src)
    return out, []


def _resolve_chat_template(
    index: int, model: dict[str, Any], base_dir: str
) -> tuple[str, list[str]]:
    """A chat_template_file on the controller: it must be a file; returns its absolute path."""
    if not model.get("chat_template_file"):
        return "", []
    path = _controller_path(model["chat_template_file"], base_dir)
    if not os.path.isfile(path):
        return path, [
            f"{_label(index, model)}: field 'chat_template_file' {path} does not exist on the "
            "controller; fix: put the Jinja template there or correct the path (relative paths "
            "start at the playbook dir)"
        ]
    return path, []


def _resolve_sha(
    module: AnsibleModule, index: int, model: dict[str, Any], lock: dict[str, Any], source: str
) -> tuple[dict[str, Any], list[str]]:
    """Pinned wins; then a lock entry for the same source; then what the source publishes."""
    sha = model.get("sha256") or ""
    if SHA256_RE.match(sha):
        return {"sha256": sha, "origin": "pinned"}, []
    entry = lock.get(model["file"])
    if (
        isinstance(entry, dict)
        and entry.get("source") == source
        and SHA256_RE.match(str(entry.get("sha256", "")))
    ):
        return {"sha256": entry["sha256"], "origin": "lock", "size": entry.get("size")}, []
    if model.get("url"):
        learned = learn_sha256(
            lambda *a, **k: open_url(*a, validate_certs=module.params["validate_certs"], **k),
            model["url"],
            module.params["timeout"],
        )
        if learned["sha256"]:
            return {"sha256": learned["sha256"], "origin": "learned", "size": learned["size"]}, []
        why = learned["error"] or "it publishes no sha256 (no X-Linked-Etag, no lfs.oid)"
    else:
        why = "a controller file has no published checksum"
    if module.params["allow_unverified"]:
        module.warn(
            f"UNVERIFIED MODEL: {_label(index, model)} has no known sha256 ({why}); it will be "
            "trusted on first use and its hash recorded in the lock file."
        )
        return {"sha256": "", "origin": "unverified"}, []
    return {}, [
        f"{_label(index, model)}: field 'sha256' is not set and cannot be learned: {why}; fix: "
        "pin sha256 (64 hex digits from the publisher) or, insecure, set "
        "models_allow_unverified: true"
    ]


def resolve(module: AnsibleModule) -> dict[str, Any]:
    """Resolve every model; collect all errors rather than stopping at the first."""
    p = module.params
    lock = read_lock(p["lock_file"])
    new_lock = {k: dict(v) for k, v in lock.items() if isinstance(v, dict)}
    resolved, errors = [], []
    for index, model in enumerate(p["models"]):
        item: dict[str, Any] = {
            "name": model["name"],
            "file": model["file"],
            "url": model.get("url") or "",
            "src": "",
            "size": None,
        }
        item["chat_template_src"], template_errors = _resolve_chat_template(
            index, model, p["base_dir"]
        )
        errors += template_errors
        if model.get("src"):
            src_info, src_errors = _resolve_src(index, model, p["base_dir"])
            item.update(src_info)
            errors += src_errors
            if src_errors:
                resolved.append(item)
                continue
        source = item["url"] or item["src"]
        sha_info, sha_errors = _resolve_sha(module, index, model, lock, source)
        errors += sha_errors
        item["sha256"] = sha_info.get("sha256", "")
        item["origin"] = sha_info.get("origin", "")
        if item["size"] is None:
            item["size"] = sha_info.get("size")
        if item["origin"] == "learned":
            new_lock[model["file"]] = {
                "sha256": item["sha256"],
                "source": source,
                "size": item["size"],
                "origin": "published by the source (X-Linked-Etag / lfs.oid)",
            }
        resolved.append(item)
    return {
        "models": resolved,
        "lock": new_lock,
        "lock_changed": new_lock != lock,
        "errors": errors,
    }


def main() -> None:
    """Module entry point: read-only, so check mode runs it for real."""
    module = AnsibleModule(
        argument_spec={
            "models": {"type": "list", "elements": "dict", "required": True},
            "lock_file": {"type": "path", "required": True},
            "base_dir": {"type": "path", "required": True},
            "allow_unverified": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 30},
            "validate_certs": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    if not HAS_YAML:
        module.fail_json(msg="PyYAML is required on the controller to read the lock file")
    module.exit_json(changed=False, **resolve(module))


if __name__ == "__main__":
    main()
