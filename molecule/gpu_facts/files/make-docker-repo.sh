#!/bin/sh
# Make a signed stand-in of Docker's apt repository (download.docker.com/linux/debian) in DIR
# for RELEASE: packages named and versioned as Docker's (docker-ce 5:28.5.2, ...). docker-ce is
# Debian's docker.io repacked under Docker's name (Debian's conflicts with Docker's, so it
# cannot simply be depended on); the others are empty. Writes DIR/gpg (the armored public key,
# as Docker serves it) and DIR/fingerprint. Usage: make-docker-repo.sh DIR RELEASE
set -eu
dir=$1 release=$2
work=$(mktemp -d)
chmod 0755 "$work"  # apt-get download drops to the _apt user
export GNUPGHOME="$work/gnupg"
mkdir -m 0700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key 'localai-llamacpp test repository' ed25519 sign never
gpg --batch --armor --export >"$work/gpg"

pool="$dir/pool/stable"
mkdir -p "$pool" "$dir/dists/$release/stable/binary-amd64"
package() {  # name version depends
  mkdir -p "$work/$1/DEBIAN"
  cat >"$work/$1/DEBIAN/control" <<CONTROL
Package: $1
Version: $2
Architecture: amd64
Maintainer: localai-llamacpp tests <tests@localhost>
Depends: $3
Description: stand-in for Docker's $1 package (tests only)
CONTROL
  dpkg-deb --build --root-owner-group "$work/$1" "$pool/$1_$2_amd64.deb" >/dev/null
}
(cd "$work" && apt-get download -q docker.io >/dev/null && dpkg-deb -R docker.io_*.deb docker-ce)
sed -i -e 's/^Package: .*/Package: docker-ce/' \
  -e 's/^Version: .*/Version: 5:28.5.2-1~debian.12~bookworm/' \
  -e '/^Conflicts:/d' -e '/^Built-Using:/d' "$work/docker-ce/DEBIAN/control"
dpkg-deb --build --root-owner-group "$work/docker-ce" "$pool/docker-ce_28.5.2_amd64.deb" >/dev/null
package docker-ce-cli "5:28.5.2-1~debian.12~bookworm" docker-ce
package containerd.io "1.7.28-1~debian.12~bookworm" containerd
package docker-buildx-plugin "0.29.1-1~debian.12~bookworm" docker-ce

cd "$dir"
apt-ftparchive packages pool >"dists/$release/stable/binary-amd64/Packages"
apt-ftparchive -o APT::FTPArchive::Release::Suite="$release" \
  -o APT::FTPArchive::Release::Components=stable -o APT::FTPArchive::Release::Architectures=amd64 \
  release "dists/$release" >"dists/$release/Release"
gpg --batch --yes --clearsign -o "dists/$release/InRelease" "dists/$release/Release"
cp "$work/gpg" "$dir/gpg"
gpg --with-colons --list-keys | awk -F: '$1 == "fpr" {print $10; exit}' >"$dir/fingerprint"
rm -rf "$work"
