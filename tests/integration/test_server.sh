#!/usr/bin/env bash
# test_server.sh — black-box integration tests of coyoted over HTTP (API.md):
# runs server_test.py (Python 3 + python3-msgpack) against BUILD_DIR/coyoted.
#
#   bash tests/integration/test_server.sh BUILD_DIR [server_test.py options]
#
# The last line of the output is "N passed, M failed"; the exit status is
# non-zero when any test failed.
set -u

BUILD=${1:?usage: test_server.sh BUILD_DIR}
shift
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=$(cd "$BUILD" && pwd) || exit 1

# Prefer an interpreter that has msgpack (python3 on PATH may be a pyenv or
# venv one without the Debian package; /usr/bin/python3 is the Debian one).
PY=
for cand in "${PYTHON:-}" python3 /usr/bin/python3; do
    [ -n "$cand" ] || continue
    command -v "$cand" >/dev/null 2>&1 || continue
    if "$cand" -c 'import msgpack' >/dev/null 2>&1; then
        PY=$cand
        break
    fi
    [ -n "$PY" ] || PY=$cand
done
if [ -z "$PY" ]; then
    echo "FAIL: no python3 found (scripts/setup-deps installs python3 and python3-msgpack)"
    echo "0 passed, 1 failed"
    exit 1
fi

"$PY" "$HERE/server_test.py" --build "$BUILD" "$@"
exit $?
