#!/usr/bin/env bash
# Builds paddockd, paddock and the static paddock-guest (release).
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked -p paddockd -p paddock-cli
# The guest runs inside every sandbox, whatever libc the image has (or none):
# link it statically. Giving --target explicitly keeps the flag off build
# scripts and proc macros.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p paddock-guest --target "$host"
# Kept apart from target/release, where a plain `cargo build --workspace` puts a
# dynamically linked paddock-guest.
mkdir -p target/guest
cp "target/$host/release/paddock-guest" target/guest/paddock-guest.tmp
mv target/guest/paddock-guest.tmp target/guest/paddock-guest
echo "built: target/release/paddockd target/release/paddock target/guest/paddock-guest"
