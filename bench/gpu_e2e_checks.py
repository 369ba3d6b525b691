#!/usr/bin/env python3
"""Check a serving stack through its published port with the official openai SDK.

Run by bench/gpu_e2e.sh with the image's own venv (it holds the openai SDK LiteLLM pins), from a
container on the host network, so the requests take the path a client's take: the published
port, the key, the proxy, the engines on the GPU. With synthetic models the text means nothing,
so the checks are about form: a Japanese request answered with strictly valid UTF-8 of exactly
the asked length, streamed chunks that join to such text with the same count, embeddings of the
model's width in the SDK's default base64 and in float (the same vector), a wrong key refused,
every Prometheus path (the proxy's, each engine's, the GPUs') refused without the key and
serving every series the Grafana dashboard reads with it.

Prints one JSON object: {"passed": [names], "details": {name: figures}}; exits 1 on the first
failed check (its message on stderr).

    python3 gpu_e2e_checks.py --url http://127.0.0.1:28000/v1 --key KEY [--tokens 64] [--dim 384]
        --dashboard observability/grafana-dashboard.json [--save-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai

CHAT_MODEL = "gpt-3.5-turbo"
EMBEDDING_MODEL = "text-embedding-ada-002"
MESSAGES = [
    {"role": "system", "content": "あなたは優秀な観光ガイドです。"},
    {"role": "user", "content": "自己紹介をしてください"},
]


def check(condition: bool, message: str) -> None:
    """Stop the run with MESSAGE unless CONDITION holds."""
    if not condition:
        raise SystemExit(f"FAILED: {message}")


def chat(client: openai.OpenAI, tokens: int) -> dict[str, Any]:
    """A non-streamed Japanese request: the body strict UTF-8, the reply TOKENS tokens long."""
    raw = client.chat.completions.with_raw_response.create(
        model=CHAT_MODEL,
        messages=MESSAGES,
        max_tokens=tokens,
        temperature=0.01,
        top_p=0.01,
        extra_body={"ignore_eos": True},
    )
    body = raw.http_response.content.decode("utf-8", errors="strict")
    reply = raw.parse()
    text = reply.choices[0].message.content or ""
    check(
        reply.usage.completion_tokens == tokens,
        f"chat: {reply.usage.completion_tokens} tokens, asked {tokens}",
    )
    check(
        reply.choices[0].finish_reason == "length",
        f"chat: finish_reason {reply.choices[0].finish_reason}",
    )
    check(len(text) > 0, "chat: empty text")
    return {
        "bytes": len(body.encode()),
        "chars": len(text),
        "tokens": reply.usage.completion_tokens,
    }


def stream(client: openai.OpenAI, tokens: int) -> dict[str, Any]:
    """A streamed request: the body strict UTF-8, the deltas joined to TOKENS tokens of text."""
    parts: list[str] = []
    usage = None
    finish = None
    with client.chat.completions.with_streaming_response.create(
        model=CHAT_MODEL,
        messages=MESSAGES,
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    ) as response:
        body = b"".join(response.http_response.iter_bytes())
    for line in body.decode("utf-8", errors="strict").splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[len("data: ") :])
        for choice in chunk.get("choices") or []:
            parts.append((choice.get("delta") or {}).get("content") or "")
            finish = choice.get("finish_reason") or finish
        usage = chunk.get("usage") or usage
    text = "".join(parts)
    check(usage is not None, "stream: no usage chunk")
    check(
        usage["completion_tokens"] == tokens,
        f"stream: {usage['completion_tokens']} tokens, asked {tokens}",
    )
    check(finish == "length", f"stream: finish_reason {finish}")
    check(len(text) > 0, "stream: empty text")
    return {"chunks": len(parts), "chars": len(text), "tokens": usage["completion_tokens"]}


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors of the same length."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def embeddings(client: openai.OpenAI, dim: int) -> dict[str, Any]:
    """The SDK's default (base64) and float encodings: DIM wide, finite, the same vector."""
    text = "query: 夕飯はお肉です。"
    default = client.embeddings.create(
        model=EMBEDDING_MODEL, input=[text, "passage: 東京は日本の首都です。"]
    )
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="float")
    vec64, vecf = default.data[0].embedding, floats.data[0].embedding
    check(len(default.data) == 2, f"embeddings: {len(default.data)} vectors for 2 inputs")
    check(
        len(vec64) == dim and len(vecf) == dim,
        f"embeddings: widths {len(vec64)}, {len(vecf)}; want {dim}",
    )
    check(all(math.isfinite(x) for x in vec64 + vecf), "embeddings: non-finite values")
    same = cosine(vec64, vecf)
    check(same > 0.9999, f"embeddings: base64 and float vectors differ (cosine {same:.6f})")
    return {"dim": len(vec64), "cosine_base64_float": round(same, 6)}


def wrong_key(url: str) -> dict[str, Any]:
    """A wrong key gets 401 (openai.AuthenticationError)."""
    client = openai.OpenAI(base_url=url, api_key="sk-wrong-key-0000000000000000", max_retries=0)
    try:
        client.models.list()
    except openai.AuthenticationError as err:
        return {"status": err.status_code}
    raise SystemExit("FAILED: wrong_key: the request was accepted")


def load_dashboard(path: str) -> Any:
    """observability/dashboard.py, beside the dashboard's JSON: its queries and series names."""
    spec = importlib.util.spec_from_file_location("dashboard", Path(path).parent / "dashboard.py")
    board = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(board)
    return board


def metrics(
    root: str, key: str, dashboard: str, save_dir: str | None, engines: list[str]
) -> dict[str, Any]:
    """Every Prometheus path of the port refuses a missing key and, with it, serves its series;
    together they serve every series the dashboard's queries read (its JSON at DASHBOARD).
    engines: the engines' program names (one /engines/<program>/metrics path each)."""
    board = load_dashboard(dashboard)

    def get(path: str, with_key: bool) -> tuple[int, str]:
        request = urllib.request.Request(root + path)
        if with_key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, ""

    paths = {
        "litellm": "/metrics/",
        **{program: f"/engines/{program}/metrics" for program in engines},
        "gpu-metrics": "/gpus/metrics",
        "balancer": "/balancer/metrics",
    }
    found: dict[str, int] = {}
    names: set[str] = set()
    for program, path in paths.items():
        status, _ = get(path, with_key=False)
        check(status == 401, f"metrics: {path} answered {status} without the key")
        status, text = get(path, with_key=True)
        check(status == 200, f"metrics: {path} answered {status} with the key")
        series = board.exposition_names(text)
        found[program] = len(series)
        names |= series
        if save_dir:
            Path(save_dir, f"metrics-{program}.prom").write_text(text)
    wanted = set().union(*(board.metric_names(e) for _, e in board.queries(Path(dashboard))))
    missing = sorted(wanted - names)
    check(not missing, f"metrics: the dashboard reads series nobody serves: {missing}")
    return {"series_per_path": found, "dashboard_series": len(wanted)}


def models(client: openai.OpenAI) -> dict[str, Any]:
    """/v1/models lists both aliases."""
    names = sorted(m.id for m in client.models.list().data)
    check({CHAT_MODEL, EMBEDDING_MODEL} <= set(names), f"models: {names}")
    return {"ids": names}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="base URL with /v1")
    p.add_argument("--key", required=True)
    p.add_argument("--tokens", type=int, default=64, help="reply length asked for, in tokens")
    p.add_argument("--dim", type=int, default=384, help="the embedding model's width")
    p.add_argument(
        "--dashboard", required=True, help="observability/grafana-dashboard.json (its queries)"
    )
    p.add_argument("--save-dir", help="where to write each path's scrape (metrics-*.prom)")
    p.add_argument(
        "--engines",
        default="llamacpp-chat,llamacpp-embeddings",
        help="the engines' program names, comma-separated",
    )
    a = p.parse_args()
    client = openai.OpenAI(base_url=a.url, api_key=a.key, max_retries=0, timeout=120)
    result: dict[str, Any] = {"passed": [], "details": {}}
    for name, run in (
        ("models", lambda: models(client)),
        ("chat_japanese_utf8", lambda: chat(client, a.tokens)),
        ("stream_japanese_utf8", lambda: stream(client, a.tokens)),
        ("embeddings_base64_float", lambda: embeddings(client, a.dim)),
        ("wrong_key_401", lambda: wrong_key(a.url)),
        (
            "metrics_behind_the_key",
            lambda: metrics(
                a.url.removesuffix("/v1"), a.key, a.dashboard, a.save_dir, a.engines.split(",")
            ),
        ),
    ):
        result["details"][name] = run()
        result["passed"].append(name)
        print(f"{name}: {result['details'][name]}", file=sys.stderr)
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
