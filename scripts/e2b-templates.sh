#!/usr/bin/env bash
# Makes (or updates) and builds the environments the E2B-compatible API
# serves as E2B's templates: `base` (E2B's default template) and
# `code-interpreter-v1` (e2b-code-interpreter's default), both on the Debian
# base image, whose user `user` (home /home/user) has passwordless sudo
# (rootfs/build-base.sh): sudo works because the environments allow
# privilege escalation. E2B's sandboxes reach the internet by default, so
# these do too (`allow_internet_access=False` or `network.denyOut` at create
# narrow it per sandbox).
#
# They are shared (`--shared`, an admin's call: the unix socket's operator),
# so every tenant's API key can use them, and each keeps a warm pool
# (`--warm N`): sandboxes started ahead of demand, so that `Sandbox.create()`
# does not wait for one to boot.
#
# usage: scripts/e2b-templates.sh [--minimal] [--warm N] [paddock CLI flags, e.g. --addr unix:/path]
#   --minimal: code-interpreter-v1 without the extra data-science packages
#              (the base image's numpy and matplotlib only), for the tests.
#   --warm N:  warm sandboxes per template (default 2; 0: none).
set -euo pipefail
minimal=false
warm=2
while [ $# -gt 0 ]; do
    case "$1" in
        --minimal) minimal=true; shift ;;
        --warm) warm=$2; shift 2 ;;
        *) break ;;
    esac
done
paddock=(paddock "$@")
if [ -n "${PADDOCK_BIN:-}" ]; then paddock=("$PADDOCK_BIN" "$@"); fi

# The code interpreter's data-science stack, from Debian (numpy and matplotlib
# are in the base image already).
science=(python3-pandas python3-scipy python3-seaborn python3-sklearn python3-openpyxl python3-requests python3-sympy)
$minimal && science=()

make_env() {
    local name=$1
    shift
    local apt=()
    for p in "$@"; do apt+=(--apt "$p"); done
    if "${paddock[@]}" env show "$name" >/dev/null 2>&1; then
        "${paddock[@]}" env rm "$name" >/dev/null 2>&1 || {
            echo "e2b-templates: $name is in use; leaving it as it is (warm pool: $warm)" >&2
            "${paddock[@]}" env update "$name" --warm "$warm" --shared true >/dev/null
            return 0
        }
    fi
    "${paddock[@]}" env create "$name" --description "E2B template $name" --warm "$warm" --shared \
        --allow-privilege-escalation --network unrestricted "${apt[@]}" >/dev/null
    "${paddock[@]}" env build --plain "$name"
}

make_env base
make_env code-interpreter-v1 "${science[@]}"
