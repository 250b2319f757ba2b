#!/usr/bin/env bash
# Runs the benchmarks (as root): runtime (session start, Exec), toolset and network. Results go into BENCHMARKS.md by hand, with
# this command line.
#   usage: scripts/bench.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh >/dev/null
cargo build --release --locked -p paddock-tests --bin bench-runtime --bin bench-tools --bin bench-network
target/release/bench-runtime "$@"
echo
target/release/bench-tools "$@"
echo
target/release/bench-network "$@"
