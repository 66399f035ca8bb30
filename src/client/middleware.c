/*
 * middleware.c — decorators that compose: handler middleware (logging, zstd,
 * metrics) for cy_serve and publisher decorators (cy_send_*).
 *
 * A decorator is a function plus a small malloc'd struct (its arg) holding
 * the handler/send it wraps (`next`) and its parameters. Calling next means
 * calling next.fn with a copy of the context whose `user` is next.arg.
 *
 * Invariants:
 *   1. A decorator's arg is owned by the chain: cy_handler_free/cy_send_free
 *      free it, and nothing else does. The innermost (user's) handler's arg
 *      and cy_send_client's client are never freed here.
 *   2. Chains are walked by recognising decorator fns in a table
 *      (mw_register_free; this file's own are built in), never by guessing at
 *      an arg's layout, so a foreign handler ends the walk.
 *   3. Every decorator is reentrant: its arg is read-only after construction
 *      (metrics counters are updated with atomics), so a chain can run on
 *      every worker thread of a cy_server at once.
 *   4. What a decorator allocates per message (a decompressed value, a copy of
 *      the headers) lives only during the call to next and is freed after it.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <zstd.h>

#include "client/client_int.h"

#define ZSTD_MAX_VALUE ((size_t)64 << 20) /* largest value decompressed: 64 MiB */
#define CONTENT_ENCODING "content-encoding"

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static cy_outcome call_next(cy_handler next, const cy_context *ctx, const cy_received *msg)
{
    cy_context inner = *ctx;
    inner.user = next.arg;
    return next.fn(&inner, msg);
}

/* ---- the free table ------------------------------------------------------------------ */

typedef void (*free_arg_fn)(void *arg, cy_handler *next_out);

static cy_outcome logging_fn(const cy_context *ctx, const cy_received *msg);
static cy_outcome zstd_fn(const cy_context *ctx, const cy_received *msg);
static cy_outcome metrics_fn(const cy_context *ctx, const cy_received *msg);
static void logging_free(void *arg, cy_handler *next_out);
static void zstd_free(void *arg, cy_handler *next_out);
static void metrics_free(void *arg, cy_handler *next_out);

#define MW_TABLE_MAX 32
static pthread_mutex_t mw_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    cy_handler_fn fn;
    free_arg_fn free_arg;
} mw_table[MW_TABLE_MAX] = {
    {logging_fn, logging_free},
    {zstd_fn, zstd_free},
    {metrics_fn, metrics_free},
};
static size_t mw_n = 3;

int mw_register_free(cy_handler_fn fn, void (*free_arg)(void *arg, cy_handler *next_out))
{
    if (!fn || !free_arg)
        return CY_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&mw_lock);
    size_t i;
    for (i = 0; i < mw_n; i++)
        if (mw_table[i].fn == fn)
            break;
    if (i < mw_n)
        mw_table[i].free_arg = free_arg;
    else if (mw_n == MW_TABLE_MAX)
        rc = CY_ENOMEM;
    else {
        mw_table[mw_n].fn = fn;
        mw_table[mw_n].free_arg = free_arg;
        mw_n++;
    }
    pthread_mutex_unlock(&mw_lock);
    return rc;
}

static free_arg_fn mw_lookup(cy_handler_fn fn)
{
    free_arg_fn f = NULL;
    pthread_mutex_lock(&mw_lock);
    for (size_t i = 0; i < mw_n; i++)
        if (mw_table[i].fn == fn) {
            f = mw_table[i].free_arg;
            break;
        }
    pthread_mutex_unlock(&mw_lock);
    return f;
}

void cy_handler_free(cy_handler h)
{
    while (h.fn) {
        free_arg_fn f = mw_lookup(h.fn);
        if (!f)
            break; /* the user's handler: its arg is not ours */
        cy_handler next = {0};
        f(h.arg, &next);
        h = next;
    }
}

/* ---- logging ------------------------------------------------------------------------- */

struct mw_logging {
    cy_handler next;
    FILE *out;
};

static const char *outcome_name(cy_outcome o)
{
    switch (o) {
    case CY_DONE:
        return "done";
    case CY_RETRY:
        return "retry";
    case CY_DEAD:
        return "dead";
    }
    return "unknown";
}

static cy_outcome logging_fn(const cy_context *ctx, const cy_received *msg)
{
    const struct mw_logging *l = ctx->user;
    uint64_t t0 = mono_us();
    cy_outcome o = call_next(l->next, ctx, msg);
    uint64_t us = mono_us() - t0;
    flockfile(l->out);
    if (ctx->mode == CY_STREAM || !msg->msg_id[0])
        fprintf(l->out, "msg=%s:%llu", msg->topic, (unsigned long long)msg->offset);
    else
        fprintf(l->out, "msg=%s", msg->msg_id);
    fprintf(l->out, " attempt=%u outcome=%s duration_ms=%llu.%03u\n", (unsigned)msg->attempt,
            outcome_name(o), (unsigned long long)(us / 1000), (unsigned)(us % 1000));
    fflush(l->out);
    funlockfile(l->out);
    return o;
}

static void logging_free(void *arg, cy_handler *next_out)
{
    struct mw_logging *l = arg;
    *next_out = l->next;
    free(l);
}

int cy_mw_logging(cy_handler next, FILE *out, cy_handler *h)
{
    if (!next.fn || !out || !h)
        return CY_EINVAL;
    struct mw_logging *l = malloc(sizeof *l);
    if (!l)
        return CY_ENOMEM;
    l->next = next;
    l->out = out;
    h->fn = logging_fn;
    h->arg = l;
    return 0;
}

/* ---- zstd ---------------------------------------------------------------------------- */

struct mw_zstd {
    cy_handler next;
};

static bool is_zstd_header(const cy_header *hd)
{
    return hd->name && hd->value && strcasecmp(hd->name, CONTENT_ENCODING) == 0 &&
           strcasecmp(hd->value, "zstd") == 0;
}

/* Decompress a frame of unknown content size, growing *out up to the cap.
 * Returns 0, CY_ENOMEM, or CY_ETOOBIG / CY_ECORRUPT with *err set. */
static int decompress_stream(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len,
                             const char **err)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx)
        return CY_ENOMEM;
    int rc = 0;
    size_t cap = ZSTD_DStreamOutSize();
    uint8_t *buf = malloc(cap);
    if (!buf) {
        rc = CY_ENOMEM;
        goto fail;
    }
    ZSTD_inBuffer in = {src, len, 0};
    ZSTD_outBuffer ob = {buf, cap, 0};
    size_t ret = 1;
    for (;;) {
        ret = ZSTD_decompressStream(dctx, &ob, &in);
        if (ZSTD_isError(ret)) {
            *err = ZSTD_getErrorName(ret);
            rc = CY_ECORRUPT;
            goto fail;
        }
        if (in.pos == in.size && ob.pos < ob.size)
            break; /* all input consumed and flushed */
        if (ob.pos == ob.size) {
            if (cap >= ZSTD_MAX_VALUE) {
                *err = "value larger than 64 MiB";
                rc = CY_ETOOBIG;
                goto fail;
            }
            size_t ncap = cap * 2 > ZSTD_MAX_VALUE ? ZSTD_MAX_VALUE : cap * 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                rc = CY_ENOMEM;
                goto fail;
            }
            buf = nb;
            cap = ncap;
            ob.dst = buf;
            ob.size = cap;
        }
    }
    if (ret != 0) { /* the frame is not complete */
        *err = "truncated frame";
        rc = CY_ECORRUPT;
        goto fail;
    }
    ZSTD_freeDCtx(dctx);
    *out = buf;
    *out_len = ob.pos;
    return 0;
fail:
    free(buf);
    ZSTD_freeDCtx(dctx);
    return rc;
}

/* Decompress value into a malloc'd buffer (*out, freed by the caller). */
static int decompress(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len,
                      const char **err)
{
    unsigned long long size = ZSTD_getFrameContentSize(src, len);
    if (size == ZSTD_CONTENTSIZE_ERROR) {
        *err = "not a zstd frame";
        return CY_ECORRUPT;
    }
    if (size == ZSTD_CONTENTSIZE_UNKNOWN)
        return decompress_stream(src, len, out, out_len, err);
    if (size > ZSTD_MAX_VALUE) {
        *err = "value larger than 64 MiB";
        return CY_ETOOBIG;
    }
    uint8_t *buf = malloc(size ? (size_t)size : 1);
    if (!buf)
        return CY_ENOMEM;
    size_t n = ZSTD_decompress(buf, (size_t)size, src, len);
    if (ZSTD_isError(n) || n != size) {
        *err = ZSTD_isError(n) ? ZSTD_getErrorName(n) : "content size mismatch";
        free(buf);
        return CY_ECORRUPT;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

static cy_outcome zstd_fn(const cy_context *ctx, const cy_received *msg)
{
    const struct mw_zstd *z = ctx->user;
    size_t n_enc = 0;
    for (size_t i = 0; i < msg->n_headers; i++)
        if (is_zstd_header(&msg->headers[i]))
            n_enc++;
    if (n_enc == 0)
        return call_next(z->next, ctx, msg);

    uint8_t *value = NULL;
    size_t value_len = 0;
    const char *err = "unknown error";
    int rc = decompress(msg->value, msg->value_len, &value, &value_len, &err);
    if (rc == CY_ENOMEM)
        return CY_RETRY; /* transient: the message itself may be fine */
    if (rc < 0) {
        char reason[160];
        snprintf(reason, sizeof reason, "zstd: %s", err);
        cy_set_dead_reason(ctx, reason); /* thread-local in serve.c: ctx copies are fine */
        return CY_DEAD;
    }
    cy_header *headers = NULL;
    size_t n_headers = msg->n_headers - n_enc;
    if (n_headers) {
        headers = malloc(n_headers * sizeof *headers);
        if (!headers) {
            free(value);
            return CY_RETRY;
        }
        size_t k = 0;
        for (size_t i = 0; i < msg->n_headers; i++)
            if (!is_zstd_header(&msg->headers[i]))
                headers[k++] = msg->headers[i];
    }
    cy_received copy = *msg;
    copy.value = value;
    copy.value_len = value_len;
    copy.headers = headers;
    copy.n_headers = n_headers;
    cy_outcome o = call_next(z->next, ctx, &copy);
    free(headers);
    free(value);
    return o;
}

static void zstd_free(void *arg, cy_handler *next_out)
{
    struct mw_zstd *z = arg;
    *next_out = z->next;
    free(z);
}

int cy_mw_zstd(cy_handler next, cy_handler *h)
{
    if (!next.fn || !h)
        return CY_EINVAL;
    struct mw_zstd *z = malloc(sizeof *z);
    if (!z)
        return CY_ENOMEM;
    z->next = next;
    h->fn = zstd_fn;
    h->arg = z;
    return 0;
}

/* ---- metrics ------------------------------------------------------------------------- */

struct mw_metrics {
    cy_handler next;
    cy_metrics *m;
};

static cy_outcome metrics_fn(const cy_context *ctx, const cy_received *msg)
{
    const struct mw_metrics *mm = ctx->user;
    uint64_t t0 = mono_us();
    cy_outcome o = call_next(mm->next, ctx, msg);
    uint64_t us = mono_us() - t0;
    cy_metrics *m = mm->m;
    __atomic_fetch_add(&m->handled, 1, __ATOMIC_RELAXED);
    if (o == CY_DONE)
        __atomic_fetch_add(&m->done, 1, __ATOMIC_RELAXED);
    else if (o == CY_DEAD)
        __atomic_fetch_add(&m->dead, 1, __ATOMIC_RELAXED);
    else
        __atomic_fetch_add(&m->retried, 1, __ATOMIC_RELAXED);
    size_t b = 0;
    while (b < 15 && us >= (uint64_t)100 << b)
        b++;
    __atomic_fetch_add(&m->latency_us_hist[b], 1, __ATOMIC_RELAXED);
    return o;
}

static void metrics_free(void *arg, cy_handler *next_out)
{
    struct mw_metrics *mm = arg;
    *next_out = mm->next;
    free(mm);
}

int cy_mw_metrics(cy_handler next, cy_metrics *m, cy_handler *h)
{
    if (!next.fn || !m || !h)
        return CY_EINVAL;
    struct mw_metrics *mm = malloc(sizeof *mm);
    if (!mm)
        return CY_ENOMEM;
    mm->next = next;
    mm->m = m;
    h->fn = metrics_fn;
    h->arg = mm;
    return 0;
}

/* ---- publisher side ------------------------------------------------------------------ */

static int send_client_fn(void *arg, const char *topic, const cy_message *m,
                          cy_publish_result *result)
{
    return cy_publish(arg, topic, m, 1, NULL, result);
}

cy_send cy_send_client(cy_client *c)
{
    cy_send s = {send_client_fn, c};
    return s;
}

int cy_send_message(cy_send s, const char *topic, const cy_message *m, cy_publish_result *r)
{
    if (!s.fn || !topic || !m)
        return CY_EINVAL;
    return s.fn(s.arg, topic, m, r);
}

struct send_zstd {
    cy_send next;
    int level;
    size_t min_bytes;
};

static int send_zstd_fn(void *arg, const char *topic, const cy_message *m,
                        cy_publish_result *result)
{
    const struct send_zstd *z = arg;
    if (m->value_len < z->min_bytes)
        return z->next.fn(z->next.arg, topic, m, result);
    for (size_t i = 0; i < m->n_headers; i++)
        if (m->headers[i].name && strcasecmp(m->headers[i].name, CONTENT_ENCODING) == 0)
            return z->next.fn(z->next.arg, topic, m, result); /* already encoded */

    int rc;
    size_t bound = ZSTD_compressBound(m->value_len);
    uint8_t *buf = malloc(bound ? bound : 1);
    cy_header *headers = malloc((m->n_headers + 1) * sizeof *headers);
    if (!buf || !headers) {
        rc = CY_ENOMEM;
        goto out;
    }
    size_t n = ZSTD_compress(buf, bound, m->value, m->value_len, z->level);
    if (ZSTD_isError(n)) {
        rc = CY_ENOMEM; /* with a compressBound buffer, only its allocations fail */
        goto out;
    }
    if (m->n_headers)
        memcpy(headers, m->headers, m->n_headers * sizeof *headers);
    headers[m->n_headers].name = CONTENT_ENCODING;
    headers[m->n_headers].value = "zstd";
    cy_message copy = *m;
    copy.value = buf;
    copy.value_len = n;
    copy.headers = headers;
    copy.n_headers = m->n_headers + 1;
    rc = z->next.fn(z->next.arg, topic, &copy, result);
out:
    free(headers);
    free(buf);
    return rc;
}

int cy_send_zstd(cy_send next, int level, size_t min_bytes, cy_send *out)
{
    if (!next.fn || !out)
        return CY_EINVAL;
    if (level == 0)
        level = ZSTD_CLEVEL_DEFAULT;
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
        return CY_EINVAL;
    struct send_zstd *z = malloc(sizeof *z);
    if (!z)
        return CY_ENOMEM;
    z->next = next;
    z->level = level;
    z->min_bytes = min_bytes;
    out->fn = send_zstd_fn;
    out->arg = z;
    return 0;
}

struct send_logging {
    cy_send next;
    FILE *out;
};

static int send_logging_fn(void *arg, const char *topic, const cy_message *m,
                           cy_publish_result *result)
{
    const struct send_logging *l = arg;
    uint64_t t0 = mono_us();
    int rc = l->next.fn(l->next.arg, topic, m, result);
    uint64_t us = mono_us() - t0;
    flockfile(l->out);
    fprintf(l->out, "publish topic=%s bytes=%zu result=%s", topic, m->value_len,
            rc == 0 ? "ok" : cy_strerror(rc));
    if (rc == 0 && result && result->n > 0)
        fprintf(l->out, " partition=%u offset=%llu", (unsigned)result->parts[0].partition,
                (unsigned long long)result->parts[0].start_offset);
    fprintf(l->out, " duration_ms=%llu.%03u\n", (unsigned long long)(us / 1000),
            (unsigned)(us % 1000));
    fflush(l->out);
    funlockfile(l->out);
    return rc;
}

int cy_send_logging(cy_send next, FILE *out, cy_send *s)
{
    if (!next.fn || !out || !s)
        return CY_EINVAL;
    struct send_logging *l = malloc(sizeof *l);
    if (!l)
        return CY_ENOMEM;
    l->next = next;
    l->out = out;
    s->fn = send_logging_fn;
    s->arg = l;
    return 0;
}

void cy_send_free(cy_send s)
{
    for (;;) {
        cy_send next;
        if (s.fn == send_zstd_fn)
            next = ((struct send_zstd *)s.arg)->next;
        else if (s.fn == send_logging_fn)
            next = ((struct send_logging *)s.arg)->next;
        else
            return; /* the base (cy_send_client) or the user's own: nothing of ours */
        free(s.arg);
        s = next;
    }
}
