/*
 * coyote.h — the public C API of Coyote: the client library (libcoyote).
 *
 * One API, two backends chosen by URL (cy_open):
 *   "http://host:port"   a coyoted server (HTTP/1.1 keep-alive, MessagePack)
 *   "file:///path/dir"   embedded: the broker runs in this process on a data
 *                        directory, no server — the durable file-backed queue of
 *                        a single program (a second process gets CY_ELOCKED)
 * The same program runs unchanged on either.
 *
 * Conventions (STYLE.md):
 *   - every function returns int: 0 on success, a negative code on failure —
 *     a negative errno or a CY_E* code below; cy_strerror() makes a sentence;
 *   - a failure reported by the broker (HTTP status + code + detail) is
 *     CY_ESERVER; cy_last_error() gives its code and detail;
 *   - the library never aborts the host process: out of memory is CY_ENOMEM;
 *   - strings are NUL-terminated on input unless a length is given; bytes
 *     (values, keys) are pointer + length;
 *   - every pointer a function returns says who owns it and until when.
 *
 * Threading: a cy_client is safe to use from several threads at once (calls
 * are serialized inside); results are owned by the caller once returned.
 */
#ifndef COYOTE_H
#define COYOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors --------------------------------------------------------------------- */

enum {
    CY_OK = 0,
    CY_ECORRUPT = -1001,   /* data failed a checksum or a structural check */
    CY_EFORMAT = -1002,    /* unknown magic number or unsupported format version */
    CY_EREADONLY = -1003,  /* storage is in its error state: nothing more is acknowledged */
    CY_ENOTFOUND = -1004,  /* no such item */
    CY_ELOCKED = -1005,    /* the data directory is in use by another process */
    CY_ETOOBIG = -1006,    /* a value exceeds a size limit */
    CY_ECLOSED = -1007,    /* the object is closed or shutting down */
    CY_ENOMEM = -1008,     /* out of memory (the client library never aborts) */
    CY_EINVAL = -1009,     /* an argument breaks the function's contract */
    CY_ERANGE = -1010,     /* an offset or position is outside what is stored */
    CY_ESERVER = -1011,    /* the broker refused the request: see cy_last_error */
    CY_ECONNECT = -1012,   /* the server cannot be reached */
    CY_ETIMEDOUT = -1013,  /* the request timed out (its outcome is unknown) */
    CY_EPROTOCOL = -1014,  /* the server answered something this library cannot read */
};

/* A sentence describing `code` (0, a negative errno or a CY_E* code).
 * The string is static; never NULL. */
const char *cy_strerror(int code);

/* ---- the client ----------------------------------------------------------------- */

typedef struct cy_client cy_client;

typedef struct cy_options {
    const char *token;          /* bearer token (http), or NULL */
    const char *ns;             /* namespace for every call, NULL: the default one */
    uint32_t timeout_ms;        /* per request (http); 0: 30000 (+ any batch_wait_ms) */
    const char *fsync;          /* embedded: "always" (default) | "interval=<ms>" | "never" */
} cy_options;

/* Open a client for `url` (see the top of this file). opts may be NULL.
 * Errors: CY_EINVAL (bad URL), CY_ELOCKED (embedded directory in use),
 * CY_ECONNECT is NOT returned here for http (connections are made lazily). */
int cy_open(const char *url, const cy_options *opts, cy_client **out);
/* Close the client (embedded: sync, checkpoint, release the directory). */
int cy_close(cy_client *c);

/* The broker's error code ("invalid_input", "not_found", ...) and detail
 * sentence of this thread's last CY_ESERVER failure on c, and its HTTP status.
 * Owned by the client, valid until this thread's next call on c. */
const char *cy_last_error(cy_client *c, const char **detail, int *status);

/* ---- messages ------------------------------------------------------------------- */

typedef struct cy_header {
    const char *name;  /* NUL-terminated */
    const char *value; /* NUL-terminated */
} cy_header;

typedef struct cy_message {
    const void *value;
    size_t value_len;
    const cy_header *headers;
    size_t n_headers;
    const char *key; /* NULL: no key */
    size_t key_len;  /* 0 with a non-NULL key: strlen(key) */
    bool has_delay;
    uint64_t delay_ms;
} cy_message;

typedef struct cy_partition_offsets {
    uint32_t partition;
    uint64_t start_offset;
    uint64_t end_offset; /* one past the last */
} cy_partition_offsets;

typedef struct cy_publish_result {
    size_t n;
    cy_partition_offsets parts[64];
    bool duplicate; /* answered from the idempotency key: nothing new stored */
} cy_publish_result;

/* Publish msgs[0..n) atomically to topic ("name" or "name~partition").
 * idempotency_key may be NULL. result may be NULL. Returns once the messages
 * are durable under the broker's fsync policy. */
int cy_publish(cy_client *c, const char *topic, const cy_message *msgs, size_t n,
               const char *idempotency_key, cy_publish_result *result);

/* ---- receiving -------------------------------------------------------------------- */

typedef enum cy_mode { CY_STREAM = 0, CY_QUEUE = 1, CY_FIFO = 2 } cy_mode;

/* A received message. Owned by the cy_batch it came in. */
typedef struct cy_received {
    uint32_t partition;
    uint64_t offset;
    char msg_id[32];  /* "<partition>:<offset>" (queue/FIFO ack, nack, extend) */
    char topic[80];   /* "<name>~<partition>" (stream commit) */
    const uint8_t *value;
    size_t value_len;
    const cy_header *headers;
    size_t n_headers;
    const char *key; /* NULL: none */
    size_t key_len;
    uint64_t timestamp;
    bool has_scheduled_at;
    uint64_t scheduled_at;
    uint32_t attempt; /* queue/FIFO: delivery number, 1 first */
} cy_received;

typedef struct cy_batch {
    cy_received *msgs;
    size_t n;
    void *internal_; /* the memory behind msgs */
} cy_batch;
void cy_batch_free(cy_batch *b);

typedef struct cy_receive_opts {
    uint32_t batch_size;     /* 0: 10 */
    bool has_lease;
    uint64_t lease_ms;       /* default: 300000 stream, 30000 queue/FIFO */
    uint64_t batch_wait_ms;  /* long poll: wait up to this for a full batch (0: none) */
    bool start_earliest;     /* stream: a new group starts at the earliest message */
} cy_receive_opts;

/* Receive from topic ("name" or "name~p") for `group` in `mode`. opts may be
 * NULL. On success *out holds 0..batch_size messages; free with cy_batch_free. */
int cy_receive(cy_client *c, cy_mode mode, const char *topic, const char *group,
               const cy_receive_opts *opts, cy_batch *out);

/* Queue/FIFO: settle messages by id. */
int cy_ack(cy_client *c, cy_mode mode, const char *topic, const char *group,
           const char *const *msg_ids, size_t n);
/* has_delay: retry after delay_ms instead of the retry schedule. */
int cy_nack(cy_client *c, cy_mode mode, const char *topic, const char *group,
            const char *const *msg_ids, size_t n, bool has_delay, uint64_t delay_ms);
int cy_extend(cy_client *c, cy_mode mode, const char *topic, const char *group,
              const char *const *msg_ids, size_t n, uint64_t lease_ms);

typedef struct cy_queue_config {
    uint32_t retry_count;
    uint64_t retry_schedule[100];
    const char *dlq_topic; /* NULL: none */
    uint32_t max_deliveries; /* 0: unlimited */
} cy_queue_config;
int cy_queue_configure(cy_client *c, cy_mode mode, const char *topic, const char *group,
                       const cy_queue_config *cfg);
int cy_redrive(cy_client *c, cy_mode mode, const char *topic, const char *group);

/* Stream: commit offset on "name~p"; seek a group. */
int cy_commit(cy_client *c, const char *topic_partition, const char *group, uint64_t offset);
typedef enum cy_seek_kind {
    CY_SEEK_OFFSET,
    CY_SEEK_EARLIEST,
    CY_SEEK_LATEST,
    CY_SEEK_TIMESTAMP
} cy_seek_kind;
int cy_seek(cy_client *c, const char *topic, const char *group, cy_seek_kind kind,
            uint64_t value);

/* Dead-letter messages at once, whatever retries remain (a permanent failure):
 * kept dead for the group (cy_redrive brings them back) and, when the group
 * has a dlq_topic, copied to it. */
int cy_dead_letter(cy_client *c, cy_mode mode, const char *topic, const char *group,
                   const char *const *msg_ids, size_t n);

/* ---- one message written in pieces ------------------------------------------------ */

/* A writer builds one message whose value is streamed in pieces and published
 * (as one message, atomically) by cy_writer_close. A writer is for one message
 * only. The value is buffered in memory (messages are at most the broker's
 * value limit, 1 MiB by default). */
typedef struct cy_writer cy_writer;
/* meta: headers, key and delay of the message (its value is ignored); the
 * writer copies what it needs. */
int cy_writer_open(cy_client *c, const char *topic, const cy_message *meta, cy_writer **out);
int cy_writer_write(cy_writer *w, const void *p, size_t n);
/* Publish, then free the writer (also on failure). result may be NULL. */
int cy_writer_close(cy_writer *w, cy_publish_result *result);
/* Free the writer without publishing. */
void cy_writer_abort(cy_writer *w);

/* ---- batching publisher ------------------------------------------------------------- */

/* Messages are queued, sent in batches (batch_size messages or after
 * linger_ms, whichever comes first) from a background thread, and reported
 * one by one to on_done with their partition and offset, or an error. Each
 * batch carries a generated idempotency key, so the publisher's own retries
 * (after CY_ECONNECT/CY_ETIMEDOUT) never store a batch twice. */
typedef struct cy_publisher cy_publisher;
/* rc: 0 or the error of the message's batch; msg_arg as given to
 * cy_publisher_send. Called on the publisher's thread, once per message, in
 * the order the messages were queued; it must not call cy_publisher_send,
 * _flush or _close on its own publisher (they wait for this thread). After
 * rc == CY_ESERVER, cy_last_error on this thread gives the broker's answer.
 * Retried before it is reported: CY_ECONNECT, CY_ETIMEDOUT and HTTP 503.
 * A batch refused with 413/422 is resent message by message, so a bad
 * message fails alone.
 * partition/offset (rc == 0): exact when the message's batch was stored in a
 * single partition — always so on a one-partition topic or a publisher of
 * "name~p". A batch the broker spread over several partitions (keyless
 * messages go where the broker chooses) cannot be mapped back to its
 * messages: each is reported stored (rc 0) with partition UINT32_MAX and
 * offset UINT64_MAX. For exact positions on a topic of several partitions,
 * use one publisher per partition ("name~p"). */
typedef void (*cy_publish_cb)(void *arg, int rc, uint32_t partition, uint64_t offset,
                              void *msg_arg);
typedef struct cy_publisher_opts {
    uint32_t linger_ms;     /* 0: 5 */
    uint32_t batch_size;    /* 0: 100 */
    uint32_t max_in_flight; /* messages queued or being sent; send blocks at it; 0: 10000 */
    uint32_t retries;       /* transport failures retried per batch; 0: 3 */
    cy_publish_cb on_done;  /* may be NULL */
    void *arg;
} cy_publisher_opts;
int cy_publisher_new(cy_client *c, const char *topic, const cy_publisher_opts *opts,
                     cy_publisher **out);
/* Queue one message (copied). Blocks while max_in_flight messages are pending.
 * CY_ECLOSED after cy_publisher_close began. */
int cy_publisher_send(cy_publisher *p, const cy_message *m, void *msg_arg);
/* Wait until everything queued so far is reported. Returns the first error
 * reported since the previous flush (0 if none). */
int cy_publisher_flush(cy_publisher *p);
/* Flush, stop the thread, free. Returns what cy_publisher_flush would.
 * Close every publisher and writer of a client before cy_close. */
int cy_publisher_close(cy_publisher *p);

/* ---- consumer server --------------------------------------------------------------- */

typedef enum cy_outcome {
    CY_DONE = 0,  /* handled: ack (queue/FIFO) or commit in order (stream) */
    CY_RETRY = 1, /* a retryable failure: nack (the group's retry schedule applies) */
    CY_DEAD = 2,  /* a permanent failure: dead-letter at once */
} cy_outcome;

/* What a handler knows about the message it runs for. */
typedef struct cy_context {
    cy_client *client;
    cy_mode mode;
    const char *topic;
    const char *group;
    uint64_t deadline_mono_ms; /* CLOCK_MONOTONIC ms; 0: none; the handler should give up
                                  after it (it is not killed; its late outcome is ignored) */
    void *user;                /* cy_handler.arg */
} cy_context;

/* msg is valid only during the call. Stream mode has no retries or dead
 * letters: CY_RETRY stops commits at the message and the partition is seeked
 * back to it (redelivery), CY_DEAD counts as done (committed past). */
typedef cy_outcome (*cy_handler_fn)(const cy_context *ctx, const cy_received *msg);
typedef struct cy_handler {
    cy_handler_fn fn;
    void *arg;
} cy_handler;

typedef struct cy_serve_opts {
    cy_mode mode;
    const char *topic;
    const char *group;
    uint32_t workers;       /* handler threads; 0: 1 */
    uint32_t batch_size;    /* per receive; 0: 10 */
    uint64_t batch_wait_ms; /* long poll; 0: 1000 */
    uint64_t lease_ms;      /* 0: the mode's default */
    uint64_t deadline_ms;   /* per message: the lease is extended while the handler runs;
                               past it the message is nacked (0: no deadline) */
    bool start_earliest;    /* stream: a new group starts at the earliest message */
} cy_serve_opts;

typedef struct cy_server cy_server;
/* Start pulling (long polling) and calling h for each message on `workers`
 * threads; settle each message by the handler's outcome (stream: commit in
 * offset order per partition, only past messages that are done). */
int cy_serve_start(cy_client *c, const cy_serve_opts *opts, cy_handler h, cy_server **out);
/* Graceful stop: no new receives; in-flight handlers finish and their
 * messages are settled; then threads are joined and s is freed. Returns the
 * first error the server met (0 if none). Async-signal-unsafe: call it from a
 * normal thread (a signal handler may set a flag that a thread acts on). */
int cy_serve_stop(cy_server *s);

/* Dead-letter with a reason: like cy_dead_letter, and the copies put in the
 * group's dlq_topic carry the header "coyote-dead-letter-reason: <reason>". */
int cy_dead_letter_reason(cy_client *c, cy_mode mode, const char *topic, const char *group,
                          const char *const *msg_ids, size_t n, const char *reason);

/* Inside a handler: give the reason for returning CY_DEAD (copied; shown in the
 * DLQ copy's "coyote-dead-letter-reason" header). Only for the current message. */
void cy_set_dead_reason(const cy_context *ctx, const char *reason);

/* ---- middleware: decorators that compose ------------------------------------------ */

/* Handler decorators wrap `next` and give a new handler in *out; wrap again to
 * compose (the outermost runs first). Free a chain with cy_handler_free, which
 * frees every decorator in it (not the innermost user handler's arg). */
/* Log one line per message (id, attempt, outcome, duration) to out. */
int cy_mw_logging(cy_handler next, FILE *out, cy_handler *h);
/* Values whose header "content-encoding" is "zstd" are decompressed before
 * next sees them (the header is removed); an undecodable value is CY_DEAD. */
int cy_mw_zstd(cy_handler next, cy_handler *h);
/* Counters, updated atomically; read them any time. */
typedef struct cy_metrics {
    uint64_t handled, done, retried, dead;
    uint64_t latency_us_hist[16]; /* bucket i: < 2^i * 100 us (last: the rest) */
} cy_metrics;
int cy_mw_metrics(cy_handler next, cy_metrics *m, cy_handler *h);
void cy_handler_free(cy_handler h);

/* Publisher decorators: a cy_send publishes one message; decorators transform
 * or observe it and pass it on. */
typedef int (*cy_send_fn)(void *arg, const char *topic, const cy_message *m,
                          cy_publish_result *result);
typedef struct cy_send {
    cy_send_fn fn;
    void *arg;
} cy_send;
/* The base: cy_publish of one message on c. */
cy_send cy_send_client(cy_client *c);
/* Compress the value with zstd (level 0: default) and add the header
 * "content-encoding: zstd"; values below min_bytes are sent as they are. */
int cy_send_zstd(cy_send next, int level, size_t min_bytes, cy_send *out);
int cy_send_logging(cy_send next, FILE *out, cy_send *s);
int cy_send_message(cy_send s, const char *topic, const cy_message *m, cy_publish_result *r);
void cy_send_free(cy_send s);

/* ---- router ------------------------------------------------------------------------ */

/* Dispatch by the "media_type" header. A route may check the value first: it
 * must be a JSON object with each required field of the given type ("string",
 * "number", "integer", "boolean", "object", "array", "null"); a message that
 * fails is dead-lettered with the reason (cy_set_dead_reason) without reaching
 * the route's handler. Messages with no or an unknown media_type go to the
 * fallback (default: dead-lettered with the reason "no route for media_type"). */
typedef struct cy_router cy_router;
int cy_router_new(cy_router **out);
/* required: NULL, or a JSON object {"field": "type", ...}; CY_EINVAL if malformed. */
int cy_router_add(cy_router *r, const char *media_type, cy_handler h, const char *required);
int cy_router_fallback(cy_router *r, cy_handler h);
/* The router as a handler (valid until cy_router_free). */
cy_handler cy_router_handler(cy_router *r);
void cy_router_free(cy_router *r);

/* ---- administration --------------------------------------------------------------- */

/* Configure a topic's partition count (1..64, only grows); *out (may be NULL)
 * gets the resulting count. */
int cy_topic_configure(cy_client *c, const char *topic, uint32_t partitions, uint32_t *out);

/* Any other operation of API.md, by op id ("v1.msgs.topic.get", ...), with a
 * JSON request body; *response receives the JSON response body (malloc'd,
 * NUL-terminated; free with cy_free). The namespace option is NOT added: put
 * "namespace" in the body yourself. */
int cy_call_json(cy_client *c, const char *op, const char *json_body, char **response);
void cy_free(void *p);

#ifdef __cplusplus
}
#endif
#endif
