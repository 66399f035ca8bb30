#!/usr/bin/env bash
# test_docs.sh — keeps docs/api.md true: runs every `curl` example of the
# reference, in order, against a fresh coyoted.
#
#   bash tests/integration/test_docs.sh BUILD_DIR
#
# What it checks:
#   1. Every line of a fenced code block of docs/api.md that starts with
#      `curl ` is run (top to bottom, against one fresh server started with
#      --test-clock on a free port, the address 127.0.0.1:8624 rewritten to
#      it) with -w '%{http_code}' appended. The status must be 2xx, unless a
#      comment line `# expect NNN` precedes the line in its code block: then
#      it must be exactly NNN.
#   2. Every operation of the server's dispatch table (src/server/api.c) has
#      at least one curl example.
#   3. The "Configuration" block of the doc is exactly `coyoted --help`.
#   4. The server is still running after the last example.
# The examples run through `eval` (they are shell lines with quoted JSON):
# the doc is part of this repository and is trusted like the tests.
#
# Environment: DOCS_VERBOSE=1 prints each response body too; COYOTE_DOCS_FILE
# checks another copy of the doc.
# Prints "N passed, M failed" as its last line; exits 1 on any failure.
set -u

BUILD=${1:?usage: test_docs.sh BUILD_DIR}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOC=${COYOTE_DOCS_FILE:-$ROOT/docs/api.md} # override: to test the test
DOC_NAME=${DOC#"$ROOT"/}
API_C=$ROOT/src/server/api.c
COYOTED=$BUILD/coyoted
DEFAULT_ADDR=127.0.0.1:8624

# pass/fail/finish, make_tmp, reap, start_server, verdict, refute
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for need in "$COYOTED" "$DOC"; do
    if [ ! -e "$need" ]; then
        fail "$need is missing (build the coyoted target; docs/api.md must exist)"
        finish
    fi
done
if ! command -v curl >/dev/null 2>&1; then
    fail "curl is not installed (Debian package curl)"
    finish
fi

make_tmp docs

# ---- 3. the Configuration block is `coyoted --help` ----------------------------
# The block is the fenced code block right after the line
# "<!-- coyoted --help -->".
"$COYOTED" --help >"$TMP/help.txt" 2>&1
awk '
    /^<!-- coyoted --help -->$/ { armed = 1; next }
    armed && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }
' "$DOC" >"$TMP/help.doc"
if [ ! -s "$TMP/help.doc" ]; then
    fail "configuration: no '<!-- coyoted --help -->' code block in docs/api.md"
elif diff -u "$TMP/help.txt" "$TMP/help.doc" >"$TMP/help.diff"; then
    pass "configuration block matches coyoted --help"
else
    fail "configuration block differs from coyoted --help (- binary, + doc):"
    sed 's/^/    | /' "$TMP/help.diff"
fi

# ---- the examples --------------------------------------------------------------
# One record per curl line: "<doc line number><TAB><expected status or -><TAB><line>".
awk '
    /^[[:space:]]*```/ { inside = !inside; expect = "-"; next }
    !inside { next }
    /^# expect [0-9][0-9][0-9]([^0-9]|$)/ { expect = $3; next }
    /^curl / { printf "%d\t%s\t%s\n", NR, expect, $0; expect = "-" }
' "$DOC" >"$TMP/examples.tsv"
total=$(wc -l <"$TMP/examples.tsv")
if [ "$total" -eq 0 ]; then
    fail "no curl examples found in docs/api.md"
    finish
fi

# ---- 2. every operation has an example -----------------------------------------
ops=$(sed -n 's/^ *{"\(v1\.[a-z.-]*\)".*/\1/p' "$API_C")
if [ -z "$ops" ]; then
    fail "no operations found in src/server/api.c (has the table moved?)"
fi
for op in $ops; do
    if grep -qF "/api/$op " "$TMP/examples.tsv" || grep -qF "/api/$op'" "$TMP/examples.tsv" ||
        grep -qE "/api/$op\$" "$TMP/examples.tsv"; then
        pass "operation $op has an example"
    else
        fail "operation $op has no curl example in docs/api.md"
    fi
done

# ---- start the server ------------------------------------------------------------
start_server data --test-clock --log-level info
[ -n "$PORT" ] || finish
echo "coyoted is listening on port $PORT (data in $TMP/data)"

# ---- 1. run them in order ----------------------------------------------------------
n=0
while IFS=$'\t' read -r lineno expect line; do
    n=$((n + 1))
    case $line in
    *'$('* | *'`'*)
        fail "example $n ($DOC_NAME:$lineno): command substitution is not allowed: $line"
        continue
        ;;
    esac
    cmd=${line//"$DEFAULT_ADDR"/127.0.0.1:$PORT}
    eval "$cmd --max-time 30 -w '%{http_code}'" >"$TMP/out" 2>&1 </dev/null
    rc=$?
    out=$(tr -d '\000' <"$TMP/out")
    status=${out: -3}
    body=${out%???}
    what="example $n ($DOC_NAME:$lineno)"
    if [ "$rc" -ne 0 ]; then
        fail "$what: curl exited $rc: $line"
        printf '%s\n' "$out" | sed 's/^/    | /'
        continue
    fi
    if [ "$expect" = "-" ]; then
        case $status in
        2[0-9][0-9]) ok=1 ;;
        *) ok=0 ;;
        esac
        want=2xx
    else
        [ "$status" = "$expect" ] && ok=1 || ok=0
        want=$expect
    fi
    if [ "$ok" -eq 1 ]; then
        pass "$what: $status"
        if [ "${DOCS_VERBOSE:-0}" = 1 ]; then
            echo "    \$ $line"
            printf '%s\n' "$body" | sed 's/^/    | /'
        fi
    else
        fail "$what: status $status, expected $want: $line"
        printf '%s\n' "$body" | sed 's/^/    | /'
    fi
done <"$TMP/examples.tsv"

# ---- 4. the server survived ------------------------------------------------------------
if kill -0 "$SERVER_PID" 2>/dev/null; then
    pass "coyoted still running after $n examples"
else
    wait "$SERVER_PID"
    fail "coyoted exited (status $?) during the examples; its log:"
    tail -n 30 "$TMP/data.err" | sed 's/^/    | /'
    SERVER_PID=
fi
finish
