#!/usr/bin/env bash
# Pack what bench/gpu_e2e.sh needs on a GPU host that has no network, in parts of a set size
# (for transfers that limit one file or one folder).
#
# Run on a connected machine (Debian, with pip and apt), from the repository root:
#
#   bash bench/gpu_e2e_pack.sh [DEST]           # default DEST: bench-inputs/e2e (gpu_e2e.sh's INPUTS)
#
# What it packs (each file split into pieces of at most PART_MB, the pieces grouped in order
# into folders part-1, part-2, ... of at most PART_MB each, with a MANIFEST of every file's
# sha256 in each folder; gpu_e2e.sh's `stash` phase collects the parts and checks them):
#   docker.tar.xz     Debian 13's Docker 26 (dockerd, containerd, runc, the CLI and its buildx
#                     plugin) and the shared libraries dockerd and runc link: a Docker engine
#                     with CDI devices for a machine that has none (the apt repository of a real
#                     bundle cannot be installed there: it is not a Debian system of a release
#                     the bundle knows)
#   wheels.tar        the wheels of roles/stack_image/files/requirements-stack.txt for the
#                     GPU image's runtime base (Ubuntu 24.04: CPython 3.12, glibc 2.39), with
#                     the bundle role's pip download arguments (--require-hashes, binaries only)
#   ansible.tar.xz    ansible-core, resolvelib and the Docker SDK (wheels) and the
#                     community.docker collection, to run bench/gpu_e2e.yml there
#   llama.cpp.tar.gz  the llama.cpp source at the pinned commit (the test fixtures' archive,
#                     without docs and other models' vocabularies): the build's source and the
#                     synthetic models' gguf-py and vocabularies
#   apt-standin.tar   a flat apt repository for the stand-in base images (gpu_e2e.sh, `bases`)
#
# Env: PART_MB [56], SRC_ARCHIVE [.cache/fixtures/llama.cpp-src.tar.gz], PYTHON_VERSION
# [3.12], GLIBC_MINOR [39], VENV [.venv] (its ansible_collections give community.docker).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$(realpath -m -- "${1:-bench-inputs/e2e}")"
PART_MB="${PART_MB:-56}"
SRC_ARCHIVE="${SRC_ARCHIVE:-$REPO/.cache/fixtures/llama.cpp-src.tar.gz}"
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
GLIBC_MINOR="${GLIBC_MINOR:-39}"
VENV="${VENV:-$REPO/.venv}"
WORK="$DEST/.work"
# Debian 13 (trixie) packages: Docker 26 has CDI devices (25+); its binaries need glibc 2.38 at
# most, so they run on Ubuntu 24.04 (2.39).
DOCKER_DEBS=(docker.io containerd runc docker-cli docker-buildx)
DOCKER_LIBS=(libsystemd0 libcap2 libgcrypt20 liblzma5 libzstd1 liblz4-1 libgpg-error0 libseccomp2)
# The stand-in base's apt repository (see gpu_e2e.sh, `bases`): real Debian 13 packages for what
# a base may lack and can take from Debian (their binaries need glibc 2.38 at most), and empty
# stand-in packages for tools the machine's own root file system holds outside dpkg (each one
# checks for its tool when installed). apt-install.sh installs from it only what the base lacks.
EXTRA_DEBS=(tini ccache libfmt10 libhiredis1.1.0 libxxhash0 libgomp1 ca-certificates)
# The balancer: Debian 12's HAProxy 2.6 (the CPU image's), whose libssl3 (>= 3.0.0) Ubuntu
# 24.04's libssl3t64 provides (Debian 13's 3.0 wants libssl3t64 >= 3.2, newer than Ubuntu's),
# with the libraries Ubuntu 24.04 may lack.
BOOKWORM_DEBS=(haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1 lsb-base)
STANDIN_TOOLS=("cmake:command -v cmake" "git:command -v git"
  "build-essential:command -v gcc && command -v g++ && command -v make"
  "python3:command -v python3" "python3-venv:python3 -c 'import ensurepip, venv'")
ANSIBLE_PINS=(ansible-core==2.19.14 resolvelib==1.2.1 docker==7.1.0)

log() { printf 'gpu_e2e_pack: %s\n' "$*" >&2; }

mkdir -p "$WORK/files" "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/debs"
[ -f "$SRC_ARCHIVE" ] || { log "no llama.cpp source archive at $SRC_ARCHIVE (make fixtures)"; exit 1; }
[ -d "$VENV/lib" ] || { log "no $VENV: run make deps first"; exit 1; }

# --- Debian 13 packages, with apt against trixie's signed index ------------------------------
printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian %s main\n' \
  trixie bookworm >"$WORK/apt/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$WORK/apt/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache" -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" update -qq
(cd "$WORK/debs" && apt-get "${apt_opts[@]}" download "${DOCKER_DEBS[@]/%//trixie}" \
  "${DOCKER_LIBS[@]/%//trixie}" "${EXTRA_DEBS[@]/%//trixie}" "${BOOKWORM_DEBS[@]/%//bookworm}")

if [ ! -f "$WORK/files/docker.tar.xz" ]; then
  root="$WORK/docker-root"
  rm -rf "$root" && mkdir -p "$root"
  for pkg in "${DOCKER_DEBS[@]}" "${DOCKER_LIBS[@]}"; do dpkg -x "$WORK"/debs/"${pkg}"_*.deb "$root"; done
  log "packing docker.tar.xz"
  tar -C "$root" -cf - usr/bin/docker usr/bin/containerd usr/bin/containerd-shim-runc-v2 \
    usr/sbin/dockerd usr/sbin/docker-proxy usr/sbin/runc usr/libexec/docker/cli-plugins/docker-buildx \
    usr/lib/x86_64-linux-gnu | xz -T0 -6 >"$WORK/files/docker.tar.xz.part"
  mv "$WORK/files/docker.tar.xz.part" "$WORK/files/docker.tar.xz"
fi
repo="$WORK/apt-standin"
rm -rf "$repo" && mkdir -p "$repo"
for pkg in "${EXTRA_DEBS[@]}" "${BOOKWORM_DEBS[@]}"; do cp "$WORK"/debs/"${pkg}"_*.deb "$repo/"; done
for entry in "${STANDIN_TOOLS[@]}"; do
  name="${entry%%:*}" check="${entry#*:}" pkg="$WORK/standin-${entry%%:*}"
  rm -rf "$pkg" && mkdir -p "$pkg/DEBIAN"
  printf '%s\n' "Package: $name" "Version: 0~localai-standin" "Architecture: all" \
    "Maintainer: localai-llamacpp" "Description: stand-in: $name is in the base image outside dpkg" \
    " For a stand-in base image made from a machine's root file system (bench/gpu_e2e.sh)." \
    >"$pkg/DEBIAN/control"
  printf '#!/bin/sh\nset -e\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH\n%s >/dev/null || { echo "stand-in %s: not in the base image" >&2; exit 1; }\n' \
    "$check" "$name" >"$pkg/DEBIAN/postinst"
  chmod 0755 "$pkg/DEBIAN/postinst"
  dpkg-deb --root-owner-group -Zxz --build "$pkg" "$repo/${name}_0~localai-standin_all.deb" >/dev/null
done
command -v apt-ftparchive >/dev/null || apt-get install -y -qq apt-utils
(cd "$repo" && apt-ftparchive packages . >Packages && apt-ftparchive release . >Release)
tar -C "$repo" -cf "$WORK/files/apt-standin.tar" .

# --- the image's wheels for the runtime base ---------------------------------------------------
platforms=()
for minor in $(seq "$GLIBC_MINOR" -1 17); do platforms+=("--platform=manylinux_2_${minor}_x86_64"); done
platforms+=(--platform=manylinux2014_x86_64 --platform=manylinux1_x86_64 --platform=linux_x86_64)
abi="cp${PYTHON_VERSION/./}"
mkdir -p "$WORK/wheels"
python3 -m pip download -q --disable-pip-version-check --no-deps --require-hashes --only-binary :all: \
  --implementation cp --python-version "$PYTHON_VERSION" --abi "$abi" --abi abi3 --abi none \
  "${platforms[@]}" --dest "$WORK/wheels" -r "$REPO/roles/stack_image/files/requirements-stack.txt"
tar -C "$WORK/wheels" -cf "$WORK/files/wheels.tar" .

# --- Ansible for the playbook on the GPU host ------------------------------------------------
mkdir -p "$WORK/ansible/wheels" "$WORK/ansible/collections/ansible_collections/community"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: \
  --python-version "$PYTHON_VERSION" --dest "$WORK/ansible/wheels" "${ANSIBLE_PINS[@]}"
collections=$(find "$VENV/lib" -maxdepth 4 -type d -name ansible_collections | head -1)
rm -rf "$WORK/ansible/collections/ansible_collections/community/docker"
cp -a "$collections/community/docker" "$WORK/ansible/collections/ansible_collections/community/"
tar -C "$WORK/ansible" -cJf "$WORK/files/ansible.tar.xz" wheels collections

# The source without what neither the build nor the synthetic models read (other models'
# vocabularies, docs): a third of the size.
if [ ! -f "$WORK/files/llama.cpp.tar.gz" ]; then
  rm -rf "$WORK/src" && mkdir -p "$WORK/src" && tar -C "$WORK/src" -xzf "$SRC_ARCHIVE"
  top=$(ls "$WORK/src")
  find "$WORK/src/$top/models" -name '*.gguf' ! -name ggml-vocab-llama-bpe.gguf \
    ! -name ggml-vocab-nomic-bert-moe.gguf -delete
  rm -rf "$WORK/src/$top/docs"
  tar -C "$WORK/src" -czf "$WORK/files/llama.cpp.tar.gz" "$top"
fi

# --- split into parts ------------------------------------------------------------------------------
python3 - "$WORK/files" "$DEST" "$PART_MB" <<'EOF'
"""Split every file into pieces of at most PART_MB MiB and group them into part-N folders."""
import hashlib, json, os, shutil, sys
src, out, part_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
limit = part_mb << 20
files = []
for root, _, names in os.walk(src):
    for name in sorted(names):
        files.append(os.path.relpath(os.path.join(root, name), src))
# Docker first (the engine starts while later parts travel), then the rest by name.
files.sort(key=lambda p: (not p.startswith("docker"), p))
for old in [d for d in os.listdir(out) if d.startswith("part-")]:
    shutil.rmtree(os.path.join(out, old))
manifest, parts, used = {}, [[]], 0
for rel in files:
    path = os.path.join(src, rel)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    size = os.path.getsize(path)
    pieces = []
    with open(path, "rb") as f:
        index = 0
        while True:
            room = limit - used
            if room < (1 << 20):
                parts.append([]); used = 0; room = limit
            data = f.read(room)
            if not data:
                break
            piece = f"{rel}.{index:02d}"
            parts[-1].append((piece, data)); used += len(data); pieces.append(piece); index += 1
    manifest[rel] = {"sha256": digest, "size": size, "pieces": pieces}
for number, content in enumerate(parts, 1):
    folder = os.path.join(out, f"part-{number}")
    for piece, data in content:
        os.makedirs(os.path.dirname(os.path.join(folder, piece)), exist_ok=True)
        open(os.path.join(folder, piece), "wb").write(data)
    json.dump({"parts": len(parts), "files": manifest}, open(os.path.join(folder, "MANIFEST.json"), "w"), indent=1)
    print(f"part-{number}: {sum(len(d) for _, d in content) / 1e6:.1f} MB, {[p for p, _ in content]}")
EOF
