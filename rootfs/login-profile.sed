# Applied to the base image's /etc/profile (rootfs/build-base.sh). Debian's
# asks `id -u` in a subshell to choose root's PATH: a fork and an exec at every
# login shell, and E2B's SDK starts every command as `/bin/bash -l -c CMD`.
# bash knows its uid ($EUID); other shells (dash has no EUID) still ask `id`.
s/^if \[ "\$(id -u)" -eq 0 \]; then$/if [ "${EUID:-$(id -u)}" -eq 0 ]; then/
