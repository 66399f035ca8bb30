/*
 * test_backend_http.c — the http:// backend (src/client/backend_http.c)
 * against the real coyoted and against a scripted fake server.
 *
 * The real server: the build's coyoted (COYOTED_PATH when the build defines
 * it, else $COYOTED, else ../coyoted next to this binary's directory), started
 * on 127.0.0.1 port 0 with its own temp data dir; the port is read from its
 * "coyoted ready in N ms: ... (port P)" line, never by sleeping.
 *
 * The fake server: a thread that accepts connections and answers each request
 * by a script (answer, reset, close, oversize answer), and counts connections
 * and requests — how keep-alive, the stale-connection retry and the protocol
 * checks are observed exactly.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/buf.h"
#include "client/backend.h"
#include "coyote.h"
#include "coyoted_proc.h"
#include "server/codec.h"
#include "testutil.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the real server ------------------------------------------------------------------- */

/* Start coyoted on 127.0.0.1:port (0: any) with data in dir; token may be NULL. */
static void server_start(struct coyoted_proc *s, const char *dir, unsigned port, const char *token)
{
    const char *extra[] = {"--fsync", "never", token ? "--admin-token" : NULL, token, NULL};
    const char *bin = coyoted_path(COYOTED_PATH_OR_NULL);
    if (!bin)
        fail_msg("cannot find coyoted (COYOTED_PATH, $COYOTED, ../coyoted)");
    if (coyoted_start(s, bin, dir, port, extra, true))
        fail_msg("coyoted did not become ready (its stderr is above)");
}

/* Start it again on the same port and data dir. */
static void server_restart(struct coyoted_proc *s)
{
    if (coyoted_restart(s, true))
        fail_msg("coyoted did not become ready again on port %u (its stderr is above)", s->port);
}

static void server_stop(struct coyoted_proc *s, int sig)
{
    int st = coyoted_stop(s, sig);
    assert_int_not_equal(st, -1); /* it ran, and was reaped */
    if (sig == SIGTERM)
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- helpers ------------------------------------------------------------------------- */

static struct cy_backend *open_url(const char *url, const char *token)
{
    struct cy_backend_config cfg = {.url = url, .token = token};
    struct cy_backend *be = NULL;
    int rc = backend_http_open(&cfg, &be);
    if (rc)
        fail_msg("backend_http_open(%s): %s", url, cy_strerror(rc));
    assert_non_null(be);
    assert_string_equal(be->ops->name, "http");
    return be;
}

static struct cy_backend *open_port(int port, const char *token)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    return open_url(url, token);
}

static int call_json(struct cy_backend *be, const char *op, const char *json, uint64_t timeout_ms,
                     int *status, struct buf *resp)
{
    return be->ops->call(be, op, FORMAT_JSON, (const uint8_t *)json, strlen(json), timeout_ms,
                         status, resp);
}

/* resp as a NUL-terminated string (it is reset by every call anyway). */
static const char *text(struct buf *resp)
{
    buf_put_u8(resp, 0);
    resp->len--;
    return (const char *)resp->data;
}

/* The string `key` of the top-level map in a JSON or MessagePack body. */
static void expect_str(const struct buf *body, enum codec_format fmt, const char *key,
                       const char *want)
{
    struct arena a;
    arena_init(&a);
    struct val *v = NULL;
    char detail[256], loc[64];
    enum codec_err e = fmt == FORMAT_JSON
                           ? codec_parse_json(body->data, body->len, &a, &v, detail, sizeof detail,
                                              loc, sizeof loc)
                           : codec_parse_msgpack(body->data, body->len, &a, &v, detail,
                                                 sizeof detail, loc, sizeof loc);
    assert_int_equal(e, CODEC_OK);
    const struct val *s = val_get(v, key);
    assert_non_null(s);
    assert_int_equal(s->type, VAL_STR);
    assert_int_equal(s->s.n, strlen(want));
    assert_memory_equal(s->s.p, want, s->s.n);
    arena_free(&a);
}

struct fixture {
    char *dir;
    struct coyoted_proc srv;
};

static int setup_server(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->dir = tu_tempdir("http");
    server_start(&f->srv, f->dir, 0, NULL);
    *state = f;
    return 0;
}

static int teardown_server(void **state)
{
    struct fixture *f = *state;
    server_stop(&f->srv, SIGTERM);
    tu_rmtree(f->dir);
    free(f);
    return 0;
}

/* ---- against the real server --------------------------------------------------------- */

static void test_publish_json(void **state)
{
    struct fixture *f = *state;
    struct cy_backend *be = open_port(f->srv.port, NULL);
    struct buf resp = BUF_INIT;
    int status = -1;
    assert_int_equal(call_json(be, "v1.msgs.publish",
                               "{\"topic\":\"j\",\"msgs\":[{\"value\":\"hello\"}]}", 5000, &status,
                               &resp),
                     0);
    assert_int_equal(status, 200);
    assert_string_equal(text(&resp),
                        "{\"topics\":[{\"topic\":\"j~0\",\"start_offset\":0,\"offset\":1}]}");
    buf_free(&resp);
    assert_int_equal(be->ops->close(be), 0);
}

static void test_publish_msgpack(void **state)
{
    struct fixture *f = *state;
    struct cy_backend *be = open_port(f->srv.port, NULL);
    struct out o;
    out_init(&o, FORMAT_MSGPACK);
    out_map(&o, 2);
    out_key(&o, "topic");
    out_cstr(&o, "m");
    out_key(&o, "msgs");
    out_array(&o, 2);
    for (int i = 0; i < 2; i++) {
        out_map(&o, 1);
        out_key(&o, "value");
        out_bytes(&o, (const uint8_t *)"\x00\x01\xff", 3, VALUE_DEFAULT);
    }
    assert_int_equal(out_finish(&o), 0);

    struct buf resp = BUF_INIT;
    int status = -1;
    assert_int_equal(be->ops->call(be, "v1.msgs.publish", FORMAT_MSGPACK, o.buf.data, o.buf.len,
                                   5000, &status, &resp),
                     0);
    assert_int_equal(status, 200);
    struct arena a;
    arena_init(&a);
    struct val *v = NULL;
    char detail[256], loc[64];
    assert_int_equal(
        codec_parse_msgpack(resp.data, resp.len, &a, &v, detail, sizeof detail, loc, sizeof loc),
        CODEC_OK);
    const struct val *topics = val_get(v, "topics");
    assert_non_null(topics);
    assert_int_equal(topics->type, VAL_ARRAY);
    assert_int_equal(topics->arr.n, 1);
    const struct val *t = &topics->arr.items[0];
    assert_int_equal(val_get(t, "start_offset")->u, 0);
    assert_int_equal(val_get(t, "offset")->u, 2);
    arena_free(&a);
    out_free(&o);
    buf_free(&resp);
    assert_int_equal(be->ops->close(be), 0);
}

static void test_error_status(void **state)
{
    struct fixture *f = *state;
    struct cy_backend *be = open_port(f->srv.port, NULL);
    struct buf resp = BUF_INIT;
    int status = -1;
    assert_int_equal(call_json(be, "v1.msgs.publish",
                               "{\"namespace\":\"default\",\"topic\":\"t\",\"msgs\":[]}", 5000,
                               &status, &resp),
                     0);
    assert_int_equal(status, 400);
    expect_str(&resp, FORMAT_JSON, "code", "no_explicit_default_namespace");

    /* The same in MessagePack: the error body follows the requested format. */
    struct out o;
    out_init(&o, FORMAT_MSGPACK);
    out_map(&o, 3);
    out_key(&o, "namespace");
    out_cstr(&o, "default");
    out_key(&o, "topic");
    out_cstr(&o, "t");
    out_key(&o, "msgs");
    out_array(&o, 0);
    assert_int_equal(out_finish(&o), 0);
    assert_int_equal(be->ops->call(be, "v1.msgs.publish", FORMAT_MSGPACK, o.buf.data, o.buf.len,
                                   5000, &status, &resp),
                     0);
    assert_int_equal(status, 400);
    expect_str(&resp, FORMAT_MSGPACK, "code", "no_explicit_default_namespace");
    out_free(&o);

    /* An unknown operation: 404 with an error body, still not a transport error. */
    assert_int_equal(call_json(be, "v1.no.such.op", "{}", 5000, &status, &resp), 0);
    assert_int_equal(status, 404);
    buf_free(&resp);
    assert_int_equal(be->ops->close(be), 0);
}

static void test_auth(void **state)
{
    (void)state;
    char *dir = tu_tempdir("http-auth");
    struct coyoted_proc srv;
    server_start(&srv, dir, 0, "s3cret");
    struct buf resp = BUF_INIT;
    int status = -1;
    const char *body = "{\"topic\":\"a\",\"msgs\":[]}";

    struct cy_backend *be = open_port(srv.port, "wrong");
    assert_int_equal(call_json(be, "v1.msgs.publish", body, 5000, &status, &resp), 0);
    assert_int_equal(status, 401);
    expect_str(&resp, FORMAT_JSON, "code", "invalid_token");
    be->ops->close(be);

    be = open_port(srv.port, NULL);
    assert_int_equal(call_json(be, "v1.msgs.publish", body, 5000, &status, &resp), 0);
    assert_int_equal(status, 401);
    expect_str(&resp, FORMAT_JSON, "code", "auth_required");
    be->ops->close(be);

    be = open_port(srv.port, "s3cret");
    assert_int_equal(call_json(be, "v1.msgs.publish", body, 5000, &status, &resp), 0);
    assert_int_equal(status, 200);
    be->ops->close(be);

    buf_free(&resp);
    server_stop(&srv, SIGTERM);
    tu_rmtree(dir);
}

static void test_connection_refused(void **state)
{
    (void)state;
    /* A port that is bound (so nobody else takes it) but not listening. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);

    struct cy_backend *be = open_port(ntohs(sa.sin_port), NULL);
    struct buf resp = BUF_INIT;
    int status = -1;
    assert_int_equal(call_json(be, "v1.msgs.publish", "{}", 5000, &status, &resp), CY_ECONNECT);
    assert_int_equal(status, 0);
    /* And again: a failed call leaves the backend usable. */
    assert_int_equal(call_json(be, "v1.msgs.publish", "{}", 5000, &status, &resp), CY_ECONNECT);
    be->ops->close(be);
    buf_free(&resp);
    close(fd);

    /* A name that does not resolve (.invalid is reserved: RFC 6761). */
    be = open_url("http://coyote-test.invalid:1", NULL);
    assert_int_equal(call_json(be, "v1.msgs.publish", "{}", 5000, &status, &resp), CY_ECONNECT);
    be->ops->close(be);
    buf_free(&resp);
}

/* A server whose accept queue is full never completes the handshake: the
 * request was never sent, so the server is unreachable rather than slow. */
static void test_connect_timeout(void **state)
{
    (void)state;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
    int fill[8];
    for (size_t i = 0; i < N(fill); i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fill[i] >= 0);
        connect(fill[i], (struct sockaddr *)&sa, sizeof sa); /* EINPROGRESS or done */
    }
    struct cy_backend *be = open_port(ntohs(sa.sin_port), NULL);
    struct buf resp = BUF_INIT;
    int status = -1;
    assert_int_equal(call_json(be, "v1.msgs.publish", "{}", 200, &status, &resp), CY_ECONNECT);
    assert_int_equal(status, 0);
    be->ops->close(be);
    buf_free(&resp);
    for (size_t i = 0; i < N(fill); i++)
        close(fill[i]);
    close(lfd);
}

static void test_timeout(void **state)
{
    struct fixture *f = *state;
    struct cy_backend *be = open_port(f->srv.port, NULL);
    struct buf resp = BUF_INIT;
    int status = -1;
    /* A long poll on an empty topic waits 300 ms on the server; the client gives up at 100. */
    const char *poll300 = "{\"topic\":\"empty\",\"consumer_group\":\"g\",\"batch_wait_ms\":300}";
    assert_int_equal(call_json(be, "v1.msgs.queue.receive", poll300, 100, &status, &resp),
                     CY_ETIMEDOUT);
    assert_int_equal(status, 0);
    /* The timed-out connection is dropped; the next call works on a new one. */
    assert_int_equal(call_json(be, "v1.msgs.queue.receive", poll300, 5000, &status, &resp), 0);
    assert_int_equal(status, 200);
    assert_string_equal(text(&resp), "{\"msgs\":[]}");
    buf_free(&resp);
    be->ops->close(be);
}

/* Many calls, the server restarted (gracefully, then killed) between two. */
static void test_server_restart(void **state)
{
    (void)state;
    char *dir = tu_tempdir("http-restart");
    struct coyoted_proc srv;
    server_start(&srv, dir, 0, NULL);
    unsigned port = srv.port;
    struct cy_backend *be = open_port(port, NULL);
    struct buf resp = BUF_INIT;
    int status = -1;
    const char *body = "{\"topic\":\"r\",\"msgs\":[{\"value\":\"x\"}]}";
    for (int i = 0; i < 20; i++) {
        assert_int_equal(call_json(be, "v1.msgs.publish", body, 5000, &status, &resp), 0);
        assert_int_equal(status, 200);
    }

    server_stop(&srv, SIGTERM);
    server_restart(&srv);
    assert_int_equal(call_json(be, "v1.msgs.publish", body, 5000, &status, &resp), 0);
    assert_int_equal(status, 200);
    assert_string_equal(text(&resp),
                        "{\"topics\":[{\"topic\":\"r~0\",\"start_offset\":20,\"offset\":21}]}");

    server_stop(&srv, SIGKILL);
    /* Down: refused, not hung. */
    assert_int_equal(call_json(be, "v1.msgs.publish", body, 5000, &status, &resp), CY_ECONNECT);
    server_restart(&srv);
    assert_int_equal(call_json(be, "v1.msgs.publish", body, 5000, &status, &resp), 0);
    assert_int_equal(status, 200);

    server_stop(&srv, SIGTERM);
    be->ops->close(be);
    buf_free(&resp);
    tu_rmtree(dir);
}

/* ---- the fake server ------------------------------------------------------------------ */

enum fake_act {
    FAKE_REPLY,      /* answer status/ctype/body, keep the connection */
    FAKE_RESET,      /* read the request, then reset the connection (RST) */
    FAKE_CLOSE,      /* read the request, then close without a word (FIN) */
    FAKE_PARTIAL,    /* headers with Content-Length 100, 10 bytes of body, close */
    FAKE_BIG_LENGTH, /* Content-Length over the client's 64 MiB cap */
    FAKE_BIG_CHUNKED /* a chunked body that grows past 64 MiB */
};

struct fake_step {
    enum fake_act act;
    int status;
    const char *ctype;
    const char *body;
};

struct fake {
    int lfd;
    int port;
    pthread_t thread;
    const struct fake_step *steps;
    size_t n_steps;
    int accepts;     /* connections accepted */
    int requests;    /* requests read */
    char last[8192]; /* the last request, headers and body, NUL-terminated */
    size_t last_len;
};

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k <= 0)
            return; /* the client went away: its side of the test says what it saw */
        c += k;
        n -= (size_t)k;
    }
}

/* Read one request into f->last. 1, or 0 when the client closed / nothing came in 10 s. */
static int read_request(struct fake *f, int fd)
{
    size_t len = 0, need = 0;
    for (;;) {
        if (need && len >= need)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 10000) <= 0 || len == sizeof f->last - 1)
            return 0;
        ssize_t n = recv(fd, f->last + len, sizeof f->last - 1 - len, 0);
        if (n <= 0)
            return 0;
        len += (size_t)n;
        f->last[len] = '\0';
        char *end = strstr(f->last, "\r\n\r\n");
        if (end && !need) {
            size_t body = 0;
            for (char *h = f->last; h && h < end; h = strstr(h, "\r\n"), h = h ? h + 2 : NULL)
                if (!strncasecmp(h, "Content-Length:", 15))
                    body = strtoul(h + 15, NULL, 10);
            need = (size_t)(end + 4 - f->last) + body;
        }
    }
    f->last_len = len;
    f->requests++;
    return 1;
}

static void *fake_run(void *arg)
{
    struct fake *f = arg;
    int fd = -1;
    for (size_t i = 0; i < f->n_steps;) {
        if (fd < 0) {
            struct pollfd pfd = {.fd = f->lfd, .events = POLLIN};
            if (poll(&pfd, 1, 10000) <= 0)
                break;
            fd = accept(f->lfd, NULL, NULL);
            if (fd < 0)
                break;
            f->accepts++;
        }
        if (!read_request(f, fd)) {
            close(fd); /* the client closed this connection: wait for its next one */
            fd = -1;
            continue;
        }
        const struct fake_step *s = &f->steps[i++];
        char head[512];
        switch (s->act) {
        case FAKE_REPLY: {
            size_t n = strlen(s->body);
            int h = snprintf(head, sizeof head,
                             "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                             s->status, s->ctype, n);
            send_all(fd, head, (size_t)h);
            send_all(fd, s->body, n);
            break;
        }
        case FAKE_RESET: {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(fd);
            fd = -1;
            break;
        }
        case FAKE_CLOSE:
            close(fd);
            fd = -1;
            break;
        case FAKE_PARTIAL: {
            int h = snprintf(head, sizeof head,
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 100\r\n\r\n0123456789");
            send_all(fd, head, (size_t)h);
            close(fd);
            fd = -1;
            break;
        }
        case FAKE_BIG_LENGTH: {
            int h = snprintf(head, sizeof head,
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: %llu\r\n\r\n[",
                             (unsigned long long)(65 << 20));
            send_all(fd, head, (size_t)h);
            close(fd);
            fd = -1;
            break;
        }
        case FAKE_BIG_CHUNKED: {
            int h = snprintf(head, sizeof head,
                             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n");
            send_all(fd, head, (size_t)h);
            static char chunk[1 << 20];
            memset(chunk, ' ', sizeof chunk);
            h = snprintf(head, sizeof head, "%zx\r\n", sizeof chunk);
            for (int c = 0; c < 65; c++) {
                send_all(fd, head, (size_t)h);
                send_all(fd, chunk, sizeof chunk);
                send_all(fd, "\r\n", 2);
            }
            close(fd);
            fd = -1;
            break;
        }
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void fake_start(struct fake *f, const struct fake_step *steps, size_t n)
{
    memset(f, 0, sizeof *f);
    f->steps = steps;
    f->n_steps = n;
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->lfd, 16), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
    f->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_run, f), 0);
}

static void fake_join(struct fake *f)
{
    pthread_join(f->thread, NULL);
    close(f->lfd);
}

static const char ok_json[] = "{\"ok\":true}";

/* The request on the wire: path under the prefix, headers, body. */
static void test_request_shape(void **state)
{
    (void)state;
    static const struct fake_step steps[] = {
        {FAKE_REPLY, 200, "application/json", ok_json},
        {FAKE_REPLY, 200, "application/msgpack; charset=binary", "\x81\xa2ok\xc3"},
    };
    struct fake f;
    fake_start(&f, steps, N(steps));
    char url[96];
    snprintf(url, sizeof url, "HTTP://127.0.0.1:%d/proxy/coyote//", f.port);
    struct cy_backend *be = open_url(url, "tok-123");
    struct buf resp = BUF_INIT;
    int status = -1;

    assert_int_equal(call_json(be, "v1.msgs.publish", "{\"a\":1}", 5000, &status, &resp), 0);
    assert_int_equal(status, 200);
    assert_string_equal(text(&resp), ok_json);
    assert_true(!strncmp(f.last, "POST /proxy/coyote/api/v1.msgs.publish HTTP/1.1\r\n", 49));
    assert_non_null(strcasestr(f.last, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strcasestr(f.last, "\r\nAccept: application/json\r\n"));
    assert_non_null(strcasestr(f.last, "\r\nAuthorization: Bearer tok-123\r\n"));
    assert_null(strcasestr(f.last, "\r\nExpect:"));
    assert_string_equal(strstr(f.last, "\r\n\r\n") + 4, "{\"a\":1}");

    /* MessagePack, with a NUL in the body (bytes, not a string), and no body at all. */
    static const uint8_t mp[] = {0x81, 0xa1, 'v', 0xc4, 0x01, 0x00};
    assert_int_equal(be->ops->call(be, "v1.x", FORMAT_MSGPACK, mp, sizeof mp, 5000, &status, &resp),
                     0);
    assert_int_equal(status, 200);
    assert_int_equal(resp.len, 5);
    assert_non_null(strcasestr(f.last, "\r\nContent-Type: application/msgpack\r\n"));
    assert_non_null(strcasestr(f.last, "\r\nAccept: application/msgpack\r\n"));
    const char *b = strstr(f.last, "\r\n\r\n") + 4;
    assert_int_equal(f.last_len - (size_t)(b - f.last), sizeof mp);
    assert_memory_equal(b, mp, sizeof mp);

    fake_join(&f);
    assert_int_equal(f.accepts, 1);
    assert_int_equal(f.requests, 2);
    be->ops->close(be);
    buf_free(&resp);
}

/* Many calls, one connection. */
static void test_keep_alive(void **state)
{
    (void)state;
    enum { CALLS = 50 };
    static struct fake_step steps[CALLS];
    for (int i = 0; i < CALLS; i++)
        steps[i] = (struct fake_step){FAKE_REPLY, i % 2 ? 400 : 200, "application/json", ok_json};
    struct fake f;
    fake_start(&f, steps, N(steps));
    struct cy_backend *be = open_port(f.port, NULL);
    struct buf resp = BUF_INIT;
    for (int i = 0; i < CALLS; i++) {
        int status = -1;
        assert_int_equal(call_json(be, "v1.msgs.publish", "{}", 5000, &status, &resp), 0);
        assert_int_equal(status, i % 2 ? 400 : 200);
    }
    fake_join(&f);
    assert_int_equal(f.requests, CALLS);
    assert_int_equal(f.accepts, 1);
    be->ops->close(be);
    buf_free(&resp);
}

/* A kept connection that the server drops under the next request, before a
 * byte of answer: sent once more on a fresh connection, and it succeeds. */
static void test_stale_connection_retry(void **state)
{
    (void)state;
    static const enum fake_act drops[] = {FAKE_RESET, FAKE_CLOSE};
    for (size_t d = 0; d < N(drops); d++) {
        const struct fake_step steps[] = {
            {FAKE_REPLY, 200, "application/json", ok_json},
            {drops[d], 0, NULL, NULL},
            {FAKE_REPLY, 200, "application/json", "{\"again\":1}"},
        };
        struct fake f;
        fake_start(&f, steps, N(steps));
        struct cy_backend *be = open_port(f.port, NULL);
        struct buf resp = BUF_INIT;
        int status = -1;
        assert_int_equal(call_json(be, "v1.a", "{}", 5000, &status, &resp), 0);
        assert_int_equal(call_json(be, "v1.b", "{}", 5000, &status, &resp), 0);
        assert_int_equal(status, 200);
        assert_string_equal(text(&resp), "{\"again\":1}");
        fake_join(&f);
        assert_int_equal(f.accepts, 2);
        assert_int_equal(f.requests, 3);
        assert_true(!strncmp(f.last, "POST /api/v1.b ", 15));
        be->ops->close(be);
        buf_free(&resp);
    }
}

/* On a fresh connection there is no second try: the reset is reported. */
static void test_fresh_connection_no_retry(void **state)
{
    (void)state;
    static const enum fake_act drops[] = {FAKE_RESET, FAKE_CLOSE};
    for (size_t d = 0; d < N(drops); d++) {
        const struct fake_step steps[] = {{drops[d], 0, NULL, NULL}};
        struct fake f;
        fake_start(&f, steps, N(steps));
        struct cy_backend *be = open_port(f.port, NULL);
        struct buf resp = BUF_INIT;
        int status = -1;
        assert_int_equal(call_json(be, "v1.a", "{}", 5000, &status, &resp), CY_ECONNECT);
        assert_int_equal(status, 0);
        fake_join(&f);
        assert_int_equal(f.accepts, 1);
        assert_int_equal(f.requests, 1);
        be->ops->close(be);
        buf_free(&resp);
    }
}

/* Answers the client cannot use. */
static void test_protocol_errors(void **state)
{
    (void)state;
    static const struct fake_step steps[] = {
        {FAKE_REPLY, 200, "text/plain", ok_json},               /* 2xx in a foreign format */
        {FAKE_REPLY, 200, "application/json", ok_json},         /* JSON to a MessagePack call */
        {FAKE_REPLY, 502, "text/html", "<h1>Bad gateway</h1>"}, /* non-2xx: passed up */
        {FAKE_PARTIAL, 0, NULL, NULL},
        {FAKE_BIG_LENGTH, 0, NULL, NULL},
        {FAKE_BIG_CHUNKED, 0, NULL, NULL},
    };
    struct fake f;
    fake_start(&f, steps, N(steps));
    struct cy_backend *be = open_port(f.port, NULL);
    struct buf resp = BUF_INIT;
    int status = -1;
    assert_int_equal(call_json(be, "v1.a", "{}", 5000, &status, &resp), CY_EPROTOCOL);
    assert_int_equal(status, 0);
    assert_int_equal(
        be->ops->call(be, "v1.a", FORMAT_MSGPACK, (const uint8_t *)"\x80", 1, 5000, &status, &resp),
        CY_EPROTOCOL);
    assert_int_equal(call_json(be, "v1.a", "{}", 5000, &status, &resp), 0);
    assert_int_equal(status, 502);
    assert_string_equal(text(&resp), "<h1>Bad gateway</h1>");
    assert_int_equal(call_json(be, "v1.a", "{}", 5000, &status, &resp), CY_EPROTOCOL);
    assert_int_equal(call_json(be, "v1.a", "{}", 5000, &status, &resp), CY_EPROTOCOL);
    assert_int_equal(call_json(be, "v1.a", "{}", 30000, &status, &resp), CY_EPROTOCOL);
    assert_int_equal(status, 0);
    fake_join(&f);
    assert_int_equal(f.requests, 6);
    be->ops->close(be);
    buf_free(&resp);
}

/* IPv6 literals, when this machine has an IPv6 loopback. */
static void test_ipv6(void **state)
{
    (void)state;
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 4)) {
        if (fd >= 0)
            close(fd);
        skip();
    }
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char url[64];
    snprintf(url, sizeof url, "http://[::1]:%d", ntohs(sa.sin6_port));
    struct cy_backend *be = open_url(url, NULL);

    /* Answer one request by hand on this thread's socket, from a helper thread. */
    struct fake f;
    static const struct fake_step steps[] = {{FAKE_REPLY, 200, "application/json", ok_json}};
    memset(&f, 0, sizeof f);
    f.lfd = fd;
    f.steps = steps;
    f.n_steps = 1;
    assert_int_equal(pthread_create(&f.thread, NULL, fake_run, &f), 0);
    struct buf resp = BUF_INIT;
    int status = -1;
    assert_int_equal(call_json(be, "v1.a", "{}", 5000, &status, &resp), 0);
    assert_int_equal(status, 200);
    fake_join(&f);
    assert_non_null(strcasestr(f.last, "\r\nHost: [::1]:"));
    be->ops->close(be);
    buf_free(&resp);
}

/* ---- arguments ---------------------------------------------------------------------- */

static void test_bad_urls(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "http:/h",
        "https://h",
        "ftp://h",
        "file:///tmp/x",
        "http://",
        "http:///p",
        "http://:8624",
        "http://user@h",
        "http://user:pw@h:1",
        "http://@h",
        "http://h:0",
        "http://h:65536",
        "http://h:99999999",
        "http://h:",
        "http://h:12a",
        "http://h:-1",
        "http://h:1:2",
        "http://h?x=1",
        "http://h/p?x=1",
        "http://h#f",
        "http://h/p#f",
        "http://h h",
        "http://h/p q",
        "http://h/p\r\nX: y",
        "http://h\r\n",
        "http://[::1",
        "http://[::1]x",
        "http://[::1]:",
        "http://[]:1",
        "http://[zz]:1",
        "http://[fe80::1%25eth0]:1",
        "http://::1:8624",
        "http://h\xc3\xa9",
    };
    for (size_t i = 0; i < N(bad); i++) {
        struct cy_backend_config cfg = {.url = bad[i]};
        struct cy_backend *be = (struct cy_backend *)&cfg; /* must be reset to NULL */
        int rc = backend_http_open(&cfg, &be);
        if (rc != CY_EINVAL)
            fail_msg("url \"%s\": %d, expected CY_EINVAL", bad[i], rc);
        assert_null(be);
    }
    struct cy_backend_config cfg = {.url = NULL};
    struct cy_backend *be;
    assert_int_equal(backend_http_open(&cfg, &be), CY_EINVAL);
    assert_int_equal(backend_http_open(NULL, &be), CY_EINVAL);

    static const char *const good[] = {
        "http://h",        "http://h/",          "http://h:1",
        "http://h:65535/", "HTTP://Host.Name_1", "http://127.0.0.1:8624",
        "http://[::1]",    "http://[::1]:8624/", "http://[::ffff:127.0.0.1]:1",
        "http://h/a/b/",   "http://h/a%20b",
    };
    for (size_t i = 0; i < N(good); i++) {
        be = open_url(good[i], NULL);
        assert_int_equal(be->ops->close(be), 0);
    }

    /* Tokens go in one header line: no spaces or control characters. */
    static const char *const bad_tokens[] = {"a b", "a\r\nX-Evil: 1", "tab\t", "\x7f"};
    for (size_t i = 0; i < N(bad_tokens); i++) {
        cfg = (struct cy_backend_config){.url = "http://h", .token = bad_tokens[i]};
        assert_int_equal(backend_http_open(&cfg, &be), CY_EINVAL);
    }
}

static void test_bad_ops(void **state)
{
    (void)state;
    struct cy_backend *be = open_url("http://127.0.0.1:1", NULL);
    struct buf resp = BUF_INIT;
    int status = -1;
    char long_op[200];
    memset(long_op, 'a', sizeof long_op - 1);
    long_op[sizeof long_op - 1] = '\0';
    static const char *const ops[] = {"", "../admin", "v1 x", "v1?x=1", "v1/x", "v1#x"};
    for (size_t i = 0; i < N(ops); i++)
        assert_int_equal(call_json(be, ops[i], "{}", 100, &status, &resp), CY_EINVAL);
    assert_int_equal(call_json(be, long_op, "{}", 100, &status, &resp), CY_EINVAL);
    assert_int_equal(be->ops->call(be, "v1.x", FORMAT_JSON, NULL, 3, 100, &status, &resp),
                     CY_EINVAL);
    assert_int_equal(status, 0);
    be->ops->close(be);
    buf_free(&resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_bad_ops),
        cmocka_unit_test_setup_teardown(test_publish_json, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_publish_msgpack, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_error_status, setup_server, teardown_server),
        cmocka_unit_test_setup_teardown(test_timeout, setup_server, teardown_server),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_server_restart),
        cmocka_unit_test(test_request_shape),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_stale_connection_retry),
        cmocka_unit_test(test_fresh_connection_no_retry),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_ipv6),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
