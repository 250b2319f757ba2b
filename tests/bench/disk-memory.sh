#!/bin/bash
# Host memory per idle session disk (BENCHMARKS.md, "Disk limits"). As root, in a
# scratch directory: unshare -m --propagation private tests/bench/disk-memory.sh 200
set -e
truncate -s 40G img && mkfs.btrfs -q -f img >/dev/null 2>&1 && mkdir -p mnt && mount -o loop,nosuid,nodev img mnt && btrfs quota enable mnt
truncate -s 10G mnt/tpl.img; mkfs.ext4 -q -F -b 4096 -I 256 -m 0 -O ^has_journal -N 655360 -E lazy_itable_init=1,nodiscard mnt/tpl.img
python3 "$(dirname "$0")/disk-memory.py" "$@"
umount mnt; rm -f img
