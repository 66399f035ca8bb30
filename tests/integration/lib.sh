# lib.sh — shell code shared by the integration tests (test_cli.sh,
# test_docs.sh, test_examples.sh). Not a test itself (CTest runs test_*.sh):
# the scripts source it relative to their own location,
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# and must set COYOTED (the coyoted binary) before calling start_server.

# ---- pass/fail counters ----------------------------------------------------------

passed=0
failed=0
pass() {
    passed=$((passed + 1))
    echo "ok: $*"
}
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*"
}
# finish — prints "N passed, M failed" and exits (1 on any failure).
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && exit 0
    exit 1
}

# verdict NAME WHY — passes NAME when WHY is empty, else fails it with WHY and
# shows the last run's OUT and ERR; returns 0 on pass, 1 on failure.
verdict() {
    local name=$1 why=$2
    if [ -z "$why" ]; then
        pass "$name"
        return 0
    fi
    fail "$name: $why"
    printf '%s\n' "$OUT" | sed 's/^/    stdout| /'
    printf '%s\n' "$ERR" | sed 's/^/    stderr| /'
    return 1
}

# refute NAME REGEX — the last run's stdout has no line matching REGEX.
refute() {
    if grep -Eq -- "$2" <<<"$OUT"; then
        fail "$1: stdout unexpectedly matches /$2/"
        printf '%s\n' "$OUT" | sed 's/^/    stdout| /'
    else
        pass "$1"
    fi
}

# ---- temp directory and background processes ------------------------------------

# make_tmp NAME — creates TMP (a fresh ${TMPDIR:-/tmp}/coyote-NAME-test.XXXXXX)
# and empties PIDS; on exit, every process of PIDS still running gets SIGTERM
# (SIGKILL after 5 s) and TMP is removed.
make_tmp() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/coyote-$1-test.XXXXXX")
    PIDS=()
    trap cleanup EXIT
}
cleanup() {
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    rm -rf "$TMP"
}

# reap PID [FILE] — waits for a background command (killing it after 30 s);
# sets RC, and OUT / ERR from FILE and FILE.err when a FILE is given.
reap() {
    for _ in $(seq 1 600); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1"
    RC=$?
    if [ -n "${2:-}" ]; then
        OUT=$(cat "$2")
        ERR=$(cat "$2.err")
    fi
}

# ---- coyoted ------------------------------------------------------------------------

# start_server NAME [coyoted options] — starts $COYOTED on a free port (or on
# $LISTEN_PORT) with data in $TMP/NAME, stdout and stderr in $TMP/NAME.out and
# $TMP/NAME.err; learns the port from its "coyoted ready in … (port N)" line
# (up to 10 s, no fixed sleep). Sets PORT (empty, and a failure counted, when
# it did not start) and SERVER_PID, and adds the server to PIDS.
start_server() {
    local name=$1
    shift
    "$COYOTED" --listen "127.0.0.1:${LISTEN_PORT:-0}" --data-dir "$TMP/$name" "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err" &
    local pid=$!
    PIDS+=("$pid")
    SERVER_PID=$pid
    PORT=
    for _ in $(seq 1 200); do
        PORT=$(sed -n 's/.*coyoted ready in .*(port \([0-9]*\)).*/\1/p' "$TMP/$name.err" | head -n 1)
        [ -n "$PORT" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$PORT" ]; then
        fail "coyoted ($name) did not start; its log:"
        sed 's/^/    | /' "$TMP/$name.err"
    fi
}
