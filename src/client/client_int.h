/*
 * client_int.h — what the files of libcoyote share:
 *   client.c            cy_open / cy_close, the call lock, per-thread last
 *                       errors, the request plumbing (client_call), cy_call_json
 *   client_msgs.c       the typed operations: request encoding, response decoding
 *   backend_embedded.c  the file:// backend (the broker in this process)
 *   backend_http.c      the http:// backend
 *   publisher.c         cy_writer_* and cy_publisher_* (on top of cy_publish)
 *   serve.c             cy_serve_start / cy_serve_stop (the consumer server)
 *
 * Every typed operation has the same shape: build a MessagePack body with
 * client_begin (which writes "namespace" when the client has one), add its
 * fields, run it with client_call, read the response tree (valid until the
 * arena is freed), copy what the caller gets.
 */
#ifndef COYOTE_CLIENT_CLIENT_INT_H
#define COYOTE_CLIENT_CLIENT_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "client/backend.h"
#include "coyote.h"
#include "server/codec.h"

/* The per-thread record behind cy_last_error (client.c). */
struct client_err;

struct cy_client {
    /* Serializes every call (backend.h: a backend need not be thread-safe).
     * The embedded backend releases it while a long poll or a durability
     * wait blocks (backend_embedded_set_lock). */
    pthread_mutex_t lock;
    struct cy_backend *be;
    char *ns;            /* cy_options.ns (copy), or NULL */
    uint32_t timeout_ms; /* per request, before any batch_wait_ms */
    /* What cy_open was given (copies), so a part of the library that needs
     * a connection of its own (serve.c: a long poll over http holds the
     * client's lock) can open a sibling client on the same broker. */
    char *url;
    char *token; /* or NULL */
    struct client_err *errs;
};

/* Start a request body: a MessagePack map of `pairs` fields plus
 * "namespace" (written first) when the client has one. */
void client_begin(cy_client *c, struct out *o, uint32_t pairs);

/* Run op with the body in o (freed here). extra_ms is added to the request
 * timeout (a long poll's batch_wait_ms). On status 200 *resp is the parsed
 * response — a map — allocated in a (the caller frees a, also on failure).
 * Errors: CY_ESERVER (the broker's error body stored for cy_last_error),
 * CY_EPROTOCOL (an answer that does not parse or is not a map), CY_ENOMEM,
 * and whatever the backend returns (CY_ECONNECT, CY_ETIMEDOUT, ...). */
int client_call(cy_client *c, const char *op, struct out *o, uint64_t extra_ms, struct arena *a,
                const struct val **resp);

/* Tell the embedded backend which mutex its caller holds around call(), so
 * it can wait on a condition variable with it (releasing it) during long
 * polls and durability waits. Without it those waits hold every other
 * caller off. */
void backend_embedded_set_lock(struct cy_backend *be, pthread_mutex_t *lock);

/* Whether c runs the broker in this process (file://): its long polls
 * release the client's lock, and a second cy_open of the same directory
 * would be refused (CY_ELOCKED), so c is shared rather than reopened. */
static inline bool client_is_embedded(const cy_client *c)
{
    return c->be && strcmp(c->be->ops->name, "file") == 0;
}

/* One publish attempt of a cy_publisher: publish msgs[0..n) to topic with
 * idempotency_key, fill *result, and on CY_ESERVER set *status to the HTTP
 * status (0 otherwise). The default calls cy_publish and cy_last_error. */
typedef int (*publisher_attempt_fn)(void *arg, cy_client *c, const char *topic,
                                    const cy_message *msgs, size_t n, const char *idempotency_key,
                                    cy_publish_result *result, int *status);
/* Test-only: make p's thread publish through fn(arg, ...) instead (NULL: back
 * to cy_publish), so a test can fail attempts (lost replies, 503s) and watch
 * the retries and their keys. Takes effect from the next batch. */
void publisher_set_attempt(cy_publisher *p, publisher_attempt_fn fn, void *arg);

/* Decorator chains (middleware.c). cy_handler_free and cy_send_free walk a
 * chain from the outside in: a handler whose fn is a registered decorator fn
 * is freed with its free_arg, which frees the decorator's arg and stores in
 * *next_out the handler it wraps (fn NULL: nothing further to free); the walk
 * then continues with *next_out and stops at a handler whose fn is not
 * registered (the user's own, whose arg is not ours to free). Register once
 * per fn (e.g. from cy_router_new: repeated registrations of the same fn are
 * ignored; thread-safe). The table is small (32); returns 0, or CY_ENOMEM
 * when it is full. */
int mw_register_free(cy_handler_fn fn, void (*free_arg)(void *arg, cy_handler *next_out));

/* The argument checks cy_publish makes on one message (client_msgs.c); the
 * writer and the batching publisher refuse a bad message with the same rule
 * at once instead of failing a whole batch later. */
bool client_valid_message(const cy_message *m);

#endif
