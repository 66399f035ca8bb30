/*
 * stream.c — stream consumer groups (API.md §6): per partition a committed
 * cursor and, while leased, a lease (expiry + the last offset handed out).
 *
 * Receive never moves the cursor; commit does. A leased partition is skipped
 * by other receives of the group until the lease expires (there is no
 * consumer identity in the API: a lease excludes everyone, its holder
 * included, until commit releases it or it expires). Expired and trimmed
 * messages are skipped: reading starts at max(cursor, first).
 *
 * Records:
 *   CMD_STREAM_RECEIVE  group, init (u8; then u32 n + n cursors), u32 n leases
 *                       × (partition, lease_until, last, cursor) — cursor gives
 *                       the group a position on a partition it had none for
 *                       (one added after the group started)
 *   CMD_STREAM_COMMIT   group, partition, offset
 *   CMD_STREAM_SEEK     group, u32 n × (partition, cursor, u8 release)
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker_int.h"
#include "coyote.h"

#define STREAM_DEFAULT_LEASE_MS 300000u

int stream_apply(struct broker_ns *ns, uint8_t cmd, struct reader *r)
{
    struct group *g;
    int rc = cmd_get_group(ns, r, true, &g);
    if (rc)
        return rc;
    if (g->mode != BROKER_STREAM)
        return CY_ECORRUPT;
    switch (cmd) {
    case CMD_STREAM_RECEIVE: {
        if (rd_u8(r)) {
            uint32_t n = rd_u32(r);
            if (n > BROKER_MAX_PARTITIONS)
                return CY_ECORRUPT;
            g->initialized = true;
            for (uint32_t p = 0; p < n; p++) {
                g->sp[p].init = true;
                g->sp[p].cursor = rd_u64(r);
            }
        }
        uint32_t n = rd_u32(r);
        for (uint32_t i = 0; i < n && !r->err; i++) {
            uint32_t p = rd_u32(r);
            if (p >= BROKER_MAX_PARTITIONS)
                return CY_ECORRUPT;
            g->sp[p].lease_until = rd_u64(r);
            g->sp[p].last = rd_u64(r);
            uint64_t cursor = rd_u64(r);
            if (!g->sp[p].init) {
                g->sp[p].init = true;
                g->sp[p].cursor = cursor;
            }
        }
        return r->err;
    }
    case CMD_STREAM_COMMIT: {
        uint32_t p = rd_u32(r);
        uint64_t off = rd_u64(r);
        if (r->err || p >= BROKER_MAX_PARTITIONS || off == UINT64_MAX)
            return CY_ECORRUPT;
        struct spart *s = &g->sp[p];
        s->init = true;
        s->cursor = off + 1;
        if (s->lease_until && off >= s->last)
            s->lease_until = 0;
        return 0;
    }
    case CMD_STREAM_SEEK: {
        uint32_t n = rd_u32(r);
        if (n > BROKER_MAX_PARTITIONS)
            return CY_ECORRUPT;
        g->initialized = true;
        for (uint32_t i = 0; i < n && !r->err; i++) {
            uint32_t p = rd_u32(r);
            uint64_t cursor = rd_u64(r);
            uint8_t release = rd_u8(r);
            if (p >= BROKER_MAX_PARTITIONS)
                return CY_ECORRUPT;
            g->sp[p].init = true;
            g->sp[p].cursor = cursor;
            if (release)
                g->sp[p].lease_until = 0;
        }
        return r->err;
    }
    default: return CY_ECORRUPT;
    }
}

static int check_group_and_ns(struct broker *b, struct broker_ns_ref nsref, struct bstr group,
                              struct broker_ns **ns, struct broker_error *err)
{
    if (ns_resolve(b, nsref, ns, err))
        return CY_EINVAL;
    return broker_check_group_name(group, "consumer_group", err);
}

/* The cursor a partition starts from for this group. */
static uint64_t cursor_of(const struct group *g, uint32_t p)
{
    return g && g->sp[p].init ? g->sp[p].cursor : 0;
}

int broker_stream_receive(struct broker *b, const struct broker_receive_req *req,
                          struct broker_receive_res *res, struct broker_wait *wait,
                          struct broker_error *err)
{
    res->n = 0;
    res->msgs = NULL;
    wait->ns = NULL;
    struct recv_ctx c;
    int rc = receive_prepare(b, req, STREAM_DEFAULT_LEASE_MS, &c, err);
    if (rc)
        return rc;
    struct broker_ns *ns = c.ns;
    struct topic *t = c.t;
    uint64_t now = c.now, lease = c.lease;
    uint32_t batch = c.batch;
    struct group *g = group_find(t, BROKER_STREAM, req->group);

    /* Plan: initial cursors for a new group, then the partitions to visit. */
    bool init = !g || !g->initialized;
    uint64_t cursors[BROKER_MAX_PARTITIONS];
    for (uint32_t p = 0; p < t->partitions; p++) {
        uint64_t first, next;
        topic_bounds(t, p, &first, &next);
        cursors[p] = init ? (req->start_earliest ? first : next) : cursor_of(g, p);
    }
    uint32_t cand[BROKER_MAX_PARTITIONS], nc = 0;
    if (req->topic.partition >= 0) {
        cand[nc++] = (uint32_t)req->topic.partition;
    } else {
        uint32_t start = (uint32_t)(b->change_seq % t->partitions); /* spreads consumers */
        for (uint32_t i = 0; i < t->partitions; i++)
            cand[nc++] = (start + i) % t->partitions;
    }
    b->raw.len = 0;
    size_t *at = malloc(batch * sizeof *at);
    uint32_t *len = malloc(batch * sizeof *len);
    uint32_t lp[BROKER_MAX_PARTITIONS], nl = 0, skipped = 0;
    uint64_t llast[BROKER_MAX_PARTITIONS];
    size_t n = 0;
    if (!at || !len || broker_reserve_outs(b, batch)) {
        rc = berr_storage(err, CY_ENOMEM);
        goto out;
    }
    for (uint32_t i = 0; i < nc && n < batch; i++) {
        uint32_t p = cand[i];
        if (g && g->sp[p].lease_until > now) {
            skipped++;
            continue;
        }
        uint64_t first, next;
        topic_bounds(t, p, &first, &next);
        uint64_t o = cursors[p] > first ? cursors[p] : first;
        size_t before = n;
        for (; o < next && n < batch; o++) {
            uint64_t ts;
            rc = topic_read_raw(t, p, o, &at[n], &len[n], &ts);
            if (rc == CY_ERANGE)
                continue; /* removed under us by retention: skip, never stall */
            if (rc) {
                rc = berr_storage(err, rc);
                goto out;
            }
            b->outs[n].partition = p;
            b->outs[n].offset = o;
            b->outs[n].timestamp = ts;
            b->outs[n].attempt = 0;
            n++;
        }
        if (n > before) {
            lp[nl] = p;
            llast[nl++] = b->outs[n - 1].offset;
        }
    }
    if (nc && skipped == nc) {
        rc = berr(err, 400, "no_available_leases", NULL,
                  "Every partition of this topic is leased to another consumer of the group.");
        goto out;
    }
    if (init || nl) {
        buf_reset(&b->cmdbuf);
        buf_put_u8(&b->cmdbuf, CMD_STREAM_RECEIVE);
        cmd_put_group_addr(&b->cmdbuf, t->id, BROKER_STREAM, req->group);
        buf_put_u8(&b->cmdbuf, init ? 1 : 0);
        if (init) {
            buf_put_u32(&b->cmdbuf, t->partitions);
            for (uint32_t p = 0; p < t->partitions; p++)
                buf_put_u64(&b->cmdbuf, cursors[p]);
        }
        buf_put_u32(&b->cmdbuf, nl);
        for (uint32_t i = 0; i < nl; i++) {
            buf_put_u32(&b->cmdbuf, lp[i]);
            buf_put_u64(&b->cmdbuf, now + lease);
            buf_put_u64(&b->cmdbuf, llast[i]);
            buf_put_u64(&b->cmdbuf, cursors[lp[i]]);
        }
        struct broker_wait w;
        rc = ns_append_cmd(ns, now, &w, err);
        if (rc)
            goto out;
        /* Leases may be answered before they are durable (losing one only
         * redelivers earlier); a new group's starting point may not. */
        if (init)
            *wait = w;
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
    return rc;
}

int broker_stream_commit(struct broker *b, const struct broker_commit_req *req,
                         struct broker_wait *wait, struct broker_error *err)
{
    struct broker_ns *ns;
    wait->ns = NULL;
    if (check_group_and_ns(b, req->ns, req->group, &ns, err))
        return CY_EINVAL;
    if (req->topic.partition < 0)
        return berr(err, 422, "invalid_data", "topic",
                    "Commit needs a partition: use '<topic>~<partition>'.");
    struct topic *t = topic_find(ns, req->topic.name);
    uint32_t p = (uint32_t)req->topic.partition;
    if (!t || p >= t->partitions)
        return berr(err, 400, "invalid_input", "topic", "partition must exist");
    struct group *g = group_find(t, BROKER_STREAM, req->group);
    if (!g || !g->sp[p].init)
        return berr(err, 400, "invalid_input", "consumer_group", "lease not found");
    if (req->offset == UINT64_MAX)
        return berr(err, 422, "invalid_data", "offset", "offset is out of range.");
    buf_reset(&b->cmdbuf);
    buf_put_u8(&b->cmdbuf, CMD_STREAM_COMMIT);
    cmd_put_group(&b->cmdbuf, g);
    buf_put_u32(&b->cmdbuf, p);
    buf_put_u64(&b->cmdbuf, req->offset);
    return ns_append_cmd(ns, broker_now(b), wait, err);
}

int broker_stream_seek(struct broker *b, const struct broker_seek_req *req,
                       struct broker_wait *wait, struct broker_error *err)
{
    struct broker_ns *ns;
    wait->ns = NULL;
    if (check_group_and_ns(b, req->ns, req->group, &ns, err))
        return CY_EINVAL;
    if (req->n_targets != 1)
        return berr(err, 400, "invalid_input", NULL,
                    "exactly one of 'offset', 'position', or 'timestamp' must be provided");
    struct topic *t = topic_find(ns, req->topic.name);
    if (!t)
        return berr(err, 400, "invalid_input", "topic", "topic must exist");
    if (req->topic.partition >= 0 && (uint32_t)req->topic.partition >= t->partitions)
        return berr(err, 400, "invalid_input", "topic", "partition must exist");
    if (req->kind == SEEK_OFFSET && req->topic.partition < 0)
        return berr(err, 400, "invalid_input", "topic",
                    "seeking to an offset needs a partition: use '<topic>~<partition>'");
    struct group *g = group_find(t, BROKER_STREAM, req->group);
    bool init = !g || !g->initialized;
    buf_reset(&b->cmdbuf);
    buf_put_u8(&b->cmdbuf, CMD_STREAM_SEEK);
    cmd_put_group_addr(&b->cmdbuf, t->id, BROKER_STREAM, req->group);
    uint32_t n = 0;
    size_t count_at = b->cmdbuf.len;
    buf_put_u32(&b->cmdbuf, 0);
    for (uint32_t p = 0; p < t->partitions; p++) {
        bool target = req->topic.partition < 0 || (uint32_t)req->topic.partition == p;
        if (!target && !init)
            continue;
        uint64_t first, next, cursor = 0;
        topic_bounds(t, p, &first, &next);
        if (!target) {
            cursor = next; /* a new group starts at "latest" elsewhere */
        } else if (req->kind == SEEK_OFFSET) {
            cursor = req->value;
        } else if (req->kind == SEEK_EARLIEST || (req->kind == SEEK_TIMESTAMP && req->value == 0)) {
            cursor = first;
        } else if (req->kind == SEEK_LATEST) {
            cursor = next;
        } else {
            store_part_seek_time(ns->store, part_id_of(t->id, p), req->value, &cursor);
            if (cursor < first)
                cursor = first;
        }
        buf_put_u32(&b->cmdbuf, p);
        buf_put_u64(&b->cmdbuf, cursor);
        buf_put_u8(&b->cmdbuf, target ? 1 : 0);
        n++;
    }
    if (!buf_err(&b->cmdbuf))
        le_put32(b->cmdbuf.data + count_at, n);
    return ns_append_cmd(ns, broker_now(b), wait, err);
}
