#!/usr/bin/env python3
"""Start the rendered stack natively (no Docker): llama-server engines and the LiteLLM proxy.

Without Docker on the GPU host, the benchmark runs the same programs the image's supervisord
runs, with the same command lines: every engine of ``engines.json`` (the project's engine plan,
rendered by bench/render_configs.yml) as ``<llama-server> <args>``, and LiteLLM with the rendered
``litellm.yaml`` and the environment of ``stack.env``. Only the model paths change: the plan says
``/models/<file>`` (the container's mount), ``--model-map``/``--models-dir`` say where the files
are here.

Subcommands (standard library only, Python 3.11+):

- ``start``: every engine of the plan (or ``--only KIND``), optionally the proxy (``--proxy``);
  waits for each engine's /health and the proxy's /health/liveliness; prints the endpoints as
  JSON and records the processes in a state file.
- ``serve``: one llama-server with arbitrary arguments, or the plan's engine of a kind with
  extra arguments overriding its own (``--engine chat -- --parallel 32``): the flag matrix.
- ``stop``: stops every process recorded in the state file (each is its own process group).
- ``args``: print the command line ``serve`` would run (for logs and checks).
- ``loadgen``: bench/loadgen.py once per level with its own request count
  (``--levels 1:4,8:32,32:64``), request numbers never repeating across levels; ``--watch``
  also records, per level, the CPU of every started process (LiteLLM's workers each), the
  client connections each worker holds and the GPUs' utilisation.
- ``table``: a compact table of loadgen result rows (JSON Lines).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
# Defaults under the current directory, where bench/gpu_native.sh keeps its state (WORK_DIR).
DEFAULT_WORK = Path("bench-work")
DEFAULT_LLAMA_SERVER = str(DEFAULT_WORK / "localai" / "bin" / "llama-server")
DEFAULT_STATE = DEFAULT_WORK / "native-stack" / "state.json"
DEFAULT_LOG_DIR = DEFAULT_WORK / "native-stack" / "logs"
MODELS_MOUNT = "/models/"

# Short and long spellings of llama-server flags, so an override written either way replaces
# the plan's flag instead of adding a second copy (the last copy would win, but logs and the
# recorded command line would then say two things).
FLAG_ALIASES: dict[str, str] = {
    "-m": "--model",
    "-a": "--alias",
    "-c": "--ctx-size",
    "-np": "--parallel",
    "-ngl": "--n-gpu-layers",
    "--gpu-layers": "--n-gpu-layers",
    "-fa": "--flash-attn",
    "-b": "--batch-size",
    "-ub": "--ubatch-size",
    "-t": "--threads",
    "-tb": "--threads-batch",
    "-n": "--n-predict",
    "--predict": "--n-predict",
    "-cb": "--cont-batching",
    "-nocb": "--no-cont-batching",
    "-kvu": "--kv-unified",
    "-no-kvu": "--no-kv-unified",
    "--embedding": "--embeddings",
    "-ctk": "--cache-type-k",
    "-ctv": "--cache-type-v",
    "-sm": "--split-mode",
    "-ts": "--tensor-split",
    "-mg": "--main-gpu",
    "-dev": "--device",
}
# Boolean pairs: setting one removes the other.
FLAG_OPPOSITES: dict[str, str] = {
    "--cont-batching": "--no-cont-batching",
    "--kv-unified": "--no-kv-unified",
    "--jinja": "--no-jinja",
    "--mmap": "--no-mmap",
    "--warmup": "--no-warmup",
    "--cache-prompt": "--no-cache-prompt",
    "--webui": "--no-webui",
}
FLAG_OPPOSITES.update({v: k for k, v in FLAG_OPPOSITES.items()})


# ---------------------------------------------------------------------------------------------
# Pure functions: argument handling (unit-tested)
# ---------------------------------------------------------------------------------------------


def canonical_flag(flag: str) -> str:
    """The long spelling of a flag (``-np`` -> ``--parallel``); ``--x=v`` -> ``--x``."""
    name = flag.split("=", 1)[0] if flag.startswith("--") else flag
    return FLAG_ALIASES.get(name, name)


def _is_flag(token: str) -> bool:
    """A token that starts an option: ``-x``/``--x``, but not a negative number like ``-1``."""
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def split_options(args: Sequence[str]) -> list[list[str]]:
    """Group a command line into options: ``[flag, value?]`` each.

    A flag owns the next token when that token is not itself a flag. That is how the plan and
    hand-written candidates look (``--parallel 8 --metrics --embeddings``); a boolean flag
    followed by a positional argument would be misread, but llama-server takes none.
    """
    groups: list[list[str]] = []
    for token in args:
        if _is_flag(token) or not groups or len(groups[-1]) > 1 or "=" in groups[-1][0]:
            groups.append([token])
        else:
            groups[-1].append(token)
    return groups


def override_args(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    """``base`` with every option that ``extra`` sets removed, then ``extra`` appended.

    Used for the flag matrix: the project's chat engine plus ``--parallel 32 --ctx-size 131072``
    must run with 32 slots, and the recorded command line must say so once.
    """
    extra_groups = _last_wins(split_options(extra))
    replaced = set()
    for group in extra_groups:
        replaced |= _flag_family(group[0])
    kept = [g for g in split_options(base) if canonical_flag(g[0]) not in replaced]
    return [token for group in kept + extra_groups for token in group]


def _flag_family(flag: str) -> set[str]:
    """A flag's canonical name and its boolean opposite, if any."""
    name = canonical_flag(flag)
    return {name, FLAG_OPPOSITES[name]} if name in FLAG_OPPOSITES else {name}


def _last_wins(groups: list[list[str]]) -> list[list[str]]:
    """Keep only the last of options that set the same thing (a base and a candidate's flags)."""
    seen: set[str] = set()
    kept = []
    for group in reversed(groups):
        if canonical_flag(group[0]) in seen:
            continue
        seen |= _flag_family(group[0])
        kept.append(group)
    return kept[::-1]


def parse_model_map(items: Iterable[str]) -> dict[str, str]:
    """``["chat=models/a.gguf", ...]`` -> ``{"chat": "models/a.gguf"}``; refuses a bad item."""
    mapping: dict[str, str] = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise ValueError(f"--model-map {item!r}: expected KEY=PATH (KEY: kind, name or file)")
        mapping[key] = path
    return mapping


def engine_keys(engine: dict[str, Any]) -> list[str]:
    """Names a --model-map key may use for an engine, most specific first."""
    file = str(engine.get("model_path", "")).rsplit("/", 1)[-1]
    keys = [engine.get("program"), engine.get("model"), engine.get("alias"), file]
    keys.append(engine.get("kind"))
    return [str(k) for k in keys if k]


def resolve_model_path(
    engine: dict[str, Any], mapping: dict[str, str], models_dir: str | None
) -> str:
    """Where this engine's model file is on this machine.

    A --model-map entry for the engine (program, model name, alias, file name or kind) wins;
    else ``/models/<file>`` becomes ``<models_dir>/<file>``. Raises ValueError naming the keys
    that would have matched, so a typo fails before any process starts.
    """
    for key in engine_keys(engine):
        if key in mapping:
            return mapping[key]
    path = str(engine.get("model_path", ""))
    if models_dir and path.startswith(MODELS_MOUNT):
        return str(Path(models_dir) / path[len(MODELS_MOUNT) :])
    raise ValueError(
        f"no model file for engine {engine.get('program')!r}: pass --model-map KEY=PATH with "
        f"KEY one of {', '.join(engine_keys(engine))}, or --models-dir"
    )


def replace_model(args: Sequence[str], model_path: str) -> list[str]:
    """The arguments with the value of --model/-m replaced (added when missing)."""
    out = list(args)
    for i, token in enumerate(out[:-1]):
        if canonical_flag(token) == "--model":
            out[i + 1] = model_path
            return out
    return ["--model", model_path, *out]


def option_value(args: Sequence[str], flag: str) -> str | None:
    """The value of a flag (any spelling) in a command line; None when absent."""
    for group in split_options(args):
        if canonical_flag(group[0]) == flag:
            if "=" in group[0] and group[0].startswith("--"):
                return group[0].split("=", 1)[1]
            return group[1] if len(group) > 1 else ""
    return None


def engine_command(
    engine: dict[str, Any],
    llama_server: str,
    mapping: dict[str, str],
    models_dir: str | None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The full llama-server command line of one engine of the plan, model path mapped."""
    args = replace_model(engine["args"], resolve_model_path(engine, mapping, models_dir))
    return [llama_server, *override_args(args, extra)]


def engine_env(engine: dict[str, Any], base: dict[str, str] | None = None) -> dict[str, str]:
    """The engine's environment: a GPU-pinned engine (layout replicas) sees only its GPU.

    The same rule as the image's programs.conf (stack_service role): CUDA_VISIBLE_DEVICES is
    the plan's `gpu` index; engines without one see every GPU.
    """
    env = dict(os.environ if base is None else base)
    if engine.get("gpu") is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(engine["gpu"])
    return env


def select_engine(engines: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The first engine a key (program, model, alias, file or kind) names."""
    for engine in engines:
        if key in engine_keys(engine):
            return engine
    names = sorted({k for e in engines for k in engine_keys(e)})
    raise ValueError(f"no engine {key!r} in the plan; known: {', '.join(names)}")


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a docker --env-file (comments and blanks skipped, values literal)."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        env[key.strip()] = value
    return env


def parse_levels(text: str) -> list[tuple[int, int | None]]:
    """``"1:4,8:32,32"`` -> ``[(1, 4), (8, 32), (32, None)]`` (None: loadgen's default)."""
    levels: list[tuple[int, int | None]] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        clients, _, requests = item.partition(":")
        level = (int(clients), int(requests) if requests else None)
        if level[0] < 1 or (level[1] is not None and level[1] < 1):
            raise ValueError(f"level {item!r}: clients and requests must be >= 1")
        levels.append(level)
    if not levels:
        raise ValueError(f"no levels in {text!r}")
    return levels


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A compact fixed-width table of loadgen rows (chat and embeddings mixed)."""
    columns = (
        ("setup", "setup"),
        ("mode", "mode"),
        ("concurrency", "clients"),
        ("batch", "batch"),
        ("requests", "reqs"),
        ("aggregate_tok_s", "tok/s"),
        ("ttft_ms_p50", "ttft p50"),
        ("ttft_ms_p95", "ttft p95"),
        ("decode_tok_s_per_req_p50", "dec/req p50"),
        ("docs_s", "docs/s"),
        ("latency_ms_p50", "lat p50"),
        ("errors", "err"),
    )
    present = [(k, t) for k, t in columns if any(r.get(k) is not None for r in rows)]
    cells = [[t for _, t in present]]
    cells += [["-" if r.get(k) is None else str(r[k]) for k, _ in present] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(present))]
    lines = []
    for row in cells:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def summarize_watch(samples: list[dict[str, Any]], clk_tck: int) -> dict[str, Any]:
    """What a stack did while one load level ran, from StackWatch's samples.

    Each sample: ``t`` (monotonic s), ``ticks`` (name -> CPU ticks), ``host`` ([busy, all]
    ticks of /proc/stat), optional ``conns`` (LiteLLM worker name -> client connections),
    ``engines`` (name -> llama-server /metrics) and ``gpu`` (utilisation % per GPU). Per
    process: CPU seconds, mean and peak % of one core (peak over the sampling intervals: a
    single-threaded worker near 100 % is saturated). Per engine: llama_decode() calls per
    second, the mean number of streams per call, the most requests it held at once.
    """
    if len(samples) < 2:
        return {"samples": len(samples)}
    first, last = samples[0], samples[-1]
    wall = last["t"] - first["t"]
    processes: dict[str, Any] = {}
    for name in last["ticks"]:
        if name not in first["ticks"]:
            continue
        steps = [
            100 * (b["ticks"][name] - a["ticks"][name]) / clk_tck / (b["t"] - a["t"])
            for a, b in itertools.pairwise(samples)
            if name in a["ticks"] and name in b["ticks"] and b["t"] > a["t"]
        ]
        cpu_s = (last["ticks"][name] - first["ticks"][name]) / clk_tck
        processes[name] = {
            "cpu_s": round(cpu_s, 2),
            "mean_pct": round(100 * cpu_s / wall, 1),
            "peak_pct": round(max(steps), 1) if steps else None,
        }
    summary: dict[str, Any] = {"samples": len(samples), "wall_s": round(wall, 2)}
    summary["processes"] = processes
    busy = last["host"][0] - first["host"][0]
    summary["host_busy_cores"] = round(busy / clk_tck / wall, 2)
    conns = [s["conns"] for s in samples if s.get("conns")]
    if conns:
        # The sample with the most connections open: every client of the level connected.
        fullest = max(conns, key=lambda c: sum(c.values()))
        summary["conns_per_worker"] = dict(sorted(fullest.items()))
    engines = {}
    for name in last.get("engines", {}):
        seen = [s["engines"][name] for s in samples if s.get("engines", {}).get(name)]
        if len(seen) < 2 or "n_decode_total" not in seen[0]:
            continue
        a, b = seen[0], seen[-1]
        steps = b["n_decode_total"] - a["n_decode_total"]
        # n_busy_slots_per_decode is a running mean: times the calls it is the running sum.
        # (llama-server prints 6 significant digits: exact while the calls stay under 10^6.)
        busy = (
            b["n_busy_slots_per_decode"] * b["n_decode_total"]
            - a["n_busy_slots_per_decode"] * a["n_decode_total"]
        )
        engines[name] = {
            "decode_calls_per_s": round(steps / wall, 1),
            "mean_batch": round(busy / steps, 1) if steps else None,
            "requests_processing_max": max(m.get("requests_processing", 0) for m in seen),
            # Against the clients' own token count: tokens an engine made that no client got.
            "tokens_predicted": round(
                b.get("tokens_predicted_total", 0) - a.get("tokens_predicted_total", 0)
            ),
        }
    if engines:
        # Why: a slow stream through the proxy is either a slower step (fewer calls per second)
        # or more streams per engine than the clients account for.
        summary["engines"] = engines
    gpus = [s["gpu"] for s in samples if s.get("gpu")]
    if gpus:
        summary["gpu_util_mean_pct"] = [
            round(sum(g[i] for g in gpus) / len(gpus), 1) for i in range(len(gpus[0]))
        ]
    return summary


def format_watch(rows: list[dict[str, Any]]) -> str:
    """One line per watched level: who used the CPU, connections per worker, GPU use."""
    lines = []
    for row in rows:
        w = row["watch"]
        procs = w.get("processes", {})
        cpu = " ".join(
            f"{name}={p['mean_pct']:.0f}/{p['peak_pct'] or 0:.0f}%" for name, p in procs.items()
        )
        conns = w.get("conns_per_worker")
        engines = " ".join(
            f"{name}={e['decode_calls_per_s']}/s x{e['mean_batch'] or '-'}"
            f" (max {e['requests_processing_max']:.0f}, {e.get('tokens_predicted', 0)} tok)"
            for name, e in w.get("engines", {}).items()
        )
        lines.append(
            f"{row['setup']} c{row['concurrency']}: cpu mean/peak {cpu}; host "
            f"{w.get('host_busy_cores')} cores"
            + (f"; conns {list(conns.values())}" if conns else "")
            + (f"; gpu {w['gpu_util_mean_pct']}%" if w.get("gpu_util_mean_pct") else "")
            + (f"; decode calls, batch: {engines}" if engines else "")
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def load_state(path: Path) -> list[dict[str, Any]]:
    """Processes recorded by earlier start/serve calls (empty when none)."""
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("processes", [])


def save_state(path: Path, processes: list[dict[str, Any]]) -> None:
    """Record the processes, 0600 (the proxy entry's environment is not stored, only names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"processes": processes}, indent=2) + "\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)


def proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...] (OSError if gone)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()


def cpu_ticks(pid: int) -> int:
    """CPU time of a process (utime + stime), in clock ticks."""
    fields = proc_stat(pid)
    return int(fields[11]) + int(fields[12])


def alive(pid: int, marker: str) -> bool:
    """True while the pid runs and is still our program (a recycled pid is not killed)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return proc_stat(pid)[0] != "Z" and marker in cmdline


def launch(
    name: str,
    cmd: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    marker: str | None = None,
) -> dict[str, Any]:
    """Start one program in its own session (process group), output to its log file.

    ``marker`` is a string of its command line that ``stop`` checks before it signals the pid.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== native_stack: {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    marker = marker or Path(cmd[0]).name
    return {"name": name, "pid": proc.pid, "cmd": cmd, "log": str(log), "marker": marker}


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET (no proxy: loopback only); None when nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return None


def log_tail(path: str, lines: int = 30) -> str:
    """The last lines of a log, for a failure message."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_ready(proc: dict[str, Any], url: str, timeout: float) -> float:
    """Wait for HTTP 200 at url; returns the seconds it took. Raises when the process dies."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if http_status(url) == 200:
            return time.monotonic() - began
        # No marker here: just after the fork the child may not have exec'd its program yet,
        # and the pid was started a moment ago, so it cannot have been recycled.
        if not alive(proc["pid"], ""):
            raise RuntimeError(
                f"{proc['name']} exited before it was ready; log {proc['log']}:\n"
                + log_tail(proc["log"])
            )
        time.sleep(0.25)
    raise RuntimeError(
        f"{proc['name']} not ready at {url} after {timeout:.0f} s; log {proc['log']}:\n"
        + log_tail(proc["log"])
    )


def stop_processes(processes: list[dict[str, Any]], grace: float = 20.0) -> list[str]:
    """SIGTERM each process group, SIGKILL what is left after ``grace`` seconds."""
    stopped = []
    running = [p for p in processes if alive(p["pid"], p["marker"])]
    for proc in running:
        try:
            os.killpg(proc["pid"], signal.SIGTERM)
        except ProcessLookupError:
            continue
        stopped.append(proc["name"])
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p["pid"], p["marker"]) for p in running):
        time.sleep(0.2)
    for proc in running:
        if alive(proc["pid"], proc["marker"]):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc["pid"], signal.SIGKILL)
    return stopped


def read_json(path: Path) -> Any:
    """A JSON file's content."""
    return json.loads(path.read_text(encoding="utf-8"))


def port_busy(url: str) -> bool:
    """True when something already listens at the URL's host:port.

    Checked before a start: a leftover server there would answer the readiness probe for the
    new one, which would have failed to bind, and the benchmark would measure the wrong process.
    """
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 1.0):
            return True
    except OSError:
        return False


CLK_TCK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of a process."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(proc_stat(int(entry.name))[1])
        except OSError:
            continue
        if parent == pid:
            out.append(int(entry.name))
    return sorted(out)


def worker_pids(master: int) -> list[int]:
    """uvicorn's worker processes (multiprocessing spawn children); the master with 1 worker."""
    found = []
    for pid in children(master):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            found.append(pid)
    return found or [master]


def connections_by_pid(port: int, pids: Iterable[int]) -> dict[int, int]:
    """Established TCP connections on a local port, counted per owning process among ``pids``.

    Read from /proc (net/tcp, net/tcp6 and each process's socket fds): a host may have no
    ``ss``.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # fields: sl, local "ADDR:PORT" (hex), remote, state (01: established), ..., inode
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    counts: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        counts[pid] = counts.get(pid, 0) + 1
    return counts


def gpu_utilization() -> list[float]:
    """Utilisation % of each GPU (nvidia-smi); empty without one."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        return [float(x) for x in out.split()]
    except (OSError, subprocess.SubprocessError, ValueError):  # ValueError: "[N/A]"
        return []


def watched_processes(state: Path) -> tuple[dict[str, int], int | None, dict[str, str]]:
    """Name -> pid of the state's running programs, LiteLLM's workers as litellm-wN; the port
    LiteLLM listens on (None without it); name -> /metrics URL of each llama-server."""
    named: dict[str, int] = {}
    port = None
    metrics: dict[str, str] = {}
    for proc in load_state(state):
        if not alive(proc["pid"], proc["marker"]):
            continue
        named[proc["name"]] = proc["pid"]
        cmd = proc.get("cmd", [])
        if proc["name"] == "litellm":
            port = int(option_value(cmd, "--port") or 0) or None
            workers = [pid for pid in worker_pids(proc["pid"]) if pid != proc["pid"]]
            named.update({f"litellm-w{i}": pid for i, pid in enumerate(workers)})
        elif option_value(cmd, "--port"):
            host = option_value(cmd, "--host") or "127.0.0.1"
            metrics[proc["name"]] = f"http://{host}:{option_value(cmd, '--port')}/metrics"
    return named, port, metrics


def parse_metrics(text: str) -> dict[str, float]:
    """llama-server's Prometheus text (--metrics): ``llamacpp:NAME VALUE`` -> {NAME: VALUE}."""
    values = {}
    for line in text.splitlines():
        if line.startswith("llamacpp:") and "{" not in line:
            name, _, value = line[len("llamacpp:") :].partition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


def engine_metrics(url: str) -> dict[str, float]:
    """One engine's /metrics (empty when it does not answer)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return parse_metrics(resp.read().decode())
    except (OSError, ValueError):
        return {}


class StackWatch:
    """Samples a running stack while one load level runs (summarize_watch reads the samples).

    Why: through the proxy, two GPUs delivered less than one (issue 8); whether a LiteLLM
    worker is saturated, how the clients spread over workers and how busy the GPUs are tells
    the proxy's limits from the engines'.
    """

    def __init__(
        self,
        processes: dict[str, int],
        port: int | None = None,
        metrics: dict[str, str] | None = None,
        interval: float = 1.0,
    ) -> None:
        """``processes``: name -> pid; ``port``: count client connections there per process;
        ``metrics``: name -> an engine's /metrics URL."""
        self.processes, self.port, self.metrics = processes, port, metrics or {}
        self._names = {pid: name for name, pid in processes.items()}
        # Looked up once: without a GPU, no nvidia-smi call per sample.
        self._gpus = shutil.which("nvidia-smi") is not None
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[str, Any]:
        ticks = {}
        for name, pid in self.processes.items():
            with contextlib.suppress(OSError):
                ticks[name] = cpu_ticks(pid)
        cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        sample: dict[str, Any] = {
            "t": time.monotonic(),
            "ticks": ticks,
            "host": [sum(cpu) - cpu[3] - cpu[4], sum(cpu)],  # idle and iowait are not busy
        }
        if self.port:
            counts = connections_by_pid(self.port, self.processes.values())
            sample["conns"] = {self._names[pid]: n for pid, n in counts.items()}
        sample["engines"] = {name: engine_metrics(url) for name, url in self.metrics.items()}
        if self._gpus:
            sample["gpu"] = gpu_utilization()
        return sample

    def _run(self) -> None:
        self.samples.append(self._sample())
        while not self._done.wait(self.interval):
            self.samples.append(self._sample())
        self.samples.append(self._sample())

    def __enter__(self) -> StackWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @classmethod
    def of_state(cls, state: Path) -> StackWatch:
        """A watch of what start/serve recorded in the state file."""
        return cls(*watched_processes(state))

    def summary(self) -> dict[str, Any]:
        """The level's summary (after the with block)."""
        return summarize_watch(self.samples, CLK_TCK)


def _start_recorded(
    state: Path, name: str, cmd: list[str], log: Path, *, url: str, timeout: float, **kw: Any
) -> dict[str, Any]:
    """Launch, record in the state file at once (so stop finds it even on failure), wait."""
    if port_busy(url):
        raise RuntimeError(f"{name}: something already listens at {url}; stop it first")
    proc = launch(name, cmd, log, **kw)
    save_state(state, [*load_state(state), proc])
    proc["ready_s"] = round(wait_ready(proc, url, timeout), 1)
    print(f"native_stack: {name} ready in {proc['ready_s']} s ({url})", file=sys.stderr)
    return proc


def _fail_and_stop(state: Path, err: Exception) -> int:
    """Report a start failure and stop what was started (no half-started stacks linger)."""
    print(f"native_stack: {err}", file=sys.stderr)
    stop_processes(load_state(state))
    save_state(state, [])
    return 1


# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    """Engines of the plan (+ proxy): start, wait, print endpoints."""
    config = args.config_dir
    engines = read_json(config / "engines.json")
    if args.only:
        engines = [e for e in engines if args.only in engine_keys(e)]
    mapping = parse_model_map(args.model_map)
    commands = [
        (e, engine_command(e, args.llama_server, mapping, args.models_dir)) for e in engines
    ]  # resolves every model before anything starts
    endpoints: dict[str, Any] = {"engines": [], "proxy": None}
    try:
        for engine, cmd in commands:
            url = f"http://{engine['host']}:{engine['port']}"
            _start_recorded(
                args.state,
                engine["program"],
                cmd,
                args.log_dir / f"{engine['program']}.log",
                url=url + "/health",
                timeout=args.timeout,
                env=engine_env(engine),
            )
            endpoints["engines"].append(
                {k: engine[k] for k in ("program", "kind", "model", "alias")} | {"url": url}
            )
        if args.proxy:
            endpoints["proxy"] = _start_proxy(args, config)
    except (RuntimeError, ValueError, OSError) as err:
        return _fail_and_stop(args.state, err)
    print(json.dumps(endpoints, indent=2))
    return 0


def proxy_command(python: str, config: Path, port: int, workers: int) -> list[str]:
    """LiteLLM as the image runs it (litellm --config ... --num_workers N), via its module."""
    return [
        python,
        "-m",
        "litellm.proxy.proxy_cli",
        "--config",
        str(config / "litellm.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]


def _start_proxy(args: argparse.Namespace, config: Path) -> dict[str, Any]:
    """LiteLLM with the rendered config, run from the config dir (custom_auth resolves there)."""
    settings = read_json(config / "proxy.json") if (config / "proxy.json").is_file() else {}
    port = args.proxy_port or int(settings.get("port", 28000))
    workers = args.proxy_workers or int(settings.get("workers", 1))
    env = dict(os.environ)
    env.update(parse_env_file((config / "stack.env").read_text(encoding="utf-8")))
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    # abspath, not resolve: a venv's python is a symlink that must stay one (cwd changes below).
    python = os.path.abspath(args.proxy_python) if "/" in args.proxy_python else args.proxy_python
    cmd = proxy_command(python, config.resolve(), port, workers)
    url = f"http://127.0.0.1:{port}"
    _start_recorded(
        args.state,
        "litellm",
        cmd,
        args.log_dir / "litellm.log",
        url=url + "/health/liveliness",
        timeout=args.timeout,
        env=env,
        cwd=config.resolve(),
        marker="litellm.proxy.proxy_cli",
    )
    return {"url": url, "workers": workers, "api_key_env": "LITELLM_MASTER_KEY"}


def serve_command(args: argparse.Namespace) -> tuple[list[str], str]:
    """The llama-server command line of `serve` and its base URL."""
    extra = list(args.extra)
    if extra and extra[0] == "--":
        extra = extra[1:]
    if args.engine:
        engines = read_json(args.config_dir / "engines.json")
        engine = select_engine(engines, args.engine)
        mapping = parse_model_map(args.model_map)
        cmd = engine_command(engine, args.llama_server, mapping, args.models_dir, extra)
    else:
        base = ["--host", "127.0.0.1", "--port", str(args.port)]
        cmd = [args.llama_server, *override_args(base, extra)]
    host = option_value(cmd[1:], "--host") or "127.0.0.1"
    port = option_value(cmd[1:], "--port") or "8080"
    return cmd, f"http://{host}:{port}"


def cmd_serve(args: argparse.Namespace) -> int:
    """One llama-server with arbitrary flags (or the plan's engine plus overrides)."""
    try:
        cmd, url = serve_command(args)
        proc = _start_recorded(
            args.state,
            args.name,
            cmd,
            args.log_dir / f"{args.name}.log",
            url=url + "/health",
            timeout=args.timeout,
        )
    except (RuntimeError, ValueError, OSError) as err:
        return _fail_and_stop(args.state, err)
    ready_s = proc["ready_s"]
    print(
        json.dumps(
            {"name": args.name, "url": url, "pid": proc["pid"], "cmd": cmd, "ready_s": ready_s}
        )
    )
    return 0


def cmd_args(args: argparse.Namespace) -> int:
    """Print the command line `serve` would run."""
    cmd, url = serve_command(args)
    print(shlex.join(cmd))
    print(f"# url: {url}", file=sys.stderr)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop everything recorded in the state file."""
    stopped = stop_processes(load_state(args.state), args.grace)
    save_state(args.state, [])
    print(json.dumps({"stopped": stopped}))
    return 0


def shifted_run_level(run_level: Callable[..., Any], offset: int) -> Callable[..., Any]:
    """loadgen's run_level with request numbers moved up by ``offset``.

    Why: loadgen numbers requests from 0 in each run (warm-ups from 1,000,000), and the number
    opens the prompt. Runs of one level each would repeat prompts, and llama-server's prompt
    cache would answer the repeats early: TTFT would look better than in real use.
    """

    def wrapper(
        make_client: Any, one: Any, concurrency: int, requests: int, first_index: int = 0
    ) -> Any:
        return run_level(make_client, one, concurrency, requests, first_index + offset)

    return wrapper


def cmd_loadgen(args: argparse.Namespace) -> int:
    """loadgen.py per level (own request count each), prompts distinct across levels."""
    sys.path.insert(0, str(BENCH_DIR))
    import loadgen  # noqa: PLC0415 - the sibling script, found through BENCH_DIR

    extra = [a for a in args.extra if a != "--"] if args.extra[:1] == ["--"] else args.extra
    original = loadgen.run_level
    offset = args.first_index
    status = 0
    try:
        for clients, requests in parse_levels(args.levels):
            argv = [*extra, "--concurrency", str(clients)]
            if requests:
                argv += ["--requests", str(requests)]
            loadgen.run_level = shifted_run_level(original, offset)
            watch = StackWatch.of_state(args.state) if args.watch else None
            with watch or contextlib.nullcontext():
                status = max(status, loadgen.main(argv))
            if watch:
                row = {"setup": option_value(extra, "--label"), "concurrency": clients}
                row["watch"] = watch.summary()
                with args.watch.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(row) + "\n")
                print(format_watch([row]), file=sys.stderr)
            warmup = int(option_value(extra, "--warmup") or 1)
            offset += max(requests or max(8, 4 * clients), warmup * clients)
    finally:
        loadgen.run_level = original
    return status


def cmd_table(args: argparse.Namespace) -> int:
    """Print loadgen rows (optionally only some setups) as one table."""
    rows = []
    for path in args.files:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if not args.setup or row.get("setup") in args.setup:
                    rows.append(row)
    watched = [r for r in rows if "watch" in r]
    rows = [r for r in rows if "watch" not in r]
    print(format_rows(rows) if rows else "(no rows)")
    if watched:
        print(format_watch(watched))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring and bench/README.md)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--state", type=Path, default=DEFAULT_STATE, help="process record")
        sp.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR)
        sp.add_argument("--timeout", type=float, default=300.0, help="readiness wait, seconds")

    def engines(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config-dir", type=Path, help="rendered configs (engines.json, ...)")
        sp.add_argument(
            "--llama-server",
            default=os.environ.get("LLAMA_SERVER", DEFAULT_LLAMA_SERVER),
            help="llama-server binary (env LLAMA_SERVER)",
        )
        sp.add_argument(
            "--model-map",
            action="append",
            default=[],
            metavar="KEY=PATH",
            help="model file of an engine; KEY: kind, program, name, alias or the plan's file",
        )
        sp.add_argument("--models-dir", help="where /models/<file> of the plan are found")

    start = sub.add_parser("start", help="start the plan's engines (and --proxy)")
    common(start)
    engines(start)
    start.add_argument("--only", help="only engines with this kind/program/name/alias")
    start.add_argument("--proxy", action="store_true", help="also start LiteLLM")
    start.add_argument("--proxy-port", type=int, help="default: proxy.json's port (28000)")
    start.add_argument("--proxy-workers", type=int, help="default: proxy.json's workers")
    start.add_argument("--proxy-python", default=sys.executable, help="Python that imports litellm")
    start.set_defaults(func=cmd_start)

    for name, func, text in (
        ("serve", cmd_serve, "start one llama-server"),
        ("args", cmd_args, "print serve's command line"),
    ):
        sp = sub.add_parser(name, help=text)
        common(sp)
        engines(sp)
        sp.add_argument("--name", default="llama-server", help="log and record name")
        sp.add_argument("--engine", help="start from the plan's engine (kind, program, ...)")
        sp.add_argument("--port", type=int, default=8190, help="without --engine")
        sp.add_argument("extra", nargs=argparse.REMAINDER, help="-- llama-server flags")
        sp.set_defaults(func=func)

    stop = sub.add_parser("stop", help="stop what start/serve started")
    stop.add_argument("--state", type=Path, default=DEFAULT_STATE)
    stop.add_argument("--grace", type=float, default=20.0, help="seconds before SIGKILL")
    stop.set_defaults(func=cmd_stop)

    lg = sub.add_parser("loadgen", help="loadgen.py with per-level request counts")
    lg.add_argument("--levels", default="1:4,8:32,32:64", help="CLIENTS[:REQUESTS],...")
    lg.add_argument("--first-index", type=int, default=0, help="first request number")
    lg.add_argument(
        "--watch",
        type=Path,
        metavar="FILE",
        help="append per level: CPU of the state's processes, connections per LiteLLM worker, "
        "GPU use (JSON Lines; `table` prints them)",
    )
    lg.add_argument("--state", type=Path, default=DEFAULT_STATE, help="process record (--watch)")
    lg.add_argument("extra", nargs=argparse.REMAINDER, help="-- loadgen.py options")
    lg.set_defaults(func=cmd_loadgen)

    table = sub.add_parser("table", help="print result rows")
    table.add_argument("files", nargs="+", type=Path)
    table.add_argument("--setup", action="append", help="only these setups (repeatable)")
    table.set_defaults(func=cmd_table)
    return p


def main(argv: list[str] | None = None) -> int:
    """Dispatch the subcommand."""
    args = build_parser().parse_args(argv)
    needs_config = args.command == "start" or getattr(args, "engine", None)
    if needs_config and not getattr(args, "config_dir", None):
        print("native_stack: --config-dir is required here", file=sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except ValueError as err:
        print(f"native_stack: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
