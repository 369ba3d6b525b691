#!/usr/bin/env bash
# The GPU path end to end, on a GPU host with no network and no systemd: start Docker from
# the packages gpu_e2e_pack.sh packed, build the project's image with the stack_image role (GPU branch, the
# architecture from nvidia-smi through the nvidia_toolkit role), start the container with the
# `docker run` line of the rendered unit, and drive port 28000 with the OpenAI SDK and the load
# generator, beside the same llama-server run natively.
#
#   bash bench/gpu_e2e_pack.sh                    # on a connected machine: bench-inputs/e2e/part-N
#   bash bench/gpu_e2e.sh PHASE [PHASE]...        # on the GPU host, with the parts in INPUTS
#
# Phases (each idempotent; state in E2E_DIR, results in RESULTS_DIR):
#   stash    collect the packed parts ($INPUTS/part-*), reassemble and sha256-check the files
#   docker   Docker 26 from docker.tar.xz, with CDI on and a CDI spec of this machine's GPUs
#   ansible  ansible-core and community.docker for bench/gpu_e2e.yml
#   facts    bench/gpu_e2e.yml to the GPU facts: the base image names the build needs
#   bases    stand-in base images under those names (below)
#   models   synthetic models of the default models' shapes, under their file names
#   build    bench/gpu_e2e.yml: the image build (in the background; `build` again waits)
#   serve    the unit's ExecStart, run as systemd would (in the background), until ready
#   check    bench/gpu_e2e_checks.py through port 28000 (the openai SDK of the image's venv),
#            the Prometheus paths too (their scrapes saved as RESULTS_DIR/metrics-*.prom)
#   bench    chat at BENCH_LEVELS through port 28000 (the balancer's per-engine counts after it
#            in balancer-after-proxy.prom), to the chat alias's balancer frontend (HAProxy
#            alone), to the container's chat engines directly (clients
#            spread evenly, then one engine alone), and to the image's llama-server run
#            natively with the same arguments; GPU memory
#   queue    chat at BENCH_LEVELS through port 28000 with each engine capped at its slots in the
#            balancer (the rest queued there), then the rendered haproxy.cfg again
#   status   what is there
#
# What stands in for a real host, and why:
#   - Base images: nvidia/cuda cannot be pulled here, so the base image names the role asks for
#     are given to an image of this machine's own root file system (Ubuntu 24.04 with NVIDIA's
#     CUDA toolkit, the nvidia/cuda images' OS; /opt, the driver folder and CUDA's forward
#     compatibility libraries left out) with the nvidia/cuda images' environment (PATH,
#     LD_LIBRARY_PATH to /usr/local/nvidia, NVIDIA_VISIBLE_DEVICES); cmake comes from the
#     machine's Python package. The build's apt steps read a stand-in repository (Debian 13's
#     tini and ccache, and empty packages for tools the file system holds outside dpkg) with the
#     role's own apt-install.sh: the bundle path of an air-gapped site.
#   - GPU access: the NVIDIA Container Toolkit is not installed here, so the CDI spec that
#     `nvidia-ctk cdi generate` writes is written by this script: the GPUs' device nodes, the
#     control nodes, and the driver folder mounted at /usr/local/nvidia. The unit's own
#     `--device nvidia.com/gpu=N` flags then run as written.
#   - Docker: Debian 13's packages unpacked (dockerd 26.1, containerd 1.7, runc 1.1), started
#     by hand with --iptables=false; without a bridge (some VMs have none) the container gets
#     --network host instead of --publish, said in the output.
#   - Models: synthetic files of the default models' shapes (bench/make_synthetic_gguf.py).
#
# Env (relative paths are taken from the current directory): INPUTS [./bench-inputs/e2e] (the
# parts), RESULTS_DIR [./bench-results/e2e], E2E_DIR [./bench-work/e2e] (state), TIME_LIMIT [off:
# seconds one invocation may take; steps that would not finish within it are skipped, and a
# build still running then goes on in the background], BENCH_LEVELS [32:64,64:128]
# (clients:requests), BENCH_MAX_TOKENS [256], BENCH_NATIVE [1: also the native run], JOBS.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INPUTS="$(realpath -m -- "${INPUTS:-bench-inputs/e2e}")"
E2E="$(realpath -m -- "${E2E_DIR:-bench-work/e2e}")"
export E2E_DIR="$E2E"
RESULTS="$(realpath -m -- "${RESULTS_DIR:-bench-results/e2e}")"
TIME_LIMIT="${TIME_LIMIT:-}"
BENCH_LEVELS="${BENCH_LEVELS:-32:64,64:128}"
BENCH_MAX_TOKENS="${BENCH_MAX_TOKENS:-256}"
STASH="$E2E/stash"
DROOT="$E2E/docker-root"
PY="${PYTHON:-python3}"
NATIVE_PORT=8190
# Logs of processes that outlive one invocation (dockerd, the build, the container) stay in
# LOGS and are copied to RESULTS_DIR at the end of every invocation.
LOGS="$E2E/logs"
mkdir -p "$E2E" "$STASH" "$RESULTS" "$LOGS"

log() { printf '[%4ds] %s\n' "$SECONDS" "$*" | tee -a "$RESULTS/gpu_e2e.log" >&2; }
left() { echo $((TIME_LIMIT - SECONDS)); }
# time_beyond N: true without TIME_LIMIT, or while more than N seconds of it are left.
time_beyond() { [ -z "$TIME_LIMIT" ] || [ "$(left)" -gt "$1" ]; }
need() {
  [ -z "$TIME_LIMIT" ] || [ "$(left)" -ge "$1" ] ||
    { log "time limit: skipping $2 (needs ${1}s, $(left)s left)"; return 1; }
}
json() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }

export PATH="$DROOT/usr/bin:$DROOT/usr/sbin:$PATH"
export DOCKER_HOST=unix:///run/docker.sock
# The CLI finds plugins in fixed folders; the unpacked buildx is given to it in one of them.
link_buildx() {
  [ -x "$DROOT/usr/libexec/docker/cli-plugins/docker-buildx" ] || return 0
  mkdir -p /usr/local/lib/docker/cli-plugins
  ln -sf "$DROOT/usr/libexec/docker/cli-plugins/docker-buildx" /usr/local/lib/docker/cli-plugins/
}
link_buildx

# ---------------------------------------------------------------------------------------------
phase_stash() {
  local part manifest
  for part in "$INPUTS"/part-*; do
    [ -d "$part" ] || continue
    mkdir -p "$E2E/pieces"
    tar -C "$part" --exclude=./MANIFEST.json -cf - . | tar -C "$E2E/pieces" -xf -
    manifest="$part/MANIFEST.json"
    cp "$manifest" "$E2E/MANIFEST.json"
    log "stash: took $(basename "$part")"
  done
  [ -f "$E2E/MANIFEST.json" ] || { log "stash: no part in $INPUTS and none taken before"; return 1; }
  "$PY" - "$E2E/MANIFEST.json" "$E2E/pieces" "$STASH" <<'EOF'
import hashlib, json, os, sys
manifest, pieces, stash = sys.argv[1:]
files = json.load(open(manifest))["files"]
for rel, meta in files.items():
    dest = os.path.join(stash, rel)
    if os.path.exists(dest):
        continue
    have = [p for p in meta["pieces"] if os.path.exists(os.path.join(pieces, p))]
    if len(have) < len(meta["pieces"]):
        print(f"stash: {rel}: {len(have)} of {len(meta['pieces'])} pieces so far", file=sys.stderr)
        continue
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    digest = hashlib.sha256()
    with open(dest + ".part", "wb") as out:
        for p in meta["pieces"]:
            data = open(os.path.join(pieces, p), "rb").read()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != meta["sha256"]:
        os.remove(dest + ".part")
        sys.exit(f"stash: {rel}: sha256 {digest.hexdigest()} is not the manifest's {meta['sha256']}")
    os.rename(dest + ".part", dest)
    for p in meta["pieces"]:
        os.remove(os.path.join(pieces, p))
    print(f"stash: {rel} complete, sha256 checked ({meta['size']} bytes)", file=sys.stderr)
EOF
}

# ---------------------------------------------------------------------------------------------
write_cdi_spec() {
  # What `nvidia-ctk cdi generate` describes, for this machine: one device per GPU, the
  # control nodes for all, the driver's libraries and tools mounted where the nvidia/cuda images
  # look for them (LD_LIBRARY_PATH and PATH name /usr/local/nvidia).
  local spec=/etc/cdi/nvidia.yaml n
  mkdir -p /etc/cdi
  {
    echo 'cdiVersion: "0.6.0"'
    echo 'kind: nvidia.com/gpu'
    echo 'devices:'
    for n in $(nvidia-smi --query-gpu=index --format=csv,noheader); do
      printf '  - name: "%s"\n    containerEdits:\n      deviceNodes:\n        - path: /dev/nvidia%s\n' "$n" "$n"
    done
    echo '  - name: all'
    echo '    containerEdits:'
    echo '      deviceNodes:'
    for n in $(nvidia-smi --query-gpu=index --format=csv,noheader); do echo "        - path: /dev/nvidia$n"; done
    echo 'containerEdits:'
    echo '  deviceNodes:'
    for n in /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-uvm-tools; do [ -e "$n" ] && echo "    - path: $n"; done
    echo '  mounts:'
    echo '    - hostPath: /usr/local/nvidia'
    echo '      containerPath: /usr/local/nvidia'
    echo '      options: [ro, nosuid, nodev, bind]'
  } >"$spec"
  log "docker: CDI spec $spec (stand-in for nvidia-ctk cdi generate): $(grep -c 'name:' "$spec") devices"
}

docker_up() { docker info >/dev/null 2>&1; }

phase_docker() {
  if docker_up; then log "docker: running ($(docker version --format '{{.Server.Version}}'))"; return 0; fi
  [ -f "$STASH/docker.tar.xz" ] || { log "docker: docker.tar.xz not stashed yet"; return 1; }
  if [ ! -x "$DROOT/usr/sbin/dockerd" ]; then
    mkdir -p "$DROOT" && tar -C "$DROOT" -xJf "$STASH/docker.tar.xz"
    link_buildx
  fi
  write_cdi_spec
  mkdir -p /etc/docker
  printf '{"features": {"cdi": true}, "cdi-spec-dirs": ["/etc/cdi"], "storage-driver": "overlay2"}\n' \
    >/etc/docker/daemon.json
  export LD_LIBRARY_PATH="$DROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  mkdir -p /run/containerd
  setsid nohup containerd >"$LOGS/containerd.log" 2>&1 &
  for _ in $(seq 30); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.5; done
  local mode
  for mode in bridge none; do
    local extra=()
    [ "$mode" = none ] && extra=(--bridge=none)
    setsid nohup dockerd --containerd=/run/containerd/containerd.sock --iptables=false --ip-masq=false \
      --ip6tables=false "${extra[@]}" >"$LOGS/dockerd.log" 2>&1 &
    echo $! >"$E2E/dockerd.pid"
    for _ in $(seq 40); do docker_up && break; sleep 0.5; done
    if docker_up; then echo "$mode" >"$E2E/network.txt"; break; fi
    log "docker: dockerd with network '$mode' did not start: $(tail -3 "$LOGS/dockerd.log" | tr '\n' ' ')"
    kill "$(cat "$E2E/dockerd.pid")" 2>/dev/null || true
    sleep 2
  done
  docker_up || return 1
  log "docker: $(docker version --format 'server {{.Server.Version}}, client {{.Client.Version}}'),"\
" network: $(cat "$E2E/network.txt"), $(docker info --format '{{.Driver}} on cgroup v{{.CgroupVersion}}')"
}

# ---------------------------------------------------------------------------------------------
phase_ansible() {
  if [ -x "$E2E/ansible/bin/ansible-playbook" ]; then return 0; fi
  [ -f "$STASH/ansible.tar.xz" ] || { log "ansible: ansible.tar.xz not stashed yet"; return 1; }
  mkdir -p "$E2E/ansible-src" && tar -C "$E2E/ansible-src" -xJf "$STASH/ansible.tar.xz"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$E2E/ansible/site" \
    "$E2E"/ansible-src/wheels/*.whl
  mkdir -p "$E2E/ansible/bin"
  printf '#!/bin/sh\nPYTHONPATH=%s exec %s -m ansible.cli.playbook "$@"\n' "$E2E/ansible/site" \
    "$(command -v "$PY")" >"$E2E/ansible/bin/ansible-playbook"
  chmod 0755 "$E2E/ansible/bin/ansible-playbook"
  log "ansible: $("$E2E/ansible/bin/ansible-playbook" --version | head -1)"
}

# A host without iproute2 has no `ss`: stack_service's preflight asks `ss` for the listening sockets
# (port 28000 must be free or ours); the stand-in answers with the sockets of /proc/net/tcp*
# in LISTEN state, in `ss -H -ltn` columns (no process names: those are only read for the
# message of a port held by someone else).
standin_ss() {
  mkdir -p "$E2E/standin-bin"
  cat >"$E2E/standin-bin/ss" <<'EOF'
#!/bin/sh
# Stand-in for `ss -H -ltnp` (bench/gpu_e2e.sh): listening TCP sockets from /proc/net/tcp{,6}.
exec python3 -c '
import socket, struct
for name in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(name).read().splitlines()[1:]:
        f = line.split()
        if f[3] != "0A":
            continue
        addr, port = f[1].split(":")
        raw = bytes.fromhex(addr)
        if len(raw) == 4:
            host = socket.inet_ntop(socket.AF_INET, raw[::-1])
        else:
            host = "[" + socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))) + "]"
        print(f"LISTEN 0 4096 {host}:{int(port, 16)} *:*")
'
EOF
  chmod 0755 "$E2E/standin-bin/ss"
}

playbook() {
  command -v ss >/dev/null || [ -x "$E2E/standin-bin/ss" ] || standin_ss
  (cd "$REPO" && PATH="$PATH:$E2E/standin-bin" ANSIBLE_COLLECTIONS_PATH="$REPO/collections:$E2E/ansible-src/collections" ANSIBLE_FORCE_COLOR=0 \
    "$E2E/ansible/bin/ansible-playbook" -i localhost, bench/gpu_e2e.yml "$@")
}

phase_facts() {
  if [ -s "$E2E/facts.json" ]; then return 0; fi
  phase_ansible
  playbook -e e2e_stage=facts >"$RESULTS/facts.log" 2>&1 ||
    { tail -30 "$RESULTS/facts.log" >&2; return 1; }
  log "facts: $(json "$E2E/facts.json" '[g["name"] for g in d["gpus"]], d["cuda_architectures"], d["cuda_image_version"], d["base_build"], d["base_runtime"]')"
}

# ---------------------------------------------------------------------------------------------
phase_bases() {
  local build runtime raw=localai-e2e/rootfs:latest
  build=$(json "$E2E/facts.json" 'd["base_build"]')
  runtime=$(json "$E2E/facts.json" 'd["base_runtime"]')
  if docker image inspect "$build" >/dev/null 2>&1 && docker image inspect "$runtime" >/dev/null 2>&1; then
    log "bases: $build and $runtime are there"; return 0
  fi
  need 200 "the stand-in base images" || return 1
  if ! docker image inspect "$raw" >/dev/null 2>&1; then
    local cuda compat
    cuda=$(readlink -f /usr/local/cuda)
    compat="${cuda#/}/compat"
    log "bases: importing this machine's root file system (without /opt, /usr/local/nvidia, $compat)"
    # Nor this run's own folders: the state, the inputs, the results and the repository.
    local own=() d
    for d in "$E2E" "$INPUTS" "$RESULTS" "$REPO"; do own+=(--exclude="./${d#/}"); done
    tar -C / --numeric-owner --one-file-system --exclude=./proc --exclude=./sys --exclude=./dev "${own[@]}" \
      --exclude=./tmp --exclude=./run --exclude=./opt --exclude=./usr/local/nvidia \
      --exclude="./$compat" --exclude=./var/lib/docker --exclude=./var/lib/containerd \
      --exclude=./root --exclude=./home --exclude=./var/cache --exclude=./var/log \
      --exclude=./etc/cdi --exclude=./etc/docker -cf - . 2>"$RESULTS/rootfs-tar.log" |
      docker import \
        --change 'ENV PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64' \
        --change 'ENV NVIDIA_VISIBLE_DEVICES=all' \
        --change 'ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility' \
        --change 'ENV LIBRARY_PATH=/usr/local/cuda/lib64/stubs' \
        - "$raw" >/dev/null
  fi
  # /tmp with its sticky mode, /run (left out above; package scripts such as adduser lock files in
  # it), and cmake where the nvidia/cuda devel image's apt would put one:
  # this machine has it only as a Python package (under /opt, left out above).
  local ctx="$E2E/standin-ctx" cmake_data
  rm -rf "$ctx" && mkdir -p "$ctx/cmake"
  cmake_data=$("$PY" -c 'import cmake, os; print(os.path.join(os.path.dirname(cmake.__file__), "data"))' 2>/dev/null || true)
  if [ -d "$cmake_data/bin" ]; then cp -a "$cmake_data/." "$ctx/cmake/"; fi
  printf 'FROM %s\nRUN mkdir -p -m 1777 /tmp && mkdir -p -m 0755 /run/lock && mkdir -p /var/cache/apt/archives/partial /var/cache/debconf /var/log/apt\nCOPY cmake/ /usr/local/\nRUN grep PRETTY_NAME /etc/os-release && nvcc --version | tail -1 && (cmake --version | head -1)\n' \
    "$raw" >"$ctx/Dockerfile"
  DOCKER_BUILDKIT=1 docker build --network none -q -t "$build" "$ctx" >/dev/null
  [ "$runtime" = "$build" ] || docker tag "$build" "$runtime"
  log "bases: $build, $runtime = this machine's root file system ($(docker image inspect -f '{{.Size}}' "$build" |
    awk '{printf "%.1f GB", $1/1e9}'))"
  # The stand-in apt repository and the wheels, where bench/gpu_e2e.yml hands them to the role.
  cp "$STASH/apt-standin.tar" "$E2E/apt-standin.tar"
}

# ---------------------------------------------------------------------------------------------
phase_models() {
  local models chat embed src="$E2E/src"
  models=$(json "$E2E/facts.json" 'd["models_dir"]')
  chat=$(json "$E2E/facts.json" '[e["model_path"] for e in d["engines"] if e["kind"] == "chat"][0]')
  embed=$(json "$E2E/facts.json" '[e["model_path"] for e in d["engines"] if e["kind"] == "embedding"][0]')
  mkdir -p "$models"
  if [ ! -f "$src/llama.cpp/CMakeLists.txt" ]; then
    mkdir -p "$src" && tar -C "$src" -xzf "$STASH/llama.cpp.tar.gz"
  fi
  local spec shape file
  for spec in "llama3-8b:$chat" "e5-small:$embed"; do
    shape="${spec%%:*}" file="$models/$(basename "${spec#*:}")"
    [ -s "$file" ] && continue
    "$PY" "$REPO/bench/make_synthetic_gguf.py" --shape "$shape" --out "$file.part" \
      --gguf-py "$src/llama.cpp/gguf-py" --vocab-dir "$src/llama.cpp/models" >>"$RESULTS/models.log" 2>&1
    mv "$file.part" "$file"
  done
  chmod 0644 "$models"/*
  log "models: $(cd "$models" && du -h ./* | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------------------------
phase_build() {
  if [ -s "$E2E/image.txt" ] && docker image inspect "$(cat "$E2E/image.txt")" >/dev/null 2>&1; then
    log "build: $(cat "$E2E/image.txt") is built"; return 0
  fi
  if [ ! -f "$E2E/build.pid" ] || ! kill -0 "$(cat "$E2E/build.pid")" 2>/dev/null; then
    [ -f "$STASH/wheels.tar" ] || { log "build: wheels.tar not stashed yet"; return 1; }
    cp "$STASH/wheels.tar" "$E2E/wheels.tar"
    # The wheel list a bundle's manifest gives the role: [{name, sha256}] (its preflight checks
    # every pin of the requirements file against it).
    "$PY" - "$E2E/wheels.tar" >"$E2E/wheels.json" <<'EOF'
import hashlib, json, os, sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    files = [{"name": os.path.basename(m.name), "sha256": hashlib.sha256(tar.extractfile(m).read()).hexdigest()}
             for m in tar.getmembers() if m.isfile()]
print(json.dumps(files))
EOF
    rm -f "$E2E/build.rc"
    date +%s >"$E2E/build.start"
    # In its own process group (setsid), so that it outlives this invocation.
    export -f playbook standin_ss
    export REPO E2E
    setsid bash -c \
      'playbook -e e2e_stage=build >"$E2E/logs/build.log" 2>&1; echo $? >"$E2E/build.rc"' &
    echo $! >"$E2E/build.pid"
    log "build: started bench/gpu_e2e.yml (log: build.log)"
  fi
  while [ ! -f "$E2E/build.rc" ] && time_beyond 20; do sleep 5; done
  if [ ! -f "$E2E/build.rc" ]; then
    log "build: still running after $(($(date +%s) - $(cat "$E2E/build.start"))) s: $(grep -E '^#[0-9]+ ' "$LOGS/build.log" | tail -1)"
    return 0
  fi
  local rc wall
  rc=$(cat "$E2E/build.rc") wall=$(($(stat -c %Y "$E2E/build.rc") - $(cat "$E2E/build.start")))
  grep -E 'build-llama-server: (cmake flags|built|ccache)|apt-install:|Successfully|naming to|^#[0-9]+ DONE' \
    "$LOGS/build.log" | tail -25 >"$RESULTS/build-summary.log" || true
  log "build: rc $rc after ${wall}s, image $(cat "$E2E/image.txt" 2>/dev/null || echo none)"
  [ "$rc" = 0 ] || { tail -40 "$LOGS/build.log" >&2; return 1; }
  printf '{"wall_s": %s, "image": "%s", "size_bytes": %s}\n' "$wall" "$(cat "$E2E/image.txt")" \
    "$(docker image inspect -f '{{.Size}}' "$(cat "$E2E/image.txt")")" >"$RESULTS/build.json"
}

# ---------------------------------------------------------------------------------------------
# The unit's ExecStart as argv, with the network stand-in applied when there is no bridge.
unit_argv() {
  "$PY" - "$E2E/localai-llamacpp.service" "$(cat "$E2E/network.txt")" <<'EOF'
import shlex, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
line = next(l for l in text.splitlines() if l.startswith("ExecStart="))
argv = shlex.split(line[len("ExecStart="):])
if sys.argv[2] == "none":
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--publish":
            skip = True
            continue
        out.append(a)
    out.insert(out.index("run") + 1, "--network=host")
    argv = out
print("\0".join(["docker"] + argv[1:]), end="")
EOF
}

proxy_url() { echo "http://127.0.0.1:$(json "$E2E/facts.json" 'd["port"]')"; }
# The key litellm_config generated on the host (no litellm_config_master_key given), read where
# the README tells an operator to read it.
api_key() { tr -d '\n' <"$(json "$E2E/facts.json" 'd["key_file"]')"; }

phase_serve() {
  local image name=localai-llamacpp
  image=$(cat "$E2E/image.txt")
  if ! docker ps --format '{{.Names}}' | grep -qx "$name"; then
    docker rm -f "$name" >/dev/null 2>&1 || true
    local -a argv
    mapfile -d '' argv < <(unit_argv)
    printf '%q ' "${argv[@]}" >"$RESULTS/docker-run.txt"
    log "serve: $(cat "$RESULTS/docker-run.txt")"
    date +%s >"$E2E/serve.start"
    setsid nohup "${argv[@]}" >"$LOGS/container.log" 2>&1 &
  fi
  local url key code
  url=$(proxy_url) key=$(api_key)
  while time_beyond 20; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" \
      -H 'Content-Type: application/json' "$url/v1/chat/completions" \
      -d '{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}],"max_tokens":4}' || true)
    [ "$code" = 200 ] && break
    docker ps --format '{{.Names}}' | grep -qx "$name" || { log "serve: the container exited"; tail -30 "$LOGS/container.log" >&2; return 1; }
    sleep 3
  done
  [ "$code" = 200 ] || { log "serve: not ready in time (last HTTP $code)"; return 1; }
  log "serve: ready after $(($(date +%s) - $(cat "$E2E/serve.start"))) s; $(docker exec "$name" supervisorctl status | tr -s ' ' | tr '\n' ';')"
  docker exec "$name" sh -c 'grep -h -m3 -E "CUDA0|offloaded|compute capability" /logs/llamacpp-chat*.log' >"$RESULTS/engine-gpu.log" 2>&1 || true
  log "serve: $(head -3 "$RESULTS/engine-gpu.log" | tr '\n' ' ')"
}

phase_check() {
  local image
  image=$(cat "$E2E/image.txt")
  docker run --rm --network host --read-only --tmpfs /tmp -v "$REPO/bench:/bench:ro" \
    -v "$REPO/observability:/observability:ro" -v "$RESULTS:/out" --user "$(id -u)" \
    --entrypoint /opt/localai/venv/bin/python "$image" /bench/gpu_e2e_checks.py \
    --url "$(proxy_url)/v1" --key "$(api_key)" \
    --dashboard /observability/grafana-dashboard.json --save-dir /out \
    --engines "$(json "$E2E/facts.json" '",".join(e["program"] for e in d["engines"])')" \
    >"$RESULTS/checks.json" 2>"$RESULTS/checks.log" ||
    { log "check: FAILED"; cat "$RESULTS/checks.log" >&2; return 1; }
  log "check: $(json "$RESULTS/checks.json" 'str(len(d["passed"])) + " passed: " + ", ".join(d["passed"])')"
}

gpu_memory() {
  nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader | tr '\n' ';'
}

loadgen_levels() {
  local url="$1" label="$2"; shift 2
  local level clients requests
  for level in ${BENCH_LEVELS//,/ }; do
    clients="${level%%:*}" requests="${level#*:}"
    need 60 "$label at $clients clients" || return 0
    "$@" --url "$url" --concurrency "$clients" --requests "$requests" --max-tokens "$BENCH_MAX_TOKENS" \
      --label "$label" --out "$RESULTS/chat.jsonl" >>"$RESULTS/loadgen.log" 2>&1
    log "bench: $label, $clients clients: $(tail -1 "$RESULTS/chat.jsonl" | "$PY" -c 'import json,sys; r=json.loads(sys.stdin.read()); print({k: r.get(k) for k in ("aggregate_tok_s","ttft_ms_p50","errors","requests")})')"
  done
}

phase_bench() {
  local image key name=localai-llamacpp
  image=$(cat "$E2E/image.txt") key=$(api_key)
  log "bench: GPU memory, stack serving: $(gpu_memory)"
  echo "{\"stack_serving\": \"$(gpu_memory)\"}" >"$RESULTS/gpu-memory.json"
  # Through the published port, as clients see it.
  loadgen_levels "$(proxy_url)" "container, via proxy :28000" \
    "$PY" "$REPO/bench/loadgen.py" --model gpt-3.5-turbo --api-key "$key"
  # Requests the balancer sent to each engine in that run (haproxy_server_sessions_total).
  curl -sf -H "Authorization: Bearer $key" "$(proxy_url)/balancer/metrics" \
    >"$RESULTS/balancer-after-proxy.prom" || log "bench: no /balancer/metrics"
  # The container's chat engines directly (its loopback), from a container in its network: with
  # several engines (one per GPU) the clients spread evenly over them, then one engine alone
  # (one GPU's figure at the same loads).
  local engine_urls first
  engine_urls=$(json "$E2E/facts.json" '",".join("http://127.0.0.1:%d" % e["port"] for e in d["engines"] if e["kind"] == "chat")')
  first="${engine_urls%%,*}"
  local -a direct=(docker run --rm --network "container:$name" -v "$REPO/bench:/bench:ro" --user 0:0
    -v "$RESULTS:$RESULTS" --entrypoint /opt/localai/venv/bin/python "$image" /bench/loadgen.py --model chat)
  # The chat alias's balancer frontend (HAProxy, the hop between LiteLLM and the engines).
  local balancer_url
  balancer_url=$(json "$E2E/facts.json" '"".join("http://127.0.0.1:%d" % f["port"] for f in d["balancer_frontends"] if f["kind"] == "chat")')
  loadgen_levels "$balancer_url" "container, balancer frontend direct" "${direct[@]}"
  if [ "$engine_urls" != "$first" ]; then
    loadgen_levels "$engine_urls" "container, chat engines direct, clients spread evenly" "${direct[@]}"
    loadgen_levels "$first" "container, one chat engine direct" "${direct[@]}"
  else
    loadgen_levels "$first" "container, chat engine direct" "${direct[@]}"
  fi
  # The image's own llama-server, run natively with the plan's arguments (the container stopped
  # first, so the GPU is the native run's alone). BENCH_NATIVE=0 leaves it out.
  [ "${BENCH_NATIVE:-1}" = 1 ] || return 0
  need 120 "the native run" || return 0
  docker stop --time 30 "$name" >/dev/null
  rm -rf "$E2E/native" && mkdir -p "$E2E/native"
  local cid
  cid=$(docker create "$image")
  docker cp "$cid:/opt/localai/bin" "$E2E/native/" && docker cp "$cid:/opt/localai/lib" "$E2E/native/"
  docker rm "$cid" >/dev/null
  local -a args
  mapfile -d '' args < <("$PY" - "$E2E/facts.json" "$NATIVE_PORT" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
engine = next(e for e in d["engines"] if e["kind"] == "chat")
args = [a.replace("/models/", d["models_dir"].rstrip("/") + "/") for a in engine["args"]]
i = args.index("--port")
args[i + 1] = sys.argv[2]
print("\0".join(args), end="")
EOF
  )
  LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/nvidia/lib64" CUDA_VISIBLE_DEVICES=0 \
    nohup "$E2E/native/bin/llama-server" "${args[@]}" >"$LOGS/native-chat.log" 2>&1 &
  local pid=$!
  for _ in $(seq 120); do curl -sf "http://127.0.0.1:$NATIVE_PORT/health" >/dev/null && break; sleep 1; done
  log "bench: GPU memory, native chat engine: $(gpu_memory)"
  loadgen_levels "http://127.0.0.1:$NATIVE_PORT" "native llama-server, direct" \
    "$PY" "$REPO/bench/loadgen.py" --model chat
  kill "$pid" 2>/dev/null || true
}

# The balancer with each engine capped at its slots (maxconn = the engine's parallel, what
# stack_service_balancer_queue_at_balancer renders): the overflow waits in HAProxy for the first
# free slot instead of in one engine. Through port 28000 at BENCH_LEVELS, then the file as it was.
phase_queue() {
  local key cfg name=localai-llamacpp
  key=$(api_key)
  cfg="$(dirname "$(json "$E2E/facts.json" 'd["key_file"]')")/haproxy.cfg"
  cp "$cfg" "$E2E/haproxy.cfg.rendered"
  "$PY" - "$cfg" "$E2E/facts.json" <<'EOF'
import json, re, sys
cfg, facts = sys.argv[1], json.load(open(sys.argv[2]))
slots = {s["name"]: s["parallel"] for f in facts["balancer_frontends"] for s in f["servers"]}
def cap(m):
    return m.group(0) + (f" maxconn {slots[m.group(1)]}" if slots.get(m.group(1)) else "")
text = re.sub(r"^    server (\S+) \S+$", cap, open(cfg).read(), flags=re.M)
open(cfg, "w").write(text)
EOF
  log "queue: $(grep -c '^    server .* maxconn ' "$cfg") engines capped at their slots"
  docker exec "$name" supervisorctl signal USR2 balancer >/dev/null && sleep 3
  loadgen_levels "$(proxy_url)" "container, via proxy :28000, queue at the balancer" \
    "$PY" "$REPO/bench/loadgen.py" --model gpt-3.5-turbo --api-key "$key"
  cp "$E2E/haproxy.cfg.rendered" "$cfg"
  docker exec "$name" supervisorctl signal USR2 balancer >/dev/null
}

phase_status() {
  log "status: stash $(ls "$STASH" 2>/dev/null | tr '\n' ' '); docker $(docker_up && echo up || echo down);"\
" image $(cat "$E2E/image.txt" 2>/dev/null || echo none); disk $(df -h "$E2E" | awk 'NR==2 {print $4 " free"}')"
}

cleanup() {
  for f in "$E2E"/facts.json "$E2E"/localai-llamacpp.service "$LOGS"/*; do [ -f "$f" ] && cp -f "$f" "$RESULTS/"; done
  true
}
trap cleanup EXIT

for phase in "$@"; do
  case " stash docker ansible facts bases models build serve check bench queue status " in
    *" $phase "*) "phase_$phase" ;;
    *) echo "unknown phase: $phase" >&2; exit 2 ;;
  esac
done
