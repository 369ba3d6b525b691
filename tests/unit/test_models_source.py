"""The models role's source logic against a local HTTP server that plays Hugging Face.

Covers: learning the sha256 from X-Linked-Etag on the resolve/ 302, the model API fallback
(lfs.oid), the lock file (later runs verify the same bytes without asking), refusal without
a checksum unless models_allow_unverified, resumable downloads, sha256 verification, and the
checksum stamp that spares re-hashing but catches a rewritten file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from ansible.module_utils.urls import open_url
from project import load

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "models"


files = load(
    "ansible.module_utils.localai_model_files", "roles/models/module_utils/localai_model_files.py"
)
resolve_mod = load("localai_models_resolve", "roles/models/library/localai_models_resolve.py")
inspect_mod = load("localai_models_inspect", "roles/models/library/localai_models_inspect.py")
file_mod = load("localai_model_file", "roles/models/library/localai_model_file.py")

BLOB = os.urandom(300_000)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


class FakeHF(BaseHTTPRequestHandler):
    """resolve/ answers 302 + X-Linked-Etag (unless the repo is 'noetag'); /cdn serves Range."""

    files: ClassVar[dict[str, bytes]] = {"model.gguf": BLOB, "sub/deep.gguf": BLOB}
    requests: ClassVar[list[str]] = []

    def _resolve(self, body: bool) -> None:
        m = re.match(r"^/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$", self.path)
        if m is None:
            return self._cdn(body)
        _owner, repo, _rev, name = m.groups()
        if name not in self.files:
            self.send_response(404)
            self.end_headers()
            return None
        self.send_response(302)
        self.send_header("Location", f"/cdn/{name}")
        if repo != "noetag":
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(self.files[name]).hexdigest()}"')
            self.send_header("X-Linked-Size", str(len(self.files[name])))
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

    def _cdn(self, body: bool) -> None:
        if self.path.startswith("/api/models/o/noetag/tree/main"):
            listing = [
                {"type": "file", "path": n, "lfs": {"oid": hashlib.sha256(d).hexdigest()}}
                for n, d in self.files.items()
                if "/" not in n or self.path.endswith("/sub")
            ]
            data = json.dumps(listing).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        name = self.path.removeprefix("/cdn/")
        if name not in self.files:
            self.send_response(404)
            self.end_headers()
            return
        data = self.files[name]
        start = 0
        m = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if body:
            self.wfile.write(data[start:])

    def do_HEAD(self) -> None:
        self.requests.append(f"HEAD {self.path} {self.headers.get('Range', '')}")
        self._resolve(False)

    def do_GET(self) -> None:
        self.requests.append(f"GET {self.path} {self.headers.get('Range', '')}")
        self._resolve(True)

    def log_message(self, *args) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def hf():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHF)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class FakeModule:
    """Just enough of AnsibleModule for the module functions."""

    def __init__(self, **params):
        self.params = {"timeout": 5, "validate_certs": True, **params}
        self.warnings: list[str] = []
        self.check_mode = False

    def warn(self, msg):
        self.warnings.append(msg)

    def fail_json(self, msg, **kwargs):
        raise RuntimeError(msg)


def test_learns_sha256_from_x_linked_etag(hf):
    learned = files.learn_sha256(open_url, f"{hf}/o/r/resolve/main/model.gguf", 5)
    assert learned["sha256"] == BLOB_SHA and learned["size"] == len(BLOB)
    assert learned["how"] == "X-Linked-Etag"


@pytest.mark.parametrize("name", ["model.gguf", "sub/deep.gguf"])
def test_falls_back_to_the_model_api(hf, name):
    learned = files.learn_sha256(open_url, f"{hf}/o/noetag/resolve/main/{name}", 5)
    assert learned["sha256"] == BLOB_SHA and learned["how"] == "model API lfs.oid"


def test_missing_file_is_reported(hf):
    learned = files.learn_sha256(open_url, f"{hf}/o/r/resolve/main/absent.gguf", 5)
    assert learned["sha256"] is None and "404" in learned["error"]


def _model(url: str, sha: str = "huggingface") -> dict:
    return {"name": "m", "file": "model.gguf", "url": url, "sha256": sha}


def test_resolve_records_then_reuses_the_lock(hf, tmp_path):
    url = f"{hf}/o/r/resolve/main/model.gguf"
    lock_file = tmp_path / "models.lock.yml"
    params = {"lock_file": str(lock_file), "base_dir": str(tmp_path), "allow_unverified": False}
    first = resolve_mod.resolve(FakeModule(models=[_model(url)], **params))
    assert first["errors"] == [] and first["lock_changed"]
    assert first["models"][0]["origin"] == "learned"
    assert first["lock"]["model.gguf"] == {
        "sha256": BLOB_SHA,
        "source": url,
        "size": len(BLOB),
        "origin": "published by the source (X-Linked-Etag / lfs.oid)",
    }
    lock_file.write_text(json.dumps({"models": first["lock"]}))  # JSON is YAML
    FakeHF.requests.clear()
    second = resolve_mod.resolve(FakeModule(models=[_model(url)], **params))
    assert second["models"][0]["origin"] == "lock" and not second["lock_changed"]
    assert FakeHF.requests == []  # offline-safe: the lock answers, no HTTP


def test_lock_for_another_source_is_not_trusted(hf, tmp_path):
    url = f"{hf}/o/r/resolve/main/model.gguf"
    lock_file = tmp_path / "models.lock.yml"
    lock_file.write_text(
        json.dumps({"models": {"model.gguf": {"sha256": "0" * 64, "source": "https://old/x"}}})
    )
    params = {"lock_file": str(lock_file), "base_dir": str(tmp_path), "allow_unverified": False}
    result = resolve_mod.resolve(FakeModule(models=[_model(url)], **params))
    assert result["models"][0]["sha256"] == BLOB_SHA and result["lock_changed"]


def test_no_published_sha_is_refused_unless_allowed(hf, tmp_path):
    url = f"{hf}/cdn/model.gguf"  # not a resolve/ URL: nothing published
    params = {"lock_file": str(tmp_path / "l.yml"), "base_dir": str(tmp_path)}
    refused = resolve_mod.resolve(
        FakeModule(models=[_model(url, "")], allow_unverified=False, **params)
    )
    assert "models_allow_unverified" in refused["errors"][0]
    module = FakeModule(models=[_model(url, "")], allow_unverified=True, **params)
    allowed = resolve_mod.resolve(module)
    assert allowed["errors"] == [] and allowed["models"][0]["origin"] == "unverified"
    assert "UNVERIFIED" in module.warnings[0]


def test_missing_controller_file_is_named(tmp_path):
    model = {"name": "m", "file": "m.gguf", "src": "nope.gguf", "sha256": BLOB_SHA}
    params = {"lock_file": str(tmp_path / "l.yml"), "base_dir": str(tmp_path)}
    result = resolve_mod.resolve(FakeModule(models=[model], allow_unverified=False, **params))
    assert "field 'src'" in result["errors"][0] and "does not exist" in result["errors"][0]


def test_chat_template_file_is_resolved_or_named_when_missing(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"x")
    (tmp_path / "tools.jinja").write_text("{{ messages }}")
    params = {"lock_file": str(tmp_path / "l.yml"), "base_dir": str(tmp_path)}
    model = {"name": "m", "file": "m.gguf", "src": "m.gguf", "sha256": BLOB_SHA}
    found = resolve_mod.resolve(
        FakeModule(models=[{**model, "chat_template_file": "tools.jinja"}], **params)
    )
    assert found["errors"] == []
    assert found["models"][0]["chat_template_src"] == str(tmp_path / "tools.jinja")
    without = resolve_mod.resolve(FakeModule(models=[model], **params))
    assert without["models"][0]["chat_template_src"] == ""
    missing = resolve_mod.resolve(
        FakeModule(models=[{**model, "chat_template_file": "nope.jinja"}], **params)
    )
    assert len(missing["errors"]) == 1
    assert "field 'chat_template_file'" in missing["errors"][0]
    assert "does not exist" in missing["errors"][0] and "fix:" in missing["errors"][0]


def test_resumable_fetch_verify_and_place(hf, tmp_path):
    path = str(tmp_path / "model.gguf")
    (tmp_path / "model.gguf.partial").write_bytes(BLOB[:100_000])  # an interrupted download
    FakeHF.requests.clear()
    module = FakeModule(url=f"{hf}/o/r/resolve/main/model.gguf", label="m", sha256=BLOB_SHA)
    out = file_mod.fetch(module, path)
    assert out["resumed_from"] == 100_000 and any("bytes=100000-" in r for r in FakeHF.requests)
    assert file_mod.fetch(module, path)["changed"] is False  # 416: already complete
    assert file_mod.verify(module, path)["sha256"] == BLOB_SHA
    module.params["mode"] = "0644"
    file_mod.place(module, path)
    assert Path(path).read_bytes() == BLOB and not Path(path + ".partial").exists()
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert files.read_stamp(path) == BLOB_SHA


def test_wrong_sha_deletes_the_staged_copy(tmp_path):
    path = str(tmp_path / "model.gguf")
    Path(path + ".partial").write_bytes(b"not the model")
    module = FakeModule(label="localai_models entry 'm'", sha256=BLOB_SHA)
    with pytest.raises(RuntimeError, match="field 'sha256' does not match"):
        file_mod.verify(module, path)
    assert not Path(path + ".partial").exists() and not Path(path).exists()


def test_stamp_spares_the_hash_but_catches_a_rewrite(tmp_path, monkeypatch):
    path = tmp_path / "model.gguf"
    path.write_bytes(BLOB)
    files.write_stamp(str(path), BLOB_SHA)
    assert "model.gguf" in (tmp_path / "model.gguf.sha256").read_text()  # sha256sum -c format
    calls = []
    monkeypatch.setattr(inspect_mod, "sha256_file", lambda p: calls.append(p) or "f" * 64)
    assert inspect_mod.present_sha(str(path), False) == (BLOB_SHA, True) and calls == []
    assert inspect_mod.present_sha(str(path), True)[1] is False and len(calls) == 1
    with open(path, "r+b") as handle:  # corrupt in place: the mtime moves
        handle.write(b"XX")
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 1_000_000))
    assert files.read_stamp(str(path)) is None


def test_inspect_decides_and_counts_bytes(hf, tmp_path):
    (tmp_path / "have.gguf").write_bytes(BLOB)
    models = [
        {"name": "a", "file": "have.gguf", "sha256": BLOB_SHA, "url": "", "size": None},
        {"name": "b", "file": "model.gguf", "sha256": BLOB_SHA, "size": None,
         "url": f"{hf}/o/r/resolve/main/model.gguf"},
        {"name": "c", "file": "gone.gguf", "sha256": BLOB_SHA, "size": None,
         "url": f"{hf}/o/r/resolve/main/absent.gguf"},
    ]  # fmt: skip
    module = FakeModule(models_dir=str(tmp_path), verify_existing=False)
    a, b, c = (inspect_mod.inspect_one(module, i, m) for i, m in enumerate(models))
    assert a["state"] == "ok" and not a["needs_placing"] and not a["stamp_current"]
    assert b["state"] == "missing" and b["size"] == len(BLOB) and not b["error"]
    assert "field 'url'" in c["error"] and "404" in c["error"]


def test_pinned_sha_contradicted_by_the_source_fails_early(hf, tmp_path):
    model = {"name": "b", "file": "model.gguf", "sha256": "0" * 64, "size": None,
             "url": f"{hf}/o/r/resolve/main/model.gguf"}  # fmt: skip
    out = inspect_mod.inspect_one(
        FakeModule(models_dir=str(tmp_path), verify_existing=False), 0, model
    )
    assert "the source publishes" in out["error"]
