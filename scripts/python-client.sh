#!/usr/bin/env bash
# Installs the Python client (clients/python) and its test dependencies into
# the venv target/venv, made if missing; pip reads its index from the host's
# own pip configuration. Prints the venv's python.
#   usage: scripts/python-client.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
# The stubs are generated from proto/ by the package's build (grpcio-tools),
# so a reinstall picks up proto changes.
"$venv/bin/pip" install -q --disable-pip-version-check "./clients/python[test]" >&2
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall ./clients/python >&2
rm -rf clients/python/build clients/python/paddock.egg-info
echo "$venv/bin/python"
