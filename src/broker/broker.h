/*
 * broker.h — Coyote's broker: namespaces, topics, publish, and the stream /
 * queue / FIFO consumer groups of API.md §3–§10, as the deterministic state
 * machine of DESIGN.md §3 over the storage engine (one store per namespace).
 *
 * No HTTP here: the server (src/server), the embedded client backend and the
 * tests call these functions with decoded requests.
 *
 * Every mutating operation:
 *   1. validates the request against the state (nothing changes on error);
 *   2. decides everything that needs a choice (partitions of keyless
 *      messages, leases, dead-lettering) and journals a record with `now`;
 *   3. applies the record to the in-memory state — the same code replays it
 *      after a restart;
 *   4. returns through *wait the journal position that must be durable before
 *      the caller reports success (DESIGN.md §2: under --fsync=always the
 *      server answers after broker_durable(...) reaches it; receive leases may
 *      be answered at once).
 *
 * Errors: functions return 0, or a negative code with *err filled: the HTTP
 * status, the API.md error code and a sentence (and a field location for 422).
 * Results: pointers in result structs point into memory the broker owns,
 * valid until the next call on the same broker.
 *
 * Threading: one thread calls everything (the server's loop, or the embedded
 * client under its own lock). broker_wait_durable may block that thread.
 */
#ifndef COYOTE_BROKER_BROKER_H
#define COYOTE_BROKER_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "storage/journal.h"

#define BROKER_MAX_PARTITIONS 64

enum broker_mode { BROKER_STREAM = 0, BROKER_QUEUE = 1, BROKER_FIFO = 2 };

/* A length + pointer string (never NUL-terminated by contract). */
struct bstr {
    const char *p;
    size_t n;
};
#define BSTR(lit) ((struct bstr){(lit), sizeof(lit) - 1})

static inline bool bstr_is_default(struct bstr s)
{
    return s.n == 7 && memcmp(s.p, "default", 7) == 0;
}

struct broker_error {
    int status;          /* HTTP status: 400, 422, 500, 503 */
    const char *code;    /* "invalid_input", "not_found", "invalid_data", ... */
    char detail[256];    /* a human sentence */
    char location[64];   /* field path for 422 ("msgs[0].value"), or "" */
};

struct broker_limits {
    uint32_t max_value_bytes;      /* 1 MiB */
    uint32_t max_headers;          /* 64 */
    uint32_t max_header_bytes;     /* 4 KiB: each header name and value */
    uint32_t max_key_bytes;        /* 1 KiB */
    uint32_t max_batch;            /* 1000: larger batch_size is capped, not refused */
    uint64_t max_lease_ms;         /* 12 h */
    uint64_t max_batch_wait_ms;    /* 1 h */
    uint32_t max_retry_entries;    /* 100 */
    uint64_t max_retry_ms;         /* 7 days */
    uint64_t max_delay_ms;         /* 30 days */
    uint64_t dedup_window_ms;      /* 1 h */
    uint32_t fifo_window;          /* FIFO: blocked messages per partition before the scan pauses (100000) */
};
/* Fill the API.md defaults. */
void broker_limits_default(struct broker_limits *l);

struct broker_config {
    const char *data_dir;
    enum journal_fsync fsync;
    uint32_t fsync_interval_ms;
    uint64_t segment_bytes;          /* 0: 64 MiB */
    uint64_t checkpoint_interval_ms; /* 0: 60 s */
    uint64_t checkpoint_bytes;       /* 0: 64 MiB */
    const struct fileops *fo;        /* NULL: POSIX (tests inject faults) */
    struct broker_limits limits;     /* zeros: defaults */
    bool test_clock;                 /* allow broker_clock_advance */
    bool frozen_clock;               /* with test_clock: time moves only by advance */
    /* Called from a storage thread when a namespace's journal becomes durable
     * further (or fails): wake the owner thread, nothing more. */
    void (*on_durable)(void *arg);
    void *on_durable_arg;
};

struct broker;
struct broker_ns;

/* What a caller waits for before acknowledging: ns's journal durable >= pos.
 * ns == NULL: nothing to wait for. */
struct broker_wait {
    struct broker_ns *ns;
    uint64_t pos;
};

/* Open the data directory (creating it), recover every namespace, take the
 * directory lock (CY_ELOCKED: in use by another process). */
int broker_open(const struct broker_config *cfg, struct broker **out, struct broker_error *err);
/* Checkpoint and close everything. */
int broker_close(struct broker *b);

/* true when w is durable (or needs no wait); sets *failed (if not NULL) when
 * the namespace's journal failed before reaching it (answer 503). */
bool broker_is_durable(struct broker *b, const struct broker_wait *w, bool *failed);
/* Block until w is durable: 0, or CY_EREADONLY. */
int broker_wait_durable(struct broker *b, const struct broker_wait *w);
/* The durability policy ("always", "interval=N", "never"). */
const char *broker_fsync_name(struct broker *b);

/* The broker clock (ms since the epoch, monotonic). */
uint64_t broker_now(struct broker *b);
/* Test clock (API.md §10): only when configured with test_clock, else CY_EINVAL. */
int broker_clock_advance(struct broker *b, uint64_t ms);
/* Periodic work: checkpoints and retention. Call about once a second. */
void broker_tick(struct broker *b);
/* Wait until no checkpoint runs in the background (broker_tick starts them
 * and collects them on a later tick; tests use this to make a tick's
 * checkpoint complete before they look). */
void broker_checkpoints_wait(struct broker *b);

/* ---- names --------------------------------------------------------------- */

/* A topic reference as requests carry it: "name" or "name~p". */
struct broker_topic_ref {
    struct bstr name;
    int32_t partition; /* -1: the whole topic */
};
/* Validate and split (API.md §2): 0, or CY_EINVAL with a 422 in *err
 * (location `field`). */
int broker_parse_topic_ref(struct bstr s, const char *field, struct broker_topic_ref *out,
                           struct broker_error *err);
int broker_check_namespace_name(struct bstr s, const char *field, struct broker_error *err);
int broker_check_group_name(struct bstr s, const char *field, struct broker_error *err);

/* ---- namespaces (API.md §3) ---------------------------------------------- */

struct broker_retention {
    bool has_period;
    uint64_t period_ms;
    bool has_size;
    uint64_t size_bytes;
    bool has_topic_bytes;
    uint64_t topic_bytes;
};

struct broker_ns_info {
    struct bstr name;
    struct broker_retention retention;
    uint64_t created_ms, updated_ms;
};

/* Upsert. */
int broker_ns_configure(struct broker *b, struct bstr name, const struct broker_retention *r,
                        struct broker_ns_info *out, struct broker_wait *wait,
                        struct broker_error *err);
int broker_ns_get(struct broker *b, struct bstr name, struct broker_ns_info *out,
                  struct broker_error *err);
/* All namespaces (sorted by name). */
int broker_ns_list(struct broker *b, const struct broker_ns_info **out, size_t *n);

/* The `namespace` field of data operations: has == false (absent/null) →
 * "default"; explicit "default" → 400 no_explicit_default_namespace. */
struct broker_ns_ref {
    bool has;
    struct bstr name;
};

/* ---- topics (API.md §4) -------------------------------------------------- */

int broker_topic_configure(struct broker *b, struct broker_ns_ref ns, struct bstr topic,
                           int64_t partitions, uint32_t *out_partitions,
                           struct broker_wait *wait, struct broker_error *err);

struct broker_group_summary {
    struct bstr name;
    enum broker_mode mode;
    uint64_t lag;        /* messages */
    uint64_t lag_ms;     /* age of the oldest unconsumed message, 0 when none */
};

struct broker_partition_info {
    uint64_t start_offset, end_offset;
    uint64_t bytes;
    uint64_t oldest_timestamp; /* 0 when empty */
};

struct broker_topic_info {
    struct bstr name;
    uint32_t partitions;
    const struct broker_partition_info *parts; /* [partitions] */
    const struct broker_group_summary *groups;
    size_t n_groups;
};
int broker_topic_get(struct broker *b, struct broker_ns_ref ns, struct bstr topic,
                     struct broker_topic_info *out, struct broker_error *err);
int broker_topic_list(struct broker *b, struct broker_ns_ref ns, const struct bstr **names,
                      size_t *n, struct broker_error *err);

/* trim: exactly one of before_offset / before_timestamp. */
struct broker_trim_req {
    struct broker_ns_ref ns;
    struct broker_topic_ref topic;
    bool has_before_offset;
    uint64_t before_offset;
    bool has_before_timestamp;
    uint64_t before_timestamp;
};
struct broker_trim_res {
    uint32_t n;
    uint32_t partition[BROKER_MAX_PARTITIONS];
    uint64_t start_offset[BROKER_MAX_PARTITIONS];
};
int broker_topic_trim(struct broker *b, const struct broker_trim_req *req,
                      struct broker_trim_res *res, struct broker_wait *wait,
                      struct broker_error *err);

/* ---- publish (API.md §5) ------------------------------------------------- */

struct broker_header {
    struct bstr name;
    struct bstr value;
};

struct broker_msg_in {
    const uint8_t *value;
    size_t value_len;
    const struct broker_header *headers;
    size_t n_headers;
    bool has_key;
    struct bstr key;
    bool has_delay;
    uint64_t delay_ms;
};

struct broker_publish_req {
    struct broker_ns_ref ns;
    struct broker_topic_ref topic;
    const struct broker_msg_in *msgs;
    size_t n_msgs;
    bool has_idempotency_key;
    struct bstr idempotency_key;
};

struct broker_publish_part {
    uint32_t partition;
    uint64_t start_offset;
    uint64_t offset; /* one past the last */
};
struct broker_publish_res {
    struct bstr topic; /* the bare topic name */
    uint32_t n_parts;
    struct broker_publish_part parts[BROKER_MAX_PARTITIONS]; /* ascending by partition */
    bool duplicate;
};
int broker_publish(struct broker *b, const struct broker_publish_req *req,
                   struct broker_publish_res *res, struct broker_wait *wait,
                   struct broker_error *err);

/* ---- receiving (all modes) ----------------------------------------------- */

struct broker_msg_out {
    uint32_t partition;
    uint64_t offset;
    const uint8_t *value;
    size_t value_len;
    const struct broker_header *headers;
    size_t n_headers;
    bool has_key;
    struct bstr key;
    uint64_t timestamp;
    bool has_scheduled_at;
    uint64_t scheduled_at;
    uint32_t attempt; /* queue / FIFO: delivery number, 1 first */
};

struct broker_receive_req {
    struct broker_ns_ref ns;
    struct broker_topic_ref topic;
    struct bstr group;
    uint32_t batch_size;        /* 0: default 10; capped at limits.max_batch */
    bool has_lease;
    uint64_t lease_ms;          /* default 300000 (stream) / 30000 (queue, FIFO) */
    bool start_earliest;        /* stream: default_starting_position == "earliest" */
};
struct broker_receive_res {
    const struct broker_msg_out *msgs;
    size_t n;
};
int broker_stream_receive(struct broker *b, const struct broker_receive_req *req,
                          struct broker_receive_res *res, struct broker_wait *wait,
                          struct broker_error *err);
/* mode: BROKER_QUEUE or BROKER_FIFO for every queue_* function. */
int broker_queue_receive(struct broker *b, enum broker_mode mode,
                         const struct broker_receive_req *req, struct broker_receive_res *res,
                         struct broker_wait *wait, struct broker_error *err);

/* ---- stream (API.md §6) -------------------------------------------------- */

struct broker_commit_req {
    struct broker_ns_ref ns;
    struct broker_topic_ref topic; /* must name a partition */
    struct bstr group;
    uint64_t offset;
};
int broker_stream_commit(struct broker *b, const struct broker_commit_req *req,
                         struct broker_wait *wait, struct broker_error *err);

enum broker_seek_kind { SEEK_OFFSET, SEEK_EARLIEST, SEEK_LATEST, SEEK_TIMESTAMP };
struct broker_seek_req {
    struct broker_ns_ref ns;
    struct broker_topic_ref topic;
    struct bstr group;
    int n_targets; /* how many of offset / position / timestamp were given */
    enum broker_seek_kind kind;
    uint64_t value; /* offset or timestamp */
};
int broker_stream_seek(struct broker *b, const struct broker_seek_req *req,
                       struct broker_wait *wait, struct broker_error *err);

/* ---- queue and FIFO (API.md §7, §8) -------------------------------------- */

struct broker_msg_id {
    uint32_t partition;
    uint64_t offset;
};
/* Parse "<partition>:<offset>": 0, or CY_EINVAL with a 422 in *err. */
int broker_parse_msg_id(struct bstr s, const char *field, struct broker_msg_id *out,
                        struct broker_error *err);

struct broker_ids_req {
    struct broker_ns_ref ns;
    struct bstr topic; /* bare topic name (or topic~p: the partition is ignored) */
    struct bstr group;
    const struct broker_msg_id *ids;
    size_t n_ids;
    bool has_delay; /* nack */
    uint64_t delay_ms;
    bool dead_letter; /* nack [ext]: dead-letter at once, whatever retries remain */
    bool has_reason;  /* nack [ext]: DLQ copies get "coyote-dead-letter-reason: <reason>" */
    struct bstr reason;
    bool has_lease; /* extend */
    uint64_t lease_ms;
};
int broker_queue_ack(struct broker *b, enum broker_mode mode, const struct broker_ids_req *req,
                     struct broker_wait *wait, struct broker_error *err);
int broker_queue_nack(struct broker *b, enum broker_mode mode, const struct broker_ids_req *req,
                      struct broker_wait *wait, struct broker_error *err);
int broker_queue_extend(struct broker *b, enum broker_mode mode, const struct broker_ids_req *req,
                        struct broker_wait *wait, struct broker_error *err);

struct broker_queue_config {
    uint32_t retry_count;
    uint64_t retry_schedule[100];
    bool has_dlq_topic;
    struct bstr dlq_topic;
    uint32_t max_deliveries;
};
struct broker_group_req {
    struct broker_ns_ref ns;
    struct bstr topic;
    struct bstr group;
};
int broker_queue_configure(struct broker *b, enum broker_mode mode,
                           const struct broker_group_req *req,
                           const struct broker_queue_config *cfg, struct broker_queue_config *out,
                           struct broker_wait *wait, struct broker_error *err);
int broker_queue_redrive(struct broker *b, enum broker_mode mode,
                         const struct broker_group_req *req, struct broker_wait *wait,
                         struct broker_error *err);

/* ---- operations (API.md §10) --------------------------------------------- */

struct broker_group_partition {
    uint32_t partition;
    uint64_t position;      /* stream: committed cursor; queue/FIFO: floor */
    uint64_t lag;
    uint64_t lag_ms;
    bool leased;            /* stream: partition lease held */
};
struct broker_group_info {
    struct bstr topic;
    struct bstr group;
    enum broker_mode mode;
    uint32_t n_parts;
    struct broker_group_partition parts[BROKER_MAX_PARTITIONS];
    uint64_t lag, lag_ms;
    uint64_t in_flight, waiting_retry, dead, delayed;
    bool has_config;
    struct broker_queue_config config;
};
/* topic.n == 0: every topic of the namespace. */
int broker_group_list(struct broker *b, struct broker_ns_ref ns, struct bstr topic,
                      const struct broker_group_info **out, size_t *n, struct broker_error *err);
int broker_group_get(struct broker *b, struct broker_ns_ref ns, struct bstr topic,
                     enum broker_mode mode, struct bstr group, struct broker_group_info *out,
                     struct broker_error *err);

/* ---- long polling (API.md §9) -------------------------------------------- */

/* How many messages a receive with this request would return now (up to
 * cap), without changing anything; and the earliest time something becomes
 * available by itself (lease expiry, retry, delay), UINT64_MAX when none.
 * Unknown namespace/topic: 0 and UINT64_MAX. */
uint32_t broker_available(struct broker *b, enum broker_mode mode,
                          const struct broker_receive_req *req, uint32_t cap,
                          uint64_t *next_wakeup);
/* A counter that grows whenever anything a receive could see changed
 * (publish, ack, nack, configure, seek, trim, clock advance): long-poll
 * waiters re-check when it moved. */
uint64_t broker_change_seq(struct broker *b);

/* What a waiting receive watches: the changes of its topic, and those that
 * concern every topic (the test clock, namespaces). broker_watch_init records
 * the present; broker_watch_changed is then true once something the receive
 * could see may have changed (always, when the namespace or topic was not
 * found). Lets a server with many waiting receives re-check only those whose
 * topic changed. Topics live as long as the broker. */
struct broker_watch {
    const void *topic; /* NULL: watch everything */
    uint64_t topic_seq;
    uint64_t global_seq;
};
void broker_watch_init(struct broker *b, const struct broker_receive_req *req,
                       struct broker_watch *w);
bool broker_watch_changed(struct broker *b, const struct broker_watch *w);
/* For an owner with many waiting receives (the server): one pointer per
 * topic that the owner may use as it likes (it hangs the receives waiting on
 * the topic there); NULL when the watch has no topic. */
void **broker_watch_slot(struct broker *b, const struct broker_watch *w);
/* Calls cb with the slot of every topic changed since the last call (each
 * once; changes made during the calls are reported next time). cb NULL:
 * only forget them. */
void broker_changed_topics(struct broker *b, void (*cb)(void *arg, void **slot), void *arg);
/* Grows with the changes that concern every topic (watches see them too). */
uint64_t broker_global_seq(struct broker *b);

/* Messages dead-lettered since the broker opened (by nack or max_deliveries). */
uint64_t broker_dead_lettered(struct broker *b);

/* The journal statistics of a namespace (metrics). 0 or CY_ENOTFOUND. */
int broker_ns_journal_stats(struct broker *b, struct bstr ns, struct journal_stats *out);

/* ---- for tests: a canonical dump of all state (equal states give equal
 * bytes), used by the determinism tests. --------------------------------- */
int broker_dump_state(struct broker *b, struct buf *out);

#endif
