/*
 * queue.c — queue and FIFO consumer groups (API.md §7, §8): the broker side
 * of qgroup.c. Plans are made here with the storage in view (qgroup_env),
 * journaled, then applied by queue_apply — live and on replay alike.
 *
 * Records (after the group address: topic id, mode, name):
 *   CMD_Q_RECEIVE  u64 now, u64 lease_until, plan items   (in a publish
 *                  record's extra when dead-lettered copies go to a dlq_topic)
 *   CMD_Q_ACK      u32 n × (partition, offset)
 *   CMD_Q_NACK     plan items                             (idem)
 *   CMD_Q_EXTEND   u64 lease_until, u32 n × (partition, offset)
 *   CMD_Q_CONFIG   config, u8 has_dlq, dlq topic name
 *   CMD_Q_REDRIVE  (nothing)
 * Plan items: u32 n × (u32 partition, u64 offset, u8 kind, u32 attempt,
 * u32 key_hash, u64 at).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker_int.h"
#include "broker/msg.h"
#include "coyote.h"

#define QUEUE_DEFAULT_LEASE_MS 30000u

/* ---- the environment qgroup plans with -------------------------------------- */

static void env_bounds(void *arg, uint32_t p, uint64_t *first, uint64_t *next)
{
    topic_bounds(arg, p, first, next);
}

static int env_meta(void *arg, uint32_t p, uint64_t offset, uint32_t *key_hash,
                    uint64_t *scheduled_at)
{
    struct topic *t = arg;
    struct buf *scratch = &t->ns->b->enc;
    struct index_entry e;
    buf_reset(scratch);
    int rc = store_read_msg(t->ns->store, part_id_of(t->id, p), offset, scratch, &e);
    if (rc)
        return rc;
    *key_hash = e.key_hash;
    return msg_scheduled_at(scratch->data, scratch->len, scheduled_at) ? CY_ECORRUPT : 0;
}

void queue_env(struct topic *t, struct qgroup_env *env)
{
    env->arg = t;
    env->partitions = t->partitions;
    env->bounds = env_bounds;
    env->meta = env_meta;
}

/* ---- records ---------------------------------------------------------------- */

static void put_plan(struct buf *b, const struct qplan *plan)
{
    buf_put_u32(b, plan->n);
    for (uint32_t i = 0; i < plan->n; i++) {
        const struct qplan_item *it = &plan->items[i];
        buf_put_u32(b, it->partition);
        buf_put_u64(b, it->offset);
        buf_put_u8(b, it->kind);
        buf_put_u32(b, it->attempt);
        buf_put_u32(b, it->key_hash);
        buf_put_u64(b, it->at);
    }
}

static int get_plan(struct reader *r, struct qplan *plan)
{
    uint32_t n = rd_u32(r);
    if (r->err || (uint64_t)n * 29 > reader_left(r))
        return CY_ECORRUPT;
    plan->items = calloc(n ? n : 1, sizeof *plan->items);
    if (!plan->items)
        return CY_ENOMEM;
    plan->n = plan->cap = n;
    plan->delivered = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct qplan_item *it = &plan->items[i];
        it->partition = rd_u32(r);
        it->offset = rd_u64(r);
        it->kind = rd_u8(r);
        it->attempt = rd_u32(r);
        it->key_hash = rd_u32(r);
        it->at = rd_u64(r);
        if (it->partition >= BROKER_MAX_PARTITIONS || it->kind > QPLAN_BLOCK)
            return CY_ECORRUPT;
        plan->delivered += it->kind == QPLAN_DELIVER;
    }
    return r->err ? CY_ECORRUPT : 0;
}

static int get_ids(struct reader *r, struct qgroup_id **ids, uint32_t *n)
{
    *n = rd_u32(r);
    if (r->err || (uint64_t)*n * 12 > reader_left(r))
        return CY_ECORRUPT;
    *ids = calloc(*n ? *n : 1, sizeof **ids);
    if (!*ids)
        return CY_ENOMEM;
    for (uint32_t i = 0; i < *n; i++) {
        (*ids)[i].partition = rd_u32(r);
        (*ids)[i].offset = rd_u64(r);
    }
    return r->err ? CY_ECORRUPT : 0;
}

static void put_ids(struct buf *b, const struct broker_msg_id *ids, size_t n)
{
    buf_put_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        buf_put_u32(b, ids[i].partition);
        buf_put_u64(b, ids[i].offset);
    }
}

static void put_config(struct buf *b, const struct qgroup_config *c)
{
    buf_put_u32(b, c->retry_count);
    for (uint32_t i = 0; i < c->retry_count; i++)
        buf_put_u64(b, c->retry_schedule[i]);
    buf_put_u32(b, c->max_deliveries);
}

static int get_config(struct reader *r, struct qgroup_config *c)
{
    memset(c, 0, sizeof *c);
    c->retry_count = rd_u32(r);
    if (c->retry_count > QGROUP_MAX_RETRY)
        return CY_ECORRUPT;
    for (uint32_t i = 0; i < c->retry_count; i++)
        c->retry_schedule[i] = rd_u64(r);
    c->max_deliveries = rd_u32(r);
    return r->err ? CY_ECORRUPT : 0;
}

int queue_apply(struct broker_ns *ns, uint8_t cmd, struct reader *r)
{
    struct group *g;
    int rc = cmd_get_group(ns, r, true, &g);
    if (rc)
        return rc;
    if (g->mode == BROKER_STREAM)
        return CY_ECORRUPT;
    struct qplan plan = {0};
    struct qgroup_id *ids = NULL;
    uint32_t n;
    switch (cmd) {
    case CMD_Q_RECEIVE: {
        uint64_t now = rd_u64(r), until = rd_u64(r);
        rc = get_plan(r, &plan);
        if (!rc)
            rc = qgroup_apply_receive(g->qg, now, until, &plan);
        break;
    }
    case CMD_Q_ACK:
        rc = get_ids(r, &ids, &n);
        if (!rc)
            rc = qgroup_apply_ack(g->qg, ids, n);
        break;
    case CMD_Q_NACK:
        rc = get_plan(r, &plan);
        if (!rc)
            rc = qgroup_apply_nack(g->qg, &plan);
        break;
    case CMD_Q_EXTEND: {
        uint64_t until = rd_u64(r);
        rc = get_ids(r, &ids, &n);
        if (!rc)
            rc = qgroup_apply_extend(g->qg, ids, n, until);
        break;
    }
    case CMD_Q_CONFIG: {
        struct qgroup_config c;
        rc = get_config(r, &c);
        uint8_t has = rd_u8(r);
        uint32_t dn;
        const uint8_t *dlq = rd_blob(r, &dn);
        if (!rc && r->err)
            rc = CY_ECORRUPT;
        if (rc)
            break;
        c.has_dlq_topic = has;
        char *name = NULL;
        if (has && !(name = malloc(dn ? dn : 1))) {
            rc = CY_ENOMEM;
            break;
        }
        if (name)
            memcpy(name, dlq, dn);
        free(g->dlq_topic);
        g->dlq_topic = name;
        g->dlq_len = has ? dn : 0;
        qgroup_configure(g->qg, &c);
        break;
    }
    case CMD_Q_REDRIVE: {
        uint32_t count;
        rc = qgroup_apply_redrive(g->qg, &count);
        break;
    }
    default: rc = CY_ECORRUPT;
    }
    qplan_free(&plan);
    free(ids);
    return rc;
}

/* ---- requests ----------------------------------------------------------------- */

static int resolve(struct broker *b, struct broker_ns_ref nsref, struct bstr group,
                   struct broker_ns **ns, struct broker_error *err)
{
    if (ns_resolve(b, nsref, ns, err))
        return CY_EINVAL;
    return broker_check_group_name(group, "consumer_group", err);
}

/* The topic named by a bare name or "name~p" (the partition is ignored). */
static int existing_topic(struct broker_ns *ns, struct bstr name, struct topic **t,
                          struct broker_error *err)
{
    struct broker_topic_ref ref;
    if (broker_parse_topic_ref(name, "topic", &ref, err))
        return CY_EINVAL;
    *t = topic_find(ns, ref.name);
    if (!*t)
        return berr(err, 400, "invalid_input", "topic", "topic must exist");
    return 0;
}


/* A group to plan with: the real one, or a fresh one the record will create. */
static struct group *plan_group(struct topic *t, enum broker_mode mode, struct bstr name,
                                struct group *tmp)
{
    struct group *g = group_find(t, mode, name);
    if (g)
        return g;
    memset(tmp, 0, sizeof *tmp);
    tmp->mode = mode;
    tmp->topic = t;
    tmp->qg = qgroup_new(mode == BROKER_FIFO, t->ns->b->lim.fifo_window);
    return tmp->qg ? tmp : NULL;
}

/* Journal a plan-based command; with dead-letter copies it rides in a publish
 * record into the DLQ topic. b->cmdbuf holds the command. */
static int journal_plan_record(struct broker_ns *ns, struct group *g, struct topic *dlq,
                               const struct qplan *plan, struct bstr reason, uint64_t now,
                               struct broker_wait *wait, struct broker_error *err);

/* Journal a plan; dead-lettered copies carry `reason` (n == 0: none). */
static int journal_plan(struct broker_ns *ns, struct group *g, struct topic *dlq,
                        const struct qplan *plan, struct bstr reason, uint64_t now,
                        struct broker_wait *wait, struct broker_error *err)
{
    int rc = journal_plan_record(ns, g, dlq, plan, reason, now, wait, err);
    if (!rc)
        for (uint32_t i = 0; i < plan->n; i++)
            ns->b->dead_lettered += plan->items[i].kind == QPLAN_DEAD;
    return rc;
}

static int journal_plan_record(struct broker_ns *ns, struct group *g, struct topic *dlq,
                               const struct qplan *plan, struct bstr reason, uint64_t now,
                               struct broker_wait *wait, struct broker_error *err)
{
    if (dlq) {
        uint32_t nd = 0;
        for (uint32_t i = 0; i < plan->n; i++)
            nd += plan->items[i].kind == QPLAN_DEAD;
        if (nd) {
            struct qgroup_id *ids = calloc(nd, sizeof *ids);
            if (!ids)
                return berr_storage(err, CY_ENOMEM);
            nd = 0;
            for (uint32_t i = 0; i < plan->n; i++)
                if (plan->items[i].kind == QPLAN_DEAD)
                    ids[nd++] = (struct qgroup_id){plan->items[i].partition,
                                                   plan->items[i].offset};
            int rc = topic_publish_copies(ns, dlq, g->topic, ids, nd, reason, now, wait, err);
            free(ids);
            return rc;
        }
    }
    return ns_append_cmd(ns, now, wait, err);
}

/* The DLQ topic of a group (created when missing), or NULL when none. Must
 * run before the command is built: creating a topic uses b->cmdbuf. */
static int dlq_topic(struct group *g, uint64_t now, struct topic **out, struct broker_error *err)
{
    *out = NULL;
    if (!g->dlq_topic)
        return 0;
    return topic_get_or_create(g->topic->ns, (struct bstr){g->dlq_topic, g->dlq_len}, now, out,
                               err);
}

int broker_queue_receive(struct broker *b, enum broker_mode mode,
                         const struct broker_receive_req *req, struct broker_receive_res *res,
                         struct broker_wait *wait, struct broker_error *err)
{
    res->n = 0;
    res->msgs = NULL;
    wait->ns = NULL;
    struct recv_ctx c;
    int rc = receive_prepare(b, req, QUEUE_DEFAULT_LEASE_MS, &c, err);
    if (rc)
        return rc;
    struct broker_ns *ns = c.ns;
    struct topic *t = c.t;
    uint64_t now = c.now, lease = c.lease;
    uint32_t batch = c.batch;
    struct group tmp;
    struct group *g = plan_group(t, mode, req->group, &tmp);
    if (!g)
        return berr_storage(err, CY_ENOMEM);
    struct topic *dlq = NULL;
    if (g != &tmp && (rc = dlq_topic(g, now, &dlq, err)))
        return rc;
    struct qgroup_env env;
    queue_env(t, &env);
    struct qplan plan = {0};
    rc = qgroup_plan_receive(g->qg, &env, now, batch, req->topic.partition,
                             (uint32_t)(b->change_seq % t->partitions), &plan);
    if (g == &tmp)
        qgroup_free(tmp.qg);
    if (rc) {
        qplan_free(&plan);
        return berr_storage(err, rc);
    }
    size_t *at = NULL;
    uint32_t *len = NULL;
    if (plan.n) {
        buf_reset(&b->cmdbuf);
        buf_put_u8(&b->cmdbuf, CMD_Q_RECEIVE);
        cmd_put_group_addr(&b->cmdbuf, t->id, mode, req->group);
        buf_put_u64(&b->cmdbuf, now);
        buf_put_u64(&b->cmdbuf, now + lease);
        put_plan(&b->cmdbuf, &plan);
        struct broker_wait w; /* leases are answered before they are durable */
        g = group_find(t, mode, req->group);
        struct group *jg = g ? g : &tmp;
        tmp.topic = t;
        rc = journal_plan(ns, jg, dlq, &plan, (struct bstr){NULL, 0}, now, &w, err);
        if (rc)
            goto out;
    }
    at = malloc((plan.delivered + 1) * sizeof *at);
    len = malloc((plan.delivered + 1) * sizeof *len);
    if (!at || !len || broker_reserve_outs(b, plan.delivered + 1)) {
        rc = berr_storage(err, CY_ENOMEM);
        goto out;
    }
    b->raw.len = 0;
    size_t n = 0;
    for (uint32_t i = 0; i < plan.n; i++) {
        const struct qplan_item *it = &plan.items[i];
        if (it->kind != QPLAN_DELIVER)
            continue;
        uint64_t ts;
        rc = topic_read_raw(t, it->partition, it->offset, &at[n], &len[n], &ts);
        if (rc == CY_ERANGE)
            continue; /* removed since the plan: the lease expires unseen */
        if (rc) {
            rc = berr_storage(err, rc);
            goto out;
        }
        b->outs[n].partition = it->partition;
        b->outs[n].offset = it->offset;
        b->outs[n].timestamp = ts;
        b->outs[n].attempt = it->attempt;
        n++;
    }
    rc = topic_decode_outs(b, n, at, len);
    if (rc) {
        rc = berr_storage(err, rc);
        goto out;
    }
    res->msgs = b->outs;
    res->n = n;
out:
    free(at);
    free(len);
    qplan_free(&plan);
    return rc;
}

static int check_ids(struct topic *t, const struct broker_ids_req *req, struct broker_error *err)
{
    for (size_t i = 0; i < req->n_ids; i++)
        if (req->ids[i].partition >= t->partitions) {
            char loc[32];
            snprintf(loc, sizeof loc, "msg_ids[%zu]", i);
            return berr(err, 400, "invalid_input", loc, "message id names a partition the "
                                                        "topic does not have");
        }
    return 0;
}

/* The topic of an ack, nack or extend, its ids checked against it. With an
 * empty msg_ids, *t is NULL: API.md §7 answers {} at once, and the topic need
 * not exist (its name must still be one). */
static int ids_topic(struct broker_ns *ns, const struct broker_ids_req *req, struct topic **t,
                     struct broker_error *err)
{
    *t = NULL;
    if (req->n_ids == 0) {
        struct broker_topic_ref ref;
        return broker_parse_topic_ref(req->topic, "topic", &ref, err) ? CY_EINVAL : 0;
    }
    return existing_topic(ns, req->topic, t, err) || check_ids(*t, req, err) ? CY_EINVAL : 0;
}

int broker_queue_ack(struct broker *b, enum broker_mode mode, const struct broker_ids_req *req,
                     struct broker_wait *wait, struct broker_error *err)
{
    struct broker_ns *ns;
    struct topic *t;
    wait->ns = NULL;
    if (resolve(b, req->ns, req->group, &ns, err))
        return CY_EINVAL;
    if (ids_topic(ns, req, &t, err))
        return CY_EINVAL;
    if (!t)
        return 0;
    struct group *g = group_find(t, mode, req->group);
    if (!g)
        return 0; /* nothing was ever delivered to this group: acks are no-ops */
    buf_reset(&b->cmdbuf);
    buf_put_u8(&b->cmdbuf, CMD_Q_ACK);
    cmd_put_group(&b->cmdbuf, g);
    put_ids(&b->cmdbuf, req->ids, req->n_ids);
    return ns_append_cmd(ns, broker_now(b), wait, err);
}

int broker_queue_nack(struct broker *b, enum broker_mode mode, const struct broker_ids_req *req,
                      struct broker_wait *wait, struct broker_error *err)
{
    struct broker_ns *ns;
    struct topic *t;
    wait->ns = NULL;
    if (resolve(b, req->ns, req->group, &ns, err))
        return CY_EINVAL;
    if (req->has_delay && req->delay_ms > b->lim.max_delay_ms)
        return berr(err, 422, "invalid_data", "delay_ms",
                    "delay_ms must be at most %" PRIu64 " (30 days).", b->lim.max_delay_ms);
    if (ids_topic(ns, req, &t, err))
        return CY_EINVAL;
    if (!t)
        return 0;
    struct group *g = group_find(t, mode, req->group);
    if (!g)
        return 0;
    uint64_t now = broker_now(b);
    struct topic *dlq;
    int rc = dlq_topic(g, now, &dlq, err);
    if (rc)
        return rc;
    struct qgroup_id *ids = calloc(req->n_ids, sizeof *ids);
    if (!ids)
        return berr_storage(err, CY_ENOMEM);
    for (size_t i = 0; i < req->n_ids; i++)
        ids[i] = (struct qgroup_id){req->ids[i].partition, req->ids[i].offset};
    struct qplan plan = {0};
    rc = qgroup_plan_nack(g->qg, ids, (uint32_t)req->n_ids, now, req->has_delay, req->delay_ms,
                          &plan);
    free(ids);
    if (rc) {
        qplan_free(&plan);
        return berr_storage(err, rc);
    }
    if (req->dead_letter) /* a permanent failure: no retry, whatever the schedule says */
        for (uint32_t i = 0; i < plan.n; i++)
            if (plan.items[i].kind == QPLAN_WAIT)
                plan.items[i].kind = QPLAN_DEAD;
    if (plan.n) {
        buf_reset(&b->cmdbuf);
        buf_put_u8(&b->cmdbuf, CMD_Q_NACK);
        cmd_put_group(&b->cmdbuf, g);
        put_plan(&b->cmdbuf, &plan);
        rc = journal_plan(ns, g, dlq, &plan, req->has_reason ? req->reason : (struct bstr){NULL, 0},
                          now, wait, err);
    }
    qplan_free(&plan);
    return rc;
}

int broker_queue_extend(struct broker *b, enum broker_mode mode, const struct broker_ids_req *req,
                        struct broker_wait *wait, struct broker_error *err)
{
    struct broker_ns *ns;
    struct topic *t;
    wait->ns = NULL;
    if (resolve(b, req->ns, req->group, &ns, err))
        return CY_EINVAL;
    uint64_t lease = req->has_lease ? req->lease_ms : QUEUE_DEFAULT_LEASE_MS;
    if (lease < 1 || lease > b->lim.max_lease_ms)
        return berr(err, 422, "invalid_data", "lease_duration_ms",
                    "lease_duration_ms must be between 1 and %" PRIu64 ".", b->lim.max_lease_ms);
    if (ids_topic(ns, req, &t, err))
        return CY_EINVAL;
    if (!t)
        return 0;
    uint64_t now = broker_now(b);
    struct group *g = group_find(t, mode, req->group);
    if (!g)
        return berr(err, 400, "invalid_input", "msg_ids[0]", "message has no active lease");
    struct qgroup_id *ids = calloc(req->n_ids, sizeof *ids);
    if (!ids)
        return berr_storage(err, CY_ENOMEM);
    for (size_t i = 0; i < req->n_ids; i++)
        ids[i] = (struct qgroup_id){req->ids[i].partition, req->ids[i].offset};
    uint32_t bad;
    const char *reason;
    int rc = qgroup_check_extend(g->qg, ids, (uint32_t)req->n_ids, now, &bad, &reason);
    free(ids);
    if (rc) {
        char loc[32];
        snprintf(loc, sizeof loc, "msg_ids[%" PRIu32 "]", bad);
        return berr(err, 400, "invalid_input", loc, "%s", reason);
    }
    buf_reset(&b->cmdbuf);
    buf_put_u8(&b->cmdbuf, CMD_Q_EXTEND);
    cmd_put_group(&b->cmdbuf, g);
    buf_put_u64(&b->cmdbuf, now + lease);
    put_ids(&b->cmdbuf, req->ids, req->n_ids);
    return ns_append_cmd(ns, now, wait, err);
}

int broker_queue_configure(struct broker *b, enum broker_mode mode,
                           const struct broker_group_req *req,
                           const struct broker_queue_config *cfg, struct broker_queue_config *out,
                           struct broker_wait *wait, struct broker_error *err)
{
    struct broker_ns *ns;
    wait->ns = NULL;
    if (resolve(b, req->ns, req->group, &ns, err))
        return CY_EINVAL;
    struct broker_topic_ref ref;
    if (broker_parse_topic_ref(req->topic, "topic", &ref, err))
        return CY_EINVAL;
    if (cfg->retry_count > b->lim.max_retry_entries || cfg->retry_count > QGROUP_MAX_RETRY)
        return berr(err, 422, "invalid_data", "retry_schedule",
                    "retry_schedule has at most %" PRIu32 " entries.", b->lim.max_retry_entries);
    for (uint32_t i = 0; i < cfg->retry_count; i++)
        if (cfg->retry_schedule[i] > b->lim.max_retry_ms) {
            char loc[32];
            snprintf(loc, sizeof loc, "retry_schedule[%" PRIu32 "]", i);
            return berr(err, 422, "invalid_data", loc,
                        "A retry delay is at most %" PRIu64 " ms (7 days).", b->lim.max_retry_ms);
        }
    if (cfg->has_dlq_topic) {
        struct broker_topic_ref d;
        if (broker_parse_topic_ref(cfg->dlq_topic, "dlq_topic", &d, err))
            return CY_EINVAL;
        if (d.partition >= 0)
            return berr(err, 422, "invalid_data", "dlq_topic",
                        "dlq_topic must be a topic name without '~'.");
    }
    if (topic_check_partition(ns, ref, err))
        return CY_EINVAL;
    uint64_t now = broker_now(b);
    struct topic *t;
    int rc = topic_get_or_create(ns, ref.name, now, &t, err);
    if (rc)
        return rc;
    buf_reset(&b->cmdbuf);
    buf_put_u8(&b->cmdbuf, CMD_Q_CONFIG);
    cmd_put_group_addr(&b->cmdbuf, t->id, mode, req->group);
    struct qgroup_config c = {.retry_count = cfg->retry_count,
                              .max_deliveries = cfg->max_deliveries};
    memcpy(c.retry_schedule, cfg->retry_schedule, cfg->retry_count * sizeof(uint64_t));
    put_config(&b->cmdbuf, &c);
    buf_put_u8(&b->cmdbuf, cfg->has_dlq_topic ? 1 : 0);
    buf_put_blob(&b->cmdbuf, cfg->has_dlq_topic ? cfg->dlq_topic.p : NULL,
                 cfg->has_dlq_topic ? (uint32_t)cfg->dlq_topic.n : 0);
    rc = ns_append_cmd(ns, now, wait, err);
    if (rc)
        return rc;
    struct group *g = group_find(t, mode, req->group);
    *out = *cfg;
    if (g && g->dlq_topic) {
        out->dlq_topic.p = g->dlq_topic;
        out->dlq_topic.n = g->dlq_len;
    }
    return 0;
}

int broker_queue_redrive(struct broker *b, enum broker_mode mode,
                         const struct broker_group_req *req, struct broker_wait *wait,
                         struct broker_error *err)
{
    struct broker_ns *ns;
    struct topic *t;
    wait->ns = NULL;
    if (resolve(b, req->ns, req->group, &ns, err) || existing_topic(ns, req->topic, &t, err))
        return CY_EINVAL;
    struct group *g = group_find(t, mode, req->group);
    if (!g)
        return 0;
    buf_reset(&b->cmdbuf);
    buf_put_u8(&b->cmdbuf, CMD_Q_REDRIVE);
    cmd_put_group(&b->cmdbuf, g);
    return ns_append_cmd(ns, broker_now(b), wait, err);
}
