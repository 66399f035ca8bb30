/*
 * client.c — libcoyote's client object: cy_open picks a backend by URL, every
 * call runs under the client's lock through one primitive (backend.h), and
 * the broker's refusals are kept per thread for cy_last_error.
 *
 * URLs (cy_open):
 *   http://host:port[/]    the http backend (https:// goes there too; it
 *                          decides whether it can)
 *   file:///abs/dir        the embedded backend on /abs/dir
 *   file://localhost/abs   the same (the only host a file URL may name)
 *   file:rel/dir, file:/abs/dir
 *                          a plain path after "file:" (no "//"): a relative
 *                          path is taken from the working directory at
 *                          cy_open (made absolute then: a later chdir of the
 *                          host does not move the data)
 * Scheme names are case-insensitive; the path is percent-decoded (%20...;
 * "%00" is refused). file://<other host>/..., an empty path, or any other
 * scheme is CY_EINVAL. The path parsing itself lives in backend_embedded.c.
 *
 * cy_last_error: after a call that failed with CY_ESERVER, the broker's code,
 * detail and HTTP status; after any other outcome of this thread's latest
 * call on c, NULL (with *detail = NULL, *status = 0). An error body that
 * cannot be read (a proxy's HTML page...) gives the code "http_error".
 * cy_call_json: *response is set on success only (NULL on every failure; the
 * error body's code and detail are in cy_last_error). A "batch_wait_ms" in
 * its JSON body is added to the request timeout, as for cy_receive.
 *
 * Invariants:
 *   1. Every call of the backend happens with c->lock held; the embedded
 *      backend may release it only inside pthread_cond_(timed)wait (long
 *      polls) and around broker_wait_durable (journal.h: callable from any
 *      thread), and holds it again before it touches anything else.
 *   2. cy_last_error is per client and per thread: each thread that has a
 *      CY_ESERVER failure on c gets one record (allocated once, never moved,
 *      freed by cy_close), so the strings returned to one thread are never
 *      overwritten by another thread's call. A thread's record is cleared at
 *      the start of each of its calls on c ("valid until this thread's next
 *      call on c"). Records are keyed by pthread_self(); a thread id that the
 *      system reuses inherits the (cleared-on-next-call) record.
 *   3. No function here aborts or writes to stderr; out of memory is
 *      CY_ENOMEM. (The embedded broker's own log keeps to warnings and
 *      errors: backend_embedded.c.)
 *
 * Threading (coyote.h): calls are serialized. On the http backend a long
 * poll therefore holds off other calls on the same client for up to its
 * batch_wait_ms (use one client per consumer thread); the embedded backend
 * releases the lock while it waits, so a publish from another thread can
 * wake it. cy_close must not run while another thread is inside a call.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "client/client_int.h"

#define DEFAULT_TIMEOUT_MS 30000u

struct client_err {
    struct client_err *next;
    pthread_t tid;
    bool set;
    int status;
    char code[64];
    char detail[512];
};

/* ---- opening ----------------------------------------------------------------- */

static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

int cy_open(const char *url, const cy_options *opts, cy_client **out)
{
    if (!out)
        return CY_EINVAL;
    *out = NULL;
    if (!url)
        return CY_EINVAL;
    bool http = has_prefix_ci(url, "http://") || has_prefix_ci(url, "https://");
    bool file = has_prefix_ci(url, "file:");
    if (!http && !file)
        return CY_EINVAL;
#ifndef COYOTE_HAVE_HTTP_BACKEND
    if (http)
        return CY_EINVAL; /* this build has no http backend */
#endif

    cy_client *c = calloc(1, sizeof *c);
    if (!c)
        return CY_ENOMEM;
    int rc = pthread_mutex_init(&c->lock, NULL);
    if (rc) {
        free(c);
        return rc == ENOMEM ? CY_ENOMEM : -rc;
    }
    c->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    c->url = strdup(url);
    if (!c->url || (opts && opts->token && !(c->token = strdup(opts->token)))) {
        rc = CY_ENOMEM;
        goto fail;
    }
    if (opts && opts->ns) {
        c->ns = strdup(opts->ns);
        if (!c->ns) {
            rc = CY_ENOMEM;
            goto fail;
        }
    }
    struct cy_backend_config cfg = {
        .url = url,
        .token = opts ? opts->token : NULL,
        .fsync = opts ? opts->fsync : NULL,
    };
    if (file) {
        rc = backend_embedded_open(&cfg, &c->be);
        if (!rc)
            backend_embedded_set_lock(c->be, &c->lock);
    } else {
#ifdef COYOTE_HAVE_HTTP_BACKEND
        rc = backend_http_open(&cfg, &c->be);
#endif
    }
    if (rc)
        goto fail;
    *out = c;
    return 0;

fail:
    free(c->ns);
    free(c->url);
    free(c->token);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return rc;
}

int cy_close(cy_client *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->lock);
    int rc = c->be ? c->be->ops->close(c->be) : 0;
    c->be = NULL;
    pthread_mutex_unlock(&c->lock);
    for (struct client_err *e = c->errs, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    free(c->ns);
    free(c->url);
    free(c->token);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return rc;
}

/* ---- last errors (invariant 2) --------------------------------------------------- */

/* This thread's record; created when `create` (NULL when that fails). Under c->lock. */
static struct client_err *thread_err(cy_client *c, bool create)
{
    pthread_t self = pthread_self();
    for (struct client_err *e = c->errs; e; e = e->next)
        if (pthread_equal(e->tid, self))
            return e;
    if (!create)
        return NULL;
    struct client_err *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->tid = self;
    e->next = c->errs;
    c->errs = e;
    return e;
}

static void copy_str(char *dst, size_t cap, const struct val *v, const char *fallback)
{
    if (v && v->type == VAL_STR) {
        size_t n = v->s.n < cap - 1 ? v->s.n : cap - 1;
        memcpy(dst, v->s.p, n);
        dst[n] = 0;
        for (size_t i = 0; i < n; i++) /* a NUL inside would cut the sentence short anyway */
            if (!dst[i])
                dst[i] = ' ';
    } else {
        snprintf(dst, cap, "%s", fallback);
    }
}

/* Record a non-200 answer for this thread. Under c->lock. */
static void store_error(cy_client *c, int status, enum codec_format fmt, const struct buf *body)
{
    struct client_err *e = thread_err(c, true);
    if (!e)
        return; /* out of memory: the call still fails with CY_ESERVER */
    struct arena a;
    arena_init(&a);
    char detail[256], loc[64];
    struct val *v = NULL;
    enum codec_err ce = CODEC_EENCODING;
    if (body->len > 0)
        ce = fmt == FORMAT_MSGPACK ? codec_parse_msgpack(body->data, body->len, &a, &v, detail,
                                                         sizeof detail, loc, sizeof loc)
                                   : codec_parse_json(body->data, body->len, &a, &v, detail,
                                                      sizeof detail, loc, sizeof loc);
    const struct val *code = ce == CODEC_OK ? val_get(v, "code") : NULL;
    const struct val *det = ce == CODEC_OK ? val_get(v, "detail") : NULL;
    char fallback[96];
    snprintf(fallback, sizeof fallback,
             "The broker answered HTTP status %d with an unreadable body.", status);
    copy_str(e->code, sizeof e->code, code, "http_error");
    copy_str(e->detail, sizeof e->detail, det, fallback);
    e->status = status;
    e->set = true;
    arena_free(&a);
}

/* Forget this thread's last error (a new call starts). Under c->lock. */
static void clear_error(cy_client *c)
{
    struct client_err *e = thread_err(c, false);
    if (e)
        e->set = false;
}

const char *cy_last_error(cy_client *c, const char **detail, int *status)
{
    const char *code = NULL, *d = NULL;
    int st = 0;
    if (c) {
        pthread_mutex_lock(&c->lock);
        struct client_err *e = thread_err(c, false);
        if (e && e->set) {
            code = e->code;
            d = e->detail;
            st = e->status;
        }
        pthread_mutex_unlock(&c->lock);
    }
    if (detail)
        *detail = d;
    if (status)
        *status = st;
    return code;
}

/* ---- the request plumbing ---------------------------------------------------------- */

void client_begin(cy_client *c, struct out *o, uint32_t pairs)
{
    out_init(o, FORMAT_MSGPACK);
    out_map(o, pairs + (c->ns ? 1 : 0));
    if (c->ns) {
        out_key(o, "namespace");
        out_cstr(o, c->ns);
    }
}

/* One round trip under the lock: 0 with *status and resp filled, or the
 * backend's error. Clears this thread's last error first. */
static int round_trip(cy_client *c, const char *op, enum codec_format fmt, const uint8_t *body,
                      size_t len, uint64_t extra_ms, int *status, struct buf *resp)
{
    uint64_t timeout =
        extra_ms > UINT64_MAX - c->timeout_ms ? UINT64_MAX : c->timeout_ms + extra_ms;
    pthread_mutex_lock(&c->lock);
    clear_error(c);
    int rc =
        c->be ? c->be->ops->call(c->be, op, fmt, body, len, timeout, status, resp) : CY_ECLOSED;
    if (!rc && *status != 200)
        store_error(c, *status, fmt, resp);
    pthread_mutex_unlock(&c->lock);
    if (!rc && buf_err(resp))
        rc = CY_ENOMEM;
    if (!rc && *status != 200)
        rc = CY_ESERVER;
    return rc;
}

int client_call(cy_client *c, const char *op, struct out *o, uint64_t extra_ms, struct arena *a,
                const struct val **resp)
{
    *resp = NULL;
    int rc = out_finish(o);
    if (rc) {
        out_free(o);
        return rc == CY_ENOMEM ? CY_ENOMEM : CY_EINVAL;
    }
    struct buf body = BUF_INIT;
    int status = 0;
    rc = round_trip(c, op, FORMAT_MSGPACK, o->buf.data, o->buf.len, extra_ms, &status, &body);
    out_free(o);
    if (rc) {
        buf_free(&body);
        return rc;
    }
    char detail[256], loc[64];
    struct val *v = NULL;
    enum codec_err ce =
        codec_parse_msgpack(body.data, body.len, a, &v, detail, sizeof detail, loc, sizeof loc);
    /* codec_parse_* copies every string into the arena (the tree never
     * points into its input), so the body can go now. */
    buf_free(&body);
    if (ce == CODEC_ENOMEM)
        return CY_ENOMEM;
    if (ce != CODEC_OK || !v || v->type != VAL_MAP)
        return CY_EPROTOCOL;
    *resp = v;
    return 0;
}

/* ---- raw JSON calls ------------------------------------------------------------------ */

static bool valid_op(const char *op)
{
    size_t n = strlen(op);
    if (n == 0 || n > 100)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = op[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '-' || ch == '_'))
            return false;
    }
    return true;
}

/* The batch_wait_ms of a JSON body (a receive sent raw), so the request's
 * timeout covers the long poll; 0 when there is none or the body does not
 * parse (the broker will say why). */
static uint64_t long_poll_ms(const char *json_body, size_t len)
{
    struct arena a;
    arena_init(&a);
    char detail[256], loc[64];
    struct val *v = NULL;
    uint64_t ms = 0;
    if (codec_parse_json((const uint8_t *)json_body, len, &a, &v, detail, sizeof detail, loc,
                         sizeof loc) == CODEC_OK) {
        const struct val *w = val_get(v, "batch_wait_ms");
        if (w && w->type == VAL_UINT)
            ms = w->u;
    }
    arena_free(&a);
    return ms;
}

int cy_call_json(cy_client *c, const char *op, const char *json_body, char **response)
{
    if (response)
        *response = NULL;
    if (!c || !op || !response || !valid_op(op))
        return CY_EINVAL;
    if (!json_body)
        json_body = "{}";
    size_t len = strlen(json_body);
    struct buf body = BUF_INIT;
    int status = 0;
    int rc = round_trip(c, op, FORMAT_JSON, (const uint8_t *)json_body, len,
                        long_poll_ms(json_body, len), &status, &body);
    if (!rc) {
        char *s = malloc(body.len + 1);
        if (s) {
            if (body.len)
                memcpy(s, body.data, body.len);
            s[body.len] = 0;
            *response = s;
        } else {
            rc = CY_ENOMEM;
        }
    }
    buf_free(&body);
    return rc;
}

void cy_free(void *p)
{
    free(p);
}
