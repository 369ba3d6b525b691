#!/usr/bin/env python3
"""Bounded soak test: many clients of chat and embeddings at once, for a fixed time.

Each of ``--clients`` threads sends requests back to back until ``--duration`` seconds are up,
a chat completion (streamed, ``--max-tokens`` tokens) with probability ``--chat-share`` and an
embedding of one 512-character Japanese document otherwise. Reported per kind: requests, status
counts, latency p50/p95/max and requests/s. With ``--container``, the resident memory (RSS) of
every process in the stack's container is read after ``--warmup`` seconds of load and again at
the end: a process that grew by more than ``--max-growth-mb`` and ``--max-growth-pct`` together,
or that was replaced (a crash and restart under load), is a finding.

Exit status 1 when any request failed (any 5xx, 4xx or broken connection) or any process grew
or was replaced; the summary (JSON) goes to stdout and ``--out``. Standard library only, plus
bench/loadgen.py beside it (the same requests as the benchmarks).

    python3 bench/soak.py --url http://127.0.0.1:28000 --api-key "$KEY" \\
        --clients 64 --duration 300 --container localai-llamacpp --docker "sudo docker"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import Client, RequestResult, chat_request, embed_request

# Prints "PID RSS_KIB COMMAND LINE" for every process but itself (no ps in the image).
RSS_SCRIPT = (
    'for d in /proc/[0-9]*; do [ "$d" = /proc/$$ ] && continue; '
    "r=$(awk '/^VmRSS/{print $2}' $d/status 2>/dev/null); "
    "[ -n \"$r\" ] && echo \"${d#/proc/} $r $(tr '\\0' ' ' < $d/cmdline)\"; done"
)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def status_of(result: RequestResult) -> str:
    """'200', the HTTP status of a failed request ('HTTP 503: ...' -> '503'), or 'error'."""
    if result.ok:
        return "200"
    if result.error.startswith("HTTP "):
        return result.error.split()[1].rstrip(":")
    return "error"


def program_name(command: str) -> str:
    """A readable name for a process of the stack, from its command line."""
    args = command.split()
    if not args:
        return "?"
    if args[0].endswith("llama-server"):
        alias = args[args.index("--alias") + 1] if "--alias" in args[:-1] else "?"
        return f"llama-server ({alias})"
    if "multiprocessing.spawn" in command:
        return "litellm worker"
    if "multiprocessing.resource_tracker" in command:
        return "litellm resource tracker"
    if "litellm" in command and "--config" in args:
        return "litellm"
    return os.path.basename(args[0]) + (f" {os.path.basename(args[1])}" if len(args) > 1 else "")


def parse_rss(text: str) -> dict[str, dict[str, Any]]:
    """RSS_SCRIPT's output -> {pid: {name, rss_mib, command}}."""
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        pid, rss_kib, command = parts
        out[pid] = {
            "name": program_name(command),
            "rss_mib": round(int(rss_kib) / 1024, 1),
            "command": command[:200],
        }
    return out


def read_rss(docker: str, container: str) -> dict[str, dict[str, Any]]:
    """RSS of every process in the container, through `<docker> exec <container> bash -c`."""
    cmd = [*shlex.split(docker), "exec", container, "bash", "-c", RSS_SCRIPT]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    return parse_rss(done.stdout)


def compare_rss(
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    max_growth_mb: float,
    max_growth_pct: float,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-process rows (before -> after) and the findings: growth past both limits, or a
    process of the stack that is gone (replaced: it crashed or was restarted under load)."""
    rows, findings = [], []
    for pid, old in sorted(before.items(), key=lambda kv: kv[1]["name"]):
        new = after.get(pid)
        row = {"pid": int(pid), "name": old["name"], "before_mib": old["rss_mib"]}
        if new is None or new["command"] != old["command"]:
            row["after_mib"] = None
            findings.append(f"{old['name']} (pid {pid}) is gone: it was replaced under load")
        else:
            growth = round(new["rss_mib"] - old["rss_mib"], 1)
            pct = 100 * growth / old["rss_mib"] if old["rss_mib"] else 0.0
            row |= {"after_mib": new["rss_mib"], "growth_mib": growth, "growth_pct": round(pct, 1)}
            if growth > max_growth_mb and pct > max_growth_pct:
                findings.append(
                    f"{old['name']} (pid {pid}) grew {growth} MiB ({pct:.0f} %) during the load"
                )
        rows.append(row)
    return rows, findings


def summarize(results: list[tuple[str, RequestResult, float]], seconds: float) -> dict[str, Any]:
    """Per kind: requests, status counts, latency percentiles (ms, successes) and rates."""
    out: dict[str, Any] = {}
    for kind in ("chat", "embeddings"):
        mine = [(r, t) for k, r, t in results if k == kind]
        statuses = Counter(status_of(r) for r, _ in mine)
        lat = [r.latency * 1000 for r, _ in mine if r.ok]
        errors = Counter(r.error[:160] for r, _ in mine if not r.ok)
        out[kind] = {
            "requests": len(mine),
            "ok": statuses.get("200", 0),
            "status": dict(sorted(statuses.items())),
            "server_errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
            "latency_ms_p50": _round(percentile(lat, 50)),
            "latency_ms_p95": _round(percentile(lat, 95)),
            "latency_ms_max": _round(max(lat) if lat else None),
            "requests_s": round(len(mine) / seconds, 2) if seconds else None,
            "error_samples": [f"{n} x {e}" for e, n in errors.most_common(3)],
        }
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run_load(args: argparse.Namespace, stop_at: float, marks: dict[str, Any]) -> list[Any]:
    """The clients' threads until ``stop_at``; returns (kind, result, finish time) tuples."""
    results: list[tuple[str, RequestResult, float]] = []
    lock = threading.Lock()
    counter = iter(range(10**9))
    chat_args = argparse.Namespace(
        model=args.chat_model, max_tokens=args.max_tokens, ignore_eos=True, prompt_words=40
    )
    embed_args = argparse.Namespace(model=args.embed_model, batch=1, doc_chars=args.doc_chars)

    def client_loop(n: int) -> None:
        rng = random.Random(n)
        client = Client(args.url.rstrip("/").removesuffix("/v1"), args.api_key, args.timeout)
        while time.monotonic() < stop_at:
            with lock:
                index = next(counter)
            if rng.random() < args.chat_share:
                kind, result = "chat", chat_request(client, chat_args, index)
            else:
                kind, result = "embeddings", embed_request(client, embed_args, index)
            with lock:
                results.append((kind, result, time.monotonic()))
        client.close()

    threads = [
        threading.Thread(target=client_loop, args=(n,), daemon=True) for n in range(args.clients)
    ]
    for t in threads:
        t.start()
    if args.container:
        time.sleep(max(0.0, marks["warm_at"] - time.monotonic()))
        marks["rss_before"] = read_rss(args.docker, args.container)
    for t in threads:
        t.join()
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:28000", help="the endpoint (proxy)")
    p.add_argument(
        "--api-key", default=os.environ.get("LOCALAI_API_KEY"), help="or LOCALAI_API_KEY"
    )
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds before the first RSS read")
    p.add_argument("--chat-share", type=float, default=0.5, help="share of chat requests")
    p.add_argument("--chat-model", default="gpt-3.5-turbo")
    p.add_argument("--embed-model", default="text-embedding-ada-002")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens per chat reply")
    # 512-character documents come to 513 tokens with some tokenizers (the test fixture's
    # MiniLM): one over a 512-token window, which llama-server answers with a 500.
    p.add_argument("--doc-chars", type=int, default=400, help="characters per document")
    p.add_argument("--timeout", type=float, default=600.0, help="per request, seconds")
    p.add_argument("--container", help="the stack's container, for RSS (none: no RSS check)")
    p.add_argument(
        "--docker", default="docker", help="command that runs docker, e.g. 'sudo docker'"
    )
    p.add_argument("--settle", type=float, default=5.0, help="seconds after the load, then RSS")
    p.add_argument("--max-growth-mb", type=float, default=128.0)
    p.add_argument("--max-growth-pct", type=float, default=25.0)
    p.add_argument("--label", default="", help="stored in the summary")
    p.add_argument("--out", type=Path, help="append the summary (one JSON line) to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or not 0 <= args.chat_share <= 1:
        print("soak: need --clients >= 1, --duration > 0, 0 <= --chat-share <= 1", file=sys.stderr)
        return 2
    if args.container and args.warmup >= args.duration:
        print("soak: --warmup must be shorter than --duration", file=sys.stderr)
        return 2
    start = time.monotonic()
    marks: dict[str, Any] = {"warm_at": start + args.warmup}
    results = run_load(args, start + args.duration, marks)
    seconds = time.monotonic() - start
    summary: dict[str, Any] = {
        "label": args.label,
        "url": args.url,
        "clients": args.clients,
        "duration_s": round(seconds, 1),
        "chat_share": args.chat_share,
        "max_tokens": args.max_tokens,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **summarize(results, seconds),
    }
    findings = [
        f"{kind}: {s['requests'] - s['ok']} of {s['requests']} requests failed ({s['status']})"
        for kind in ("chat", "embeddings")
        if (s := summary[kind])["ok"] != s["requests"]
    ]
    if args.container:
        time.sleep(args.settle)
        rows, rss_findings = compare_rss(
            marks["rss_before"],
            read_rss(args.docker, args.container),
            args.max_growth_mb,
            args.max_growth_pct,
        )
        summary["rss"] = {"warmup_s": args.warmup, "processes": rows}
        findings += rss_findings
    summary["findings"] = findings
    text = json.dumps(summary, ensure_ascii=False)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.out:
        with args.out.open("a", encoding="utf-8") as out:
            out.write(text + "\n")
    for finding in findings:
        print(f"soak: FINDING: {finding}", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
