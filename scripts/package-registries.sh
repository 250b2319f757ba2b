#!/bin/sh
# Prints the paddockd flags (`--package-registry URL`, one pair a line) for the
# registries this host's package managers use by default, that is without a
# configuration file naming them, which paddockd cannot know itself:
#
# - npm: the registry npm reports (`npm config get registry`);
# - pip: pip's default index and the host its index pages send the downloads
#   to (pip's own values), unless pip's configuration names an index;
# - cargo: each sparse registry in cargo's cache (`$CARGO_HOME/registry/index`,
#   filled by any `cargo fetch` on this host) and the download and API hosts
#   its `config.json` names.
#
# Usage: paddockd $(scripts/package-registries.sh) ...
# Review the list: it opens these hosts to every build container (and to
# sessions with allow_package_managers).
set -eu

say() { printf -- '--package-registry %s\n' "$1"; }

if command -v npm >/dev/null 2>&1; then
    r=$(npm config get registry 2>/dev/null || true)
    case "$r" in http://* | https://*) say "$r" ;; esac
fi

if command -v python3 >/dev/null 2>&1; then
    python3 - <<'EOF' || true
try:
    from pip._internal.configuration import Configuration
    from pip._internal.models.index import PyPI
except Exception:
    raise SystemExit(0)
c = Configuration(isolated=False)
c.load()
named = any(k.endswith(("index-url", "index_url")) for k, _ in c.items())
if not named:
    print("--package-registry " + PyPI.simple_url)
    print("--package-registry https://" + PyPI.file_storage_domain + "/")
EOF
fi

index_dir="${CARGO_HOME:-$HOME/.cargo}/registry/index"
for d in "$index_dir"/*/; do
    [ -f "$d/config.json" ] || continue
    # Cargo names a registry's cache directory `<host>-<hash>`.
    host=$(basename "$d" | sed 's/-[0-9a-f]*$//')
    say "https://$host/"
    python3 - "$d/config.json" <<'EOF' || true
import json, sys
cfg = json.load(open(sys.argv[1]))
for key in ("dl", "api"):
    url = cfg.get(key)
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        # A `dl` template ({crate}, {version}) is cut at its first brace.
        print("--package-registry " + url.split("{")[0])
EOF
done
