"""Load (issue 7): 64 clients of chat and embeddings at once through the proxy, held for a
minute by bench/soak.py (the full 5-minute run's figures are in
bench/results/2026-11-25-ci-machine/NOTES.md, "Load").

Every request must succeed (no 5xx, no 4xx, no broken connection), and no process of the stack
may grow past the script's limits or be replaced while the load runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from scenario import API_KEY, PROJECT

TARGET = "localai-default"


def test_64_mixed_clients_for_a_minute_all_succeed_and_memory_stays_flat(tmp_path):
    out = tmp_path / "soak.jsonl"
    command = [
        sys.executable,
        str(PROJECT / "bench" / "soak.py"),
        "--url",
        "http://127.0.0.1:28100",
        "--clients",
        "64",
        "--duration",
        os.environ.get("SOAK_SECONDS", "60"),
        "--warmup",
        "20",
        "--container",
        "localai-llamacpp",
        "--docker",
        f"docker exec {TARGET} docker",
        "--out",
        str(out),
    ]
    env = dict(os.environ, LOCALAI_API_KEY=API_KEY)  # not on the command line
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    summary = json.loads(out.read_text(encoding="utf-8").splitlines()[-1])
    assert done.returncode == 0, f"{summary['findings']}\n{done.stderr[-2000:]}"
    for kind in ("chat", "embeddings"):
        assert summary[kind]["requests"] >= 20, summary[kind]
        assert summary[kind]["ok"] == summary[kind]["requests"], summary[kind]
        assert summary[kind]["server_errors_5xx"] == 0
        assert summary[kind]["latency_ms_p95"] is not None
    names = {p["name"] for p in summary["rss"]["processes"]}
    assert {"litellm", "llama-server (SmolLM2-135M-Instruct)"} <= names, names
    assert "llama-server (all-MiniLM-L6-v2)" in names
    assert all(p["after_mib"] is not None for p in summary["rss"]["processes"])
