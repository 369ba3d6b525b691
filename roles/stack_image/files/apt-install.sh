#!/usr/bin/env bash
# Install Debian/Ubuntu packages in a Dockerfile step: only those the base image lacks, so a base
# image that already holds them makes the step do nothing (and need no network at all).
#
# Usage: apt-install.sh [-r REPOSITORY_TAR] PACKAGE...
#   -r  a tar of a flat apt repository (Packages, Release, *.deb), as an air-gapped bundle carries
#       them: apt then reads that repository only, never the image's own sources, so the step
#       works in a build with --network none. The repository is trusted as a local file: its
#       integrity was checked against the bundle's manifest (sha256) before it reached the build.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

repository=""
while getopts 'r:' opt; do
  case "$opt" in
    r) repository="$OPTARG" ;;
    *) echo "usage: $0 [-r REPOSITORY_TAR] PACKAGE..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

missing=()
for package in "$@"; do
  if ! dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null | grep -q '^ii'; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "apt-install: the base image holds $*: nothing to install"
  exit 0
fi

apt_opts=()
if [ -n "$repository" ]; then
  local_repo=$(mktemp -d /tmp/localai-apt.XXXXXX)
  chmod 0755 "$local_repo"  # apt fetches as the unprivileged _apt user
  tar -xf "$repository" -C "$local_repo"
  echo "deb [trusted=yes] file:$local_repo ./" >"$local_repo.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$local_repo.list" -o "Dir::Etc::sourceparts=-"
    -o "APT::Get::List-Cleanup=0")
  echo "apt-install: ${missing[*]} from the repository $repository only"
fi
apt-get "${apt_opts[@]}" update
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
rm -rf /var/lib/apt/lists/*
if [ -n "$repository" ]; then
  rm -rf "$local_repo" "$local_repo.list"
fi
