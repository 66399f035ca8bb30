#!/usr/bin/env bash
# test_cli.sh — the `coyote` command-line client against a real coyoted.
#
#   bash tests/integration/test_cli.sh BUILD_DIR
#
# What it does:
#   1. Starts BUILD_DIR/coyoted on a free port (port 0; the port is read from
#      its "coyoted ready in … (port N)" line, no sleeping) with a fresh data
#      directory, and runs every command and option of BUILD_DIR/coyote
#      against it: help, usage errors (exit 2), broker errors (exit 1, code and
#      detail on stderr), publish, consume in the three modes (print, --json,
#      --exec with retries ending in the DLQ topic, SIGINT once and twice, a
#      pipe whose reader stops or never reads, write errors), seek, ns,
#      topic, group, queue configure, dlq redrive.
#   2. The "no server" message, and --token against a second server started
#      with --admin-token.
#   3. A subset against --server file:///tmpdir (the embedded broker), and
#      the "directory in use" error on the running server's data directory.
#   4. docs/cli.md: its "coyote --help" block is the binary's text, and every
#      example (lines "$ coyote …" in ```sh blocks) runs, in order, against a
#      third fresh server; a "# expect exit N" line before one sets its
#      expected status (default 0); --follow examples are ended with SIGINT
#      after 2 s, which must still exit 0. Its output (stdout and stderr)
#      must be the lines documented after it, up to times, durations, LAG_MS
#      cells and column widths (doc_normalize).
# Prints "N passed, M failed" as its last line; exits 1 on any failure.
set -u

BUILD=${1:?usage: test_cli.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd) || exit 1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COYOTE=$BUILD/coyote
COYOTED=$BUILD/coyoted
DOC=$ROOT/docs/cli.md

# pass/fail/finish, make_tmp, reap, start_server, verdict, refute
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for need in "$COYOTE" "$COYOTED"; do
    if [ ! -x "$need" ]; then
        fail "$need is missing (build the coyote_cli and coyoted targets)"
        finish
    fi
done

make_tmp cli

# run [CMD...] — runs a command (stdin from $IN, default empty) into OUT, ERR, RC;
# a command that hangs is killed after 60 s (status 137).
IN=
run() {
    OUT=$(printf '%s' "$IN" | timeout -s KILL 60 "$@" 2>"$TMP/stderr")
    RC=$?
    ERR=$(cat "$TMP/stderr")
    IN=
}

# check NAME RC [STDOUT_REGEX [STDERR_REGEX]] — the last run exited RC and its
# output matches (extended regexes; empty: not checked).
check() {
    local name=$1 want=$2 out_re=${3:-} err_re=${4:-} why=
    [ "$RC" -eq "$want" ] || why="exit status $RC, expected $want"
    if [ -n "$out_re" ] && ! grep -Eq -- "$out_re" <<<"$OUT"; then
        why="${why:+$why; }stdout lacks /$out_re/"
    fi
    if [ -n "$err_re" ] && ! grep -Eq -- "$err_re" <<<"$ERR"; then
        why="${why:+$why; }stderr lacks /$err_re/"
    fi
    verdict "$name" "$why"
}

# lines — the number of lines of OUT (0 when empty).
lines() {
    if [ -z "$OUT" ]; then echo 0; else printf '%s\n' "$OUT" | wc -l | tr -d ' '; fi
}

# wait_for_file PATH — up to 10 s.
wait_for_file() {
    for _ in $(seq 1 200); do
        [ -e "$1" ] && return 0
        sleep 0.05
    done
    return 1
}

# metric NAME — a counter of the server at $URL (needs curl; empty without).
metric() {
    command -v curl >/dev/null 2>&1 || return 0
    curl -s "$URL/metrics" | sed -n "s/^$1 \([0-9]*\)$/\1/p"
}

start_server main
[ -n "$PORT" ] || finish
URL=http://127.0.0.1:$PORT
export COYOTE_URL=$URL
unset COYOTE_TOKEN COYOTE_NAMESPACE
C=$COYOTE
WORK=$TMP/work
mkdir -p "$WORK"
cd "$WORK" || exit 1
echo "coyoted is listening on port $PORT"

# ---- help and usage errors -------------------------------------------------------
run "$C" help
check "coyote help" 0 '^Usage: coyote'
run "$C" --help
check "coyote --help" 0 'publish TOPIC'
for cmd in help publish consume seek "ns configure" "ns get" "ns list" "topic configure" "topic get" \
    "topic list" "topic trim" "group list" "group get" "queue configure" "dlq redrive"; do
    # shellcheck disable=SC2086
    run "$C" $cmd --help
    check "coyote $cmd --help" 0 "^Usage: coyote $cmd"
done
for group in ns topic group queue dlq; do
    run "$C" "$group" --help
    check "coyote $group --help" 0 "^Usage: coyote $group"
done
run "$C" help topic get
check "coyote help topic get" 0 '^Usage: coyote topic get'
run "$C" help publish
check "coyote help publish" 0 '^Usage: coyote publish'
run "$C" help topic
check "coyote help topic" 0 '^Usage: coyote topic SUBCOMMAND'
run "$C" help nothing
check "coyote help of an unknown command: exit 2" 2 '' "unknown command 'nothing'"
run "$C" --help consume
check "coyote --help consume" 0 '^Usage: coyote consume'
run "$C" --help help
check "coyote --help help" 0 '^Usage: coyote help'
run "$C" help topic get extra
check "coyote help with three words: exit 2" 2 '' 'help takes at most COMMAND and SUB'
run "$C" queue configure --help
check "queue configure --help: a dead-lettered message stays dead in the group" 0 \
    'dead-lettered: kept dead in the$'
check "queue configure --help: and is copied to the DLQ topic" 0 \
    'copied to the DLQ topic \(the copy stays there after a redrive\)'
refute "queue configure --help: not 'copied ... and acked'" '(^|[^n])acked'
run "$C" --version
check "coyote --version" 0 '^coyote [0-9]'

run "$C"
check "no command: exit 2" 2 '' 'Usage: coyote'
run "$C" frobnicate
check "unknown command: exit 2 with a hint" 2 '' "unknown command 'frobnicate'"
run "$C" publish t x --frob
check "unknown option: exit 2 with a hint" 2 '' "unknown option '--frob'.*|Try 'coyote publish --help'"
run "$C" publish
check "publish without TOPIC: exit 2" 2 '' 'needs a TOPIC'
run "$C" consume t
check "consume without --group: exit 2" 2 '' "needs --group G"
run "$C" consume t --group g --count abc
check "a bad number: exit 2" 2 '' "'abc' is not a non-negative integer"
run "$C" consume t --group g --from earliest
check "--from in queue mode: exit 2" 2 '' '--from is for --mode stream'
run "$C" consume t --group g --mode stream --from yesterday
check "--from with a bad time: exit 2" 2 '' 'is not a time'
run "$C" consume t --group g --mode lifo
check "a bad --mode: exit 2" 2 '' "'lifo' is not queue, fifo or stream"
run "$C" seek t --group g
check "seek without a target: exit 2" 2 '' 'exactly one of --offset and --to'
run "$C" seek t --group g --offset 3
check "seek --offset without a partition: exit 2" 2 '' 'needs a partition'
run "$C" topic trim t --before-offset 1 --before-timestamp 5
check "topic trim with two points: exit 2" 2 '' 'exactly one of'
run "$C" topic
check "a group without subcommand: exit 2" 2 '' "'topic' needs a subcommand"
run "$C" topic frob
check "unknown subcommand: exit 2" 2 '' "unknown subcommand 'topic frob'"
run "$C" publish t --header novalue
check "--header without '=': exit 2" 2 '' 'is not NAME=VALUE'
run "$C" --server
check "global option without value: exit 2" 2 '' "needs a value"
run "$C" --server ftp://x topic list
check "a bad server URL: exit 1" 1 '' 'not a server URL'

# ---- broker errors: exit 1, code and detail --------------------------------------
run "$C" topic configure errs --partitions 65
check "broker error: exit 1, code and detail" 1 '' \
    '^coyote: invalid_input: Partition count must be between 1 and 64\.$'
run "$C" topic get no-such-topic
check "topic get of a missing topic: exit 1" 1 '' '^coyote: invalid_input: topic must exist'
run "$C" ns get nope
check "ns get of a missing namespace: exit 1" 1 '' "^coyote: not_found: Namespace 'nope' does not exist"
run "$C" publish 'bad~topic~x' v
check "an invalid topic name: exit 1" 1 '' '^coyote: invalid_data: '

# ---- publish ---------------------------------------------------------------------------
run "$C" publish orders hello world
check "publish VALUE...: offsets per partition" 0 '^orders~0 0\.\.2$'
IN=$'line 1\nline 2\n\nline 4'
run "$C" publish orders
check "publish from stdin: one message per line (empty ones too)" 0 '^orders~0 2\.\.6$'
before=$(metric coyote_publish_requests_total)
run bash -c "seq 1 250 | '$C' publish numbers"
check "publish 250 stdin lines" 0 '^numbers~0 0\.\.250$'
after=$(metric coyote_publish_requests_total)
if [ -n "$before" ] && [ -n "$after" ]; then
    if [ $((after - before)) -le 5 ]; then
        pass "stdin lines are published in batches ($((after - before)) calls for 250 lines)"
    else
        fail "stdin lines are not batched: $((after - before)) calls for 250 lines"
    fi
fi
before=$(metric coyote_publish_requests_total)
run bash -c "seq 1 5 | '$C' publish small --batch 2"
check "publish --batch 2" 0 '^small~0 0\.\.5$'
after=$(metric coyote_publish_requests_total)
if [ -n "$before" ] && [ -n "$after" ]; then
    [ $((after - before)) -eq 3 ] && pass "--batch 2: 5 lines in 3 calls" ||
        fail "--batch 2: $((after - before)) calls for 5 lines, expected 3"
fi
run "$C" publish orders --json j1 j2
check "publish --json" 0 '^\{"topics":\[\{"topic":"orders~0","start_offset":6,"offset":8\}\],"count":2\}$'
run "$C" topic configure keyed --partitions 2
check "topic configure --partitions 2" 0 '^keyed: 2 partitions$'
run "$C" publish keyed --key u1 a
check "publish --key goes to djb2(key) % partitions (u1 → 1)" 0 '^keyed~1 0\.\.1$'
run "$C" publish keyed --key u2 b
check "publish --key (u2 → 0)" 0 '^keyed~0 0\.\.1$'
run "$C" publish 'keyed~1' direct
check "publish TOPIC~P" 0 '^keyed~1 1\.\.2$'
run "$C" publish 'keyed~1' --key u1 x
check "publish --key with TOPIC~P: exit 1, the broker's words" 1 '' \
    '^coyote: invalid_input: msg key cannot be specified alongside a specific partition$'
run "$C" publish hdrs --header source=web --header 'trace-id=a=b' --key k7 payload
check "publish --header (twice) --key" 0 '^hdrs~0 0\.\.1$'
run "$C" publish idem --idempotency-key req-1 once
check "publish --idempotency-key" 0 '^idem~0 0\.\.1$'
run "$C" publish idem --idempotency-key req-1 once
check "the same --idempotency-key again stores nothing" 0 '^idem~0 0\.\.1 \(duplicate'
IN=$'a\nb\nc'
run "$C" publish idem2 --idempotency-key batch-key --batch 2
check "stdin batches with --idempotency-key" 0 '^idem2~0 0\.\.3$'
IN=$'a\nb\nc'
run "$C" publish idem2 --idempotency-key batch-key --batch 2
check "the same stdin again: every batch a duplicate (K, K#1)" 0 '^idem2~0 0\.\.3 \(duplicate'
# The rate line: only on a terminal (script(1) provides one), after a second.
if command -v script >/dev/null 2>&1; then
    script -qec "sh -c '{ echo a; sleep 1.2; echo b; sleep 1.1; echo c; } | \"$C\" publish rate'" \
        "$TMP/typescript" </dev/null >/dev/null 2>&1
    if grep -Eq '[0-9]+ msgs, [0-9]+ msgs/s' "$TMP/typescript"; then
        pass "publish on a terminal reports 'N msgs, R msgs/s' on stderr"
    else
        fail "no rate line on a terminal:"
        sed 's/^/    | /' "$TMP/typescript"
    fi
fi
run bash -c "seq 1 3 | '$C' publish quiet 2>&1 >/dev/null"
check "no rate line when stderr is not a terminal" 0
[ -z "$OUT" ] && pass "publish prints nothing on stderr off a terminal" ||
    fail "unexpected stderr off a terminal: $OUT"

# ---- consume: queue mode (the default) ----------------------------------------------------
run "$C" consume orders --group q1 --count 2
check "consume --count 2 prints two values" 0 '^hello$'
[ "$(lines)" -eq 2 ] && pass "--count 2: exactly 2 lines" || fail "--count 2 printed $(lines) lines"
run "$C" consume orders --group q1
check "consume goes on where the group is (settled messages are gone)" 0 '^line 1$'
refute "acked messages are not delivered again" '^hello$'
[ "$(lines)" -eq 6 ] && pass "the rest: 6 messages (one empty)" || fail "got $(lines) lines, expected 6"
run "$C" consume orders --group q1
check "a drained group: nothing, exit 0" 0
[ -z "$OUT" ] && pass "a drained group prints nothing" || fail "drained group printed: $OUT"
run "$C" group get orders --group q1
check "consumed messages are acked (lag 0)" 0 '^lag: +0 messages'
run "$C" consume hdrs --group q2 --json
check "consume --json: msg_id, key, headers, timestamp, value" 0 \
    '^\{"topic":"hdrs~0","partition":0,"msg_id":"0:0","attempt":1,"key":"k7","headers":\{("source":"web","trace-id":"a=b"|"trace-id":"a=b","source":"web")\},"timestamp":[0-9]+,"scheduled_at":null,"value":"payload"\}$'
run "$C" consume numbers --group q3 --batch-size 7 --count 20 --lease-ms 60000
check "consume --batch-size --lease-ms --count" 0 '^20$'
[ "$(lines)" -eq 20 ] && pass "--count 20 with batches of 7: 20 lines" || fail "$(lines) lines"
run "$C" group get numbers --group q3
check "--count asks for no more than it needs: nothing left in flight" 0 '^in_flight: +0$'
run "$C" publish delayed --delay-ms 1500 later
check "publish --delay-ms" 0 '^delayed~0 0\.\.1$'
run "$C" consume delayed --group q4
check "a delayed message is hidden from a queue group" 0
[ -z "$OUT" ] && pass "nothing before the delay" || fail "delayed message delivered early: $OUT"
run "$C" consume delayed --group q4 --follow --count 1 --wait-ms 5000
check "--follow long-polls until the delay comes" 0 '^later$'

# ---- consume: FIFO mode -----------------------------------------------------------------------
run "$C" publish pay --key acct-1 debit-10 credit-5
check "publish to a FIFO topic" 0
run "$C" publish pay --key acct-2 debit-7
check "publish another key" 0
run "$C" consume pay --group ledger --mode fifo
check "--mode fifo prints every message" 0 '^credit-5$'
[ "$(printf '%s\n' "$OUT" | grep -E 'debit-10|credit-5' | tr '\n' ' ')" = "debit-10 credit-5 " ] &&
    pass "FIFO: a key's messages in order" || fail "FIFO order: $OUT"

# ---- consume: stream mode -------------------------------------------------------------------
run "$C" consume keyed --group s1 --mode stream
check "--mode stream starts a new group at earliest" 0 '^direct$'
[ "$(lines)" -eq 3 ] && pass "stream: all 3 messages" || fail "stream: $(lines) lines"
run "$C" group get keyed --group s1 --mode stream
check "stream: committed (lag 0, no lease held)" 0 '^1 +2 +0 +0 +no$'
run "$C" consume keyed --group s1 --mode stream
check "stream: nothing new" 0
[ -z "$OUT" ] && pass "stream: the committed group gets nothing" || fail "stream redelivered: $OUT"
run "$C" consume keyed --group s2 --mode stream --from latest
check "--from latest: a new group skips the existing messages" 0
[ -z "$OUT" ] && pass "--from latest prints nothing at first" || fail "--from latest printed: $OUT"
run "$C" publish keyed --key u1 fresh
run "$C" consume keyed --group s2 --mode stream --from latest
check "--from latest then sees new messages" 0 '^fresh$'
run "$C" consume keyed --group s3 --mode stream --from earliest --count 1 --json
check "stream --json carries the offset" 0 '^\{"topic":"keyed~[01]","partition":[01],"offset":0,"key":"u[12]",'
run "$C" group get keyed --group s3 --mode stream
check "stream --count 1: no partition left leased" 0 'POSITION'
refute "stream --count 1: no lease held" ' yes$'
# --from TIME: a stream group starts at the first message at or after it.
run "$C" publish timed old
sleep 0.05
run "$C" publish timed new
run "$C" consume timed --group probe --mode stream --json
ts=$(printf '%s\n' "$OUT" | sed -n 's/.*"timestamp":\([0-9]*\).*"value":"new".*/\1/p')
if [ -n "$ts" ]; then
    run "$C" consume timed --group t-ms --mode stream --from "$ts"
    check "--from MS seeks by timestamp" 0 '^new$'
    refute "--from MS skips older messages" '^old$'
    rfc=$(date -u -d "@$((ts / 1000))" +%Y-%m-%dT%H:%M:%S).$(printf '%03d' $((ts % 1000)))Z
    run "$C" consume timed --group t-rfc --mode stream --from "$rfc"
    check "--from RFC 3339 ($rfc)" 0 '^new$'
    refute "--from RFC 3339 skips older messages" '^old$'
else
    fail "could not read a timestamp from consume --json: $OUT"
fi
run "$C" consume delayed --group s4 --mode stream
check "a stream group sees a delayed message at once" 0 '^later$'

# ---- seek ------------------------------------------------------------------------------------
run "$C" seek keyed --group s1 --to earliest
check "seek --to earliest" 0 'keyed: stream group s1 now at earliest'
run "$C" consume keyed --group s1 --mode stream
[ "$(lines)" -eq 4 ] && pass "after seek --to earliest: everything again" || fail "$(lines) lines after seek"
run "$C" seek keyed --group s1 --offset 1 --partition 1
check "seek --offset --partition" 0 'keyed~1: stream group s1 now at offset 1'
run "$C" consume 'keyed~1' --group s1 --mode stream
check "consume TOPIC~P after seek --offset" 0 '^direct$'
refute "seek --offset 1: offset 0 not again" '^a$'
run "$C" seek 'keyed~0' --group s1 --offset 0 --json
check "seek TOPIC~P --offset --json" 0 '^\{\}$'
run "$C" seek keyed --group s1 --to latest
check "seek --to latest" 0 'now at latest'
run "$C" consume keyed --group s1 --mode stream
[ -z "$OUT" ] && pass "after seek --to latest: nothing" || fail "after latest: $OUT"
run "$C" seek timed --group s5 --to "${ts:-0}"
check "seek --to TIME (ms)" 0 'now at the first message at or after'
run "$C" seek timed --group s5 --to 2000-01-01T00:00:00Z
check "seek --to TIME (RFC 3339)" 0 'now at the first message at or after 2000-01-01T00:00:00.000Z'
run "$C" seek no-such-topic --group s1 --to earliest
check "seek on a missing topic: exit 1" 1 '' '^coyote: invalid_input: topic must exist'

# ---- --exec: retries, then the DLQ topic -------------------------------------------------------
run "$C" queue configure jobs --group workers --retry-schedule 100,100 --dlq-topic jobs-dlq
check "queue configure --retry-schedule --dlq-topic" 0 '^retry_schedule: +100,100$'
cat >"$WORK/handler.sh" <<'EOF'
# The value on stdin; fails for "flaky" twice (a counter file), always for "poison".
value=$(cat)
echo "$value attempt=$COYOTE_ATTEMPT" >>"$WORK/handled.log"
case $value in
flaky)
    n=$(cat "$WORK/flaky.count" 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" >"$WORK/flaky.count"
    [ "$n" -gt 2 ]
    ;;
poison) exit 7 ;;
*) exit 0 ;;
esac
EOF
export WORK
run "$C" publish jobs good flaky poison
check "publish three jobs" 0 '^jobs~0 0\.\.3$'
# good: 1 run; flaky: 3 runs (fails twice); poison: 3 runs then the DLQ topic.
run "$C" consume jobs --group workers --follow --count 7 --wait-ms 2000 --exec "sh '$WORK/handler.sh'"
check "--exec: 7 runs end with exit 0" 0
[ "$(grep -c '^flaky' "$WORK/handled.log")" -eq 3 ] && pass "--exec: the flaky job ran 3 times" ||
    fail "flaky ran $(grep -c '^flaky' "$WORK/handled.log") times"
grep -q '^flaky attempt=3$' "$WORK/handled.log" && pass "--exec: COYOTE_ATTEMPT counts deliveries" ||
    fail "no 'flaky attempt=3' in: $(cat "$WORK/handled.log")"
[ "$(grep -c '^poison' "$WORK/handled.log")" -eq 3 ] && pass "--exec: poison ran 1 + len(schedule) times" ||
    fail "poison ran $(grep -c '^poison' "$WORK/handled.log") times"
run "$C" consume jobs-dlq --group inspect
check "the poison job ends in the DLQ topic" 0 '^poison$'
[ "$(lines)" -eq 1 ] && pass "only the poison job is in the DLQ topic" || fail "DLQ holds: $OUT"
run "$C" group get jobs --group workers
check "the work queue is drained (lag 0)" 0 '^lag: +0 messages'
check "the poison job also stays dead in the group (DLQ topic or not)" 0 '^dead: +1$'

# The environment of --exec.
run "$C" publish envt --key order-9 --header Content-Type=text/plain --header x.trace=abc 'the value'
cat >"$WORK/env.sh" <<'EOF'
{
    echo "value=$(cat)"
    echo "topic=$COYOTE_TOPIC partition=$COYOTE_PARTITION offset=$COYOTE_OFFSET"
    echo "msg_id=$COYOTE_MSG_ID key=$COYOTE_KEY attempt=$COYOTE_ATTEMPT"
    echo "timestamp=$COYOTE_TIMESTAMP group=$COYOTE_GROUP mode=$COYOTE_MODE"
    echo "ct=$COYOTE_HEADER_CONTENT_TYPE trace=$COYOTE_HEADER_X_TRACE"
} >"$WORK/env.out"
EOF
run "$C" consume envt --group e --exec "sh '$WORK/env.sh'"
check "--exec with an environment" 0
OUT=$(cat "$WORK/env.out" 2>/dev/null)
RC=0
check "--exec: the value on stdin" 0 '^value=the value$'
check "--exec: COYOTE_TOPIC, COYOTE_PARTITION, COYOTE_OFFSET" 0 '^topic=envt partition=0 offset=0$'
check "--exec: COYOTE_MSG_ID, COYOTE_KEY, COYOTE_ATTEMPT" 0 '^msg_id=0:0 key=order-9 attempt=1$'
check "--exec: COYOTE_TIMESTAMP" 0 '^timestamp=[0-9]{13,} group=e mode=queue$'
check "--exec: COYOTE_HEADER_<NAME> (uppercased, non-alnum → _)" 0 '^ct=text/plain trace=abc$'

# --exec in stream mode: a failure stops without committing, exit non-zero.
run "$C" publish sx s1 s2 s3
run "$C" consume sx --group sg --mode stream --batch-size 10 --exec 'v=$(cat); [ "$v" != s2 ]'
check "stream --exec failure: exit 1, not committed" 1 '' 'not committed'
run "$C" group get sx --group sg --mode stream
check "stream --exec failure: cursor at the failed message, lease released" 0 '^0 +1 +2 +[0-9]+ +no$'
run "$C" consume sx --group sg --mode stream
check "the failed message comes again" 0 '^s2$'

# Leases are extended while a command runs (--lease-ms 300, the command 1.5 s+).
run "$C" publish slow job
cat >"$WORK/slow.sh" <<'EOF'
cat >/dev/null
touch "$WORK/slow.started"
while [ ! -e "$WORK/slow.release" ]; do sleep 0.05; done
EOF
"$C" consume slow --group sl --lease-ms 300 --exec "sh '$WORK/slow.sh'" >"$TMP/slow.out" 2>&1 &
slow_pid=$!
PIDS+=("$slow_pid")
if wait_for_file "$WORK/slow.started"; then
    sleep 0.8
    run "$C" consume slow --group sl
    [ -z "$OUT" ] && pass "--exec keeps extending the lease of a running command" ||
        fail "the message was redelivered while its command ran: $OUT"
else
    fail "the slow command did not start"
fi
touch "$WORK/slow.release"
reap "$slow_pid"
OUT=$(cat "$TMP/slow.out")
check "the slow command's message is acked at the end" 0
run "$C" group get slow --group sl
check "slow: lag 0" 0 '^lag: +0 messages'

# SIGINT: the current message is finished and settled, then exit 0.
run "$C" publish sig m1 m2 m3
cat >"$WORK/sig.sh" <<'EOF'
cat >>"$WORK/sig.out"
echo >>"$WORK/sig.out"
touch "$WORK/sig.started"
while [ ! -e "$WORK/sig.release" ]; do sleep 0.05; done
EOF
"$C" consume sig --group sg --follow --exec "sh '$WORK/sig.sh'" >/dev/null 2>"$TMP/sig.err" &
sig_pid=$!
PIDS+=("$sig_pid")
if wait_for_file "$WORK/sig.started"; then
    kill -INT "$sig_pid"
    sleep 0.2
    touch "$WORK/sig.release"
fi
reap "$sig_pid"
ERR=$(cat "$TMP/sig.err")
OUT=$(cat "$WORK/sig.out" 2>/dev/null)
check "SIGINT during --exec: exit 0 after the current message" 0 '^m1$'
refute "SIGINT: no further message is started" '^m2$'
run "$C" consume sig --group sg
check "SIGINT: the finished message was acked, the rest remain" 0 '^m2$'
refute "SIGINT: m1 is not delivered again" '^m1$'

# A second SIGINT terminates the running command.
rm -f "$WORK/sig.started" "$WORK/sig.release"
run "$C" publish sig2 stuck
"$C" consume sig2 --group sg --follow --exec "sh '$WORK/sig.sh'" >/dev/null 2>"$TMP/sig2.err" &
sig_pid=$!
PIDS+=("$sig_pid")
if wait_for_file "$WORK/sig.started"; then
    kill -INT "$sig_pid"
    sleep 0.2
    kill -INT "$sig_pid"
fi
reap "$sig_pid"
OUT=
ERR=$(cat "$TMP/sig2.err")
check "a second SIGINT terminates the command: exit 130" 130
rm -f "$WORK/sig.started"
touch "$WORK/sig.release"
# An interrupted command did not fail: its message is not nacked (with no
# retry schedule a nack dead-letters it) but given back at once.
run "$C" group get sig2 --group sg
check "a second SIGINT: the interrupted message is not dead-lettered" 0 '^dead: +0$'
check "a second SIGINT: the interrupted message is given back at once (not in flight)" 0 \
    '^in_flight: +0$'
run "$C" consume sig2 --group sg --json
check "a second SIGINT: the interrupted message comes again, attempt 2" 0 \
    '"msg_id":"0:0","attempt":2,.*"value":"stuck"'
# The same in stream mode: exit 130 (not a failed command's exit 1), nothing
# committed, the partition released at the message.
rm -f "$WORK/sig.started" "$WORK/sig.release"
run "$C" publish sig3 s-stuck
"$C" consume sig3 --group sg --mode stream --follow --exec "sh '$WORK/sig.sh'" >/dev/null \
    2>"$TMP/sig3.err" &
sig_pid=$!
PIDS+=("$sig_pid")
if wait_for_file "$WORK/sig.started"; then
    kill -INT "$sig_pid"
    sleep 0.2
    kill -INT "$sig_pid"
fi
reap "$sig_pid"
OUT=
ERR=$(cat "$TMP/sig3.err")
check "stream: a second SIGINT exits 130" 130
[ -z "$ERR" ] && pass "stream: an interrupted command is not reported as failed" ||
    fail "stream: stderr after an interrupt: $ERR"
rm -f "$WORK/sig.started"
touch "$WORK/sig.release"
run "$C" group get sig3 --group sg --mode stream
check "stream: the interrupted message is not committed, the lease released" 0 '^0 +0 +1 +[0-9]+ +no$'

# SIGINT while a --follow receive is waiting.
"$C" consume idle --group ig --follow --wait-ms 300 >"$TMP/idle.out" 2>&1 &
idle_pid=$!
PIDS+=("$idle_pid")
run "$C" publish idle arrived
for _ in $(seq 1 100); do
    grep -q arrived "$TMP/idle.out" && break
    sleep 0.05
done
kill -INT "$idle_pid"
reap "$idle_pid"
OUT=$(cat "$TMP/idle.out")
check "--follow prints what is published meanwhile; SIGINT exits 0" 0 '^arrived$'

# A --follow consumer rides out a server restart.
start_server restart
if [ -n "$PORT" ]; then
    RESTART_URL=http://127.0.0.1:$PORT
    "$C" --server "$RESTART_URL" consume rs --group g --follow --wait-ms 200 \
        >"$TMP/rs.out" 2>"$TMP/rs.err" &
    rs_pid=$!
    PIDS+=("$rs_pid")
    run "$C" --server "$RESTART_URL" publish rs before
    for _ in $(seq 1 200); do
        grep -q before "$TMP/rs.out" && break
        sleep 0.05
    done
    kill -TERM "$SERVER_PID"
    reap "$SERVER_PID"
    for _ in $(seq 1 200); do
        grep -q 'retrying every 200 ms' "$TMP/rs.err" && break
        sleep 0.05
    done
    LISTEN_PORT=$PORT start_server restart
    run "$C" --server "$RESTART_URL" publish rs after
    for _ in $(seq 1 200); do
        grep -q after "$TMP/rs.out" && break
        sleep 0.05
    done
    kill -INT "$rs_pid"
    reap "$rs_pid"
    OUT=$(cat "$TMP/rs.out")
    ERR=$(cat "$TMP/rs.err")
    check "--follow survives a server restart (says so once, then receives again)" 0 \
        '^after$' 'retrying every 200 ms'
    check "--follow: the message from before the restart" 0 '^before$' 'receiving again'
fi

# Printing to a pipe: a message is settled once the reader read it; when the
# reader goes away the rest of the batch is given back at once, and coyote
# exits 0 (invariant 6 of consume.c).
run bash -c "seq 1 500 | '$C' publish piped --batch 500"
check "publish 500 messages to read through a pipe" 0 '^piped~0 0\.\.500$'
run bash -c "'$C' consume piped --group p | head -n 1; echo \"coyote exit \${PIPESTATUS[0]}\""
check "consume | head -n 1: one line" 0 '^1$' ''
check "consume | head -n 1: coyote exits 0 (a closed pipe is a normal stop)" 0 '^coyote exit 0$'
[ -z "$ERR" ] && pass "consume | head -n 1: nothing on stderr" || fail "stderr: $ERR"
[ "$(lines)" -eq 2 ] && pass "consume | head -n 1: only the line head printed" || fail "$(lines) lines"
run "$C" group get piped --group p
check "consume | head -n 1: exactly the message head read is acked" 0 '^lag: +499 messages'
check "consume | head -n 1: the rest of the batch is given back at once" 0 '^in_flight: +0$'
check "consume | head -n 1: nothing is dead-lettered" 0 '^dead: +0$'
run "$C" consume piped --group p --count 1 --json
check "a given-back message comes again (attempt 2)" 0 '"msg_id":"0:1","attempt":2,.*"value":"2"'
run bash -c "'$C' consume piped --group p --json | head -n 3 >/dev/null; echo \"\${PIPESTATUS[0]}\""
check "consume --json | head -n 3: exit 0" 0 '^0$'
run "$C" group get piped --group p
check "consume --json | head -n 3: three more acked" 0 '^lag: +495 messages'
run bash -c "'$C' consume piped --group ps --mode stream | head -n 3 >/dev/null; echo \"\${PIPESTATUS[0]}\""
check "stream: consume | head -n 3 exits 0" 0 '^0$'
run "$C" group get piped --group ps --mode stream
check "stream: consume | head -n 3 commits 3 and releases the partition" 0 '^0 +3 +497 +[0-9]+ +no$'
# A reader that does not read: nothing is settled; SIGINT gives it all back.
mkfifo "$TMP/reader.fifo"
"$C" consume piped --group slow-reader --follow >"$TMP/reader.fifo" 2>"$TMP/reader.err" &
reader_pid=$!
PIDS+=("$reader_pid")
exec 3<"$TMP/reader.fifo"
for _ in $(seq 1 200); do
    run "$C" group get piped --group slow-reader
    grep -Eq '^in_flight: +[1-9]' <<<"$OUT" && break
    sleep 0.05
done
check "a pipe's reader that reads nothing: the batch is in flight" 0 '^in_flight: +100$'
kill -INT "$reader_pid"
reap "$reader_pid"
exec 3<&-
ERR=$(cat "$TMP/reader.err")
OUT=
check "SIGINT while the pipe's reader has not read: exit 0" 0
run "$C" group get piped --group slow-reader
check "nothing the reader did not read is acked" 0 '^lag: +500 messages'
check "what the reader did not read is given back at once" 0 '^in_flight: +0$'
# A message larger than the pipe and a reader that does not read: coyote never
# blocks in a write, so SIGINT still stops it at once.
head -c 300000 /dev/zero | tr '\0' x >"$TMP/big.txt"
echo >>"$TMP/big.txt"
run bash -c "'$C' publish piped-big <'$TMP/big.txt'"
check "publish a 300 KB message" 0 '^piped-big~0 0\.\.1$'
rm -f "$TMP/reader.fifo"
mkfifo "$TMP/reader.fifo"
"$C" consume piped-big --group g >"$TMP/reader.fifo" 2>"$TMP/reader.err" &
reader_pid=$!
PIDS+=("$reader_pid")
exec 3<"$TMP/reader.fifo"
for _ in $(seq 1 200); do
    run "$C" group get piped-big --group g
    grep -Eq '^in_flight: +1$' <<<"$OUT" && break
    sleep 0.05
done
sleep 0.2
kill -INT "$reader_pid"
reap "$reader_pid"
exec 3<&-
ERR=$(cat "$TMP/reader.err")
OUT=
check "a big message to a reader that does not read: SIGINT still stops coyote (exit 0)" 0
run "$C" group get piped-big --group g
check "the big message is not acked but given back" 0 '^lag: +1 messages'
check "the big message is not left in flight" 0 '^in_flight: +0$'
# Other write errors: exit 1 and one line, and the batch is given back.
run bash -c "'$C' consume piped --group full >/dev/full"
check "stdout full: exit 1 and the error" 1 '' '^coyote: writing to stdout: No space left on device$'
run "$C" group get piped --group full
check "stdout full: nothing acked, nothing left in flight" 0 '^in_flight: +0$'
check "stdout full: lag unchanged" 0 '^lag: +500 messages'
run bash -c "'$C' consume piped --group closed >&-"
check "stdout closed: exit 1 and the error (not the client's socket)" 1 '' \
    '^coyote: writing to stdout: Bad file descriptor$'
run bash -c "'$C' topic list >&-"
check "any command with a closed stdout: exit 1 and the error" 1 '' \
    '^coyote: writing to stdout: Bad file descriptor$'

# ---- dlq redrive (no DLQ topic: dead messages stay in the group) -------------------------------
run "$C" publish audit entry-1
run "$C" consume audit --group aud --exec 'exit 1'
check "--exec failure without configuration dead-letters at once" 0
run "$C" group get audit --group aud
check "the message is dead in the group" 0 '^dead: +1$'
run "$C" dlq redrive audit --group aud
check "dlq redrive" 0 'dead-lettered messages are available again'
run "$C" consume audit --group aud
check "a redriven message is delivered again" 0 '^entry-1$'
run "$C" dlq redrive audit --group aud --mode fifo --json
check "dlq redrive --mode fifo --json" 0 '^\{\}$'
run "$C" dlq redrive no-such-topic --group aud
check "dlq redrive on a missing topic: exit 1" 1 '' 'topic must exist'

# ---- queue configure ------------------------------------------------------------------------
run "$C" queue configure pay --group ledger --mode fifo --retry-schedule 500 --max-deliveries 3
check "queue configure --mode fifo --max-deliveries" 0 '^max_deliveries: +3$'
run "$C" queue configure pay --group ledger --mode fifo --json
check "queue configure --json (options left out are reset)" 0 \
    '^\{"retry_schedule":\[\],"dlq_topic":null,"max_deliveries":0\}$'
run "$C" group get jobs --group workers --json
check "group get --json" 0 '"config":\{"retry_schedule":\[100,100\],"dlq_topic":"jobs-dlq","max_deliveries":0\}'

# ---- group -------------------------------------------------------------------------------------
run "$C" group list
check "group list: every topic" 0 '^TOPIC +MODE +GROUP +LAG +LAG_MS +IN_FLIGHT +WAITING_RETRY +DEAD +DELAYED$'
check "group list shows stream, queue and FIFO groups" 0 '^keyed +stream +s1 '
check "group list shows FIFO groups" 0 '^pay +fifo +ledger '
run "$C" group list jobs
check "group list TOPIC" 0 '^jobs +queue +workers +0 '
refute "group list TOPIC: only that topic" '^orders '
run "$C" group list jobs --json
check "group list --json" 0 '^\{"groups":\[\{"topic":"jobs"'
run "$C" group get keyed --group s1 --mode stream
check "group get: lag per partition (partition, position, lag, lag_ms)" 0 '^PARTITION +POSITION +LAG +LAG_MS +LEASED$'
run "$C" group get numbers --group q3 --mode queue
check "group get --mode queue: floors" 0 '^0 +20 +230 +[0-9]+$'
run "$C" group get keyed --group nobody --mode stream
check "group get of a missing group: exit 1" 1 '' '^coyote: invalid_input: consumer group must exist'

# ---- topic -----------------------------------------------------------------------------------
run "$C" topic list
check "topic list" 0 '^orders$'
run "$C" topic list --json
check "topic list --json" 0 '^\{"topics":\['
run "$C" topic --json list
check "a global option between a group and its subcommand" 0 '^\{"topics":\['
run "$C" topic get keyed
check "topic get: partitions" 0 '^1 +0 +3 +3 +[0-9]+ +[0-9]{4}-'
check "topic get: groups with lag" 0 '^stream +s1 +0 +0$'
run "$C" topic get keyed --json
check "topic get --json" 0 '^\{"topic":"keyed","partitions":\['
run "$C" topic configure keyed --partitions 3 --json
check "topic configure --json" 0 '^\{"partitions":3\}$'
run "$C" topic configure keyed --partitions 2
check "topic configure cannot decrease: exit 1" 1 '' \
    '^coyote: invalid_input: Cannot decrease partition count. Only increases are allowed.$'
run "$C" topic configure keyed
check "topic configure without --partitions: exit 2" 2 '' 'needs --partitions'
run "$C" topic trim numbers --before-offset 100 --partition 0
check "topic trim --before-offset --partition" 0 '^numbers~0 now starts at offset 100$'
run "$C" topic trim 'numbers~0' --before-offset 150 --json
check "topic trim TOPIC~P --before-offset --json" 0 '^\{"partitions":\[\{"partition":0,"start_offset":150\}\]\}$'
run "$C" topic trim numbers --before-timestamp 2999-01-01T00:00:00Z
check "topic trim --before-timestamp (RFC 3339)" 0 '^numbers~0 now starts at offset 250$'
run "$C" topic trim small --before-timestamp 1
check "topic trim --before-timestamp (ms)" 0 '^small~0 now starts at offset 0$'
run "$C" topic trim numbers --before-offset 1
check "topic trim --before-offset without a partition: exit 2" 2 '' 'needs a partition'

# ---- ns, --namespace, COYOTE_NAMESPACE ----------------------------------------------------------
run "$C" ns configure billing --period-ms 604800000 --size-bytes 1000000000 --topic-bytes 1073741824
check "ns configure --period-ms --size-bytes --topic-bytes" 0 '^topic_bytes: +1073741824$'
run "$C" ns get billing
check "ns get" 0 '^period_ms: +604800000$'
run "$C" ns get billing --json
check "ns get --json" 0 '"retention":\{"period_ms":604800000,"size_bytes":1000000000,"topic_bytes":1073741824\}'
run "$C" ns configure billing
check "ns configure without options: unlimited" 0 '^period_ms: +unlimited$'
run "$C" ns list
check "ns list" 0 '^billing +- +- +- +[0-9]{4}-'
run "$C" ns list --json
check "ns list --json" 0 '^\{"namespaces":\['
run "$C" publish invoices inv-1 --namespace billing
check "publish --namespace" 0 '^invoices~0 0\.\.1$'
run "$C" --namespace billing topic list
check "--namespace before the command" 0 '^invoices$'
run env COYOTE_NAMESPACE=billing "$C" consume invoices --group acc
check "COYOTE_NAMESPACE" 0 '^inv-1$'
run "$C" topic list
refute "the default namespace does not see billing's topics" '^invoices$'
run "$C" --namespace default topic list
check "--namespace default is the default namespace" 0 '^orders$'
run "$C" topic list --namespace nowhere
check "an unknown namespace: exit 1" 1 '' '^coyote: not_found: '

# ---- no server, --token ------------------------------------------------------------------------
# A port that was free a moment ago: nothing listens there.
run "$C" --server "http://127.0.0.1:1" topic list
check "no server: exit 1 and how to start one" 1 '' \
    '^coyote: no server at http://127.0.0.1:1: start one with `make run` or `build/coyoted`, or use --server file:///path for an embedded data directory$'
if ! (exec 3<>/dev/tcp/127.0.0.1/8624) 2>/dev/null; then
    run env -u COYOTE_URL "$C" topic list
    check "no server on the default URL" 1 '' \
        '^coyote: no server at http://127.0.0.1:8624: start one with `make run` or `build/coyoted`'
else
    echo "skip: something listens on 127.0.0.1:8624; the default-URL case is not run"
fi
start_server secured --admin-token s3cret
if [ -n "$PORT" ]; then
    SECURED=http://127.0.0.1:$PORT
    run "$C" --server "$SECURED" topic list
    check "no token: exit 1, auth_required" 1 '' '^coyote: auth_required: .*--token'
    run "$C" --server "$SECURED" --token wrong topic list
    check "a wrong --token: exit 1, invalid_token" 1 '' '^coyote: invalid_token: '
    run "$C" --server "$SECURED" --token s3cret publish guarded ok
    check "--token" 0 '^guarded~0 0\.\.1$'
    run env COYOTE_TOKEN=s3cret COYOTE_URL="$SECURED" "$C" consume guarded --group g
    check "COYOTE_TOKEN and COYOTE_URL" 0 '^ok$'
fi

# ---- --server file:///dir (embedded) -----------------------------------------------------------
FILE_URL=file://$TMP/embedded
run "$C" --server "$FILE_URL" publish local one two three
check "file://: publish" 0 '^local~0 0\.\.3$'
IN=$'four\nfive'
run "$C" --server "$FILE_URL" publish local
check "file://: publish from stdin" 0 '^local~0 3\.\.5$'
run "$C" --server "$FILE_URL" consume local --group g --count 2
check "file://: consume --count" 0 '^two$'
run env COYOTE_URL="$FILE_URL" "$C" consume local --group g --json
check "file://: COYOTE_URL, consume --json (state kept across runs)" 0 '"msg_id":"0:2".*"value":"three"'
run "$C" --server "$FILE_URL" consume local --group st --mode stream --count 1
check "file://: stream" 0 '^one$'
run "$C" --server "$FILE_URL" topic list
check "file://: topic list" 0 '^local$'
run "$C" --server "$FILE_URL" topic configure local --partitions 2
check "file://: topic configure" 0 '^local: 2 partitions$'
run "$C" --server "$FILE_URL" ns configure archive --period-ms 1000
check "file://: ns configure" 0 '^name: +archive$'
run "$C" --server "$FILE_URL" queue configure fjobs --group w --retry-schedule 50 --dlq-topic fjobs-dlq
check "file://: queue configure" 0 '^dlq_topic: +fjobs-dlq$'
run "$C" --server "$FILE_URL" publish fjobs bad
run "$C" --server "$FILE_URL" consume fjobs --group w --follow --count 2 --wait-ms 2000 --exec 'exit 1'
check "file://: --exec failures (retry, then DLQ)" 0
run "$C" --server "$FILE_URL" consume fjobs-dlq --group x
check "file://: the failed job is in the DLQ topic" 0 '^bad$'
run "$C" --server "$FILE_URL" group list
check "file://: group list" 0 '^fjobs +queue +w +0 '
run "$C" --server "$FILE_URL" topic get nope
check "file://: broker errors too: exit 1" 1 '' '^coyote: invalid_input: topic must exist'
run "$C" --server "file://$TMP/main" topic list
check "file:// on a running server's directory: exit 1, in use" 1 '' '^coyote: file://.*coyoted'

# ---- docs/cli.md: every example runs -------------------------------------------------------------
if [ ! -f "$DOC" ]; then
    fail "docs/cli.md is missing"
    finish
fi
# The "coyote --help" section is the binary's text.
"$C" --help >"$TMP/help.txt" 2>&1
awk '
    /^<!-- coyote --help -->$/ { armed = 1; next }
    armed && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }
' "$DOC" >"$TMP/help.doc"
if diff -u "$TMP/help.txt" "$TMP/help.doc" >"$TMP/help.diff"; then
    pass "docs/cli.md shows coyote --help verbatim"
else
    fail "docs/cli.md's 'coyote --help' block differs from the binary (- binary, + doc):"
    sed 's/^/    | /' "$TMP/help.diff"
fi
# doc_normalize — stdin to stdout with what differs from run to run made
# equal: times (RFC 3339 and 13-digit ms), durations ("N ms"), the cells of
# a LAG_MS column, and the widths of table columns (runs of spaces).
doc_normalize() {
    sed -E -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z/<time>/g' \
        -e 's/[0-9]{13}/<ms>/g' -e 's/[0-9]+ ms/<n> ms/g' -e 's/ +/ /g' -e 's/ $//' |
        awk '
            $0 == "" { col = 0 }
            {
                n = split($0, f, " ")
                if (col && n >= col) {
                    f[col] = "<n>"
                    line = f[1]
                    for (i = 2; i <= n; i++) line = line " " f[i]
                    $0 = line
                }
                for (i = 1; i <= n; i++) if (f[i] == "LAG_MS") col = i
                print
            }'
}
start_server docs
if [ -n "$PORT" ]; then
    DOCS_DIR=$TMP/docs-cwd
    mkdir -p "$DOCS_DIR"
    # Each example's documented output (the lines after it) goes to doc-expect.LINE.
    mkdir -p "$TMP/doc-expect"
    awk -v dir="$TMP/doc-expect" '
        /^```/ {
            if (inside) { inside = 0 } else { inside = ($0 == "```sh"); expect = 0 }
            out = ""
            next
        }
        !inside { next }
        /^# expect exit [0-9]+/ { expect = $4; out = ""; next }
        /^\$ / {
            printf "%d\t%d\t%s\n", NR, expect, substr($0, 3); expect = 0
            out = dir "/" NR
            printf "" >out
            next
        }
        out != "" { print >out }
    ' "$DOC" >"$TMP/doc-examples.tsv"
    n_examples=$(wc -l <"$TMP/doc-examples.tsv")
    [ "$n_examples" -gt 20 ] && pass "docs/cli.md has $n_examples runnable examples" ||
        fail "docs/cli.md has only $n_examples runnable examples"
    while IFS=$'\t' read -r lineno want line; do
        limit=30
        case $line in *--follow*) limit=2 ;; esac
        (cd "$DOCS_DIR" && COYOTE_URL=http://127.0.0.1:$PORT PATH=$BUILD:$PATH \
            timeout --preserve-status -s INT "$limit" bash -c "$line") \
            >"$TMP/doc.out" 2>&1 </dev/null
        RC=$?
        OUT=$(cat "$TMP/doc.out")
        ERR=
        why=
        [ "$RC" -eq "$want" ] || why="exit status $RC, expected $want"
        if ! diff <(doc_normalize <"$TMP/doc-expect/$lineno") <(doc_normalize <"$TMP/doc.out") \
            >"$TMP/doc.diff"; then
            why="${why:+$why; }its output is not the documented one (- doc, + actual):"
            OUT=$(cat "$TMP/doc.diff")
        fi
        verdict "docs/cli.md:$lineno: $line" "$why"
    done <"$TMP/doc-examples.tsv"
fi

finish
