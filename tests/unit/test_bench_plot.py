"""bench/plot.py: series loading (pure) and, where matplotlib is installed, the PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from project import load

plot = load("bench_plot", "bench/plot.py")


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _chat(c: int, tok: float, setup: str = "") -> dict:
    return {
        "mode": "chat",
        "concurrency": c,
        "aggregate_tok_s": tok,
        "ttft_ms_p50": 50.0 * c,
        "ttft_ms_p95": 80.0 * c,
        "setup": setup,
    }


@pytest.fixture
def results(tmp_path) -> list[str]:
    a = _write(tmp_path / "direct.jsonl", [_chat(8, 500), _chat(1, 180), _chat(8, 560)])
    b = _write(tmp_path / "b.jsonl", [_chat(1, 170, "proxy"), _chat(8, 540, "proxy")])
    emb = {"mode": "embeddings", "concurrency": 4, "batch": 32, "docs_s": 3100.0, "setup": "e5"}
    c = _write(tmp_path / "emb.jsonl", [emb])
    return [f"defaults={a}", str(b), str(c)]


def test_load_series_names_sorts_and_keeps_last_run(results):
    chat, embed = plot.load_series(results)
    assert sorted(chat) == ["defaults", "proxy"]
    assert [r["concurrency"] for r in chat["defaults"]] == [1, 8]
    assert chat["defaults"][1]["aggregate_tok_s"] == 560  # the re-run replaced the first
    assert list(embed) == ["e5 (batch 32)"]


def test_pngs_are_written(results, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    assert plot.main([*results, "--out-dir", str(out)]) == 0
    for name in ("chat-throughput.png", "chat-ttft.png", "embeddings-throughput.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_line_can_join_chosen_setups_of_one_file(tmp_path):
    f = _write(
        tmp_path / "mixed.jsonl",
        [_chat(1, 200, "one client"), _chat(8, 800, "tuned"), _chat(8, 500, "old")],
    )
    chat, _ = plot.load_series([f"project={f}@one client|tuned"])
    assert [(r["concurrency"], r["aggregate_tok_s"]) for r in chat["project"]] == [
        (1, 200),
        (8, 800),
    ]
