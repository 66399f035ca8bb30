/*
 * info.c — introspection (API.md §4 topic get/list, §10 group list/get) and
 * what long polling asks: how much a receive would find now, and when
 * something becomes available by itself.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/broker_int.h"
#include "coyote.h"

/* Timestamp of (p, offset) from the index; 0 when not stored. */
static uint64_t ts_at(struct topic *t, uint32_t p, uint64_t offset)
{
    struct index_entry e;
    if (store_read_entry(t->ns->store, part_id_of(t->id, p), offset, &e))
        return 0;
    return e.timestamp_ms;
}

static uint64_t age_ms(uint64_t now, uint64_t ts)
{
    return ts && now > ts ? now - ts : 0;
}

/* Fill a group's numbers (partitions, lag, counts) as of now. */
static void group_numbers(struct group *g, uint64_t now, struct broker_group_info *gi)
{
    struct topic *t = g->topic;
    memset(gi, 0, sizeof *gi);
    gi->topic.p = t->name;
    gi->topic.n = t->name_len;
    gi->group.p = g->name;
    gi->group.n = g->name_len;
    gi->mode = g->mode;
    gi->n_parts = t->partitions;
    struct qgroup_stats qs;
    if (g->qg) {
        struct qgroup_env env;
        queue_env(t, &env);
        qgroup_get_stats(g->qg, &env, now, &qs);
        gi->in_flight = qs.in_flight;
        gi->waiting_retry = qs.waiting_retry;
        gi->dead = qs.dead;
        gi->delayed = qs.delayed;
        gi->lag = qs.lag;
        const struct qgroup_config *c = qgroup_config(g->qg);
        gi->has_config = true;
        gi->config.retry_count = c->retry_count;
        memcpy(gi->config.retry_schedule, c->retry_schedule, c->retry_count * sizeof(uint64_t));
        gi->config.max_deliveries = c->max_deliveries;
        gi->config.has_dlq_topic = g->dlq_topic != NULL;
        gi->config.dlq_topic.p = g->dlq_topic;
        gi->config.dlq_topic.n = g->dlq_len;
    }
    for (uint32_t p = 0; p < t->partitions; p++) {
        struct broker_group_partition *gp = &gi->parts[p];
        uint64_t first, next;
        topic_bounds(t, p, &first, &next);
        gp->partition = p;
        uint64_t pos;
        if (g->mode == BROKER_STREAM) {
            pos = g->sp[p].init ? g->sp[p].cursor : 0;
            gp->leased = g->sp[p].lease_until > now;
        } else {
            pos = qs.floor[p];
        }
        gp->position = pos;
        uint64_t from = pos > first ? pos : first;
        gp->lag = next > from ? next - from : 0;
        gp->lag_ms = gp->lag ? age_ms(now, ts_at(t, p, from)) : 0;
        if (g->mode == BROKER_STREAM)
            gi->lag += gp->lag;
        if (gp->lag_ms > gi->lag_ms)
            gi->lag_ms = gp->lag_ms;
    }
}

static int topic_of(struct broker *b, struct broker_ns_ref nsref, struct bstr name,
                    struct topic **t, struct broker_error *err)
{
    struct broker_ns *ns;
    struct broker_topic_ref ref;
    if (ns_resolve(b, nsref, &ns, err) || broker_parse_topic_ref(name, "topic", &ref, err))
        return CY_EINVAL;
    *t = topic_find(ns, ref.name);
    if (!*t)
        return berr(err, 400, "invalid_input", "topic", "topic must exist");
    return 0;
}

int broker_topic_get(struct broker *b, struct broker_ns_ref nsref, struct bstr name,
                     struct broker_topic_info *out, struct broker_error *err)
{
    struct topic *t;
    if (topic_of(b, nsref, name, &t, err))
        return CY_EINVAL;
    uint64_t now = broker_now(b);
    memset(out, 0, sizeof *out);
    out->name.p = t->name;
    out->name.n = t->name_len;
    out->partitions = t->partitions;
    for (uint32_t p = 0; p < t->partitions; p++) {
        struct broker_partition_info *pi = &b->tparts[p];
        topic_bounds(t, p, &pi->start_offset, &pi->end_offset);
        pi->bytes = t->parts[p].bytes;
        pi->oldest_timestamp =
            pi->start_offset < pi->end_offset ? ts_at(t, p, pi->start_offset) : 0;
    }
    out->parts = b->tparts;
    size_t ng = hmap_count(t->groups);
    if (ng > b->gsum_cap) {
        struct broker_group_summary *s = realloc(b->gsum, ng * sizeof *s);
        if (!s)
            return berr_storage(err, CY_ENOMEM);
        b->gsum = s;
        b->gsum_cap = ng;
    }
    size_t it = 0, i = 0;
    const void *k;
    size_t kl;
    void *v;
    while (hmap_next(t->groups, &it, &k, &kl, &v)) {
        struct broker_group_info gi;
        group_numbers(v, now, &gi);
        b->gsum[i++] = (struct broker_group_summary){gi.group, gi.mode, gi.lag, gi.lag_ms};
    }
    out->groups = b->gsum;
    out->n_groups = i;
    return 0;
}

static int cmp_bstr(const void *a, const void *b)
{
    const struct bstr *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = n ? memcmp(x->p, y->p, n) : 0;
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

static void *list_space(struct broker *b, size_t bytes)
{
    if (bytes > b->list_cap) {
        void *l = realloc(b->list, bytes);
        if (!l)
            return NULL;
        b->list = l;
        b->list_cap = bytes;
    }
    return b->list;
}

int broker_topic_list(struct broker *b, struct broker_ns_ref nsref, const struct bstr **names,
                      size_t *n, struct broker_error *err)
{
    struct broker_ns *ns;
    if (ns_resolve(b, nsref, &ns, err))
        return CY_EINVAL;
    struct bstr *l = list_space(b, (ns->n_topics + 1) * sizeof *l);
    if (!l)
        return berr_storage(err, CY_ENOMEM);
    for (uint32_t i = 0; i < ns->n_topics; i++)
        l[i] = (struct bstr){ns->by_id[i]->name, ns->by_id[i]->name_len};
    qsort(l, ns->n_topics, sizeof *l, cmp_bstr);
    *names = l;
    *n = ns->n_topics;
    return 0;
}

static int cmp_group_info(const void *a, const void *b)
{
    const struct broker_group_info *x = a, *y = b;
    int c = cmp_bstr(&x->topic, &y->topic);
    if (!c)
        c = (int)x->mode - (int)y->mode;
    return c ? c : cmp_bstr(&x->group, &y->group);
}

int broker_group_list(struct broker *b, struct broker_ns_ref nsref, struct bstr topic,
                      const struct broker_group_info **out, size_t *n, struct broker_error *err)
{
    struct broker_ns *ns;
    if (ns_resolve(b, nsref, &ns, err))
        return CY_EINVAL;
    struct topic *only = NULL;
    if (topic.n && topic_of(b, nsref, topic, &only, err))
        return CY_EINVAL;
    size_t total = 0;
    for (uint32_t i = 0; i < ns->n_topics; i++)
        if (!only || ns->by_id[i] == only)
            total += hmap_count(ns->by_id[i]->groups);
    struct broker_group_info *l = list_space(b, (total + 1) * sizeof *l);
    if (!l)
        return berr_storage(err, CY_ENOMEM);
    uint64_t now = broker_now(b);
    size_t k = 0;
    for (uint32_t i = 0; i < ns->n_topics; i++) {
        struct topic *t = ns->by_id[i];
        if (only && t != only)
            continue;
        size_t it = 0;
        const void *key;
        size_t kl;
        void *v;
        while (hmap_next(t->groups, &it, &key, &kl, &v))
            group_numbers(v, now, &l[k++]);
    }
    qsort(l, k, sizeof *l, cmp_group_info);
    *out = l;
    *n = k;
    return 0;
}

int broker_group_get(struct broker *b, struct broker_ns_ref nsref, struct bstr topic,
                     enum broker_mode mode, struct bstr group, struct broker_group_info *out,
                     struct broker_error *err)
{
    struct topic *t;
    if (topic_of(b, nsref, topic, &t, err) || broker_check_group_name(group, "consumer_group", err))
        return CY_EINVAL;
    struct group *g = group_find(t, mode, group);
    if (!g)
        return berr(err, 400, "invalid_input", "consumer_group", "consumer group must exist");
    group_numbers(g, broker_now(b), out);
    return 0;
}

void broker_watch_init(struct broker *b, const struct broker_receive_req *req,
                       struct broker_watch *w)
{
    struct broker_ns *ns;
    struct topic *t = ns_resolve(b, req->ns, &ns, NULL) ? NULL : topic_find(ns, req->topic.name);
    w->topic = t;
    w->topic_seq = t ? t->change_seq : 0;
    w->global_seq = b->global_seq;
}

bool broker_watch_changed(struct broker *b, const struct broker_watch *w)
{
    const struct topic *t = w->topic;
    return !t || w->global_seq != b->global_seq || w->topic_seq != t->change_seq;
}

void **broker_watch_slot(struct broker *b, const struct broker_watch *w)
{
    (void)b;
    return w->topic ? &((struct topic *)w->topic)->owner_slot : NULL;
}

uint64_t broker_global_seq(struct broker *b)
{
    return b->global_seq;
}

void broker_changed_topics(struct broker *b, void (*cb)(void *arg, void **slot), void *arg)
{
    /* cb may act on the broker (a receive journals commands, which touch
     * topics again): take the list first, so those land in the next round. */
    size_t n = b->n_changed, cap = b->cap_changed;
    struct topic **list = b->changed;
    b->changed = NULL;
    b->n_changed = b->cap_changed = 0;
    for (size_t k = 0; k < n; k++)
        list[k]->change_queued = false;
    for (size_t k = 0; cb && k < n; k++)
        cb(arg, &list[k]->owner_slot);
    if (!b->changed) { /* nothing new: keep the array for next time */
        b->changed = list;
        b->cap_changed = cap;
    } else {
        free(list);
    }
}

uint32_t broker_available(struct broker *b, enum broker_mode mode,
                          const struct broker_receive_req *req, uint32_t cap,
                          uint64_t *next_wakeup)
{
    *next_wakeup = UINT64_MAX;
    struct broker_ns *ns;
    if (ns_resolve(b, req->ns, &ns, NULL))
        return 0;
    struct topic *t = topic_find(ns, req->topic.name);
    if (!t)
        return 0;
    uint64_t now = broker_now(b);
    struct group *g = group_find(t, mode, req->group);
    if (mode != BROKER_STREAM) {
        struct qgroup_env env;
        queue_env(t, &env);
        /* A dry run of the receive's plan (planning changes nothing): what it
         * would deliver now, and when a message it passed over (delayed)
         * becomes due. A group that does not exist yet is a fresh one. */
        struct qgroup *qg = g ? g->qg : qgroup_new(mode == BROKER_FIFO, b->lim.fifo_window);
        if (!qg)
            return 0;
        struct qplan plan = {0};
        uint32_t avail = 0;
        if (qgroup_plan_receive(qg, &env, now, cap, req->topic.partition, 0, &plan) == 0) {
            avail = plan.delivered;
            for (uint32_t i = 0; i < plan.n; i++)
                if (plan.items[i].kind == QPLAN_WAIT && plan.items[i].at < *next_wakeup)
                    *next_wakeup = plan.items[i].at;
        }
        qplan_free(&plan);
        uint64_t w = qgroup_next_wakeup(qg, now);
        if (w < *next_wakeup)
            *next_wakeup = w;
        if (!g)
            qgroup_free(qg);
        return avail > cap ? cap : avail;
    }
    uint64_t total = 0;
    for (uint32_t p = 0; p < t->partitions; p++) {
        if (req->topic.partition >= 0 && (uint32_t)req->topic.partition != p)
            continue;
        if (g && g->sp[p].lease_until > now) {
            if (g->sp[p].lease_until < *next_wakeup)
                *next_wakeup = g->sp[p].lease_until;
            continue;
        }
        uint64_t first, next;
        topic_bounds(t, p, &first, &next);
        uint64_t from;
        if (g && g->initialized)
            from = g->sp[p].init ? g->sp[p].cursor : 0;
        else
            from = req->start_earliest ? first : next;
        if (from < first)
            from = first;
        total += next > from ? next - from : 0;
    }
    return total > cap ? cap : (uint32_t)total;
}
