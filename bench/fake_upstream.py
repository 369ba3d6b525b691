#!/usr/bin/env python3
"""A fake llama-server: OpenAI-compatible streamed chat completions without a model or a GPU.

Why this exists: on the GPU host LiteLLM caps streamed chat throughput below what the engine
alone delivers, and that is cheaper to dissect without a GPU. This server answers
``/v1/chat/completions`` (``stream: true``) with chunks shaped like llama-server's (one SSE event
per token, then a ``finish_reason: "length"`` chunk, a usage chunk and ``data: [DONE]``), as fast
as it can or at ``--tokens-per-s`` per stream, so the proxy's own cost per relayed chunk can be
measured on any machine (bench/proxy_relay.py). It also answers ``/health``, ``/v1/models`` and
non-streamed chat completions (one JSON body), enough for LiteLLM and bench/loadgen.py.

Standard library only (ThreadingHTTPServer, HTTP/1.1 keep-alive, chunked transfer encoding).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FINGERPRINT = "b10864-fake0000"


def chunk_event(
    cid: str, model: str, created: int, delta: dict[str, Any], finish: str | None
) -> bytes:
    """One SSE event of a llama-server chat.completion.chunk."""
    body = {
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "created": created,
        "id": cid,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "object": "chat.completion.chunk",
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def usage_event(cid: str, model: str, created: int, prompt: int, completion: int) -> bytes:
    """The final usage chunk (stream_options.include_usage), as llama-server sends it."""
    body = {
        "choices": [],
        "created": created,
        "id": cid,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "object": "chat.completion.chunk",
        "usage": {
            "completion_tokens": completion,
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
        },
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler; the server's ``tokens_per_s`` (0 = unlimited) paces each stream."""

    protocol_version = "HTTP/1.1"
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a log line per request would cost more than the response."""

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        """/health and /v1/models."""
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in {"/health", "/v1/health"}:
            self._json(200, {"status": "ok"})
        elif path in {"/v1/models", "/models"}:
            model = {"id": self.server.model, "object": "model", "owned_by": "fake_upstream"}
            self._json(200, {"object": "list", "data": [model]})
        else:
            self._json(404, {"error": {"message": "not found", "code": 404}})

    def do_POST(self) -> None:
        """/v1/chat/completions, streamed or not."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in {"/v1/chat/completions", "/chat/completions"}:
            self._json(404, {"error": {"message": "not found", "code": 404}})
            return
        try:
            req = json.loads(raw)
        except ValueError:
            self._json(400, {"error": {"message": "bad JSON", "code": 400}})
            return
        n = int(req.get("max_tokens") or req.get("max_completion_tokens") or 16)
        model = str(req.get("model") or self.server.model)
        prompt = sum(len(str(m.get("content", "")).split()) for m in req.get("messages") or [])
        if req.get("stream"):
            self._stream(n, model, prompt)
        else:
            self._json(200, self._completion(n, model, prompt))

    def _completion(self, n: int, model: str, prompt: int) -> dict[str, Any]:
        message = {"role": "assistant", "content": "t" * n}
        return {
            "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
            "created": int(time.time()),
            "id": "chatcmpl-x",
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "object": "chat.completion",
            "usage": {"completion_tokens": n, "prompt_tokens": prompt, "total_tokens": prompt + n},
        }

    def _send_chunk(self, data: bytes) -> None:
        """One HTTP chunk per SSE event (like llama-server, one write per token)."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _stream(self, n: int, model: str, prompt: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        created = int(time.time())
        cid = "chatcmpl-x"
        interval = 1.0 / self.server.tokens_per_s if self.server.tokens_per_s > 0 else 0.0
        start = time.perf_counter()
        self._send_chunk(
            chunk_event(cid, model, created, {"role": "assistant", "content": None}, None)
        )
        # The per-token event is the same bytes every time: build it once.
        token = chunk_event(cid, model, created, {"content": "t"}, None)
        for i in range(n):
            if interval:
                delay = start + (i + 1) * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            self._send_chunk(token)
        self._send_chunk(chunk_event(cid, model, created, {}, "length"))
        self._send_chunk(usage_event(cid, model, created, prompt, n))
        self._send_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class FakeServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the stream settings."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, addr: tuple[str, int], tokens_per_s: float, model: str) -> None:
        super().__init__(addr, Handler)
        self.tokens_per_s = tokens_per_s
        self.model = model


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument(
        "--tokens-per-s", type=float, default=0.0, help="per stream; 0 (default) = unlimited"
    )
    p.add_argument("--model", default="Llama-3-ELYZA-JP-8B", help="model id of /v1/models")
    args = p.parse_args(argv)
    server = FakeServer((args.host, args.port), args.tokens_per_s, args.model)
    print(
        f"fake_upstream: http://{args.host}:{args.port} ({args.tokens_per_s or 'unlimited'} tok/s)",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
