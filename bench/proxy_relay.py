#!/usr/bin/env python3
"""LiteLLM's own CPU cost per relayed streamed chunk, measured against bench/fake_upstream.py.

Why this exists: on the GPU host the proxy caps streamed chat throughput below what llama-server
alone delivers, whatever the number of workers. With a fake upstream that streams as fast as it
can, the proxy is the bottleneck on any machine, and its cost can be read directly: CPU seconds
of the uvicorn worker processes (utime + stime from /proc/PID/stat, before and after a level)
divided by the token chunks relayed. One command runs every setup side by side, so a noisy
machine affects them alike:

    python3 bench/proxy_relay.py --out bench/results/<dir>/proxy-relay.jsonl

Rows (JSON Lines): ``direct`` (loadgen straight to the fake upstream), then for each setup and
worker count: aggregate tok/s (bench/loadgen.py), CPU seconds and ms per chunk of each worker,
of all workers together, of the master, and, with ``--spread-clients``, how many established
client connections each worker PID held (read from /proc) while that many clients were streaming.

The proxy runs like bench/native_stack.py starts it (``python -m litellm.proxy.proxy_cli
--config litellm.yaml --num_workers N`` from the config directory, stack.env's environment);
the config is the project's, rendered by bench/render_configs.yml into --config-dir: its chat
deployment, pointed at the fake upstream (``--deployments N``: N fake upstreams, N deployments
of the alias, like the replicas layout), plus the setup's overrides, written as JSON (YAML's
subset) under --work-dir. Run it with the repository's .venv Python (PyYAML reads the config):

    ansible-playbook bench/render_configs.yml -e out_dir=$PWD/bench-inputs/relay-config
    .venv/bin/python bench/proxy_relay.py --config-dir bench-inputs/relay-config --out relay.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from native_stack import (  # the sibling script
    CLK_TCK,
    StackWatch,
    cpu_ticks,
    http_status,
    parse_env_file,
    proxy_command,
    worker_pids,
)

ROOT = Path(__file__).resolve().parent.parent

# Setup name -> overrides: "env" (environment), "chat_params" (merged into each chat
# deployment's litellm_params) and config sections merged into the config.
SETUPS: dict[str, dict[str, dict[str, Any]]] = {
    "baseline": {},
    "log_error": {"env": {"LITELLM_LOG": "ERROR"}},
    "disable_streaming_logging": {"litellm_settings": {"disable_streaming_logging": True}},
    "turn_off_message_logging": {"litellm_settings": {"turn_off_message_logging": True}},
    "callbacks_empty": {"litellm_settings": {"callbacks": [], "success_callback": []}},
    "success_callback_empty": {"litellm_settings": {"success_callback": []}},
    "callbacks_only_empty": {"litellm_settings": {"callbacks": []}},
    "disable_spend_logs": {"general_settings": {"disable_spend_logs": True}},
    "disable_token_counter": {"litellm_settings": {"disable_token_counter": True}},
    "disable_aiohttp_transport": {"litellm_settings": {"disable_aiohttp_transport": True}},
    # LiteLLM's provider for OpenAI-compatible servers that skips the openai SDK's chunk objects
    # (a profile found a quarter of the worker's CPU there).
    "hosted_vllm": {"chat_params": {"model": "hosted_vllm/Llama-3-ELYZA-JP-8B"}},
    "no_retries": {
        "litellm_settings": {"num_retries": 0},
        "router_settings": {"num_retries": 0},
    },
}


def wait_http(url: str, timeout: float) -> None:
    """Poll a URL until it answers 200."""
    deadline = time.monotonic() + timeout
    while http_status(url) != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.5)


def merged_config(
    base: dict[str, Any], overrides: dict[str, dict[str, Any]], upstreams: list[str]
) -> dict[str, Any]:
    """The rendered config's chat deployment once per upstream, and the setup's sections."""
    cfg = copy.deepcopy(base)
    chat = next(m for m in cfg["model_list"] if m.get("model_info", {}).get("mode") == "chat")
    cfg["model_list"] = []
    for url in upstreams:
        entry = copy.deepcopy(chat)
        entry["litellm_params"]["api_base"] = url
        entry["litellm_params"].update(overrides.get("chat_params", {}))
        cfg["model_list"].append(entry)
    for section, values in overrides.items():
        if section not in ("env", "chat_params"):
            cfg.setdefault(section, {}).update(values)
    return cfg


def start_proxy(
    args: argparse.Namespace, name: str, overrides: dict[str, Any], workers: int
) -> tuple[subprocess.Popen[bytes], Path]:
    """Write the setup's config dir and start LiteLLM as bench/native_stack.py does."""
    cfg_dir = args.work_dir / f"{name}-w{workers}"
    shutil.rmtree(cfg_dir, ignore_errors=True)
    cfg_dir.mkdir(parents=True)
    for module in ("localai_auth.py", "localai_hooks.py"):  # litellm.yaml names both
        shutil.copy(args.config_dir / module, cfg_dir)
    base = yaml.safe_load((args.config_dir / "litellm.yaml").read_text(encoding="utf-8"))
    upstreams = [f"http://127.0.0.1:{port}/v1" for port in upstream_ports(args)]
    config = merged_config(base, overrides, upstreams)
    (cfg_dir / "litellm.yaml").write_text(json.dumps(config, indent=1))
    env = dict(os.environ)
    env.update(args.stack_env)
    env.update(overrides.get("env", {}))
    env["PYTHONPATH"] = str(cfg_dir)
    cmd = proxy_command(os.path.abspath(args.proxy_python), cfg_dir, args.proxy_port, workers)
    log = cfg_dir / "litellm.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cfg_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started (SIGTERM, then SIGKILL) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loadgen(
    args: argparse.Namespace, url: str, clients: int, requests: int, label: str
) -> dict[str, Any]:
    """One bench/loadgen.py level (no warm-up); its JSON row."""
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as tmp:
        out = Path(tmp.name)
    cmd = [
        sys.executable,
        str(ROOT / "bench/loadgen.py"),
        "--url",
        url,
        "--api-key",
        args.stack_env["LITELLM_MASTER_KEY"],
        "--model",
        "gpt-3.5-turbo",
        "--concurrency",
        str(clients),
        "--requests",
        str(requests),
        "--warmup",
        "0",
        "--max-tokens",
        str(args.max_tokens),
        "--label",
        label,
        "--out",
        str(out),
    ]
    before = os.times()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, timeout=120)
    after = os.times()
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    out.unlink()
    if not rows:
        raise RuntimeError(f"loadgen wrote no row for {label}")
    row = rows[-1]
    row["loadgen_cpu_s"] = round(
        (after.children_user - before.children_user)
        + (after.children_system - before.children_system),
        2,
    )
    return row


def spread(args: argparse.Namespace, url: str, workers: list[int], label: str) -> dict[str, Any]:
    """Connections per worker while --spread-clients clients stream (sampled every 0.5 s)."""
    names = [f"w{i}" for i in range(len(workers))]
    with StackWatch(dict(zip(names, workers, strict=True)), args.proxy_port, interval=0.5) as watch:
        n = args.spread_clients * args.spread_rounds
        row = loadgen(args, url, args.spread_clients, n, label)
    begin, end = watch.samples[0], watch.samples[-1]
    cpu = [(end["ticks"][w] - begin["ticks"][w]) / CLK_TCK for w in names]
    samples = [s["conns"] for s in watch.samples if sum(s["conns"].values()) >= args.spread_clients]
    middle = samples[len(samples) // 2] if samples else {}
    return {
        "spread_clients": args.spread_clients,
        "spread_tok_s": row.get("aggregate_tok_s"),
        "spread_samples": len(samples),
        "spread_conns_per_worker": [middle.get(w, 0) for w in names],
        "spread_conns_min_max_over_samples": [
            [min(s.get(w, 0) for s in samples), max(s.get(w, 0) for s in samples)] for w in names
        ]
        if samples
        else [],
        "spread_cpu_s_per_worker": [round(c, 2) for c in cpu],
    }


def measure_proxy(args: argparse.Namespace, name: str, workers: int) -> dict[str, Any]:
    """Start the proxy with a setup, warm it, measure one level (and the spread), stop it."""
    overrides = SETUPS[name]
    proc, log = start_proxy(args, name, overrides, workers)
    url = f"http://127.0.0.1:{args.proxy_port}"
    try:
        wait_http(url + "/health/liveliness", args.start_timeout)
        time.sleep(1)
        pids = worker_pids(proc.pid)
        if workers > 1 and len(pids) != workers:
            raise RuntimeError(f"expected {workers} workers, found {pids}")
        loadgen(args, url, args.clients, args.clients * 2, f"{name}-w{workers}-warmup")
        before = {pid: cpu_ticks(pid) for pid in {*pids, proc.pid}}
        row = loadgen(args, url, args.clients, args.requests, f"{name}-w{workers}")
        after = {pid: cpu_ticks(pid) for pid in {*pids, proc.pid}}
        chunks = args.requests * args.max_tokens
        per_worker = [(after[p] - before[p]) / CLK_TCK for p in pids]
        total = sum(per_worker)
        result: dict[str, Any] = {
            "setup": name,
            "workers": workers,
            "overrides": overrides,
            "aggregate_tok_s": row.get("aggregate_tok_s"),
            "errors": row.get("errors"),
            "wall_s": row.get("wall_s"),
            "token_chunks": chunks,
            "worker_cpu_s": [round(c, 2) for c in per_worker],
            "workers_cpu_s": round(total, 2),
            "cpu_ms_per_chunk": round(1000 * total / chunks, 4),
            "master_cpu_s": round((after[proc.pid] - before[proc.pid]) / CLK_TCK, 2)
            if proc.pid not in pids
            else None,
            "loadgen_cpu_s": row.get("loadgen_cpu_s"),
        }
        if args.spread_clients and workers > 1:
            result.update(spread(args, url, pids, f"{name}-w{workers}-spread"))
        return result
    except RuntimeError as err:
        print(f"proxy_relay: {name} w{workers}: {err}; log: {log}", file=sys.stderr)
        return {"setup": name, "workers": workers, "error": str(err), "log": str(log)}
    finally:
        stop(proc)


def upstream_ports(args: argparse.Namespace) -> list[int]:
    """One fake upstream port per deployment."""
    return [args.upstream_port + i for i in range(args.deployments)]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setups", default="baseline", help=f"comma-separated, of: {','.join(SETUPS)}")
    p.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=32, help="measured requests per level")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--spread-clients", type=int, default=16, help="0: skip the spread level")
    p.add_argument("--spread-rounds", type=int, default=2, help="requests per spread client")
    p.add_argument("--repeat", type=int, default=1, help="run the setup list this many times")
    p.add_argument("--no-direct", dest="direct", action="store_false")
    p.add_argument(
        "--config-dir",
        type=Path,
        required=True,
        help="configs rendered by bench/render_configs.yml (litellm.yaml, localai_auth.py, "
        "stack.env)",
    )
    p.add_argument(
        "--deployments", type=int, default=1, help="fake upstreams = deployments of the alias"
    )
    p.add_argument(
        "--tokens-per-s",
        type=float,
        default=0,
        help="pace of each fake stream (0: as fast as it can, the proxy is the bottleneck)",
    )
    p.add_argument("--upstream-port", type=int, default=18090)
    p.add_argument("--proxy-port", type=int, default=28100)
    p.add_argument(
        "--proxy-python", default=str(ROOT / ".cache/litellm-venv/bin/python"), help="has litellm"
    )
    p.add_argument("--work-dir", type=Path, default=Path("bench-work/relay-config"))
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--out", type=Path, help="append JSON rows here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run direct, then every setup x worker count; print and append the rows."""
    p = build_parser()
    args = p.parse_args(argv)
    names = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETUPS]
    if unknown:
        p.error(f"unknown setup(s): {unknown}")
    args.work_dir = args.work_dir.resolve()  # the proxy runs from inside it
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.stack_env = parse_env_file((args.config_dir / "stack.env").read_text(encoding="utf-8"))
    pace = ["--tokens-per-s", str(args.tokens_per_s)] if args.tokens_per_s else []
    fakes = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "bench/fake_upstream.py"), "--port", str(port), *pace],
            stdout=subprocess.DEVNULL,
        )
        for port in upstream_ports(args)
    ]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows: list[dict[str, Any]] = []
    try:
        for port in upstream_ports(args):
            wait_http(f"http://127.0.0.1:{port}/health", 30)
        if args.direct:
            url = ",".join(f"http://127.0.0.1:{port}" for port in upstream_ports(args))
            loadgen(args, url, args.clients, args.clients * 2, "direct-warmup")
            row = loadgen(args, url, args.clients, args.requests, "direct")
            rows.append(
                {
                    "setup": "direct",
                    "workers": 0,
                    **{
                        k: row.get(k)
                        for k in ("aggregate_tok_s", "errors", "wall_s", "loadgen_cpu_s")
                    },
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        for rep in range(args.repeat):
            for name in names:
                for workers in (int(w) for w in args.workers.split(",")):
                    row = measure_proxy(args, name, workers)
                    row["repeat"] = rep
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        for fake in fakes:
            stop(fake)
    for row in rows:
        row.update(
            run=stamp,
            deployments=args.deployments,
            tokens_per_s=args.tokens_per_s,
            clients=args.clients,
            requests=args.requests,
            max_tokens=args.max_tokens,
            host_cpus=os.cpu_count(),
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    return 1 if any(r.get("error") or r.get("errors") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
