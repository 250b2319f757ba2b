#!/usr/bin/env bash
# Runs the benchmarks (as root): runtime (session start, Exec), disk limits'
# cost at session start, toolset, the Python client, network
# and environments (cold/warm builds against by hand, disk, env session start;
# takes minutes). Results go into BENCHMARKS.md by hand, with
# this command line.
#   usage: scripts/bench.sh [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh >/dev/null
cargo build --release --locked -p paddock-tests --bin bench-runtime --bin bench-disk --bin bench-tools --bin bench-network --bin bench-env --bin bench-runtool --bin bench-scale --bin bench-fleet --bin bench-snapshot --bin bench-lifecycle
target/release/bench-runtime "$@"
echo
target/release/bench-disk "$@"
echo
target/release/bench-tools "$@"
echo
target/release/bench-network "$@"
echo
# TCP against the unix socket (ExecStream, paddock exec), pause and resume.
target/release/bench-lifecycle "$@"
echo
# The Python client against the Rust client, and the worker factory's cost.
"$(scripts/python-client.sh)" clients/python/bench/bench_client.py
echo
target/release/bench-env
echo
# Snapshots, forks and garbage collection.
target/release/bench-snapshot "$@"
echo
# Many live sessions: Exec, Create, Delete, memory and scrape cost (minutes).
target/release/bench-scale 1 300 1000
echo
# The fleet router against a direct node.
target/release/bench-fleet
