#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine (the test host), installing and starting one
# when none runs. Under systemd it uses the unit; elsewhere (CI sandboxes whose PID 1 is not
# systemd) it starts dockerd in the background with its log in .cache/dockerd.log.
set -euo pipefail
cd "$(dirname "$0")/.."

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "ensure-docker: installing docker.io from the distribution"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io debootstrap >/dev/null
fi

if [ "$(ps -o comm= -p 1)" = "systemd" ]; then
  systemctl start docker
else
  mkdir -p .cache
  echo "ensure-docker: starting dockerd in the background (log: .cache/dockerd.log)"
  setsid nohup dockerd >.cache/dockerd.log 2>&1 </dev/null &
fi

for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "ensure-docker: the Docker engine did not answer within 60 s; see .cache/dockerd.log" >&2
exit 1
