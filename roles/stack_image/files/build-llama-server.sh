#!/usr/bin/env bash
# Build llama.cpp's llama-server, and only that, for the given CUDA architectures (or the CPU),
# and install it with its shared libraries into a prefix:
#   <prefix>/bin/llama-server
#   <prefix>/lib/lib{llama,ggml*,mtmd,...}.so*   (found through RPATH $ORIGIN/../lib)
#
# One file, two users: the image's Dockerfile (stack_image role) and a person or CI job on a
# machine without Docker (the GPU proof runs it natively on an H100). Same flags in both places.
#
# Usage: build-llama-server.sh [-s SRC] [-b BUILD] [-p PREFIX] [-a ARCHS] [-j JOBS] [-P PATCHES]
#   -s  llama.cpp source tree                 (env LLAMA_SRC,    default ./llama.cpp)
#   -b  CMake build directory                 (env LLAMA_BUILD,  default <src>/build-server)
#   -p  install prefix                        (env LLAMA_PREFIX, default /opt/localai)
#   -a  CUDA architectures, e.g. "61" or "75;86"; "" = CPU build; "default" = CUDA with
#       llama.cpp's own portable list (every GPU it supports; several times the build time)
#                                             (env CUDA_ARCHITECTURES, default "")
#   -j  parallel jobs                         (env JOBS, default: number of CPUs)
#   -P  folder of *.patch files (-p1) applied to the source in name order before the build; one
#       already applied is skipped                (env LLAMA_PATCHES, default none)
# Env LLAMA_CPU_NATIVE=ON|OFF (CPU builds only, default ON): see the CPU branch below.
# Env LLAMA_BUILD_COMMIT: what `llama-server --version` reports as its commit when the source
#   is not a git checkout (an archive); git checkouts report their own.
# Env LLAMA_EXTRA_CMAKE_FLAGS: appended to the CMake flags (word-split), for experiments.
set -euo pipefail

# What gets compiled. A constant on purpose: the image runs llama-server and nothing else, and
# every extra target costs minutes on small build hosts.
readonly TARGETS=(llama-server)

src="${LLAMA_SRC:-./llama.cpp}"
build="${LLAMA_BUILD:-}"
prefix="${LLAMA_PREFIX:-/opt/localai}"
archs="${CUDA_ARCHITECTURES:-}"
jobs="${JOBS:-}"
cpu_native="${LLAMA_CPU_NATIVE:-ON}"
patches="${LLAMA_PATCHES:-}"

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while getopts 's:b:p:a:j:P:h' opt; do
  case "$opt" in
    s) src="$OPTARG" ;;
    b) build="$OPTARG" ;;
    p) prefix="$OPTARG" ;;
    a) archs="$OPTARG" ;;
    j) jobs="$OPTARG" ;;
    P) patches="$OPTARG" ;;
    *) usage ;;
  esac
done

[ -f "$src/CMakeLists.txt" ] || { echo "build-llama-server: no CMakeLists.txt in '$src'" >&2; exit 2; }
src="$(cd "$src" && pwd)"
build="${build:-$src/build-server}"
jobs="${jobs:-$(nproc)}"
if [ -n "$archs" ] && [ "$archs" != default ] && ! [[ "$archs" =~ ^[0-9]{2,3}[af]?(\;[0-9]{2,3}[af]?)*$ ]]; then
  echo "build-llama-server: CUDA architectures '$archs' are not like '61' or '75;86'" >&2
  exit 2
fi

# Patches (git apply works on an archive's tree too): each applies whole or the build stops.
# Paths in a patch are relative to the source tree, so git applies it as to plain files: no
# repository is looked up (an enclosing checkout, or the dangling .git file of a vendored copy,
# would make git refuse or apply relative to another root).
src_apply() { (cd "$src" && GIT_DIR=/nonexistent git apply -p1 "$@"); }
if [ -n "$patches" ]; then
  [ -d "$patches" ] || { echo "build-llama-server: no patch folder '$patches'" >&2; exit 2; }
  patches="$(cd "$patches" && pwd)"
  for patch in "$patches"/*.patch; do
    [ -e "$patch" ] || continue
    if src_apply --check "$patch" 2>/dev/null; then
      src_apply "$patch"
      echo "build-llama-server: applied $(basename "$patch")"
    elif src_apply --check -R "$patch" 2>/dev/null; then
      echo "build-llama-server: $(basename "$patch") is already applied"
    else
      echo "build-llama-server: $(basename "$patch") does not apply to $src:" >&2
      src_apply --check "$patch" >&2 || true
      exit 1
    fi
  done
fi

# Common flags: a release build of the server only. No tests/examples; HTTPS and model downloads
# are not needed (models are files mounted into the container, the server sits behind LiteLLM),
# so OpenSSL and libcurl stay out of the runtime. LLAMA_CURL is deprecated (ignored) on recent
# refs and still defaults to ON on older ones, where it would need libcurl headers. The web UI's
# prebuilt assets would be downloaded from Hugging Face at build time: off (API-only endpoint).
flags=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=ON
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_TOOLS=ON
  -DLLAMA_BUILD_SERVER=ON
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DGGML_CCACHE=ON
  # The installed binary finds its libraries next to it, wherever the prefix is copied to.
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON
  "-DCMAKE_INSTALL_RPATH=\$ORIGIN:\$ORIGIN/../lib"
)
if [ "$archs" = default ]; then
  # GPU, llama.cpp's portable list (CMake picks it when CMAKE_CUDA_ARCHITECTURES is unset).
  flags+=(-DGGML_CUDA=ON -DGGML_NATIVE=OFF)
  kind="cuda (llama.cpp's default architecture list)"
elif [ -n "$archs" ]; then
  # GPU: compile for the detected architectures only (the build host may have no GPU, so never
  # "native" detection: that is how the seed got a binary "compiled for: 520").
  flags+=(-DGGML_CUDA=ON -DGGML_NATIVE=OFF "-DCMAKE_CUDA_ARCHITECTURES=$archs")
  kind="cuda sm_${archs//;/,sm_}"
else
  # CPU: the image is built on the host that runs it, so -march=native (GGML_NATIVE=ON) gives
  # that host's AVX2/AVX-512 paths for free. Set LLAMA_CPU_NATIVE=OFF for an image meant to be
  # copied to other machines (portable baseline x86-64, slower).
  flags+=(-DGGML_CUDA=OFF "-DGGML_NATIVE=$cpu_native")
  # Except AMX: where -march=native finds it, ggml's AMX matrix kernels (ggml-cpu/amx) take over
  # quantized matmuls, and on virtual machines that report AMX without running it (seen on a
  # Sapphire Rapids guest) llama-server dies at the first request, SIGSEGV or SIGILL in
  # ggml_backend_amx_mul_mat (ldtilecfg). AVX-512 VNNI serves the same types. GCC applies
  # -mno-* over -march=native whatever their order.
  if [ "$cpu_native" = ON ] && [ "$(uname -m)" = x86_64 ]; then
    flags+=("-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
      "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
  fi
  kind="cpu (native=$cpu_native)"
fi
if [ -n "$archs" ]; then
  # The executables link libggml-cuda.so, which needs the driver's libcuda.so.1; a build host
  # (docker build, a CPU machine) has only the toolkit's stub libcuda.so, so ld must not insist
  # on resolving a shared library's own dependencies there: llama.cpp's .devops/cuda.Dockerfile
  # links the same way. At run time the driver's library is there (ldd check below).
  flags+=("-DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined")
fi
if [ -n "${LLAMA_BUILD_COMMIT:-}" ]; then
  flags+=("-DLLAMA_BUILD_COMMIT=$LLAMA_BUILD_COMMIT")
fi
if [ -n "${LLAMA_EXTRA_CMAKE_FLAGS:-}" ]; then
  # shellcheck disable=SC2206 # word splitting is the point
  flags+=($LLAMA_EXTRA_CMAKE_FLAGS)
fi

# ccache: __DATE__/__TIME__ must not defeat the cache (ggml sets this only at configure time).
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-time_macros}"

echo "build-llama-server: source  $src"
echo "build-llama-server: build   $build"
echo "build-llama-server: prefix  $prefix"
echo "build-llama-server: kind    $kind, targets ${TARGETS[*]}, jobs $jobs"
echo "build-llama-server: cmake flags: ${flags[*]}"
if command -v ccache >/dev/null; then ccache --zero-stats >/dev/null 2>&1 || true; fi

start=$(date +%s)
cmake -S "$src" -B "$build" "${flags[@]}"
cmake --build "$build" --config Release --parallel "$jobs" --target "${TARGETS[@]}"
elapsed=$(( $(date +%s) - start ))

# Install by hand: `cmake --install` would install every configured target, built or not.
bindir="$build/bin"
install -d "$prefix/bin" "$prefix/lib"
for target in "${TARGETS[@]}"; do
  install -m 0755 "$bindir/$target" "$prefix/bin/$target"
done
# The shared libraries the targets link against (libllama, libggml*, libmtmd, ...): with
# BUILD_SHARED_LIBS they all land in bin/ next to the executables; copy with their symlinks.
find "$bindir" -maxdepth 1 -name 'lib*.so*' -exec cp -a {} "$prefix/lib/" \;

# Fail here, not at container start, when a library is missing. libcuda.so.1 is the exception:
# it comes with the NVIDIA driver, which a build host (or a docker build) need not have.
missing=$(ldd "$prefix/bin/llama-server" | awk '/not found/ && $1 !~ /^libcuda\.so/ {print $1}')
if [ -n "$missing" ]; then
  echo "build-llama-server: unresolved libraries: $missing" >&2
  exit 1
fi

if command -v ccache >/dev/null; then ccache --show-stats 2>/dev/null | sed 's/^/build-llama-server: ccache: /' || true; fi
printf 'build-llama-server: built %s (%s) in %dm%02ds\n' \
  "${TARGETS[*]}" "$kind" $((elapsed / 60)) $((elapsed % 60))
