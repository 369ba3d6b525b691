#!/usr/bin/env python3
"""Infinity (infinity-emb) on a GPU host without network: direct, through LiteLLM, memory.

The host runs its own PyTorch (CUDA); Infinity 0.0.78 pins older packages than the host's
stack (sentence-transformers < 4, transformers 4.x, huggingface_hub 0.36, uvicorn < 0.33, ...).
So its own versions are installed from the input folder's wheels with ``pip --target`` into a
folder put first on PYTHONPATH for Infinity only: they shadow the host's, and torch, numpy, scipy
and scikit-learn come from the host. LiteLLM (the image's pins) goes into another such folder.
The model is bench/make_synthetic_hf.py's multilingual-e5-small-shaped directory, linked at the
plan's /models/multilingual-e5-small so the rendered configs apply unchanged.

    python3 bench/gpu_infinity.py --inputs bench-inputs/infinity --phases setup,direct,cosine,proxy

The input folder (``--inputs``): ``wheels-infinity/*.whl``, ``litellm-site.tar.xz`` (wheels
unzipped into site/), ``ggml-vocab-nomic-bert-moe.gguf`` and ``config/`` (bench/render_configs.yml
with the e5 entry as an Infinity model). Phases (each skips what is done; with ``--time-limit
SECONDS``, setups that would not finish within that time are skipped with a message):

- ``setup``: install, generate the model, read versions (``versions.json``, ``help.txt``).
- ``direct``: per ``--batch-sizes`` value, Infinity with the plan's command line and that
  --batch-size: GPU memory idle, then loadgen levels (1x1, 16x1, 4x32, 4x128 base64; 4x128
  float), the GPU memory peak under 4x128 (``direct.jsonl``, ``watch.jsonl``, ``memory.jsonl``).
  The batch size with the most docs/s at 4x128 base64 becomes ``best.json``.
- ``cosine``: Infinity (best batch size) against the host's sentence-transformers, float32
  (bench/embed_cosine.py; ``cosine.jsonl``).
- ``proxy``: Infinity (best) behind LiteLLM with the rendered litellm.yaml, per ``--workers``
  value, the same levels in base64 with per-process CPU (``proxy.jsonl``, ``watch.jsonl``);
  the first worker count also runs the cosine check through the proxy.

Results (JSON lines, the run's log and the tails of the engines' logs) go to ``--results``
(default ./bench-results/infinity); state (sites, model, done markers) to ``--work`` (default
./bench-work/infinity).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import native_stack as ns  # noqa: E402

INFINITY_ENV = {
    "DO_NOT_TRACK": "1",
    "INFINITY_ANONYMOUS_USAGE_STATS": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
MODEL_NAME = "multilingual-e5-small"
MODELS_LINK = Path("/models") / MODEL_NAME
# (label, clients, requests, docs per request, encoding); requests scaled by --scale.
DIRECT_LEVELS = [
    ("1x1", 1, 400, 1, "base64"),
    ("16x1", 16, 2400, 1, "base64"),
    ("4x32", 4, 320, 32, "base64"),
    ("4x128", 4, 160, 128, "base64"),
    ("4x128", 4, 120, 128, "float"),
]
PROXY_LEVELS = [
    ("1x1", 1, 200, 1, "base64"),
    ("16x1", 16, 1200, 1, "base64"),
    ("4x32", 4, 120, 32, "base64"),
    ("4x128", 4, 80, 128, "base64"),
]


class Run:
    """Paths, the time limit and the results folder of one invocation."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.began = time.monotonic()
        self.work = args.work
        self.results = args.results
        self.logs = args.work / "logs"
        self.state = args.work / "state.json"
        for folder in (self.results, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.python = sys.executable

    def left(self) -> float:
        """Seconds left of --time-limit (infinite without one)."""
        if self.args.time_limit is None:
            return math.inf
        return self.args.time_limit - (time.monotonic() - self.began)

    def have(self, seconds: float, what: str) -> bool:
        if self.left() >= seconds:
            return True
        self.log(f"time limit: skipping {what} ({self.left():.0f} s left, needs ~{seconds:.0f} s)")
        return False

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.began:6.1f}s] {text}"
        print(line, file=sys.stderr, flush=True)
        with (self.results / "run.log").open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def run(
        self,
        cmd: list[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        self.log("$ " + shlex.join(cmd))
        limit = max(5.0, min(timeout, self.left() - 5))
        proc = subprocess.run(
            cmd,
            env=env,
            capture_output=True,
            text=True,
            timeout=None if math.isinf(limit) else limit,
            check=False,
        )
        if proc.returncode and check:
            raise RuntimeError(f"rc {proc.returncode}: {proc.stderr[-2000:]}")
        return proc

    def append(self, name: str, row: dict[str, Any]) -> None:
        with (self.results / name).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------------------------
# GPU memory
# ---------------------------------------------------------------------------------------------


def nvidia_smi(query: str) -> str:
    """nvidia-smi's CSV answer (no header, no units) to one --query-... option."""
    return subprocess.run(
        ["nvidia-smi", query, "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout


def gpu_memory() -> dict[str, Any]:
    """memory.used of GPU 0 and each compute process's used memory (MiB), from nvidia-smi."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
        text = nvidia_smi("--query-gpu=memory.used,memory.total").split("\n")[0]
        used, total = (int(x) for x in text.split(","))
        out.update(gpu_used_mib=used, gpu_total_mib=total)
        apps = nvidia_smi("--query-compute-apps=pid,used_memory")
        out["apps_mib"] = {
            int(p): int(m) for p, m in (line.split(",") for line in apps.splitlines() if line)
        }
    return out


class MemoryPeak:
    """Samples gpu_memory() every ``interval`` s while a level runs; keeps the maxima."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval, self.samples = interval, []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            self.samples.append(gpu_memory())
            self._done.wait(self.interval)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def peak(self) -> dict[str, Any]:
        used = [s["gpu_used_mib"] for s in self.samples if "gpu_used_mib" in s]
        apps = [sum(s.get("apps_mib", {}).values()) for s in self.samples]
        return {
            "samples": len(self.samples),
            "gpu_used_mib_max": max(used) if used else None,
            "apps_mib_max": max(apps) if apps else None,
        }


# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------


def install_infinity(s: Run) -> list[str]:
    """Infinity's own packages: pip --target, shadowing the host's through PYTHONPATH."""
    a = s.args
    wheels = sorted(str(p) for p in (a.inputs / "wheels-infinity").glob("*.whl"))
    shutil.rmtree(a.infinity_site, ignore_errors=True)
    pip = s.run(
        [
            s.python,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--target",
            str(a.infinity_site),
            *wheels,
        ],
        timeout=300,
        check=False,
    )
    if pip.returncode:  # no pip there: a wheel is a zip of the files to put on the path
        s.log("pip failed, unzipping the wheels instead: " + pip.stderr[-500:])
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as zf:
                zf.extractall(a.infinity_site)
    script = a.infinity_site / "bin" / "infinity_emb"
    if not script.is_file():  # the wheel's console script (entry point infinity_emb.cli:cli)
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text("import sys\nfrom infinity_emb.cli import cli\nsys.exit(cli())\n")
    return [Path(w).name for w in wheels]


def phase_setup(s: Run) -> None:
    a = s.args
    done = s.work / "setup.done"
    if done.is_file():
        s.log("setup: done earlier, skipping")
        return
    env_info = {
        "uname": os.uname().release,
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
    }
    smi = s.run(
        [
            "nvidia-smi",
            "--query-gpu=name,compute_cap,driver_version,memory.total",
            "--format=csv,noheader",
        ],
        check=False,
    )
    env_info["gpu"] = smi.stdout.strip()
    probe = (
        "import json, importlib.metadata as m, torch\n"
        "names = ['torch','numpy','scipy','scikit-learn','transformers','sentence-transformers',"
        "'tokenizers','huggingface-hub','safetensors','accelerate','infinity-emb','fastapi',"
        "'starlette','uvicorn','pydantic','typer','click','rich','orjson','posthog',"
        "'prometheus-fastapi-instrumentator','uvloop','litellm','openai','tiktoken']\n"
        "v = {}\n"
        "for n in names:\n"
        "    try: v[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: v[n] = None\n"
        "v['torch_cuda'] = torch.version.cuda\n"
        "v['cuda_available'] = torch.cuda.is_available()\n"
        "v['arch_list'] = torch.cuda.get_arch_list()\n"
        "print(json.dumps(v))\n"
    )
    machine = s.run([s.python, "-c", probe], env=clean_env())
    env_info["machine_packages"] = json.loads(machine.stdout)
    env_info["infinity_wheels"] = install_infinity(s)
    inf = s.run([s.python, "-c", probe], env=infinity_env(a))
    env_info["infinity_packages"] = json.loads(inf.stdout)
    check = s.run(
        [
            s.python,
            "-c",
            "import infinity_emb.cli, sentence_transformers, "
            "transformers; print('infinity imports ok')",
        ],
        env=infinity_env(a),
    )
    env_info["infinity_import"] = check.stdout.strip()
    helptext = s.run(
        [s.python, str(a.infinity_site / "bin" / "infinity_emb"), "v2", "--help"],
        env=infinity_env(a) | {"COLUMNS": "240", "TERM": "dumb"},
        check=False,
    )
    (s.results / "infinity-v2-help.txt").write_text(helptext.stdout + helptext.stderr)
    pipcheck = s.run([s.python, "-m", "pip", "check"], env=infinity_env(a), check=False)
    (s.results / "pip-check-infinity.txt").write_text(pipcheck.stdout + pipcheck.stderr)
    # LiteLLM: the stack's wheels, unzipped and packed.
    packed = a.inputs / "litellm-site.tar.xz"
    if packed.is_file():
        shutil.rmtree(a.litellm_site, ignore_errors=True)
        tmp = a.litellm_site.with_name(a.litellm_site.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        s.run(["tar", "-C", str(tmp), "-xJf", str(packed)], timeout=300)
        (tmp / "site").rename(a.litellm_site)
        tmp.rmdir()
        lite = s.run([s.python, "-c", probe], env=clean_env() | {"PYTHONPATH": str(a.litellm_site)})
        env_info["litellm_packages"] = json.loads(lite.stdout)
    # The model directory, linked where the plan's command line and litellm.yaml expect it.
    model = a.work / "m" / "e5-small-hf"
    gen = s.run(
        [
            s.python,
            str(BENCH / "make_synthetic_hf.py"),
            "--out",
            str(model),
            "--vocab",
            str(a.inputs / "ggml-vocab-nomic-bert-moe.gguf"),
        ],
        env=clean_env(),
    )
    env_info["model"] = json.loads(gen.stdout.split("make_synthetic_hf: ", 1)[1])
    if a.models_link:
        MODELS_LINK.parent.mkdir(parents=True, exist_ok=True)
        if MODELS_LINK.is_symlink() or MODELS_LINK.exists():
            MODELS_LINK.unlink()
        MODELS_LINK.symlink_to(model)
    (s.results / "versions.json").write_text(json.dumps(env_info, indent=2) + "\n")
    s.log("setup: " + json.dumps({k: env_info[k] for k in ("gpu", "python")}))
    done.write_text("ok\n")


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def infinity_env(a: argparse.Namespace) -> dict[str, str]:
    return clean_env() | INFINITY_ENV | {"PYTHONPATH": str(a.infinity_site)}


def plan_engine(a: argparse.Namespace) -> dict[str, Any]:
    engines = json.loads((a.inputs / "config" / "engines.json").read_text())
    return next(e for e in engines if e.get("engine") == "infinity")


def infinity_command(
    a: argparse.Namespace, batch: int, extra: list[str] | None = None, port: int | None = None
) -> tuple[list[str], str]:
    """The plan's Infinity command line with this --batch-size (binary from the installed site),
    ``extra`` flags replacing or adding to the plan's, on ``port`` if given."""
    engine = plan_engine(a)
    args = ns.override_args(engine["args"], ["--batch-size", str(batch)])
    if extra:
        for flag in extra:  # a --no-X flag replaces the plan's --X
            if flag.startswith("--no-") and "--" + flag[5:] in args:
                args.remove("--" + flag[5:])
        args = ns.override_args(args, extra)
    if a.device != "cuda":
        args = ns.override_args(args, ["--device", a.device, "--dtype", "float32"])
    if not a.models_link:
        args = ns.override_args(args, ["--model-id", str(a.work / "m" / "e5-small-hf")])
    port = port or a.port or int(ns.option_value(args, "--port") or 8080)
    args = ns.override_args(args, ["--port", str(port)])
    binary = a.infinity_bin or str(a.infinity_site / "bin" / "infinity_emb")
    cmd = ([sys.executable] if not a.infinity_bin else []) + [binary, *args]
    return cmd, f"http://127.0.0.1:{port}"


def launch_infinity(
    s: Run,
    batch: int,
    name: str,
    *,
    extra: list[str] | None = None,
    env_extra: dict[str, str] | None = None,
    port: int | None = None,
) -> tuple[dict[str, Any], str]:
    """Start one Infinity (recorded in the state file); not waiting for it."""
    cmd, url = infinity_command(s.args, batch, extra, port)
    env = infinity_env(s.args) if not s.args.infinity_bin else clean_env() | INFINITY_ENV
    if env_extra:
        env = env | env_extra
        hook = s.work / "hook"  # sitecustomize: sys.setswitchinterval from the environment
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(
            "import os, sys\n"
            "_v = os.environ.get('LOCALAI_BENCH_SWITCH_INTERVAL')\n"
            "if _v:\n    sys.setswitchinterval(float(_v))\n"
        )
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(hook)) if p)
    proc = ns.launch(name, cmd, s.logs / f"{name}.log", env=env, marker="infinity_emb")
    proc["began"] = time.monotonic()
    ns.save_state(s.state, [*ns.load_state(s.state), proc])
    (s.results / f"{name}.cmd").write_text(
        " ".join(f"{k}={v}" for k, v in (INFINITY_ENV | (env_extra or {})).items())
        + " "
        + shlex.join(cmd)
        + "\n"
    )
    return proc, url


def wait_infinity(s: Run, proc: dict[str, Any], url: str) -> None:
    ns.wait_ready(proc, url + "/health", min(240, s.left() - 10))
    proc["ready_s"] = round(time.monotonic() - proc["began"], 1)
    s.log(f"{proc['name']} ready in {proc['ready_s']} s: {shlex.join(proc['cmd'])}")


def start_infinity(
    s: Run,
    batch: int,
    name: str | None = None,
    extra: list[str] | None = None,
    env_extra: dict[str, str] | None = None,
) -> tuple[dict[str, Any], str]:
    proc, url = launch_infinity(
        s, batch, name or f"infinity-b{batch}", extra=extra, env_extra=env_extra
    )
    wait_infinity(s, proc, url)
    return proc, url


def stop_named(s: Run, prefix: str) -> None:
    procs = ns.load_state(s.state)
    ns.stop_processes([p for p in procs if p["name"].startswith(prefix)], grace=15)
    ns.save_state(s.state, [p for p in procs if not p["name"].startswith(prefix)])


def run_levels(
    s: Run,
    setup: str,
    url: str,
    *,
    model: str,
    levels: list[tuple],
    out: str,
    api_key: str | None = None,
    memory_at: str | None = None,
    first_index: int = 0,
) -> bool:
    """Each level through native_stack.py loadgen (request numbers never repeat); False when
    the time limit cut the list short."""
    index = first_index
    for name, clients, count, batch, encoding in levels:
        requests = max(clients * 2, int(count * s.args.scale))
        if not s.have(30, f"{setup} {name} {encoding}"):
            return False
        label = f"{setup} {name} {encoding}"
        cmd = [
            s.python,
            str(BENCH / "native_stack.py"),
            "loadgen",
            "--state",
            str(s.state),
            "--levels",
            f"{clients}:{requests}",
            "--first-index",
            str(index),
            "--watch",
            str(s.results / "watch.jsonl"),
            "--",
            "--mode",
            "embeddings",
            "--url",
            url,
            "--model",
            model,
            "--batch",
            str(batch),
            "--encoding-format",
            encoding,
            "--processes",
            str(min(clients, s.args.processes)),
            "--warmup",
            "2",
            "--label",
            label,
            "--out",
            str(s.results / out),
        ]
        if api_key:
            cmd[cmd.index("--mode") : cmd.index("--mode")] = ["--api-key", api_key]
        index += requests + 2 * clients
        peak = MemoryPeak() if memory_at == name and encoding == "base64" else None
        with peak or contextlib.nullcontext():
            proc = s.run(cmd, env=clean_env(), timeout=max(60, s.left() - 20), check=False)
        tail = [line for line in proc.stdout.splitlines() if line.startswith("loadgen:")]
        s.log(f"{label}: {' | '.join(tail)} (rc {proc.returncode})")
        if proc.returncode and not tail:
            s.log(proc.stderr[-1500:])
        if peak:
            s.append("memory.jsonl", {"setup": setup, "state": f"under {name}", **peak.peak()})
    return True


def best_batch(s: Run) -> int:
    best = s.results / "best.json"
    if s.args.best:
        return s.args.best
    if best.is_file():
        return int(json.loads(best.read_text())["batch_size"])
    rows = [json.loads(line) for line in (s.results / "direct.jsonl").read_text().splitlines()]
    scored = {}
    for row in rows:
        if row["setup"].endswith("4x128 base64") and not row["errors"]:
            scored[int(row["setup"].split()[1].lstrip("b"))] = row["docs_s"]
    pick = max(scored, key=scored.get)
    best.write_text(json.dumps({"batch_size": pick, "docs_s_4x128_base64": scored}) + "\n")
    return pick


def phase_direct(s: Run) -> None:
    for batch in s.args.batch_sizes:
        if (s.work / f"direct-b{batch}.done").is_file():
            s.log(f"direct b{batch}: done earlier")
            continue
        if not s.have(110, f"direct b{batch}"):
            return
        stop_named(s, "infinity")
        base = gpu_memory()
        proc, url = start_infinity(s, batch)
        time.sleep(1)
        s.append(
            "memory.jsonl",
            {
                "setup": f"infinity b{batch}",
                "state": "idle after start",
                "ready_s": proc["ready_s"],
                "before_start": base,
                **gpu_memory(),
            },
        )
        complete = run_levels(
            s,
            f"infinity b{batch} direct",
            url,
            model=MODEL_NAME,
            levels=DIRECT_LEVELS,
            out="direct.jsonl",
            memory_at="4x128",
            first_index=batch * 1_000_000,
        )
        s.append(
            "memory.jsonl",
            {"setup": f"infinity b{batch}", "state": "after the levels", **gpu_memory()},
        )
        stop_named(s, "infinity")
        if complete:
            (s.work / f"direct-b{batch}.done").write_text("ok\n")


def ensure_infinity(s: Run, batch: int) -> str:
    for proc in ns.load_state(s.state):
        if proc["name"] == f"infinity-b{batch}" and ns.alive(proc["pid"], proc["marker"]):
            return infinity_command(s.args, batch)[1]
    stop_named(s, "infinity")
    return start_infinity(s, batch)[1]


def cosine(s: Run, url: str, model: str, label: str, api_key: str | None = None) -> None:
    cmd = [
        s.python,
        str(BENCH / "embed_cosine.py"),
        "--url",
        url,
        "--model",
        model,
        "--reference-dir",
        str(s.work / "m" / "e5-small-hf"),
        "--device",
        s.args.device,
        "--label",
        label,
        "--out",
        str(s.results / "cosine.jsonl"),
    ]
    if api_key:
        cmd += ["--api-key", api_key]
    proc = s.run(cmd, env=clean_env(), timeout=180, check=False)
    s.log(f"cosine {label}: rc {proc.returncode} {proc.stdout.strip()[:600]}")
    if proc.returncode and not proc.stdout:
        s.log(proc.stderr[-2000:])


def phase_cosine(s: Run) -> None:
    if (s.work / "cosine.done").is_file() or not s.have(60, "cosine"):
        return
    batch = best_batch(s)
    url = ensure_infinity(s, batch)
    cosine(s, url, MODEL_NAME, f"infinity b{batch} direct")
    (s.work / "cosine.done").write_text("ok\n")


def start_litellm(s: Run, config: Path, workers: int) -> str:
    """LiteLLM as `native_stack.py start --proxy` starts it, from the installed site; its key."""
    a = s.args
    env_file = ns.parse_env_file((config / "stack.env").read_text())
    stop_named(s, "litellm")
    prom = Path(env_file.get("PROMETHEUS_MULTIPROC_DIR", "/tmp/localai-prometheus"))
    shutil.rmtree(prom, ignore_errors=True)
    prom.mkdir(parents=True)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(a.litellm_site)
    began = time.monotonic()
    try:
        ns._start_proxy(
            SimpleNamespace(
                proxy_port=a.proxy_port,
                proxy_workers=workers,
                proxy_python=a.litellm_python or sys.executable,
                state=s.state,
                log_dir=s.logs / f"litellm-w{workers}-{config.name}",
                timeout=min(240, s.left() - 10),
            ),
            config,
        )
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    s.log(f"litellm with {workers} workers ready in {time.monotonic() - began:.1f} s")
    return env_file["LITELLM_MASTER_KEY"]


def phase_proxy(s: Run) -> None:
    a = s.args
    batch = best_batch(s)
    config = a.inputs / "config"
    for i, workers in enumerate(a.workers):
        if (s.work / f"proxy-w{workers}.done").is_file():
            continue
        if not s.have(100, f"proxy with {workers} workers"):
            return
        ensure_infinity(s, batch)
        key = start_litellm(s, config, workers)
        url = f"http://127.0.0.1:{a.proxy_port}"
        if i == 0 and a.proxy_cosine:
            cosine(
                s,
                url,
                "text-embedding-ada-002",
                f"infinity b{batch} via proxy w{workers}",
                api_key=key,
            )
        complete = run_levels(
            s,
            f"proxy w{workers} infinity b{batch}",
            url,
            model="text-embedding-ada-002",
            levels=PROXY_LEVELS,
            out="proxy.jsonl",
            api_key=key,
            first_index=50_000_000 + workers * 1_000_000,
        )
        stop_named(s, "litellm")
        if complete:
            (s.work / f"proxy-w{workers}.done").write_text("ok\n")


# Variants of the single engine (what limits it): flags or environment on top of the plan's.
VARIANTS = {
    "no-lengths-via-tokenize": (["--no-lengths-via-tokenize"], None),
    "switchinterval-0.5ms": ([], {"LOCALAI_BENCH_SWITCH_INTERVAL": "0.0005"}),
}
VARIANT_LEVELS = [
    ("1x1", 1, 200, 1, "base64"),
    ("16x1", 16, 1600, 1, "base64"),
    ("4x128", 4, 120, 128, "base64"),
]


def phase_variants(s: Run) -> None:
    batch = best_batch(s)
    for name, (extra, env_extra) in VARIANTS.items():
        if (s.work / f"variant-{name}.done").is_file() or not s.have(80, f"variant {name}"):
            continue
        stop_named(s, "infinity")
        _, url = start_infinity(s, batch, f"infinity-b{batch}-{name}", extra, env_extra)
        complete = run_levels(
            s,
            f"infinity b{batch} {name} direct",
            url,
            model=MODEL_NAME,
            levels=VARIANT_LEVELS,
            out="variants.jsonl",
            first_index=70_000_000 + len(name) * 1_000_000,
        )
        stop_named(s, "infinity")
        if complete:
            (s.work / f"variant-{name}.done").write_text("ok\n")


def ensure_engines(s: Run, batch: int, count: int) -> list[str]:
    """``count`` Infinity engines with the plan's flags on ports 8080.. (all on the one GPU)."""
    base = s.args.port or int(ns.option_value(plan_engine(s.args)["args"], "--port") or 8080)
    names = [f"infinity-e{i}-b{batch}" for i in range(count)]
    running = {p["name"] for p in ns.load_state(s.state) if ns.alive(p["pid"], p["marker"])}
    urls = [f"http://127.0.0.1:{base + i}" for i in range(count)]
    if set(names) <= running:
        return urls
    stop_named(s, "infinity")
    before = gpu_memory()
    started = [launch_infinity(s, batch, n, port=base + i) for i, n in enumerate(names)]
    for proc, url in started:
        wait_infinity(s, proc, url)
    time.sleep(1)
    s.append(
        "memory.jsonl",
        {
            "setup": f"{count} x infinity b{batch}",
            "state": "idle after start",
            "before_start": before,
            **gpu_memory(),
        },
    )
    return urls


def phase_engines(s: Run) -> None:
    """Several Infinity engines on the GPU, the clients shared over them (no proxy)."""
    batch, count = best_batch(s), s.args.engines
    if (s.work / "engines.done").is_file() or not s.have(90, f"{count} engines"):
        return
    urls = ensure_engines(s, batch, count)
    complete = run_levels(
        s,
        f"{count} x infinity b{batch} direct",
        ",".join(urls),
        model=MODEL_NAME,
        levels=PROXY_LEVELS,
        out="engines.jsonl",
        memory_at="4x128",
        first_index=80_000_000,
    )
    if complete:
        (s.work / "engines.done").write_text("ok\n")


def config_with_deployments(s: Run, urls: list[str]) -> Path:
    """A copy of the rendered config whose embedding alias has one deployment per engine
    (LiteLLM's router shares requests over them; the product puts HAProxy there)."""
    import yaml  # noqa: PLC0415 - the host's PyYAML

    src = s.args.inputs / "config"
    dst = s.work / f"config-{len(urls)}-engines"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    data = yaml.safe_load((src / "litellm.yaml").read_text())
    models = []
    for entry in data["model_list"]:
        if entry["model_info"].get("mode") != "embedding":
            models.append(entry)
            continue
        for url in urls:
            copy = json.loads(json.dumps(entry))
            copy["litellm_params"]["api_base"] = url + "/v1"
            models.append(copy)
    data["model_list"] = models
    (dst / "litellm.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


def phase_proxy_engines(s: Run) -> None:
    """LiteLLM (--proxy-engines-workers) in front of --engines Infinity engines."""
    a = s.args
    batch, count, workers = best_batch(s), a.engines, a.proxy_engines_workers
    if (s.work / "proxy-engines.done").is_file() or not s.have(100, "proxy over engines"):
        return
    urls = ensure_engines(s, batch, count)
    config = config_with_deployments(s, urls)
    key = start_litellm(s, config, workers)
    complete = run_levels(
        s,
        f"proxy w{workers} {count} x infinity b{batch}",
        f"http://127.0.0.1:{a.proxy_port}",
        model="text-embedding-ada-002",
        levels=PROXY_LEVELS,
        out="proxy.jsonl",
        api_key=key,
        first_index=90_000_000,
    )
    stop_named(s, "litellm")
    if complete:
        (s.work / "proxy-engines.done").write_text("ok\n")


def pack(s: Run) -> None:
    """The tails of the logs, beside the results."""
    logs = s.results / "logs"
    logs.mkdir(exist_ok=True)
    for log in s.logs.rglob("*.log"):
        lines = log.read_text(errors="replace").splitlines()
        keep = [ln for ln in lines if '"POST /v1/embeddings' not in ln]  # access-log lines
        (logs / str(log.relative_to(s.logs)).replace("/", "_")).write_text(
            "\n".join([*keep[:80], "...", *keep[-80:]]) + "\n"
        )


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--inputs",
        type=Path,
        default=Path("bench-inputs/infinity"),
        help="input folder: wheels-infinity/, litellm-site.tar.xz, the vocab, config/",
    )
    p.add_argument("--results", type=Path, default=Path("bench-results/infinity"))
    p.add_argument("--work", type=Path, default=Path("bench-work/infinity"), help="state")
    p.add_argument("--phases", default="setup,direct,cosine,proxy")
    p.add_argument("--batch-sizes", type=parse_ints, default=[32, 64, 128])
    p.add_argument("--workers", type=parse_ints, default=[1, 8, 16])
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="skip setups that would not finish within this many seconds (default: no limit)",
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--scale", type=float, default=1.0, help="request counts x this")
    p.add_argument("--processes", type=int, default=4, help="loadgen driver processes")
    p.add_argument("--infinity-site", type=Path, help="default: WORK/infinity-site")
    p.add_argument("--litellm-site", type=Path, help="default: WORK/litellm-site")
    p.add_argument("--infinity-bin", help="an installed infinity_emb (skips the site)")
    p.add_argument("--litellm-python", help="a Python that imports litellm (default: this one)")
    p.add_argument("--port", type=int, help="Infinity's port (default: the plan's)")
    p.add_argument("--proxy-port", type=int, default=28000)
    p.add_argument("--no-models-link", dest="models_link", action="store_false")
    p.add_argument("--best", type=int, help="batch size for the later phases (skip best.json)")
    p.add_argument("--engines", type=int, default=4, help="engines of phase engines")
    p.add_argument("--proxy-engines-workers", type=int, default=16)
    p.add_argument("--no-proxy-cosine", dest="proxy_cosine", action="store_false")
    args = p.parse_args(argv)
    for name in ("inputs", "results", "work"):  # absolute: engines run from other folders
        setattr(args, name, getattr(args, name).resolve())
    args.infinity_site = (args.infinity_site or args.work / "infinity-site").resolve()
    args.litellm_site = (args.litellm_site or args.work / "litellm-site").resolve()
    s = Run(args)
    phases = {
        "setup": phase_setup,
        "direct": phase_direct,
        "cosine": phase_cosine,
        "proxy": phase_proxy,
        "variants": phase_variants,
        "engines": phase_engines,
        "proxy_engines": phase_proxy_engines,
    }
    status = 0
    try:
        for name in args.phases.split(","):
            s.log(f"=== phase {name}")
            try:
                phases[name](s)
            except Exception as err:  # one failed phase does not stop the next
                status = 1
                s.log(f"phase {name} FAILED: {type(err).__name__}: {err}")
    finally:
        ns.stop_processes(ns.load_state(s.state), grace=10)
        ns.save_state(s.state, [])
        pack(s)
        s.log(f"done in {time.monotonic() - s.began:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
