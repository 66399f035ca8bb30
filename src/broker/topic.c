/*
 * topic.c — topics and partitions (API.md §4), publish with idempotency keys
 * (§5), trim and retention (§3, §4), and reading stored messages for the
 * consumer modes.
 *
 * A partition's stored range, as consumers see it, is [first, next):
 *   next   the store's high water (store_part_next)
 *   first  the largest of: the journaled logical start (trim, retention),
 *          the store's first readable offset (whole segments deleted), and —
 *          with a namespace period_ms — the first message younger than it.
 *
 * Idempotency entries live in an expiry-ordered list: a publish applied at
 * time T first drops the entries that expired by T, so the state (and its
 * checkpoint) depends only on the journal.
 *
 * Apply functions (topic_apply_*) must not touch ns->store: they also run
 * during recovery, before the store is handed to the namespace.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "broker/broker_int.h"
#include "broker/msg.h"
#include "coyote.h"

#define TOPIC_DEFAULT_PARTITIONS 1

struct topic *topic_find(struct broker_ns *ns, struct bstr name)
{
    return hmap_get(ns->topics, name.p, name.n);
}

static void dedup_free(struct dedup *d)
{
    if (d) {
        free(d->key);
        free(d);
    }
}

void topic_free(struct topic *t)
{
    if (!t)
        return;
    if (t->groups) {
        size_t it = 0;
        const void *k;
        size_t kl;
        void *v;
        while (hmap_next(t->groups, &it, &k, &kl, &v))
            group_free(v);
        hmap_free(t->groups);
    }
    for (struct dedup *d = t->dhead, *n; d; d = n) {
        n = d->next;
        dedup_free(d);
    }
    hmap_free(t->dedup);
    free(t->name);
    free(t);
}

/* Create the in-memory topic `id` (ids are dense: id == n_topics + 1). */
static int topic_new(struct broker_ns *ns, struct bstr name, uint32_t id, uint32_t partitions,
                     struct topic **out)
{
    if (id != ns->n_topics + 1 || partitions < 1 || partitions > BROKER_MAX_PARTITIONS ||
        topic_find(ns, name))
        return CY_ECORRUPT;
    struct topic *t = calloc(1, sizeof *t);
    if (!t)
        return CY_ENOMEM;
    t->ns = ns;
    t->name = malloc(name.n ? name.n : 1);
    t->groups = hmap_new();
    t->dedup = hmap_new();
    struct topic **by = realloc(ns->by_id, (ns->n_topics + 1) * sizeof *by);
    if (by)
        ns->by_id = by;
    if (!t->name || !t->groups || !t->dedup || !by) {
        topic_free(t);
        return CY_ENOMEM;
    }
    memcpy(t->name, name.p, name.n);
    t->name_len = name.n;
    t->id = id;
    t->partitions = partitions;
    if (hmap_put(ns->topics, t->name, t->name_len, t, NULL)) {
        topic_free(t);
        return CY_ENOMEM;
    }
    ns->by_id[ns->n_topics++] = t;
    *out = t;
    return 0;
}

int topic_apply_create(struct broker_ns *ns, struct reader *r)
{
    uint32_t n;
    const uint8_t *name = rd_blob(r, &n);
    uint32_t id = rd_u32(r);
    uint32_t parts = rd_u32(r);
    if (r->err)
        return CY_ECORRUPT;
    struct topic *t;
    return topic_new(ns, (struct bstr){(const char *)name, n}, id, parts, &t);
}

void topic_touch(struct topic *t)
{
    struct broker *b = t->ns->b;
    t->change_seq++;
    if (t->change_queued)
        return;
    if (b->n_changed == b->cap_changed) {
        size_t cap = b->cap_changed ? 2 * b->cap_changed : 64;
        struct topic **n = realloc(b->changed, cap * sizeof *n);
        if (!n) { /* no memory to say which: say "everything" */
            b->global_seq++;
            return;
        }
        b->changed = n;
        b->cap_changed = cap;
    }
    b->changed[b->n_changed++] = t;
    t->change_queued = true;
}

void topic_changed(struct broker_ns *ns, uint32_t topic_id)
{
    struct topic *t = ns_topic_by_id(ns, topic_id);
    if (t)
        topic_touch(t);
}

int topic_check_partition(struct broker_ns *ns, struct broker_topic_ref ref,
                          struct broker_error *err)
{
    if (ref.partition < 0)
        return 0;
    struct topic *t = topic_find(ns, ref.name);
    uint32_t parts = t ? t->partitions : TOPIC_DEFAULT_PARTITIONS;
    if ((uint32_t)ref.partition >= parts)
        return berr(err, 400, "invalid_input", "topic", "partition out of range");
    return 0;
}

int topic_get_or_create(struct broker_ns *ns, struct bstr name, uint64_t now, struct topic **out,
                        struct broker_error *err)
{
    *out = topic_find(ns, name);
    if (*out)
        return 0;
    struct broker *b = ns->b;
    buf_reset(&b->cmdbuf);
    buf_put_u8(&b->cmdbuf, CMD_TOPIC_CREATE);
    buf_put_blob(&b->cmdbuf, name.p, (uint32_t)name.n);
    buf_put_u32(&b->cmdbuf, ns->n_topics + 1);
    buf_put_u32(&b->cmdbuf, TOPIC_DEFAULT_PARTITIONS);
    int rc = ns_append_cmd(ns, now, NULL, err);
    if (rc)
        return rc;
    *out = topic_find(ns, name);
    return *out ? 0 : berr_storage(err, CY_ECORRUPT);
}

int topic_apply_partitions(struct broker_ns *ns, struct reader *r)
{
    struct topic *t = ns_topic_by_id(ns, rd_u32(r));
    uint32_t parts = rd_u32(r);
    if (r->err || !t || parts < t->partitions || parts > BROKER_MAX_PARTITIONS)
        return CY_ECORRUPT;
    t->partitions = parts;
    return 0;
}

int broker_topic_configure(struct broker *b, struct broker_ns_ref nsref, struct bstr topic,
                           int64_t partitions, uint32_t *out_partitions,
                           struct broker_wait *wait, struct broker_error *err)
{
    struct broker_ns *ns;
    struct broker_topic_ref ref;
    if (broker_parse_topic_ref(topic, "topic", &ref, err))
        return CY_EINVAL;
    if (ref.partition >= 0)
        return berr(err, 422, "invalid_data", "topic",
                    "Topic name must not contain '~'.");
    if (ns_resolve(b, nsref, &ns, err))
        return CY_EINVAL;
    if (partitions < 1 || partitions > BROKER_MAX_PARTITIONS)
        return berr(err, 400, "invalid_input", "partitions",
                    "Partition count must be between 1 and 64.");
    uint64_t now = broker_now(b);
    struct topic *t = topic_find(ns, ref.name);
    if (t && (uint32_t)partitions < t->partitions)
        return berr(err, 400, "invalid_input", "partitions",
                    "Cannot decrease partition count. Only increases are allowed.");
    wait->ns = NULL;
    int rc = topic_get_or_create(ns, ref.name, now, &t, err);
    if (rc)
        return rc;
    if ((uint32_t)partitions != t->partitions) {
        buf_reset(&b->cmdbuf);
        buf_put_u8(&b->cmdbuf, CMD_TOPIC_PARTITIONS);
        buf_put_u32(&b->cmdbuf, t->id);
        buf_put_u32(&b->cmdbuf, (uint32_t)partitions);
        rc = ns_append_cmd(ns, now, wait, err);
        if (rc)
            return rc;
    } else {
        wait->ns = ns;
        wait->pos = journal_end(store_journal(ns->store));
    }
    *out_partitions = t->partitions;
    return 0;
}

/* ---- reading ---------------------------------------------------------------- */

void topic_bounds(struct topic *t, uint32_t p, uint64_t *first, uint64_t *next)
{
    struct broker_ns *ns = t->ns;
    uint64_t id = part_id_of(t->id, p), f = 0;
    store_part_next(ns->store, id, next);
    store_part_first(ns->store, id, &f);
    if (f < t->parts[p].first)
        f = t->parts[p].first;
    const struct broker_retention *r = &ns->info.retention;
    if (r->has_period) {
        uint64_t now = broker_now(ns->b), off;
        if (now > r->period_ms && store_part_seek_time(ns->store, id, now - r->period_ms, &off) == 0 &&
            off > f)
            f = off;
    }
    if (f > *next)
        f = *next;
    *first = f;
}

int topic_read_raw(struct topic *t, uint32_t p, uint64_t offset, size_t *at, uint32_t *len,
                   uint64_t *timestamp)
{
    struct broker *b = t->ns->b;
    struct index_entry e;
    size_t before = b->raw.len;
    int rc = store_read_msg(t->ns->store, part_id_of(t->id, p), offset, &b->raw, &e);
    if (rc)
        return rc;
    *at = before;
    *len = e.len;
    if (timestamp)
        *timestamp = e.timestamp_ms;
    return 0;
}

int topic_decode_outs(struct broker *b, size_t n, const size_t *at, const uint32_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += msg_header_count(b->raw.data + at[i], len[i]);
    if (total > b->hdrs_cap) {
        struct broker_header *h = realloc(b->hdrs, total * sizeof *h);
        if (!h)
            return CY_ENOMEM;
        b->hdrs = h;
        b->hdrs_cap = total;
    }
    size_t used = 0;
    static struct broker_header none[1];
    for (size_t i = 0; i < n; i++) {
        struct broker_msg_out *o = &b->outs[i];
        struct broker_header *h = b->hdrs ? b->hdrs + used : none;
        int rc = msg_decode(b->raw.data + at[i], len[i], o, h, total - used);
        if (rc)
            return rc;
        used += o->n_headers;
    }
    return 0;
}

/* ---- publish ------------------------------------------------------------------ */

static void dedup_expire(struct topic *t, uint64_t now)
{
    while (t->dhead && t->dhead->expires <= now) {
        struct dedup *d = t->dhead;
        t->dhead = d->next;
        if (!t->dhead)
            t->dtail = NULL;
        hmap_del(t->dedup, d->key, d->key_len, NULL);
        dedup_free(d);
    }
}

struct pub_apply {
    struct broker_ns *ns;
    struct topic *t; /* the topic of the parts (all parts of one record share it) */
    uint64_t keyless;
    struct broker_publish_res res;
    int err;
};

static int apply_msg(void *arg, uint64_t part_id, uint64_t offset, const struct msgrec_msg *m)
{
    struct pub_apply *a = arg;
    struct topic *t = ns_topic_by_id(a->ns, (uint32_t)(part_id >> 6));
    uint32_t p = (uint32_t)(part_id & 63);
    if (!t || p >= t->partitions || (a->t && a->t != t))
        return CY_ECORRUPT;
    a->t = t;
    t->parts[p].bytes += m->len;
    if (!m->key_hash)
        a->keyless++;
    struct broker_publish_part *pp = a->res.n_parts ? &a->res.parts[a->res.n_parts - 1] : NULL;
    if (!pp || pp->partition != p) {
        if (a->res.n_parts == BROKER_MAX_PARTITIONS)
            return CY_ECORRUPT;
        pp = &a->res.parts[a->res.n_parts++];
        pp->partition = p;
        pp->start_offset = offset;
    }
    pp->offset = offset + 1;
    return 0;
}

int topic_apply_publish(struct broker_ns *ns, const struct journal_record *rec, struct reader *extra)
{
    struct pub_apply a = {.ns = ns};
    int rc = msgrec_decode(rec->body, rec->len, apply_msg, &a, NULL, NULL);
    if (rc)
        return rc;
    if (a.t) {
        a.t->rr += a.keyless;
        topic_touch(a.t);
    }
    ns->b->change_seq++;
    cmd_touch(ns, extra->p + extra->pos, reader_left(extra));
    uint8_t cmd = rd_u8(extra);
    if (cmd == CMD_PUBLISH) {
        struct topic *t = ns_topic_by_id(ns, rd_u32(extra));
        uint8_t has_key = rd_u8(extra);
        if (extra->err || !t || (a.t && a.t != t))
            return CY_ECORRUPT;
        dedup_expire(t, rec->timestamp_ms);
        if (has_key) {
            uint32_t kn;
            const uint8_t *key = rd_blob(extra, &kn);
            uint64_t expires = rd_u64(extra);
            if (extra->err)
                return CY_ECORRUPT;
            struct dedup *d = calloc(1, sizeof *d);
            if (!d || !(d->key = malloc(kn ? kn : 1))) {
                free(d);
                return CY_ENOMEM;
            }
            memcpy(d->key, key, kn);
            d->key_len = kn;
            d->expires = expires;
            d->res = a.res;
            d->res.topic.p = t->name;
            d->res.topic.n = t->name_len;
            void *old = NULL;
            if (hmap_put(t->dedup, d->key, kn, d, &old)) {
                dedup_free(d);
                return CY_ENOMEM;
            }
            if (old) {
                /* An expired entry not yet dropped: the list is in expiry
                 * order only while --dedup-window-ms never shrank. Unlink it. */
                struct dedup *o = old, **pp = &t->dhead, *prev = NULL;
                while (*pp && *pp != o) {
                    prev = *pp;
                    pp = &(*pp)->next;
                }
                if (*pp) {
                    *pp = o->next;
                    if (t->dtail == o)
                        t->dtail = prev;
                }
                dedup_free(o);
            }
            if (t->dtail)
                t->dtail->next = d;
            else
                t->dhead = d;
            t->dtail = d;
        }
        return extra->err || reader_left(extra) ? CY_ECORRUPT : 0;
    }
    if (cmd == CMD_Q_RECEIVE || cmd == CMD_Q_NACK) {
        rc = queue_apply(ns, cmd, extra);
        if (!rc && (extra->err || reader_left(extra)))
            rc = CY_ECORRUPT;
        return rc;
    }
    return CY_ECORRUPT;
}

/* Journal a publish record (messages + the command in b->cmdbuf as its
 * extra) and apply it with the same code replay uses (invariant 1 of
 * broker.c). *end: the position to wait for. */
static int publish_apply(struct broker_ns *ns, uint64_t now, const struct msgrec_part *parts,
                         size_t np, uint64_t *end)
{
    struct broker *b = ns->b;
    int rc = store_publish(ns->store, now, parts, np, b->cmdbuf.data, (uint32_t)b->cmdbuf.len, end);
    if (rc)
        return rc;
    struct journal_record rec = {.type = JREC_PUBLISH, .timestamp_ms = now};
    size_t blen;
    store_last_publish(ns->store, &rec.body, &blen, &rec.pos);
    rec.len = (uint32_t)blen;
    struct reader r;
    reader_init(&r, b->cmdbuf.data, b->cmdbuf.len);
    rc = topic_apply_publish(ns, &rec, &r);
    if (rc) /* journaled but not applied: a bug; the store refuses nothing more */
        log_error("namespace %.*s: applying a publish failed: %s", (int)ns->name_len, ns->name,
                  cy_strerror(rc));
    return rc;
}

static int check_msgs(struct broker *b, const struct broker_publish_req *req,
                      struct broker_error *err)
{
    const struct broker_limits *l = &b->lim;
    char loc[64];
    for (size_t i = 0; i < req->n_msgs; i++) {
        const struct broker_msg_in *m = &req->msgs[i];
        if (m->value_len > l->max_value_bytes) {
            snprintf(loc, sizeof loc, "msgs[%zu].value", i);
            return berr(err, 422, "invalid_data", loc,
                        "Message value is %zu bytes; the limit is %" PRIu32 " bytes.",
                        m->value_len, l->max_value_bytes);
        }
        if (m->n_headers > l->max_headers) {
            snprintf(loc, sizeof loc, "msgs[%zu].headers", i);
            return berr(err, 422, "invalid_data", loc,
                        "A message has at most %" PRIu32 " headers.", l->max_headers);
        }
        for (size_t h = 0; h < m->n_headers; h++) {
            if (m->headers[h].name.n > l->max_header_bytes ||
                m->headers[h].value.n > l->max_header_bytes) {
                snprintf(loc, sizeof loc, "msgs[%zu].headers", i);
                return berr(err, 422, "invalid_data", loc,
                            "Header names and values are at most %" PRIu32 " bytes.",
                            l->max_header_bytes);
            }
        }
        if (m->has_key && m->key.n > l->max_key_bytes) {
            snprintf(loc, sizeof loc, "msgs[%zu].key", i);
            return berr(err, 422, "invalid_data", loc, "Message key is at most %" PRIu32 " bytes.",
                        l->max_key_bytes);
        }
        if (m->has_delay && m->delay_ms > l->max_delay_ms) {
            snprintf(loc, sizeof loc, "msgs[%zu].delay_ms", i);
            return berr(err, 422, "invalid_data", loc,
                        "delay_ms must be at most %" PRIu64 " (30 days).", l->max_delay_ms);
        }
        if (m->has_key && req->topic.partition >= 0)
            return berr(err, 400, "invalid_input", NULL,
                        "msg key cannot be specified alongside a specific partition");
    }
    if (req->has_idempotency_key && (req->idempotency_key.n < 1 || req->idempotency_key.n > 1024))
        return berr(err, 422, "invalid_data", "idempotency_key",
                    "idempotency_key must be 1 to 1024 bytes long.");
    return 0;
}

static int cmp_part(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int broker_publish(struct broker *b, const struct broker_publish_req *req,
                   struct broker_publish_res *res, struct broker_wait *wait,
                   struct broker_error *err)
{
    struct broker_ns *ns;
    memset(res, 0, sizeof *res);
    wait->ns = NULL;
    res->topic = req->topic.name;
    if (ns_resolve(b, req->ns, &ns, err) || check_msgs(b, req, err))
        return CY_EINVAL;
    struct topic *t = topic_find(ns, req->topic.name);
    if (req->topic.partition >= 0) {
        if (!t)
            return berr(err, 400, "invalid_input", "topic", "topic does not exist");
        if ((uint32_t)req->topic.partition >= t->partitions)
            return berr(err, 400, "invalid_input", "topic", "partition out of range");
    }
    if (req->n_msgs == 0)
        return 0;
    uint64_t now = broker_now(b);
    if (t && req->has_idempotency_key) {
        /* Only journaled publishes drop expired entries (dedup_expire runs in
         * apply), so the state stays a function of the journal. */
        struct dedup *d = hmap_get(t->dedup, req->idempotency_key.p, req->idempotency_key.n);
        if (d && d->expires > now) {
            *res = d->res;
            res->duplicate = true;
            /* The original may not be durable yet: wait for everything so far. */
            wait->ns = ns;
            wait->pos = journal_end(store_journal(ns->store));
            return 0;
        }
    }
    int rc = topic_get_or_create(ns, req->topic.name, now, &t, err);
    if (rc)
        return rc;

    /* Choose partitions (before the record is written: DESIGN.md §3). */
    uint32_t *pidx = malloc(req->n_msgs * sizeof *pidx);
    uint32_t *order = malloc(req->n_msgs * 2 * sizeof *order);
    struct msgrec_msg *mm = malloc(req->n_msgs * sizeof *mm);
    size_t *at = malloc(req->n_msgs * sizeof *at);
    if (!pidx || !order || !mm || !at) {
        rc = berr_storage(err, CY_ENOMEM);
        goto out;
    }
    uint64_t rr = t->rr;
    for (size_t i = 0; i < req->n_msgs; i++) {
        const struct broker_msg_in *m = &req->msgs[i];
        if (req->topic.partition >= 0)
            pidx[i] = (uint32_t)req->topic.partition;
        else if (m->has_key)
            pidx[i] = djb2(m->key.p, m->key.n) % t->partitions;
        else
            pidx[i] = (uint32_t)(rr++ % t->partitions);
        order[2 * i] = pidx[i];
        order[2 * i + 1] = (uint32_t)i;
    }
    /* Stable order by partition: (partition, request index) pairs. */
    qsort(order, req->n_msgs, 2 * sizeof *order, cmp_part);
    for (size_t i = 1; i < req->n_msgs; i++) /* qsort is not stable: fix ties */
        for (size_t k = i; k > 0 && order[2 * k] == order[2 * k - 2] &&
                           order[2 * k + 1] < order[2 * k - 1];
             k--) {
            uint32_t tmp = order[2 * k + 1];
            order[2 * k + 1] = order[2 * k - 1];
            order[2 * k - 1] = tmp;
        }

    buf_reset(&b->enc);
    for (size_t k = 0; k < req->n_msgs; k++) {
        size_t i = order[2 * k + 1];
        const struct broker_msg_in *m = &req->msgs[i];
        at[k] = b->enc.len;
        msg_encode(&b->enc, m, m->has_delay ? now + m->delay_ms : 0);
        mm[k].len = (uint32_t)(b->enc.len - at[k]);
        mm[k].key_hash = m->has_key ? msg_key_hash(m->key.p, m->key.n) : 0;
    }
    if (buf_err(&b->enc)) {
        rc = berr_storage(err, CY_ENOMEM);
        goto out;
    }
    struct msgrec_part parts[BROKER_MAX_PARTITIONS];
    size_t np = 0;
    for (size_t k = 0; k < req->n_msgs; k++) {
        mm[k].data = b->enc.data + at[k];
        uint32_t p = order[2 * k];
        if (!np || parts[np - 1].part_id != part_id_of(t->id, p)) {
            uint64_t next;
            store_part_next(ns->store, part_id_of(t->id, p), &next);
            parts[np++] = (struct msgrec_part){part_id_of(t->id, p), next, 0, &mm[k]};
        }
        parts[np - 1].count++;
    }
    buf_reset(&b->cmdbuf);
    buf_put_u8(&b->cmdbuf, CMD_PUBLISH);
    buf_put_u32(&b->cmdbuf, t->id);
    buf_put_u8(&b->cmdbuf, req->has_idempotency_key ? 1 : 0);
    if (req->has_idempotency_key) {
        buf_put_blob(&b->cmdbuf, req->idempotency_key.p, (uint32_t)req->idempotency_key.n);
        buf_put_u64(&b->cmdbuf, now + b->lim.dedup_window_ms);
    }
    if (buf_err(&b->cmdbuf)) {
        rc = berr_storage(err, CY_ENOMEM);
        goto out;
    }
    uint64_t end;
    rc = publish_apply(ns, now, parts, np, &end);
    if (rc == CY_ETOOBIG) {
        rc = berr(err, 422, "invalid_data", "msgs", "The batch is too large to store as one "
                                                    "record.");
        goto out;
    }
    if (rc) {
        rc = berr_storage(err, rc);
        goto out;
    }
    res->topic.p = t->name;
    res->topic.n = t->name_len;
    res->n_parts = (uint32_t)np;
    for (size_t i = 0; i < np; i++) {
        res->parts[i].partition = (uint32_t)(parts[i].part_id & 63);
        res->parts[i].start_offset = parts[i].first_offset;
        res->parts[i].offset = parts[i].first_offset + parts[i].count;
    }
    wait->ns = ns;
    wait->pos = end;
out:
    free(pidx);
    free(order);
    free(mm);
    free(at);
    return rc;
}

/* Replace the stored message at raw[at..] with a copy that has one more
 * header, "coyote-dead-letter-reason: <reason>" (a dead-letter copy). */
static int add_reason_header(struct buf *raw, size_t at, struct bstr reason)
{
    struct broker_msg_out o;
    size_t len = raw->len - at;
    uint8_t *orig = malloc(len ? len : 1);
    struct broker_header *h = calloc(65, sizeof *h);
    int rc = (!orig || !h) ? CY_ENOMEM : 0;
    if (!rc) {
        memcpy(orig, raw->data + at, len);
        rc = msg_decode(orig, len, &o, h, 64);
    }
    if (!rc) {
        h[o.n_headers].name = BSTR("coyote-dead-letter-reason");
        h[o.n_headers].value = reason;
        struct broker_msg_in m = {
            .value = o.value,
            .value_len = o.value_len,
            .headers = h,
            .n_headers = o.n_headers + 1,
            .has_key = o.has_key,
            .key = o.key,
            .has_delay = o.has_scheduled_at,
        };
        raw->len = at;
        msg_encode(raw, &m, o.scheduled_at);
        rc = buf_err(raw) ? CY_ENOMEM : 0;
    }
    free(orig);
    free(h);
    return rc;
}

int topic_publish_copies(struct broker_ns *ns, struct topic *dlq, struct topic *src,
                         const struct qgroup_id *ids, uint32_t n, struct bstr reason, uint64_t now,
                         struct broker_wait *wait, struct broker_error *err)
{
    /* Copies keep value, headers and key (inside the stored bytes) but are
     * keyless in the DLQ topic: they go round-robin over its partitions, each
     * with its own offset. The caller built the group command in b->cmdbuf
     * (and created the DLQ topic before, since that uses b->cmdbuf too). */
    struct buf raw = BUF_INIT;
    size_t *at = calloc(n ? n : 1, sizeof *at);
    uint32_t *len = calloc(n ? n : 1, sizeof *len);
    uint32_t *pp = calloc(n ? n : 1, sizeof *pp);
    struct msgrec_msg *sorted = calloc(n ? n : 1, sizeof *sorted);
    int rc = (!at || !len || !pp || !sorted) ? CY_ENOMEM : 0;
    uint32_t kept = 0;
    uint64_t rr = dlq->rr;
    for (uint32_t i = 0; !rc && i < n; i++) {
        struct index_entry e;
        size_t before = raw.len;
        int r = store_read_msg(ns->store, part_id_of(src->id, ids[i].partition), ids[i].offset,
                               &raw, &e);
        if (r == CY_ERANGE)
            continue; /* gone: nothing to copy */
        if (r) {
            rc = r;
            break;
        }
        if (reason.n) {
            /* Re-encode the copy with the reason as one more header. */
            rc = add_reason_header(&raw, before, reason);
            if (rc)
                break;
        }
        at[kept] = before;
        len[kept] = (uint32_t)(raw.len - before);
        pp[kept] = (uint32_t)(rr++ % dlq->partitions);
        kept++;
    }
    struct msgrec_part parts[BROKER_MAX_PARTITIONS];
    size_t np = 0, used = 0;
    for (uint32_t p = 0; !rc && p < dlq->partitions; p++) {
        size_t from = used;
        for (uint32_t i = 0; i < kept; i++)
            if (pp[i] == p)
                sorted[used++] = (struct msgrec_msg){raw.data + at[i], len[i], 0, 0, 0};
        if (used == from)
            continue;
        uint64_t next;
        store_part_next(ns->store, part_id_of(dlq->id, p), &next);
        parts[np++] = (struct msgrec_part){part_id_of(dlq->id, p), next, (uint32_t)(used - from),
                                           &sorted[from]};
    }
    uint64_t end = 0;
    if (!rc)
        rc = publish_apply(ns, now, parts, np, &end);
    buf_free(&raw);
    free(at);
    free(len);
    free(pp);
    free(sorted);
    if (rc)
        return berr_storage(err, rc);
    wait->ns = ns;
    wait->pos = end;
    return 0;
}

/* ---- trim and retention -------------------------------------------------------- */

int topic_apply_trim(struct broker_ns *ns, struct reader *r)
{
    struct topic *t = ns_topic_by_id(ns, rd_u32(r));
    uint32_t n = rd_u32(r);
    if (r->err || !t || n > t->partitions)
        return CY_ECORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t p = rd_u32(r);
        uint64_t first = rd_u64(r), bytes = rd_u64(r);
        if (r->err || p >= t->partitions || first < t->parts[p].first)
            return CY_ECORRUPT;
        t->parts[p].first = first;
        t->parts[p].bytes = bytes;
        size_t it = 0;
        const void *k;
        size_t kl;
        void *v;
        while (hmap_next(t->groups, &it, &k, &kl, &v)) {
            struct group *g = v;
            if (g->qg)
                qgroup_forget_before(g->qg, p, first);
        }
    }
    return 0;
}

/* Bytes of messages [from, to) of partition p (walks the index). */
static uint64_t bytes_between(struct topic *t, uint32_t p, uint64_t from, uint64_t to)
{
    uint64_t sum = 0;
    for (uint64_t o = from; o < to; o++) {
        struct index_entry e;
        if (store_read_entry(t->ns->store, part_id_of(t->id, p), o, &e) == 0)
            sum += e.len;
    }
    return sum;
}

/* Journal a trim moving the given partitions' first offsets up. */
static int trim_to(struct topic *t, const uint64_t *new_first, struct broker_wait *wait,
                   struct broker_error *err)
{
    struct broker_ns *ns = t->ns;
    struct broker *b = ns->b;
    uint32_t n = 0;
    struct buf body = BUF_INIT;
    for (uint32_t p = 0; p < t->partitions; p++) {
        if (new_first[p] <= t->parts[p].first)
            continue;
        uint64_t gone = bytes_between(t, p, t->parts[p].first, new_first[p]);
        uint64_t bytes = t->parts[p].bytes > gone ? t->parts[p].bytes - gone : 0;
        buf_put_u32(&body, p);
        buf_put_u64(&body, new_first[p]);
        buf_put_u64(&body, bytes);
        n++;
    }
    int rc = 0;
    if (n) {
        buf_reset(&b->cmdbuf);
        buf_put_u8(&b->cmdbuf, CMD_TRIM);
        buf_put_u32(&b->cmdbuf, t->id);
        buf_put_u32(&b->cmdbuf, n);
        buf_put(&b->cmdbuf, body.data, body.len);
        rc = ns_append_cmd(ns, broker_now(b), wait, err);
    }
    buf_free(&body);
    return rc;
}

int broker_topic_trim(struct broker *b, const struct broker_trim_req *req,
                      struct broker_trim_res *res, struct broker_wait *wait,
                      struct broker_error *err)
{
    struct broker_ns *ns;
    wait->ns = NULL;
    res->n = 0;
    if (ns_resolve(b, req->ns, &ns, err))
        return CY_EINVAL;
    if (req->has_before_offset == req->has_before_timestamp)
        return berr(err, 400, "invalid_input", NULL,
                    "exactly one of 'before_offset' or 'before_timestamp' must be provided");
    struct topic *t = topic_find(ns, req->topic.name);
    if (!t)
        return berr(err, 400, "invalid_input", "topic", "topic must exist");
    if (req->topic.partition >= 0 && (uint32_t)req->topic.partition >= t->partitions)
        return berr(err, 400, "invalid_input", "topic", "partition out of range");
    if (req->has_before_offset && req->topic.partition < 0)
        return berr(err, 400, "invalid_input", "topic",
                    "before_offset needs a partition: use '<topic>~<partition>'");
    uint64_t new_first[BROKER_MAX_PARTITIONS];
    for (uint32_t p = 0; p < t->partitions; p++) {
        uint64_t first, next;
        topic_bounds(t, p, &first, &next);
        new_first[p] = t->parts[p].first;
        if (req->topic.partition >= 0 && (uint32_t)req->topic.partition != p)
            continue;
        uint64_t target;
        if (req->has_before_offset)
            target = req->before_offset;
        else if (store_part_seek_time(ns->store, part_id_of(t->id, p), req->before_timestamp,
                                      &target))
            target = first;
        if (target > next)
            target = next;
        if (target > new_first[p])
            new_first[p] = target;
    }
    int rc = trim_to(t, new_first, wait, err);
    if (rc)
        return rc;
    if (!wait->ns) {
        wait->ns = ns;
        wait->pos = journal_end(store_journal(ns->store));
    }
    for (uint32_t p = 0; p < t->partitions; p++) {
        if (req->topic.partition >= 0 && (uint32_t)req->topic.partition != p)
            continue;
        uint64_t first, next;
        topic_bounds(t, p, &first, &next);
        res->partition[res->n] = p;
        res->start_offset[res->n++] = first;
    }
    return 0;
}

uint64_t topic_oldest_needed(struct broker_ns *ns)
{
    uint64_t needed = journal_end(store_journal(ns->store));
    for (uint32_t i = 0; i < ns->n_topics; i++) {
        struct topic *t = ns->by_id[i];
        for (uint32_t p = 0; p < t->partitions; p++) {
            uint64_t first, next, pos;
            topic_bounds(t, p, &first, &next);
            if (first < next && store_oldest_needed(ns->store, part_id_of(t->id, p), first, &pos) == 0 &&
                pos < needed)
                needed = pos;
        }
    }
    return needed;
}

int topic_retention_cut(struct broker_ns *ns, uint64_t cut)
{
    if (cut <= journal_start(store_journal(ns->store)))
        return 0;
    for (uint32_t i = 0; i < ns->n_topics; i++) {
        struct topic *t = ns->by_id[i];
        uint64_t new_first[BROKER_MAX_PARTITIONS];
        for (uint32_t p = 0; p < t->partitions; p++) {
            uint64_t off;
            new_first[p] = t->parts[p].first;
            if (store_part_first_at(ns->store, part_id_of(t->id, p), cut, &off) == 0 &&
                off > new_first[p])
                new_first[p] = off;
        }
        struct broker_error err;
        struct broker_wait w;
        int rc = trim_to(t, new_first, &w, &err);
        if (rc)
            return rc;
    }
    return 0;
}

/* Advance nf[i][p] (the new first offsets of topics ts[i]) over the oldest
 * messages — by timestamp, across every partition given — until `excess`
 * bytes are dropped or nothing is left. */
static void drop_oldest(struct topic **ts, uint64_t (*nf)[BROKER_MAX_PARTITIONS], size_t nt,
                        uint64_t excess)
{
    while (excess) {
        struct topic *bt = NULL;
        size_t bi = 0;
        uint32_t bp = 0;
        uint64_t best_ts = UINT64_MAX, best_len = 0;
        for (size_t i = 0; i < nt; i++) {
            struct topic *t = ts[i];
            for (uint32_t p = 0; p < t->partitions; p++) {
                uint64_t first, next;
                struct index_entry e;
                topic_bounds(t, p, &first, &next);
                if (nf[i][p] < first)
                    nf[i][p] = first;
                if (nf[i][p] >= next)
                    continue;
                if (store_read_entry(t->ns->store, part_id_of(t->id, p), nf[i][p], &e) == 0 &&
                    e.timestamp_ms < best_ts) {
                    best_ts = e.timestamp_ms;
                    best_len = e.len;
                    bt = t;
                    bi = i;
                    bp = p;
                }
            }
        }
        if (!bt)
            return;
        nf[bi][bp]++;
        excess = best_len >= excess ? 0 : excess - best_len;
    }
}

static void trim_logged(struct topic *t, const uint64_t *new_first)
{
    struct broker_error err;
    struct broker_wait w;
    if (trim_to(t, new_first, &w, &err))
        log_warn("namespace %.*s: retention trim of topic %.*s failed: %s", (int)t->ns->name_len,
                 t->ns->name, (int)t->name_len, t->name, err.detail);
}

static uint64_t topic_total_bytes(const struct topic *t)
{
    uint64_t total = 0;
    for (uint32_t p = 0; p < t->partitions; p++)
        total += t->parts[p].bytes;
    return total;
}

/* Retention as trims, in three passes so each limit sees the bytes the
 * previous one left: age (period_ms), then each topic's topic_bytes, then the
 * namespace's size_bytes over all its topics (oldest data first). Whole
 * segments are deleted separately (broker_tick), once checkpoints cover them. */
void topic_retention_tick(struct broker_ns *ns, uint64_t now)
{
    (void)now; /* topic_bounds applies period_ms with the broker clock */
    const struct broker_retention *r = &ns->info.retention;
    if (!r->has_period && !r->has_topic_bytes && !r->has_size)
        return;
    size_t nt = ns->n_topics;
    uint64_t(*nf)[BROKER_MAX_PARTITIONS] = calloc(nt ? nt : 1, sizeof *nf);
    if (!nf)
        return;
    for (size_t i = 0; i < nt; i++) {
        struct topic *t = ns->by_id[i];
        for (uint32_t p = 0; p < t->partitions; p++) {
            uint64_t next;
            topic_bounds(t, p, &nf[i][p], &next);
        }
        trim_logged(t, nf[i]);
        if (r->has_topic_bytes) {
            uint64_t total = topic_total_bytes(t);
            if (total > r->topic_bytes) {
                drop_oldest(&ns->by_id[i], &nf[i], 1, total - r->topic_bytes);
                trim_logged(t, nf[i]);
            }
        }
    }
    if (r->has_size) {
        uint64_t total = 0;
        for (size_t i = 0; i < nt; i++)
            total += topic_total_bytes(ns->by_id[i]);
        if (total > r->size_bytes) {
            drop_oldest(ns->by_id, nf, nt, total - r->size_bytes);
            for (size_t i = 0; i < nt; i++)
                trim_logged(ns->by_id[i], nf[i]);
        }
    }
    free(nf);
}

/* ---- checkpoints ------------------------------------------------------------------ */

int topic_save(struct topic *t, struct buf *out)
{
    buf_put_blob(out, t->name, (uint32_t)t->name_len);
    buf_put_u32(out, t->id);
    buf_put_u32(out, t->partitions);
    buf_put_u64(out, t->rr);
    for (uint32_t p = 0; p < t->partitions; p++) {
        buf_put_u64(out, t->parts[p].first);
        buf_put_u64(out, t->parts[p].bytes);
    }
    uint32_t nd = 0;
    for (struct dedup *d = t->dhead; d; d = d->next)
        nd++;
    buf_put_u32(out, nd);
    for (struct dedup *d = t->dhead; d; d = d->next) {
        buf_put_blob(out, d->key, (uint32_t)d->key_len);
        buf_put_u64(out, d->expires);
        buf_put_u32(out, d->res.n_parts);
        for (uint32_t i = 0; i < d->res.n_parts; i++) {
            buf_put_u32(out, d->res.parts[i].partition);
            buf_put_u64(out, d->res.parts[i].start_offset);
            buf_put_u64(out, d->res.parts[i].offset);
        }
    }
    /* groups in a canonical order: by mode, then name */
    size_t ng = hmap_count(t->groups), i = 0;
    struct group **gs = calloc(ng ? ng : 1, sizeof *gs);
    if (!gs)
        return CY_ENOMEM;
    size_t it = 0;
    const void *k;
    size_t kl;
    void *v;
    while (hmap_next(t->groups, &it, &k, &kl, &v))
        gs[i++] = v;
    for (size_t a = 1; a < ng; a++) /* insertion sort: group counts are small */
        for (size_t c = a; c > 0; c--) {
            struct group *x = gs[c - 1], *y = gs[c];
            size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
            int cmp = x->mode != y->mode ? (int)x->mode - (int)y->mode
                                         : memcmp(x->name, y->name, n);
            if (!cmp && x->mode == y->mode)
                cmp = (x->name_len > y->name_len) - (x->name_len < y->name_len);
            if (cmp <= 0)
                break;
            gs[c - 1] = y;
            gs[c] = x;
        }
    buf_put_u32(out, (uint32_t)ng);
    int rc = 0;
    for (i = 0; i < ng && !rc; i++)
        rc = group_save(gs[i], out);
    free(gs);
    return rc ? rc : buf_err(out);
}

int topic_load(struct broker_ns *ns, struct reader *r)
{
    uint32_t nn;
    const uint8_t *name = rd_blob(r, &nn);
    uint32_t id = rd_u32(r), parts = rd_u32(r);
    if (r->err)
        return CY_ECORRUPT;
    struct topic *t;
    int rc = topic_new(ns, (struct bstr){(const char *)name, nn}, id, parts, &t);
    if (rc)
        return rc;
    t->rr = rd_u64(r);
    for (uint32_t p = 0; p < parts; p++) {
        t->parts[p].first = rd_u64(r);
        t->parts[p].bytes = rd_u64(r);
    }
    uint32_t nd = rd_u32(r);
    for (uint32_t i = 0; i < nd && !r->err; i++) {
        uint32_t kn;
        const uint8_t *key = rd_blob(r, &kn);
        struct dedup *d = calloc(1, sizeof *d);
        if (!d || !(d->key = malloc(kn ? kn : 1))) {
            free(d);
            return CY_ENOMEM;
        }
        if (key)
            memcpy(d->key, key, kn);
        d->key_len = kn;
        d->expires = rd_u64(r);
        d->res.n_parts = rd_u32(r);
        if (d->res.n_parts > BROKER_MAX_PARTITIONS) {
            dedup_free(d);
            return CY_ECORRUPT;
        }
        for (uint32_t k = 0; k < d->res.n_parts; k++) {
            d->res.parts[k].partition = rd_u32(r);
            d->res.parts[k].start_offset = rd_u64(r);
            d->res.parts[k].offset = rd_u64(r);
        }
        d->res.topic.p = t->name;
        d->res.topic.n = t->name_len;
        if (r->err || hmap_put(t->dedup, d->key, kn, d, NULL)) {
            dedup_free(d);
            return r->err ? CY_ECORRUPT : CY_ENOMEM;
        }
        if (t->dtail)
            t->dtail->next = d;
        else
            t->dhead = d;
        t->dtail = d;
    }
    uint32_t ng = rd_u32(r);
    for (uint32_t i = 0; i < ng && !r->err; i++) {
        rc = group_load(t, r);
        if (rc)
            return rc;
    }
    return r->err ? CY_ECORRUPT : 0;
}
