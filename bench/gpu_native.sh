#!/usr/bin/env bash
# The stack run natively on a GPU host, phase by phase (issue 5): no Docker, no Ansible on the
# host; the engines and LiteLLM from the project's rendered configs (bench/render_configs.yml).
# Every phase is idempotent (it skips what is already there), keeps its state in WORK_DIR and
# writes its results to RESULTS_DIR, so phases can be run one at a time or chained.
#
#   bash bench/gpu_native.sh PHASE [ARGS] [PHASE [ARGS]]...
#
# Phases:
#   status              what is there (binary, models, configs, LiteLLM, results)
#   build               llama-server for this GPU with the project's build script
#                       (roles/stack_image/files/build-llama-server.sh), the architecture from
#                       nvidia-smi through the nvidia_toolkit plugin; -> build.json. A build still
#                       running at TIME_LIMIT goes on in the background: run `build` again to wait.
#   models              synthetic Llama-3-8B Q8_0 and multilingual-e5-small GGUFs in WORK_DIR/models
#   litellm             install the LiteLLM wheels ($INPUTS/wheels/*.whl) into LITELLM_SITE, or
#                       unpack $INPUTS/litellm-site.tar.xz (the same wheels, unzipped and xz-packed)
#   proof               the project's chat engine on the GPU: CUDA device and layer offload
#                       lines of its log, one request; -> proof.log
#   build_default       llama.cpp's default CUDA architecture list (issue 3) with the same
#                       script (-a default) into WORK_DIR/localai-default, in the background on
#                       BUILD_DEFAULT_CPUS; each run reports its progress, the last one its
#                       time and libggml-cuda size -> build-default.json (BUILD_DEFAULT_WAIT=1:
#                       wait for it, within TIME_LIMIT if one is set)
#   multigpu VARIANT... (issue 8) a whole rendered stack (engines + LiteLLM) per variant:
#                       single-stream decode direct to its first chat engine, then chat through
#                       the proxy at MULTI_LEVELS -> multigpu.jsonl. VARIANT: NAME=CONFIG_DIR
#                       [:GPUS] (GPUS: CUDA_VISIBLE_DEVICES for the whole stack, e.g. 0)
#   embed SETUP...      embeddings direct to the plan's embedding engine with overrides, single
#                       documents at EMBED_LEVELS and batches at EMBED_BATCH_LEVELS, and the
#                       GPU memory the engine then holds
#                       -> embed-direct.jsonl. SETUP: NAME or NAME=FLAGS
#   direct SETUP...     chat at 1/8/32 clients against one llama-server per setup
#                       -> chat-direct.jsonl. SETUP: server-defaults | seed | project |
#                       NAME=[BASE:]FLAGS (BASE one of the three, default project; FLAGS replace
#                       the base's own, e.g. 'np32=--parallel 32 --ctx-size 131072')
#   proxy [VARIANT...]  the rendered stack (chat + embeddings engines + LiteLLM) with
#                       native_stack.py; chat and embeddings direct (clients shared over all
#                       engines of the kind) and through the proxy -> chat-proxy.jsonl,
#                       embed.jsonl. VARIANT: NAME=CONFIG_DIR[:GPUS] (default
#                       project=$BENCH_CONFIG; GPUS as in multigpu); PROXY_PARTS [chat embed]
#                       picks what is measured, PROXY_DIRECT=0 skips direct chat
#
# Environment (defaults in brackets; relative paths are taken from the current directory):
#   INPUTS [./bench-inputs]   input folder: llama.cpp-slim.tar.xz (top folder llama.cpp/),
#                       ggml-vocab-*.gguf[.xz], config/, and LiteLLM as wheels/*.whl or
#                       litellm-site.tar.xz
#   RESULTS_DIR [./bench-results]   where the result files are written
#   WORK_DIR [./bench-work]   state: llama.cpp source and build, llama-server, models, LiteLLM,
#                       the started processes and their logs
#   TIME_LIMIT [off]    seconds one invocation may take; phases and setups that would not finish
#                       within it are skipped with a message instead of being cut off mid-way
#   LLAMA_SERVER [WORK_DIR/localai/bin/llama-server]   binary the runs use
#   BENCH_CONFIG [$INPUTS/config]   configs rendered by bench/render_configs.yml
#   CHAT_MODEL [WORK_DIR/models/llama3-8b-q8_0.gguf]   EMBED_MODEL [WORK_DIR/models/e5-small-f16.gguf]
#   CHAT_LEVELS [1:4,8:32,32:64]   clients:requests per level (warm-up: 1 request a client)
#   CHAT_MAX_TOKENS [256]   PROXY_PORT [proxy.json's, 28000]
#   EMBED_LEVELS [1:100,16:800]    EMBED_BATCH_LEVELS [1:20,4:80]   EMBED_BATCH [32]
#   EMBED_PROCESSES [1], CHAT_PROCESSES [1]   loadgen driver processes (loadgen --processes)
#   MULTI_LEVELS [1:4,16:64]   BUILD_DEFAULT_CPUS [all]
#   WATCH [1]           chat levels also record CPU per process, connections per LiteLLM worker
#                       and GPU use (native_stack.py loadgen --watch) -> watch.jsonl
#   SETUP_SECONDS [100] time a direct setup needs (checked against TIME_LIMIT);
#   LITELLM_SITE [WORK_DIR/litellm-site]; LITELLM_PYTHON [python3]; CUDA_ARCH (skip detection);
#   JOBS [nproc]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$REPO/bench"
# abspath PATH: PATH made absolute (a relative one is taken from the current directory).
abspath() { realpath -m -- "$1"; }
INPUTS="$(abspath "${INPUTS:-bench-inputs}")"
RESULTS="$(abspath "${RESULTS_DIR:-bench-results}")"
WORK="$(abspath "${WORK_DIR:-bench-work}")"
CONFIG_SRC="${BENCH_CONFIG:-$INPUTS/config}"
CONFIG="$WORK/config"
SRC="$WORK/llama.cpp"
PREFIX="${LLAMA_PREFIX:-$WORK/localai}"
LLAMA_SERVER="${LLAMA_SERVER:-$PREFIX/bin/llama-server}"
export LLAMA_SERVER
MODELS="$WORK/models"
CHAT_MODEL="${CHAT_MODEL:-$MODELS/llama3-8b-q8_0.gguf}"
EMBED_MODEL="${EMBED_MODEL:-$MODELS/e5-small-f16.gguf}"
TIME_LIMIT="${TIME_LIMIT:-}"
PY="${PYTHON:-python3}"
LITELLM_SITE="${LITELLM_SITE:-$WORK/litellm-site}"
LITELLM_PYTHON="${LITELLM_PYTHON:-$PY}"
CHAT_LEVELS="${CHAT_LEVELS:-1:4,8:32,32:64}"
CHAT_MAX_TOKENS="${CHAT_MAX_TOKENS:-256}"
EMBED_LEVELS="${EMBED_LEVELS:-1:100,16:800}"
EMBED_BATCH_LEVELS="${EMBED_BATCH_LEVELS:-1:20,4:80}"
EMBED_BATCH="${EMBED_BATCH:-32}"
EMBED_PROCESSES="${EMBED_PROCESSES:-1}"
CHAT_PROCESSES="${CHAT_PROCESSES:-1}"
SETUP_SECONDS="${SETUP_SECONDS:-100}"
STATE="$WORK/native-stack/state.json"
LOGS="$WORK/native-stack/logs"
DIRECT_PORT=8190
BUILD_LOG="$WORK/build-llama.log"
BUILD_PID="$WORK/build-llama.pid"
BUILD_RC="$WORK/build-llama.rc"
BUILD_T0="$WORK/build-llama.start"
PHASES=" status build build_default models litellm proof direct embed proxy multigpu "
MULTI_LEVELS="${MULTI_LEVELS:-1:4,16:64}"
DEF_PREFIX="$WORK/localai-default"
DEF_BUILD="$WORK/build-default"
DEF_LOG="$WORK/build-default.log"
DEF_PID="$WORK/build-default.pid"
DEF_RC="$WORK/build-default.rc"
DEF_T0="$WORK/build-default.start"

log() { printf '[%4ds] %s\n' "$SECONDS" "$*" >&2; }
remaining() { echo $((TIME_LIMIT - SECONDS)); }

# time_beyond N: true without TIME_LIMIT, or while more than N seconds of it are left.
time_beyond() { [ -z "$TIME_LIMIT" ] || [ "$(remaining)" -gt "$1" ]; }

# have_time NEED WHAT: true when NEED seconds are left of TIME_LIMIT (always without one);
# else say what is skipped.
have_time() {
  [ -n "$TIME_LIMIT" ] || return 0
  local left
  left=$(remaining)
  if [ "$left" -lt "$1" ]; then
    log "time limit: skipping $2 (${left}s left of TIME_LIMIT=${TIME_LIMIT}, needs ~${1}s); run it again"
    return 1
  fi
}

# bounded CMD...: run CMD, with TIME_LIMIT within the time that is left (minus a margin to stop).
bounded() {
  [ -n "$TIME_LIMIT" ] || { "$@"; return; }
  local left=$(($(remaining) - 10))
  if [ "$left" -lt 5 ]; then
    log "time limit: no time left for: $*"
    return 124
  fi
  timeout -k 5 "$left" "$@"
}

NS=("$PY" "$BENCH/native_stack.py")
ns() { "${NS[@]}" "$@"; }

cleanup() {
  if [ -s "$STATE" ] && grep -q '"pid"' "$STATE"; then ns stop --state "$STATE" >/dev/null || true; fi
}
trap cleanup EXIT

extract_source() {
  if [ -f "$SRC/CMakeLists.txt" ]; then return 0; fi
  local tarball="$INPUTS/llama.cpp-slim.tar.xz"
  [ -f "$tarball" ] || { log "no llama.cpp source: $SRC is empty and $tarball is missing"; return 1; }
  log "extracting $tarball to $SRC"
  rm -rf "$SRC.part" && mkdir -p "$SRC.part"
  tar -C "$SRC.part" -xJf "$tarball"
  mv "$SRC.part/llama.cpp" "$SRC" && rm -rf "$SRC.part"
}

copy_config() {
  if [ -f "$CONFIG_SRC/engines.json" ]; then
    rm -rf "$CONFIG" && mkdir -p "$CONFIG" && cp -a "$CONFIG_SRC/." "$CONFIG/"
  fi
  [ -f "$CONFIG/engines.json" ] || {
    log "no rendered configs: run bench/render_configs.yml -e out_dir=$INPUTS/config first"
    return 1
  }
}

# ---------------------------------------------------------------------------------------------
phase_status() {
  log "llama-server: $( [ -x "$LLAMA_SERVER" ] && "$LLAMA_SERVER" --version 2>&1 | head -1 || echo missing)"
  log "models: $(du -h "$CHAT_MODEL" "$EMBED_MODEL" 2>&1 | tr '\n' ';')"
  log "configs: $(find "$CONFIG_SRC" -maxdepth 1 -type f -printf '%f ' 2>&1)"
  log "litellm: $(PYTHONPATH="$LITELLM_SITE" "$LITELLM_PYTHON" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>&1 | tail -1)"
  log "results: $(find "$RESULTS" -maxdepth 1 -type f -printf '%f ' 2>&1)"
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader >&2; fi
}

detect_gpu() {
  # The project's own parser, with the exact query the nvidia_toolkit role runs.
  "$PY" - "$REPO/roles/nvidia_toolkit/filter_plugins" <<'EOF'
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
import nvidia_gpus as n
out = subprocess.run(["nvidia-smi", *n.QUERY_ARGS], check=True, capture_output=True, text=True)
gpus = n.nvidia_gpus(out.stdout)
print(json.dumps({"query": "nvidia-smi " + " ".join(n.QUERY_ARGS), "gpus": gpus,
                  "arch": n.nvidia_cuda_architectures(gpus),
                  "cuda_version": n.nvidia_cuda_version(gpus)}))
EOF
}

write_build_json() {
  local gpu_json="$1" wall="$2" invocations="$3"
  local cuda_lib
  cuda_lib=$(find "$PREFIX/lib" -maxdepth 1 -name 'libggml-cuda.so*' -type f | head -1)
  "$PY" - "$gpu_json" "$wall" "$invocations" "$LLAMA_SERVER" "${cuda_lib:-}" "$BUILD_LOG" \
    "$RESULTS/build.json" <<'EOF'
import json, os, re, subprocess, sys
gpu, wall, invocations, server, lib, build_log, out = sys.argv[1:]
text = open(build_log, encoding="utf-8", errors="replace").read() if os.path.exists(build_log) else ""
m = re.findall(r"built .* in (\d+)m(\d+)s", text)
nvcc = subprocess.run(["bash", "-c", "nvcc --version | tail -2"], capture_output=True, text=True)
version = subprocess.run([server, "--version"], capture_output=True, text=True)
data = {
    "gpu": json.loads(gpu),
    "build_script_seconds": int(m[-1][0]) * 60 + int(m[-1][1]) if m else None,
    "wall_seconds_since_first_start": int(wall),
    "build_invocations": int(invocations),
    "jobs": int(os.environ.get("JOBS") or os.cpu_count() or 1),
    "nvcc": nvcc.stdout.strip(),
    "llama_server_version": (version.stdout + version.stderr).strip(),
    "libggml_cuda": os.path.basename(lib) if lib else None,
    "libggml_cuda_bytes": os.path.getsize(lib) if lib else None,
    "prefix_bytes": sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
                        os.walk(os.path.dirname(os.path.dirname(server))) for f in fs
                        if not os.path.islink(os.path.join(d, f))),
}
json.dump(data, open(out, "w"), indent=2)
print(json.dumps(data, indent=2))
EOF
}

# cuda_toolchain BUILD_DIR: nvcc on PATH, and Ninja for a build directory CMake has not
# configured yet (a configured one keeps its generator).
cuda_toolchain() {
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
  if command -v ninja >/dev/null && [ ! -f "$1/CMakeCache.txt" ]; then
    export CMAKE_GENERATOR=Ninja
  fi
}

phase_build() {
  local gpu_json pid arch
  pid=$(cat "$BUILD_PID" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    log "build: a build started earlier is still running (pid $pid); waiting for it"
  elif [ -n "$pid" ] && [ -f "$BUILD_RC" ]; then
    log "build: a build started earlier has finished (rc $(cat "$BUILD_RC"))"
  elif [ -x "$LLAMA_SERVER" ]; then
    log "build: $LLAMA_SERVER exists, skipping ($("$LLAMA_SERVER" --version 2>&1 | head -1))"
    return 0
  else
    gpu_json=$(detect_gpu)
    arch="${CUDA_ARCH-$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["arch"])' "$gpu_json")}"
    log "build: GPUs $gpu_json"
    echo "$gpu_json" >"$WORK/build-llama.gpu.json"
    extract_source
    cuda_toolchain "$WORK/build-sm$arch"
    [ -f "$BUILD_T0" ] || date +%s >"$BUILD_T0"
    echo $(( $(cat "$BUILD_T0.n" 2>/dev/null || echo 0) + 1 )) >"$BUILD_T0.n"
    rm -f "$BUILD_RC"
    log "build: sm_$arch into $PREFIX (log $BUILD_LOG); nvcc: $(command -v nvcc || echo none)"
    # Its own process group (setsid): if this run stops first (TIME_LIMIT), the build goes on;
    # `build` again waits for it, or (if it was stopped) resumes it incrementally in the same
    # build directory.
    setsid bash -c '"$@"; echo $? >'"$BUILD_RC" build \
      "$REPO/roles/stack_image/files/build-llama-server.sh" -s "$SRC" -b "$WORK/build-sm$arch" \
      -p "$PREFIX" -a "$arch" -j "${JOBS:-$(nproc)}" >>"$BUILD_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$BUILD_PID"
  fi
  while kill -0 "$pid" 2>/dev/null; do
    if ! time_beyond 20; then
      log "time limit: build still running (pid $pid); last line: $(tail -1 "$BUILD_LOG" | cut -c1-150)"
      log "run 'build' again to wait for it (or resume it if it was stopped)"
      return 0
    fi
    sleep 5
  done
  wait "$pid" 2>/dev/null || true
  local rc
  rc=$(cat "$BUILD_RC" 2>/dev/null || echo "none (stopped before it finished)")
  if [ "$rc" != 0 ]; then
    rm -f "$BUILD_PID"
    log "build: FAILED or stopped (rc $rc); last lines of $BUILD_LOG (run 'build' again to resume):"
    tail -40 "$BUILD_LOG" >&2
    return 1
  fi
  rm -f "$BUILD_PID"
  tail -4 "$BUILD_LOG" >&2
  "$LLAMA_SERVER" --version >&2
  write_build_json "$(cat "$WORK/build-llama.gpu.json")" $(( $(date +%s) - $(cat "$BUILD_T0") )) \
    "$(cat "$BUILD_T0.n")"
}

phase_build_default() {
  local pid cpus="${BUILD_DEFAULT_CPUS:-0-$(($(nproc --all) - 1))}" jobs
  pid=$(cat "$DEF_PID" 2>/dev/null || true)
  if [ -z "$pid" ]; then
    extract_source
    cuda_toolchain "$DEF_BUILD"
    jobs=$(taskset -c "$cpus" nproc)
    date +%s >"$DEF_T0"
    log "build_default: llama.cpp's default CUDA list on CPUs $cpus ($jobs jobs), log $DEF_LOG"
    setsid taskset -c "$cpus" bash -c '"$@"; echo $? >'"$DEF_RC" build \
      "$REPO/roles/stack_image/files/build-llama-server.sh" -s "$SRC" -b "$DEF_BUILD" \
      -p "$DEF_PREFIX" -a default -j "$jobs" >>"$DEF_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$DEF_PID"
  fi
  if [ "${BUILD_DEFAULT_WAIT:-0}" = 1 ]; then
    while kill -0 "$pid" 2>/dev/null && time_beyond 30; do sleep 5; done
  fi
  local elapsed progress
  elapsed=$(($(date +%s) - $(cat "$DEF_T0")))
  progress=$(grep -o '^\[[0-9]*/[0-9]*\]' "$DEF_LOG" | tail -1 || true)
  if [ ! -f "$DEF_RC" ]; then
    log "build_default: running for ${elapsed}s, ninja at $progress"
    printf '{"running_seconds": %s, "progress": "%s", "cpus": "%s"}\n' "$elapsed" "$progress" \
      "$cpus" >"$RESULTS/build-default-progress.json"
    return 0
  fi
  log "build_default: finished (rc $(cat "$DEF_RC")) after ${elapsed}s"
  tail -3 "$DEF_LOG" >&2
  local lib
  lib=$(find "$DEF_PREFIX/lib" -maxdepth 1 -name 'libggml-cuda.so*' -type f 2>/dev/null | head -1)
  "$PY" - "$DEF_LOG" "${lib:-}" "$elapsed" "$(cat "$DEF_RC")" "$cpus" \
    "$RESULTS/build-default.json" <<'PYEOF'
import json, os, re, subprocess, sys
log, lib, elapsed, rc, cpus, out = sys.argv[1:]
text = open(log, encoding="utf-8", errors="replace").read()
m = re.findall(r"built .* in (\d+)m(\d+)s", text)
archs = re.findall(r"Using CUDA architectures: (.*)", text)
def listing(kind):
    if not lib:
        return []
    cmd = f"cuobjdump --list-{kind} '{lib}' | grep -o 'sm_[0-9a-z]*' | sort | uniq -c"
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True).stdout.split()
data = {"rc": int(rc), "build_script_seconds": int(m[-1][0]) * 60 + int(m[-1][1]) if m else None,
        "wall_seconds": int(elapsed), "cpus": cpus,
        "cuda_architectures": archs[-1] if archs else None,
        "libggml_cuda_bytes": os.path.getsize(lib) if lib else None,
        "sass_count_arch": listing("elf"), "ptx_count_arch": listing("ptx")}
json.dump(data, open(out, "w"), indent=2)
print(json.dumps(data, indent=2))
PYEOF
}

phase_models() {
  local vocab="$WORK/vocab" f
  mkdir -p "$vocab" "$(dirname "$CHAT_MODEL")" "$(dirname "$EMBED_MODEL")"
  for f in ggml-vocab-llama-bpe.gguf ggml-vocab-nomic-bert-moe.gguf; do
    if [ ! -f "$vocab/$f" ] && [ -f "$INPUTS/$f" ]; then cp "$INPUTS/$f" "$vocab/$f"; fi
    if [ ! -f "$vocab/$f" ] && [ -f "$INPUTS/$f.xz" ]; then xz -dc "$INPUTS/$f.xz" >"$vocab/$f"; fi
  done
  local shape out vfile vdir
  for spec in "llama3-8b:$CHAT_MODEL:ggml-vocab-llama-bpe.gguf" \
    "e5-small:$EMBED_MODEL:ggml-vocab-nomic-bert-moe.gguf"; do
    IFS=: read -r shape out vfile <<<"$spec"
    if [ -s "$out" ]; then log "models: $out exists, skipping"; continue; fi
    extract_source
    # The vocab from $INPUTS, else the one in the source tree's models/ folder.
    vdir="$vocab"
    [ -f "$vocab/$vfile" ] || vdir="$SRC/models"
    have_time 60 "model $shape" || return 0
    bounded "$PY" "$BENCH/make_synthetic_gguf.py" --shape "$shape" --out "$out.part" \
      --gguf-py "$SRC/gguf-py" --vocab-dir "$vdir"
    mv "$out.part" "$out"
  done
  ls -la "$CHAT_MODEL" "$EMBED_MODEL" >&2
}

phase_litellm() {
  if PYTHONPATH="$LITELLM_SITE" "$LITELLM_PYTHON" -c 'import litellm.proxy.proxy_cli' 2>/dev/null; then
    log "litellm: importable from $LITELLM_SITE, skipping"
    return 0
  fi
  local wheels=("$INPUTS"/wheels/*.whl) packed="$INPUTS/litellm-site.tar.xz"
  if [ ! -f "${wheels[0]}" ] && [ -f "$packed" ]; then
    # The wheels unpacked and xz-packed (37 MB instead of 58). Built with: unzip every wheel
    # into site/, tar -cJf litellm-site.tar.xz site
    log "litellm: unpacking $packed into $LITELLM_SITE"
    rm -rf "$LITELLM_SITE.part" && mkdir -p "$LITELLM_SITE.part"
    tar -C "$LITELLM_SITE.part" -xJf "$packed"
    rm -rf "$LITELLM_SITE" && mv "$LITELLM_SITE.part/site" "$LITELLM_SITE" && rm -rf "$LITELLM_SITE.part"
    PYTHONPATH="$LITELLM_SITE" "$LITELLM_PYTHON" -c \
      'import importlib.metadata as m, litellm.proxy.proxy_cli; print("litellm", m.version("litellm"))'
    return
  fi
  [ -f "${wheels[0]}" ] || { log "litellm: no wheels in $INPUTS/wheels (nor $packed)"; return 1; }
  log "litellm: installing ${#wheels[@]} wheels into $LITELLM_SITE"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$LITELLM_SITE" \
    "${wheels[@]}"
  PYTHONPATH="$LITELLM_SITE" "$LITELLM_PYTHON" -c \
    'import importlib.metadata as m, litellm.proxy.proxy_cli; print("litellm", m.version("litellm"))'
}

phase_proof() {
  copy_config
  have_time 90 proof || return 0
  local plog="$RESULTS/proof.log" name=proof
  mkdir -p "$RESULTS"
  rm -f "$LOGS/$name.log"
  bounded "${NS[@]}" serve --name "$name" --state "$STATE" --log-dir "$LOGS" --config-dir "$CONFIG" \
    --engine chat --model-map "chat=$CHAT_MODEL" >/dev/null
  {
    echo "# proof: the project's chat engine (engines.json) on this machine, $(date -u +%FT%TZ)"
    echo "# $(nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>&1)"
    echo "# $("$LLAMA_SERVER" --version 2>&1 | tr '\n' ' ')"
    echo "# command: $(head -c 2000 "$LOGS/$name.log" | sed -n 's/^=== native_stack: //p' | head -1)"
    grep -E 'ggml_cuda_init|CUDA devices|Device [0-9]+:|compiled for|offload|CUDA[0-9]+ (model|KV|compute) buffer|flash_attn|n_ctx_seq|n_seq_max|kv_unified|n_slots|system_info|listening|error' \
      "$LOGS/$name.log" | head -60
    template_check http://127.0.0.1:8090
    echo "# one request (256 tokens, ignore_eos):"
    "$PY" - <<'EOF'
import json, urllib.request
body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 256,
        "ignore_eos": True}
req = urllib.request.Request("http://127.0.0.1:8090/v1/chat/completions",
                             data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
r = json.load(opener.open(req, timeout=120))
print(json.dumps({"usage": r.get("usage"), "timings": r.get("timings")}))
EOF
    echo "# GPU processes while serving:"
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader 2>&1
  } >"$plog" 2>&1 || true
  ns stop --state "$STATE" >/dev/null
  cat "$plog" >&2
  grep -q 'offloaded' "$plog" || log "proof: no 'offloaded' line in the log (see $LOGS/$name.log)"
}

# setup_command SETUP -> prints "NAME<TAB>MODE<TAB>FLAGS..." (MODE: plain | engine)
setup_command() {
  local spec="$1" name base flags
  case "$spec" in
    *=*) name="${spec%%=*}" flags="${spec#*=}" ;;
    *) name="$spec" flags="" ;;
  esac
  base=project
  case "$spec" in
    server-defaults | seed | project) base="$spec" ;;
    *=server-defaults:* | *=seed:* | *=project:*) base="${flags%%:*}" flags="${flags#*:}" ;;
    *=*) ;;
    *) log "direct: unknown setup '$spec' (server-defaults, seed, project or NAME=[BASE:]FLAGS)"
       return 1 ;;
  esac
  case "$base" in
    # What llama-server needs to serve this model on the GPU: nothing beyond the model (its
    # --n-gpu-layers default is auto, i.e. every layer that fits: all 33 here).
    server-defaults) printf '%s\tplain\t-m %s %s\n' "$name" "$CHAT_MODEL" "$flags" ;;
    # The seed's entrypoint.sh. Today's llama-server differs in two defaults: bare --flash-attn
    # is now `--flash-attn on`, and Jinja templates are on, which turns `--chat-template llama3`
    # into the literal template "llama3" (every prompt would be that one word); --no-jinja
    # gives the built-in llama3 template the seed's server used.
    seed) printf '%s\tplain\t-m %s --chat-template llama3 --no-jinja --ctx-size 4096 --n-gpu-layers 40 --parallel 8 --threads-batch 8 --threads-http 8 --cont-batching --flash-attn on %s\n' \
      "$name" "$CHAT_MODEL" "$flags" ;;
    project) printf '%s\tengine\t%s\n' "$name" "$flags" ;;
  esac
}

# template_check URL: how the server formats a chat prompt. A literal "llama3" (a template name
# taken as a Jinja template) means every request would be the same 3-token prompt.
template_check() {
  "$PY" - "$1" <<'EOF'
import json, sys, urllib.request
body = json.dumps({"messages": [{"role": "user", "content": "Request 1: hello"}]}).encode()
req = urllib.request.Request(sys.argv[1] + "/apply-template", data=body,
                             headers={"Content-Type": "application/json"})
try:
    prompt = json.load(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        req, timeout=30)).get("prompt", "")
except Exception as err:
    print(f"chat template check: no answer ({err})")
    sys.exit(0)
verdict = "OK" if "Request 1: hello" in prompt else "BROKEN (the prompt text is lost)"
print(f"chat template check: {verdict}: {prompt!r}")
EOF
}

# run_chat_levels LABEL URL OUTFILE FIRST_INDEX [loadgen options...]
run_chat_levels() {
  local label="$1" url="$2" out="$3" first="$4"
  shift 4
  local watch=()
  [ "${WATCH:-1}" = 0 ] || watch=(--watch "$RESULTS/watch.jsonl" --state "$STATE")
  bounded "${NS[@]}" loadgen --levels "$CHAT_LEVELS" --first-index "$first" "${watch[@]}" -- --url "$url" \
    --model "${CHAT_NAME:-chat}" --label "$label" --warmup 1 --max-tokens "$CHAT_MAX_TOKENS" \
    --processes "$CHAT_PROCESSES" --out "$out" "$@"
}

phase_direct() {
  local setups=("$@") line name mode flags url rc served check
  [ "${#setups[@]}" -gt 0 ] || setups=(server-defaults seed project)
  copy_config
  mkdir -p "$RESULTS"
  local done_setups=()
  for spec in "${setups[@]}"; do
    line=$(setup_command "$spec") || return 1
    IFS=$'\t' read -r name mode flags <<<"$line"
    have_time "$SETUP_SECONDS" "direct setup '$name'" || { log "direct: not run: ${setups[*]:${#done_setups[@]}}"; break; }
    local argv=()
    read -ra argv <<<"$flags"
    rm -f "$LOGS/$name.log"
    rc=0
    if [ "$mode" = engine ]; then
      served=$(bounded "${NS[@]}" serve --name "$name" --state "$STATE" --log-dir "$LOGS" \
        --config-dir "$CONFIG" --engine chat --model-map "chat=$CHAT_MODEL" -- "${argv[@]}") || rc=$?
    else
      served=$(bounded "${NS[@]}" serve --name "$name" --state "$STATE" --log-dir "$LOGS" \
        --port "$DIRECT_PORT" -- "${argv[@]}") || rc=$?
    fi
    if [ "$rc" != 0 ]; then
      log "direct: '$name' did not start (rc $rc); log tail in $RESULTS/server-logs.txt"
      { echo "=== $name (failed to start)"; tail -30 "$LOGS/$name.log"; } >>"$RESULTS/server-logs.txt"
      continue
    fi
    url=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["url"])' "$served")
    log "direct: '$name' on $url: $(sed -n 's/^=== native_stack: //p' "$LOGS/$name.log" | tail -1)"
    check=$(template_check "$url")
    log "direct: '$name' $check"
    run_chat_levels "$name" "$url" "$RESULTS/chat-direct.jsonl" 0 || log "direct: '$name' had errors or ran out of time"
    ns stop --state "$STATE" >/dev/null
    {
      echo "=== $name: $(sed -n 's/^=== native_stack: //p' "$LOGS/$name.log" | tail -1)"
      echo "$check"
      grep -E 'offloaded|n_ctx_seq|n_slots|flash_attn|kv_unified|CUDA0 (KV|compute) buffer' "$LOGS/$name.log" | head -12
    } >>"$RESULTS/server-logs.txt"
    done_setups+=("$name")
  done
  [ "${#done_setups[@]}" -eq 0 ] || {
    local sel=()
    for name in "${done_setups[@]}"; do sel+=(--setup "$name"); done
    ns table "$RESULTS/chat-direct.jsonl" "${sel[@]}"
  }
}

# stack_endpoints JSON -> "chat_url chat_name chat_alias embed_url embed_name embed_alias proxy_url"
stack_endpoints() {
  # chat URLs (comma-joined, first engine first), model, alias; the same for embeddings; proxy
  "$PY" - "$1" <<'PYEOF'
import json, sys
e = json.loads(sys.argv[1])
out = []
for kind in ("chat", "embedding"):
    engines = [x for x in e["engines"] if x["kind"] == kind]
    out += [",".join(x["url"] for x in engines), engines[0]["model"], engines[0]["alias"]]
print(*out, e["proxy"]["url"])
PYEOF
}

# litellm_ready CONFIG_DIR: LiteLLM imports, and knows to stay offline.
litellm_ready() {
  if ! PYTHONPATH="$LITELLM_SITE${PYTHONPATH:+:$PYTHONPATH}" "$LITELLM_PYTHON" -c 'import litellm.proxy.proxy_cli' 2>/dev/null; then
    log "litellm does not import from $LITELLM_SITE; run the 'litellm' phase (wheels in \$INPUTS/wheels/)"
    return 1
  fi
  # LiteLLM 1.108 fetches a Llama-3 tokenizer from Hugging Face for models named like Llama-3,
  # on every streamed request; offline that is 5 retries, ~23 s per request. HF_HUB_OFFLINE=1
  # makes it fall back at once. Set here unless stack.env decides (BENCH_HF_OFFLINE=0: don't).
  if ! grep -q '^HF_HUB_OFFLINE=' "$1/stack.env" && [ "${BENCH_HF_OFFLINE:-1}" = 1 ]; then
    log "stack.env has no HF_HUB_OFFLINE; setting HF_HUB_OFFLINE=1 for LiteLLM (see README)"
    export HF_HUB_OFFLINE=1
  fi
}

# parse_variant SPEC: NAME=CONFIG_DIR[:GPUS] into name, dir and gpus in the caller's scope.
parse_variant() {
  name="${1%%=*}" dir="${1#*=}" gpus=""
  if [[ "$dir" == *:* ]]; then gpus="${dir#*:}" dir="${dir%%:*}"; fi
}

# stack_up NAME DIR GPUS: a rendered config copied to WORK_DIR/config-NAME, its engines and
# LiteLLM started by native_stack.py (GPUS: CUDA_VISIBLE_DEVICES for the whole stack, 'all'
# for every GPU, empty to keep the caller's). Sets cfg, key, endpoints and the variables of
# stack_endpoints in the caller's scope; returns 1 (with the logs' tails) if it did not start.
stack_up() {
  local name="$1" dir="$2" gpus="$3"
  dir="$(abspath "$dir")"
  cfg="$WORK/config-$name"
  rm -rf "$cfg" && mkdir -p "$cfg" && cp -a "$dir/." "$cfg/"
  litellm_ready "$cfg" || return 1
  endpoints=$(
    case "$gpus" in
      "") ;;
      all) unset CUDA_VISIBLE_DEVICES ;;
      *) export CUDA_VISIBLE_DEVICES="$gpus" ;;
    esac
    PYTHONPATH="$LITELLM_SITE${PYTHONPATH:+:$PYTHONPATH}" bounded "${NS[@]}" start \
      --state "$STATE" --log-dir "$LOGS" --config-dir "$cfg" --timeout 240 \
      --model-map "chat=$CHAT_MODEL" --model-map "embedding=$EMBED_MODEL" \
      --proxy --proxy-python "$LITELLM_PYTHON" ${PROXY_PORT:+--proxy-port "$PROXY_PORT"}
  ) || { log "'$name' did not start"; tail -n 20 "$LOGS"/*.log >&2; return 1; }
  key=$(sed -n 's/^LITELLM_MASTER_KEY=//p' "$cfg/stack.env")
  read -r chat_url chat_name chat_alias embed_url embed_name embed_alias proxy_url < <(stack_endpoints "$endpoints")
}

phase_multigpu() {
  [ "$#" -gt 0 ] || { log "multigpu: name at least one NAME=CONFIG_DIR[:GPUS]"; return 1; }
  mkdir -p "$RESULTS"
  local out="$RESULTS/multigpu.jsonl" spec name dir gpus cfg endpoints key sel=()
  local chat_url chat_name chat_alias embed_url embed_name embed_alias proxy_url
  for spec in "$@"; do
    parse_variant "$spec"
    have_time 150 "multigpu variant '$name'" || break
    rm -f "$LOGS"/*.log  # the variant's own engine logs are summarised below
    stack_up "$name" "$dir" "${gpus:-all}" || return 1
    {
      echo "=== multigpu $name (CUDA_VISIBLE_DEVICES=${gpus:-all}):"
      grep -h '^=== native_stack: ' "$LOGS"/llamacpp-chat*.log
      grep -hE 'CUDA[0-9]+ (model|KV) buffer|using device|offloaded' "$LOGS"/llamacpp-chat*.log | head -12
      nvidia-smi --query-gpu=index,memory.used --format=csv,noheader
    } >>"$RESULTS/server-logs.txt" 2>&1
    CHAT_LEVELS=1:4 CHAT_NAME="$chat_name" run_chat_levels "$name direct" "$chat_url" "$out" 0 || true
    CHAT_LEVELS="$MULTI_LEVELS" CHAT_NAME="$chat_alias" run_chat_levels "$name via proxy" "$proxy_url" \
      "$out" 500000 --api-key "$key" || true
    ns stop --state "$STATE" >/dev/null
    sel+=(--setup "$name direct" --setup "$name via proxy")
  done
  [ "${#sel[@]}" -eq 0 ] || ns table "$out" "$RESULTS/watch.jsonl" "${sel[@]}"
}

phase_embed() {
  local setups=("$@") spec name flags served url rc out="$RESULTS/embed-direct.jsonl" sel=()
  # The stack pins its embedding engine to the first GPU; unpinned, llama-server spreads the
  # model over every GPU it sees (and a CUDA context on each).
  export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-0}"
  [ "${#setups[@]}" -gt 0 ] || setups=(project)
  copy_config
  mkdir -p "$RESULTS"
  for spec in "${setups[@]}"; do
    name="${spec%%=*}" flags=""
    [[ "$spec" == *=* ]] && flags="${spec#*=}"
    have_time 60 "embed setup '$name'" || break
    local argv=()
    read -ra argv <<<"$flags"
    rm -f "$LOGS/$name.log"
    rc=0
    served=$(bounded "${NS[@]}" serve --name "$name" --state "$STATE" --log-dir "$LOGS" \
      --config-dir "$CONFIG" --engine embedding --model-map "embedding=$EMBED_MODEL" \
      -- "${argv[@]}") || rc=$?
    if [ "$rc" != 0 ]; then
      log "embed: '$name' did not start (rc $rc)"
      { echo "=== $name (failed to start)"; tail -n 30 "$LOGS/$name.log"; } >>"$RESULTS/server-logs.txt"
      continue
    fi
    local pid gpu_mib
    read -r url pid < <("$PY" -c 'import json,sys; d = json.loads(sys.argv[1])
print(d["url"], d["pid"])' "$served")
    log "embed: '$name' on $url: $(sed -n 's/^=== native_stack: //p' "$LOGS/$name.log" | tail -1)"
    bounded "${NS[@]}" loadgen --levels "$EMBED_LEVELS" -- --mode embeddings --url "$url" \
      --model embedding --batch 1 --processes "$EMBED_PROCESSES" --label "$name b1" --out "$out" || true
    bounded "${NS[@]}" loadgen --levels "$EMBED_BATCH_LEVELS" -- --mode embeddings --url "$url" \
      --model embedding --batch "$EMBED_BATCH" --processes "$EMBED_PROCESSES" \
      --label "$name b$EMBED_BATCH" --out "$out" || true
    # What the engine holds on its GPU after those loads (the models' gpu_memory_gb estimate).
    gpu_mib=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits \
      2>/dev/null | awk -F', *' -v pid="$pid" '$1 == pid {s += $2; n++} END {if (n) print s}')
    log "embed: '$name' holds ${gpu_mib:-?} MiB of GPU memory after its loads"
    ns stop --state "$STATE" >/dev/null
    {
      echo "=== $name: $(sed -n 's/^=== native_stack: //p' "$LOGS/$name.log" | tail -1)"
      echo "GPU memory after the loads (nvidia-smi --query-compute-apps): ${gpu_mib:-?} MiB"
      grep -E 'n_ctx_seq|n_slots|n_ubatch|flash_attn|CUDA0 compute buffer' "$LOGS/$name.log" | head -8
    } >>"$RESULTS/server-logs.txt"
    sel+=(--setup "$name b1" --setup "$name b$EMBED_BATCH")
  done
  [ "${#sel[@]}" -eq 0 ] || ns table "$out" "${sel[@]}"
}

phase_proxy() {
  # Variants NAME=CONFIG_DIR (default: project=$BENCH_CONFIG). Direct runs share their clients
  # over all of the variant's engines of the kind (loadgen --url A,B,...), so a config with
  # several engines is compared with the proxy that balances them.
  local specs=("$@") spec name dir gpus cfg endpoints key kind levels batch parts="${PROXY_PARTS:-chat embed}"
  local chat_url chat_name chat_alias embed_url embed_name embed_alias proxy_url sel=()
  [ "${#specs[@]}" -gt 0 ] || specs=("project=$CONFIG_SRC")
  mkdir -p "$RESULTS"
  local chat_out="$RESULTS/chat-proxy.jsonl" embed_out="$RESULTS/embed.jsonl"
  for spec in "${specs[@]}"; do
    parse_variant "$spec"
    have_time 150 "proxy variant '$name'" || break
    stack_up "$name" "$dir" "$gpus" || return 1
    echo "$endpoints" >&2
    if [[ " $parts " == *" chat "* ]]; then
      template_check "${chat_url%%,*}" >&2
      # Distinct request numbers for the proxy runs: the same engine serves both, and a
      # repeated prompt would be answered from its prompt cache.
      if [ "${PROXY_DIRECT:-1}" = 1 ]; then
        CHAT_NAME="$chat_name" run_chat_levels "$name direct" "$chat_url" "$chat_out" 0 || true
        sel+=(--setup "$name direct")
      fi
      CHAT_NAME="$chat_alias" run_chat_levels "$name via proxy" "$proxy_url" "$chat_out" 500000 \
        --api-key "$key" || true
      sel+=(--setup "$name via proxy")
    fi
    if [[ " $parts " == *" embed "* ]]; then
      for kind in single batch; do
        if [ "$kind" = single ]; then levels="$EMBED_LEVELS" batch=1; else levels="$EMBED_BATCH_LEVELS" batch="$EMBED_BATCH"; fi
        bounded "${NS[@]}" loadgen --levels "$levels" -- --mode embeddings --url "$embed_url" \
          --model "$embed_name" --batch "$batch" --processes "$EMBED_PROCESSES" \
          --label "$name embeddings b$batch direct" --out "$embed_out" || true
        bounded "${NS[@]}" loadgen --levels "$levels" --first-index 500000 -- --mode embeddings \
          --url "$proxy_url" --api-key "$key" --model "$embed_alias" --batch "$batch" \
          --processes "$EMBED_PROCESSES" --label "$name embeddings b$batch via proxy" \
          --out "$embed_out" || true
        sel+=(--setup "$name embeddings b$batch direct" --setup "$name embeddings b$batch via proxy")
      done
    fi
    ns stop --state "$STATE" >/dev/null
  done
  [ "${#sel[@]}" -eq 0 ] || ns table "$chat_out" "$embed_out" "$RESULTS/watch.jsonl" "${sel[@]}"
}

main() {
  [ "$#" -gt 0 ] || { sed -n '2,65p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
  mkdir -p "$RESULTS" "$LOGS"
  local status=0 rc
  while [ "$#" -gt 0 ]; do
    local phase="$1" args=()
    shift
    case "$PHASES" in *" $phase "*) ;; *) log "unknown phase '$phase'"; exit 2 ;; esac
    while [ "$#" -gt 0 ] && [[ "$PHASES" != *" $1 "* ]]; do args+=("$1"); shift; done
    log "=== phase $phase ${args[*]}"
    # A subshell outside any `||`/`if`, so `set -e` holds inside the phase (bash ignores it in
    # functions called from a condition); one failed phase does not stop the next.
    set +e
    ("phase_$phase" "${args[@]}")
    rc=$?
    set -e
    if [ "$rc" != 0 ]; then status=1; log "phase $phase FAILED (rc $rc)"; fi
  done
  log "done in ${SECONDS}s; results in $RESULTS"
  return "$status"
}

main "$@"
