#!/usr/bin/env bash
# A real Kubernetes 1.20 control plane on 127.0.0.1, from Debian's archive only:
# etcd from the `etcd-server` package, kube-apiserver, kube-scheduler and
# kube-controller-manager built from the `kubernetes` *source* package with
# Debian's Go, kubectl from `kubernetes-client`. Used by the opt-in fleet test
# (tests/tests/kube.rs) and by anyone trying deploy/kubernetes/ without a cluster.
#
#   scripts/kube-control-plane.sh build    # once: ~15-20 min on 2 cores, then cached
#   scripts/kube-control-plane.sh start    # etcd + apiserver (+ scheduler, controller-manager)
#   scripts/kube-control-plane.sh stop
#   scripts/kube-control-plane.sh status
#
# Environment:
#   PADDOCK_KUBE_CACHE  cache root (default /var/cache/paddock); binaries go to
#                       $PADDOCK_KUBE_CACHE/kube-<source version>/bin, and
#                       kube-current links to the newest build
#   PADDOCK_KUBE_RUN    run directory of a started plane (default /tmp/paddock-kube):
#                       kubeconfig, admin.token, ca.crt, server, logs, pids
#   PADDOCK_KUBE_PORT   apiserver port (default 16443); etcd uses PORT+1/PORT+2,
#                       scheduler and controller-manager PORT+3/PORT+4
#
# Nothing here touches the system's APT sources: the deb-src entries live in a
# private APT directory under the cache, made from the host's own configured
# mirrors. Only golang-go is installed system-wide; etcd, kubectl and the
# reflect2 sources are unpacked from their .debs into the cache.
set -euo pipefail

CACHE=${PADDOCK_KUBE_CACHE:-/var/cache/paddock}
RUN=${PADDOCK_KUBE_RUN:-/tmp/paddock-kube}
PORT=${PADDOCK_KUBE_PORT:-16443}
BINS="kube-apiserver kube-scheduler kube-controller-manager etcd etcdctl kubectl"

die() { echo "kube-control-plane: $*" >&2; exit 1; }
say() { echo "== $*" >&2; }

# --- build -----------------------------------------------------------------

# A private APT configuration whose sources are the host's own entries with
# Types deb-src instead of deb, so `apt-get source` works without editing
# /etc/apt. Prints the apt options to use.
private_apt() {
    local dir=$CACHE/apt
    mkdir -p "$dir/sources.list.d" "$dir/lists/partial" "$dir/archives/partial"
    : >"$dir/sources.list"
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        # deb822: every stanza that lists `deb` also gets `deb-src`.
        sed -E 's/^Types:.*\bdeb\b.*/Types: deb-src/' "$f" >"$dir/sources.list.d/$(basename "$f")"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -e "$f" ] || continue
        sed -nE 's/^deb[[:space:]]/deb-src /p' "$f" >>"$dir/sources.list"
    done
    printf '%s\n' \
        "-o" "Dir::Etc::SourceList=$dir/sources.list" \
        "-o" "Dir::Etc::SourceParts=$dir/sources.list.d" \
        "-o" "Dir::State::Lists=$dir/lists" \
        "-o" "Dir::Cache::Archives=$dir/archives" \
        "-o" "Dir::Cache::pkgcache=" "-o" "Dir::Cache::srcpkgcache="
}

cached() { # cached DIR: every binary is there
    local b
    for b in $BINS; do [ -x "$1/bin/$b" ] || return 1; done
}

build() {
    [ "$(id -u)" = 0 ] || die "build installs golang-go and writes $CACHE: run it as root"
    local t0=$SECONDS
    mapfile -t APTO < <(private_apt)
    say "Source index (private APT config under $CACHE/apt)"
    apt-get "${APTO[@]}" -qq update
    local version
    version=$(apt-cache "${APTO[@]}" showsrc kubernetes | awk '/^Version:/ {print $2}' | sort -V | tail -n1)
    [ -n "$version" ] || die "no kubernetes source package in the configured archives"
    local dest=$CACHE/kube-$version
    if cached "$dest"; then
        ln -sfn "kube-$version" "$CACHE/kube-current"
        say "Cached: $dest/bin (source $version); nothing to build"
        return 0
    fi

    say "Debian packages: golang-go, rsync (installed), etcd-server, etcd-client, kubernetes-client, reflect2 (unpacked)"
    # rsync: the build copies generated tools into _output with it.
    local need=()
    command -v go >/dev/null || need+=(golang-go)
    command -v rsync >/dev/null || need+=(rsync)
    [ ${#need[@]} = 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
    local work=$CACHE/build
    rm -rf "$work"
    mkdir -p "$work/debs" "$work/root"
    (cd "$work/debs" && apt-get -qq download etcd-server etcd-client kubernetes-client golang-github-modern-go-reflect2-dev)
    local deb
    for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done

    say "apt-get source kubernetes=$version"
    (cd "$work" && apt-get "${APTO[@]}" -qq source "kubernetes=$version" >/dev/null)
    local src
    src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
    [ -n "$src" ] && [ -d "$src/vendor" ] || die "no vendored source tree in $work"

    # k8s 1.20 vendors modern-go/reflect2 1.0.1, which crashes (`fatal error:
    # fault` in map iteration) when built with Go >= 1.18; Debian ships 1.0.2,
    # which fixes it. Only the package's non-test Go files are vendored.
    local r2=$work/root/usr/share/gocode/src/github.com/modern-go/reflect2
    [ -d "$r2" ] || die "reflect2 sources missing from golang-github-modern-go-reflect2-dev"
    rm -rf "$src/vendor/github.com/modern-go/reflect2"
    mkdir -p "$src/vendor/github.com/modern-go/reflect2"
    find "$r2" -maxdepth 1 -name '*.go' ! -name '*_test.go' -exec cp {} "$src/vendor/github.com/modern-go/reflect2/" \;
    cp "$r2/LICENSE" "$src/vendor/github.com/modern-go/reflect2/" 2>/dev/null || true

    # The tarball has no .git, so the version stamp comes from the package
    # version ("1.20.5+really1.20.2-1.1+deb12u1" is upstream v1.20.2).
    local upstream=${version#*really}
    upstream=${upstream%%-*}
    upstream=${upstream#*:}
    say "make WHAT=\"cmd/kube-apiserver cmd/kube-scheduler cmd/kube-controller-manager\" (Kubernetes v$upstream, nice 19)"
    local tb=$SECONDS
    (cd "$src" && env GOPROXY=off GOFLAGS=-mod=vendor GOCACHE="$CACHE/go-build" GOPATH="$CACHE/gopath" \
        KUBE_GIT_VERSION="v$upstream" KUBE_GIT_TREE_STATE=clean \
        nice -n 19 make WHAT="cmd/kube-apiserver cmd/kube-scheduler cmd/kube-controller-manager")
    local tmake=$((SECONDS - tb))

    local tmp=$dest.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp/bin"
    local b
    for b in kube-apiserver kube-scheduler kube-controller-manager; do
        cp "$src/_output/bin/$b" "$tmp/bin/"
    done
    cp "$work/root/usr/bin/etcd" "$work/root/usr/bin/etcdctl" "$work/root/usr/bin/kubectl" "$tmp/bin/"
    {
        echo "source=kubernetes $version"
        echo "make_seconds=$tmake"
        echo "total_seconds=$((SECONDS - t0))"
        echo "go=$(go version)"
        echo "built=$(date -u +%FT%TZ)"
    } >"$tmp/BUILD"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    ln -sfn "kube-$version" "$CACHE/kube-current"
    [ -n "${PADDOCK_KUBE_KEEP_SRC:-}" ] || rm -rf "$work"
    say "Built in $((SECONDS - t0)) s (make $tmake s): $dest/bin"
    cat "$dest/BUILD" >&2
}

# --- start / stop ------------------------------------------------------------

bin_dir() {
    local d=$CACHE/kube-current/bin
    cached "$CACHE/kube-current" || die "no cached control plane in $CACHE/kube-current: run '$0 build' first"
    echo "$d"
}

spawn() { # spawn NAME CMD...: background process, log and pid in $RUN
    local name=$1
    shift
    setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

wait_for() { # wait_for NAME SECONDS CMD...: until CMD succeeds or NAME dies
    local name=$1 limit=$2
    shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        alive "$name" || { tail -n 30 "$RUN/$name.log" >&2; die "$name exited (log: $RUN/$name.log)"; }
        [ $SECONDS -lt $end ] || { tail -n 30 "$RUN/$name.log" >&2; die "$name not ready after ${limit}s"; }
        sleep 0.2
    done
}

kubeconfig() { # kubeconfig USER TOKEN FILE
    cat >"$3" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: paddock
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority: $RUN/ca.crt
users:
- name: $1
  user:
    token: $2
contexts:
- name: paddock
  context: {cluster: paddock, user: $1}
current-context: paddock
EOF
}

start() {
    local bin
    bin=$(bin_dir)
    if alive kube-apiserver; then die "already running from $RUN (stop it first)"; fi
    rm -rf "$RUN"
    mkdir -p "$RUN"
    chmod 700 "$RUN"
    local t0
    t0=$(date +%s.%N)

    # A CA and an apiserver serving certificate for 127.0.0.1, and the
    # service-account signing key pair.
    (
        cd "$RUN"
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=paddock-kube-ca \
            -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
            -keyout apiserver.key -out apiserver.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' >san.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
            -extfile san.ext -out apiserver.crt 2>/dev/null
        openssl genrsa -out sa.key 2048 2>/dev/null
        openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    )
    # Static bearer tokens: an admin (system:masters) for tests and kubectl,
    # and the scheduler's and controller-manager's own users, which the RBAC
    # bootstrap policy already grants what they need.
    local admin sched cm
    admin=$(openssl rand -hex 16)
    sched=$(openssl rand -hex 16)
    cm=$(openssl rand -hex 16)
    {
        echo "$admin,paddock-admin,paddock-admin,system:masters"
        echo "$sched,system:kube-scheduler,system:kube-scheduler"
        echo "$cm,system:kube-controller-manager,system:kube-controller-manager"
    } >"$RUN/tokens.csv"
    echo "$admin" >"$RUN/admin.token"
    echo "https://127.0.0.1:$PORT" >"$RUN/server"
    kubeconfig paddock-admin "$admin" "$RUN/kubeconfig"
    kubeconfig system:kube-scheduler "$sched" "$RUN/scheduler.kubeconfig"
    kubeconfig system:kube-controller-manager "$cm" "$RUN/controller-manager.kubeconfig"

    local ec=$((PORT + 1)) ep=$((PORT + 2))
    spawn etcd "$bin/etcd" --name paddock --data-dir "$RUN/etcd" \
        --listen-client-urls "http://127.0.0.1:$ec" --advertise-client-urls "http://127.0.0.1:$ec" \
        --listen-peer-urls "http://127.0.0.1:$ep" --initial-advertise-peer-urls "http://127.0.0.1:$ep" \
        --initial-cluster "paddock=http://127.0.0.1:$ep" --listen-metrics-urls ""
    wait_for etcd 30 curl -fsS "http://127.0.0.1:$ec/health"

    spawn kube-apiserver "$bin/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ec" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$PORT" --insecure-port 0 \
        --tls-cert-file "$RUN/apiserver.crt" --tls-private-key-file "$RUN/apiserver.key" \
        --client-ca-file "$RUN/ca.crt" \
        --token-auth-file "$RUN/tokens.csv" --authorization-mode RBAC --anonymous-auth=false \
        --service-account-key-file "$RUN/sa.pub" --service-account-signing-key-file "$RUN/sa.key" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true
    wait_for kube-apiserver 120 curl -fsS --cacert "$RUN/ca.crt" -H "Authorization: Bearer $admin" \
        "https://127.0.0.1:$PORT/readyz"
    local ready
    ready=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
    echo "$ready" >"$RUN/ready-seconds"

    spawn kube-scheduler "$bin/kube-scheduler" --kubeconfig "$RUN/scheduler.kubeconfig" \
        --authentication-kubeconfig "$RUN/scheduler.kubeconfig" --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port $((PORT + 3)) --port 0 --cert-dir "$RUN/scheduler-certs"
    # The token controller needs the signing key to mint service-account
    # tokens (the DaemonSet's paddock-node account gets one).
    spawn kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$RUN/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port $((PORT + 4)) --port 0 --cert-dir "$RUN/cm-certs" \
        --service-account-private-key-file "$RUN/sa.key" --root-ca-file "$RUN/ca.crt" \
        --use-service-account-credentials=true --cluster-name paddock
    sleep 1
    alive kube-scheduler || { tail -n 20 "$RUN/kube-scheduler.log" >&2; die "kube-scheduler exited"; }
    alive kube-controller-manager || { tail -n 20 "$RUN/kube-controller-manager.log" >&2; die "kube-controller-manager exited"; }
    say "Kubernetes control plane up: https://127.0.0.1:$PORT (apiserver ready in ${ready}s)"
    echo "export KUBECONFIG=$RUN/kubeconfig" >&2
}

stop() {
    local name pid
    for name in kube-controller-manager kube-scheduler kube-apiserver etcd; do
        [ -f "$RUN/$name.pid" ] || continue
        pid=$(cat "$RUN/$name.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$RUN/$name.pid"
    done
    [ -n "${PADDOCK_KUBE_KEEP_RUN:-}" ] || rm -rf "$RUN"
}

status() {
    local name
    for name in etcd kube-apiserver kube-scheduler kube-controller-manager; do
        if alive "$name"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
    done
    [ -e "$CACHE/kube-current/BUILD" ] && cat "$CACHE/kube-current/BUILD"
}

case "${1:-}" in
    build) build ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    bin) bin_dir ;;
    *) die "usage: $0 build|start|stop|status|bin" ;;
esac
