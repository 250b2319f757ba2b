#!/bin/sh
# The cost of a build container's network on a warm-cache-miss build of one
# small pip layer: each round starts a daemon on a fresh state dir (nothing
# cached), declares `--pip iniconfig==2.0.0` and times `paddock env build`.
# Rounds alternate between two builds of Paddock, so load on a shared machine
# falls on both alike.
#
# Usage (as root): scripts/bench-build-network.sh BEFORE_DIR AFTER_DIR [ROUNDS]
# where each DIR holds paddockd, paddock and paddock-guest.
set -eu
before=$1 after=$2 rounds=${3:-5}
registries=$(dirname "$0")/package-registries.sh
run() { # DIR LABEL ROUND
    st=/tmp/paddock-bench-build-$2-$3
    rm -rf "$st"; mkdir -p "$st"
    "$1/paddockd" --state-dir "$st" --listen "unix:$st/api.sock" \
        --image /var/lib/paddock/images/base/rootfs --guest-binary "$1/paddock-guest" \
        --cgroup-parent "paddock-bench-$2-$3" --sandbox-subnet "10.77.$3.0/24" \
        --warm-sandboxes 0 $("$registries") >"$st.log" 2>&1 &
    pid=$!
    while [ ! -S "$st/api.sock" ]; do sleep 0.1; done
    sleep 0.5
    "$1/paddock" --addr "unix:$st/api.sock" env create bench --pip iniconfig==2.0.0 >/dev/null
    t0=$(date +%s.%N)
    "$1/paddock" --addr "unix:$st/api.sock" env build bench >/dev/null
    t1=$(date +%s.%N)
    echo "$2 round $3: $(echo "$t1 - $t0" | bc) s"
    kill -TERM $pid
    wait $pid || true
    for m in $(grep " $st/" /proc/self/mountinfo | awk '{print $5}' | sort -r); do umount "$m"; done
    rm -rf "$st" "$st.log"
}
r=1
while [ $r -le "$rounds" ]; do
    run "$before" before $r
    run "$after" after $r
    r=$((r + 1))
done
