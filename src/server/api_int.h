/*
 * api_int.h — what the files of the API layer share:
 *   api.c        dispatch, request decoding helpers, error bodies, writers
 *   api_msgs.c   publish, the receives (with long polling), stream commit /
 *                seek, queue and FIFO ack / nack / extend / configure / redrive
 *   api_admin.c  namespaces, topics, groups, the test clock
 *
 * Every operation handler has the same shape: decode and validate every
 * field of the body (422 invalid_data with a location), then call the
 * broker once, then write the response. A handler that fails writes nothing
 * into r->out; api_handle turns r->err into the error body.
 */
#ifndef COYOTE_SERVER_API_INT_H
#define COYOTE_SERVER_API_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/api.h"

/* Largest timestamp API.md §2 allows (9999-12-31T23:59:59.998Z). */
#define API_MAX_TIMESTAMP 253402207200998ull
/* batch_size a compatible client may send (API.md §2); above the broker's
 * maximum the broker caps it. */
#define API_MAX_BATCH_SIZE 65535u
#define API_DEFAULT_BATCH 10u

/* One attempt of one operation. */
struct req {
    struct api_ctx *ctx;
    struct api_call *call;
    struct broker *b;
    const struct val *body; /* a map */
    struct out *out;        /* == &call->out */
    struct arena arena;     /* request-scoped scratch (decoded bytes, arrays) */
    struct broker_error err;
};

enum hres {
    H_DONE,  /* a 200 body is in r->out */
    H_ERROR, /* r->err holds the error; r->out is untouched */
    H_POLL,  /* long poll: call again (call->deadline_ms / wake_ms set) */
};

/* ---- decoding (api.c) ------------------------------------------------------ */

/* The value of key in map m, or NULL when absent or null (API.md §1: the
 * same thing). */
const struct val *req_field(const struct val *m, const char *key);
/* "a string", "an integer", ... for error sentences. */
const char *req_type_name(enum val_type t);
/* Fill r->err with a 422 invalid_data at `loc`; returns -1. */
int req_bad(struct req *r, const char *loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 500 internal_error "out of memory"; returns -1. */
int req_oom(struct req *r);
/* Copy a broker error into r->err; returns -1. */
int req_broker_err(struct req *r, const struct broker_error *e);

/* Field readers: 0 on success (*has tells whether a value was given; may be
 * NULL for required fields), -1 with r->err filled. `loc` is the location
 * reported on error (the field path). */
int req_str_at(struct req *r, const struct val *v, const char *loc, struct bstr *out);
int req_str(struct req *r, const struct val *m, const char *key, bool required, struct bstr *out,
            bool *has);
/* A u64 (VAL_UINT only) no larger than max. */
int req_u64_at(struct req *r, const struct val *v, const char *loc, uint64_t max, uint64_t *out);
int req_u64(struct req *r, const struct val *m, const char *key, bool required, uint64_t max,
            uint64_t *out, bool *has);
/* One of names[0..n) (a string); *out = its index. */
int req_enum(struct req *r, const struct val *m, const char *key, bool required,
             const char *const *names, int n, int *out, bool *has);
/* The `namespace` field of data operations (API.md §2). */
int req_ns(struct req *r, struct broker_ns_ref *ns);
/* A required "topic" / "topic~p" field, split by the broker's rules. */
int req_topic_ref(struct req *r, const char *key, struct broker_topic_ref *out);
/* The required consumer_group field (its name rules are the broker's). */
int req_group(struct req *r, struct bstr *out);

/* ---- writing (api.c) ----------------------------------------------------------- */

void out_bstr(struct out *o, struct bstr s);
/* A u64, or nil when !has. */
void out_opt_u64(struct out *o, bool has, uint64_t v);
/* "<name>~<p>" */
void out_part_topic(struct out *o, struct bstr name, uint32_t p);
/* A map key that is not NUL-terminated (copied into the request arena). */
void out_key_n(struct req *r, const char *p, size_t n);
/* The empty map {} of operations that answer nothing. */
void out_empty(struct out *o);
/* A message's headers as a map of string → string. */
void out_headers(struct req *r, const struct broker_header *h, size_t n);

/* ---- operations ----------------------------------------------------------------------- */

/* api_msgs.c */
enum hres api_op_publish(struct req *r);
enum hres api_op_stream_receive(struct req *r);
enum hres api_op_stream_commit(struct req *r);
enum hres api_op_stream_seek(struct req *r);
enum hres api_op_queue_receive(struct req *r, enum broker_mode mode);
enum hres api_op_queue_ack(struct req *r, enum broker_mode mode);
enum hres api_op_queue_nack(struct req *r, enum broker_mode mode);
enum hres api_op_queue_extend(struct req *r, enum broker_mode mode);
enum hres api_op_queue_configure(struct req *r, enum broker_mode mode);
enum hres api_op_queue_redrive(struct req *r, enum broker_mode mode);

/* api_admin.c */
enum hres api_op_ns_configure(struct req *r);
enum hres api_op_ns_get(struct req *r);
enum hres api_op_ns_list(struct req *r);
enum hres api_op_topic_configure(struct req *r);
enum hres api_op_topic_get(struct req *r);
enum hres api_op_topic_list(struct req *r);
enum hres api_op_topic_trim(struct req *r);
enum hres api_op_group_list(struct req *r);
enum hres api_op_group_get(struct req *r);
enum hres api_op_clock_advance(struct req *r);

#endif
