/*
 * broker.c — the broker's spine: opening the data directory, the namespaces
 * (one store each), the clock, durability waits, checkpoints, and the replay
 * of journaled commands.
 *
 * Data directory:
 *     LOCK                 flock'd while a broker has it open
 *     ns/<encoded name>/   one store per namespace (store.h); names are
 *                          percent-encoded except [A-Za-z0-9-_=+]
 *
 * Invariants:
 *   1. Every state change goes through a journaled command applied by the
 *      same function live and on replay (ns_exec for BREC_CMD records,
 *      topic_apply_publish for publish records).
 *   2. The clock never goes below the newest journaled timestamp, so journal
 *      timestamps never decrease, also across restarts.
 *   3. The `default` namespace always exists.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/crc32c.h"
#include "base/log.h"
#include "broker/broker_int.h"
#include "coyote.h"

#define NS_STATE_VERSION 1

static const struct broker_ns_info *ns_sorted(struct broker *b, size_t *n);

void broker_limits_default(struct broker_limits *l)
{
    l->max_value_bytes = 1u << 20;
    l->max_headers = 64;
    l->max_header_bytes = 4096;
    l->max_key_bytes = 1024;
    l->max_batch = 1000;
    l->max_lease_ms = 12ull * 3600 * 1000;
    l->max_batch_wait_ms = 3600ull * 1000;
    l->max_retry_entries = 100;
    l->max_retry_ms = 7ull * 24 * 3600 * 1000;
    l->max_delay_ms = 30ull * 24 * 3600 * 1000;
    l->dedup_window_ms = 3600ull * 1000;
    l->fifo_window = QGROUP_DEFAULT_FIFO_WINDOW;
}

uint64_t broker_now(struct broker *b)
{
    return clock_now_ms(&b->clock);
}

int broker_clock_advance(struct broker *b, uint64_t ms)
{
    if (!b->cfg.test_clock)
        return CY_EINVAL;
    clock_advance(&b->clock, ms);
    b->change_seq++;
    b->global_seq++;
    return 0;
}

uint64_t broker_dead_lettered(struct broker *b)
{
    return b->dead_lettered;
}

uint64_t broker_change_seq(struct broker *b)
{
    return b->change_seq;
}

const char *broker_fsync_name(struct broker *b)
{
    return b->fsync_name;
}

int broker_reserve_outs(struct broker *b, size_t n)
{
    if (n > b->outs_cap) {
        struct broker_msg_out *o = realloc(b->outs, n * sizeof *o);
        if (!o)
            return CY_ENOMEM;
        b->outs = o;
        b->outs_cap = n;
    }
    return 0;
}

/* ---- durability ------------------------------------------------------------ */

bool broker_is_durable(struct broker *b, const struct broker_wait *w, bool *failed)
{
    (void)b;
    if (failed)
        *failed = false;
    if (!w->ns)
        return true;
    struct journal *j = store_journal(w->ns->store);
    if (journal_durable(j) >= w->pos)
        return true;
    if (journal_error(j)) {
        if (failed)
            *failed = true;
        return true;
    }
    /* Under interval/never a write is acknowledged once it is written. */
    return journal_policy(j) != JOURNAL_FSYNC_ALWAYS;
}

int broker_wait_durable(struct broker *b, const struct broker_wait *w)
{
    (void)b;
    if (!w->ns)
        return 0;
    struct journal *j = store_journal(w->ns->store);
    if (journal_policy(j) != JOURNAL_FSYNC_ALWAYS)
        return journal_error(j) ? CY_EREADONLY : 0;
    return journal_wait_durable(j, w->pos, -1);
}

/* ---- namespaces ------------------------------------------------------------ */

/* Directory name of a namespace: the name percent-encoded, or — when that is
 * longer than NS_DIRNAME_MAX (file names stop at 255 bytes) — "~" and a
 * 64-bit hash, with the real name in the directory's NAME file. '~' never
 * appears in an encoded name. Returns true for the hashed form. */
#define NS_DIRNAME_MAX 200
static bool ns_dirname(struct bstr name, char *out, size_t len)
{
    size_t enc = 0;
    for (size_t i = 0; i < name.n; i++) {
        unsigned char c = (unsigned char)name.p[i];
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '=' || c == '+';
        enc += plain ? 1 : 3;
    }
    if (enc > NS_DIRNAME_MAX) {
        uint32_t h1 = crc32c(0, name.p, name.n), h2 = crc32c(0x9E3779B9u, name.p, name.n);
        snprintf(out, len, "~%08x%08x", h1, h2);
        return true;
    }
    size_t k = 0;
    for (size_t i = 0; i < name.n && k + 4 < len; i++) {
        unsigned char c = (unsigned char)name.p[i];
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '=' || c == '+';
        if (plain)
            out[k++] = (char)c;
        else
            k += (size_t)snprintf(out + k, len - k, "%%%02X", c);
    }
    out[k] = 0;
    return false;
}

static bool ns_name_from_dir(const char *d, char *out, size_t len, size_t *n)
{
    size_t k = 0;
    for (size_t i = 0; d[i]; i++) {
        if (k + 1 >= len)
            return false;
        if (d[i] == '%') {
            unsigned v;
            if (sscanf(d + i + 1, "%2X", &v) != 1)
                return false;
            out[k++] = (char)v;
            i += 2;
        } else {
            out[k++] = d[i];
        }
    }
    *n = k;
    return k > 0;
}

/* Write dir/NAME durably (a hashed namespace directory's real name). If it
 * exists it must hold the same name (a hash collision is refused). */
static int ns_write_name(const struct fileops *fo, const char *dir, struct bstr name)
{
    char path[4200], tmp[4200];
    snprintf(path, sizeof path, "%.4096s/NAME", dir);
    snprintf(tmp, sizeof tmp, "%.4096s/NAME.tmp", dir);
    uint8_t *have = NULL;
    size_t hl = 0;
    int rc = fo_read_file(fo, path, 4096, &have, &hl);
    if (rc == 0) {
        bool same = hl == name.n && memcmp(have, name.p, hl) == 0;
        free(have);
        return same ? 0 : CY_EINVAL;
    }
    rc = fo_mkdirs(fo, dir);
    if (rc)
        return rc;
    int fd = fo->open(fo->ctx, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    rc = fo_write_all(fo, fd, name.p, name.n, 0);
    if (!rc)
        rc = fo->datasync(fo->ctx, fd);
    fo->close(fo->ctx, fd);
    if (!rc)
        rc = fo->rename(fo->ctx, tmp, path);
    if (!rc)
        rc = fo->sync_dir(fo->ctx, dir);
    return rc;
}

static struct broker_ns *ns_find(struct broker *b, struct bstr name)
{
    return hmap_get(b->nss, name.p, name.n);
}

struct topic *ns_topic_by_id(struct broker_ns *ns, uint32_t id)
{
    return id >= 1 && id <= ns->n_topics ? ns->by_id[id - 1] : NULL;
}

static void ns_free(struct broker_ns *ns)
{
    if (!ns)
        return;
    if (ns->store)
        store_close(ns->store);
    for (uint32_t i = 0; i < ns->n_topics; i++)
        topic_free(ns->by_id[i]);
    free(ns->by_id);
    hmap_free(ns->topics);
    free(ns->name);
    free(ns);
}

static void ns_clear_topics(struct broker_ns *ns)
{
    for (uint32_t i = 0; i < ns->n_topics; i++)
        topic_free(ns->by_id[i]);
    free(ns->by_id);
    ns->by_id = NULL;
    ns->n_topics = 0;
    hmap_free(ns->topics);
    ns->topics = hmap_new();
}

static int apply_ns_config(struct broker_ns *ns, struct reader *r)
{
    struct broker_retention *ret = &ns->info.retention;
    uint8_t flags = rd_u8(r);
    ret->has_period = flags & 1;
    ret->has_size = flags & 2;
    ret->has_topic_bytes = flags & 4;
    ret->period_ms = rd_u64(r);
    ret->size_bytes = rd_u64(r);
    ret->topic_bytes = rd_u64(r);
    ns->info.created_ms = rd_u64(r);
    ns->info.updated_ms = rd_u64(r);
    return r->err;
}

static void put_ns_config(struct buf *out, const struct broker_retention *ret, uint64_t created,
                          uint64_t updated)
{
    buf_put_u8(out, (uint8_t)((ret->has_period ? 1 : 0) | (ret->has_size ? 2 : 0) |
                              (ret->has_topic_bytes ? 4 : 0)));
    buf_put_u64(out, ret->has_period ? ret->period_ms : 0);
    buf_put_u64(out, ret->has_size ? ret->size_bytes : 0);
    buf_put_u64(out, ret->has_topic_bytes ? ret->topic_bytes : 0);
    buf_put_u64(out, created);
    buf_put_u64(out, updated);
}

void cmd_touch(struct broker_ns *ns, const uint8_t *body, size_t len)
{
    if (len < 1 || body[0] == CMD_TOPIC_CREATE)
        return; /* nobody waits on a topic before it exists */
    if (body[0] == CMD_NS_CONFIG)
        ns->b->global_seq++;
    else if (len >= 5) /* every other command names its topic first */
        topic_changed(ns, le_get32(body + 1));
}

/* Apply one command body (cmd byte first). */
static int ns_apply_cmd(struct broker_ns *ns, const uint8_t *body, size_t len)
{
    struct reader r;
    reader_init(&r, body, len);
    uint8_t cmd = rd_u8(&r);
    int rc;
    switch (cmd) {
    case CMD_NS_CONFIG: rc = apply_ns_config(ns, &r); break;
    case CMD_TOPIC_CREATE: rc = topic_apply_create(ns, &r); break;
    case CMD_TOPIC_PARTITIONS: rc = topic_apply_partitions(ns, &r); break;
    case CMD_TRIM: rc = topic_apply_trim(ns, &r); break;
    case CMD_STREAM_RECEIVE:
    case CMD_STREAM_COMMIT:
    case CMD_STREAM_SEEK: rc = stream_apply(ns, cmd, &r); break;
    case CMD_Q_RECEIVE:
    case CMD_Q_ACK:
    case CMD_Q_NACK:
    case CMD_Q_EXTEND:
    case CMD_Q_CONFIG:
    case CMD_Q_REDRIVE: rc = queue_apply(ns, cmd, &r); break;
    default: rc = CY_ECORRUPT; break;
    }
    if (!rc && (r.err || reader_left(&r)))
        rc = CY_ECORRUPT;
    ns->b->change_seq++;
    cmd_touch(ns, body, len);
    return rc;
}

int ns_append_cmd(struct broker_ns *ns, uint64_t now, struct broker_wait *wait,
                  struct broker_error *err)
{
    struct broker *b = ns->b;
    if (buf_err(&b->cmdbuf))
        return berr_storage(err, CY_ENOMEM);
    uint64_t end;
    int rc = store_append(ns->store, BREC_CMD, now, b->cmdbuf.data, (uint32_t)b->cmdbuf.len, &end);
    if (rc)
        return berr_storage(err, rc);
    rc = ns_apply_cmd(ns, b->cmdbuf.data, b->cmdbuf.len);
    if (rc) {
        log_error("namespace %.*s: applying a journaled command failed: %s", (int)ns->name_len,
                  ns->name, cy_strerror(rc));
        return berr_storage(err, rc);
    }
    if (wait) {
        wait->ns = ns;
        wait->pos = end;
    }
    return 0;
}

/* store_client callbacks ------------------------------------------------------ */

static int ns_restore(void *arg, const uint8_t *state, size_t len)
{
    struct broker_ns *ns = arg;
    ns_clear_topics(ns);
    if (len == 0)
        return 0;
    struct reader r;
    reader_init(&r, state, len);
    if (rd_u32(&r) != NS_STATE_VERSION)
        return CY_ECORRUPT;
    int rc = apply_ns_config(ns, &r);
    uint32_t n = rd_u32(&r);
    for (uint32_t i = 0; !rc && i < n && !r.err; i++)
        rc = topic_load(ns, &r);
    if (!rc && (r.err || reader_left(&r)))
        rc = CY_ECORRUPT;
    return rc;
}

static int ns_save(void *arg, struct buf *out)
{
    struct broker_ns *ns = arg;
    buf_put_u32(out, NS_STATE_VERSION);
    put_ns_config(out, &ns->info.retention, ns->info.created_ms, ns->info.updated_ms);
    buf_put_u32(out, ns->n_topics);
    for (uint32_t i = 0; i < ns->n_topics; i++) {
        int rc = topic_save(ns->by_id[i], out);
        if (rc)
            return rc;
    }
    return buf_err(out);
}

static int ns_replay(void *arg, const struct journal_record *rec)
{
    struct broker_ns *ns = arg;
    struct broker *b = ns->b;
    clock_observe(&b->clock, rec->timestamp_ms);
    if (rec->type == JREC_PUBLISH) {
        const uint8_t *extra;
        uint32_t extra_len;
        int rc = msgrec_decode(rec->body, rec->len, NULL, NULL, &extra, &extra_len);
        if (rc)
            return rc;
        struct reader r;
        reader_init(&r, extra, extra_len);
        return topic_apply_publish(ns, rec, &r);
    }
    if (rec->type == BREC_CMD)
        return ns_apply_cmd(ns, rec->body, rec->len);
    log_error("namespace %.*s: unknown journal record type %u at position %" PRIu64,
              (int)ns->name_len, ns->name, rec->type, rec->pos);
    return CY_ECORRUPT;
}

static void on_durable_cb(void *arg, uint64_t durable)
{
    (void)durable;
    struct broker *b = arg;
    if (b->cfg.on_durable)
        b->cfg.on_durable(b->cfg.on_durable_arg);
}

static int ns_open(struct broker *b, struct bstr name, struct broker_ns **out)
{
    struct broker_ns *ns = calloc(1, sizeof *ns);
    if (!ns)
        return CY_ENOMEM;
    ns->b = b;
    ns->name = malloc(name.n ? name.n : 1);
    ns->topics = hmap_new();
    if (!ns->name || !ns->topics) {
        ns_free(ns);
        return CY_ENOMEM;
    }
    memcpy(ns->name, name.p, name.n);
    ns->name_len = name.n;
    ns->info.name.p = ns->name;
    ns->info.name.n = name.n;

    char enc[1024], dir[4096];
    bool hashed = ns_dirname(name, enc, sizeof enc);
    snprintf(dir, sizeof dir, "%s/ns/%s", b->data_dir, enc);
    const struct fileops *fo = b->cfg.fo ? b->cfg.fo : &fileops_posix;
    if (hashed) {
        int rc = ns_write_name(fo, dir, name);
        if (rc) {
            ns_free(ns);
            return rc;
        }
    }
    struct store_config sc = {
        .fo = b->cfg.fo,
        .dir = dir,
        .segment_bytes = b->cfg.segment_bytes,
        .fsync = b->cfg.fsync,
        .fsync_interval_ms = b->cfg.fsync_interval_ms,
        .checkpoint_interval_ms = b->cfg.checkpoint_interval_ms,
        .checkpoint_bytes = b->cfg.checkpoint_bytes,
        .on_durable = on_durable_cb,
        .on_durable_arg = b,
    };
    struct store_client cl = {ns, ns_restore, ns_replay, ns_save};
    int rc = store_open(&sc, &cl, &ns->store);
    if (!rc)
        rc = hmap_put(b->nss, ns->name, ns->name_len, ns, NULL);
    if (rc) {
        log_error("namespace %.*s: cannot open %s: %s", (int)name.n, name.p, dir,
                  cy_strerror(rc));
        ns_free(ns);
        return rc;
    }
    uint64_t last = journal_last_timestamp(store_journal(ns->store));
    clock_observe(&b->clock, last);
    *out = ns;
    return 0;
}

/* Create a namespace (directory + store + its first configuration record). */
static int ns_create(struct broker *b, struct bstr name, const struct broker_retention *r,
                     uint64_t now, struct broker_ns **out, struct broker_wait *wait,
                     struct broker_error *err)
{
    struct broker_ns *ns;
    int rc = ns_open(b, name, &ns);
    if (rc)
        return berr_storage(err, rc);
    const struct fileops *fo = b->cfg.fo ? b->cfg.fo : &fileops_posix;
    char nsdir[4096];
    snprintf(nsdir, sizeof nsdir, "%s/ns", b->data_dir);
    rc = fo->sync_dir(fo->ctx, nsdir);
    if (rc)
        return berr_storage(err, rc);
    buf_reset(&b->cmdbuf);
    buf_put_u8(&b->cmdbuf, CMD_NS_CONFIG);
    put_ns_config(&b->cmdbuf, r, now, now);
    rc = ns_append_cmd(ns, now, wait, err);
    if (rc)
        return rc;
    free(b->ns_list);
    b->ns_list = NULL;
    *out = ns;
    return 0;
}

struct open_ctx {
    struct broker *b;
    int rc;
};

static int open_ns_cb(void *arg, const char *dname)
{
    struct open_ctx *c = arg;
    char name[300];
    size_t n;
    if (dname[0] == '~') {
        char path[4096];
        uint8_t *data = NULL;
        size_t len = 0;
        const struct fileops *fo = c->b->cfg.fo ? c->b->cfg.fo : &fileops_posix;
        snprintf(path, sizeof path, "%s/ns/%s/NAME", c->b->data_dir, dname);
        int rc = fo_read_file(fo, path, sizeof name - 1, &data, &len);
        if (rc) {
            log_warn("data directory: ignoring ns/%s (no readable NAME file: %s)", dname,
                     cy_strerror(rc));
            return 0;
        }
        memcpy(name, data, len);
        free(data);
        n = len;
    } else if (!ns_name_from_dir(dname, name, sizeof name, &n)) {
        log_warn("data directory: ignoring ns/%s (not a namespace directory name)", dname);
        return 0;
    }
    struct bstr s = {name, n};
    if (broker_check_namespace_name(s, "name", NULL)) {
        log_warn("data directory: ignoring ns/%s (not a namespace name)", dname);
        return 0;
    }
    struct broker_ns *ns;
    c->rc = ns_open(c->b, s, &ns);
    return c->rc;
}

int ns_resolve(struct broker *b, struct broker_ns_ref ref, struct broker_ns **out,
               struct broker_error *err)
{
    struct bstr name = BSTR("default");
    if (ref.has) {
        if (bstr_eq(ref.name, "default", 7))
            return berr(err, 400, "no_explicit_default_namespace", "namespace",
                        "The default namespace is used by omitting 'namespace'; it cannot be "
                        "named explicitly.");
        if (broker_check_namespace_name(ref.name, "namespace", err))
            return CY_EINVAL;
        name = ref.name;
    }
    *out = ns_find(b, name);
    if (!*out)
        return berr(err, 400, "not_found", "namespace", "Namespace '%.*s' does not exist.",
                    (int)name.n, name.p);
    return 0;
}

int broker_ns_configure(struct broker *b, struct bstr name, const struct broker_retention *r,
                        struct broker_ns_info *out, struct broker_wait *wait,
                        struct broker_error *err)
{
    if (broker_check_namespace_name(name, "name", err))
        return CY_EINVAL;
    uint64_t now = broker_now(b);
    struct broker_ns *ns = ns_find(b, name);
    if (!ns) {
        int rc = ns_create(b, name, r, now, &ns, wait, err);
        if (rc)
            return rc;
    } else {
        buf_reset(&b->cmdbuf);
        buf_put_u8(&b->cmdbuf, CMD_NS_CONFIG);
        put_ns_config(&b->cmdbuf, r, ns->info.created_ms, now);
        int rc = ns_append_cmd(ns, now, wait, err);
        if (rc)
            return rc;
    }
    *out = ns->info;
    return 0;
}

int broker_ns_get(struct broker *b, struct bstr name, struct broker_ns_info *out,
                  struct broker_error *err)
{
    if (broker_check_namespace_name(name, "name", err))
        return CY_EINVAL;
    struct broker_ns *ns = ns_find(b, name);
    if (!ns)
        return berr(err, 400, "not_found", "name", "Namespace '%.*s' does not exist.",
                    (int)name.n, name.p);
    *out = ns->info;
    return 0;
}

static int cmp_info(const void *a, const void *b)
{
    const struct broker_ns_info *x = a, *y = b;
    size_t n = x->name.n < y->name.n ? x->name.n : y->name.n;
    int c = memcmp(x->name.p, y->name.p, n);
    return c ? c : (x->name.n > y->name.n) - (x->name.n < y->name.n);
}

static const struct broker_ns_info *ns_sorted(struct broker *b, size_t *n)
{
    *n = hmap_count(b->nss);
    free(b->ns_list);
    b->ns_list = calloc(*n ? *n : 1, sizeof *b->ns_list);
    if (!b->ns_list) {
        *n = 0;
        return NULL;
    }
    size_t it = 0, i = 0;
    const void *k;
    size_t kl;
    void *v;
    while (hmap_next(b->nss, &it, &k, &kl, &v))
        b->ns_list[i++] = ((struct broker_ns *)v)->info;
    qsort(b->ns_list, *n, sizeof *b->ns_list, cmp_info);
    return b->ns_list;
}

int broker_ns_list(struct broker *b, const struct broker_ns_info **out, size_t *n)
{
    *out = ns_sorted(b, n);
    return *out ? 0 : CY_ENOMEM;
}

/* ---- open / close / tick ------------------------------------------------------ */

int broker_open(const struct broker_config *cfg, struct broker **out, struct broker_error *err)
{
    *out = NULL;
    if (err)
        memset(err, 0, sizeof *err);
    struct broker *b = calloc(1, sizeof *b);
    if (!b)
        return berr_storage(err, CY_ENOMEM);
    b->cfg = *cfg;
    b->lim = cfg->limits;
    if (!b->lim.max_batch)
        broker_limits_default(&b->lim);
    b->lock_fd = -1;
    clock_init(&b->clock);
    if (cfg->test_clock && cfg->frozen_clock)
        clock_freeze(&b->clock);
    b->data_dir = strdup(cfg->data_dir);
    b->nss = hmap_new();
    journal_fsync_name(cfg->fsync, cfg->fsync_interval_ms, b->fsync_name, sizeof b->fsync_name);
    const struct fileops *fo = cfg->fo ? cfg->fo : &fileops_posix;
    char path[4096];
    int rc = (!b->data_dir || !b->nss) ? CY_ENOMEM : 0;
    if (!rc) {
        snprintf(path, sizeof path, "%s/ns", cfg->data_dir);
        rc = fo_mkdirs(fo, path);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/LOCK", cfg->data_dir);
        rc = fo->open(fo->ctx, path, O_RDWR | O_CREAT, 0644);
        if (rc >= 0) {
            b->lock_fd = rc;
            rc = fo->lock(fo->ctx, b->lock_fd);
            if (rc == -EWOULDBLOCK || rc == -EAGAIN)
                rc = CY_ELOCKED;
        }
    }
    if (!rc)
        rc = fo->sync_dir(fo->ctx, cfg->data_dir);
    if (rc) {
        if (rc == CY_ELOCKED)
            berr(err, 503, "storage_unavailable", NULL,
                 "The data directory %s is in use by another process.", cfg->data_dir);
        else
            berr(err, 503, "storage_unavailable", NULL, "Cannot open the data directory %s: %s.",
                 cfg->data_dir, cy_strerror(rc));
        broker_close(b);
        return rc;
    }
    snprintf(path, sizeof path, "%s/ns", cfg->data_dir);
    struct open_ctx c = {b, 0};
    rc = fo->list_dir(fo->ctx, path, open_ns_cb, &c);
    if (!rc)
        rc = c.rc;
    /* Time continues from the newest journaled command, also when a test
     * clock had moved it ahead of the wall clock (invariant 2). */
    uint64_t wall = b->clock.frozen_ms ? b->clock.frozen_ms : clock_wall_ms();
    if (b->clock.last_ms > wall)
        b->clock.offset_ms = b->clock.last_ms - wall;
    if (!rc && !ns_find(b, BSTR("default"))) {
        struct broker_retention none = {0};
        struct broker_ns *ns;
        struct broker_wait w = {0};
        rc = ns_create(b, BSTR("default"), &none, broker_now(b), &ns, &w, err);
        if (!rc)
            rc = broker_wait_durable(b, &w);
    }
    if (rc) {
        if (err && !err->code)
            berr(err, 503, "storage_unavailable", NULL,
                 "Cannot recover the data directory %s: %s.", cfg->data_dir, cy_strerror(rc));
        broker_close(b);
        return rc;
    }
    b->last_tick_ms = clock_mono_ms();
    *out = b;
    return 0;
}

int broker_close(struct broker *b)
{
    if (!b)
        return 0;
    int rc = 0;
    if (b->nss) {
        size_t it = 0;
        const void *k;
        size_t kl;
        void *v;
        while (hmap_next(b->nss, &it, &k, &kl, &v)) {
            struct broker_ns *ns = v;
            int r = store_close(ns->store);
            ns->store = NULL;
            if (r && !rc)
                rc = r;
            ns_free(ns);
        }
        hmap_free(b->nss);
    }
    if (b->lock_fd >= 0) {
        const struct fileops *fo = b->cfg.fo ? b->cfg.fo : &fileops_posix;
        fo->close(fo->ctx, b->lock_fd);
    }
    buf_free(&b->raw);
    buf_free(&b->enc);
    buf_free(&b->cmdbuf);
    free(b->outs);
    free(b->hdrs);
    free(b->list);
    free(b->gsum);
    free(b->changed);
    free(b->ns_list);
    free(b->data_dir);
    free(b);
    return rc;
}

void broker_tick(struct broker *b)
{
    uint64_t mono = clock_mono_ms();
    uint64_t now = broker_now(b);
    size_t it = 0;
    const void *k;
    size_t kl;
    void *v;
    while (hmap_next(b->nss, &it, &k, &kl, &v)) {
        struct broker_ns *ns = v;
        if (journal_error(store_journal(ns->store)))
            continue;
        topic_retention_tick(ns, now);
        const struct broker_retention *r = &ns->info.retention;
        /* Space comes back when segments go (DESIGN.md §2): once trims and
         * retention moved every partition's start past a segment, and a
         * checkpoint covers it, it is deleted. */
        uint64_t needed = topic_oldest_needed(ns);
        if (needed > journal_start(store_journal(ns->store))) {
            int deleted;
            int rc = store_retain_to(ns->store, needed, &deleted);
            if (rc)
                log_warn("namespace %.*s: deleting trimmed segments failed: %s",
                         (int)ns->name_len, ns->name, cy_strerror(rc));
        }
        if (r->has_period || r->has_size) {
            /* Journal the partitions' new starts (with their byte counts)
             * while the messages are still there, then delete segments. */
            uint64_t cut;
            int deleted;
            int rc = store_retain_point(ns->store, now, r->has_period ? r->period_ms : 0,
                                        r->has_size ? r->size_bytes : 0, &cut);
            if (!rc)
                rc = topic_retention_cut(ns, cut);
            if (!rc)
                rc = store_retain_to(ns->store, cut, &deleted);
            if (rc)
                log_warn("namespace %.*s: retention failed: %s", (int)ns->name_len, ns->name,
                         cy_strerror(rc));
        }
        store_maybe_checkpoint(ns->store, mono); /* failures are logged by the store */
    }
    b->last_tick_ms = mono;
}

void broker_checkpoints_wait(struct broker *b)
{
    size_t it = 0;
    const void *k;
    size_t kl;
    void *v;
    while (hmap_next(b->nss, &it, &k, &kl, &v))
        store_checkpoint_wait(((struct broker_ns *)v)->store);
}

int broker_ns_journal_stats(struct broker *b, struct bstr name, struct journal_stats *out)
{
    struct broker_ns *ns = ns_find(b, name);
    if (!ns)
        return CY_ENOTFOUND;
    journal_get_stats(store_journal(ns->store), out);
    return 0;
}

int broker_dump_state(struct broker *b, struct buf *out)
{
    size_t n;
    const struct broker_ns_info *list = ns_sorted(b, &n);
    for (size_t i = 0; i < n; i++) {
        struct broker_ns *ns = ns_find(b, list[i].name);
        buf_put_blob(out, ns->name, (uint32_t)ns->name_len);
        int rc = ns_save(ns, out);
        if (rc)
            return rc;
        for (uint32_t t = 0; t < ns->n_topics; t++) {
            struct topic *tp = ns->by_id[t];
            for (uint32_t p = 0; p < tp->partitions; p++) {
                uint64_t next;
                store_part_next(ns->store, part_id_of(tp->id, p), &next);
                buf_put_u64(out, next);
            }
        }
    }
    return buf_err(out);
}
