"""Stage, verify and atomically place one model file (and its checksum stamp) on the host."""

# Ansible modules keep DOCUMENTATION/RETURN above the imports (ansible-doc reads them).
# ruff: noqa: E402

from __future__ import annotations

DOCUMENTATION = r"""
module: localai_model_file
short_description: Resumable download, sha256 check and atomic placement of a model file
description:
  - C(state=fetched) downloads I(url) into C(<path>.partial), resuming a partial file with an
    HTTP Range request.
  - C(state=verified) hashes C(<path>.partial) and compares it with I(sha256); a mismatch deletes
    the partial (a resumed download would otherwise keep the bad bytes) and fails.
  - C(state=placed) renames C(<path>.partial) onto I(path) (rename(2): atomic, same directory),
    sets I(mode) and writes the checksum stamp C(<path>.sha256).
  - C(state=stamped) only (re)writes the stamp of a file already in place.
options:
  path:
    description: Final path of the model file.
    type: path
    required: true
  state:
    description: What to do.
    type: str
    choices: [fetched, verified, placed, stamped]
    required: true
  url:
    description: Source URL (state=fetched).
    type: str
  sha256:
    description: Expected sha256; empty means unverified (trust on first use).
    type: str
    default: ""
  label:
    description: How messages name the model (e.g. "localai_models[0] (name 'x')").
    type: str
    default: model
  mode:
    description: File mode of the placed file.
    type: raw
    default: "0644"
  timeout:
    description: Seconds without data before a download attempt fails.
    type: int
    default: 60
  validate_certs:
    description: Verify TLS certificates.
    type: bool
    default: true
author: localai-llamacpp
"""

RETURN = r"""
sha256:
  description: sha256 of the verified or placed file.
  type: str
  returned: state=verified, placed, stamped
size:
  description: Size in bytes of the partial or placed file.
  type: int
  returned: always
"""

import os
import shutil
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.localai_model_files import CHUNK, sha256_file, write_stamp
from ansible.module_utils.urls import open_url


def fetch(module: AnsibleModule, path: str) -> dict[str, Any]:
    """Download into <path>.partial, resuming what is there (HTTP 206) or restarting (200)."""
    partial = path + ".partial"
    have = os.path.getsize(partial) if os.path.exists(partial) else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = open_url(
            module.params["url"],
            headers=headers,
            timeout=module.params["timeout"],
            validate_certs=module.params["validate_certs"],
        )
    except Exception as err:  # every transport error becomes one clear message
        if getattr(err, "code", None) == 416 and have:
            return {"changed": False, "size": have}  # nothing left to fetch
        module.fail_json(
            msg=f"{module.params['label']}: download of {module.params['url']} failed: {err}"
        )
    append = have and response.getcode() == 206
    with open(partial, "ab" if append else "wb") as handle:
        shutil.copyfileobj(response, handle, CHUNK)
    os.chmod(partial, 0o600)
    return {
        "changed": True,
        "size": os.path.getsize(partial),
        "resumed_from": have if append else 0,
    }


def verify(module: AnsibleModule, path: str) -> dict[str, Any]:
    """Hash the staged file; refuse (and drop) it when it is not the expected bytes."""
    partial = path + ".partial"
    if not os.path.isfile(partial):
        module.fail_json(msg=f"{module.params['label']}: {partial} is missing; nothing was staged")
    actual = sha256_file(partial)
    expected = module.params["sha256"]
    if expected and actual != expected:
        os.unlink(partial)
        module.fail_json(
            msg=(
                f"{module.params['label']}: field 'sha256' does not match the file: expected "
                f"{expected}, got {actual}. Nothing was placed (the staged copy was deleted). "
                "fix: correct sha256 in localai_models, or the source if it is the wrong file"
            ),
            expected=expected,
            actual=actual,
        )
    return {"changed": False, "sha256": actual, "size": os.path.getsize(partial)}


def place(module: AnsibleModule, path: str) -> dict[str, Any]:
    """Atomically move the verified partial into place and stamp it."""
    partial = path + ".partial"
    if not os.path.isfile(partial):
        module.fail_json(msg=f"{module.params['label']}: {partial} is missing; nothing to place")
    mode = int(str(module.params["mode"]), 8)
    os.chmod(partial, mode)
    os.replace(partial, path)
    write_stamp(path, module.params["sha256"])
    return {"changed": True, "sha256": module.params["sha256"], "size": os.path.getsize(path)}


def stamp(module: AnsibleModule, path: str) -> dict[str, Any]:
    """(Re)write the stamp of a file whose hash was just computed by the inspection."""
    changed = write_stamp(path, module.params["sha256"])
    return {"changed": changed, "sha256": module.params["sha256"], "size": os.path.getsize(path)}


def main() -> None:
    """Module entry point."""
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {
                "type": "str",
                "required": True,
                "choices": ["fetched", "verified", "placed", "stamped"],
            },
            "url": {"type": "str"},
            "sha256": {"type": "str", "default": ""},
            "label": {"type": "str", "default": "model"},
            "mode": {"type": "raw", "default": "0644"},
            "timeout": {"type": "int", "default": 60},
            "validate_certs": {"type": "bool", "default": True},
        },
        required_if=[("state", "fetched", ["url"]), ("state", "placed", ["sha256"])],
        supports_check_mode=True,
    )
    state, path = module.params["state"], module.params["path"]
    if module.check_mode:
        module.exit_json(changed=state != "verified", sha256=module.params["sha256"], size=0)
    handlers = {"fetched": fetch, "verified": verify, "placed": place, "stamped": stamp}
    module.exit_json(**handlers[state](module, path))


if __name__ == "__main__":
    main()
