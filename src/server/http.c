/*
 * http.c — the event loop and the HTTP glue (see http.h).
 *
 * A request's life:
 *
 *   READING ──(body complete)──► attempt ──► READY ──(send)──► done
 *      │                            │  ▲
 *      │ (error: 4xx at once)       │  └── WAIT_POLL (suspended; retried on change,
 *      ▼                            │       at its wake time, at its deadline)
 *    done                           └────► WAIT_DURABLE (suspended; resumed when
 *                                          the journal reached its position)
 *
 * Invariants:
 *   1. A response to a mutating call under --fsync=always is queued only once
 *      broker_is_durable() says so; a journal failure turns it into 503
 *      storage_unavailable (nothing acknowledged).
 *   2. At most max-body-bytes of a body are ever buffered.
 *   3. Only this thread touches the broker and MHD.
 */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "coyote.h"
#include "server/api.h"
#include "server/metrics.h"

/* Body bytes read past the limit before the connection is closed instead of
 * answered (at least this, or 8 x the limit). */
#define MAX_DROPPED_BODY (64ull << 20)

enum req_state { RS_READING, RS_WAIT_POLL, RS_WAIT_DURABLE, RS_READY, RS_DONE };

struct http_req {
    struct server *s;
    struct MHD_Connection *conn;
    enum req_state state;
    bool suspended;
    bool parked;
    bool too_big;
    uint64_t dropped;               /* body bytes read and dropped after too_big */
    struct http_req *prev, *next;   /* on s->durable or s->polls while parked */
    struct http_req **list;         /* which of the two */
    struct http_req *tprev, *tnext; /* a poll: on its topic's list (*tslot) */
    void **tslot;
    enum codec_format req_fmt;
    struct buf body;
    struct arena arena;
    struct api_call call;
    char op[128];
};

struct server {
    struct server_config cfg;
    struct broker *b;
    struct api_ctx api;
    struct MHD_Daemon *mhd;
    int epfd, wakefd, sigfd;
    unsigned port;
    struct http_req *durable; /* parked until their writes are durable */
    struct http_req *polls;   /* parked long polls (each also on its topic's list) */
    void *anytopic;           /* polls without a topic to watch: tried on every change */
    uint64_t polls_next;      /* no poll wants its wake_ms/deadline before this */
    struct http_req **due;    /* scratch: the polls one round tries again */
    size_t due_n, due_cap;
    unsigned active;
    bool stopping;
    uint64_t seen_seq, seen_global;
    uint64_t responses[6]; /* by status class 1xx..5xx */
    uint64_t started_ms;
};

/*
 * Parked requests. One waiting for durability is on s->durable (checked
 * whenever the loop runs: there are few, and durability is cheap to check).
 * A long poll is on s->polls and on the list of the topic it watches (hung on
 * the topic's broker_watch_slot), so that a change to a topic tries again only
 * the polls waiting on it: with thousands of consumers long-polling, a publish
 * costs what its own topic's waiters cost. s->polls serves the time-based
 * retries (wake_ms, deadline) and the changes that concern every topic.
 */
static void unpark(struct http_req *r)
{
    if (!r->parked)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        *r->list = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->tslot) {
        if (r->tprev)
            r->tprev->tnext = r->tnext;
        else
            *r->tslot = r->tnext;
        if (r->tnext)
            r->tnext->tprev = r->tprev;
        r->tslot = NULL;
    }
    r->parked = false;
}

static void park(struct http_req *r)
{
    struct server *s = r->s;
    unpark(r); /* parked afresh: the state, and the topic watched, may be new */
    r->list = r->state == RS_WAIT_POLL ? &s->polls : &s->durable;
    r->prev = NULL;
    r->next = *r->list;
    if (r->next)
        r->next->prev = r;
    *r->list = r;
    r->parked = true;
    if (r->state != RS_WAIT_POLL)
        return;
    void **slot = broker_watch_slot(s->b, &r->call.watch);
    r->tslot = slot ? slot : &s->anytopic;
    r->tprev = NULL;
    r->tnext = *r->tslot;
    if (r->tnext)
        r->tnext->tprev = r;
    *r->tslot = r;
    if (r->call.wake_ms < s->polls_next)
        s->polls_next = r->call.wake_ms;
    if (r->call.deadline_ms && r->call.deadline_ms < s->polls_next)
        s->polls_next = r->call.deadline_ms;
}

static enum MHD_Result send_body(struct http_req *r, int status, const char *ctype, const void *p,
                                 size_t n)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, (void *)p, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (status >= 100 && status < 600)
        r->s->responses[status / 100]++;
    r->state = RS_DONE;
    return rc;
}

static const char *ctype_of(enum codec_format f)
{
    return f == FORMAT_MSGPACK ? "application/msgpack" : "application/json";
}

static enum MHD_Result send_out(struct http_req *r, int status, struct out *o)
{
    if (out_finish(o)) {
        log_error("response to %s was malformed (a bug); answering 500", r->op);
        out_free(o);
        out_init(o, o->fmt);
        api_error_body(o, "internal_error", "The server built a malformed response.", NULL);
        status = 500;
    }
    return send_body(r, status, ctype_of(o->fmt), o->buf.data, o->buf.len);
}

/* An error decided by the HTTP layer, in the negotiated format. */
static enum MHD_Result send_error(struct http_req *r, enum codec_format fmt, int status,
                                  const char *code, const char *detail)
{
    struct out o;
    out_init(&o, fmt);
    api_error_body(&o, code, detail, NULL);
    enum MHD_Result rc = send_out(r, status, &o);
    out_free(&o);
    if (status >= 500)
        r->s->api.stats.errors_5xx++;
    else
        r->s->api.stats.errors_4xx++;
    return rc;
}

/* ---- one attempt of an operation --------------------------------------------------- */

/* The journal failed before the request's writes were durable: 503. */
static void answer_storage_failed(struct http_req *r)
{
    out_free(&r->call.out);
    out_init(&r->call.out, r->call.fmt);
    api_error_body(&r->call.out, "storage_unavailable",
                   "The message log cannot be written; nothing was acknowledged.", NULL);
    r->call.status = 503;
}

/* Run the operation once. Returns true when the response is READY. */
static bool attempt(struct http_req *r)
{
    struct server *s = r->s;
    uint64_t now = clock_mono_ms();
    r->call.now_mono_ms = now;
    r->call.final = s->stopping || (r->call.deadline_ms && now >= r->call.deadline_ms);
    out_free(&r->call.out);
    out_init(&r->call.out, r->call.fmt);
    /* call.wait is kept across attempts: an earlier attempt may have journaled
     * something (a new stream group's start) the answer must wait for. */
    enum api_result res = api_handle(&s->api, &r->call);
    if (res == API_POLL) {
        r->state = RS_WAIT_POLL;
        park(r);
        return false;
    }
    bool failed;
    if (!broker_is_durable(s->b, &r->call.wait, &failed)) {
        r->state = RS_WAIT_DURABLE;
        park(r);
        return false;
    }
    if (failed)
        answer_storage_failed(r);
    unpark(r);
    r->state = RS_READY;
    return true;
}

/* ---- routing ------------------------------------------------------------------------ */

static bool token_ok(struct server *s, struct MHD_Connection *c, int *status, const char **code,
                     const char **detail)
{
    if (!s->cfg.admin_token[0])
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    *status = 401;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !h[7]) {
        *code = "auth_required";
        *detail = "This server needs 'Authorization: Bearer <token>'.";
        return false;
    }
    /* Constant time in the token's content (the length is not secret). */
    const char *given = h + 7;
    size_t gl = strlen(given), tl = strlen(s->cfg.admin_token);
    unsigned char diff = (unsigned char)(gl != tl);
    for (size_t i = 0; i < tl; i++)
        diff |= (unsigned char)(s->cfg.admin_token[i] ^ (i < gl ? given[i] : 0));
    if (diff) {
        *code = "invalid_token";
        *detail = "The bearer token is not valid.";
        return false;
    }
    return true;
}

static enum MHD_Result first_call(struct http_req *r, const char *url, const char *method)
{
    struct server *s = r->s;
    struct MHD_Connection *c = r->conn;
    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    int k = codec_content_type(ct, &r->req_fmt);
    /* Every answer, errors included, follows API.md §1's rule: Accept, else
     * the request's own format (when it has a valid one), else JSON. */
    enum codec_format plain = codec_negotiate(accept, k == 0 ? r->req_fmt : FORMAT_JSON);
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");

    if (!strcmp(url, "/api/v1.health.ping")) {
        if (!get)
            return send_error(r, plain, 405, "method_not_allowed", "Use GET for this route.");
        struct out o;
        out_init(&o, plain);
        out_map(&o, 1);
        out_key(&o, "ok");
        out_bool(&o, true);
        enum MHD_Result rc = send_out(r, 200, &o);
        out_free(&o);
        return rc;
    }
    if (!strcmp(url, "/metrics")) {
        if (!get)
            return send_error(r, plain, 405, "method_not_allowed", "Use GET for this route.");
        struct buf m = BUF_INIT;
        metrics_render(s->b, &s->api, s->responses, &m);
        enum MHD_Result rc = send_body(r, 200, "text/plain; version=0.0.4; charset=utf-8",
                                       m.data ? (const char *)m.data : "", m.len);
        buf_free(&m);
        return rc;
    }
    if (strncmp(url, "/api/", 5) != 0 || !api_known_op(&s->api, url + 5, strlen(url + 5)))
        return send_error(r, plain, 404, "not_found", "No such route.");
    if (strcmp(method, "POST") != 0)
        return send_error(r, plain, 405, "method_not_allowed", "Operations use POST.");
    snprintf(r->op, sizeof r->op, "%s", url + 5);

    int status;
    const char *code, *detail;
    if (!token_ok(s, c, &status, &code, &detail))
        return send_error(r, plain, status, code, detail);

    enum codec_format rf = plain;
    if (k == -2)
        return send_error(r, rf, 400, "missing_content_type",
                          "Content-Type must be application/json or application/msgpack.");
    if (k != 0)
        return send_error(r, rf, 400, "invalid_content_type",
                          "Content-Type must be application/json or application/msgpack.");
    r->call.fmt = rf;
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body_bytes)
        return send_error(r, rf, 413, "payload_too_large", "The request body is too large.");
    r->state = RS_READING;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct server *s = cls;
    struct http_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->s = s;
        r->conn = conn;
        r->state = RS_DONE;
        arena_init(&r->arena);
        out_init(&r->call.out, FORMAT_JSON);
        *con_cls = r;
        s->active++;
        return first_call(r, url, method);
    }
    if (*upload_size) {
        if (r->state == RS_READING && !r->too_big) {
            if (r->body.len + *upload_size > r->s->cfg.max_body_bytes) {
                r->too_big = true; /* stop buffering; the rest is read and dropped */
                buf_free(&r->body);
            } else {
                buf_put(&r->body, upload_data, *upload_size);
            }
        }
        if (r->too_big) {
            /* A chunked body has no length up front: its 413 goes out after
             * the last chunk. One that goes on far past the limit is cut
             * off (the connection is closed) rather than read forever. */
            r->dropped += *upload_size;
            uint64_t cap = r->s->cfg.max_body_bytes * 8;
            if (r->dropped > (cap > MAX_DROPPED_BODY ? cap : MAX_DROPPED_BODY)) {
                log_warn("closing a connection whose request body went on past %" PRIu64
                         " bytes (the limit is %" PRIu64 ")",
                         r->dropped, (uint64_t)r->s->cfg.max_body_bytes);
                return MHD_NO;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->suspended) {
        r->suspended = false; /* we were resumed */
    }
    switch (r->state) {
    case RS_READING: {
        if (r->too_big)
            return send_error(r, r->call.fmt, 413, "payload_too_large",
                              "The request body is too large.");
        if (buf_err(&r->body))
            return send_error(r, r->call.fmt, 500, "internal_error", "Out of memory.");
        char detail[256] = "", location[64] = "";
        struct val *v = NULL;
        enum codec_err ce =
            r->req_fmt == FORMAT_MSGPACK
                ? codec_parse_msgpack(r->body.data, r->body.len, &r->arena, &v, detail,
                                      sizeof detail, location, sizeof location)
                : codec_parse_json(r->body.data, r->body.len, &r->arena, &v, detail, sizeof detail,
                                   location, sizeof location);
        if (ce == CODEC_EDUPKEY || ce == CODEC_ERANGE) {
            struct out o;
            out_init(&o, r->call.fmt);
            api_error_body(&o, "invalid_data", detail, location);
            enum MHD_Result rc = send_out(r, 422, &o);
            out_free(&o);
            s->api.stats.errors_4xx++;
            return rc;
        }
        if (ce == CODEC_ENOMEM)
            return send_error(r, r->call.fmt, 500, "internal_error", "Out of memory.");
        if (ce != CODEC_OK)
            return send_error(r, r->call.fmt, 400, "invalid_encoding",
                              detail[0] ? detail : "The body is not valid.");
        r->call.op = r->op;
        r->call.op_len = strlen(r->op);
        r->call.body = v;
        if (!attempt(r)) {
            MHD_suspend_connection(conn);
            r->suspended = true;
            return MHD_YES;
        }
    }
        __attribute__((fallthrough)); /* ready */
    case RS_READY: {
        int status = r->call.status ? r->call.status : 200;
        return send_out(r, status, &r->call.out);
    }
    case RS_WAIT_POLL:
    case RS_WAIT_DURABLE:
        /* Resumed early (shutdown path re-checks): keep waiting. */
        MHD_suspend_connection(conn);
        r->suspended = true;
        return MHD_YES;
    case RS_DONE: return MHD_YES;
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    struct server *s = cls;
    struct http_req *r = *con_cls;
    if (!r)
        return;
    unpark(r);
    buf_free(&r->body);
    arena_free(&r->arena);
    out_free(&r->call.out);
    free(r);
    *con_cls = NULL;
    s->active--;
}

/* ---- the loop ------------------------------------------------------------------------ */

/* Resume a request that became ready (MHD must run to answer it). */
static void resume_ready(struct http_req *r, unsigned *resumed)
{
    if (r->suspended) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
        (*resumed)++;
    }
}

/* Collect the polls hung on one changed topic's slot. */
static void collect_due(void *arg, void **slot)
{
    struct server *s = arg;
    for (struct http_req *r = *slot; r && s->due_n < s->due_cap; r = r->tnext)
        s->due[s->due_n++] = r; /* room for all: every poll is an active request */
}

enum retry { RETRY_NOT_DUE, RETRY_WAITING, RETRY_READY };

/* Try a parked poll again if it is due. */
static enum retry retry_poll(struct server *s, struct http_req *r, uint64_t now, bool changed)
{
    if (!r->parked || r->state != RS_WAIT_POLL)
        return RETRY_NOT_DUE;
    bool due = (changed && broker_watch_changed(s->b, &r->call.watch)) || s->stopping ||
               now >= r->call.wake_ms || (r->call.deadline_ms && now >= r->call.deadline_ms);
    if (!due)
        return RETRY_NOT_DUE;
    return attempt(r) ? RETRY_READY : RETRY_WAITING;
}

static bool bstr_same(struct bstr a, struct bstr b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* True when r asks what m asked (mode, namespace, topic, partition, group)
 * and m found nothing available (see api_call.poll_empty). */
static bool same_empty_poll(const struct http_req *m, const struct http_req *r)
{
    const struct broker_receive_req *a = &m->call.poll_req, *b = &r->call.poll_req;
    return m->call.poll_empty && m->call.poll_mode == r->call.poll_mode &&
           a->ns.has == b->ns.has && (!a->ns.has || bstr_same(a->ns.name, b->ns.name)) &&
           a->topic.partition == b->topic.partition && bstr_same(a->topic.name, b->topic.name) &&
           bstr_same(a->group, b->group);
}

#define EMPTY_MEMO 16

/* Retry pollers and resume what became ready. Returns the earliest time
 * (monotonic ms) a parked request wants attention, or UINT64_MAX; *resumed
 * counts the connections resumed (MHD must run to answer them). */
static uint64_t service_parked(struct server *s, unsigned *resumed)
{
    *resumed = 0;
    uint64_t now = clock_mono_ms();
    for (struct http_req *r = s->durable, *nx; r; r = nx) {
        nx = r->next;
        bool failed;
        if (!broker_is_durable(s->b, &r->call.wait, &failed))
            continue;
        if (failed)
            answer_storage_failed(r);
        unpark(r);
        r->state = RS_READY;
        resume_ready(r, resumed);
    }

    uint64_t seq = broker_change_seq(s->b), gseq = broker_global_seq(s->b);
    bool changed = seq != s->seen_seq;
    bool global = gseq != s->seen_global;
    s->seen_seq = seq;
    s->seen_global = gseq;
    /* The polls of the topics that changed (and those that watch no topic),
     * taken before any is tried: trying one may change topics again, and
     * those changes are the next round's. */
    if (s->due_cap < s->active) {
        size_t cap = s->active + 64;
        struct http_req **d = realloc(s->due, cap * sizeof *d);
        if (d) {
            s->due = d;
            s->due_cap = cap;
        } else {
            global = true; /* no room to pick: try them all */
        }
    }
    s->due_n = 0;
    if (global) {
        broker_changed_topics(s->b, NULL, NULL);
    } else if (changed) {
        broker_changed_topics(s->b, collect_due, s);
        collect_due(s, &s->anytopic);
    }
    if (global || s->stopping || now >= s->polls_next) {
        /* A full round: time-based retries, and every watch on a global change. */
        uint64_t next = UINT64_MAX;
        for (struct http_req *r = s->polls, *nx; r; r = nx) {
            nx = r->next;
            if (retry_poll(s, r, now, changed) == RETRY_READY) {
                resume_ready(r, resumed);
                continue;
            }
            if (r->parked && r->state == RS_WAIT_POLL) {
                if (r->call.wake_ms < next)
                    next = r->call.wake_ms;
                if (r->call.deadline_ms && r->call.deadline_ms < next)
                    next = r->call.deadline_ms;
            }
        }
        s->polls_next = next;
    } else {
        /* A worker pool long-polling one queue: a publish of one message is
         * taken by the first receive; the next one finds nothing, and so
         * would the rest of that group's receives — they are not tried (a
         * herd of dry runs per publish otherwise). They keep waiting on the
         * topic, and the next change tries them again. */
        const struct http_req *memo[EMPTY_MEMO];
        size_t n_memo = 0;
        for (size_t k = 0; k < s->due_n; k++) {
            struct http_req *r = s->due[k];
            bool skip = false;
            for (size_t m = 0; m < n_memo && !skip; m++)
                skip = same_empty_poll(memo[m], r);
            if (skip)
                continue;
            enum retry rr = retry_poll(s, r, now, true);
            if (rr == RETRY_READY)
                resume_ready(r, resumed);
            else if (rr == RETRY_WAITING && r->state == RS_WAIT_POLL && r->call.poll_empty &&
                     n_memo < EMPTY_MEMO)
                memo[n_memo++] = r; /* it just found nothing */
        }
    }
    /* What this round's receives changed (a dead-letter copy into another
     * topic, say) is the next round's: run it now, not at the next event. */
    if (broker_change_seq(s->b) != s->seen_seq)
        return now;
    return s->polls_next;
}

static int add_fd(int epfd, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host)
        return CY_EINVAL;
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    char *h = host;
    if (h[0] == '[') { /* [::1]:8624 */
        h++;
        size_t n = strlen(h);
        if (!n || h[n - 1] != ']')
            return CY_EINVAL;
        h[n - 1] = 0;
    }
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (!colon[1] || *end || port > 65535)
        return CY_EINVAL;
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(h, colon + 1, &hints, &ai) || !ai) {
        /* a name such as localhost */
        hints.ai_flags = AI_NUMERICSERV;
        if (getaddrinfo(h, colon + 1, &hints, &ai) || !ai)
            return CY_EINVAL;
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

void server_wake(void *arg)
{
    uint64_t one = 1;
    ssize_t w = write(*(int *)arg, &one, sizeof one);
    (void)w; /* EAGAIN: a wake-up is pending already */
}

int server_start(const struct server_config *cfg, struct broker *b, int wakefd, struct server **out)
{
    struct server *s = calloc(1, sizeof *s);
    if (!s)
        return CY_ENOMEM;
    s->cfg = *cfg;
    s->b = b;
    s->api.b = b;
    s->api.test_clock = cfg->test_clock;
    s->api.limits = cfg->limits;
    s->epfd = s->wakefd = s->sigfd = -1;
    s->started_ms = clock_mono_ms();
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_listen(cfg->listen, &ss, &sl)) {
        log_error("--listen: '%s' is not host:port", cfg->listen);
        free(s);
        return CY_EINVAL;
    }
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &ss, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)10000, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_END);
    if (!s->mhd) {
        log_error("cannot listen on %s: %s", cfg->listen, strerror(errno));
        free(s);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : 0;
    di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s->sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    int rc = (!di || s->sigfd < 0 || s->epfd < 0) ? -errno : 0;
    if (!rc)
        rc = add_fd(s->epfd, di->epoll_fd);
    if (!rc)
        rc = add_fd(s->epfd, s->sigfd);
    s->wakefd = wakefd;
    if (!rc && wakefd >= 0)
        rc = add_fd(s->epfd, wakefd);
    if (rc) {
        log_error("cannot set up the event loop: %s", cy_strerror(rc));
        server_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

unsigned server_port(const struct server *s)
{
    return s->port;
}

int server_run(struct server *s)
{
    uint64_t stop_at = 0, last_tick = clock_mono_ms();
    bool quiesced = false;
    for (;;) {
        unsigned resumed;
        uint64_t next = service_parked(s, &resumed);
        if (resumed) /* answer them now, not after the next epoll wake-up */
            MHD_run(s->mhd);
        uint64_t now = clock_mono_ms();
        MHD_UNSIGNED_LONG_LONG mt;
        int timeout = 1000;
        if (MHD_get_timeout(s->mhd, &mt) == MHD_YES && mt < (MHD_UNSIGNED_LONG_LONG)timeout)
            timeout = (int)mt;
        if (next != UINT64_MAX)
            timeout =
                next <= now ? 0 : (next - now < (uint64_t)timeout ? (int)(next - now) : timeout);
        if (s->stopping)
            timeout = timeout > 50 ? 50 : timeout;
        struct epoll_event evs[8];
        int n = epoll_wait(s->epfd, evs, 8, timeout);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == s->sigfd) {
                struct signalfd_siginfo si;
                while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
                    if (!s->stopping)
                        log_info("signal %u: stopping (finishing %u in-flight requests)",
                                 si.ssi_signo, s->active);
                    s->stopping = true;
                }
            } else if (fd == s->wakefd) {
                uint64_t v;
                ssize_t rr = read(s->wakefd, &v, sizeof v);
                (void)rr;
            }
        }
        MHD_run(s->mhd);
        now = clock_mono_ms();
        if (now - last_tick >= 1000) {
            broker_tick(s->b);
            last_tick = now;
        }
        if (s->stopping) {
            if (!quiesced) {
                MHD_socket ls = MHD_quiesce_daemon(s->mhd);
                if (ls != MHD_INVALID_SOCKET)
                    close(ls);
                quiesced = true;
                stop_at = now + s->cfg.shutdown_timeout_ms;
            }
            service_parked(s, &resumed);
            MHD_run(s->mhd);
            if (s->active == 0 || now >= stop_at) {
                if (s->active)
                    log_warn("shutdown: %u requests still open after %" PRIu64 " ms; closing them",
                             s->active, s->cfg.shutdown_timeout_ms);
                return 0;
            }
        }
    }
}

void server_free(struct server *s)
{
    if (!s)
        return;
    if (s->mhd)
        MHD_stop_daemon(s->mhd);
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->sigfd >= 0)
        close(s->sigfd);
    free(s->due);
    free(s);
}
