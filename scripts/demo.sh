#!/usr/bin/env bash
# `make demo` / `make demo-down`: try the stack on this machine without a systemd host. `up`
# provisions a systemd container (molecule scenario `demo`) with the real site.yml and the test
# fixtures' small models, publishes its port 28000 on 127.0.0.1:28000, and prints the key the
# role generated and the README's curl lines (the block between the `demo-curl` markers) with
# that key filled in. `down` removes the container and the demo's volume.
#
# Environment:
#   LOCALAI_DEMO_VARS           a vars file given to site.yml as extra vars (other models, e.g.
#                               localai_models with url and sha256); relative to the repository
#   LOCALAI_DEMO_DOCKER_VOLUME  the named volume for the container's /var/lib/docker (default
#                               localai-demo-docker, where the first run compiles llama.cpp); a
#                               volume lent this way is kept by `down`
set -euo pipefail
cd "$(dirname "$0")/.."

CONTAINER=localai-demo
OWN_VOLUME=localai-demo-docker
export LOCALAI_DEMO_DOCKER_VOLUME=${LOCALAI_DEMO_DOCKER_VOLUME:-$OWN_VOLUME}
VOLUME=$LOCALAI_DEMO_DOCKER_VOLUME
PORT=28000
KEY_FILE=/etc/localai-llamacpp/master.key
MOLECULE=(env "PATH=$PWD/.venv/bin:$PATH" .venv/bin/molecule)

# The README's curl block, between its markers, without them.
readme_block() {
  sed -n '/<!-- demo-curl:start -->/,/<!-- demo-curl:end -->/p' README.md | sed '1d;$d' \
    | sed '/^```/d'
}

# Refuse a volume that another container's engine uses: two Docker engines on one
# /var/lib/docker corrupt it.
check_volume_free() {
  local users
  users=$(docker ps -a --filter "volume=$VOLUME" --format '{{.Names}}' | grep -vx "$CONTAINER" || true)
  if [ -n "$users" ]; then
    echo "demo: the volume $VOLUME is in use by: $users. Stop that container first, or set" \
      "LOCALAI_DEMO_DOCKER_VOLUME to another volume." >&2
    exit 1
  fi
}

# Refuse a port 28000 that something other than the demo already holds on the loopback.
check_port_free() {
  if ! docker container inspect "$CONTAINER" >/dev/null 2>&1 \
    && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "demo: 127.0.0.1:$PORT is already in use; stop what listens there (ss -ltnp)." >&2
    exit 1
  fi
}

up() {
  local extra=() key
  if [ -n "${LOCALAI_DEMO_VARS:-}" ]; then
    [ -f "$LOCALAI_DEMO_VARS" ] || { echo "demo: LOCALAI_DEMO_VARS: no file $LOCALAI_DEMO_VARS" >&2; exit 1; }
    extra=(-e "@$(realpath "$LOCALAI_DEMO_VARS")")
  fi
  check_volume_free
  check_port_free
  # A container removed by hand leaves molecule believing it exists: let molecule forget it
  # (destroy acts on this scenario's container only; `molecule reset` would stop every
  # molecule container on this engine).
  if ! docker container inspect "$CONTAINER" >/dev/null 2>&1; then
    "${MOLECULE[@]}" destroy -s demo >/dev/null
  fi
  echo "demo: provisioning the container $CONTAINER with site.yml (nested /var/lib/docker: volume $VOLUME;" \
    "a new volume without a saved image compiles llama.cpp first, about 13 minutes on 2 cores)"
  "${MOLECULE[@]}" converge -s demo -- "${extra[@]}"
  key=$(docker exec "$CONTAINER" cat "$KEY_FILE")
  cat <<EOF

localai-llamacpp answers on http://127.0.0.1:$PORT/v1 (gpt-3.5-turbo: chat, text-embedding-ada-002:
embeddings). The API key, generated for this container (again: docker exec $CONTAINER cat $KEY_FILE):

  $key

Try it (the README's lines, key filled in):

EOF
  readme_block | sed "s|^export KEY=\\.\\.\\..*|export KEY=$key|"
  cat <<EOF

Logs: docker exec $CONTAINER tail /var/log/localai-llamacpp/litellm.log
Remove it: make demo-down
EOF
}

down() {
  "${MOLECULE[@]}" destroy -s demo
  if docker container inspect "$CONTAINER" >/dev/null 2>&1; then
    docker rm -f "$CONTAINER" >/dev/null
  fi
  if [ "$VOLUME" = "$OWN_VOLUME" ]; then
    docker volume rm -f "$VOLUME" >/dev/null
    echo "demo: removed the container $CONTAINER and the volume $VOLUME"
  else
    echo "demo: removed the container $CONTAINER; kept the lent volume $VOLUME"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
