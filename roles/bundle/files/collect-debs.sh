#!/usr/bin/env bash
# Collect .deb files into a flat apt repository (debs, Packages, Release), with apt itself.
# Runs inside a throwaway container of the image the packages are for: a host distribution
# (docker.io, the NVIDIA Container Toolkit) or a base image of the stack image's Dockerfile. That
# image's own apt sources, keyring and package state decide versions and dependencies, so the
# repository holds what `apt-get install` there would fetch, nothing resolved by hand.
#
# Usage: collect-debs.sh [-c] [-o PACKAGE]... [-s SOURCE_FILE] OUT PACKAGE...
#   -c  closure: every dependency, as if nothing were installed (a host's installed set is not
#       known when the bundle is made). Without -c: only what this image lacks, which is exactly
#       what the Dockerfile's apt step installs on it (nothing, when the image holds it all).
#   -o  a package to add only where this release has it (docker-cli, docker-buildx).
#   -s  an extra apt source (a .list or .sources file, e.g. NVIDIA's repository), copied into
#       /etc/apt/sources.list.d/; its key must sit where the file's signed-by says.
# Prints a line of JSON facts about the image the repository is for (read by the bundle role):
#   collect-debs: facts: {"architecture": "amd64", "python3": "3.11.2-1+b1", "libc6": "2.36-9+deb12u13", "debs": 42}
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

closure=0
optional=()
source_file=""
while getopts 'co:s:' opt; do
  case "$opt" in
    c) closure=1 ;;
    o) optional+=("$OPTARG") ;;
    s) source_file="$OPTARG" ;;
    *) echo "usage: $0 [-c] [-o PACKAGE]... [-s SOURCE_FILE] OUT PACKAGE..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "collect-debs: no output directory" >&2; exit 2; }
out="$1"
shift
packages=("$@")

if [ -n "$source_file" ]; then
  cp "$source_file" /etc/apt/sources.list.d/
fi
apt-get update -qq

for package in "${optional[@]}"; do
  if apt-cache show --no-all-versions "$package" >/dev/null 2>&1; then
    packages+=("$package")
  else
    echo "collect-debs: $package: not in this release, left out" >&2
  fi
done

apt_opts=()
if [ "$closure" = 1 ]; then
  # An empty dpkg status: apt resolves every dependency down to libc6.
  status=$(mktemp)
  apt_opts+=(-o "Dir::State::status=$status")
else
  # Only what the image lacks: apt-get install would download nothing else either.
  wanted=("${packages[@]}")
  packages=()
  for package in "${wanted[@]}"; do
    name="${package%%=*}"
    if dpkg-query -W -f='${db:Status-Abbrev}' "$name" 2>/dev/null | grep -q '^ii'; then
      echo "collect-debs: $name: already in the image" >&2
    else
      packages+=("$package")
    fi
  done
fi

# The repository is written anew: nothing of an earlier collection stays behind.
mkdir -p "$out"
find "$out" -mindepth 1 -delete
archives=$(mktemp -d)
mkdir -p "$archives/partial"
chmod 0755 "$archives"
if id _apt >/dev/null 2>&1; then chown _apt "$archives/partial"; fi
if [ "${#packages[@]}" -gt 0 ]; then
  apt-get "${apt_opts[@]}" -o "Dir::Cache::archives=$archives" -y -qq \
    --no-install-recommends --download-only install "${packages[@]}"
  find "$archives" -maxdepth 1 -name '*.deb' -exec mv -t "$out" {} +
fi

# The index: apt-ftparchive (apt-utils), installed into this throwaway container only now, after
# the download, so it does not change what was collected. Suite and Origin let the consumer
# select this repository (apt-get -t localai-bundle).
apt-get install -y -qq --no-install-recommends apt-utils >/dev/null
(
  cd "$out"
  apt-ftparchive packages . >Packages
  apt-ftparchive \
    -o APT::FTPArchive::Release::Origin=localai-llamacpp \
    -o APT::FTPArchive::Release::Label=localai-llamacpp-bundle \
    -o APT::FTPArchive::Release::Suite=localai-bundle \
    release . >Release
)

candidate() { apt-cache policy "$1" | awk '/Candidate:/ {print $2}'; }
printf 'collect-debs: facts: {"architecture": "%s", "python3": "%s", "libc6": "%s", "debs": %d}\n' \
  "$(dpkg --print-architecture)" "$(candidate python3)" "$(candidate libc6)" \
  "$(find "$out" -maxdepth 1 -name '*.deb' | wc -l)"
