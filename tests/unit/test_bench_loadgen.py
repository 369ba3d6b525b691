"""Unit tests for bench/loadgen.py: the pure parts, then the driver against a fake server.

The fake server speaks just enough of the OpenAI API (chunked SSE for chat like llama-server,
JSON for embeddings, a bearer-token check) to prove the figures come out right.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from project import load

REPO = Path(__file__).resolve().parents[2]


loadgen = load("loadgen", "bench/loadgen.py")


def test_percentile_interpolates_like_numpy():
    values = [10.0, 20.0, 30.0, 40.0]
    assert loadgen.percentile(values, 50) == 25.0
    assert loadgen.percentile(values, 95) == pytest.approx(38.5)
    assert loadgen.percentile(values, 0) == 10.0
    assert loadgen.percentile(values, 100) == 40.0
    assert loadgen.percentile([7.0], 95) == 7.0
    assert loadgen.percentile([], 50) is None


def test_parse_sse_skips_noise_and_stops_at_done():
    lines = [
        b": keep-alive comment\n",
        b"event: message\n",
        b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n',
        b"\n",
        b'data:{"choices":[{"delta":{"content":"Hi"}}]}\r\n',
        b"data: [DONE]\n",
        b'data: {"never": "read"}\n',
    ]
    events = list(loadgen.parse_sse(lines))
    assert events[-1] is None
    assert [loadgen.chunk_text(e) for e in events[:-1]] == ["", "Hi"]


def test_chunk_text_counts_reasoning_and_ignores_usage():
    assert loadgen.chunk_text({"choices": [{"delta": {"reasoning_content": "hm"}}]}) == "hm"
    assert loadgen.chunk_text({"choices": [], "usage": {"completion_tokens": 3}}) == ""


def test_prompts_and_documents_have_fixed_size_and_differ():
    a, b = loadgen.make_prompt(1, 100), loadgen.make_prompt(2, 100)
    assert a != b and a.split(":")[0] != b.split(":")[0]
    assert len(a.split()) == len(b.split()) == 100 + 5
    docs = [loadgen.make_japanese_doc(i) for i in range(3)]
    assert all(len(d) == 512 for d in docs) and len(set(docs)) == 3
    assert loadgen.make_japanese_doc(5) == loadgen.make_japanese_doc(5)


def test_summarize_chat_aggregates_tokens_over_wall_time():
    rr = loadgen.RequestResult
    results = [
        rr(
            ok=True,
            latency=2.0,
            ttft=0.1,
            completion_tokens=101,
            prompt_tokens=110,
            decode_time=1.0,
        ),
        rr(
            ok=True,
            latency=3.0,
            ttft=0.3,
            completion_tokens=101,
            prompt_tokens=112,
            decode_time=2.0,
        ),
        rr(ok=False, error="HTTP 500: boom"),
    ]
    row = loadgen.summarize_chat(results, wall=4.0, concurrency=2)
    assert row["ok"] == 2 and row["errors"] == 1
    assert row["aggregate_tok_s"] == pytest.approx(202 / 4.0, abs=0.05)
    assert row["ttft_ms_p50"] == 200.0
    assert row["decode_tok_s_per_req_p50"] == 75.0  # (100/1 + 100/2) / 2
    assert row["prompt_tokens_mean"] == 111.0
    assert row["error_samples"] == ["HTTP 500: boom"]


def test_summarize_with_only_failures_reports_nulls():
    row = loadgen.summarize_chat([loadgen.RequestResult(ok=False, error="x")], 1.0, 1)
    assert row["ttft_ms_p50"] is None and row["aggregate_tok_s"] == 0.0
    assert "-" in loadgen.format_table([row])


def test_parse_levels_rejects_zero():
    assert loadgen.parse_levels("1,8,32") == [1, 8, 32]
    with pytest.raises(Exception, match="must be >= 1"):
        loadgen.parse_levels("0,4")


class FakeOpenAI(BaseHTTPRequestHandler):
    """Chat streams `max_tokens` one-token chunks with usage; embeddings return 4-d vectors."""

    protocol_version = "HTTP/1.1"
    api_key = "sekret"
    seen: ClassVar[list[dict]] = []

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        port = self.server.server_address[1]
        FakeOpenAI.seen.append({"path": self.path, "body": body, "port": port})
        if self.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._json(401, {"error": {"message": "bad key"}})
            return
        if self.path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"index": i, "embedding": [0.1] * 4} for i in range(len(inputs))]
            self._json(200, {"data": data, "model": body["model"]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        role = {"choices": [{"delta": {"role": "assistant"}}]}
        self._chunk(b"data: " + json.dumps(role).encode() + b"\n\n")
        n = body["max_tokens"]
        for i in range(n):
            time.sleep(0.002)
            tok = {"choices": [{"delta": {"content": f"t{i}"}}]}
            self._chunk(b"data: " + json.dumps(tok).encode() + b"\n\n")
        usage = {"choices": [], "usage": {"completion_tokens": n, "prompt_tokens": 42}}
        self._chunk(b"data: " + json.dumps(usage).encode() + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")


def _serve() -> tuple[ThreadingHTTPServer, str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def server() -> Iterator[str]:
    FakeOpenAI.seen = []
    httpd, url = _serve()
    yield url
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def second_server(server) -> Iterator[str]:
    httpd, url = _serve()
    yield url
    httpd.shutdown()
    httpd.server_close()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_chat_levels_against_fake_server(server, tmp_path, capsys):
    out = tmp_path / "chat.jsonl"
    argv = ["--url", server + "/v1", "--api-key", "sekret", "--concurrency", "1,4"]
    argv += ["--requests", "8", "--max-tokens", "6", "--warmup", "1", "--label", "fake"]
    assert loadgen.main([*argv, "--out", str(out)]) == 0
    rows = _rows(out)
    assert [r["concurrency"] for r in rows] == [1, 4]
    for row in rows:
        assert row["ok"] == 8 and row["errors"] == 0 and row["setup"] == "fake"
        assert row["completion_tokens"] == 48 and row["prompt_tokens_mean"] == 42
        assert 0 < row["ttft_ms_p50"] <= row["ttft_ms_p95"] < 1000
        assert row["decode_tok_s_per_req_p50"] > 0
    sent = FakeOpenAI.seen[-1]["body"]
    assert sent["stream"] is True and sent["ignore_eos"] is True and sent["max_tokens"] == 6
    assert len(FakeOpenAI.seen) == (1 + 4) + 16  # a warm-up request per client, two levels
    assert "agg tok/s" in capsys.readouterr().out


def test_embeddings_batched_counts_documents(server, tmp_path):
    out = tmp_path / "emb.jsonl"
    argv = ["--url", server, "--api-key", "sekret", "--mode", "embeddings", "--batch", "3"]
    assert loadgen.main([*argv, "--concurrency", "2", "--requests", "5", "--out", str(out)]) == 0
    (row,) = _rows(out)
    assert row["docs"] == 15 and row["ok"] == 5 and row["docs_s"] > 0
    assert all(len(doc) == 512 for doc in FakeOpenAI.seen[-1]["body"]["input"])


def test_wrong_key_is_reported_as_errors(server, tmp_path):
    out = tmp_path / "bad.jsonl"
    argv = ["--url", server, "--api-key", "wrong", "--concurrency", "2", "--requests", "3"]
    assert loadgen.main([*argv, "--warmup", "0", "--max-tokens", "2", "--out", str(out)]) == 1
    (row,) = _rows(out)
    assert row["errors"] == 3 and row["error_samples"][0].startswith("HTTP 401")


def test_processes_and_urls_share_clients_without_repeating_requests(
    server, second_server, tmp_path
):
    out = tmp_path / "emb.jsonl"
    argv = ["--url", f"{server},{second_server}/v1", "--api-key", "sekret", "--mode", "embeddings"]
    argv += ["--concurrency", "4", "--requests", "10", "--processes", "2", "--out", str(out)]
    assert loadgen.main(argv) == 0
    (row,) = _rows(out)
    assert row["ok"] == 10 and row["docs"] == 10 and row["errors"] == 0
    measured = FakeOpenAI.seen[4:]  # after one warm-up request per client
    assert len(measured) == 10
    assert len({entry["body"]["input"][:12] for entry in measured}) == 10  # distinct documents
    ports = [int(url.rsplit(":", 1)[1]) for url in (server, second_server)]
    assert {entry["port"] for entry in FakeOpenAI.seen[:4]} == set(ports)  # 2 clients each
    assert {entry["port"] for entry in measured} == set(ports)


def test_a_driver_process_that_dies_is_reported_not_waited_for():
    def die(client, index):
        os._exit(3)

    with pytest.raises(RuntimeError, match=r"driver process failed \(exit codes \[3"):
        loadgen.run_spread(lambda: None, die, 2, 2, processes=2)


def test_encoding_format_is_sent_and_the_vectors_type_checked(server, tmp_path):
    out = tmp_path / "emb.jsonl"
    argv = ["--url", server, "--api-key", "sekret", "--mode", "embeddings", "--doc-chars", "40"]
    argv += ["--concurrency", "1", "--requests", "2", "--warmup", "0", "--out", str(out)]
    assert loadgen.main([*argv, "--encoding-format", "float"]) == 0
    assert FakeOpenAI.seen[-1]["body"]["encoding_format"] == "float"
    assert len(FakeOpenAI.seen[-1]["body"]["input"]) == 40
    # The fake answers float lists whatever is asked: a base64 request must not count them.
    assert loadgen.main([*argv, "--encoding-format", "base64"]) == 1
    assert _rows(out)[-1]["error_samples"] == ["an embedding is not a str"]
