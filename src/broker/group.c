/*
 * group.c — consumer groups as objects: lookup, creation, addressing inside
 * command records, and checkpoint encoding. A group is identified by
 * (topic, mode, name): a stream, a queue and a FIFO group of the same name on
 * one topic are three groups (API.md §8).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker_int.h"
#include "coyote.h"

#define GROUP_KEY_MAX (1 + 64)

static size_t group_key(enum broker_mode mode, struct bstr name, uint8_t *key)
{
    key[0] = (uint8_t)mode;
    memcpy(key + 1, name.p, name.n);
    return 1 + name.n;
}

struct group *group_find(struct topic *t, enum broker_mode mode, struct bstr name)
{
    uint8_t key[GROUP_KEY_MAX];
    if (name.n > 64)
        return NULL;
    return hmap_get(t->groups, key, group_key(mode, name, key));
}

void group_free(struct group *g)
{
    if (!g)
        return;
    qgroup_free(g->qg);
    free(g->dlq_topic);
    free(g->name);
    free(g);
}

int group_get_or_create(struct topic *t, enum broker_mode mode, struct bstr name,
                        struct group **out)
{
    if (name.n < 1 || name.n > 64 || mode > BROKER_FIFO)
        return CY_ECORRUPT;
    *out = group_find(t, mode, name);
    if (*out)
        return 0;
    struct group *g = calloc(1, sizeof *g);
    if (!g)
        return CY_ENOMEM;
    g->mode = mode;
    g->topic = t;
    g->name = malloc(name.n);
    if (g->name)
        memcpy(g->name, name.p, name.n);
    g->name_len = name.n;
    if (mode != BROKER_STREAM)
        g->qg = qgroup_new(mode == BROKER_FIFO, t->ns->b->lim.fifo_window);
    uint8_t key[GROUP_KEY_MAX];
    size_t kl = group_key(mode, name, key);
    if (!g->name || (mode != BROKER_STREAM && !g->qg) || hmap_put(t->groups, key, kl, g, NULL)) {
        group_free(g);
        return CY_ENOMEM;
    }
    *out = g;
    return 0;
}

int receive_prepare(struct broker *b, const struct broker_receive_req *req, uint64_t default_lease,
                    struct recv_ctx *c, struct broker_error *err)
{
    if (ns_resolve(b, req->ns, &c->ns, err) ||
        broker_check_group_name(req->group, "consumer_group", err))
        return CY_EINVAL;
    c->lease = req->has_lease ? req->lease_ms : default_lease;
    if (c->lease < 1 || c->lease > b->lim.max_lease_ms)
        return berr(err, 422, "invalid_data", "lease_duration_ms",
                    "lease_duration_ms must be between 1 and %" PRIu64 ".", b->lim.max_lease_ms);
    c->batch = req->batch_size ? req->batch_size : 10;
    if (c->batch > b->lim.max_batch)
        c->batch = b->lim.max_batch;
    c->now = broker_now(b);
    /* Checked before the topic is created: a refused call changes nothing. */
    if (topic_check_partition(c->ns, req->topic, err))
        return CY_EINVAL;
    return topic_get_or_create(c->ns, req->topic.name, c->now, &c->t, err);
}

void cmd_put_group_addr(struct buf *b, uint32_t topic_id, enum broker_mode mode, struct bstr name)
{
    buf_put_u32(b, topic_id);
    buf_put_u8(b, (uint8_t)mode);
    buf_put_blob(b, name.p, (uint32_t)name.n);
}

void cmd_put_group(struct buf *b, const struct group *g)
{
    cmd_put_group_addr(b, g->topic->id, g->mode, (struct bstr){g->name, g->name_len});
}

int cmd_get_group(struct broker_ns *ns, struct reader *r, bool create, struct group **out)
{
    struct topic *t = ns_topic_by_id(ns, rd_u32(r));
    uint8_t mode = rd_u8(r);
    uint32_t n;
    const uint8_t *name = rd_blob(r, &n);
    if (r->err || !t || mode > BROKER_FIFO)
        return CY_ECORRUPT;
    struct bstr s = {(const char *)name, n};
    if (!create) {
        *out = group_find(t, (enum broker_mode)mode, s);
        return *out ? 0 : CY_ECORRUPT;
    }
    return group_get_or_create(t, (enum broker_mode)mode, s, out);
}

int group_save(struct group *g, struct buf *out)
{
    buf_put_u8(out, (uint8_t)g->mode);
    buf_put_blob(out, g->name, (uint32_t)g->name_len);
    if (g->mode == BROKER_STREAM) {
        buf_put_u8(out, g->initialized ? 1 : 0);
        uint32_t n = 0;
        for (uint32_t p = 0; p < BROKER_MAX_PARTITIONS; p++)
            n += g->sp[p].init || g->sp[p].lease_until;
        buf_put_u32(out, n);
        for (uint32_t p = 0; p < BROKER_MAX_PARTITIONS; p++) {
            const struct spart *s = &g->sp[p];
            if (!s->init && !s->lease_until)
                continue;
            buf_put_u32(out, p);
            buf_put_u8(out, s->init ? 1 : 0);
            buf_put_u64(out, s->cursor);
            buf_put_u64(out, s->lease_until);
            buf_put_u64(out, s->last);
        }
        return buf_err(out);
    }
    buf_put_blob(out, g->dlq_topic, (uint32_t)(g->dlq_topic ? g->dlq_len : 0));
    buf_put_u8(out, g->dlq_topic ? 1 : 0);
    size_t at = out->len;
    buf_put_u32(out, 0);
    int rc = qgroup_save(g->qg, out);
    if (rc)
        return rc;
    if (!buf_err(out))
        le_put32(out->data + at, (uint32_t)(out->len - at - 4));
    return buf_err(out);
}

int group_load(struct topic *t, struct reader *r)
{
    uint8_t mode = rd_u8(r);
    uint32_t n;
    const uint8_t *name = rd_blob(r, &n);
    if (r->err || mode > BROKER_FIFO)
        return CY_ECORRUPT;
    struct group *g;
    if (group_find(t, (enum broker_mode)mode, (struct bstr){(const char *)name, n}))
        return CY_ECORRUPT;
    int rc = group_get_or_create(t, (enum broker_mode)mode, (struct bstr){(const char *)name, n},
                                 &g);
    if (rc)
        return rc;
    if (mode == BROKER_STREAM) {
        g->initialized = rd_u8(r);
        uint32_t cnt = rd_u32(r);
        if (cnt > BROKER_MAX_PARTITIONS)
            return CY_ECORRUPT;
        for (uint32_t i = 0; i < cnt; i++) {
            uint32_t p = rd_u32(r);
            if (p >= BROKER_MAX_PARTITIONS)
                return CY_ECORRUPT;
            g->sp[p].init = rd_u8(r);
            g->sp[p].cursor = rd_u64(r);
            g->sp[p].lease_until = rd_u64(r);
            g->sp[p].last = rd_u64(r);
        }
        return r->err ? CY_ECORRUPT : 0;
    }
    uint32_t dn;
    const uint8_t *dlq = rd_blob(r, &dn);
    uint8_t has_dlq = rd_u8(r);
    uint32_t qlen;
    const uint8_t *q = rd_blob(r, &qlen);
    if (r->err)
        return CY_ECORRUPT;
    if (has_dlq) {
        g->dlq_topic = malloc(dn ? dn : 1);
        if (!g->dlq_topic)
            return CY_ENOMEM;
        memcpy(g->dlq_topic, dlq, dn);
        g->dlq_len = dn;
    }
    struct reader qr;
    reader_init(&qr, q, qlen);
    struct qgroup *loaded;
    rc = qgroup_load(&qr, &loaded);
    if (rc)
        return rc;
    qgroup_free(g->qg);
    g->qg = loaded;
    return 0;
}
