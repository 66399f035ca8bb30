/*
 * backend_embedded.c — the file:// backend: the broker runs in this process
 * on a data directory, and each call is handled by the server's own
 * api_handle (src/server/api.h), so both backends answer every request —
 * errors included — with the same bytes.
 *
 * A call:
 *
 *   parse body (codec) ──► api_handle ──► API_RESPOND ──► wait durable ──► status + body
 *        │ 400/422              │  ▲            (client lock released; 503
 *        ▼                      │  │             storage_unavailable if the
 *   error body                  ▼  │             journal failed first)
 *                          API_POLL: wait on `changed` (client lock released)
 *                          until broker_change_seq moved, wake_ms, the
 *                          deadline, or the next tick; then attempt again
 *
 * Invariants:
 *   1. The broker is touched only with the caller's lock held (client.c holds
 *      it around call()). The lock is released in exactly two places: inside
 *      pthread_cond_timedwait while a long poll waits, and around
 *      broker_wait_durable (journal.h: journal_wait_durable may be called from
 *      any thread; it reads only the namespace's journal, which lives until
 *      broker_close). So other threads of the same client run while a call
 *      waits — a publish from another thread wakes a long poll.
 *   2. Every call that finds waiters broadcasts `changed` before it returns,
 *      with the lock held; a waiter re-checks broker_change_seq itself.
 *   3. broker_tick runs at the start of a call when a second or more passed
 *      since the last one, and about once a second while a long poll waits.
 *      There is no thread of our own: an idle client does no retention or
 *      checkpoint work until its next call (broker_close checkpoints).
 *   4. Nothing is written to stderr by this file; broker_open's refusal of a
 *      locked directory is just CY_ELOCKED. The broker's own log lines are
 *      limited to warnings and errors (quiet_logs).
 *
 * The path of the URL (client.c lists the accepted forms): "file:" then
 * either "//" + "" or "localhost" + an absolute path, or a plain path;
 * percent-escapes are decoded, "%00" and malformed escapes are CY_EINVAL; a
 * relative path is made absolute against the working directory at open.
 * The fsync option: "always" (default), "interval=<ms>", "never".
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "broker/broker.h"
#include "client/client_int.h"
#include "server/api.h"

#define TICK_MS 1000u

struct embedded {
    struct cy_backend base;
    struct broker *b;
    char *dir; /* broker_config.data_dir: kept while the broker is open */
    struct api_ctx api;
    uint64_t last_tick_ms;
    pthread_mutex_t *lock;    /* held by our caller around call() (client.c) */
    pthread_mutex_t own_lock; /* stands in when no caller lock was given */
    bool has_own_lock;
    pthread_cond_t changed; /* CLOCK_MONOTONIC */
    unsigned waiters;
};

#define E(be) ((struct embedded *)(be))

void backend_embedded_set_lock(struct cy_backend *be, pthread_mutex_t *lock)
{
    E(be)->lock = lock;
}

/* ---- the URL --------------------------------------------------------------------- */

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The directory named by a file URL: malloc'd into *out. */
static int url_path(const char *url, char **out)
{
    *out = NULL;
    if (strncasecmp(url, "file:", 5) != 0)
        return CY_EINVAL;
    const char *p = url + 5;
    if (p[0] == '/' && p[1] == '/') {
        p += 2;
        if (strncasecmp(p, "localhost", 9) == 0 && p[9] == '/')
            p += 9;
        else if (p[0] != '/')
            return CY_EINVAL; /* another host, or nothing */
    }
    size_t n = strlen(p);
    /* A query or a fragment means nothing here (a literal '?' or '#' in a
     * directory name is written %3F, %23); the root directory is never a
     * data directory. */
    if (n == 0 || strpbrk(p, "?#") || strspn(p, "/") == n)
        return CY_EINVAL;
    char *path = malloc(n + 1);
    if (!path)
        return CY_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '%') {
            path[k++] = p[i];
            continue;
        }
        /* p is NUL-terminated: a short escape meets the NUL, which is no hex digit */
        int hi = hexval(p[i + 1]);
        int lo = hi >= 0 ? hexval(p[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(path);
            return CY_EINVAL;
        }
        path[k++] = (char)(hi * 16 + lo);
        i += 2;
    }
    path[k] = 0;
    if (path[0] != '/') {
        /* Relative to the working directory now: the broker's threads keep
         * using the path, and the host may chdir later. */
        char *cwd = getcwd(NULL, 0);
        size_t cl = cwd ? strlen(cwd) : 0;
        char *abs = cwd ? malloc(cl + 1 + k + 1) : NULL;
        if (!abs) {
            int rc = cwd ? CY_ENOMEM : (errno == ENOMEM ? CY_ENOMEM : -errno);
            free(cwd);
            free(path);
            return rc;
        }
        memcpy(abs, cwd, cl);
        abs[cl] = '/';
        memcpy(abs + cl + 1, path, k + 1);
        free(cwd);
        free(path);
        path = abs;
    }
    *out = path;
    return 0;
}

/* A library is quiet: unless COYOTE_LOG_LEVEL says otherwise, the broker's
 * INFO lines (recovery reports) stay out of the host program's stderr;
 * warnings and errors (a journal that failed) still go there. The level is
 * process-wide (log.h): only the built-in default INFO is lowered. */
static void quiet_logs(void)
{
    const char *env = getenv("COYOTE_LOG_LEVEL");
    enum log_level level;
    if (env && log_level_parse(env, &level) == 0)
        log_set_level(level);
    else if (log_get_level() == CYLOG_INFO)
        log_set_level(CYLOG_WARN);
}

/* ---- calls ------------------------------------------------------------------------ */

static void maybe_tick(struct embedded *e)
{
    uint64_t now = clock_mono_ms();
    if (now - e->last_tick_ms >= TICK_MS) {
        broker_tick(e->b);
        e->last_tick_ms = now;
    }
}

static struct timespec mono_deadline(uint64_t at_ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(at_ms / 1000);
    ts.tv_nsec = (long)(at_ms % 1000) * 1000000L;
    return ts;
}

/* Wait (lock released) until the broker changed, the call's wake time or
 * deadline comes; tick the broker meanwhile (invariant 3). */
static void wait_for_change(struct embedded *e, pthread_mutex_t *mu, const struct api_call *call)
{
    uint64_t seq = broker_change_seq(e->b);
    uint64_t until = call->wake_ms < call->deadline_ms ? call->wake_ms : call->deadline_ms;
    for (;;) {
        uint64_t now = clock_mono_ms();
        if (now >= until ||
            (broker_change_seq(e->b) != seq && broker_watch_changed(e->b, &call->watch)))
            return;
        maybe_tick(e);
        uint64_t at = e->last_tick_ms + TICK_MS;
        if (at > until)
            at = until;
        struct timespec ts = mono_deadline(at);
        e->waiters++;
        pthread_cond_timedwait(&e->changed, mu, &ts);
        e->waiters--;
    }
}

/* An error body of API.md §1 as the call's response. */
static void respond_error(struct api_call *call, int status, const char *code, const char *detail,
                          const char *location)
{
    out_free(&call->out);
    out_init(&call->out, call->fmt);
    api_error_body(&call->out, code, detail, location);
    call->status = status;
}

static int emb_call(struct cy_backend *be, const char *op, enum codec_format fmt,
                    const uint8_t *body, size_t len, uint64_t timeout_ms, int *status,
                    struct buf *resp)
{
    (void)timeout_ms; /* a call here ends by itself: long polls at their deadline */
    struct embedded *e = E(be);
    pthread_mutex_t *mu = e->lock;
    if (!mu) {
        mu = &e->own_lock;
        pthread_mutex_lock(mu);
    }
    maybe_tick(e);

    struct arena a;
    arena_init(&a);
    struct api_call call;
    memset(&call, 0, sizeof call);
    call.op = op;
    call.op_len = strlen(op);
    call.fmt = fmt;
    out_init(&call.out, fmt);

    char detail[256] = "", location[64] = "";
    struct val *v = NULL;
    /* The server's default body limit, so that what works here works there. */
    bool too_large = len > API_MAX_BODY_DEFAULT;
    enum codec_err ce =
        too_large ? CODEC_OK
        : fmt == FORMAT_MSGPACK
            ? codec_parse_msgpack(body, len, &a, &v, detail, sizeof detail, location,
                                  sizeof location)
            : codec_parse_json(body, len, &a, &v, detail, sizeof detail, location, sizeof location);
    int rc = 0;
    if (too_large) {
        respond_error(&call, 413, "payload_too_large", "The request body is too large.", NULL);
    } else if (ce == CODEC_ENOMEM) {
        rc = CY_ENOMEM;
    } else if (ce == CODEC_EDUPKEY || ce == CODEC_ERANGE) { /* as http.c answers them */
        respond_error(&call, 422, "invalid_data", detail, location);
    } else if (ce != CODEC_OK) {
        respond_error(&call, 400, "invalid_encoding", detail[0] ? detail : "The body is not valid.",
                      NULL);
    } else {
        call.body = v;
        for (;;) {
            uint64_t now = clock_mono_ms();
            call.now_mono_ms = now;
            call.final = call.deadline_ms && now >= call.deadline_ms;
            if (api_handle(&e->api, &call) == API_RESPOND)
                break;
            wait_for_change(e, mu, &call);
        }
        bool failed = false;
        if (!broker_is_durable(e->b, &call.wait, &failed)) {
            /* Invariant 1: only the journal is touched while unlocked. */
            pthread_mutex_unlock(mu);
            failed = broker_wait_durable(e->b, &call.wait) != 0;
            pthread_mutex_lock(mu);
        }
        if (failed)
            respond_error(&call, 503, "storage_unavailable",
                          "The message log cannot be written; nothing was acknowledged.", NULL);
    }
    if (!rc && out_finish(&call.out) != 0)
        rc = CY_ENOMEM; /* api_handle turns its own failures into 500s: only memory is left */
    if (!rc) {
        buf_reset(resp);
        buf_put(resp, call.out.buf.data, call.out.buf.len);
        rc = buf_err(resp);
        *status = call.status;
    }
    out_free(&call.out);
    arena_free(&a);
    if (e->waiters)
        pthread_cond_broadcast(&e->changed); /* invariant 2 */
    if (!e->lock)
        pthread_mutex_unlock(mu);
    return rc;
}

static int emb_close(struct cy_backend *be)
{
    struct embedded *e = E(be);
    int rc = broker_close(e->b);
    free(e->dir);
    pthread_cond_destroy(&e->changed);
    if (e->has_own_lock)
        pthread_mutex_destroy(&e->own_lock);
    free(e);
    return rc;
}

static const struct cy_backend_ops embedded_ops = {
    .name = "file",
    .call = emb_call,
    .close = emb_close,
};

int backend_embedded_open(const struct cy_backend_config *cfg, struct cy_backend **out)
{
    *out = NULL;
    char *dir = NULL;
    int rc = url_path(cfg->url, &dir);
    if (rc)
        return rc;
    quiet_logs();
    struct broker_config bc;
    memset(&bc, 0, sizeof bc);
    bc.data_dir = dir;
    if (journal_fsync_parse(cfg->fsync ? cfg->fsync : "always", &bc.fsync, &bc.fsync_interval_ms) !=
        0) {
        free(dir);
        return CY_EINVAL;
    }

    struct embedded *e = calloc(1, sizeof *e);
    if (!e) {
        free(dir);
        return CY_ENOMEM;
    }
    e->base.ops = &embedded_ops;
    pthread_condattr_t attr;
    rc = pthread_condattr_init(&attr);
    if (rc)
        goto fail_alloc;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&e->changed, &attr);
    pthread_condattr_destroy(&attr);
    if (rc)
        goto fail_alloc;
    rc = pthread_mutex_init(&e->own_lock, NULL);
    if (rc)
        goto fail_cond;
    e->has_own_lock = true;

    struct broker_error err;
    memset(&err, 0, sizeof err);
    rc = broker_open(&bc, &e->b, &err);
    if (rc)
        goto fail_mutex;
    e->dir = dir;
    e->api.b = e->b;
    e->last_tick_ms = clock_mono_ms();
    *out = &e->base;
    return 0;

fail_mutex:
    pthread_mutex_destroy(&e->own_lock);
fail_cond:
    pthread_cond_destroy(&e->changed);
fail_alloc:
    free(dir);
    free(e);
    if (rc > 0) /* a pthread error number */
        rc = rc == ENOMEM ? CY_ENOMEM : -rc;
    return rc;
}
