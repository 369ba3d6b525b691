#!/usr/bin/env python3
"""Load driver for any OpenAI-compatible endpoint (llama-server, LiteLLM, ...).

Chat mode: closed-loop clients at each concurrency level send fixed-length prompts (~110 tokens)
asking for ``max_tokens`` (256) tokens with ``ignore_eos`` (a llama-server extension that LiteLLM
forwards), streamed so the time to first token is seen. Per level it reports aggregate tok/s
(completion tokens of all requests / wall time of the level), TTFT p50/p95, per-request decode
tok/s (tokens after the first / time after the first) and errors.

Embeddings mode: 512-character Japanese documents, one per request or ``--batch`` per request,
reporting docs/s and request latency p50/p95.

Standard library only (threads + http.client with keep-alive, one connection per client): an
offline GPU host may have no pip index, and at these rates (thousands of SSE events a second)
threads are not the bottleneck. For thousands of embedding vectors a second, ``--processes``
shares the clients over forked driver processes; ``--url A,B`` shares them over several engines.
Results: one JSON object per level (``--out``, JSON Lines, appended) and a
table on stdout; bench/plot.py draws them.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import multiprocessing
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Common English words: the Llama-3 tokenizer maps each to one token (with its leading space),
# so N words make a prompt of about N tokens plus the chat template's ~10.
_WORDS_TEXT = (
    "the of and to in is was for on that with as by at from his her which this be are were "
    "or an not had have has one all their there been they more when who will would can no "
    "other new time some these two may first only into its any after most over such where "
    "made many before must through back years much then well also people state world between "
    "under during long day part small place water house great light night city music river "
    "story paper table window garden market school winter summer morning evening language"
)
WORDS = tuple(_WORDS_TEXT.split())

# Japanese sentences for embedding documents (varied kana/kanji mix, like real corpora).
JA_SENTENCES = (
    "東京都は日本の首都であり、政治と経済の中心地として知られている。",
    "昨日の会議では、新しい製品の販売計画について詳しく議論した。",
    "この地域では春になると桜が咲き、多くの観光客が訪れる。",
    "機械学習のモデルは大量のデータから規則性を見つけ出す。",
    "駅前の図書館は平日の夜九時まで開いているので便利だ。",
    "彼女は毎朝六時に起きて、近所の公園を三十分ほど散歩する。",
    "台風の接近に伴い、交通機関に大きな乱れが生じる恐れがある。",
    "このソフトウェアは複数の言語に対応しており、設定も簡単である。",
    "地元の農家が育てた新鮮な野菜を使った料理が評判になっている。",
    "顧客からの問い合わせには、原則として二営業日以内に回答する。",
    "研究チームは新しい材料の特性を調べるために実験を繰り返した。",
    "京都の古い寺院には、長い歴史を感じさせる庭園が数多く残っている。",
)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation, like numpy's default.

    Returns None for no values, so an all-failed level reports nulls instead of crashing.
    """
    data = sorted(values)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def parse_sse(lines: Iterable[bytes]) -> Iterator[dict[str, Any] | None]:
    """Yield the JSON object of each SSE ``data:`` line; None for ``data: [DONE]``.

    Comments, blank lines and other fields (``event:``, ``id:``) are skipped: servers differ in
    those, and only the data carries tokens.
    """
    for raw in lines:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            yield None
            return
        if payload:
            yield json.loads(payload)


def chunk_text(chunk: dict[str, Any]) -> str:
    """Text a chat-completion chunk carries (content or reasoning), '' for role/usage chunks."""
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        text += (delta.get("content") or "") + (delta.get("reasoning_content") or "")
    return text


def make_prompt(index: int, words: int, seed: int = 0) -> str:
    """A prompt of ``words`` common words, different for every request.

    The request number comes first so no two prompts share a prefix: otherwise llama-server's
    prompt cache would skip most of the prompt and TTFT would look better than in real use.
    """
    rng = random.Random(seed * 1_000_003 + index)
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Request {index}: continue this text. {body}"


def make_japanese_doc(index: int, chars: int = 512) -> str:
    """A Japanese document of exactly ``chars`` characters, different for every index."""
    rng = random.Random(index)
    text = f"文書{index}。"
    while len(text) < chars:
        text += rng.choice(JA_SENTENCES)
    return text[:chars]


@dataclass
class RequestResult:
    """What one request did; times in seconds from its start."""

    ok: bool
    latency: float = 0.0
    ttft: float | None = None
    completion_tokens: int = 0
    prompt_tokens: int | None = None
    decode_time: float | None = None  # first token -> last token
    docs: int = 0
    error: str = ""


@dataclass
class Client:
    """One keep-alive HTTP connection to the endpoint, owned by one worker thread."""

    url: str
    api_key: str | None = None
    timeout: float = 600.0
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = urlsplit(self.url)
            cls = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = cls(parts.hostname or "localhost", parts.port, timeout=self.timeout)
        return self._conn

    def headers(self) -> dict[str, str]:
        """JSON headers, with the bearer token when one is configured."""
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def post(self, path: str, body: dict[str, Any]) -> http.client.HTTPResponse:
        """POST ``body`` as JSON, reconnecting once if the kept-alive connection was closed."""
        base = urlsplit(self.url).path.rstrip("/")
        payload = json.dumps(body).encode()
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", base + path, body=payload, headers=self.headers())
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Drop the connection (after an error the stream state is unknown)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def chat_request(client: Client, args: argparse.Namespace, index: int) -> RequestResult:
    """One streamed chat completion; TTFT is the first chunk that carries text."""
    body: dict[str, Any] = {
        "model": args.model,
        "messages": [{"role": "user", "content": make_prompt(index, args.prompt_words)}],
        "max_tokens": args.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
    }
    if args.ignore_eos:
        body["ignore_eos"] = True
    start = time.perf_counter()
    try:
        resp = client.post("/v1/chat/completions", body)
        if resp.status != 200:
            text = resp.read()[:300].decode(errors="replace")
            return RequestResult(ok=False, error=f"HTTP {resp.status}: {text}")
        first = last = None
        chunks = 0
        usage: dict[str, Any] = {}
        done = False
        for event in parse_sse(iter(resp.readline, b"")):
            if event is None:
                done = True
                break
            if event.get("usage"):
                usage = event["usage"]
            if chunk_text(event):
                now = time.perf_counter()
                first = first or now
                last = now
                chunks += 1
        resp.read()  # drain, so the connection can be reused
    except (OSError, http.client.HTTPException, ValueError) as exc:
        client.close()
        return RequestResult(ok=False, error=f"{type(exc).__name__}: {exc}")
    end = time.perf_counter()
    if not done or first is None:
        return RequestResult(ok=False, latency=end - start, error="stream ended without [DONE]")
    tokens = int(usage.get("completion_tokens") or chunks)
    return RequestResult(
        ok=True,
        latency=end - start,
        ttft=first - start,
        completion_tokens=tokens,
        prompt_tokens=usage.get("prompt_tokens"),
        decode_time=(last - first) if last and tokens > 1 else None,
    )


def embed_request(client: Client, args: argparse.Namespace, index: int) -> RequestResult:
    """One embeddings request of ``args.batch`` documents; checks one vector per document."""
    docs = [make_japanese_doc(index * args.batch + i, args.doc_chars) for i in range(args.batch)]
    body = {"model": args.model, "input": docs[0] if args.batch == 1 else docs}
    encoding = getattr(args, "encoding_format", None)  # bench/soak.py's args have none
    if encoding:
        body["encoding_format"] = encoding  # base64: what the OpenAI SDKs ask for by default
    start = time.perf_counter()
    try:
        resp = client.post("/v1/embeddings", body)
        raw = resp.read()
        if resp.status != 200:
            return RequestResult(ok=False, error=f"HTTP {resp.status}: {raw[:300]!r}")
        data = json.loads(raw).get("data") or []
    except (OSError, http.client.HTTPException, ValueError) as exc:
        client.close()
        return RequestResult(ok=False, error=f"{type(exc).__name__}: {exc}")
    end = time.perf_counter()
    if len(data) != args.batch:
        return RequestResult(ok=False, error=f"{len(data)} embeddings for {args.batch} inputs")
    want = str if encoding == "base64" else list
    if not all(isinstance(d.get("embedding"), want) for d in data):
        return RequestResult(ok=False, error=f"an embedding is not a {want.__name__}")
    return RequestResult(ok=True, latency=end - start, docs=args.batch)


def run_level(
    make_client: Callable[[], Client],
    one_request: Callable[[Client, int], RequestResult],
    concurrency: int,
    requests: int,
    first_index: int = 0,
) -> tuple[list[RequestResult], float]:
    """Run ``requests`` requests over ``concurrency`` closed-loop clients; return results, wall.

    Each client thread sends its next request as soon as the previous one ends, the way a
    fixed number of users or agents loads a server.
    """
    results: list[RequestResult] = []
    lock = threading.Lock()
    next_index = [first_index]

    def worker() -> None:
        client = make_client()
        try:
            while True:
                with lock:
                    if next_index[0] >= first_index + requests:
                        return
                    index = next_index[0]
                    next_index[0] += 1
                result = one_request(client, index)
                with lock:
                    results.append(result)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def run_spread(
    make_client: Callable[[], Client],
    one_request: Callable[[Client, int], RequestResult],
    concurrency: int,
    requests: int,
    first_index: int = 0,
    *,
    processes: int = 1,
) -> tuple[list[RequestResult], float]:
    """run_level over ``processes`` forked processes, clients and requests shared out.

    Why: one Python process parses every response under one GIL; thousands of embedding
    vectors a second (384 floats each) would make the driver the bottleneck it measures.
    Each child runs run_level on its share (contiguous request numbers) and sends back its
    results; the wall time spans all of them.
    """
    processes = max(1, min(processes, concurrency))
    if processes == 1:
        return run_level(make_client, one_request, concurrency, requests, first_index)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.SimpleQueue()
    children = []
    start = time.perf_counter()
    done_clients = done_requests = 0
    for k in range(processes):
        clients = concurrency // processes + (k < concurrency % processes)
        share = requests // processes + (k < requests % processes)
        first = first_index + done_requests

        def child(c: int = clients, n: int = share, f: int = first) -> None:
            queue.put(run_level(make_client, one_request, c, n, f)[0])

        CLIENT_BASE[0] = done_clients  # a child's clients continue the URL rotation
        proc = ctx.Process(target=child, daemon=True)
        proc.start()
        children.append(proc)
        done_clients += clients
        done_requests += share
    CLIENT_BASE[0] = 0
    results: list[RequestResult] = []
    pending = len(children)
    while pending:  # read before join: a full pipe would block the child forever
        if not queue.empty():
            results.extend(queue.get())
            pending -= 1
        elif failed := [p.exitcode for p in children if p.exitcode not in (None, 0)]:
            raise RuntimeError(f"loadgen: a driver process failed (exit codes {failed})")
        else:
            time.sleep(0.02)
    for proc in children:
        proc.join()
    return results, time.perf_counter() - start


# Number of the next client made in this process (children start from their share's first).
CLIENT_BASE = [0]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 1)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def summarize_chat(results: list[RequestResult], wall: float, concurrency: int) -> dict[str, Any]:
    """Aggregate one chat level into the figures the benchmark reports."""
    ok = [r for r in results if r.ok]
    tokens = sum(r.completion_tokens for r in ok)
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    per_req = [
        (r.completion_tokens - 1) / r.decode_time for r in ok if r.decode_time and r.decode_time > 0
    ]
    prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    return {
        "mode": "chat",
        "concurrency": concurrency,
        "requests": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "wall_s": round(wall, 3),
        "completion_tokens": tokens,
        "prompt_tokens_mean": _round(sum(prompts) / len(prompts)) if prompts else None,
        "aggregate_tok_s": round(tokens / wall, 1) if wall > 0 else None,
        "ttft_ms_p50": _ms(percentile(ttfts, 50)),
        "ttft_ms_p95": _ms(percentile(ttfts, 95)),
        "decode_tok_s_per_req_p50": _round(percentile(per_req, 50)),
        "decode_tok_s_per_req_min": _round(min(per_req)) if per_req else None,
        "latency_s_p50": _round(percentile([r.latency for r in ok], 50), 3),
        "error_samples": sorted({r.error for r in results if not r.ok})[:3],
    }


def summarize_embed(
    results: list[RequestResult], wall: float, concurrency: int, batch: int
) -> dict[str, Any]:
    """Aggregate one embeddings level: documents per second and request latency."""
    ok = [r for r in results if r.ok]
    docs = sum(r.docs for r in ok)
    latencies = [r.latency for r in ok]
    return {
        "mode": "embeddings",
        "concurrency": concurrency,
        "batch": batch,
        "requests": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "wall_s": round(wall, 3),
        "docs": docs,
        "docs_s": round(docs / wall, 1) if wall > 0 else None,
        "requests_s": round(len(ok) / wall, 1) if wall > 0 else None,
        "latency_ms_p50": _ms(percentile(latencies, 50)),
        "latency_ms_p95": _ms(percentile(latencies, 95)),
        "error_samples": sorted({r.error for r in results if not r.ok})[:3],
    }


CHAT_COLUMNS = [
    ("concurrency", "clients"),
    ("ok", "ok"),
    ("errors", "err"),
    ("aggregate_tok_s", "agg tok/s"),
    ("ttft_ms_p50", "TTFT p50 ms"),
    ("ttft_ms_p95", "TTFT p95 ms"),
    ("decode_tok_s_per_req_p50", "req tok/s p50"),
    ("prompt_tokens_mean", "prompt tok"),
    ("wall_s", "wall s"),
]
EMBED_COLUMNS = [
    ("concurrency", "clients"),
    ("batch", "batch"),
    ("ok", "ok"),
    ("errors", "err"),
    ("docs_s", "docs/s"),
    ("requests_s", "req/s"),
    ("latency_ms_p50", "lat p50 ms"),
    ("latency_ms_p95", "lat p95 ms"),
    ("wall_s", "wall s"),
]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of the levels, for people reading the terminal."""
    if not rows:
        return ""
    columns = CHAT_COLUMNS if rows[0]["mode"] == "chat" else EMBED_COLUMNS
    cells = [[title for _, title in columns]]
    cells += [["-" if r.get(k) is None else str(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    )


def parse_levels(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; rejects zero or negative levels early."""
    levels = [int(x) for x in text.split(",") if x.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be >= 1: {text!r}")
    return levels


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring and bench/README.md)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--url",
        required=True,
        help="base URL, e.g. http://127.0.0.1:8080; several, comma-separated, share the clients "
        "in turn (one engine per URL, no proxy in between)",
    )
    p.add_argument("--mode", choices=["chat", "embeddings"], default="chat")
    p.add_argument("--model", default="default", help="model name sent in requests")
    p.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    p.add_argument("--concurrency", type=parse_levels, default=[1, 8, 32])
    p.add_argument("--requests", type=int, help="requests per level (default: 4 x clients, >= 8)")
    p.add_argument(
        "--warmup", type=int, default=1, help="unmeasured requests per client before each level"
    )
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument(
        "--prompt-words", type=int, default=92, help="prompt words: 92 -> ~110 Llama-3 tokens"
    )
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false")
    p.add_argument("--batch", type=int, default=1, help="documents per embeddings request")
    p.add_argument("--doc-chars", type=int, default=512, help="characters per embeddings document")
    p.add_argument(
        "--encoding-format",
        choices=["float", "base64"],
        help="embeddings: sent as encoding_format (default: not sent, the server's float lists)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="driver processes the clients are shared over (for thousands of responses/s)",
    )
    p.add_argument("--label", default="", help="setup name stored in each result (plot legend)")
    p.add_argument("--out", type=Path, help="append one JSON object per level to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run every level, print the table, append JSON; exit 1 if any request failed."""
    args = build_parser().parse_args(argv)
    urls = [u.strip().rstrip("/").removesuffix("/v1") for u in args.url.split(",") if u.strip()]
    url = ",".join(urls)
    made = itertools.count()
    made_lock = threading.Lock()

    def make_client() -> Client:
        with made_lock:
            number = CLIENT_BASE[0] + next(made)
        return Client(urls[number % len(urls)], args.api_key, args.timeout)

    def one(client: Client, index: int) -> RequestResult:
        if args.mode == "chat":
            return chat_request(client, args, index)
        return embed_request(client, args, index)

    rows: list[dict[str, Any]] = []
    index = 0
    warm_index = 1_000_000  # warm-up prompts never repeat measured ones
    for level in args.concurrency:
        # Warm up at this level's concurrency: the first batches of a new size pay one-off
        # costs (CUDA graphs, allocations) that are not the steady state being measured.
        if args.warmup:
            warm, _ = run_spread(
                make_client, one, level, args.warmup * level, warm_index, processes=args.processes
            )
            warm_index += args.warmup * level
            failed = [r.error for r in warm if not r.ok]
            if failed:
                print(f"loadgen: warm-up at {level} client(s) failed: {failed[0]}", file=sys.stderr)
                return 1
        n = args.requests or max(8, 4 * level)
        results, wall = run_spread(make_client, one, level, n, index, processes=args.processes)
        index += n
        if args.mode == "chat":
            row = summarize_chat(results, wall, level)
        else:
            row = summarize_embed(results, wall, level, args.batch)
        row.update(
            setup=args.label,
            url=url,
            model=args.model,
            max_tokens=args.max_tokens if args.mode == "chat" else None,
            time=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        rows.append(row)
        figure = row.get("aggregate_tok_s", row.get("docs_s"))
        unit = "tok/s" if args.mode == "chat" else "docs/s"
        print(f"loadgen: {level} client(s): {figure} {unit}, {row['errors']} error(s)", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
    print(format_table(rows))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
