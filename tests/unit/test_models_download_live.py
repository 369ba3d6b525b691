"""The models role downloading from a slow HTTP server: progress lines while it runs, then none.

A real ansible-playbook run of the role (connection local, files under a temporary models_dir)
against a server on loopback that sends 24 MB at about 4 MB/s, polled every second: the run's
output must show the download's bytes, rate and time left before it ends, and the file must be
in place with its sha256. A second run downloads nothing and prints no progress.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from project import REPO

# The module writes the partial file 8 MiB at a time: three writes, about 2 s apart.
SIZE = 24 * 10**6
RATE = 4 * 10**6  # bytes per second


class SlowFiles(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of one file at RATE bytes/s, with Range (the module resumes with it)."""

    body = b""

    def _head(self) -> int:
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header(
                "Content-Range", f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
            )
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(self.body) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return start

    def do_HEAD(self) -> None:
        self._head()

    def do_GET(self) -> None:
        start = self._head()
        step = RATE // 10
        for offset in range(start, len(self.body), step):
            self.wfile.write(self.body[offset : offset + step])
            time.sleep(0.1)

    def log_message(self, *args: object) -> None:
        del args


@pytest.fixture
def server():
    SlowFiles.body = os.urandom(SIZE)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowFiles)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], hashlib.sha256(SlowFiles.body).hexdigest()
    httpd.shutdown()


def run_role(tmp_path: Path, port: int, sha256: str) -> subprocess.CompletedProcess:
    """The models role on this machine, downloading one chat and no other model."""
    playbook = tmp_path / "models.yml"
    playbook.write_text(
        f"""
- name: The models role against a slow server
  hosts: all
  gather_facts: false
  vars:
    models_dir: {tmp_path}/models
    models_lock_file: {tmp_path}/models.lock.yml
    models_allow_insecure_http: true
    models_download_poll_interval: 1
    models_download_timeout: 600
    models_download_delay: 1
    models_list:
      - name: slow-chat
        alias: gpt-3.5-turbo
        kind: chat
        file: slow-chat.gguf
        url: http://127.0.0.1:{port}/slow-chat.gguf
        sha256: {sha256}
        ctx_size: 2048
        parallel: 1
        prompt_tokens: 1024
        max_tokens: 256
  roles:
    - models
  handlers:
    - name: Restart localai-llamacpp
      ansible.builtin.debug:
        msg: the stack would restart
"""
    )
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  hosts:\n    here:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: " + sys.executable + "\n"
    )
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    return subprocess.run(
        [ansible_playbook, "-i", str(inventory), str(playbook)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_a_slow_download_reports_progress_then_a_rerun_is_quiet(tmp_path, server):
    port, sha256 = server
    first = run_role(tmp_path, port, sha256)
    assert first.returncode == 0, first.stdout[-4000:]
    lines = re.findall(r"download slow-chat\.gguf: [^\"\n]*", first.stdout)
    in_flight = [line for line in lines if " of 24 MB (" in line]
    assert in_flight, first.stdout[-4000:]
    # Bytes, share, rate and time left, while it runs (the server sends about 4 MB/s).
    assert any(
        re.search(r"\d of 24 MB \(\d+%\), [\d.]+ [kM]B/s, about \d+ s left", x) for x in in_flight
    )
    placed = tmp_path / "models" / "slow-chat.gguf"
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == sha256
    assert not list((tmp_path / "models").glob("*.partial"))

    second = run_role(tmp_path, port, sha256)
    assert second.returncode == 0, second.stdout[-4000:]
    assert "download slow-chat.gguf" not in second.stdout
    assert re.search(r"here\s*:.*changed=0", second.stdout), second.stdout[-2000:]
