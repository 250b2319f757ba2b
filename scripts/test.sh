#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end suite (real daemons, real
# containers; needs root), then the Python client's tests (pytest, against a
# paddockd of their own). Builds first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "the tests make containers, cgroups and mounts: run them as root" >&2
    exit 1
fi
scripts/build.sh
# Two test threads: the suite's timing checks assume a mostly idle 2-core host.
# --no-fail-fast: one failing test binary does not hide the others' results.
cargo test --release --locked --workspace --no-fail-fast -- --test-threads=2 "$@"

# The Python client and paddock.anthropic (clients/python/tests).
python=$(scripts/python-client.sh)
# From the repository root, so clients/python's source tree (which has no
# generated stubs) does not shadow the installed package.
"$python" -m pytest -q -p no:cacheprovider clients/python/tests
