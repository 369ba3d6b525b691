#!/usr/bin/env bash
# Proves that the stack_image role's build script (roles/stack_image/files/build-llama-server.sh)
# compiles and links llama-server with a CUDA 12 toolkit for compute capability 6.1 (Tesla P40,
# Pascal) on a machine with no GPU and no Docker: nvcc needs no GPU, and CUDA 13 can no longer
# target sm_61, so a P40 host needs a CUDA 12 image.
#
# Where CUDA 12 comes from: NVIDIA's CUDA 12 wheels on PyPI (nvidia-cuda-nvcc-cu12, every
# version 12.0 to 12.9) ship ptxas, libnvvm and libdevice but no nvcc driver, cicc, cudafe++,
# fatbinary or nvlink, so they cannot compile a .cu file (a full nvcc wheel exists only from
# CUDA 13 on). This script takes Debian 13's packaging of CUDA 12.4.1 instead (non-free:
# nvidia-cuda-toolkit and the libraries it needs), fetched with apt into a private apt state
# (the host's apt configuration and dpkg database are left alone) and unpacked with dpkg -x,
# then laid out like NVIDIA's own toolkit (bin/, nvvm/, targets/x86_64-linux/{include,lib},
# include and lib64 links, an nvcc.profile relative to bin/) so CMake finds it like
# /usr/local/cuda. The debs are NVIDIA's prebuilt binaries, and run on Debian 12 too.
#
# Then it runs the project's build script, unchanged, for -a 61, and checks the result:
#   - cuobjdump --list-elf / --list-ptx on libggml-cuda.so: sm_61 code (and compute_61 PTX)
#   - ldd llama-server: everything resolves except libcuda.so.1 (the driver's library)
#   - llama-server --version, as is (no driver: it cannot start) and against the toolkit's
#     libcuda stub (starts, finds no CUDA device, prints its version)
#
# Usage: bench/build_cuda12_sm61.sh [-w WORK] [-s LLAMA_SRC] [-j JOBS]
#   -w  work directory: apt state, debs, toolkit, source, build, prefix
#                                (env WORK, default ./bench-work/p40-build)
#   -s  llama.cpp source tree    (env LLAMA_SRC, default: the llama.cpp that the
#       llama-cpp-python 0.3.36 sdist vendors, commit 0c1e570, fetched with pip into WORK)
#   -j  parallel compile jobs    (env JOBS, default 2)
# Env NICE (default 19): niceness of the compile. The toolkit takes about 1.3 GB of downloads
# and 3.2 GB unpacked; each step is skipped when its output is already there.
set -euo pipefail

work="${WORK:-bench-work/p40-build}"
src="${LLAMA_SRC:-}"
jobs="${JOBS:-2}"
niceness="${NICE:-19}"

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts 'w:s:j:h' opt; do
  case "$opt" in
    w) work="$OPTARG" ;;
    s) src="$OPTARG" ;;
    j) jobs="$OPTARG" ;;
    *) usage ;;
  esac
done

here="$(cd "$(dirname "$0")" && pwd)"
build_script="$here/../roles/stack_image/files/build-llama-server.sh"
[ -x "$build_script" ] || { echo "no build script at $build_script" >&2; exit 2; }

mkdir -p "$work"
work="$(cd "$work" && pwd)"
cuda="$work/cuda-12.4"          # the toolkit, laid out like /usr/local/cuda
build="$work/build"
prefix="$work/prefix"
log() { printf '== %s\n' "$*"; }

# Debian 13 (trixie) packages of CUDA 12.4.1, pinned. nvidia-cuda-dev holds the headers, the
# static runtime and the libcuda stub; the -dev packages of CCCL hold thrust, cub and libcu++.
readonly DEBS=(
  nvidia-cuda-toolkit=12.4.131~12.4.1-2
  nvidia-cuda-dev=12.4.127~12.4.1-2
  libcudart12=12.4.127~12.4.1-2
  libcublas12=12.4.5.8~12.4.1-2
  libcublaslt12=12.4.5.8~12.4.1-2
  libnvvm4=12.4.131~12.4.1-2
  libcu++-dev=2.3.2-2
  libcub-dev=2.3.2-2
  libthrust-dev=2.3.2-2
)

# --- 1. Fetch the debs with a private apt state ------------------------------------------------
apt_dir="$work/apt"
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
  -o "Dir::State::status=$apt_dir/status" -o Dir::Etc::Preferences=/dev/null
  -o Dir::Etc::PreferencesParts=/dev/null -o APT::Architecture=amd64
)
if [ ! -f "$work/debs/.done" ]; then
  log "fetching ${#DEBS[@]} Debian 13 packages of CUDA 12.4.1"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$work/debs"
  echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main contrib non-free' \
    > "$apt_dir/sources.list"
  : > "$apt_dir/status"
  apt-get "${apt_opts[@]}" -qq update
  (cd "$work/debs" && apt-get "${apt_opts[@]}" -q download "${DEBS[@]}")
  touch "$work/debs/.done"
fi
for deb in "$work"/debs/*.deb; do
  printf '%s %s  %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" \
    "$(sha256sum "$deb" | cut -c1-16)"
done

# --- 2. Unpack and lay out like NVIDIA's toolkit -----------------------------------------------
root="$work/debroot"
if [ ! -f "$root/.done" ]; then
  log "unpacking into $root"
  rm -rf "$root" && mkdir -p "$root"
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$root"; done
  touch "$root/.done"
fi
if [ ! -f "$cuda/.done" ]; then
  log "laying out $cuda"
  rm -rf "$cuda"
  tgt="$cuda/targets/x86_64-linux"
  mkdir -p "$cuda/bin" "$cuda/nvvm/bin" "$cuda/nvvm/lib64" "$tgt/lib/stubs"
  deb_lib="$root/usr/lib/x86_64-linux-gnu"
  deb_tk="$root/usr/lib/nvidia-cuda-toolkit"
  # Debian's /usr/bin/nvcc is a shell wrapper around the real binary, with a profile that
  # points at /usr; take the binary and give it NVIDIA's own relative profile.
  cp -a "$deb_tk/bin/nvcc" "$deb_tk/bin/crt" "$cuda/bin/"
  for tool in ptxas cudafe++ fatbinary nvlink bin2c cuobjdump nvdisasm nvprune cu++filt; do
    cp -a "$root/usr/bin/$tool" "$cuda/bin/"
  done
  cat > "$cuda/bin/nvcc.profile" <<'EOF'

TOP              = $(_HERE_)/..

NVVMIR_LIBRARY_DIR = $(TOP)/$(_NVVM_BRANCH_)/libdevice

LD_LIBRARY_PATH += $(TOP)/lib:
PATH            += $(TOP)/$(_NVVM_BRANCH_)/bin:$(_HERE_):

INCLUDES        +=  "-I$(TOP)/$(_TARGET_DIR_)/include" $(_SPACE_)

LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/$(_TARGET_DIR_)/lib$(_TARGET_SIZE_)/stubs" "-L$(TOP)/$(_TARGET_DIR_)/lib$(_TARGET_SIZE_)"

CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
EOF
  cp -a "$deb_tk/bin/cicc" "$cuda/nvvm/bin/"
  cp -a "$deb_tk/libdevice" "$cuda/nvvm/"
  cp -a "$deb_lib"/libnvvm.so* "$cuda/nvvm/lib64/"
  cp -a "$root/usr/include" "$tgt/include"
  for lib in cudart cublas cublasLt; do cp -a "$deb_lib/lib$lib.so"* "$tgt/lib/"; done
  cp -a "$deb_lib"/libcudart_static.a "$deb_lib"/libcudadevrt.a "$deb_lib"/libculibos.a "$tgt/lib/"
  cp -a "$deb_lib/stubs/libcuda.so" "$tgt/lib/stubs/"
  ln -s targets/x86_64-linux/include "$cuda/include"
  ln -s targets/x86_64-linux/lib "$cuda/lib64"
  touch "$cuda/.done"
fi
"$cuda/bin/nvcc" --version | tail -3

# --- 3. llama.cpp source -----------------------------------------------------------------------
if [ -z "$src" ]; then
  src="$work/src/llama_cpp_python-0.3.36/vendor/llama.cpp"
  if [ ! -f "$src/CMakeLists.txt" ]; then
    log "fetching the llama-cpp-python 0.3.36 sdist (vendors llama.cpp 0c1e570)"
    mkdir -p "$work/src"
    pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$work/src"
    tar -xzf "$work/src/llama_cpp_python-0.3.36.tar.gz" -C "$work/src"
  fi
  export LLAMA_BUILD_COMMIT="${LLAMA_BUILD_COMMIT:-0c1e570}"
fi

# --- 4. The project's build script, for sm_61 --------------------------------------------------
# CMake finds nvcc through CUDACXX and the toolkit through CUDAToolkit_ROOT (never the CUDA 13
# nvcc on PATH). LD_LIBRARY_PATH stands in for the devel image's ld.so.conf entry of the CUDA
# lib dir, which the build script's closing ldd check relies on for libcudart and libcublas.
export CUDACXX="$cuda/bin/nvcc" CUDAToolkit_ROOT="$cuda" PATH="$cuda/bin:$PATH"
export LD_LIBRARY_PATH="$cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "build-llama-server.sh -a 61 -j $jobs (nice $niceness), started $(date -u +%FT%TZ)"
start=$(date +%s)
nice -n "$niceness" "$build_script" -s "$src" -b "$build" -p "$prefix" -a 61 -j "$jobs"
wall=$(( $(date +%s) - start ))
log "wall time $((wall / 60))m$(printf '%02d' $((wall % 60)))s, finished $(date -u +%FT%TZ)"

# --- 5. Checks ---------------------------------------------------------------------------------
lib="$(readlink -f "$prefix/lib/libggml-cuda.so")"
log "libggml-cuda.so: $(stat -c %s "$lib") bytes ($(du -h "$lib" | cut -f1)), $(basename "$lib")"
log "cuobjdump --list-elf"
elfs="$("$cuda/bin/cuobjdump" --list-elf "$lib")"
printf '%s\n' "$elfs" | sed -n '1,5p'
echo "... $(printf '%s\n' "$elfs" | grep -c 'sm_61') ELF entries for sm_61," \
  "$(printf '%s\n' "$elfs" | grep -vc 'sm_61') for any other architecture"
printf '%s\n' "$elfs" | grep -q 'sm_61' || { echo "no sm_61 code in $lib" >&2; exit 1; }
if printf '%s\n' "$elfs" | grep -v 'sm_61' | grep -q .; then
  echo "code for other architectures in $lib" >&2; exit 1
fi
log "cuobjdump --list-ptx"
"$cuda/bin/cuobjdump" --list-ptx "$lib" | awk '{print $NF}' | sed 's/.*\.\(sm_[0-9]*\)\.ptx$/\1/' \
  | sort | uniq -c

log "ldd llama-server (not found)"
# The toolkit's lib dir stays on LD_LIBRARY_PATH: the runtime image has libcudart/libcublas in
# the loader's path the same way.
ldd "$prefix/bin/llama-server" | grep 'not found' || true
unresolved=$(ldd "$prefix/bin/llama-server" | awk '/not found/ && $1 != "libcuda.so.1" {print $1}')
[ -z "$unresolved" ] || { echo "unresolved: $unresolved" >&2; exit 1; }
ldd "$prefix/bin/llama-server" | grep -E 'libggml-cuda|libcudart|libcublas'

log "llama-server --version (no driver library)"
"$prefix/bin/llama-server" --version 2>&1 | head -5 || true
log "llama-server --version (the toolkit's libcuda stub as libcuda.so.1)"
stub="$work/libcuda-stub"
mkdir -p "$stub" && ln -sf "$cuda/lib64/stubs/libcuda.so" "$stub/libcuda.so.1"
LD_LIBRARY_PATH="$stub:$LD_LIBRARY_PATH" "$prefix/bin/llama-server" --version 2>&1 | head -8 || true
log "done"
