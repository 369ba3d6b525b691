#!/usr/bin/env bash
# LiteLLM's CPU per embeddings request with float lists against base64 (issue 5): the OpenAI SDKs
# ask for base64 by default, bench/loadgen.py for floats unless --encoding-format is given.
# Against a stack started by bench/native_stack.py (embedding engine on 8080, proxy on 28000):
#
#   python3 bench/native_stack.py start --config-dir CONFIG --only embedding --proxy \
#     --llama-server BIN --model-map embedding=GGUF --proxy-python PY --proxy-workers 2
#   bash bench/embed_encoding_cpu.sh CONFIG [OUT.jsonl]
#
# Per setup: loadgen's row (OUT.jsonl) and the CPU ticks (1/100 s) of every LiteLLM process
# during it. Direct rows show the proxy's idle ticks over the same time.
set -euo pipefail
CONFIG="${1:?rendered config dir (its stack.env has the key)}"
OUT="${2:-/tmp/embed-encoding.jsonl}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEY=$(sed -n 's/^LITELLM_MASTER_KEY=//p' "$CONFIG/stack.env")
ticks() {
  python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); from native_stack import cpu_ticks
print(sum(cpu_ticks(int(pid)) for pid in sys.argv[2:]))' "$REPO/bench" $(pgrep -f "proxy_cli|spawn_main")
}
for rep in 1 2; do
  for enc in float base64; do
    for url in http://127.0.0.1:8080 http://127.0.0.1:28000; do
      before=$(ticks)
      python3 "$REPO/bench/loadgen.py" --url "$url" --api-key "$KEY" \
        --model text-embedding-ada-002 --mode embeddings --batch 32 --concurrency 2 \
        --requests 8 --warmup 1 --encoding-format "$enc" --doc-chars 300 \
        --label "b32 $enc $url" --out "$OUT" >/dev/null
      echo "run $rep, $enc, $url: LiteLLM CPU ticks $(($(ticks) - before)); $(tail -1 "$OUT" \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["docs_s"], "docs/s,", r["errors"], "errors")')"
    done
  done
done
