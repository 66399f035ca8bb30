/*
 * api.h — the operations of API.md: decoded request bodies in, response
 * bodies out, between the HTTP layer (http.c) and the broker.
 *
 * The HTTP layer owns transport concerns: routing by path (POST /api/<op>),
 * methods, auth, Content-Type, body size, parsing the body into a struct val
 * (codec.h), and sending. api_handle() owns everything about one operation:
 * field decoding and validation (422 with a location), the broker call, the
 * response body, and the error bodies of API.md §1.
 *
 * A call may take several attempts (long polling, API.md §9):
 *
 *   http: attempt ──► api_handle ──► API_RESPOND: status + body ready; send it
 *                         │          once `wait` is durable (503 if the journal
 *                         │          failed first)
 *                         └────────► API_POLL: nothing to answer yet; call
 *                                    again when `watch` says its topic
 *                                    changed (broker_watch_changed), at
 *                                    wake_ms, or at deadline_ms with
 *                                    final = true (then it must respond)
 */
#ifndef COYOTE_SERVER_API_H
#define COYOTE_SERVER_API_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/broker.h"
#include "server/codec.h"

/* The largest request body by default (coyoted --max-body-bytes; the embedded
 * backend applies it too): larger is 413 payload_too_large. */
#define API_MAX_BODY_DEFAULT (2u << 20)

struct api_stats {
    uint64_t published;      /* messages stored by publish */
    uint64_t published_bytes; /* their value bytes */
    uint64_t received_bytes; /* value bytes handed out by receives */
    uint64_t publish_calls;
    uint64_t duplicates;     /* publishes answered from an idempotency key */
    uint64_t received;       /* messages handed out by any receive */
    uint64_t acked;          /* ids acked (queue/FIFO) */
    uint64_t nacked;         /* ids nacked */
    uint64_t committed;      /* stream commits */
    uint64_t requests;       /* operations handled */
    uint64_t errors_4xx, errors_5xx;
};

struct api_ctx {
    struct broker *b;
    bool test_clock;
    struct broker_limits limits; /* zeros: the API.md defaults */
    struct api_stats stats;
};

struct api_call {
    /* set by the HTTP layer */
    const char *op; /* the <op> of /api/<op>, e.g. "v1.msgs.publish" */
    size_t op_len;
    const struct val *body;
    enum codec_format fmt; /* response format */
    bool final;            /* the deadline passed or the server stops: respond now */
    uint64_t now_mono_ms;  /* the HTTP layer's clock at this attempt */
    /* set by api_handle */
    int status;
    struct out out;          /* initialized by the HTTP layer with fmt */
    struct broker_wait wait; /* ns == NULL: nothing to wait for */
    uint64_t deadline_ms;    /* monotonic ms; 0 until the first API_POLL sets it */
    uint64_t wake_ms;        /* monotonic ms worth retrying at; UINT64_MAX: only on change */
    struct broker_watch watch; /* API_POLL: the changes worth retrying for */
    /* API_POLL of a queue or FIFO receive that found nothing available: what
     * it asked (strings in the request's body). Until something else happens,
     * another receive of the same group, topic and partition finds nothing
     * either: the server tries one of them per change, not all. */
    bool poll_empty;
    enum broker_mode poll_mode;
    struct broker_receive_req poll_req;
};

enum api_result { API_RESPOND, API_POLL };

/* Handle one attempt of an operation. Unknown op → 404 with the error body;
 * a route that exists only with --test-clock (v1.test.clock.advance) is
 * unknown without it. Writes the body into call->out (fresh for each attempt
 * that responds). */
enum api_result api_handle(struct api_ctx *ctx, struct api_call *call);

/* Write the error body of API.md §1 into out: {code, detail[, location]}. */
void api_error_body(struct out *out, const char *code, const char *detail, const char *location);

/* true if op names an operation (so the HTTP layer can answer 405 vs 404). */
bool api_known_op(const struct api_ctx *ctx, const char *op, size_t len);

#endif
