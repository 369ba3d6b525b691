#!/usr/bin/env bash
# Build, once, the local base images the tests need (no registry is reachable on test machines):
#   localai-llamacpp-test/systemd:bookworm  molecule's target: systemd as PID 1, python3, apt
#   localai-llamacpp-test/systemd:trixie    the same on Debian 13 (the debian13 scenario)
#   localai-llamacpp-test/debian:bookworm   the stack image's base on CPU hosts in tests
# Both carry this machine's extra CA certificates, so HTTPS through a TLS-inspecting proxy works
# inside them. An image is rebuilt only when this script or the certificates change (label).
# The Debian base is also saved to .cache/images/ for loading into the nested engine.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_DIR=/usr/local/share/ca-certificates
mkdir -p .cache/images

fingerprint() {
  { cat "$0"; cat "$CA_DIR"/*.crt 2>/dev/null || true; echo "$1"; } | sha256sum | cut -c1-16
}

build() {
  local name="$1" include="$2" suite="${1##*:}" fp rootfs
  fp=$(fingerprint "$name:$include")
  if [ "$(docker image inspect -f '{{ index .Config.Labels "fingerprint" }}' "$name" 2>/dev/null)" = "$fp" ]; then
    echo "base-images: $name is up to date ($fp)"
    return
  fi
  command -v debootstrap >/dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap >/dev/null; }
  rootfs=$(mktemp -d /var/tmp/rootfs.XXXXXX)
  echo "base-images: debootstrap $name"
  # minbase and no Recommends, like a minimal server install: what a package only recommends
  # (Debian 13's docker.io: the CLI and buildx) is not there unless a role installs it.
  debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$MIRROR" >/dev/null
  cp "$CA_DIR"/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$rootfs" update-ca-certificates >/dev/null
  # Keep images small and apt quiet: no recommends, no docs.
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/90localai-no-recommends"
  # Keep the package lists: apt modules with cache_valid_time trust a fresh lists directory.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import \
    --change "LABEL fingerprint=$fp" \
    --change 'ENV LANG=C.UTF-8' \
    - "$name" >/dev/null
  rm -rf "$rootfs"
  echo "base-images: built $name"
}

build localai-llamacpp-test/systemd:bookworm \
  systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,curl,gnupg
build localai-llamacpp-test/systemd:trixie \
  systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,curl,gnupg
build localai-llamacpp-test/debian:bookworm ca-certificates

# The nested engine inside the molecule target loads the Debian base from this archive through
# the role's "local base image archive" option, exactly as an air-gapped host would.
archive=.cache/images/debian-bookworm.tar
want=$(docker image inspect -f '{{ .Id }}' localai-llamacpp-test/debian:bookworm)
if [ ! -f "$archive" ] || [ "$(cat "$archive.id" 2>/dev/null)" != "$want" ]; then
  docker save localai-llamacpp-test/debian:bookworm -o "$archive"
  echo "$want" >"$archive.id"
fi
