#!/usr/bin/env bash
# test_examples.sh — the programs of examples/ (BUILD_DIR/example_*) run and
# print what examples/README.md says they print.
#
#   bash tests/integration/test_examples.sh BUILD_DIR
#
# What it does:
#   1. Every example against the embedded broker: a fresh file:///tmp/...
#      directory per scenario (publish; queue_worker with its retries and
#      DLQ, stopped by COUNT and by SIGTERM/SIGINT; stream_replay from ms,
#      RFC 3339 times and offsets; fifo_worker's per-key order;
#      embedded_queue run three times, and refused while another process
#      holds its directory; batch_publisher's counts and offsets).
#   2. The same scenarios against a real BUILD_DIR/coyoted started on a free
#      port (port 0, read from its "ready" line, no sleeping), plus
#      $COYOTE_URL as the default URL and the "cannot be reached" message.
#   3. Usage errors: --help and bad arguments exit 2 with a usage line.
#   4. Out of the tree: libcoyote installed into a temp prefix (cmake
#      --install), an example compiled with `cc $(pkg-config --cflags --libs
#      coyote)` and run (skipped when cc or pkg-config is missing).
# Prints "N passed, M failed" as its last line; exits 1 on any failure.
set -u

BUILD=${1:?usage: test_examples.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd) || exit 1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COYOTED=$BUILD/coyoted
EXAMPLES="publish queue_worker fifo_worker stream_replay embedded_queue batch_publisher"

# pass/fail/finish, make_tmp, reap, start_server, verdict, refute
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing=0
for name in $EXAMPLES; do
    if [ ! -x "$BUILD/example_$name" ]; then
        fail "$BUILD/example_$name is missing (build the example_$name target)"
        missing=1
    fi
done
if [ ! -x "$COYOTED" ]; then
    fail "$COYOTED is missing (build the coyoted target)"
    missing=1
fi
[ "$missing" -eq 0 ] || finish

make_tmp examples
unset COYOTE_URL

# ex NAME ARGS... — runs BUILD/example_NAME into OUT, ERR, RC; one that hangs
# is killed after 60 s (status 137).
ex() {
    local name=$1
    shift
    OUT=$(timeout -s KILL 60 "$BUILD/example_$name" "$@" 2>"$TMP/stderr" </dev/null)
    RC=$?
    ERR=$(cat "$TMP/stderr")
}

# bg NAME OUTFILE ARGS... — starts BUILD/example_NAME in the background; sets BG.
bg() {
    local name=$1 outfile=$2
    shift 2
    "$BUILD/example_$name" "$@" >"$outfile" 2>"$outfile.err" </dev/null &
    BG=$!
    PIDS+=("$BG")
}

# wait_for_line FILE REGEX — up to 10 s for a line of FILE to match.
wait_for_line() {
    for _ in $(seq 1 200); do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# check NAME RC [REGEX...] — the last run exited RC and its stdout has a line
# matching each extended REGEX; a REGEX starting with "2>" is matched against
# stderr instead.
check() {
    local name=$1 want=$2 why= re
    shift 2
    [ "$RC" -eq "$want" ] || why="exit status $RC, expected $want"
    for re in "$@"; do
        if [ "${re#2>}" != "$re" ]; then
            grep -Eq -- "${re#2>}" <<<"$ERR" || why="${why:+$why; }stderr lacks /${re#2>}/"
        elif ! grep -Eq -- "$re" <<<"$OUT"; then
            why="${why:+$why; }stdout lacks /$re/"
        fi
    done
    verdict "$name" "$why"
}

# count NAME REGEX N — the last run's stdout has exactly N lines matching REGEX.
count() {
    local n
    n=$(grep -Ec -- "$2" <<<"$OUT")
    if [ "$n" -eq "$3" ]; then
        pass "$1"
    else
        fail "$1: $n lines match /$2/, expected $3"
        printf '%s\n' "$OUT" | sed 's/^/    stdout| /'
    fi
}

# ---- the scenarios, each given a URL with nothing in it yet --------------------------

scenario_publish() {
    local u=$1 t=$2
    ex publish "$u"
    check "$t publish: default topic and values" 0 '^orders~0: offsets 0\.\.2 \(3 messages\)$'
    ex publish "$u" orders "one value" two
    check "$t publish: VALUE... continue the offsets" 0 '^orders~0: offsets 3\.\.4 \(2 messages\)$'
    COYOTE_URL=$u ex publish
    check "$t publish: \$COYOTE_URL is the default URL" 0 '^orders~0: offsets 5\.\.7 \(3 messages\)$'
    ex publish "$u" 'orders~0' x
    check "$t publish: a broker refusal exits 1 with its detail" 1 \
        '2>^publish to orders~0 failed: .*msg key cannot be specified alongside a specific partition'
    # The messages went in with their keys and headers: replay them.
    ex stream_replay "$u" orders 0
    check "$t publish: keys and values stored" 0 '^orders~0 offset 0 at .* key=customer-0: hello$' \
        '^orders~0 offset 1 at .* key=customer-1: world$' \
        '^orders~0 offset 3 at .* key=customer-0: one value$' '^replayed 8 messages$'
}

scenario_queue_worker() {
    local u=$1 t=$2
    ex publish "$u" jobs hello retry-me poison world
    check "$t queue_worker: publish 4 jobs" 0 '^jobs~0: offsets 0\.\.3 \(4 messages\)$'
    # hello, world and poison once each; retry-me 3 times (the schedule has 2 retries).
    ex queue_worker "$u" jobs 6
    check "$t queue_worker: outcomes by value, stops after COUNT" 0 \
        '^serving jobs for group workers \(DLQ jobs-dlq\)$' \
        '^0:0 attempt 1: hello -> done$' '^0:3 attempt 1: world -> done$' \
        '^0:2 attempt 1: poison -> dead$' '^0:1 attempt 1: retry-me -> retry$' \
        '^0:1 attempt 2: retry-me -> retry$' '^0:1 attempt 3: retry-me -> retry$' \
        '^stopped after 6 deliveries$'
    count "$t queue_worker: 6 deliveries printed" ' attempt [0-9]+: ' 6
    ex stream_replay "$u" jobs-dlq 0
    check "$t queue_worker: poison and the exhausted retry are in the DLQ topic" 0 \
        '^jobs-dlq~0 offset [01] at .*: poison$' '^jobs-dlq~0 offset [01] at .*: retry-me$' \
        '^replayed 2 messages$'
    # Everything was settled before the first run stopped: nothing comes back.
    bg queue_worker "$TMP/qw.out" "$u" jobs
    if wait_for_line "$TMP/qw.out" '^serving '; then
        sleep 0.5 # a long poll or two: nothing is delivered
        kill -TERM "$BG"
        reap "$BG" "$TMP/qw.out"
        check "$t queue_worker: SIGTERM stops it gracefully" 0 '^signal 15: stopping$' \
            '^stopped after 0 deliveries$'
    else
        reap "$BG" "$TMP/qw.out"
        check "$t queue_worker: started for SIGTERM" 0 '^serving '
    fi
    # SIGINT while a job is being handled: it is settled before the exit.
    ex publish "$u" jobs late
    bg queue_worker "$TMP/qw2.out" "$u" jobs
    if wait_for_line "$TMP/qw2.out" 'late -> done$'; then
        kill -INT "$BG"
        reap "$BG" "$TMP/qw2.out"
        check "$t queue_worker: SIGINT stops it gracefully" 0 '^signal 2: stopping$' \
            '^0:4 attempt 1: late -> done$' '^stopped after 1 deliveries$'
    else
        reap "$BG" "$TMP/qw2.out"
        check "$t queue_worker: handles a job published while it runs" 0 'late -> done$'
    fi
}

scenario_stream_replay() {
    local u=$1 t=$2 when rfc rfc_cet
    ex publish "$u" clicks a b
    sleep 0.05
    when=$(date +%s%3N)
    sleep 0.05
    ex publish "$u" clicks c d e
    check "$t stream_replay: publish 2, then 3 messages" 0 '^clicks~0: offsets 2\.\.4 \(3 messages\)$'
    ex stream_replay "$u" clicks "$when"
    check "$t stream_replay: from ms since the epoch" 0 \
        '^clicks~0 offset 2 at [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\.[0-9]{3}Z key=customer-0: c$' \
        '^clicks~0 offset 4 at .* key=customer-0: e$' '^replayed 3 messages$'
    refute "$t stream_replay: nothing before WHEN" ': [ab]$'
    rfc=$(date -u -d "@$((when / 1000)).$(printf %03d $((when % 1000)))" +%Y-%m-%dT%H:%M:%S.%3NZ)
    ex stream_replay "$u" clicks "$rfc" g-rfc
    check "$t stream_replay: from an RFC 3339 time ($rfc)" 0 '^replayed 3 messages$'
    # The same instant written in UTC+1 (a POSIX TZ string: no zoneinfo needed).
    rfc_cet=$(TZ=CET-1 date -d "@$((when / 1000)).$(printf %03d $((when % 1000)))" +%Y-%m-%dT%H:%M:%S.%3N%:z)
    ex stream_replay "$u" clicks "$rfc_cet" g-cet
    check "$t stream_replay: from an RFC 3339 time with an offset ($rfc_cet)" 0 '^replayed 3 messages$'
    ex stream_replay "$u" clicks 0 g-all
    check "$t stream_replay: 0 replays everything" 0 '^clicks~0 offset 0 at .*: a$' '^replayed 5 messages$'
    ex stream_replay "$u" clicks 0 g-all
    check "$t stream_replay: again from 0 (seek moves a committed group back)" 0 '^replayed 5 messages$'
    COYOTE_URL=$u ex stream_replay - clicks 1
    check "$t stream_replay: '-' takes \$COYOTE_URL" 0 '^replayed 5 messages$'
    ex stream_replay "$u" clicks 253402207200000 g-future
    check "$t stream_replay: a future time replays nothing" 0 '^replayed 0 messages$'
    ex stream_replay "$u" no-such-topic 0
    check "$t stream_replay: an unknown topic exits 1" 1 '2>topic must exist'
}

scenario_fifo_worker() {
    local u=$1 t=$2
    ex fifo_worker "$u"
    check "$t fifo_worker: 4 keys x 5 in per-key order" 0 '^published 20 messages for 4 keys$' \
        '^acct-3 #5 \(0:19\) in order$' '^20 messages, 4 keys: per-key order held$'
    count "$t fifo_worker: 20 messages handled" ' in order$' 20
    refute "$t fifo_worker: nothing out of order" 'OUT OF ORDER'
    # The printed order, key by key, is 1, 2, 3, ... too.
    if awk '/^acct-[0-9]+ #[0-9]+ / { k = $1; s = substr($2, 2) + 0;
                if (s != last[k] + 1) bad = 1; last[k] = s }
            END { exit bad }' <<<"$OUT"; then
        pass "$t fifo_worker: printed sequence numbers run 1, 2, ... per key"
    else
        fail "$t fifo_worker: printed sequence numbers out of order per key"
    fi
    ex fifo_worker "$u" payments 8 10
    check "$t fifo_worker: a second run, 8 keys x 10" 0 '^80 messages, 8 keys: per-key order held$'
    refute "$t fifo_worker: the second run skips nothing" 'not from this run'
    ex fifo_worker "$u" payments 0
    check "$t fifo_worker: KEYS 0 is a usage error" 2 '2>^usage: '
}

scenario_embedded_queue() {
    local u=$1 t=$2
    ex embedded_queue "$u"
    check "$t embedded_queue: first run queues 5, does 3" 0 '^the queue is empty: queued 5 jobs$' \
        '^done: job 1 \(0:0, attempt 1\)$' '^done: job 3 \(0:2, attempt 1\)$' \
        '^did 3 jobs; more may be waiting: run me again$'
    ex embedded_queue "$u"
    check "$t embedded_queue: second run does the 2 left" 0 '^done: job 4 \(0:3, attempt 1\)$' \
        '^done: job 5 \(0:4, attempt 1\)$' '^did 2 jobs; the queue is empty$'
    refute "$t embedded_queue: second run queues nothing" 'queued'
    ex embedded_queue "$u"
    check "$t embedded_queue: third run starts over" 0 '^the queue is empty: queued 5 jobs$' \
        '^done: job 1 \(0:5, attempt 1\)$'
}

scenario_batch_publisher() {
    local u=$1 t=$2
    ex batch_publisher "$u"
    check "$t batch_publisher: 1000 by default" 0 '^sent 1000, stored 1000, failed 0 in [0-9.]+ s$' \
        '^offsets: lowest 0, highest 999$'
    ex batch_publisher "$u" events 250
    check "$t batch_publisher: COUNT, offsets continue" 0 '^sent 250, stored 250, failed 0 in ' \
        '^offsets: lowest 1000, highest 1249$'
}

suite() {
    local label=$1 urlfn=$2
    scenario_publish "$($urlfn publish)" "$label"
    scenario_queue_worker "$($urlfn queue)" "$label"
    scenario_stream_replay "$($urlfn replay)" "$label"
    scenario_fifo_worker "$($urlfn fifo)" "$label"
    scenario_embedded_queue "$($urlfn embedded)" "$label"
    scenario_batch_publisher "$($urlfn batch)" "$label"
}

# ---- 1. the embedded broker (file:///dir) -----------------------------------------------
file_url() { echo "file://$TMP/file-$1"; }
suite "file:" file_url

# A second process cannot open a directory in use.
u=$(file_url embedded)
bg queue_worker "$TMP/lock.out" "$u" locked
if wait_for_line "$TMP/lock.out" '^serving '; then
    ex embedded_queue "$u"
    check "file: embedded_queue: refused while another process holds the directory" 1 \
        "2>^$u is in use by another process$"
    kill -TERM "$BG"
    reap "$BG" "$TMP/lock.out"
    check "file: queue_worker: SIGTERM releases the directory" 0 '^stopped after 0 deliveries$'
    ex embedded_queue "$u"
    check "file: embedded_queue: the directory opens again" 0 '^done: job 4 \(0:8, attempt 1\)$'
else
    reap "$BG" "$TMP/lock.out"
    check "file: queue_worker: started to hold the directory" 0 '^serving '
fi

# ---- 2. a real coyoted (http://) ----------------------------------------------------------
start_server server
if [ -n "$PORT" ]; then
    echo "coyoted is listening on port $PORT"
    http_url() { echo "http://127.0.0.1:$PORT"; }
    # One server for every scenario: their topics differ.
    suite "http:" http_url
fi
ex publish http://127.0.0.1:1
check "publish: no server exits 1" 1 '2>^cannot open|^publish to orders failed: the server cannot be reached'

# ---- 3. usage ------------------------------------------------------------------------------
for name in $EXAMPLES; do
    ex "$name" --help
    check "$name --help: usage, exit 2" 2 '2>^usage: .*example_'"$name"
done
ex stream_replay
check "stream_replay without arguments: usage, exit 2" 2 '2>^usage: '
ex stream_replay "$(file_url replay)" clicks yesterday
check "stream_replay: a bad WHEN exits 2" 2 "2>'yesterday' is not a time"
ex stream_replay "$(file_url replay)" clicks 2026-11-22T15:01:26
check "stream_replay: an RFC 3339 time needs a zone" 2 '2>is not a time'

# ---- 4. out of the tree, with pkg-config ----------------------------------------------------
# The build's own compiler; a sanitizer build's library needs the same -fsanitize.
cache_var() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt" 2>/dev/null | head -n 1; }
CC_BIN=$(cache_var CMAKE_C_COMPILER)
[ -x "$CC_BIN" ] || CC_BIN=$(command -v cc || command -v gcc || command -v clang || true)
CC_EXTRA=()
[ "$(cache_var COYOTE_SANITIZE)" = ON ] && CC_EXTRA=(-fsanitize=address,undefined)
if [ -z "$CC_BIN" ] || ! command -v pkg-config >/dev/null 2>&1; then
    echo "skip: out-of-tree build (no cc or no pkg-config)"
elif [ "$(cache_var COYOTE_FUZZ)" = ON ]; then
    echo "skip: out-of-tree build (a COYOTE_FUZZ build's library needs libFuzzer's runtime)"
elif ! cmake --install "$BUILD" --prefix "$TMP/prefix" >"$TMP/install.log" 2>&1; then
    fail "cmake --install into a temp prefix failed:"
    sed 's/^/    | /' "$TMP/install.log"
else
    pc=$(find "$TMP/prefix" -name coyote.pc | head -n 1)
    export PKG_CONFIG_PATH=${pc%/*}
    libdir=$(pkg-config --variable=libdir coyote)
    if flags=$(pkg-config --cflags --libs coyote) &&
        "$CC_BIN" -std=c17 -Wall -Wextra -Werror "${CC_EXTRA[@]}" -o "$TMP/publish_oot" \
            "$ROOT/examples/publish.c" $flags >"$TMP/cc.log" 2>&1; then
        OUT=$(LD_LIBRARY_PATH=$libdir timeout -s KILL 60 "$TMP/publish_oot" "file://$TMP/oot" 2>"$TMP/stderr")
        RC=$?
        ERR=$(cat "$TMP/stderr")
        check "out of tree: cc \$(pkg-config --cflags --libs coyote) builds and runs publish.c" 0 \
            '^orders~0: offsets 0\.\.2 \(3 messages\)$'
    else
        fail "out of tree: cc publish.c \$(pkg-config --cflags --libs coyote) failed:"
        sed 's/^/    | /' "$TMP/cc.log"
    fi
    # docs/client.md's static link: the archive by name, then Libs.private.
    if flags=$(pkg-config --cflags coyote) &&
        "$CC_BIN" -std=c17 "${CC_EXTRA[@]}" -o "$TMP/batch_oot" "$ROOT/examples/batch_publisher.c" \
            $flags "$libdir/libcoyote.a" -lcurl -ljansson -lmsgpackc -pthread >"$TMP/cc.log" 2>&1; then
        OUT=$(timeout -s KILL 60 "$TMP/batch_oot" "file://$TMP/oot" 2>"$TMP/stderr")
        RC=$?
        ERR=$(cat "$TMP/stderr")
        check "out of tree: linked statically (libcoyote.a by name)" 0 '^sent 1000, stored 1000, failed 0'
    else
        fail "out of tree: a static link with libcoyote.a failed:"
        sed 's/^/    | /' "$TMP/cc.log"
    fi
fi

# ---- 5. the C fragments of docs/client.md compile ------------------------------------------
# Each ```c block is one translation unit after a prelude of the headers the
# fragments use; -Wno-unused-function: fragments define functions nobody calls.
DOC=$ROOT/docs/client.md
if [ -z "$CC_BIN" ]; then
    echo "skip: docs/client.md fragments (no C compiler)"
elif [ ! -f "$DOC" ]; then
    fail "docs/client.md is missing"
else
    awk -v dir="$TMP" '
        /^```c$/ { n++; f = sprintf("%s/frag%02d.c", dir, n); inblock = 1;
                   print "#define _POSIX_C_SOURCE 200809L" > f
                   print "#include <errno.h>\n#include <signal.h>\n#include <stdio.h>" > f
                   print "#include <stdlib.h>\n#include <string.h>\n#include <time.h>" > f
                   print "#include <coyote.h>" > f
                   printf "#line %d \"docs/client.md\"\n", NR + 1 > f; next }
        /^```/ && inblock { inblock = 0; close(f); next }
        inblock { print > f }' "$DOC"
    nfrag=0
    for frag in "$TMP"/frag*.c; do
        [ -e "$frag" ] || continue
        nfrag=$((nfrag + 1))
        if "$CC_BIN" -std=c17 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
            -Wno-unused-function \
            -I"$ROOT/include" -c "$frag" -o "$frag.o" >"$TMP/frag.log" 2>&1; then
            pass "docs/client.md: C block $(basename "$frag" .c) compiles"
        else
            fail "docs/client.md: C block $(basename "$frag" .c) does not compile:"
            sed 's/^/    | /' "$TMP/frag.log"
        fi
    done
    [ "$nfrag" -gt 0 ] || fail "docs/client.md has no C blocks"
fi

finish
