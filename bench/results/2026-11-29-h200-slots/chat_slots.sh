#!/bin/bash
# The chat engine's throughput, time to first token and GPU memory against its slot count
# (--parallel), to check the `auto` sizing's ceiling (MAX_GPU_SLOTS in
# filter_plugins/localai_models.py). One llama-server at a time, direct (no proxy), with the
# default chat entry's engine flags (group_vars/all.yml: all layers on the GPU, flash attention
# auto, --backend-sampling, --cache-ram 0, 4,096 tokens per slot, --n-predict 1024, Jinja), the
# synthetic Llama-3-8B Q8_0, and bench/loadgen.py's chat load (~110-token prompts, 256 streamed
# tokens with ignore_eos, one unmeasured warm-up request per client) at 64 and 128 closed-loop
# clients, 3 requests per client. Slot counts run in SLOTS order; one that would not end before
# DEADLINE (seconds after the start) is skipped.
#
# Run from the repository root on a GPU machine with CUDA, CMake and python3 with numpy:
#   SRC_ARCHIVE=<llama.cpp source tarball, e.g. .cache/fixtures/llama.cpp-src.tar.gz> \
#     bash bench/results/2026-11-29-h200-slots/chat_slots.sh
# It builds llama-server with the image's build script for compute capability 9.0 (-a 90) and
# makes the model, in WORK (/tmp/ss); results land in WORK/results (chat-slots.jsonl: loadgen's
# rows; memory.txt: nvidia-smi per slot count; run.log; build.log; model.log; env.txt; logs/:
# each engine's log and a 1-second nvidia-smi sample of the GPU during its load). WORK/done
# appears at the end: the script may run detached (setsid) and be waited for.
set -uo pipefail
W=${WORK:-/tmp/ss}
R=$W/results
SLOTS=${SLOTS:-32 64 96 128 64}
LEVELS=${LEVELS:-64:192,128:384}
DEADLINE=${DEADLINE:-1130}
PORT=8090
MODEL_NAME=Llama-3-ELYZA-JP-8B # the default entry's name: the engine's --alias
mkdir -p "$R/logs"
began=$(date +%s)
log() { echo "$(date -u +%T) +$(($(date +%s) - began))s $*" | tee -a "$R/run.log"; }

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader
  echo "cpus: $(nproc)"
  nvcc --version | tail -2
  sha256sum "${SRC_ARCHIVE:?the llama.cpp source tarball}"
} > "$R/env.txt" 2>&1

SRC=$W/llama.cpp
[ -d "$SRC" ] || tar -C "$W" -xzf "$SRC_ARCHIVE"
if [ ! -x "$W/prefix/bin/llama-server" ]; then
  log "build started"
  bash roles/stack_image/files/build-llama-server.sh -s "$SRC" -b "$W/build" -p "$W/prefix" \
    -a 90 -j "$(nproc)" > "$R/build.log" 2>&1 &
  build=$!
fi
if [ ! -s "$W/llama3-8b.gguf" ]; then
  python3 bench/make_synthetic_gguf.py --shape llama3-8b --out "$W/llama3-8b.gguf" \
    --gguf-py "$SRC/gguf-py" --vocab-dir "$SRC/models" > "$R/model.log" 2>&1 \
    || { log "model failed"; touch "$W/done"; exit 1; }
  log "$(tail -1 "$R/model.log")"
fi
if [ -n "${build:-}" ]; then
  wait "$build" || { log "build failed"; touch "$W/done"; exit 1; }
  log "$(tail -1 "$R/build.log")"
fi
"$W/prefix/bin/llama-server" --version >> "$R/env.txt" 2>&1

longest=150 # seconds one slot count is expected to take until one has been timed
runs=0
for n in $SLOTS; do
  runs=$((runs + 1))
  name="np$n-run$runs"
  if (($(date +%s) - began + longest > DEADLINE)); then
    log "$name skipped: it would end past the deadline (${DEADLINE}s)"
    continue
  fi
  t0=$(date +%s)
  ctx=$((n * 4096))
  # The engine plan's command line for the default chat entry (filter_plugins/localai_models.py,
  # _engine_args), with the slot count and context under test.
  flags=(--alias "$MODEL_NAME" --host 127.0.0.1 --port "$PORT" --ctx-size "$ctx" --parallel "$n"
    --n-gpu-layers 999 --flash-attn auto --metrics --n-predict 1024 --jinja
    --backend-sampling --cache-ram 0)
  log "$name: llama-server -m llama3-8b.gguf ${flags[*]}"
  "$W/prefix/bin/llama-server" -m "$W/llama3-8b.gguf" "${flags[@]}" > "$R/logs/server-$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 180); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null 2>&1 && break
    kill -0 "$pid" 2> /dev/null || break
    sleep 1
  done
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 1 \
    > "$R/logs/gpu-$name.csv" 2>&1 &
  smi=$!
  PYTHONUNBUFFERED=1 python3 bench/native_stack.py loadgen --levels "$LEVELS" \
    --first-index $((runs * 10000)) -- --url "http://127.0.0.1:$PORT" --model "$MODEL_NAME" \
    --label "$n slots" --out "$R/chat-slots.jsonl" 2>&1 | tee -a "$R/run.log"
  used=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits \
    | awk -F', ' -v p="$pid" '$1 == p {print $2}')
  total=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits)
  echo "$name slots=$n ctx=$ctx process_MiB=$used gpu_used_MiB=$total" | tee -a "$R/memory.txt"
  kill "$smi" "$pid"
  wait "$pid" 2> /dev/null
  took=$(($(date +%s) - t0))
  ((took > longest)) && longest=$took
  log "$name done in ${took}s"
done
touch "$W/done"
log "all done"
