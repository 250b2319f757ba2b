#!/usr/bin/env bash
# Builds the Debian bookworm base image (a root filesystem directory) that
# sessions start from, with mmdebstrap. Cached: an image built from the same
# recipe is reused. The host's apt sources are the mirrors and the host's CA
# bundle and resolver go into the image, so sessions reach what the host reaches.
#
# usage: rootfs/build-base.sh [OUT_DIR]   (default /var/lib/paddock/images/base)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/var/lib/paddock/images/base}
packages_file="$here/debian-base.packages"
profile_sed="$here/login-profile.sed"

recipe_hash=$( (cat "$0" "$packages_file" "$profile_sed") | sha256sum | cut -c1-16)
version="$out/$recipe_hash"
if [ -d "$version/rootfs/usr/bin" ] && [ "$(readlink "$out/rootfs")" = "$recipe_hash/rootfs" ]; then
    echo "base image: up to date at $out/rootfs"
    exit 0
fi

# User `user` (uid 1000, home /home/user) with passwordless sudo is what E2B's
# templates have (the E2B-compatible API runs commands as it); sudo works only
# in environments that allow privilege escalation (no_new_privs is set otherwise).

# The host's own apt sources: whatever mirrors this machine is set up to use.
sources=()
[ -s /etc/apt/sources.list ] && sources+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -s "$f" ] && sources+=("$f")
done
if [ ${#sources[@]} -eq 0 ]; then
    echo "build-base: the host has no apt sources configured (/etc/apt/sources.list{,.d})" >&2
    exit 1
fi

include=$(grep -v '^\s*#' "$packages_file" | grep -v '^\s*$' | paste -sd, -)
mkdir -p "$out"
if [ ! -d "$version/rootfs/usr/bin" ]; then
    tmp=$(mktemp -d "$out/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "base image: building with mmdebstrap (bookworm minbase + $(echo "$include" | tr ',' ' '))"
    # No Recommends: the image holds what the recipe lists and what that needs.
    # The login profile is made cheaper for `bash -l` (rootfs/login-profile.sed).
    mmdebstrap --variant=minbase --include="$include" --aptopt='APT::Install-Recommends "false"' \
        --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"' \
        --customize-hook='cp -L /etc/resolv.conf "$1/etc/resolv.conf" || true' \
        --customize-hook='mkdir -p "$1/workspace"' \
        --customize-hook='chroot "$1" useradd --create-home --uid 1000 --shell /bin/bash user' \
        --customize-hook='echo "user ALL=(ALL:ALL) NOPASSWD: ALL" > "$1/etc/sudoers.d/user" && chmod 0440 "$1/etc/sudoers.d/user"' \
        --customize-hook="sed -i -f '$profile_sed' \"\$1/etc/profile\" && grep -q EUID \"\$1/etc/profile\"" \
        --customize-hook='rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*' \
        bookworm "$tmp/rootfs" "${sources[@]}"
    rm -rf "$version"
    mv "$tmp" "$version"
fi

# Each recipe version has its own directory and `rootfs` is a symlink switched
# atomically: sessions running on an older version keep it as their overlay's
# lower layer, so old versions are never deleted here.
ln -sfn "$recipe_hash/rootfs" "$out/rootfs.new"
mv -T "$out/rootfs.new" "$out/rootfs"
echo "base image: $out/rootfs -> $recipe_hash/rootfs ($(du -sh "$version/rootfs" | cut -f1))"
