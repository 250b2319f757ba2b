#!/usr/bin/env bash
# Starts, stops or restarts the installed paddockd in the background (for hosts
# without an init system that manages it). Sandboxes keep running across a
# restart; the new daemon adopts them.
#   usage: scripts/paddockd-service.sh start|stop|restart|status
set -euo pipefail
pidfile=/run/paddockd.pid
log=/var/log/paddockd.log

# The log is rotated at each start once it passes 64 MiB (one old copy,
# paddockd.log.1): paddockd writes to stderr and leaves rotation to the
# service manager, which this script is on hosts without one.
rotate() {
    if [ -f "$log" ] && [ "$(stat -c %s "$log")" -gt $((64 << 20)) ]; then mv -f "$log" "$log.1"; fi
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

stop() {
    if running; then
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

start() {
    if running; then echo "paddockd is already running (pid $(cat "$pidfile"))"; return; fi
    rotate
    setsid /usr/local/bin/paddockd "$@" </dev/null >>"$log" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 200); do
        if /usr/local/bin/paddock session ls >/dev/null 2>&1; then
            echo "paddockd is running (pid $(cat "$pidfile")) on unix:/var/lib/paddock/paddockd.sock; log: $log"
            echo "try: paddock session create"
            return
        fi
        if ! running; then break; fi
        sleep 0.05
    done
    echo "paddockd did not come up; the end of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    restart) shift; stop; start "$@" ;;
    status) if running; then echo "running (pid $(cat "$pidfile"))"; else echo "stopped"; exit 3; fi ;;
    *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
