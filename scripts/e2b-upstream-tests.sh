#!/usr/bin/env bash
# Runs E2B's own python-sdk tests (commands, files, PTY, sandbox life cycle,
# the list/info/kill API) against a Paddock E2B listener. The tests are not
# part of this repository: they are read from a checkout of e2b-dev/E2B at
# the SDK's tag (@e2b/python-sdk@<version>), cloned on first use, or from
# E2B_REPO if that names a checkout (or a bare mirror) already on disk.
# The installed SDK stays the pinned one (tests/e2b/requirements.txt).
#
# usage: E2B_API_URL=http://HOST:PORT E2B_SANDBOX_URL=http://HOST:PORT E2B_API_KEY=pdk_... \
#        scripts/e2b-upstream-tests.sh [TAG] [pytest args]
# The expected failures and why are listed in README.md ("E2B-compatible API").
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-@e2b/python-sdk@2.63.0}
shift || true
python=${PADDOCK_E2B_PYTHON:-target/e2b-venv/bin/python}
work=target/e2b-upstream/$(echo "$tag" | tr '/@' '__')
if [ ! -d "$work/packages/python-sdk/tests" ]; then
    rm -rf "$work.tmp" && mkdir -p "$work.tmp"
    if [ -n "${E2B_REPO:-}" ]; then
        git -C "$E2B_REPO" archive "$tag" packages/python-sdk/tests packages/python-sdk/pytest.ini | tar -x -C "$work.tmp"
    else
        git clone -q --depth 1 --branch "$tag" https://github.com/e2b-dev/E2B "$work.tmp/repo"
        mv "$work.tmp/repo/packages" "$work.tmp/"
        rm -rf "$work.tmp/repo"
    fi
    rm -rf "$work" && mv "$work.tmp" "$work"
fi
cd "$work/packages/python-sdk"
t=tests/sync
exec "$OLDPWD/$python" -m pytest -p no:cacheprovider -q -o addopts="--import-mode=importlib" \
    "$t/sandbox_sync/commands" "$t/sandbox_sync/files" "$t/sandbox_sync/pty" \
    "$t/sandbox_sync/test_create.py" "$t/sandbox_sync/test_connect.py" "$t/sandbox_sync/test_kill.py" \
    "$t/sandbox_sync/test_timeout.py" "$t/api_sync/test_sbx_info.py" "$t/api_sync/test_sbx_kill.py" \
    "$t/api_sync/test_sbx_list.py" "$@"
