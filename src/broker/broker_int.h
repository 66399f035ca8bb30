/*
 * broker_int.h — the broker's internal structures, shared by its files:
 *   broker.c  open/close, namespaces, clock, durability, checkpoints, replay
 *   names.c   validation of names and ids, error helpers
 *   topic.c   topics, partitions, publish, idempotency, trim, retention
 *   stream.c  stream groups
 *   queue.c   queue and FIFO groups (over qgroup.c)
 *   info.c    introspection: topic/group get and list
 *   group.c   groups as objects, the receive prologue, record addressing
 *
 * Ownership: the broker owns its namespaces; a namespace owns its store and
 * topics; a topic owns its groups and idempotency entries.
 */
#ifndef COYOTE_BROKER_INT_H
#define COYOTE_BROKER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/hashmap.h"
#include "broker/broker.h"
#include "broker/qgroup.h"
#include "storage/store.h"

/* Journal record type of every broker command that is not a publish. */
enum { BREC_CMD = 16 };

/* Partition ids in the store: topic id (per namespace) and partition. */
static inline uint64_t part_id_of(uint32_t topic_id, uint32_t p)
{
    return ((uint64_t)topic_id << 6) | p;
}

struct spart { /* a stream group's state for one partition */
    bool init;
    uint64_t cursor;      /* next offset to deliver */
    uint64_t lease_until; /* 0: not leased */
    uint64_t last;        /* last offset handed out under the lease */
};

struct group {
    enum broker_mode mode;
    char *name;
    size_t name_len;
    struct topic *topic;
    /* stream */
    bool initialized;
    struct spart sp[BROKER_MAX_PARTITIONS];
    /* queue / FIFO */
    struct qgroup *qg;
    char *dlq_topic; /* NULL: none */
    size_t dlq_len;
};

struct tpart {
    uint64_t first; /* logical start: trim and retention move it; never down */
    uint64_t bytes; /* message bytes in [first, next) */
};

struct dedup {
    struct dedup *next; /* in expiry order */
    uint64_t expires;
    char *key;
    size_t key_len;
    struct broker_publish_res res;
};

struct topic {
    struct broker_ns *ns;
    char *name;
    size_t name_len;
    uint32_t id;
    uint32_t partitions;
    struct tpart parts[BROKER_MAX_PARTITIONS];
    uint64_t rr;          /* keyless messages published so far: round-robin */
    struct hmap *groups;  /* mode byte + name -> struct group */
    struct hmap *dedup;   /* idempotency key -> struct dedup */
    struct dedup *dhead, *dtail;
    uint64_t change_seq; /* grows with every command applied to this topic (long polls) */
    bool change_queued;  /* in broker.changed (until the owner drains it) */
    void *owner_slot;    /* the broker owner's (broker_watch_slot) */
};

struct broker_ns {
    struct broker *b;
    char *name;
    size_t name_len;
    struct store *store;
    struct broker_ns_info info; /* name points at `name` */
    struct hmap *topics;        /* name -> struct topic */
    struct topic **by_id;       /* index id-1 */
    uint32_t n_topics;
};

struct broker {
    struct broker_config cfg;
    struct broker_limits lim;
    char *data_dir;
    int lock_fd;
    struct cy_clock clock;
    struct hmap *nss; /* name -> struct broker_ns */
    struct broker_ns_info *ns_list;
    uint64_t change_seq;
    uint64_t global_seq; /* grows with changes that concern every topic (clock, namespaces) */
    struct topic **changed; /* topics changed since broker_changed_topics last ran */
    size_t n_changed, cap_changed;
    char fsync_name[32];
    /* result memory, reused by every call */
    struct buf raw;    /* message bytes of a receive */
    struct buf enc;    /* encoding scratch */
    struct buf cmdbuf; /* a command record being built */
    struct broker_msg_out *outs;
    size_t outs_cap;
    struct broker_header *hdrs;
    size_t hdrs_cap;
    void *list;        /* results of list calls */
    size_t list_cap;
    struct broker_partition_info tparts[BROKER_MAX_PARTITIONS];
    struct broker_group_summary *gsum;
    size_t gsum_cap;
    uint64_t last_tick_ms;
    uint64_t dead_lettered; /* live count since open (not replayed) */
};

/* ---- names.c ---- */
int berr(struct broker_error *err, int status, const char *code, const char *location,
         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int berr_storage(struct broker_error *err, int rc);
bool bstr_eq(struct bstr a, const char *p, size_t n);

/* ---- broker.c ---- */
/* The namespace named by a data operation's `namespace` field. */
int ns_resolve(struct broker *b, struct broker_ns_ref ref, struct broker_ns **out,
               struct broker_error *err);
uint64_t broker_now(struct broker *b);
/* Append a command (BREC_CMD) built in b->cmdbuf to ns's journal. */
int ns_append_cmd(struct broker_ns *ns, uint64_t now, struct broker_wait *wait,
                  struct broker_error *err);
/* Grow b->outs / b->hdrs. */
int broker_reserve_outs(struct broker *b, size_t n);

/* ---- topic.c ---- */
struct topic *topic_find(struct broker_ns *ns, struct bstr name);
/* A command body (cmd byte first) was applied: touch what it changed, its
 * topic or (a namespace's configuration) every topic, for the long polls. */
void cmd_touch(struct broker_ns *ns, const uint8_t *body, size_t len);
/* A command changed the topic (wakes the long polls that watch it). */
void topic_touch(struct topic *t);
void topic_changed(struct broker_ns *ns, uint32_t topic_id);
/* 0 when ref names no partition or one the topic has (an unknown topic will
 * have the default count); else a 400 "partition out of range" in err. */
int topic_check_partition(struct broker_ns *ns, struct broker_topic_ref ref,
                          struct broker_error *err);
/* Find or create (journaling the creation) a topic. */
int topic_get_or_create(struct broker_ns *ns, struct bstr name, uint64_t now, struct topic **out,
                        struct broker_error *err);
void topic_free(struct topic *t);
/* Stored range of partition p, as consumers see it. */
void topic_bounds(struct topic *t, uint32_t p, uint64_t *first, uint64_t *next);
/* Read message (p, offset) into b->raw (appending) and return where it is.
 * CY_ERANGE when gone. */
int topic_read_raw(struct topic *t, uint32_t p, uint64_t offset, size_t *at, uint32_t *len,
                   uint64_t *timestamp);
/* Decode the messages collected in b->raw into b->outs[0..n). */
int topic_decode_outs(struct broker *b, size_t n, const size_t *at, const uint32_t *len);
int topic_apply_create(struct broker_ns *ns, struct reader *r);
int topic_apply_partitions(struct broker_ns *ns, struct reader *r);
int topic_apply_trim(struct broker_ns *ns, struct reader *r);
int topic_apply_publish(struct broker_ns *ns, const struct journal_record *rec, struct reader *extra);
int topic_save(struct topic *t, struct buf *out);
int topic_load(struct broker_ns *ns, struct reader *r);
/* Periodic retention of a namespace (age, topic bytes): journals trims. */
void topic_retention_tick(struct broker_ns *ns, uint64_t now);
/* Journal trims moving every partition's start past journal position cut
 * (segments before it are about to be deleted). */
int topic_retention_cut(struct broker_ns *ns, uint64_t cut);
/* The lowest journal position any partition's first message sits at (the
 * journal end when no partition holds messages). */
uint64_t topic_oldest_needed(struct broker_ns *ns);
/* Publish copies of messages into topic `dlq` (the same namespace) inside a
 * publish record whose extra carries the command in b->cmdbuf. */
int topic_publish_copies(struct broker_ns *ns, struct topic *dlq, struct topic *src,
                         const struct qgroup_id *ids, uint32_t n, struct bstr reason, uint64_t now,
                         struct broker_wait *wait, struct broker_error *err);

/* ---- stream.c / queue.c ---- */
/* What every receive checks and resolves first (API.md §6, §7): namespace,
 * group name, lease bounds, batch size (capped), the topic (created on first
 * use) and the partition. */
struct recv_ctx {
    struct broker_ns *ns;
    struct topic *t;
    uint64_t now;
    uint64_t lease;
    uint32_t batch;
};
int receive_prepare(struct broker *b, const struct broker_receive_req *req, uint64_t default_lease,
                    struct recv_ctx *rc, struct broker_error *err);
struct group *group_find(struct topic *t, enum broker_mode mode, struct bstr name);
int group_get_or_create(struct topic *t, enum broker_mode mode, struct bstr name,
                        struct group **out);
void group_free(struct group *g);
int stream_apply(struct broker_ns *ns, uint8_t cmd, struct reader *r);
int queue_apply(struct broker_ns *ns, uint8_t cmd, struct reader *r);
int group_save(struct group *g, struct buf *out);
int group_load(struct topic *t, struct reader *r);
void queue_env(struct topic *t, struct qgroup_env *env);

/* ---- command codes (the first byte of a command body) ---- */
enum {
    CMD_NS_CONFIG = 1,
    CMD_TOPIC_CREATE = 2,
    CMD_TOPIC_PARTITIONS = 3,
    CMD_PUBLISH = 4,
    CMD_TRIM = 5,
    CMD_STREAM_RECEIVE = 10,
    CMD_STREAM_COMMIT = 11,
    CMD_STREAM_SEEK = 12,
    CMD_Q_RECEIVE = 20,
    CMD_Q_ACK = 21,
    CMD_Q_NACK = 22,
    CMD_Q_EXTEND = 23,
    CMD_Q_CONFIG = 24,
    CMD_Q_REDRIVE = 25,
};

/* Write the group address (topic id, mode, name) into a command. */
void cmd_put_group(struct buf *b, const struct group *g);
void cmd_put_group_addr(struct buf *b, uint32_t topic_id, enum broker_mode mode,
                        struct bstr name);
/* Read a group address and find (or create) the group. */
int cmd_get_group(struct broker_ns *ns, struct reader *r, bool create, struct group **out);
struct topic *ns_topic_by_id(struct broker_ns *ns, uint32_t id);

#endif
