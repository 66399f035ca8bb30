#!/usr/bin/env bash
# test_check.sh — coyote-check against data directories written by
# coyote-mkdata: a clean tree, then one kind of damage per copy.
#
#   bash tests/integration/test_check.sh BUILD_DIR
#
# Exits non-zero when any case fails, naming each failed case.
set -u

BUILD=${1:?usage: test_check.sh BUILD_DIR}
CHECK=$BUILD/coyote-check
MKDATA=$BUILD/coyote-mkdata
for bin in "$CHECK" "$MKDATA"; do
    if [ ! -x "$bin" ]; then
        echo "FAIL: $bin is missing (build the coyote-check and coyote-mkdata targets)"
        exit 1
    fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/coyote-check-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

failures=0
OUT=
RC=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# run_check CASE EXPECTED_RC ARGS... — runs the checker into $OUT / $RC.
run_check() {
    local name=$1 want=$2
    shift 2
    OUT=$("$CHECK" "$@" 2>&1)
    RC=$?
    if [ "$RC" -ne "$want" ]; then
        fail "$name: exit status $RC, expected $want; output:"
        printf '%s\n' "$OUT" | sed 's/^/    | /'
        return 1
    fi
    echo "ok: $name (exit $RC)"
    return 0
}

# expect CASE REGEX — $OUT must match the extended regex.
expect() {
    if ! printf '%s\n' "$OUT" | grep -Eq -- "$2"; then
        fail "$1: output lacks /$2/; output:"
        printf '%s\n' "$OUT" | sed 's/^/    | /'
    fi
}

# reject CASE REGEX — $OUT must not match.
reject() {
    if printf '%s\n' "$OUT" | grep -Eq -- "$2"; then
        fail "$1: output unexpectedly matches /$2/; output:"
        printf '%s\n' "$OUT" | sed 's/^/    | /'
    fi
}

# flip FILE OFFSET — invert one byte in place.
flip() {
    python3 - "$1" "$2" <<'EOF'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    if len(b) != 1:
        sys.exit("flip: %s has no byte at %d" % (path, off))
    f.seek(off)
    f.write(bytes([b[0] ^ 0xFF]))
EOF
}

# fresh NAME — a copy of the pristine store ns-0 at $TMP/NAME; prints its path.
fresh() {
    rm -rf "${TMP:?}/$1"
    cp -a "$STORE" "$TMP/$1"
    echo "$TMP/$1"
}

# A fingerprint of every file (name, size, mtime, content) to prove the
# checker writes nothing.
fingerprint() {
    (cd "$1" && find . -type f -printf '%p %s %T@\n' | sort && find . -type f -print0 |
        sort -z | xargs -0 sha256sum)
}

MK_OPTS=(--partitions 4 --messages 60 --batch 2 --parts-per-publish 2 --size 100
         --segment-bytes 4096 --checkpoint-every 20 --commands-every 5)

# ---- a clean tree: stores two levels down ------------------------------------
DATA=$TMP/data
if ! "$MKDATA" --namespaces 2 "${MK_OPTS[@]}" "$DATA/tenant-a/queues" >"$TMP/mk.log" 2>&1; then
    echo "FAIL: coyote-mkdata could not write the data directory:"
    cat "$TMP/mk.log"
    exit 1
fi
STORE=$DATA/tenant-a/queues/ns-0
nseg=$(ls "$STORE/journal" | wc -l)
if [ "$nseg" -lt 3 ]; then
    fail "setup: expected several journal segments, got $nseg"
fi

before=$(fingerprint "$DATA")
if run_check "clean tree" 0 "$DATA"; then
    expect "clean tree" "^store .*/tenant-a/queues/ns-0$"
    expect "clean tree" "^store .*/tenant-a/queues/ns-1$"
    expect "clean tree" "journal: $nseg segments, [0-9]+ records, [0-9]+ bytes, positions \[0, [0-9]+\)"
    expect "clean tree" "records: first at 0, last at [0-9]+, durable hint [0-9]+"
    expect "clean tree" "publishes: [0-9]+ records, 240 messages, 4 partitions"
    expect "clean tree" "indexes: 4 files, 240 entries"
    expect "clean tree" "snapshots: 2, covering [0-9]+, [0-9]+; in force: [0-9]+"
    expect "clean tree" "result: ok \(errors: 0, warnings: 0\)"
    expect "clean tree" "checked 2 stores \(errors: 0, warnings: 0\)"
    reject "clean tree" "^(error|warning):"
fi
if [ "$before" != "$(fingerprint "$DATA")" ]; then
    fail "clean tree: the checker changed files in the data directory"
fi

if run_check "verbose" 0 --verbose "$STORE"; then
    n=$(printf '%s\n' "$OUT" | grep -Ec "^  partition [0-9a-f]{16}: journal offsets \[0, 60\) \(60 messages\), index \[0, 60\), checkpoint \[0, 60\)$")
    [ "$n" -eq 4 ] || fail "verbose: expected 4 partition lines, got $n"
    n=$(printf '%s\n' "$OUT" | grep -c "^  segment ")
    [ "$n" -eq "$nseg" ] || fail "verbose: expected $nseg segment lines, got $n"
fi
if run_check "quiet" 0 --quiet "$STORE"; then
    [ -z "$OUT" ] || fail "quiet: expected no output on a clean store, got: $OUT"
fi

# ---- damage: one byte inside a record of a sealed segment ----------------------
d=$(fresh rec-flip)
seg=$(ls "$d/journal" | head -n 1)
flip "$d/journal/$seg" $((64 + 40)) # inside the first record's body
if run_check "record flip in a sealed segment" 1 "$d"; then
    expect "record flip" "^error: .*/journal/$seg: offset 64: record at position 0 is damaged"
    expect "record flip" "result: DAMAGED"
fi

# ---- damage: one byte of an index entry ------------------------------------------
d=$(fresh index-flip)
idx=$(ls "$d/index" | head -n 1)
flip "$d/index/$idx" $((64 + 32 * 2 + 5))
if run_check "index entry flip" 1 "$d"; then
    expect "index entry flip" "^error: .*/index/$idx: offset 128: entry for offset 2 fails its checksum"
fi

# ---- damage: a truncated snapshot -------------------------------------------------
d=$(fresh snap-cut)
snap=$(ls "$d/snap" | tail -n 1)
size=$(stat -c %s "$d/snap/$snap")
truncate -s $((size - 3)) "$d/snap/$snap"
if run_check "truncated snapshot" 1 "$d"; then
    expect "truncated snapshot" "^error: .*/snap/$snap: offset [0-9]+: snapshot does not decode"
    expect "truncated snapshot" "\(damaged\)"
fi

# ---- damage: a segment missing from the middle ------------------------------------
d=$(fresh seg-gap)
seg=$(ls "$d/journal" | sed -n 2p)
rm "$d/journal/$seg"
if run_check "missing middle segment" 1 "$d"; then
    expect "missing middle segment" "does not follow segment"
fi

# ---- a torn tail: garbage right after the end of the last segment's data -----------
d=$(fresh torn)
run_check "torn setup" 0 "$d"
end=$(printf '%s\n' "$OUT" | sed -nE 's/.*positions \[[0-9]+, ([0-9]+)\).*/\1/p')
last=$(ls "$d/journal" | tail -n 1)
base=$((10#${last%.seg}))
printf 'this is not a journal record, it is a torn write' |
    dd of="$d/journal/$last" bs=1 seek=$((64 + end - base)) conv=notrunc status=none
before=$(fingerprint "$d")
if run_check "torn tail" 0 "$d"; then
    expect "torn tail" "^warning: .*/journal/$last: offset $((64 + end - base)): torn tail: 48 bytes after position $end would be cut at recovery"
    reject "torn tail" "^error:"
fi
if [ "$before" != "$(fingerprint "$d")" ]; then
    fail "torn tail: the checker changed files"
fi
# Recovery must agree: after an open/close the tail is gone and all is clean.
if "$MKDATA" --single --partitions 4 --messages 0 --segment-bytes 4096 "$d" >"$TMP/mk.log" 2>&1; then
    if run_check "torn tail after recovery" 0 "$d"; then
        reject "torn tail after recovery" "^(error|warning):"
        expect "torn tail after recovery" "positions \[0, $end\)"
    fi
else
    fail "torn tail: recovery (coyote-mkdata) failed: $(cat "$TMP/mk.log")"
fi

# ---- a crash: journal synced, process gone without closing --------------------------
d=$TMP/crashed
if "$MKDATA" --single "${MK_OPTS[@]}" "$d" >"$TMP/mk.log" 2>&1 &&
    "$MKDATA" --single "${MK_OPTS[@]}" --messages 30 --checkpoint-every 0 --crash "$d" \
        >"$TMP/mk.log" 2>&1; then
    if run_check "crashed store" 0 --verbose "$d"; then
        expect "crashed store" "journal offsets \[0, 90\) \(90 messages\), index \[0, 60\), checkpoint \[0, 60\)"
        expect "crashed store" "are not indexed yet; recovery indexes them"
        reject "crashed store" "^error:"
    fi
else
    fail "crashed store: coyote-mkdata failed: $(cat "$TMP/mk.log")"
fi

# ---- usage and bad arguments ----------------------------------------------------------
if run_check "unknown directory" 2 "$TMP/does-not-exist"; then
    expect "unknown directory" "does-not-exist: No such file or directory"
fi
mkdir -p "$TMP/empty/sub"
if run_check "no store" 1 "$TMP/empty"; then
    expect "no store" "no store found"
fi
run_check "no arguments" 2 && expect "no arguments" "^usage: coyote-check"
run_check "bad option" 2 --frobnicate "$DATA" && expect "bad option" "^usage: coyote-check"
run_check "help" 0 --help && expect "help" "Exit status: 0 no damage"

if [ "$failures" -ne 0 ]; then
    echo "test_check: $failures failure(s)"
    exit 1
fi
echo "test_check: all cases passed"
