#!/usr/bin/env python3
"""server_test.py — black-box integration tests of the real coyoted binary
against the HTTP contract (../shared/API.md).

    python3 tests/integration/server_test.py --build BUILD_DIR [--only SUBSTR] [--list] [-v]

Each test starts its own coyoted (port 0, a fresh temp data dir, the port read
from the "coyoted ready ... (port P)" line on stderr — no sleeps), talks HTTP
with the standard library (JSON) and python3-msgpack (MessagePack), and stops
the server again. The last line printed is "N passed, M failed"; the exit
status is non-zero when any test failed.

Where the server contradicts API.md the test asserts API.md's behaviour and the
spot is marked "BUG:" in a comment.
"""
import argparse
import base64
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

try:
    import msgpack
except ImportError:  # reported as a failure of every test that needs it
    msgpack = None

COYOTED = None
TMP_ROOT = None
VERBOSE = False
READY_RE = re.compile(r"coyoted ready in \d+ ms: listening on \S+ \(port (\d+)\)")
MAX_TIMESTAMP = 253402207200998


# ---- the server under test ----------------------------------------------------------------


class Server:
    """One coyoted process. start() may be called again after stop()/kill9()
    on the same data directory (a restart)."""

    def __init__(self, fsync="always", test_clock=False, token=None, extra=(), data_dir=None):
        self.fsync = fsync
        self.test_clock = test_clock
        self.token = token
        self.extra = list(extra)
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="data-", dir=TMP_ROOT)
        self.proc = None
        self.port = None
        self.lines = []  # stderr of the current run
        self.all_lines = []  # stderr of every run
        self._reader = None

    def start(self, timeout=15.0):
        cmd = [COYOTED, "--listen", "127.0.0.1:0", "--data-dir", self.data_dir, "--fsync", self.fsync]
        if self.test_clock:
            cmd.append("--test-clock")
        if self.token:
            cmd += ["--admin-token", self.token]
        cmd += self.extra
        self.lines = []
        self.port = None
        ready = threading.Event()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        proc = self.proc

        def read_stderr():
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                self.all_lines.append(line)
                if VERBOSE:
                    print("    [coyoted] " + line, flush=True)
                m = READY_RE.search(line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()  # EOF: exited (or closed stderr) before/after ready

        self._reader = threading.Thread(target=read_stderr, daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or self.port is None:
            self.kill9()
            raise AssertionError("coyoted did not become ready in %.0f s; log:\n%s"
                                 % (timeout, "\n".join(self.lines[-20:])))
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pid(self):
        return self.proc.pid

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Signal the process and wait for it; returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("coyoted did not exit within %.0f s of signal %d" % (timeout, sig))
        if self._reader:
            self._reader.join(5)
        return rc

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL
            self.proc.wait()
        if self._reader:
            self._reader.join(5)

    def close(self):
        try:
            if self.running():
                self.stop(timeout=15)
        except AssertionError:
            pass
        finally:
            self.kill9()
            if self.own_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- HTTP --

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def call(self, op, body=None, fmt="json", accept=None, token=None, headers=None, raw=None,
             content_type=None, method="POST", timeout=30, conn=None, auth=True):
        """POST /api/<op>. body is encoded as fmt ('json' | 'msgpack') unless raw bytes are
        given. content_type overrides the header ('' = send none). Returns a Resp."""
        h = {}
        if raw is None:
            raw = encode(body if body is not None else {}, fmt)
        if content_type is None:
            content_type = "application/msgpack" if fmt == "msgpack" else "application/json"
        if content_type != "":
            h["Content-Type"] = content_type
        if accept is not None:
            h["Accept"] = accept
        tok = token if token is not None else (self.token if auth else None)
        if tok:
            h["Authorization"] = "Bearer " + tok
        if headers:
            h.update(headers)
        return request(self.port, method, "/api/" + op, raw, h, timeout=timeout, conn=conn)

    def ok(self, op, body=None, **kw):
        """A call that must answer 200; returns the decoded body."""
        r = self.call(op, body, **kw)
        if r.status != 200:
            raise AssertionError("%s %s: expected 200, got %s" % (op, short(body), r))
        return r.body

    def get(self, path, headers=None):
        return request(self.port, "GET", path, None, headers or {})


def encode(obj, fmt):
    if fmt == "msgpack":
        need_msgpack()
        return msgpack.packb(obj, use_bin_type=True)
    return json.dumps(obj).encode()


def need_msgpack():
    if msgpack is None:
        raise AssertionError("python3-msgpack is not installed (apt-get install python3-msgpack)")


class Resp:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        self.ctype = headers.get("content-type", "")
        self.fmt = None
        self.body = None
        self.decode_error = None
        try:
            if self.ctype.startswith("application/msgpack"):
                need_msgpack()
                self.fmt = "msgpack"
                self.body = msgpack.unpackb(raw, raw=False, strict_map_key=False)
            elif self.ctype.startswith("application/json"):
                self.fmt = "json"
                self.body = json.loads(raw.decode("utf-8"))
        except Exception as e:  # a body that does not parse is reported by the asserts
            self.decode_error = e

    def __repr__(self):
        b = self.body if self.fmt else self.raw[:300]
        return "HTTP %d (%s) %s" % (self.status, self.ctype or "no content-type", short(b, 600))


def short(x, n=300):
    s = repr(x)
    return s if len(s) <= n else s[:n] + "..."


def request(port, method, path, body, headers, timeout=30, conn=None):
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        raw = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, raw)
    finally:
        if own:
            c.close()


def raw_exchange(port, head, body_chunks=(), timeout=30):
    """Sends a hand-built request (head bytes, then body chunks) on one socket and
    reads one response. A server that answers early and stops reading is fine."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(head)
        try:
            for ch in body_chunks:
                s.sendall(ch)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = http.client.HTTPResponse(s)
        resp.begin()
        raw = resp.read()
        return Resp(resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw)
    finally:
        s.close()


# ---- asserts --------------------------------------------------------------------------------


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def eq(got, want, what=""):
    if got != want:
        raise AssertionError("%s: got %s, want %s" % (what or "value", short(got, 800), short(want, 800)))


def expect_error(r, status, code, location=None, detail=None, what=""):
    """r is an error response with this status and code (and location / a detail
    containing the given sentence, when given)."""
    pre = (what + ": ") if what else ""
    check(r.status == status, "%sexpected HTTP %d %s, got %s" % (pre, status, code, r))
    check(isinstance(r.body, dict), "%serror body is not an object: %s" % (pre, r))
    eq(r.body.get("code"), code, pre + "error code of " + repr(r))
    check(isinstance(r.body.get("detail"), str) and r.body["detail"],
          "%serror body lacks a detail sentence: %s" % (pre, r))
    if location is not None:
        eq(r.body.get("location"), location, pre + "error location of " + repr(r))
    if detail is not None:
        check(detail in r.body["detail"], "%sdetail %r does not contain %r" % (pre, r.body["detail"], detail))


def wait_for(pred, timeout=10.0, what="condition"):
    """Polls pred() (no fixed sleeps in the happy case) until true."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


def djb2(key):
    h = 5381
    for b in key.encode():
        h = (h * 33 + b) & 0xFFFFFFFF
    return h


def bg(fn, *args, **kw):
    """Runs fn in a thread; returns (thread, box) where box['r'] / box['e'] / box['t']
    (seconds it took) are set when it finishes."""
    box = {}

    def run():
        t0 = time.monotonic()
        try:
            box["r"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            box["e"] = e
        box["t"] = time.monotonic() - t0

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, box


def joined(th, box, timeout):
    th.join(timeout)
    check(not th.is_alive(), "background call still running after %.1f s" % timeout)
    if "e" in box:
        raise box["e"]
    return box["r"]


def read_partition(s, topic_p, group, ns=None, fmt="json"):
    """Reads a partition from its beginning with a fresh stream group, committing
    as it goes; returns the list of messages."""
    out = []
    while True:
        body = {"topic": topic_p, "consumer_group": group, "batch_size": 1000,
                "default_starting_position": "earliest"}
        if ns:
            body["namespace"] = ns
        msgs = s.ok("v1.msgs.stream.receive", body, fmt=fmt)["msgs"]
        if not msgs:
            return out
        out += msgs
        cb = {"topic": topic_p, "consumer_group": group, "offset": msgs[-1]["offset"]}
        if ns:
            cb["namespace"] = ns
        s.ok("v1.msgs.stream.commit", cb)


def group_exists(s, topic, mode, group):
    r = s.call("v1.msgs.group.get", {"topic": topic, "mode": mode, "consumer_group": group})
    return r.status == 200


# ---- the test registry ---------------------------------------------------------------------

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


# ---- health, routes, content types ---------------------------------------------------------


@test
def health_ping():
    with Server() as s:
        r = s.get("/api/v1.health.ping")
        eq(r.status, 200, "ping status")
        eq(r.fmt, "json", "ping format")
        eq(r.body, {"ok": True}, "ping body")
        r = s.get("/api/v1.health.ping", {"Accept": "application/msgpack"})
        eq((r.status, r.fmt, r.body), (200, "msgpack", {"ok": True}), "ping in msgpack")


@test
def unknown_path_404_and_wrong_method_405():
    with Server() as s:
        expect_error(s.call("v1.msgs.no-such-op", {}), 404, "not_found", what="unknown op")
        expect_error(s.get("/nope"), 404, "not_found", what="GET /nope")
        expect_error(s.call("v1.msgs.publish", None, method="GET", raw=b""), 405,
                     "method_not_allowed", what="GET on an operation")
        expect_error(s.call("v1.msgs.publish", {"topic": "t", "msgs": []}, method="PUT"), 405,
                     "method_not_allowed", what="PUT on an operation")
        expect_error(s.call("v1.msgs.publish", {"topic": "t", "msgs": []}, method="DELETE"), 405,
                     "method_not_allowed", what="DELETE on an operation")
        r = request(s.port, "POST", "/api/v1.health.ping", b"{}", {"Content-Type": "application/json"})
        expect_error(r, 405, "method_not_allowed", what="POST on the health ping")
        r = request(s.port, "POST", "/metrics", b"{}", {"Content-Type": "application/json"})
        expect_error(r, 405, "method_not_allowed", what="POST on /metrics")
        # Error bodies follow the negotiation rule too.
        r = s.call("v1.msgs.no-such-op", {}, accept="application/msgpack")
        eq(r.fmt, "msgpack", "404 body format with Accept: application/msgpack")
        expect_error(r, 404, "not_found")


@test
def unknown_path_and_method_errors_in_msgpack_for_msgpack_requests():
    # BUG: API.md §1: "the response is MessagePack ... when there is no Accept and
    # the request was MessagePack ... Error bodies follow the same rule." The
    # HTTP layer answers 404 / 405 in JSON for a MessagePack request without Accept.
    with Server() as s:
        r = s.call("v1.msgs.no-such-op", {}, fmt="msgpack")
        eq(r.fmt, "msgpack", "format of a 404 to a MessagePack request without Accept (%r)" % r)
        expect_error(r, 404, "not_found")
        r = s.call("v1.msgs.publish", {"topic": "t", "msgs": []}, fmt="msgpack", method="PUT")
        eq(r.fmt, "msgpack", "format of a 405 to a MessagePack request without Accept (%r)" % r)
        expect_error(r, 405, "method_not_allowed")


@test
def content_type_required_and_checked():
    with Server() as s:
        body = {"topic": "ct", "msgs": []}
        expect_error(s.call("v1.msgs.publish", body, content_type=""), 400, "missing_content_type",
                     what="no Content-Type")
        for ct in ("text/plain", "application/jsonx", "application/json-seq", "application/x-msgpack2",
                   "multipart/form-data", "json"):
            expect_error(s.call("v1.msgs.publish", body, content_type=ct), 400, "invalid_content_type",
                         what="Content-Type " + ct)
        for ct in ("application/json; charset=utf-8", "application/json;charset=UTF-8",
                   "application/json"):
            eq(s.call("v1.msgs.publish", body, content_type=ct).status, 200, "Content-Type " + ct)
        for ct in ("application/msgpack", "application/msgpack; foo=bar"):
            r = s.call("v1.msgs.publish", body, fmt="msgpack", content_type=ct)
            eq((r.status, r.body), (200, {"topics": []}), "Content-Type " + ct)


@test
def content_negotiation():
    need_msgpack()
    with Server() as s:
        s.ok("v1.msgs.publish", {"topic": "neg", "msgs": [{"value": "x"}]})
        body = {"topic": "neg", "msgs": []}
        cases = [
            # (request format, Accept, expected response format)
            ("json", None, "json"),
            ("msgpack", None, "msgpack"),
            ("json", "application/msgpack", "msgpack"),
            ("msgpack", "application/json", "json"),
            ("json", "text/html, application/msgpack;q=0.5", "msgpack"),
            ("json", "application/json;q=0.9 , application/msgpack ; q=0.1", "msgpack"),
            ("json", "  application/msgpack  ", "msgpack"),
            ("msgpack", "application/msgpack;q=0", "json"),
            ("msgpack", "application/msgpack; q=0.0, application/json", "json"),
            ("json", "application/msgpack;q=0.000", "json"),
            ("msgpack", "*/*", "json"),
            ("msgpack", "text/plain", "json"),
            ("json", "application/json, application/msgpack;q=1.0", "msgpack"),
        ]
        for fmt, accept, want in cases:
            r = s.call("v1.msgs.publish", body, fmt=fmt, accept=accept)
            what = "request %s, Accept %r" % (fmt, accept)
            eq(r.status, 200, what + " status")
            eq(r.fmt, want, what + " response format")
            eq(r.body, {"topics": []}, what + " body")
            # The same rule for error bodies (422: missing msgs).
            r = s.call("v1.msgs.publish", {"topic": "neg"}, fmt=fmt, accept=accept)
            eq(r.fmt, want, what + " error body format")
            expect_error(r, 422, "invalid_data", location="msgs", what=what)
        # invalid_encoding for a broken MessagePack body is MessagePack too.
        r = s.call("v1.msgs.publish", raw=b"\xc1", fmt="msgpack")
        eq(r.fmt, "msgpack", "format of invalid_encoding for a MessagePack request")
        expect_error(r, 400, "invalid_encoding")
        # missing/invalid Content-Type with Accept msgpack
        r = s.call("v1.msgs.publish", body, content_type="text/plain", accept="application/msgpack")
        eq(r.fmt, "msgpack", "invalid_content_type body with Accept msgpack")
        expect_error(r, 400, "invalid_content_type")


@test
def msgpack_nil_for_absent_values():
    need_msgpack()
    with Server() as s:
        ns = s.ok("v1.msgs.namespace.configure", {"name": "mp"}, fmt="msgpack")
        eq(ns["retention"], {"period_ms": None, "size_bytes": None, "topic_bytes": None},
           "msgpack retention with nil values (keys present)")
        s.ok("v1.msgs.publish", {"topic": "mpn", "msgs": [{"value": b"\x00\x01"}]}, fmt="msgpack")
        msgs = s.ok("v1.msgs.stream.receive", {"topic": "mpn", "consumer_group": "g",
                                               "default_starting_position": "earliest"},
                    fmt="msgpack")["msgs"]
        eq(len(msgs), 1, "messages")
        m = msgs[0]
        check("scheduled_at" in m and m["scheduled_at"] is None, "scheduled_at is nil: %r" % m)
        check("key" in m and m["key"] is None, "key is nil: %r" % m)
        eq(m["value"], b"\x00\x01", "value as bin")
        eq(m["headers"], {}, "headers")
        q = s.ok("v1.msgs.queue.configure", {"topic": "mpn", "consumer_group": "q"}, fmt="msgpack")
        check("dlq_topic" in q and q["dlq_topic"] is None, "dlq_topic nil: %r" % q)


# ---- encodings and 422 -----------------------------------------------------------------------


@test
def invalid_encoding():
    with Server() as s:
        for raw, what in ((b"", "empty JSON body"), (b"{", "truncated JSON"), (b"{} x", "trailing garbage"),
                          (b"nope", "not JSON"), (b"{'a': 1}", "single quotes"),
                          (b'{"topic": "\xff"}', "invalid UTF-8 in JSON")):
            expect_error(s.call("v1.msgs.publish", raw=raw), 400, "invalid_encoding", what=what)
        for raw, what in ((b"", "empty msgpack body"), (b"\xc1", "reserved msgpack byte"),
                          (b"\x82\xa5topic", "truncated msgpack map"),
                          (b"\x80\x80", "two msgpack values")):
            expect_error(s.call("v1.msgs.publish", raw=raw, fmt="msgpack"), 400, "invalid_encoding",
                         what=what)


@test
def invalid_data_422_with_location():
    with Server(test_clock=True) as s:
        s.ok("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "x"}]})
        big_key = "k" * 1025
        cases = [
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": {}}]}, "msgs[0].value"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": [1, 256]}]}, "msgs[0].value[1]"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": [1, -1]}]}, "msgs[0].value[1]"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": [1], "key": 5}]}, "msgs[0].key"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "a"}, {}]}, "msgs[1].value"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "a", "headers": {"h": 1}}]},
             "msgs[0].headers.h"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "a", "key": big_key}]}, "msgs[0].key"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "a", "delay_ms": 2592000001}]},
             "msgs[0].delay_ms"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "a", "headers": {"h%d" % i: "v" for i in range(65)}}]},
             "msgs[0].headers"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "a", "headers": {"h": "v" * 4097}}]},
             "msgs[0].headers"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "a", "headers": {"h" * 4097: "v"}}]},
             "msgs[0].headers"),
            ("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "x" * (1024 * 1024 + 1)}]}, "msgs[0].value"),
            ("v1.msgs.publish", {"topic": "v", "msgs": "x"}, "msgs"),
            ("v1.msgs.publish", {"topic": "v"}, "msgs"),
            ("v1.msgs.publish", {"msgs": []}, "topic"),
            ("v1.msgs.publish", {"topic": 5, "msgs": []}, "topic"),
            ("v1.msgs.publish", {"topic": "", "msgs": []}, "topic"),
            ("v1.msgs.publish", {"topic": "t" * 65, "msgs": []}, "topic"),
            ("v1.msgs.publish", {"topic": "a\u0001b", "msgs": []}, "topic"),
            ("v1.msgs.publish", {"topic": "v~64", "msgs": []}, "topic"),
            ("v1.msgs.publish", {"topic": "v~x", "msgs": []}, "topic"),
            ("v1.msgs.publish", {"namespace": 7, "topic": "v", "msgs": []}, "namespace"),
            ("v1.msgs.namespace.configure", {"name": "bad name"}, "name"),
            ("v1.msgs.namespace.configure", {"name": ""}, "name"),
            ("v1.msgs.namespace.configure", {"name": "n" * 257}, "name"),
            ("v1.msgs.namespace.configure", {"name": "r", "retention": {"period_ms": "1"}},
             "retention.period_ms"),
            ("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "bad group"}, "consumer_group"),
            ("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g" * 65}, "consumer_group"),
            ("v1.msgs.stream.receive", {"topic": "v"}, "consumer_group"),
            ("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g", "batch_size": 0}, "batch_size"),
            ("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g", "batch_size": -1}, "batch_size"),
            ("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g", "batch_size": 1.5}, "batch_size"),
            ("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g", "batch_size": "1"}, "batch_size"),
            ("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g", "lease_duration_ms": 0},
             "lease_duration_ms"),
            ("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g",
                                        "lease_duration_ms": 12 * 3600 * 1000 + 1}, "lease_duration_ms"),
            ("v1.msgs.queue.receive", {"topic": "v", "consumer_group": "g", "batch_wait_ms": 3600001},
             "batch_wait_ms"),
            ("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g",
                                        "default_starting_position": "middle"}, "default_starting_position"),
            ("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g", "value_encoding": "hex"},
             "value_encoding"),
            ("v1.msgs.stream.commit", {"topic": "v", "consumer_group": "g", "offset": 0}, "topic"),
            ("v1.msgs.stream.commit", {"topic": "v~0", "consumer_group": "g"}, "offset"),
            ("v1.msgs.stream.seek", {"topic": "v", "consumer_group": "g", "timestamp": MAX_TIMESTAMP + 1},
             "timestamp"),
            ("v1.msgs.stream.seek", {"topic": "v", "consumer_group": "g", "position": "middle"}, "position"),
            ("v1.msgs.queue.ack", {"topic": "v", "consumer_group": "g", "msg_ids": ["x"]}, "msg_ids[0]"),
            ("v1.msgs.queue.ack", {"topic": "v", "consumer_group": "g", "msg_ids": [5]}, "msg_ids[0]"),
            ("v1.msgs.queue.ack", {"topic": "v", "consumer_group": "g"}, "msg_ids"),
            ("v1.msgs.queue.configure", {"topic": "v", "consumer_group": "g",
                                         "retry_schedule": list(range(1, 102))}, "retry_schedule"),
            ("v1.msgs.queue.configure", {"topic": "v", "consumer_group": "g",
                                         "retry_schedule": [7 * 86400000 + 1]}, "retry_schedule[0]"),
            ("v1.msgs.group.get", {"topic": "v", "mode": "sideways", "consumer_group": "g"}, "mode"),
            ("v1.test.clock.advance", {"ms": -5}, "ms"),
            ("v1.test.clock.advance", {}, "ms"),
            ("v1.test.clock.advance", {"ms": MAX_TIMESTAMP}, "ms"),  # past the largest timestamp
        ]
        for op, body, loc in cases:
            expect_error(s.call(op, body), 422, "invalid_data", location=loc,
                         what="%s %s" % (op, short(body, 120)))
        # Body that is not an object: 422 (no location required).
        for raw in (b"[1]", b"5", b'"x"', b"null"):
            expect_error(s.call("v1.msgs.publish", raw=raw), 422, "invalid_data", what="body " + raw.decode())
        # A duplicate key in one object, JSON and MessagePack.
        expect_error(s.call("v1.msgs.publish", raw=b'{"topic":"v","topic":"w","msgs":[]}'), 422,
                     "invalid_data", what="duplicate JSON key")
        if msgpack:
            dup = (b"\x83" + msgpack.packb("topic") + msgpack.packb("v") + msgpack.packb("msgs")
                   + msgpack.packb([]) + msgpack.packb("topic") + msgpack.packb("w"))
            expect_error(s.call("v1.msgs.publish", raw=dup, fmt="msgpack"), 422, "invalid_data",
                         what="duplicate msgpack key")
        if msgpack:  # a u64 over a field's bound (MessagePack carries all of u64)
            r = s.call("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g",
                                                  "lease_duration_ms": 2 ** 64 - 1}, fmt="msgpack")
            expect_error(r, 422, "invalid_data", location="lease_duration_ms", what="msgpack u64 max")
            r = s.call("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "g", "batch_size": -3},
                       fmt="msgpack")
            expect_error(r, 422, "invalid_data", location="batch_size", what="msgpack negative int")
        # A rejected request changes nothing (the call is atomic).
        before = s.ok("v1.msgs.topic.get", {"topic": "v"})["partitions"][0]["end_offset"]
        expect_error(s.call("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "ok"}, {"value": 3.5}]}),
                     422, "invalid_data", location="msgs[1].value")
        after = s.ok("v1.msgs.topic.get", {"topic": "v"})["partitions"][0]["end_offset"]
        eq(after, before, "end offset after a rejected publish")
        # Unknown fields are ignored; null is the same as absent.
        r = s.ok("v1.msgs.publish", {"topic": "v", "msgs": [{"value": "u", "whatever": [1]}],
                                     "future_field": {"x": 1}, "namespace": None, "idempotency_key": None})
        eq(len(r["topics"]), 1, "publish with unknown fields")
        # batch_size above the maximum (but within 65535) is capped, not an error.
        eq(s.call("v1.msgs.stream.receive", {"topic": "v", "consumer_group": "big", "batch_size": 65535}).status,
           200, "batch_size 65535")


@test
def json_u64_integers_are_data_errors():
    # API.md §2: offsets and durations are u64 and a value over a field's bound is 422
    # ("never overflow"); §1: invalid_encoding is only for a body that is not valid JSON.
    # Any u64 reads as an integer (as in MessagePack); above 2^64 - 1 it is 422 too.
    with Server() as s:
        s.ok("v1.msgs.publish", {"topic": "u64", "msgs": [{"value": "x"}]})
        for num, loc in (("18446744073709551615", "lease_duration_ms"), ("9223372036854775808", "lease_duration_ms"),
                         ("18446744073709551616", "lease_duration_ms"), ("100000000000000000000000", "batch_wait_ms")):
            raw = ('{"topic":"u64","consumer_group":"g","%s":%s}' % (loc, num)).encode()
            expect_error(s.call("v1.msgs.stream.receive", raw=raw), 422, "invalid_data", location=loc,
                         what="%s = %s" % (loc, num))
        # an offset above 2^63 - 1 is an offset, in JSON as in MessagePack
        for fmt in ("json", "msgpack") if msgpack else ("json",):
            raw = b'{"topic":"u64~0","consumer_group":"big","offset":9223372036854775808}'
            if fmt == "msgpack":
                raw = msgpack.packb({"topic": "u64~0", "consumer_group": "big", "offset": 2 ** 63})
            eq(s.call("v1.msgs.stream.seek", raw=raw, fmt=fmt).status, 200, "seek to 2^63 (%s)" % fmt)


@test
def json_string_value_with_nul():
    # BUG: "\u0000" is valid JSON and API.md §2 stores a string value as its UTF-8 bytes;
    # the server answers 400 invalid_encoding ("\u0000 is not allowed without JSON_ALLOW_NUL").
    with Server() as s:
        r = s.call("v1.msgs.publish", raw=b'{"topic":"nul","msgs":[{"value":"a\\u0000b"}]}')
        eq(r.status, 200, "publish of a string value with U+0000 (%r)" % r)
        m = read_partition(s, "nul~0", "r")
        eq(m[0]["value"], [97, 0, 98], "the value's bytes")


# ---- namespaces ---------------------------------------------------------------------------------


@test
def namespaces():
    with Server(test_clock=True) as s:
        a = s.ok("v1.msgs.namespace.configure", {"name": "ns-a.b/c_d=e+f"})
        eq(set(a), {"name", "retention", "created", "updated"}, "namespace keys")
        eq(a["name"], "ns-a.b/c_d=e+f", "name")
        eq(a["retention"], {"period_ms": None, "size_bytes": None, "topic_bytes": None}, "default retention")
        check(isinstance(a["created"], int) and a["created"] > 0, "created is ms: %r" % a)
        eq(a["updated"], a["created"], "updated == created on creation")
        s.ok("v1.test.clock.advance", {"ms": 5000})
        b = s.ok("v1.msgs.namespace.configure",
                 {"name": "ns-a.b/c_d=e+f", "retention": {"msg_age_ms": 60000, "global_bytes": 10 ** 6}})
        eq(b["retention"], {"period_ms": 60000, "size_bytes": 10 ** 6, "topic_bytes": None}, "aliases")
        eq(b["created"], a["created"], "created kept on upsert")
        check(b["updated"] >= a["created"] + 5000, "updated moved with the clock: %r vs %r" % (b, a))
        c = s.ok("v1.msgs.namespace.configure", {"name": "ns-a.b/c_d=e+f", "retention": {"topic_bytes": 5000}})
        eq(c["retention"], {"period_ms": None, "size_bytes": None, "topic_bytes": 5000},
           "retention is replaced, not merged")
        g = s.ok("v1.msgs.namespace.get", {"name": "ns-a.b/c_d=e+f"})
        eq(g, c, "namespace.get")
        expect_error(s.call("v1.msgs.namespace.get", {"name": "missing"}), 400, "not_found")
        s.ok("v1.msgs.namespace.configure", {"name": "aaa"})
        lst = s.ok("v1.msgs.namespace.list", {})["namespaces"]
        names = [n["name"] for n in lst]
        check("default" in names and "aaa" in names and "ns-a.b/c_d=e+f" in names, "list: %r" % names)
        eq(names, sorted(names), "namespace.list sorted")
        for n in lst:
            eq(set(n), {"name", "retention", "created", "updated"}, "list entry keys")
        # namespace field of data operations
        r = s.ok("v1.msgs.publish", {"namespace": "aaa", "topic": "t", "msgs": [{"value": "in aaa"}]})
        eq(r["topics"][0]["start_offset"], 0, "first offset in aaa")
        r = s.ok("v1.msgs.publish", {"namespace": None, "topic": "t", "msgs": [{"value": "in default"}]})
        eq(r["topics"][0]["start_offset"], 0, "first offset in default (a different topic)")
        expect_error(s.call("v1.msgs.publish", {"namespace": "default", "topic": "t", "msgs": []}),
                     400, "no_explicit_default_namespace")
        expect_error(s.call("v1.msgs.stream.receive", {"namespace": "default", "topic": "t",
                                                       "consumer_group": "g"}),
                     400, "no_explicit_default_namespace", what="receive")
        expect_error(s.call("v1.msgs.publish", {"namespace": "nope", "topic": "t", "msgs": []}),
                     400, "not_found", what="publish to an unknown namespace")
        expect_error(s.call("v1.msgs.queue.receive", {"namespace": "nope", "topic": "t",
                                                      "consumer_group": "g"}),
                     400, "not_found", what="receive from an unknown namespace")
        msgs = read_partition(s, "t~0", "rd", ns="aaa")
        eq([bytes(m["value"]) for m in msgs], [b"in aaa"], "namespaces keep separate topics")


# ---- topics ------------------------------------------------------------------------------------------


@test
def topics():
    with Server() as s:
        s.ok("v1.msgs.publish", {"topic": "tp", "msgs": [{"value": "a"}, {"value": "b"}]})
        t = s.ok("v1.msgs.topic.get", {"topic": "tp"})
        eq(set(t), {"topic", "partitions", "bytes", "oldest_timestamp", "groups"}, "topic.get keys")
        eq(t["topic"], "tp", "topic name")
        eq(len(t["partitions"]), 1, "default partition count")
        p0 = t["partitions"][0]
        eq((p0["partition"], p0["start_offset"], p0["end_offset"]), (0, 0, 2), "partition 0 offsets")
        check(p0["bytes"] > 0 and isinstance(p0["oldest_timestamp"], int), "bytes/oldest: %r" % p0)
        eq(t["groups"], {"stream": [], "queue": [], "fifo": []}, "no groups yet")
        eq(s.ok("v1.msgs.topic.configure", {"topic": "tp", "partitions": 3}), {"partitions": 3}, "grow")
        eq(s.ok("v1.msgs.topic.configure", {"topic": "tp", "partitions": 3}), {"partitions": 3}, "equal")
        expect_error(s.call("v1.msgs.topic.configure", {"topic": "tp", "partitions": 2}), 400,
                     "invalid_input", detail="Cannot decrease partition count. Only increases are allowed.")
        for n in (0, 65, -1):
            expect_error(s.call("v1.msgs.topic.configure", {"topic": "tp", "partitions": n}), 400,
                         "invalid_input", detail="Partition count must be between 1 and 64.",
                         what="partitions=%d" % n)
        t = s.ok("v1.msgs.topic.get", {"topic": "tp"})
        eq([p["partition"] for p in t["partitions"]], [0, 1, 2], "partitions after growing")
        eq([p["end_offset"] for p in t["partitions"][1:]], [0, 0], "new partitions empty")
        check(t["partitions"][1]["oldest_timestamp"] is None, "oldest_timestamp null when empty")
        # configure creates a topic; topic.list is sorted
        eq(s.ok("v1.msgs.topic.configure", {"topic": "new-one", "partitions": 64}), {"partitions": 64}, "64")
        s.ok("v1.msgs.stream.receive", {"topic": "by-receive", "consumer_group": "g"})
        lst = s.ok("v1.msgs.topic.list", {})["topics"]
        for name in ("tp", "new-one", "by-receive"):
            check(name in lst, "topic.list lacks %s: %r" % (name, lst))
        eq(lst, sorted(lst), "topic.list sorted")
        # trim: the records below the point go; offsets are never renumbered
        s.ok("v1.msgs.publish", {"topic": "tp~0", "msgs": [{"value": str(i)} for i in range(3)]})
        s.ok("v1.msgs.stream.seek", {"topic": "tp", "consumer_group": "pre", "position": "earliest"})
        tr = s.ok("v1.msgs.topic.trim", {"topic": "tp~0", "before_offset": 3})
        eq(tr, {"partitions": [{"partition": 0, "start_offset": 3}]}, "trim answer")
        t = s.ok("v1.msgs.topic.get", {"topic": "tp"})
        eq((t["partitions"][0]["start_offset"], t["partitions"][0]["end_offset"]), (3, 5), "after trim")
        msgs = read_partition(s, "tp~0", "after-trim")
        eq([m["offset"] for m in msgs], [3, 4], "stream reads from the new start")
        m = s.ok("v1.msgs.stream.receive", {"topic": "tp~0", "consumer_group": "pre"})["msgs"]
        eq([x["offset"] for x in m], [3, 4], "a cursor below the trim point skips the gap")
        q = s.ok("v1.msgs.queue.receive", {"topic": "tp~0", "consumer_group": "qt"})["msgs"]
        eq(sorted(m["msg_id"] for m in q), ["0:3", "0:4"], "a new queue group starts at the earliest retained")
        r = s.ok("v1.msgs.publish", {"topic": "tp~0", "msgs": [{"value": "next"}]})
        eq(r["topics"], [{"topic": "tp~0", "start_offset": 5, "offset": 6}], "offsets continue after trim")
        # trim of a bare topic by timestamp addresses every partition
        s.ok("v1.msgs.publish", {"topic": "tp~1", "msgs": [{"value": "x"}]})
        tr = s.ok("v1.msgs.topic.trim", {"topic": "tp", "before_timestamp": MAX_TIMESTAMP})
        eq(tr, {"partitions": [{"partition": 0, "start_offset": 6}, {"partition": 1, "start_offset": 1},
                               {"partition": 2, "start_offset": 0}]}, "trim by timestamp")


# ---- publish -----------------------------------------------------------------------------------------


@test
def publish_partitioning_and_offsets():
    with Server() as s:
        s.ok("v1.msgs.topic.configure", {"topic": "pp", "partitions": 4})
        keys = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "k1", "k2"]
        msgs = [{"value": "%s-%d" % (k, i), "key": k} for i in range(2) for k in keys]
        r = s.ok("v1.msgs.publish", {"topic": "pp", "msgs": msgs})
        eq(set(r), {"topics"}, "publish answer keys (no 'duplicate' unless true)")
        expect = {}
        for m in msgs:
            expect.setdefault(djb2(m["key"]) % 4, []).append(m)
        parts = [int(e["topic"].rsplit("~", 1)[1]) for e in r["topics"]]
        eq(parts, sorted(expect), "one entry per partition that received messages, ascending")
        for e in r["topics"]:
            p = int(e["topic"].rsplit("~", 1)[1])
            eq(e["topic"], "pp~%d" % p, "entry topic")
            eq(set(e), {"topic", "start_offset", "offset"}, "entry keys")
            eq(e["start_offset"], 0, "first offsets")
            eq(e["offset"] - e["start_offset"], len(expect[p]), "offset is one past the last")
        for p, want in expect.items():
            got = read_partition(s, "pp~%d" % p, "rd")
            eq([bytes(m["value"]).decode() for m in got], [m["value"] for m in want],
               "partition %d holds its keys' messages in request order" % p)
            eq([m["offset"] for m in got], list(range(len(want))), "consecutive offsets")
            eq([m["key"] for m in got], [m["key"] for m in want], "keys returned")
            check(len({m["timestamp"] for m in got}) == 1, "one timestamp per publish call")
        # group_key alias lands like key
        r = s.ok("v1.msgs.publish", {"topic": "pp", "msgs": [{"value": "g", "group_key": "alpha"}]})
        eq(r["topics"][0]["topic"], "pp~%d" % (djb2("alpha") % 4), "group_key alias partition")
        # keyless: the server picks partitions; everything is stored
        r = s.ok("v1.msgs.publish", {"topic": "pp", "msgs": [{"value": str(i)} for i in range(12)]})
        eq(sum(e["offset"] - e["start_offset"] for e in r["topics"]), 12, "keyless messages all stored")
        eq([e["topic"] for e in r["topics"]], sorted(e["topic"] for e in r["topics"]), "ascending")
        # topic~p: all to p
        r = s.ok("v1.msgs.publish", {"topic": "pp~2", "msgs": [{"value": "x"}, {"value": "y"}]})
        eq(len(r["topics"]), 1, "one entry")
        eq(r["topics"][0]["topic"], "pp~2", "explicit partition")
        eq(r["topics"][0]["offset"] - r["topics"][0]["start_offset"], 2, "two messages")
        expect_error(s.call("v1.msgs.publish", {"topic": "pp~1", "msgs": [{"value": "x", "key": "k"}]}),
                     400, "invalid_input", detail="msg key cannot be specified alongside a specific partition")
        expect_error(s.call("v1.msgs.publish", {"topic": "pp~4", "msgs": [{"value": "x"}]}),
                     400, "invalid_input", detail="partition out of range")
        expect_error(s.call("v1.msgs.publish", {"topic": "nosuch~0", "msgs": [{"value": "x"}]}),
                     400, "invalid_input", detail="topic does not exist")
        # empty msgs
        eq(s.ok("v1.msgs.publish", {"topic": "pp", "msgs": []}), {"topics": []}, "empty msgs")
        # headers round trip; timestamps never go down
        s.ok("v1.msgs.publish", {"topic": "hd", "msgs": [{"value": "h", "headers": {"a": "1", "b-c": "two"}}]})
        s.ok("v1.msgs.publish", {"topic": "hd", "msgs": [{"value": "h2"}]})
        got = read_partition(s, "hd~0", "rd")
        eq(got[0]["headers"], {"a": "1", "b-c": "two"}, "headers")
        check(got[1]["timestamp"] >= got[0]["timestamp"], "timestamps non-decreasing")


@test
def value_forms_and_encodings():
    need_msgpack()
    with Server() as s:
        s.ok("v1.msgs.publish", {"topic": "vf", "msgs": [{"value": [0, 1, 255]}, {"value": "héllo"},
                                                        {"value": []}, {"value": ""}]})
        s.ok("v1.msgs.publish", {"topic": "vf", "msgs": [{"value": b"\x00\xffbin"}, {"value": "strñ"},
                                                        {"value": [7, 8]}]}, fmt="msgpack")
        want = [b"\x00\x01\xff", "héllo".encode(), b"", b"", b"\x00\xffbin", "strñ".encode(), b"\x07\x08"]
        base = {"topic": "vf", "default_starting_position": "earliest", "batch_size": 100}
        js = s.ok("v1.msgs.stream.receive", dict(base, consumer_group="j"))["msgs"]
        for m, w in zip(js, want):
            eq(m["value"], list(w), "JSON output is an array of ints")
        eq(len(js), len(want), "count")
        mp = s.ok("v1.msgs.stream.receive", dict(base, consumer_group="m"), fmt="msgpack")["msgs"]
        for m, w in zip(mp, want):
            check(isinstance(m["value"], bytes), "msgpack output is bin: %r" % (m["value"],))
            eq(m["value"], w, "msgpack value")
        b64 = s.ok("v1.msgs.stream.receive", dict(base, consumer_group="b", value_encoding="base64"))["msgs"]
        for m, w in zip(b64, want):
            eq(m["value"], base64.b64encode(w).decode(), "base64 value")
        u8 = s.ok("v1.msgs.stream.receive", dict(base, consumer_group="u", value_encoding="utf8"))["msgs"]
        eq(u8[1]["value"], "héllo", "utf8 value")
        eq(u8[5]["value"], "strñ", "utf8 value of a msgpack str")
        q = s.ok("v1.msgs.queue.receive", {"topic": "vf", "consumer_group": "q", "value_encoding": "base64",
                                           "batch_size": 1})["msgs"]
        eq(q[0]["value"], base64.b64encode(want[0]).decode(), "queue receive honours value_encoding")


@test
def delay_ms_scheduling():
    with Server(test_clock=True) as s:
        s.ok("v1.msgs.publish", {"topic": "dl", "msgs": [{"value": "later", "delay_ms": 60000},
                                                        {"value": "now0", "delay_ms": 0},
                                                        {"value": "now"}]})
        st = read_partition(s, "dl~0", "st")
        eq([bytes(m["value"]) for m in st], [b"later", b"now0", b"now"], "stream sees delayed messages at once")
        ts = st[0]["timestamp"]
        eq([m["scheduled_at"] for m in st], [ts + 60000, ts, None], "scheduled_at")
        q = s.ok("v1.msgs.queue.receive", {"topic": "dl", "consumer_group": "q"})["msgs"]
        eq(sorted(bytes(m["value"]) for m in q), [b"now", b"now0"], "queue hides the delayed message")
        s.ok("v1.msgs.queue.ack", {"topic": "dl", "consumer_group": "q", "msg_ids": [m["msg_id"] for m in q]})
        f = s.ok("v1.msgs.fifo.receive", {"topic": "dl", "consumer_group": "q"})["msgs"]
        eq(sorted(bytes(m["value"]) for m in f), [b"now", b"now0"], "fifo hides the delayed message")
        s.ok("v1.test.clock.advance", {"ms": 60000})
        q = s.ok("v1.msgs.queue.receive", {"topic": "dl", "consumer_group": "q"})["msgs"]
        eq([bytes(m["value"]) for m in q], [b"later"], "delayed message due after its delay")
        eq(q[0]["scheduled_at"], ts + 60000, "scheduled_at in queue mode")


# ---- stream mode -----------------------------------------------------------------------------------


@test
def stream_mode():
    with Server(test_clock=True) as s:
        s.ok("v1.msgs.publish", {"topic": "sm", "msgs": [{"value": "0"}, {"value": "1"}]})
        eq(s.ok("v1.msgs.stream.receive", {"topic": "sm", "consumer_group": "late"}), {"msgs": []},
           "a new group starts at latest by default")
        s.ok("v1.msgs.publish", {"topic": "sm", "msgs": [{"value": "2"}]})
        m = s.ok("v1.msgs.stream.receive", {"topic": "sm", "consumer_group": "late"})["msgs"]
        eq([x["offset"] for x in m], [2], "latest group sees new messages")
        eq(set(m[0]), {"offset", "topic", "value", "headers", "timestamp", "scheduled_at", "key"}, "msg keys")
        eq(m[0]["topic"], "sm~0", "partition topic")
        # earliest, batch_size
        g = {"topic": "sm", "consumer_group": "e", "default_starting_position": "earliest"}
        m = s.ok("v1.msgs.stream.receive", dict(g, batch_size=2))["msgs"]
        eq([x["offset"] for x in m], [0, 1], "earliest, batch_size 2")
        # leased: another receive in the group finds no free partition
        expect_error(s.call("v1.msgs.stream.receive", g), 400, "no_available_leases")
        # commit below the last handed out keeps the lease
        eq(s.ok("v1.msgs.stream.commit", {"topic": "sm~0", "consumer_group": "e", "offset": 0}), {}, "commit")
        expect_error(s.call("v1.msgs.stream.receive", g), 400, "no_available_leases", what="lease kept")
        s.ok("v1.msgs.stream.commit", {"topic": "sm~0", "consumer_group": "e", "offset": 1})
        m = s.ok("v1.msgs.stream.receive", g)["msgs"]
        eq([x["offset"] for x in m], [2], "next receive starts at offset + 1")
        # lease expiry: at-least-once redelivery from the cursor
        m = s.ok("v1.msgs.stream.receive", dict(g, consumer_group="lx", lease_duration_ms=1000))["msgs"]
        eq([x["offset"] for x in m], [0, 1, 2], "lx first")
        expect_error(s.call("v1.msgs.stream.receive", dict(g, consumer_group="lx")), 400, "no_available_leases")
        s.ok("v1.test.clock.advance", {"ms": 1001})
        m = s.ok("v1.msgs.stream.receive", dict(g, consumer_group="lx"))["msgs"]
        eq([x["offset"] for x in m], [0, 1, 2], "redelivered after the lease expired (cursor never moved)")
        # nothing to read: no lease taken
        s.ok("v1.msgs.stream.commit", {"topic": "sm~0", "consumer_group": "e", "offset": 2})
        eq(s.ok("v1.msgs.stream.receive", g), {"msgs": []}, "nothing new")
        eq(s.ok("v1.msgs.stream.receive", g), {"msgs": []}, "an empty partition is not leased")
        # seek
        eq(s.ok("v1.msgs.stream.seek", {"topic": "sm", "consumer_group": "e", "position": "earliest"}), {}, "seek")
        eq([x["offset"] for x in s.ok("v1.msgs.stream.receive", g)["msgs"]], [0, 1, 2], "after seek earliest")
        s.ok("v1.msgs.stream.seek", {"topic": "sm~0", "consumer_group": "e", "offset": 1})  # also releases
        eq([x["offset"] for x in s.ok("v1.msgs.stream.receive", g)["msgs"]], [1, 2], "after seek offset 1")
        s.ok("v1.msgs.stream.seek", {"topic": "sm", "consumer_group": "e", "position": "latest"})
        eq(s.ok("v1.msgs.stream.receive", g), {"msgs": []}, "after seek latest")
        s.ok("v1.msgs.stream.seek", {"topic": "sm", "consumer_group": "e", "timestamp": 0})
        eq([x["offset"] for x in s.ok("v1.msgs.stream.receive", g)["msgs"]], [0, 1, 2], "timestamp 0")
        s.ok("v1.msgs.stream.seek", {"topic": "sm", "consumer_group": "e", "timestamp": MAX_TIMESTAMP})
        eq(s.ok("v1.msgs.stream.receive", g), {"msgs": []}, "future timestamp = latest")
        # time travel: messages published after a clock step
        s.ok("v1.test.clock.advance", {"ms": 10000})
        r = s.ok("v1.msgs.publish", {"topic": "sm", "msgs": [{"value": "3"}]})
        ts3 = read_partition(s, "sm~0", "tt")[-1]["timestamp"]
        s.ok("v1.msgs.stream.seek", {"topic": "sm", "consumer_group": "e", "timestamp": ts3 - 5000})
        eq([x["offset"] for x in s.ok("v1.msgs.stream.receive", g)["msgs"]], [r["topics"][0]["start_offset"]],
           "seek by timestamp finds the first message at or after it")
        # errors
        expect_error(s.call("v1.msgs.stream.commit", {"topic": "nosuch~0", "consumer_group": "e", "offset": 0}),
                     400, "invalid_input", detail="partition must exist")
        expect_error(s.call("v1.msgs.stream.commit", {"topic": "sm~0", "consumer_group": "never", "offset": 0}),
                     400, "invalid_input", detail="lease not found")
        expect_error(s.call("v1.msgs.stream.seek", {"topic": "nosuch", "consumer_group": "e",
                                                    "position": "earliest"}),
                     400, "invalid_input", detail="topic must exist")
        expect_error(s.call("v1.msgs.stream.seek", {"topic": "sm", "consumer_group": "e"}), 400, "invalid_input",
                     detail="exactly one of 'offset', 'position', or 'timestamp' must be provided")
        expect_error(s.call("v1.msgs.stream.seek", {"topic": "sm~0", "consumer_group": "e", "offset": 0,
                                                    "position": "latest"}),
                     400, "invalid_input", detail="exactly one of 'offset', 'position', or 'timestamp'")
        expect_error(s.call("v1.msgs.stream.seek", {"topic": "sm", "consumer_group": "e", "offset": 0}),
                     400, "invalid_input", what="seek offset on a bare topic")


@test
def stream_partitions_and_leases():
    with Server() as s:
        s.ok("v1.msgs.topic.configure", {"topic": "sp", "partitions": 2})
        s.ok("v1.msgs.publish", {"topic": "sp~0", "msgs": [{"value": "a"}]})
        s.ok("v1.msgs.publish", {"topic": "sp~1", "msgs": [{"value": "b"}]})
        g = {"topic": "sp", "consumer_group": "g", "default_starting_position": "earliest"}
        m1 = s.ok("v1.msgs.stream.receive", dict(g, batch_size=1))["msgs"]
        eq(len(m1), 1, "batch 1")
        m2 = s.ok("v1.msgs.stream.receive", g)["msgs"]
        eq(sorted([m1[0]["topic"], m2[0]["topic"]]), ["sp~0", "sp~1"],
           "the second consumer skips the leased partition and reads the other")
        expect_error(s.call("v1.msgs.stream.receive", g), 400, "no_available_leases", what="both leased")
        expect_error(s.call("v1.msgs.stream.receive", dict(g, topic="sp~0")), 400, "no_available_leases",
                     what="topic~p leased")
        # partitions added later start at their beginning
        s.ok("v1.msgs.publish", {"topic": "lt", "msgs": [{"value": "old"}]})
        eq(s.ok("v1.msgs.stream.receive", {"topic": "lt", "consumer_group": "g"}), {"msgs": []}, "latest")
        s.ok("v1.msgs.topic.configure", {"topic": "lt", "partitions": 2})
        s.ok("v1.msgs.publish", {"topic": "lt~1", "msgs": [{"value": "p1"}]})
        m = s.ok("v1.msgs.stream.receive", {"topic": "lt", "consumer_group": "g"})["msgs"]
        eq([(x["topic"], x["offset"]) for x in m], [("lt~1", 0)], "a new partition starts at its beginning")


@test
def retention():
    with Server(test_clock=True) as s:
        # period_ms: an older message is never delivered again; offsets are not renumbered
        s.ok("v1.msgs.namespace.configure", {"name": "ret", "retention": {"period_ms": 60000}})
        s.ok("v1.msgs.publish", {"namespace": "ret", "topic": "t", "msgs": [{"value": "old"}]})
        s.ok("v1.test.clock.advance", {"ms": 60001})
        s.ok("v1.msgs.publish", {"namespace": "ret", "topic": "t", "msgs": [{"value": "new"}]})
        m = s.ok("v1.msgs.stream.receive", {"namespace": "ret", "topic": "t", "consumer_group": "g",
                                            "default_starting_position": "earliest"})["msgs"]
        eq([(x["offset"], bytes(x["value"])) for x in m], [(1, b"new")], "stream skips the expired message")
        q = s.ok("v1.msgs.queue.receive", {"namespace": "ret", "topic": "t", "consumer_group": "g"})["msgs"]
        eq([x["msg_id"] for x in q], ["0:1"], "queue skips the expired message")
        r = s.ok("v1.msgs.publish", {"namespace": "ret", "topic": "t", "msgs": [{"value": "next"}]})
        eq(r["topics"][0]["start_offset"], 2, "offsets are not renumbered by retention")
        # topic_bytes: each topic keeps at most this many bytes, the oldest go first
        s.ok("v1.msgs.namespace.configure", {"name": "rb", "retention": {"topic_bytes": 2000}})
        for _ in range(4):  # retention never blocks publishing
            s.ok("v1.msgs.publish", {"namespace": "rb", "topic": "t", "msgs": [{"value": "x" * 100}] * 10})

        def trimmed():
            t = s.ok("v1.msgs.topic.get", {"namespace": "rb", "topic": "t"})
            return t if t["bytes"] <= 2000 else None

        t = wait_for(trimmed, 10, "topic_bytes to be enforced")
        p = t["partitions"][0]
        check(p["start_offset"] > 0 and p["end_offset"] == 40, "oldest removed, offsets kept: %r" % p)
        m = read_partition(s, "t~0", "rd", ns="rb")
        eq([x["offset"] for x in m], list(range(m[0]["offset"], 40)) if m else [], "contiguous tail")
        check(m and m[0]["offset"] >= p["start_offset"], "reads start at the retained start")


def size_retention_case(s, wait_s):
    """size_bytes 1.5 MB, 2 topics x 2 MB published: returns the topics' byte totals once
    the namespace fits (or after wait_s)."""
    s.ok("v1.msgs.namespace.configure", {"name": "rs", "retention": {"size_bytes": 1500000}})
    c = s.conn()
    try:
        for topic in ("a", "b"):  # a is older than b
            for _ in range(20):
                s.ok("v1.msgs.publish", {"namespace": "rs", "topic": topic, "msgs": [{"value": "y" * 100000}]},
                     conn=c)
    finally:
        c.close()

    def sizes():
        return {x: s.ok("v1.msgs.topic.get", {"namespace": "rs", "topic": x}) for x in ("a", "b")}

    end = time.monotonic() + wait_s
    while True:
        t = sizes()
        if sum(v["bytes"] for v in t.values()) <= 1500000 or time.monotonic() > end:
            return t
        time.sleep(0.1)


@test
def retention_size_bytes():
    # Small journal segments and frequent checkpoints: whole segments can go.
    with Server(extra=["--segment-bytes", "1048576", "--checkpoint-bytes", "1048576",
                       "--checkpoint-interval-ms", "200"]) as s:
        t = size_retention_case(s, 10)
        total = sum(v["bytes"] for v in t.values())
        check(total <= 1500000, "size_bytes 1500000 not enforced: topics keep %d bytes" % total)
        check(t["a"]["partitions"][0]["start_offset"] > 0, "the oldest data goes first: %r" % t["a"])
        for v in t.values():
            eq(v["partitions"][0]["end_offset"], 20, "offsets not renumbered")
        m = read_partition(s, "b~0", "rd", ns="rs")
        eq([x["offset"] for x in m], list(range(t["b"]["partitions"][0]["start_offset"], 20)), "b's tail readable")


@test
def retention_size_bytes_default_segments():
    # BUG: API.md §3: size_bytes — "the namespace's topics together keep at most this many
    # bytes on disk". It is enforced only by deleting whole, checkpointed journal segments
    # (64 MiB by default), so with the default settings a namespace over its size_bytes by
    # less than a segment keeps everything (topic_bytes, by contrast, is enforced per message).
    with Server() as s:
        t = size_retention_case(s, 4)
        total = sum(v["bytes"] for v in t.values())
        check(total <= 1500000, "size_bytes 1500000 not enforced within 4 s: topics keep %d bytes (%r)"
              % (total, {k: v["partitions"] for k, v in t.items()}))


# ---- queue and FIFO modes ----------------------------------------------------------------------------


@test
def queue_mode():
    with Server(test_clock=True) as s:
        s.ok("v1.msgs.publish", {"topic": "qm", "msgs": [{"value": str(i)} for i in range(3)]})
        g = {"topic": "qm", "consumer_group": "q"}
        m = s.ok("v1.msgs.queue.receive", g)["msgs"]
        eq(sorted(x["msg_id"] for x in m), ["0:0", "0:1", "0:2"], "msg ids")
        eq(set(m[0]), {"msg_id", "value", "headers", "timestamp", "scheduled_at", "key", "attempt"}, "keys")
        eq({x["attempt"] for x in m}, {1}, "attempt 1 on first delivery")
        eq(s.ok("v1.msgs.queue.receive", g), {"msgs": []}, "all leased")
        g2 = {"topic": "qm2", "consumer_group": "q"}
        s.ok("v1.msgs.publish", {"topic": "qm2", "msgs": [{"value": "x"}]})
        eq([x["msg_id"] for x in s.ok("v1.msgs.queue.receive", g2)["msgs"]], ["0:0"], "qm2 first")
        s.ok("v1.msgs.publish", {"topic": "qm2", "msgs": [{"value": "y"}]})
        eq([x["msg_id"] for x in s.ok("v1.msgs.queue.receive", g2)["msgs"]], ["0:1"],
           "another consumer's lease never blocks a receive")
        eq(len(s.ok("v1.msgs.queue.receive", dict(g, consumer_group="other"))["msgs"]), 3,
           "another group is independent")
        eq(s.ok("v1.msgs.queue.ack", dict(g, msg_ids=["0:0"])), {}, "ack")
        eq(s.ok("v1.msgs.queue.ack", dict(g, msg_ids=["0:0"])), {}, "ack is idempotent")
        eq(s.ok("v1.msgs.queue.ack", dict(g, msg_ids=[])), {}, "empty ack")
        expect_error(s.call("v1.msgs.queue.ack", {"topic": "nosuch", "consumer_group": "q", "msg_ids": ["0:0"]}),
                     400, "invalid_input", detail="topic must exist")
        # extend-lease: all-or-nothing
        expect_error(s.call("v1.msgs.queue.extend-lease", dict(g, msg_ids=["0:1", "0:0"], lease_duration_ms=60000)),
                     400, "invalid_input", detail="message is already acked")
        s.ok("v1.test.clock.advance", {"ms": 30001})  # the default lease is 30 s; 0:1 was not extended
        expect_error(s.call("v1.msgs.queue.extend-lease", dict(g, msg_ids=["0:1"])), 400, "invalid_input",
                     detail="lease has expired")
        m = s.ok("v1.msgs.queue.receive", g)["msgs"]
        eq(sorted((x["msg_id"], x["attempt"]) for x in m), [("0:1", 2), ("0:2", 2)],
           "lease expiry makes messages available again; nothing was extended")
        eq(s.ok("v1.msgs.queue.extend-lease", dict(g, msg_ids=["0:1"], lease_duration_ms=120000)), {}, "extend")
        s.ok("v1.test.clock.advance", {"ms": 60000})
        eq(sorted(x["msg_id"] for x in s.ok("v1.msgs.queue.receive", g)["msgs"]), ["0:2"],
           "the extended lease holds 0:1")
        s.ok("v1.msgs.publish", {"topic": "qm", "msgs": [{"value": "3"}]})
        s.ok("v1.msgs.queue.ack", dict(g, msg_ids=["0:1", "0:2"]))
        expect_error(s.call("v1.msgs.queue.extend-lease", dict(g, msg_ids=["0:3"])), 400, "invalid_input",
                     detail="message has no active lease")
        # no configuration: the first nack dead-letters
        eq(s.ok("v1.msgs.queue.receive", g)["msgs"][0]["msg_id"], "0:3", "0:3")
        eq(s.ok("v1.msgs.queue.nack", dict(g, msg_ids=["0:3"])), {}, "nack")
        eq(s.ok("v1.msgs.queue.receive", g), {"msgs": []}, "dead-lettered, not redelivered")
        expect_error(s.call("v1.msgs.queue.extend-lease", dict(g, msg_ids=["0:3"])), 400, "invalid_input",
                     detail="message is in the dead-letter queue")
        gi = s.ok("v1.msgs.group.get", {"topic": "qm", "mode": "queue", "consumer_group": "q"})
        eq(gi["dead"], 1, "dead count")
        eq(s.ok("v1.msgs.queue.redrive-dlq", g), {}, "redrive")
        m = s.ok("v1.msgs.queue.receive", g)["msgs"]
        eq([(x["msg_id"], x["attempt"]) for x in m], [("0:3", 1)], "redriven, delivery count reset")
        s.ok("v1.msgs.queue.ack", dict(g, msg_ids=["0:3"]))


@test
def queue_retries_dlq_and_max_deliveries():
    with Server(test_clock=True) as s:
        d = s.ok("v1.msgs.queue.configure", {"topic": "qr", "consumer_group": "d"})
        eq(d, {"retry_schedule": [], "dlq_topic": None, "max_deliveries": 0}, "configure defaults")
        c = s.ok("v1.msgs.queue.configure", {"topic": "qr", "consumer_group": "q", "retry_schedule": [5000, 10000],
                                             "dlq_topic": "qr-dlq"})
        eq(c, {"retry_schedule": [5000, 10000], "dlq_topic": "qr-dlq", "max_deliveries": 0}, "configure")
        g = {"topic": "qr", "consumer_group": "q"}
        s.ok("v1.msgs.publish", {"topic": "qr", "msgs": [{"value": "poison", "headers": {"h": "v"}}, {"value": "p2"}]})
        m = s.ok("v1.msgs.queue.receive", g)["msgs"]
        eq(len(m), 2, "two")
        s.ok("v1.msgs.queue.nack", dict(g, msg_ids=["0:0", "0:1"]))
        eq(s.ok("v1.msgs.queue.receive", g), {"msgs": []}, "waiting for retry")
        gi = s.ok("v1.msgs.group.get", {"topic": "qr", "mode": "queue", "consumer_group": "q"})
        eq(gi["waiting_retry"], 2, "waiting_retry")
        s.ok("v1.test.clock.advance", {"ms": 5000})
        m = s.ok("v1.msgs.queue.receive", g)["msgs"]
        eq(sorted((x["msg_id"], x["attempt"]) for x in m), [("0:0", 2), ("0:1", 2)], "retry 1")
        # [ext] nack delay_ms overrides the schedule
        s.ok("v1.msgs.queue.nack", dict(g, msg_ids=["0:0", "0:1"], delay_ms=1000))
        s.ok("v1.test.clock.advance", {"ms": 1000})
        m = s.ok("v1.msgs.queue.receive", g)["msgs"]
        eq(sorted((x["msg_id"], x["attempt"]) for x in m), [("0:0", 3), ("0:1", 3)], "retry 2 (delay_ms)")
        # schedule exhausted: dead-lettered to the dlq_topic, each copy with its own offset
        s.ok("v1.msgs.queue.nack", dict(g, msg_ids=["0:0", "0:1"]))
        s.ok("v1.test.clock.advance", {"ms": 60000})
        eq(s.ok("v1.msgs.queue.receive", g), {"msgs": []}, "not delivered a 4th time")
        dl = read_partition(s, "qr-dlq~0", "dlq-reader")
        eq(sorted(bytes(x["value"]) for x in dl), [b"p2", b"poison"], "copies in the dlq topic")
        eq(sorted(x["offset"] for x in dl), [0, 1], "each copy its own offset")
        eq(dl[0]["headers"] if bytes(dl[0]["value"]) == b"poison" else dl[1]["headers"], {"h": "v"},
           "the dlq copy keeps the headers")
        # API.md §7: a redrive brings every dead-lettered message back, with its delivery
        # count reset, and the copies already sent to the dlq_topic stay there.
        g = {"topic": "qr", "consumer_group": "q"}
        gi = s.ok("v1.msgs.group.get", {"topic": "qr", "mode": "queue", "consumer_group": "q"})
        eq(gi["dead"], 2, "dead-lettered for the group")
        eq(s.ok("v1.msgs.queue.redrive-dlq", g), {}, "redrive")
        m = s.ok("v1.msgs.queue.receive", g)["msgs"]
        eq(sorted((x["msg_id"], x["attempt"]) for x in m), [("0:0", 1), ("0:1", 1)], "redriven")
        eq(len(read_partition(s, "qr-dlq~0", "dlq-reader2")), 2, "dlq copies stay after a redrive")
        # a lease expiry does not consume a retry
        s.ok("v1.msgs.queue.configure", {"topic": "le", "consumer_group": "q", "retry_schedule": [1000]})
        s.ok("v1.msgs.publish", {"topic": "le", "msgs": [{"value": "x"}]})
        g = {"topic": "le", "consumer_group": "q", "lease_duration_ms": 1000}
        eq([x["attempt"] for x in s.ok("v1.msgs.queue.receive", g)["msgs"]], [1], "le delivery 1")
        s.ok("v1.test.clock.advance", {"ms": 1001})
        eq([x["attempt"] for x in s.ok("v1.msgs.queue.receive", g)["msgs"]], [2], "le delivery 2 (lease expired)")
        s.ok("v1.msgs.queue.nack", dict(g, msg_ids=["0:0"]))
        s.ok("v1.test.clock.advance", {"ms": 1000})
        eq([x["attempt"] for x in s.ok("v1.msgs.queue.receive", g)["msgs"]], [3],
           "the first nack still retries: the lease expiry did not use the retry")
        s.ok("v1.msgs.queue.nack", dict(g, msg_ids=["0:0"]))
        s.ok("v1.test.clock.advance", {"ms": 5000})
        eq(s.ok("v1.msgs.queue.receive", g), {"msgs": []}, "second nack dead-letters")
        # max_deliveries: a message whose lease expired this many times is dead-lettered
        s.ok("v1.msgs.queue.configure", {"topic": "md", "consumer_group": "q", "max_deliveries": 2})
        s.ok("v1.msgs.publish", {"topic": "md", "msgs": [{"value": "loop"}]})
        g = {"topic": "md", "consumer_group": "q", "lease_duration_ms": 1000}
        eq(len(s.ok("v1.msgs.queue.receive", g)["msgs"]), 1, "delivery 1")
        s.ok("v1.test.clock.advance", {"ms": 1001})
        eq([x["attempt"] for x in s.ok("v1.msgs.queue.receive", g)["msgs"]], [2], "delivery 2")
        s.ok("v1.test.clock.advance", {"ms": 1001})
        eq(s.ok("v1.msgs.queue.receive", g), {"msgs": []}, "max_deliveries reached: dead-lettered")
        gi = s.ok("v1.msgs.group.get", {"topic": "md", "mode": "queue", "consumer_group": "q"})
        eq(gi["dead"], 1, "dead after max_deliveries")


@test
def fifo_mode():
    with Server(test_clock=True) as s:
        s.ok("v1.msgs.publish", {"topic": "ff", "msgs": [
            {"value": "a1", "key": "A"}, {"value": "a2", "key": "A"}, {"value": "b1", "key": "B"},
            {"value": "n1"}, {"value": "a3", "key": "A"}]})
        g = {"topic": "ff", "consumer_group": "f"}
        m1 = s.ok("v1.msgs.fifo.receive", dict(g, batch_size=1))["msgs"]
        eq([bytes(x["value"]) for x in m1], [b"a1"], "first message of key A first")
        m2 = s.ok("v1.msgs.fifo.receive", g)["msgs"]
        eq(sorted(bytes(x["value"]) for x in m2), [b"b1", b"n1"], "key A blocked while a1 is leased")
        eq(s.ok("v1.msgs.fifo.ack", dict(g, msg_ids=[m1[0]["msg_id"]])), {}, "ack a1")
        m3 = s.ok("v1.msgs.fifo.receive", g)["msgs"]
        eq([bytes(x["value"]) for x in m3][:1], [b"a2"], "a2 after a1")
        check(all(bytes(x["value"]) in (b"a2", b"a3") for x in m3), "only key A left: %r" % m3)
        vals = [bytes(x["value"]) for x in m3]
        eq(vals, sorted(vals), "consecutive messages of one key in order")
        # nack of a2 releases the later a3 too; the key restarts in order
        s.ok("v1.msgs.fifo.configure", dict(g, retry_schedule=[1000]))
        a2 = [x for x in m3 if bytes(x["value"]) == b"a2"][0]
        s.ok("v1.msgs.fifo.nack", dict(g, msg_ids=[a2["msg_id"]]))
        eq(s.ok("v1.msgs.fifo.receive", g), {"msgs": []}, "key A waits for a2's retry")
        s.ok("v1.test.clock.advance", {"ms": 1000})
        m4 = s.ok("v1.msgs.fifo.receive", g)["msgs"]
        eq([bytes(x["value"]) for x in m4][:1], [b"a2"], "a2 again first")
        eq(m4[0]["attempt"], 2, "a2's second delivery")
        for x in m4:
            if bytes(x["value"]) == b"a3":
                eq(x["attempt"], 1, "a3 released with a2's nack without counting a delivery")
        # FIFO group is distinct from a queue group of the same name
        q = s.ok("v1.msgs.queue.receive", g)["msgs"]
        eq(len(q), 5, "queue group 'f' sees everything")
        eq(s.ok("v1.msgs.fifo.configure", {"topic": "ff", "consumer_group": "x"}),
           {"retry_schedule": [], "dlq_topic": None, "max_deliveries": 0}, "fifo.configure defaults")
        eq(s.ok("v1.msgs.fifo.redrive-dlq", g), {}, "fifo.redrive-dlq")
        eq(s.ok("v1.msgs.fifo.extend-lease", dict(g, msg_ids=[m4[0]["msg_id"]])), {}, "fifo.extend-lease")


@test
def groups_list_and_get():
    with Server() as s:
        s.ok("v1.msgs.publish", {"topic": "gr", "msgs": [{"value": "1"}, {"value": "2"}]})
        s.ok("v1.msgs.stream.receive", {"topic": "gr", "consumer_group": "s", "batch_size": 1,
                                        "default_starting_position": "earliest"})
        s.ok("v1.msgs.queue.receive", {"topic": "gr", "consumer_group": "q", "batch_size": 1})
        gl = s.ok("v1.msgs.group.list", {})["groups"]
        modes = sorted((x["topic"], x["mode"], x["consumer_group"]) for x in gl)
        eq(modes, [("gr", "queue", "q"), ("gr", "stream", "s")], "group.list")
        keys = {"topic", "consumer_group", "mode", "lag", "lag_ms", "in_flight", "waiting_retry", "dead",
                "delayed", "config", "partitions"}
        for x in gl:
            eq(set(x), keys, "group keys")
        st = s.ok("v1.msgs.group.get", {"topic": "gr", "mode": "stream", "consumer_group": "s"})
        eq(st["lag"], 2, "stream lag (cursor did not move)")
        eq(st["config"], None, "stream config")
        eq(set(st["partitions"][0]), {"partition", "cursor", "lag", "lag_ms", "leased"}, "stream partition keys")
        eq(st["partitions"][0]["leased"], True, "leased")
        q = s.ok("v1.msgs.group.get", {"topic": "gr", "mode": "queue", "consumer_group": "q"})
        eq(q["in_flight"], 1, "in flight")
        eq(set(q["partitions"][0]), {"partition", "floor", "lag", "lag_ms"}, "queue partition keys")
        s.ok("v1.msgs.publish", {"topic": "other", "msgs": []})
        s.ok("v1.msgs.topic.configure", {"topic": "other", "partitions": 1})
        eq(s.ok("v1.msgs.group.list", {"topic": "other"}), {"groups": []}, "filter by topic")
        eq(len(s.ok("v1.msgs.group.list", {"topic": "gr"})["groups"]), 2, "group.list of one topic")
        t = s.ok("v1.msgs.topic.get", {"topic": "gr"})["groups"]
        eq([x["consumer_group"] for x in t["stream"]], ["s"], "topic.get stream groups")
        eq(set(t["stream"][0]), {"consumer_group", "lag", "lag_ms"}, "topic.get group keys")


# ---- auth, limits, test clock ----------------------------------------------------------------------------


@test
def auth_with_admin_token():
    with Server(token="s3cret-token") as s:
        check(not any("no --admin-token" in x for x in s.lines), "no 'open' warning with a token")
        eq(s.get("/api/v1.health.ping").status, 200, "health ping stays open")
        eq(s.get("/metrics").status, 200, "metrics open")
        body = {"topic": "au", "msgs": []}
        expect_error(s.call("v1.msgs.publish", body, auth=False), 401, "auth_required", what="no header")
        for h in ("Basic czNjcmV0", "Bearer", "Bearer ", "s3cret-token", "Token s3cret-token"):
            expect_error(s.call("v1.msgs.publish", body, auth=False, headers={"Authorization": h}), 401,
                         "auth_required", what="malformed header %r" % h)
        for tok in ("wrong", "s3cret-toke", "s3cret-token-", "S3CRET-TOKEN"):
            expect_error(s.call("v1.msgs.publish", body, token=tok), 401, "invalid_token", what="token " + tok)
        eq(s.ok("v1.msgs.publish", body), {"topics": []}, "right token")
        eq(s.call("v1.msgs.publish", body, auth=False, headers={"Authorization": "bearer s3cret-token"}).status,
           200, "scheme is case-insensitive")
        r = s.call("v1.msgs.namespace.list", {}, auth=False, accept="application/msgpack")
        eq(r.fmt, "msgpack", "401 follows Accept")
        expect_error(r, 401, "auth_required")
    with Server() as s:
        check(any("no --admin-token" in x or "open" in x for x in s.lines),
              "start-up log says the server is open: %r" % s.lines)


@test
def auth_errors_in_msgpack_for_msgpack_requests():
    # BUG: API.md §1 (negotiation, "Error bodies follow the same rule"): a
    # MessagePack request without Accept gets MessagePack; the 401 comes in JSON.
    with Server(token="tok") as s:
        r = s.call("v1.msgs.publish", {"topic": "au", "msgs": []}, fmt="msgpack", token="bad")
        eq(r.fmt, "msgpack", "format of a 401 to a MessagePack request without Accept (%r)" % r)
        expect_error(r, 401, "invalid_token")


@test
def payload_too_large():
    limit = 4096
    with Server(extra=["--max-body-bytes", str(limit)]) as s:
        ok_body = json.dumps({"topic": "big", "msgs": [{"value": "x" * (limit - 200)}]}).encode()
        eq(s.call("v1.msgs.publish", raw=ok_body).status, 200, "a body under the limit")
        big = json.dumps({"topic": "big", "msgs": [{"value": "x" * (limit + 10)}]}).encode()
        expect_error(s.call("v1.msgs.publish", raw=big), 413, "payload_too_large", what="Content-Length over")
        r = s.call("v1.msgs.publish", raw=msgpack.packb({"topic": "big", "msgs": [{"value": b"x" * (limit + 10)}]}),
                   fmt="msgpack") if msgpack else None
        if r is not None:
            eq(r.fmt, "msgpack", "413 to a msgpack request is msgpack")
            expect_error(r, 413, "payload_too_large", what="msgpack over")
        # A declared length far over the limit is refused from the headers alone.
        head = ("POST /api/v1.msgs.publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (100 * 1024 * 1024)).encode()
        expect_error(raw_exchange(s.port, head, timeout=10), 413, "payload_too_large", what="declared 100 MiB")

        def chunked(chunks):
            head = (b"POST /api/v1.msgs.publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            body = [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks] + [b"0\r\n\r\n"]
            return raw_exchange(s.port, head, body)

        small = json.dumps({"topic": "big", "msgs": [{"value": "chunked"}]}).encode()
        r = chunked([small[:10], small[10:]])
        eq(r.status, 200, "chunked under the limit (%r)" % r)
        expect_error(chunked([big[i:i + 1000] for i in range(0, len(big), 1000)]), 413, "payload_too_large",
                     what="chunked over the limit")
        # The server must not buffer more than the limit: stream 48 MiB through it.
        hwm0 = vm_hwm_kib(s.pid())
        blob = b"[" + b"1," * 32767 + b"1]"  # 64 KiB of JSON-ish bytes

        def gen():
            yield b'{"topic":"big","msgs":[{"value":'
            for _ in range(48 * 16):
                yield blob
            yield b"}]}"

        expect_error(chunked(gen()), 413, "payload_too_large", what="48 MiB chunked")
        hwm1 = vm_hwm_kib(s.pid())
        check(hwm1 - hwm0 < 16 * 1024, "peak RSS grew by %d KiB while refusing a 48 MiB body" % (hwm1 - hwm0))

        # A body that goes on far past the limit (64 MiB here) is cut off, not read forever.
        def endless():
            yield b'{"topic":"big","msgs":[{"value":'
            for _ in range(80 * 16):
                yield blob

        try:
            r = chunked(endless())
            check(False, "an 80 MiB chunked body was answered (%r), not cut off" % (r,))
        except (ConnectionError, http.client.HTTPException, OSError):
            pass
        eq(s.get("/api/v1.health.ping").status, 200, "still serving")


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


@test
def test_clock_route_absent_without_flag():
    with Server(token="t") as s:
        expect_error(s.call("v1.test.clock.advance", {"ms": 1000}), 404, "not_found", what="with a token")
    with Server() as s:
        expect_error(s.call("v1.test.clock.advance", {"ms": 1000}), 404, "not_found")
    with Server(test_clock=True) as s:
        r = s.ok("v1.test.clock.advance", {"ms": 0})
        now = r["now"]
        now2 = s.ok("v1.test.clock.advance", {"ms": 3600000})["now"]
        check(now + 3600000 <= now2 < now + 3600000 + 10000, "the clock moved by ms: %d -> %d" % (now, now2))


# ---- long polling --------------------------------------------------------------------------------------


@test
def long_poll_woken_by_publish():
    with Server() as s:
        s.ok("v1.msgs.topic.configure", {"topic": "lp", "partitions": 1})
        th, box = bg(s.ok, "v1.msgs.stream.receive",
                     {"topic": "lp", "consumer_group": "w", "batch_size": 1, "batch_wait_ms": 10000})
        # The first attempt creates the group before the call parks.
        wait_for(lambda: group_exists(s, "lp", "stream", "w"), 5, "the waiting receive's group")
        t0 = time.monotonic()
        s.ok("v1.msgs.publish", {"topic": "lp", "msgs": [{"value": "wake"}]})
        r = joined(th, box, 12)
        dt = time.monotonic() - t0
        eq([bytes(m["value"]) for m in r["msgs"]], [b"wake"], "woken receive's messages")
        check(dt < 2.0, "woken %.2f s after the publish (wait was 10 s)" % dt)
        # queue mode too
        th, box = bg(s.ok, "v1.msgs.queue.receive",
                     {"topic": "lpq", "consumer_group": "w", "batch_size": 1, "batch_wait_ms": 10000})
        # The first attempt creates the topic before the call parks.
        wait_for(lambda: s.call("v1.msgs.topic.get", {"topic": "lpq"}).status == 200, 5, "the queue's topic")
        t0 = time.monotonic()
        s.ok("v1.msgs.publish", {"topic": "lpq", "msgs": [{"value": "q"}]})
        r = joined(th, box, 12)
        eq([bytes(m["value"]) for m in r["msgs"]], [b"q"], "queue receive woken")
        check(time.monotonic() - t0 < 2.0, "queue receive woken late")


@test
def long_polls_on_many_topics_wake_by_their_own():
    """Waiting receives hang on their topic: a change to one topic answers its waiters
    (queue, FIFO and stream alike, and a DLQ topic filled by another topic's nack),
    and leaves every other waiter waiting."""
    with Server() as s:
        n = 40
        for i in range(n):
            s.ok("v1.msgs.topic.configure", {"topic": "lm%d" % i, "partitions": 1})
        waiters = {}
        for i in range(n):
            waiters[i] = bg(s.ok, "v1.msgs.queue.receive",
                            {"topic": "lm%d" % i, "consumer_group": "w", "batch_size": 1, "batch_wait_ms": 20000})
        fifo = bg(s.ok, "v1.msgs.fifo.receive",
                  {"topic": "lm7", "consumer_group": "f", "batch_size": 1, "batch_wait_ms": 20000})
        s.ok("v1.msgs.queue.configure", {"topic": "lmsrc", "consumer_group": "d", "dlq_topic": "lmdlq"})
        s.ok("v1.msgs.topic.configure", {"topic": "lmdlq", "partitions": 1})
        dlq = bg(s.ok, "v1.msgs.stream.receive", {"topic": "lmdlq", "consumer_group": "r", "batch_size": 1,
                                                   "default_starting_position": "earliest", "batch_wait_ms": 20000})
        wait_for(lambda: group_exists(s, "lmdlq", "stream", "r"), 5, "the DLQ reader's group")
        time.sleep(0.5)  # let every receive park
        check(all(th.is_alive() for th, _ in waiters.values()), "a receive did not wait")
        t0 = time.monotonic()
        s.ok("v1.msgs.publish", {"topic": "lm7", "msgs": [{"value": "seven"}]})
        r = joined(*waiters.pop(7), 12)
        eq([bytes(m["value"]) for m in r["msgs"]], [b"seven"], "lm7's queue receive")
        r = joined(*fifo, 12)
        eq([bytes(m["value"]) for m in r["msgs"]], [b"seven"], "lm7's FIFO receive (another group)")
        check(time.monotonic() - t0 < 3.0, "lm7's waiters woken late")
        time.sleep(0.3)
        check(all(th.is_alive() for th, _ in waiters.values()), "a publish to lm7 answered another topic's receive")
        # A nack on lmsrc copies into lmdlq: its reader wakes.
        s.ok("v1.msgs.publish", {"topic": "lmsrc", "msgs": [{"value": "poison"}]})
        m = s.ok("v1.msgs.queue.receive", {"topic": "lmsrc", "consumer_group": "d"})["msgs"]
        t0 = time.monotonic()
        s.ok("v1.msgs.queue.nack", {"topic": "lmsrc", "consumer_group": "d", "msg_ids": [m[0]["msg_id"]]})
        r = joined(*dlq, 12)
        eq([bytes(x["value"]) for x in r["msgs"]], [b"poison"], "the DLQ reader woken by the copy")
        check(time.monotonic() - t0 < 3.0, "the DLQ reader woken late")
        # Every other waiter gets its own topic's message.
        for i in waiters:
            s.ok("v1.msgs.publish", {"topic": "lm%d" % i, "msgs": [{"value": "m%d" % i}]})
        for i, (th, box) in waiters.items():
            r = joined(th, box, 12)
            eq([bytes(x["value"]) for x in r["msgs"]], [b"m%d" % i], "lm%d's receive" % i)


@test
def long_poll_worker_pool_on_one_queue():
    """Many receives of one group wait on one topic (a worker pool): messages published one at a
    time reach them one each, none is lost or doubled, none waits for its deadline."""
    with Server() as s:
        for mode in ("queue", "fifo"):
            topic = "pool-" + mode
            s.ok("v1.msgs.topic.configure", {"topic": topic, "partitions": 2})
            n = 24
            # parked first, so tried last in a round (another group's receive found nothing by then)
            audit = bg(s.ok, "v1.msgs.%s.receive" % mode,
                       {"topic": topic, "consumer_group": "audit", "batch_size": 1, "batch_wait_ms": 20000})
            time.sleep(0.2)
            ws = [bg(s.ok, "v1.msgs.%s.receive" % mode,
                     {"topic": topic, "consumer_group": "workers", "batch_size": 1, "batch_wait_ms": 20000})
                  for _ in range(n)]
            time.sleep(0.5)  # let them park
            check(all(th.is_alive() for th, _ in ws), "%s: a receive did not wait" % mode)
            t0 = time.monotonic()
            for i in range(n):
                msg = {"value": "job%d" % i}
                if mode == "fifo":
                    msg["key"] = "k%d" % i
                s.ok("v1.msgs.publish", {"topic": topic, "msgs": [msg]})
                time.sleep(0.01)
            got = sorted(bytes(m["value"]).decode() for th, box in ws for m in joined(th, box, 15)["msgs"])
            eq(got, sorted("job%d" % i for i in range(n)), "%s: one job each" % mode)
            # another group on the same topic is woken by the same publishes
            eq([bytes(m["value"]) for m in joined(*audit, 15)["msgs"]], [b"job0"], "%s: the other group" % mode)
            check(time.monotonic() - t0 < 8.0, "%s: the pool took %.1f s (waits were 20 s)" % (mode, time.monotonic() - t0))


def config_line(extra=(), env=None, ini=None):
    """Starts coyoted (port 0, fresh data dir) with these flags, COYOTE_* variables and INI text,
    returns (exit status or None while it ran, its configuration line or all its stderr)."""
    d = tempfile.mkdtemp(prefix="cfg-", dir=TMP_ROOT)
    cmd = [COYOTED, "--listen", "127.0.0.1:0", "--data-dir", os.path.join(d, "data")] + list(extra)
    e = {k: v for k, v in os.environ.items() if not k.startswith("COYOTE_")}
    e.update(env or {})
    if ini is not None:
        with open(os.path.join(d, "c.ini"), "w") as f:
            f.write(ini)
        cmd += ["--config", os.path.join(d, "c.ini")]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    out = []
    for raw in proc.stderr:
        line = raw.decode("utf-8", "replace")
        out.append(line)
        if "configuration:" in line:
            proc.terminate()
            proc.wait(10)
            return None, line
    proc.wait(10)
    return proc.returncode, "".join(out) + proc.stdout.read().decode()


@test
def open_files_limit_raised():
    """Each connection is a file descriptor: coyoted raises its soft limit to the hard one, so
    the usual soft default of 1024 does not refuse the 1025th client."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        return  # nothing to raise here
    d = tempfile.mkdtemp(prefix="fd-", dir=TMP_ROOT)

    def low():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    proc = subprocess.Popen([COYOTED, "--listen", "127.0.0.1:0", "--data-dir", os.path.join(d, "data")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=low)
    try:
        for raw in proc.stderr:
            if b"coyoted ready" in raw:
                break
        with open("/proc/%d/limits" % proc.pid) as f:
            line = [x for x in f if x.startswith("Max open files")][0].split()
        want = min(hard, 1048576) if hard != resource.RLIM_INFINITY else 1048576
        eq(int(line[3]), want, "soft open files limit of coyoted started with 256")
    finally:
        proc.terminate()
        proc.wait(10)


@test
def configuration_precedence_and_help():
    """Flags override COYOTE_* variables, which override the INI file; an empty variable is
    unset; --help and --version answer even when a variable or the file is bad."""
    ini = "[limits]\nmax_batch = 5\nmax-lease-ms = 7000\n"
    rc, line = config_line(ini=ini)
    check(rc is None and " max-batch=5 " in line and " max-lease-ms=7000 " in line, "from the INI file: %s" % line)
    rc, line = config_line(ini=ini, env={"COYOTE_MAX_BATCH": "7"})
    check(rc is None and " max-batch=7 " in line and " max-lease-ms=7000 " in line, "env over INI: %s" % line)
    rc, line = config_line(["--max-batch", "9"], ini=ini, env={"COYOTE_MAX_BATCH": "7"})
    check(rc is None and " max-batch=9 " in line, "flag over env: %s" % line)
    rc, line = config_line(ini=ini, env={"COYOTE_MAX_BATCH": ""})
    check(rc is None and " max-batch=5 " in line, "an empty variable is unset: %s" % line)
    rc, out = config_line(env={"COYOTE_MAX_BATCH": "abc"})
    eq(rc, 2, "a bad variable: exit status")
    check("COYOTE_MAX_BATCH" in out, "a bad variable is named: %r" % out)
    rc, out = config_line(["--max-batch", "0"])
    eq(rc, 2, "out of range: exit status")
    for flag, want in (("--help", "Usage: coyoted"), ("--version", "coyoted ")):
        rc, out = config_line([flag], env={"COYOTE_MAX_BATCH": "abc"})
        eq(rc, 0, "%s with a bad variable" % flag)
        check(want in out, "%s printed %r" % (flag, out))
        rc, out = config_line([flag], ini="this is [not an ini\n")
        eq(rc, 0, "%s with a bad config file" % flag)
        check(want in out, "%s printed %r" % (flag, out))


@test
def long_poll_waits_to_fill_the_batch():
    with Server() as s:
        s.ok("v1.msgs.topic.configure", {"topic": "lpb", "partitions": 1})
        th, box = bg(s.ok, "v1.msgs.stream.receive",
                     {"topic": "lpb", "consumer_group": "w", "batch_size": 2, "batch_wait_ms": 10000})
        wait_for(lambda: group_exists(s, "lpb", "stream", "w"), 5, "the waiting receive's group")
        s.ok("v1.msgs.publish", {"topic": "lpb", "msgs": [{"value": "1"}]})
        time.sleep(0.3)
        check(th.is_alive(), "a receive of batch_size 2 answered with fewer before its wait: %r" % box)
        t0 = time.monotonic()
        s.ok("v1.msgs.publish", {"topic": "lpb", "msgs": [{"value": "2"}]})
        r = joined(th, box, 12)
        eq([bytes(m["value"]) for m in r["msgs"]], [b"1", b"2"], "the filled batch")
        check(time.monotonic() - t0 < 2.0, "answered %.2f s after the batch could be filled" % (time.monotonic() - t0))


@test
def long_poll_times_out_empty():
    with Server() as s:
        t0 = time.monotonic()
        r = s.ok("v1.msgs.stream.receive", {"topic": "lpe", "consumer_group": "w", "batch_wait_ms": 700})
        dt = time.monotonic() - t0
        eq(r, {"msgs": []}, "nothing arrived")
        check(0.6 <= dt < 2.5, "answered after %.2f s for a 0.7 s wait" % dt)
        t0 = time.monotonic()
        r = s.ok("v1.msgs.queue.receive", {"topic": "lpe", "consumer_group": "w", "batch_wait_ms": 500})
        dt = time.monotonic() - t0
        eq(r, {"msgs": []}, "queue: nothing arrived")
        check(0.4 <= dt < 2.5, "queue answered after %.2f s for a 0.5 s wait" % dt)
        # no batch_wait_ms: at once
        t0 = time.monotonic()
        s.ok("v1.msgs.queue.receive", {"topic": "lpe", "consumer_group": "w"})
        check(time.monotonic() - t0 < 0.5, "a receive without batch_wait_ms answers at once")


@test
def long_poll_woken_by_lease_expiry():
    with Server(test_clock=True) as s:
        s.ok("v1.msgs.publish", {"topic": "lpl", "msgs": [{"value": "job"}]})
        g = {"topic": "lpl", "consumer_group": "w"}
        m = s.ok("v1.msgs.queue.receive", dict(g, lease_duration_ms=60000))["msgs"]
        eq(len(m), 1, "first consumer holds the message")
        th, box = bg(s.ok, "v1.msgs.queue.receive", dict(g, batch_size=1, batch_wait_ms=15000))
        time.sleep(0.3)  # let the second receive park (there is no observable sign for a queue group)
        check(th.is_alive(), "the second receive did not wait: %r" % box)
        t0 = time.monotonic()
        s.ok("v1.test.clock.advance", {"ms": 60001})
        r = joined(th, box, 17)
        dt = time.monotonic() - t0
        eq([(x["msg_id"], x["attempt"]) for x in r["msgs"]], [("0:0", 2)], "woken by the lease expiry")
        check(dt < 3.0, "woken %.2f s after the clock advance (wait was 15 s)" % dt)


@test
def long_poll_woken_by_retry_and_delay():
    with Server(test_clock=True) as s:
        s.ok("v1.msgs.queue.configure", {"topic": "lpr", "consumer_group": "w", "retry_schedule": [30000]})
        s.ok("v1.msgs.publish", {"topic": "lpr", "msgs": [{"value": "r"}]})
        g = {"topic": "lpr", "consumer_group": "w"}
        eq(len(s.ok("v1.msgs.queue.receive", g)["msgs"]), 1, "delivery 1")
        s.ok("v1.msgs.queue.nack", dict(g, msg_ids=["0:0"]))
        th, box = bg(s.ok, "v1.msgs.queue.receive", dict(g, batch_size=1, batch_wait_ms=15000))
        time.sleep(0.3)
        check(th.is_alive(), "the receive did not wait: %r" % box)
        t0 = time.monotonic()
        s.ok("v1.test.clock.advance", {"ms": 30000})
        r = joined(th, box, 17)
        eq([(x["msg_id"], x["attempt"]) for x in r["msgs"]], [("0:0", 2)], "woken by the retry time")
        check(time.monotonic() - t0 < 3.0, "woken late by the retry time")
        s.ok("v1.msgs.publish", {"topic": "lpd", "msgs": [{"value": "d", "delay_ms": 60000}]})
        th, box = bg(s.ok, "v1.msgs.fifo.receive", {"topic": "lpd", "consumer_group": "w", "batch_size": 1,
                                                     "batch_wait_ms": 15000})
        time.sleep(0.3)
        check(th.is_alive(), "the fifo receive did not wait: %r" % box)
        t0 = time.monotonic()
        s.ok("v1.test.clock.advance", {"ms": 60000})
        r = joined(th, box, 17)
        eq([bytes(x["value"]) for x in r["msgs"]], [b"d"], "woken when the delay passed")
        check(time.monotonic() - t0 < 3.0, "woken late by the delay")


# ---- metrics ----------------------------------------------------------------------------------------------

_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:\\.|[^"\\\x00-\x1f])*"'
SAMPLE_RE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{(?:%s(?:,%s)*)?\})? '
                       r'(?P<value>-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$' % (_LABEL, _LABEL))


def scrape(s):
    r = s.get("/metrics")
    eq(r.status, 200, "GET /metrics")
    check(r.ctype.startswith("text/plain"), "metrics content type %r" % r.ctype)
    return r.raw


def parse_metrics(raw):
    """Returns ({series name: [(labels text, value)]}, {name: type}, [bad lines])."""
    series, types, bad = {}, {}, []
    for line in raw.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) == 4:
                types[parts[2]] = parts[3]
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            bad.append(line)
            continue
        series.setdefault(m.group("name"), []).append((m.group("labels") or "", float(m.group("value"))))
    return series, types, bad


def metric_value(series, name, labels_contain=""):
    vals = [v for lab, v in series.get(name, []) if labels_contain in lab]
    return sum(vals) if vals else None


def find_counter(types, *words):
    return [n for n, t in types.items() if t == "counter" and all(w in n for w in words)]


def metrics_workload(s):
    s.ok("v1.msgs.publish", {"topic": "mt", "msgs": [{"value": "1"}, {"value": "2"}, {"value": "3"}]})
    m = s.ok("v1.msgs.queue.receive", {"topic": "mt", "consumer_group": "mq"})["msgs"]
    s.ok("v1.msgs.queue.ack", {"topic": "mt", "consumer_group": "mq", "msg_ids": [m[0]["msg_id"]]})
    s.ok("v1.msgs.queue.nack", {"topic": "mt", "consumer_group": "mq", "msg_ids": [m[1]["msg_id"]]})
    s.ok("v1.msgs.stream.receive", {"topic": "mt", "consumer_group": "ms", "batch_size": 1,
                                    "default_starting_position": "earliest"})


@test
def metrics_series():
    with Server() as s:
        series0, types0, _ = parse_metrics(scrape(s))
        metrics_workload(s)
        raw = scrape(s)
        series, types, bad = parse_metrics(raw)
        for words in (("publish",), ("receive",), ("ack",), ("nack",)):
            names = find_counter(types, *words)
            check(names, "no counter for %s in %r" % (words, sorted(types)))
        pub = [n for n in find_counter(types, "publish") if "dup" not in n and "request" not in n]
        check(any((metric_value(series, n) or 0) - (metric_value(series0, n) or 0) >= 3 for n in pub),
              "publish counter did not count 3 messages: %r" % {n: metric_value(series, n) for n in pub})
        rec = find_counter(types, "receive")
        check(any((metric_value(series, n) or 0) >= 4 for n in rec), "receive counter below 4")
        ack = [n for n in find_counter(types, "ack") if "nack" not in n]
        check(any(metric_value(series, n) == 1 for n in ack), "ack counter != 1: %r" % ack)
        check(any(metric_value(series, n) == 1 for n in find_counter(types, "nack")), "nack counter != 1")
        lag = [n for n, t in types.items() if "lag" in n]
        check(lag, "no consumer lag series")
        check(any(any('group="ms"' in lab for lab, _ in series.get(n, [])) for n in lag),
              "no lag series for group ms")
        check(any("second" in n for n in lag) and any("message" in n for n in lag),
              "lag in messages and in seconds: %r" % lag)
        hist = [n for n, t in types.items() if t == "histogram" and "fsync" in n]
        check(hist, "no fsync histogram: %r" % sorted(types))
        h = hist[0]
        check(series.get(h + "_bucket") and series.get(h + "_sum") and series.get(h + "_count"),
              "fsync histogram without _bucket/_sum/_count")
        check(any('le="+Inf"' in lab for lab, _ in series[h + "_bucket"]), "no +Inf bucket")
        check((metric_value(series, h + "_count") or 0) > 0, "fsync count 0 under --fsync=always")
        dur = [(n, lab) for n, vals in series.items() for lab, v in vals
               if "durab" in n and "always" in lab and v == 1]
        check(dur, "no durability mode series with 'always'")
        check(any(n for n, t in types.items() if "in_flight" in n or "inflight" in n), "no in-flight gauge")
        check(any("log" in n and "bytes" in n for n in types), "no log bytes per namespace")
        # (the exposition format itself is checked by metrics_text_is_valid_prometheus)


@test
def metrics_text_is_valid_prometheus():
    # Regression: coyote_log_bytes once carried a NUL byte before the namespace label
    # value (namespace="\0default"; fixed in 8fbf0ca).
    with Server() as s:
        metrics_workload(s)
        raw = scrape(s)
        check(b"\x00" not in raw, "NUL byte in /metrics at %r" % raw[max(0, raw.find(b"\x00") - 40):
                                                                   raw.find(b"\x00") + 20])
        series, types, bad = parse_metrics(raw)
        check(not bad, "lines that are not Prometheus samples: %r" % bad[:5])
        for name in series:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            check(name in types or base in types, "series %s has no # TYPE" % name)


@test
def metrics_dlq_and_bytes_counters():
    # BUG: API.md §10 lists "publish/receive/ack/nack/DLQ counters, bytes": there is no
    # DLQ counter (only the dead-letter gauge) and no counter of bytes.
    with Server() as s:
        metrics_workload(s)  # one nack without configuration: one dead-lettered message
        series, types, _ = parse_metrics(scrape(s))
        dlq = [n for n, t in types.items() if t == "counter" and ("dlq" in n or "dead" in n)]
        check(dlq, "no DLQ counter: %r" % sorted(n for n, t in types.items() if t == "counter"))
        check(any((metric_value(series, n) or 0) >= 1 for n in dlq), "DLQ counter did not count")
        by = [n for n, t in types.items() if t == "counter" and "bytes" in n]
        check(by, "no bytes counter: %r" % sorted(n for n, t in types.items() if t == "counter"))


# ---- idempotency --------------------------------------------------------------------------------------------


@test
def idempotent_publish():
    with Server(test_clock=True) as s:
        body = {"topic": "idem", "msgs": [{"value": "once"}, {"value": "twice?"}], "idempotency_key": "req-1"}
        first = s.ok("v1.msgs.publish", body)
        check("duplicate" not in first or first["duplicate"] is False, "first publish not a duplicate: %r" % first)
        again = s.ok("v1.msgs.publish", body)
        eq(again.get("duplicate"), True, "retry is marked duplicate")
        eq(again["topics"], first["topics"], "retry returns the original offsets")
        # even with a different body, the key decides
        other = s.ok("v1.msgs.publish", dict(body, msgs=[{"value": "different"}]))
        eq((other.get("duplicate"), other["topics"]), (True, first["topics"]), "same key, other body")
        eq([bytes(m["value"]) for m in read_partition(s, "idem~0", "r")], [b"once", b"twice?"], "stored once")
        # scope: namespace + topic + key
        r = s.ok("v1.msgs.publish", dict(body, topic="idem2"))
        check(not r.get("duplicate"), "another topic is another scope")
        s.ok("v1.msgs.namespace.configure", {"name": "idns"})
        r = s.ok("v1.msgs.publish", dict(body, namespace="idns"))
        check(not r.get("duplicate"), "another namespace is another scope")
        r = s.ok("v1.msgs.publish", dict(body, idempotency_key="req-2"))
        check(not r.get("duplicate"), "another key")
        eq(r["topics"][0]["start_offset"], 2, "new key stores")
        # msgpack duplicate flag
        if msgpack:
            r = s.ok("v1.msgs.publish", body, fmt="msgpack")
            eq(r.get("duplicate"), True, "msgpack duplicate")
        # the window (1 h) follows the test clock
        s.ok("v1.test.clock.advance", {"ms": 3600 * 1000 + 1})
        r = s.ok("v1.msgs.publish", body)
        check(not r.get("duplicate"), "key forgotten after the window: %r" % r)
        eq(r["topics"][0]["start_offset"], 4, "stored again after the window")
        # concurrent publishes with one key store exactly one copy
        n = 8
        barrier = threading.Barrier(n)
        results = [None] * n

        def pub(i):
            c = s.conn()
            try:
                barrier.wait(5)
                results[i] = s.call("v1.msgs.publish", {"topic": "idc", "msgs": [{"value": "c%d" % i}],
                                                        "idempotency_key": "same"}, conn=c)
            finally:
                c.close()

        ths = [threading.Thread(target=pub, args=(i,)) for i in range(n)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(20)
        for r in results:
            check(r is not None and r.status == 200, "concurrent publish answer %r" % r)
        eq(len({json.dumps(r.body["topics"]) for r in results}), 1, "all answers name the same offsets")
        check(sum(1 for r in results if not r.body.get("duplicate")) <= 1, "more than one non-duplicate answer")
        stored = read_partition(s, "idc~0", "r")
        eq(len(stored), 1, "concurrent publishes stored exactly one copy")


# ---- shutdown, restart, crash --------------------------------------------------------------------------------


@test
def graceful_shutdown_answers_long_poll():
    with Server() as s:
        s.ok("v1.msgs.publish", {"topic": "gs", "msgs": [{"value": "kept-%d" % i} for i in range(5)]})
        th, box = bg(s.call, "v1.msgs.stream.receive",
                     {"topic": "gs", "consumer_group": "waiter", "batch_wait_ms": 30000})
        wait_for(lambda: group_exists(s, "gs", "stream", "waiter"), 5, "the waiting receive")
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        r = joined(th, box, 15)
        check(time.monotonic() - t0 < 8, "the long poll was answered only after %.1f s" % (time.monotonic() - t0))
        check((r.status == 200 and r.body == {"msgs": []}) or
              (r.status == 503 and r.body and r.body.get("code") == "shutting_down"),
              "the waiting receive got %r" % r)
        rc = s.stop(timeout=15)
        eq(rc, 0, "exit status after SIGTERM")
        stops = [x for x in s.lines if "stopped" in x]
        eq(len(stops), 1, "one stop line in %r" % s.lines[-5:])
        s.start()
        got = read_partition(s, "gs~0", "after")
        eq([bytes(m["value"]).decode() for m in got], ["kept-%d" % i for i in range(5)], "data after restart")


@test
def restart_persistence():
    with Server(test_clock=True) as s:
        s.ok("v1.msgs.namespace.configure", {"name": "rp", "retention": {"period_ms": 86400000}})
        s.ok("v1.msgs.topic.configure", {"namespace": "rp", "topic": "t", "partitions": 3})
        s.ok("v1.msgs.publish", {"namespace": "rp", "topic": "t~1",
                                 "msgs": [{"value": "m%d" % i, "headers": {"i": str(i)}} for i in range(6)]})
        s.ok("v1.msgs.stream.receive", {"namespace": "rp", "topic": "t~1", "consumer_group": "sg",
                                        "default_starting_position": "earliest", "batch_size": 3})
        s.ok("v1.msgs.stream.commit", {"namespace": "rp", "topic": "t~1", "consumer_group": "sg", "offset": 2})
        s.ok("v1.msgs.queue.configure", {"namespace": "rp", "topic": "t", "consumer_group": "qg",
                                         "retry_schedule": [1000, 2000], "dlq_topic": "dead"})
        q = s.ok("v1.msgs.queue.receive", {"namespace": "rp", "topic": "t", "consumer_group": "qg",
                                           "batch_size": 3})["msgs"]
        eq(len(q), 3, "queue got 3")
        s.ok("v1.msgs.queue.ack", {"namespace": "rp", "topic": "t", "consumer_group": "qg",
                                   "msg_ids": [q[0]["msg_id"], q[1]["msg_id"]]})
        idem = s.ok("v1.msgs.publish", {"topic": "d", "msgs": [{"value": "x"}], "idempotency_key": "k"})
        ns_before = s.ok("v1.msgs.namespace.get", {"name": "rp"})
        eq(s.stop(), 0, "clean stop")
        s.start()
        eq(s.ok("v1.msgs.namespace.get", {"name": "rp"}), ns_before, "namespace after restart")
        t = s.ok("v1.msgs.topic.get", {"namespace": "rp", "topic": "t"})
        eq(len(t["partitions"]), 3, "partition count after restart")
        eq(t["partitions"][1]["end_offset"], 6, "end offset after restart")
        m = s.ok("v1.msgs.stream.receive", {"namespace": "rp", "topic": "t~1", "consumer_group": "sg",
                                            "batch_size": 100})["msgs"]
        eq([x["offset"] for x in m], [3, 4, 5], "stream cursor after restart")
        eq(m[0]["headers"], {"i": "3"}, "headers after restart")
        cfg = s.ok("v1.msgs.group.get", {"namespace": "rp", "topic": "t", "mode": "queue",
                                         "consumer_group": "qg"})["config"]
        eq(cfg, {"retry_schedule": [1000, 2000], "dlq_topic": "dead", "max_deliveries": 0}, "queue config")
        s.ok("v1.test.clock.advance", {"ms": 31000})  # the lease on the unacked one expires
        q2 = s.ok("v1.msgs.queue.receive", {"namespace": "rp", "topic": "t", "consumer_group": "qg",
                                            "batch_size": 100})["msgs"]
        eq(sorted(x["msg_id"] for x in q2), sorted(["1:%d" % i for i in range(2, 6)]),
           "acked messages are not redelivered after restart")
        again = s.ok("v1.msgs.publish", {"topic": "d", "msgs": [{"value": "x"}], "idempotency_key": "k"})
        eq((again.get("duplicate"), again["topics"]), (True, idem["topics"]), "idempotency key survives restart")
        r = s.ok("v1.msgs.publish", {"namespace": "rp", "topic": "t~1", "msgs": [{"value": "new"}]})
        eq(r["topics"][0]["start_offset"], 6, "offsets continue after restart")


LOAD_TOPIC = "load"
LOAD_PARTITIONS = 4


class LoadWorker(threading.Thread):
    """Publishes keyed messages (value "<key>:<seq>") until stopped or the server dies;
    records every acknowledged message with its (partition, offset)."""

    def __init__(self, port, wid, stop, seqs):
        super().__init__(daemon=True)
        self.port, self.wid, self.stop_ev = port, wid, stop
        self.keys = ["w%d-k%d" % (wid, j) for j in range(3)]
        self.seqs = seqs  # key -> next seq (kept across rounds)
        self.acked = {}  # value -> (partition, offset)
        self.errors = []
        self.rng = random.Random(wid)

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        while not self.stop_ev.is_set():
            msgs = []
            for _ in range(self.rng.randint(1, 3)):
                k = self.rng.choice(self.keys)
                self.seqs[k] = self.seqs.get(k, 0) + 1
                msgs.append({"value": "%s:%d" % (k, self.seqs[k]), "key": k})
            try:
                r = request(self.port, "POST", "/api/v1.msgs.publish",
                            json.dumps({"topic": LOAD_TOPIC, "msgs": msgs}).encode(),
                            {"Content-Type": "application/json"}, conn=conn)
            except (OSError, http.client.HTTPException):
                return  # the server went away: this publish's outcome is unknown
            if r.status != 200:
                self.errors.append("publish answered %r" % r)
                return
            self.record(msgs, r.body)
        conn.close()

    def record(self, msgs, body):
        by_part = {}
        for m in msgs:
            by_part.setdefault(djb2(m["key"]) % LOAD_PARTITIONS, []).append(m)
        entries = {int(e["topic"].rsplit("~", 1)[1]): e for e in body["topics"]}
        if sorted(entries) != sorted(by_part):
            self.errors.append("publish of %r answered partitions %r" % (msgs, body))
            return
        for p, ms in by_part.items():
            e = entries[p]
            if e["offset"] - e["start_offset"] != len(ms):
                self.errors.append("publish answer %r does not count %d messages" % (e, len(ms)))
            for i, m in enumerate(ms):
                self.acked[m["value"]] = (p, e["start_offset"] + i)


def load_round(s, seqs, min_acks, min_seconds=1.0, max_seconds=20.0):
    stop = threading.Event()
    workers = [LoadWorker(s.port, w, stop, seqs[w]) for w in range(8)]
    for w in workers:
        w.start()
    t0 = time.monotonic()
    wait_for(lambda: (sum(len(w.acked) for w in workers) >= min_acks and time.monotonic() - t0 >= min_seconds)
             or time.monotonic() - t0 > max_seconds, max_seconds + 5, "load")
    s.kill9()  # mid-load: the workers are still publishing
    for w in workers:
        w.join(25)
        check(not w.is_alive(), "a load worker hung after kill -9")
    acked = {}
    for w in workers:
        check(not w.errors, "worker %d: %s" % (w.wid, w.errors[:3]))
        acked.update(w.acked)
    check(len(acked) >= min_acks, "only %d acknowledged messages in %.0f s" % (len(acked), max_seconds))
    return acked


def verify_load(s, acked, group):
    """Reads every partition from its beginning; returns {partition: end offset}."""
    ends = {}
    seen = {}
    for p in range(LOAD_PARTITIONS):
        msgs = read_partition(s, "%s~%d" % (LOAD_TOPIC, p), group)
        offs = [m["offset"] for m in msgs]
        eq(len(set(offs)), len(offs), "offsets repeat in partition %d" % p)
        eq(offs, list(range(len(offs))), "dense offsets from 0 in partition %d" % p)
        last_seq = {}
        for m in msgs:
            v = bytes(m["value"]).decode()
            check(v not in seen, "message %s stored twice (at %s and %d:%d)" % (v, seen.get(v), p, m["offset"]))
            seen[v] = (p, m["offset"])
            if v.startswith("fill-") and m["key"] is None:
                continue  # a keyless message published after an earlier restart
            k, seq = v.rsplit(":", 1)
            eq(m["key"], k, "key of %s" % v)
            eq(djb2(k) % LOAD_PARTITIONS, p, "partition of key %s" % k)
            check(int(seq) > last_seq.get(k, 0), "key %s: seq %s after %s (per-key order)" % (k, seq, last_seq.get(k)))
            last_seq[k] = int(seq)
        ends[p] = len(offs)
    missing = [v for v in acked if v not in seen]
    check(not missing, "%d acknowledged messages lost after kill -9, e.g. %r" % (len(missing), missing[:5]))
    moved = [(v, acked[v], seen[v]) for v in acked if seen[v] != acked[v]]
    check(not moved, "acknowledged messages at other offsets than acknowledged: %r" % moved[:5])
    return ends


@test
def kill9_under_concurrent_load():
    s = Server(fsync="always").start()
    try:
        s.ok("v1.msgs.topic.configure", {"topic": LOAD_TOPIC, "partitions": LOAD_PARTITIONS})
        seqs = [dict() for _ in range(8)]
        acked = {}
        for rnd in range(2):
            acked.update(load_round(s, seqs, min_acks=300))
            s.start()
            ends = verify_load(s, acked, "verify%d" % rnd)
            print("     kill -9 round %d: %d acknowledged messages, %d stored after restart"
                  % (rnd + 1, len(acked), sum(ends.values())), flush=True)
            # offsets continue after the crash, above everything stored
            for p in range(LOAD_PARTITIONS):
                tp = "%s~%d" % (LOAD_TOPIC, p)
                v = "fill-%d-%d" % (rnd, p)
                r = s.ok("v1.msgs.publish", {"topic": tp, "msgs": [{"value": v}]})
                eq(r["topics"], [{"topic": tp, "start_offset": ends[p], "offset": ends[p] + 1}],
                   "offsets continue in partition %d after kill -9" % p)
                acked[v] = (p, ends[p])
    finally:
        s.close()


# ---- main --------------------------------------------------------------------------------------------------


def main():
    global COYOTED, TMP_ROOT, VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True, help="build directory holding coyoted")
    ap.add_argument("--only", action="append", default=[], help="run tests whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the tests")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo the servers' logs")
    a = ap.parse_args()
    if a.list:
        for t in TESTS:
            print(t.__name__)
        return 0
    VERBOSE = a.verbose
    COYOTED = os.path.join(os.path.abspath(a.build), "coyoted")
    tests = [t for t in TESTS if not a.only or any(o in t.__name__ for o in a.only)]
    if not os.access(COYOTED, os.X_OK):
        print("FAIL: %s is missing (build the coyoted target)" % COYOTED)
        print("0 passed, %d failed" % len(tests))
        return 1
    if msgpack is None:
        print("WARNING: python3-msgpack is missing (%s): the MessagePack tests will fail" % sys.executable)
    TMP_ROOT = tempfile.mkdtemp(prefix="coyote-it-")
    passed, failed = 0, []
    t_all = time.monotonic()
    try:
        for t in tests:
            t0 = time.monotonic()
            try:
                t()
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failed.append(t.__name__)
                print("FAIL %s (%.2f s): %s" % (t.__name__, time.monotonic() - t0, e), flush=True)
                if not isinstance(e, AssertionError):
                    traceback.print_exc()
                else:
                    tb = traceback.extract_tb(e.__traceback__)
                    here = [f for f in tb if f.filename == __file__]
                    if here:
                        print("     at line %d: %s" % (here[-1].lineno, here[-1].line), flush=True)
            else:
                passed += 1
                print("ok   %s (%.2f s)" % (t.__name__, time.monotonic() - t0), flush=True)
    finally:
        shutil.rmtree(TMP_ROOT, ignore_errors=True)
    print("total %.1f s" % (time.monotonic() - t_all))
    if failed:
        print("failed: " + " ".join(failed))
    print("%d passed, %d failed" % (passed, len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
