#!/bin/bash
# The chat engine's GPU memory at the slot counts the engine plan gives a 16 GB, a 24 GB and an
# 80 GB+ card (8, 25 and 64 slots of 4,096 tokens), against the plan's estimate (weights + KV
# cache + 1,024 MiB). Run from the repository root on a GPU machine with CUDA, CMake, ninja and
# python3 with numpy:
#   SRC_ARCHIVE=<llama.cpp source tarball, e.g. .cache/fixtures/llama.cpp-src.tar.gz> \
#     bash bench/results/2026-11-29-h200/chat_memory.sh
# Builds llama-server for compute capability 9.0 and the synthetic Llama-3-8B Q8_0 in /tmp/sc.
set -uo pipefail
W=/tmp/sc; mkdir -p "$W"
SRC=$W/llama.cpp
[ -d "$SRC" ] || tar -C "$W" -xzf "${SRC_ARCHIVE:?the llama.cpp source tarball}"
[ -s "$W/llama3-8b.gguf" ] || python3 bench/make_synthetic_gguf.py --shape llama3-8b \
  --out "$W/llama3-8b.gguf" --gguf-py "$SRC/gguf-py" --vocab-dir "$SRC/models"
if [ ! -x "$W/build/bin/llama-server" ]; then
  cmake -S "$SRC" -B "$W/build" -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF > "$W/cmake.log" 2>&1
  ninja -C "$W/build" -j"$(nproc)" llama-server > "$W/ninja.log" 2>&1 || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for case in "8 32768" "25 102400" "64 262144"; do
  set -- $case
  # The default chat entry's engine flags (group_vars/all.yml).
  "$W/build/bin/llama-server" -m "$W/llama3-8b.gguf" --parallel "$1" --ctx-size "$2" \
    --n-gpu-layers 999 --flash-attn auto --backend-sampling --cache-ram 0 --metrics \
    --port 8090 --host 127.0.0.1 > "$W/server-$1.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 120); do
    curl -sf http://127.0.0.1:8090/health > /dev/null 2>&1 && break
    sleep 1
  done
  # One request, so the compute buffers are in use.
  curl -s http://127.0.0.1:8090/completion -d '{"prompt":"Hello","n_predict":16}' > /dev/null
  used=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits \
    | awk -F', ' -v p="$pid" '$1 == p {print $2}')
  echo "slots=$1 ctx=$2 process_MiB=$used estimate_MiB=$(( 8146 + $2 * 131072 / 1048576 + 1024 ))"
  kill "$pid"; wait "$pid" 2> /dev/null
done
