/*
 * index.c — the per-partition offset index (index.h, DESIGN.md §2).
 *
 * File "<dir>/<id as 16 lowercase hex>.idx", every field little-endian:
 *
 *   header, 64 bytes
 *     0  u32 magic 0x58495943 ("CYIX")     16  u64 base offset
 *     4  u16 version = 1                    24  u64 created_ms (0 allowed)
 *     6  u16 header size = 64               32  zeros (reserved)
 *     8  u64 partition id                   60  u32 CRC-32C of bytes 0..59
 *   entry i (offset base+i) at 64 + 32*i, 32 bytes
 *     0  u64 journal position    16  u32 length     24  u32 msg_crc
 *     8  u64 timestamp_ms        20  u32 key_hash   28  u32 CRC-32C of bytes 0..27
 *
 * An all-zero entry is invalid: CRC-32C of 28 zero bytes is 0xF7C9C769, not 0
 * (tests/unit/test_index.c checks it), so a file extended with zeros by a crash
 * ends at the last written entry.
 *
 * On load the entries are the longest prefix that checks out (CRC, positions
 * and timestamps non-decreasing); anything after it is logged and cut off,
 * since the index is derived data and the store rebuilds it from the journal.
 *
 * Invariants:
 *   1. base <= flushed <= next. Entries [base, flushed) are in the file,
 *      entries [flushed, next) are encoded in the append buffer
 *      (next - flushed <= append_buffer).
 *   2. !on_disk (no file written yet) implies flushed == base.
 *   3. fd >= 0 iff the index is in the set's LRU list; the list is at most
 *      max_open_files long (one more only while drop_before copies a file).
 *   4. Positions and timestamps never decrease from base to next; last_pos and
 *      last_ts are those of entry next-1 (has_last false when next == base).
 *   5. The read cache holds file entries [cache_first, cache_first+cache_n),
 *      a sub-range of [base, flushed); it exists only while fd >= 0.
 *   6. dirty: the file changed since its last datasync; set->dir_dirty: a name
 *      in the directory changed since the last sync_dir.
 *
 * Life of an index:  (index_get) -> closed <-> open (LRU) -> (index_remove /
 * index_set_close). Evicting an open index flushes its buffer and closes the
 * fd; a buffer that cannot be written stays in memory and is retried.
 */
#include "storage/index.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "base/hashmap.h"
#include "base/log.h"
#include "coyote.h"

#define INDEX_MAGIC 0x58495943u
#define INDEX_VERSION 1
#define INDEX_NAME_LEN 20            /* 16 hex digits + ".idx" */
#define INDEX_SCAN_CHUNK (64 * 1024) /* bytes read at a time by load and drop_before */
#define INDEX_BLOCK 4096             /* read cache block, aligned in the file */
#define INDEX_REWRITE_MIN (64 * 1024)
#define WRITEBACK_EVERY (1024 * 1024) /* index bytes between writeback hints */

struct index {
    struct index_set *set;
    uint64_t id;
    uint64_t base;
    uint64_t flushed;
    uint64_t next;
    uint64_t last_pos;
    uint64_t last_ts;
    bool has_last;
    bool on_disk;
    bool dirty;
    int fd;
    /* INDEX_HEADER_SIZE bytes of room for the header (used when the file is
     * created), then up to set->buffer_cap encoded entries. NULL until needed. */
    uint8_t *buf;
    uint8_t *cache; /* INDEX_BLOCK bytes, NULL unless allocated */
    uint64_t cache_first;
    uint32_t cache_n;
    uint64_t wb_from; /* file bytes below this were handed to writeback */
    struct index *lru_prev, *lru_next; /* prev: more recently used */
};

struct index_set {
    const struct fileops *fo;
    char *dir;
    char *path;     /* scratch: dir + "/" + name + ".tmp" fits */
    char *tmp_path; /* scratch for the second name of a rename */
    size_t dir_len;
    unsigned max_open;
    unsigned buffer_cap;
    unsigned open_count;
    bool dir_dirty;
    struct hmap *map; /* 8 little-endian id bytes -> struct index */
    struct index *lru_head, *lru_tail;
};

/* --- names ---------------------------------------------------------------- */

static void id_key(uint64_t id, uint8_t key[8])
{
    le_put64(key, id);
}

/* Writes "<dir>/<id>.idx" (plus ".tmp" if tmp) into out, which has room. */
static const char *make_path(const struct index_set *set, char *out, uint64_t id, bool tmp)
{
    snprintf(out, set->dir_len + 1 + INDEX_NAME_LEN + 5, "%s/%016" PRIx64 ".idx%s", set->dir, id,
             tmp ? ".tmp" : "");
    return out;
}

/* --- encoding ------------------------------------------------------------- */

static void header_encode(uint8_t *p, uint64_t id, uint64_t base)
{
    memset(p, 0, INDEX_HEADER_SIZE);
    le_put32(p, INDEX_MAGIC);
    le_put16(p + 4, INDEX_VERSION);
    le_put16(p + 6, INDEX_HEADER_SIZE);
    le_put64(p + 8, id);
    le_put64(p + 16, base);
    le_put64(p + 24, 0); /* created_ms: nobody needs it yet */
    le_put32(p + 60, crc32c(0, p, 60));
}

static void entry_encode(uint8_t *p, const struct index_entry *e)
{
    le_put64(p, e->pos);
    le_put64(p + 8, e->timestamp_ms);
    le_put32(p + 16, e->len);
    le_put32(p + 20, e->key_hash);
    le_put32(p + 24, e->msg_crc);
    le_put32(p + 28, crc32c(0, p, 28));
}

int index_entry_decode(const uint8_t *p, struct index_entry *e)
{
    if (crc32c(0, p, 28) != le_get32(p + 28))
        return CY_ECORRUPT;
    e->pos = le_get64(p);
    e->timestamp_ms = le_get64(p + 8);
    e->len = le_get32(p + 16);
    e->key_hash = le_get32(p + 20);
    e->msg_crc = le_get32(p + 24);
    return 0;
}

static uint64_t entry_file_off(const struct index *ix, uint64_t offset)
{
    return INDEX_HEADER_SIZE + (offset - ix->base) * INDEX_ENTRY_SIZE;
}

/* --- descriptors and the LRU ---------------------------------------------- */

static void lru_unlink(struct index_set *set, struct index *ix)
{
    if (ix->lru_prev)
        ix->lru_prev->lru_next = ix->lru_next;
    else
        set->lru_head = ix->lru_next;
    if (ix->lru_next)
        ix->lru_next->lru_prev = ix->lru_prev;
    else
        set->lru_tail = ix->lru_prev;
    ix->lru_prev = ix->lru_next = NULL;
}

static void lru_push_front(struct index_set *set, struct index *ix)
{
    ix->lru_prev = NULL;
    ix->lru_next = set->lru_head;
    if (set->lru_head)
        set->lru_head->lru_prev = ix;
    else
        set->lru_tail = ix;
    set->lru_head = ix;
}

/* Write the buffered entries of an index whose fd is open (creating the
 * file's header first if it is not on disk yet). */
static int flush_open(struct index *ix)
{
    struct index_set *set = ix->set;
    size_t n = (size_t)(ix->next - ix->flushed);
    int rc;

    if (ix->on_disk && n == 0)
        return 0;
    if (!ix->on_disk) {
        /* One write for the header and the first entries: the buffer keeps
         * room for the header in front of them. */
        uint8_t header[INDEX_HEADER_SIZE];
        uint8_t *p = ix->buf ? ix->buf : header;
        header_encode(p, ix->id, ix->base);
        rc = fo_write_all(set->fo, ix->fd, p, INDEX_HEADER_SIZE + n * INDEX_ENTRY_SIZE, 0);
        if (rc < 0)
            return rc;
        ix->on_disk = true;
    } else {
        rc = fo_write_all(set->fo, ix->fd, ix->buf + INDEX_HEADER_SIZE, n * INDEX_ENTRY_SIZE,
                          entry_file_off(ix, ix->flushed));
        if (rc < 0)
            return rc;
    }
    ix->flushed = ix->next;
    ix->dirty = true;
    /* Every WRITEBACK_EVERY bytes, start writing them back: a checkpoint's
     * datasync then finds little to do, instead of flushing megabytes at once
     * while the journal's syncs wait behind it. */
    uint64_t end = entry_file_off(ix, ix->flushed);
    if (set->fo->writeback && end > ix->wb_from && end - ix->wb_from >= WRITEBACK_EVERY) {
        set->fo->writeback(set->fo->ctx, ix->fd, ix->wb_from, end - ix->wb_from); /* a hint */
        ix->wb_from = end;
    }
    return 0;
}

static void close_fd(struct index *ix)
{
    struct index_set *set = ix->set;
    int rc = set->fo->close(set->fo->ctx, ix->fd);
    if (rc < 0)
        log_warn("index %016" PRIx64 ": close: %s", ix->id, cy_strerror(rc));
    ix->fd = -1;
    lru_unlink(set, ix);
    set->open_count--;
    free(ix->cache);
    ix->cache = NULL;
    ix->cache_n = 0;
}

/* Flush (best effort) and close the least recently used index. A buffer that
 * cannot be written stays in memory: nothing is lost, the next flush retries. */
static void evict_one(struct index_set *set)
{
    struct index *ix = set->lru_tail;
    int rc = flush_open(ix);
    if (rc < 0)
        log_warn("index %016" PRIx64 ": flush before close: %s", ix->id, cy_strerror(rc));
    close_fd(ix);
    if (rc == 0 && ix->buf) {
        free(ix->buf);
        ix->buf = NULL;
    }
}

/* Close descriptors until `extra` more fit under max_open_files, never
 * closing `keep`. */
static void make_room(struct index_set *set, unsigned extra, const struct index *keep)
{
    while (set->open_count + extra > set->max_open && set->lru_tail) {
        if (set->lru_tail == keep) {
            if (!keep->lru_prev)
                return;
            /* keep is the oldest: move it up so the one before it goes. */
            struct index *k = set->lru_tail;
            lru_unlink(set, k);
            lru_push_front(set, k);
        }
        evict_one(set);
    }
}

static void adopt_fd(struct index *ix, int fd)
{
    ix->fd = fd;
    lru_push_front(ix->set, ix);
    ix->set->open_count++;
}

/* Make sure ix has an open fd (most recently used). A file not on disk yet is
 * created (and truncated: a failed earlier attempt may have left bytes). */
static int ensure_open(struct index *ix)
{
    struct index_set *set = ix->set;
    if (ix->fd >= 0) {
        if (set->lru_head != ix) {
            lru_unlink(set, ix);
            lru_push_front(set, ix);
        }
        return 0;
    }
    make_room(set, 1, NULL);
    int flags = O_RDWR | (ix->on_disk ? 0 : O_CREAT | O_TRUNC);
    int fd = set->fo->open(set->fo->ctx, make_path(set, set->path, ix->id, false), flags, 0644);
    if (fd < 0)
        return fd;
    if (!ix->on_disk)
        set->dir_dirty = true;
    adopt_fd(ix, fd);
    return 0;
}

static int flush_index(struct index *ix)
{
    if (ix->on_disk && ix->next == ix->flushed)
        return 0;
    int rc = ensure_open(ix);
    return rc < 0 ? rc : flush_open(ix);
}

/* --- reading entries ------------------------------------------------------ */

/* Read file entry `offset` (base <= offset < flushed) through the block cache. */
static int read_file_entry(struct index *ix, uint64_t offset, struct index_entry *e)
{
    struct index_set *set = ix->set;
    int rc = ensure_open(ix);
    if (rc < 0)
        return rc;
    if (ix->cache_n && offset >= ix->cache_first && offset - ix->cache_first < ix->cache_n)
        return index_entry_decode(ix->cache + (offset - ix->cache_first) * INDEX_ENTRY_SIZE, e);

    uint64_t off = entry_file_off(ix, offset);
    if (!ix->cache)
        ix->cache = malloc(INDEX_BLOCK);
    if (!ix->cache) {
        /* No memory for the cache: read just this entry. */
        uint8_t p[INDEX_ENTRY_SIZE];
        ssize_t got = fo_read_full(set->fo, ix->fd, p, sizeof p, off);
        if (got < 0)
            return (int)got;
        return got < INDEX_ENTRY_SIZE ? CY_ECORRUPT : index_entry_decode(p, e);
    }
    /* The block of the file holding this entry, limited to file entries
     * [base, flushed) (entries never straddle a block: 64 | 4096). */
    uint64_t block = off & ~(uint64_t)(INDEX_BLOCK - 1);
    uint64_t first = block < INDEX_HEADER_SIZE
                         ? ix->base
                         : ix->base + (block - INDEX_HEADER_SIZE) / INDEX_ENTRY_SIZE;
    uint64_t n = (block + INDEX_BLOCK - entry_file_off(ix, first)) / INDEX_ENTRY_SIZE;
    if (n > ix->flushed - first)
        n = ix->flushed - first;
    ix->cache_n = 0;
    ssize_t got = fo_read_full(set->fo, ix->fd, ix->cache, (size_t)n * INDEX_ENTRY_SIZE,
                               entry_file_off(ix, first));
    if (got < 0)
        return (int)got;
    ix->cache_first = first;
    ix->cache_n = (uint32_t)((size_t)got / INDEX_ENTRY_SIZE);
    if (offset - first >= ix->cache_n)
        return CY_ECORRUPT; /* the file is shorter than it should be */
    return index_entry_decode(ix->cache + (offset - first) * INDEX_ENTRY_SIZE, e);
}

static int read_entry(struct index *ix, uint64_t offset, struct index_entry *e)
{
    if (offset >= ix->flushed)
        return index_entry_decode(ix->buf + INDEX_HEADER_SIZE + (offset - ix->flushed) * INDEX_ENTRY_SIZE,
                            e);
    return read_file_entry(ix, offset, e);
}

/* --- loading -------------------------------------------------------------- */

/* Validate the file open on ix->fd: header, then the longest valid prefix of
 * entries; cut off the rest. */
static int load(struct index *ix)
{
    struct index_set *set = ix->set;
    const struct fileops *fo = set->fo;
    uint8_t h[INDEX_HEADER_SIZE];
    uint64_t size;
    int rc = fo->fsize(fo->ctx, ix->fd, &size);
    if (rc < 0)
        return rc;
    ssize_t got = fo_read_full(fo, ix->fd, h, sizeof h, 0);
    if (got < 0)
        return (int)got;
    if (got < INDEX_HEADER_SIZE)
        return CY_ECORRUPT; /* a crash while the file was being created */
    if (le_get32(h) != INDEX_MAGIC) {
        static const uint8_t zero[INDEX_HEADER_SIZE];
        return memcmp(h, zero, sizeof h) == 0 ? CY_ECORRUPT : CY_EFORMAT;
    }
    if (le_get16(h + 4) != INDEX_VERSION)
        return CY_EFORMAT;
    if (crc32c(0, h, 60) != le_get32(h + 60) || le_get16(h + 6) != INDEX_HEADER_SIZE ||
        le_get64(h + 8) != ix->id)
        return CY_ECORRUPT;
    ix->base = le_get64(h + 16);

    if (size < INDEX_HEADER_SIZE)
        size = INDEX_HEADER_SIZE; /* it grew while we read: trust what we read */
    uint64_t stored = (size - INDEX_HEADER_SIZE) / INDEX_ENTRY_SIZE;
    uint8_t *chunk = malloc(INDEX_SCAN_CHUNK);
    if (!chunk)
        return CY_ENOMEM;
    uint64_t count = 0, last_pos = 0, last_ts = 0;
    bool bad = false;
    while (count < stored && !bad) {
        uint64_t want = stored - count;
        if (want > INDEX_SCAN_CHUNK / INDEX_ENTRY_SIZE)
            want = INDEX_SCAN_CHUNK / INDEX_ENTRY_SIZE;
        got = fo_read_full(fo, ix->fd, chunk, (size_t)want * INDEX_ENTRY_SIZE,
                           INDEX_HEADER_SIZE + count * INDEX_ENTRY_SIZE);
        if (got < 0) {
            free(chunk);
            return (int)got;
        }
        uint64_t have = (uint64_t)got / INDEX_ENTRY_SIZE;
        if (have < want)
            bad = true; /* the file shrank under us: stop at what we read */
        for (uint64_t i = 0; i < have; i++) {
            struct index_entry e;
            if (index_entry_decode(chunk + i * INDEX_ENTRY_SIZE, &e) < 0 ||
                (count > 0 && (e.pos < last_pos || e.timestamp_ms < last_ts))) {
                bad = true;
                break;
            }
            last_pos = e.pos;
            last_ts = e.timestamp_ms;
            count++;
        }
    }
    free(chunk);

    uint64_t valid_size = INDEX_HEADER_SIZE + count * INDEX_ENTRY_SIZE;
    if (size != valid_size) {
        log_warn("index %016" PRIx64 ": dropped %" PRIu64 " trailing entries (%" PRIu64
                 " bytes) after offset %" PRIu64 "; the store rebuilds them",
                 ix->id, stored - count, size - valid_size, ix->base + count);
        rc = fo->ftruncate(fo->ctx, ix->fd, valid_size);
        if (rc < 0)
            return rc;
        ix->dirty = true;
    }
    ix->flushed = ix->next = ix->base + count;
    ix->has_last = count > 0;
    ix->last_pos = last_pos;
    ix->last_ts = last_ts;
    ix->on_disk = true;
    return 0;
}

/* --- the set -------------------------------------------------------------- */

struct name_list {
    uint64_t *ids;
    size_t n, cap;
    char suffix[16]; /* ".idx" + the caller's suffix */
};

static int collect_name(void *arg, const char *name)
{
    struct name_list *l = arg;
    uint64_t id;
    if (!fo_parse_name(name, 16, 16, l->suffix, &id))
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        uint64_t *ids = realloc(l->ids, cap * sizeof *ids);
        if (!ids)
            return CY_ENOMEM;
        l->ids = ids;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return 0;
}

/* The ids of the files "<id>.idx<suffix>" in the directory. The walk collects
 * first and calls back later, so callbacks may use the file system freely. */
static int list_ids(struct index_set *set, const char *suffix, struct name_list *l)
{
    memset(l, 0, sizeof *l);
    snprintf(l->suffix, sizeof l->suffix, ".idx%s", suffix);
    int rc = set->fo->list_dir(set->fo->ctx, set->dir, collect_name, l);
    if (rc < 0) {
        free(l->ids);
        l->ids = NULL;
    }
    return rc;
}

int index_set_open(const struct index_set_config *cfg, struct index_set **out)
{
    struct index_set *set = calloc(1, sizeof *set);
    if (!set)
        return CY_ENOMEM;
    set->fo = cfg->fo ? cfg->fo : &fileops_posix;
    set->max_open = cfg->max_open_files ? cfg->max_open_files : 64;
    set->buffer_cap = cfg->append_buffer ? cfg->append_buffer : 64;
    set->dir_len = strlen(cfg->dir);
    set->dir = malloc(set->dir_len + 1);
    set->path = malloc(set->dir_len + 1 + INDEX_NAME_LEN + 5);
    set->tmp_path = malloc(set->dir_len + 1 + INDEX_NAME_LEN + 5);
    set->map = hmap_new();
    int rc = CY_ENOMEM;
    if (!set->dir || !set->path || !set->tmp_path || !set->map)
        goto fail;
    memcpy(set->dir, cfg->dir, set->dir_len + 1);
    rc = fo_mkdirs(set->fo, set->dir);
    if (rc < 0)
        goto fail;

    /* A drop_before interrupted by a crash leaves "<name>.tmp": remove it. */
    struct name_list stale;
    rc = list_ids(set, ".tmp", &stale);
    if (rc < 0)
        goto fail;
    for (size_t i = 0; i < stale.n; i++) {
        int urc = set->fo->unlink(set->fo->ctx, make_path(set, set->path, stale.ids[i], true));
        if (urc < 0 && urc != -ENOENT)
            log_warn("index: removing %s: %s", set->path, cy_strerror(urc));
    }
    free(stale.ids);
    *out = set;
    return 0;

fail:
    hmap_free(set->map);
    free(set->tmp_path);
    free(set->path);
    free(set->dir);
    free(set);
    return rc;
}

static void index_free(struct index *ix)
{
    if (ix->fd >= 0)
        close_fd(ix);
    free(ix->buf);
    free(ix->cache);
    free(ix);
}

void index_set_close(struct index_set *set)
{
    if (!set)
        return;
    size_t it = 0;
    const void *key;
    size_t klen;
    void *val;
    while (hmap_next(set->map, &it, &key, &klen, &val)) {
        struct index *ix = val;
        int rc = flush_index(ix);
        if (rc < 0)
            log_warn("index %016" PRIx64 ": flush at close: %s (the store rebuilds it)", ix->id,
                     cy_strerror(rc));
        index_free(ix);
    }
    hmap_free(set->map);
    free(set->tmp_path);
    free(set->path);
    free(set->dir);
    free(set);
}

static struct index *find(const struct index_set *set, uint64_t id)
{
    uint8_t key[8];
    id_key(id, key);
    return hmap_get(set->map, key, sizeof key);
}

int index_get(struct index_set *set, uint64_t id, uint64_t base, struct index **out)
{
    struct index *ix = find(set, id);
    if (ix) {
        *out = ix;
        return 0;
    }
    ix = calloc(1, sizeof *ix);
    if (!ix)
        return CY_ENOMEM;
    ix->set = set;
    ix->id = id;
    ix->fd = -1;
    ix->base = ix->flushed = ix->next = base;

    make_room(set, 1, NULL);
    int fd = set->fo->open(set->fo->ctx, make_path(set, set->path, id, false), O_RDWR, 0);
    int rc;
    if (fd >= 0) {
        adopt_fd(ix, fd);
        rc = load(ix);
        if (rc < 0)
            goto fail;
    } else if (fd != -ENOENT) {
        rc = fd;
        goto fail;
    }
    uint8_t key[8];
    id_key(id, key);
    rc = hmap_put(set->map, key, sizeof key, ix, NULL);
    if (rc < 0)
        goto fail;
    *out = ix;
    return 0;

fail:
    index_free(ix);
    return rc;
}

int index_exists(struct index_set *set, uint64_t id)
{
    if (find(set, id))
        return 1;
    int fd = set->fo->open(set->fo->ctx, make_path(set, set->path, id, false), O_RDONLY, 0);
    if (fd == -ENOENT)
        return 0;
    if (fd < 0)
        return fd;
    set->fo->close(set->fo->ctx, fd);
    return 1;
}

int index_remove(struct index_set *set, uint64_t id)
{
    uint8_t key[8];
    void *old = NULL;
    id_key(id, key);
    if (hmap_del(set->map, key, sizeof key, &old) == 0)
        index_free(old);
    int rc = set->fo->unlink(set->fo->ctx, make_path(set, set->path, id, false));
    if (rc == -ENOENT)
        return 0;
    if (rc == 0)
        set->dir_dirty = true;
    return rc;
}

int index_set_list(struct index_set *set, int (*cb)(void *arg, uint64_t id), void *arg)
{
    struct name_list l;
    int rc = list_ids(set, "", &l);
    for (size_t i = 0; rc == 0 && i < l.n; i++)
        rc = cb(arg, l.ids[i]);
    free(l.ids);
    return rc;
}

uint64_t index_id(const struct index *ix)
{
    return ix->id;
}
uint64_t index_base(const struct index *ix)
{
    return ix->base;
}
uint64_t index_next(const struct index *ix)
{
    return ix->next;
}

/* --- appending and reading ------------------------------------------------ */

int index_append(struct index *ix, uint64_t offset, const struct index_entry *e)
{
    struct index_set *set = ix->set;
    if (offset != ix->next)
        return CY_EINVAL;
    if (ix->has_last && (e->pos < ix->last_pos || e->timestamp_ms < ix->last_ts))
        return CY_EINVAL; /* load would cut the file here */
    if (!ix->buf) {
        ix->buf = malloc(INDEX_HEADER_SIZE + (size_t)set->buffer_cap * INDEX_ENTRY_SIZE);
        if (!ix->buf)
            return CY_ENOMEM;
    }
    if (ix->next - ix->flushed == set->buffer_cap) {
        /* Full: write it out first, so a failure leaves this append undone. */
        int rc = flush_index(ix);
        if (rc < 0)
            return rc;
    }
    entry_encode(ix->buf + INDEX_HEADER_SIZE + (ix->next - ix->flushed) * INDEX_ENTRY_SIZE, e);
    ix->next++;
    ix->has_last = true;
    ix->last_pos = e->pos;
    ix->last_ts = e->timestamp_ms;
    return 0;
}

int index_lookup(struct index *ix, uint64_t offset, struct index_entry *e)
{
    if (offset < ix->base || offset >= ix->next)
        return CY_ERANGE;
    return read_entry(ix, offset, e);
}

/* The first offset in [base, next) whose entry has key >= target (key: the
 * timestamp when by_time, else the position), or next. */
static int seek(struct index *ix, uint64_t target, bool by_time, uint64_t *offset)
{
    uint64_t lo = ix->base, hi = ix->next;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        struct index_entry e;
        int rc = read_entry(ix, mid, &e);
        if (rc < 0)
            return rc;
        if ((by_time ? e.timestamp_ms : e.pos) >= target)
            hi = mid;
        else
            lo = mid + 1;
    }
    *offset = lo;
    return 0;
}

int index_seek_time(struct index *ix, uint64_t ts, uint64_t *offset)
{
    return seek(ix, ts, true, offset);
}

int index_seek_pos(struct index *ix, uint64_t pos, uint64_t *offset)
{
    return seek(ix, pos, false, offset);
}

int index_truncate(struct index *ix, uint64_t next)
{
    struct index_set *set = ix->set;
    if (next < ix->base || next > ix->next)
        return CY_EINVAL;
    if (next == ix->next)
        return 0;
    struct index_entry last = {0};
    if (next > ix->base) {
        int rc = read_entry(ix, next - 1, &last);
        if (rc < 0)
            return rc;
    }
    if (next < ix->flushed) {
        /* on_disk holds here (invariant 2). */
        int rc = ensure_open(ix);
        if (rc < 0)
            return rc;
        rc = set->fo->ftruncate(set->fo->ctx, ix->fd, entry_file_off(ix, next));
        if (rc < 0)
            return rc;
        ix->dirty = true;
        ix->flushed = next;
        if (ix->cache_n && ix->cache_first + ix->cache_n > next)
            ix->cache_n = next > ix->cache_first ? (uint32_t)(next - ix->cache_first) : 0;
    }
    ix->next = next;
    ix->has_last = next > ix->base;
    ix->last_pos = last.pos;
    ix->last_ts = last.timestamp_ms;
    return 0;
}

/* Copy entries [offset, next) of ix's file into a new file "<name>.tmp" with
 * base `offset`, make it durable, and rename it over the index. */
static int rewrite(struct index *ix, uint64_t offset)
{
    struct index_set *set = ix->set;
    const struct fileops *fo = set->fo;
    uint8_t *chunk = malloc(INDEX_SCAN_CHUNK);
    if (!chunk)
        return CY_ENOMEM;
    make_room(set, 1, ix);
    const char *tmp = make_path(set, set->tmp_path, ix->id, true);
    int fd = fo->open(fo->ctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    int rc = fd;
    if (fd < 0)
        goto fail_free;
    set->open_count++; /* the copy's descriptor counts while it is open */

    header_encode(chunk, ix->id, offset);
    rc = fo_write_all(fo, fd, chunk, INDEX_HEADER_SIZE, 0);
    for (uint64_t at = offset; rc == 0 && at < ix->next;) {
        uint64_t n = ix->next - at;
        if (n > INDEX_SCAN_CHUNK / INDEX_ENTRY_SIZE)
            n = INDEX_SCAN_CHUNK / INDEX_ENTRY_SIZE;
        ssize_t got =
            fo_read_full(fo, ix->fd, chunk, (size_t)n * INDEX_ENTRY_SIZE, entry_file_off(ix, at));
        if (got < 0) {
            rc = (int)got;
            break;
        }
        if ((uint64_t)got != n * INDEX_ENTRY_SIZE) {
            rc = CY_ECORRUPT;
            break;
        }
        for (uint64_t i = 0; i < n; i++)
            if (crc32c(0, chunk + i * INDEX_ENTRY_SIZE, 28) !=
                le_get32(chunk + i * INDEX_ENTRY_SIZE + 28))
                rc = CY_ECORRUPT;
        if (rc == 0)
            rc = fo_write_all(fo, fd, chunk, (size_t)got,
                              INDEX_HEADER_SIZE + (at - offset) * INDEX_ENTRY_SIZE);
        at += n;
    }
    if (rc == 0)
        rc = fo->datasync(fo->ctx, fd);
    if (rc == 0)
        rc = fo->rename(fo->ctx, tmp, make_path(set, set->path, ix->id, false));
    if (rc < 0)
        goto fail_close;

    /* The new file is the index now: switch descriptors. */
    set->open_count--;
    close_fd(ix);
    adopt_fd(ix, fd);
    ix->base = offset;
    ix->dirty = false;
    ix->wb_from = entry_file_off(ix, ix->flushed); /* the new file was synced whole */
    set->dir_dirty = true;
    free(chunk);
    rc = fo->sync_dir(fo->ctx, set->dir);
    if (rc == 0)
        set->dir_dirty = false;
    return rc;

fail_close:
    fo->close(fo->ctx, fd);
    set->open_count--;
    fo->unlink(fo->ctx, tmp);
fail_free:
    free(chunk);
    return rc;
}

int index_drop_before(struct index *ix, uint64_t offset)
{
    if (offset > ix->next)
        return CY_EINVAL;
    if (offset <= ix->base)
        return 0;
    uint64_t dropped = offset - ix->base, total = ix->next - ix->base;
    if (dropped * 2 < total || dropped * INDEX_ENTRY_SIZE < INDEX_REWRITE_MIN)
        return 0;
    int rc = flush_index(ix); /* the copy reads everything from the file */
    if (rc < 0)
        return rc;
    rc = ensure_open(ix);
    return rc < 0 ? rc : rewrite(ix, offset);
}

/* --- flush and sync ------------------------------------------------------- */

int index_set_flush(struct index_set *set)
{
    int first_err = 0;
    size_t it = 0;
    const void *key;
    size_t klen;
    void *val;
    while (hmap_next(set->map, &it, &key, &klen, &val)) {
        int rc = flush_index(val);
        if (rc < 0 && first_err == 0)
            first_err = rc;
    }
    return first_err;
}

int index_set_sync(struct index_set *set)
{
    int first_err = index_set_flush(set);
    size_t it = 0;
    const void *key;
    size_t klen;
    void *val;
    while (hmap_next(set->map, &it, &key, &klen, &val)) {
        struct index *ix = val;
        if (!ix->dirty)
            continue;
        int rc = ensure_open(ix); /* it may have been closed since it was written */
        if (rc == 0)
            rc = set->fo->datasync(set->fo->ctx, ix->fd);
        if (rc == 0)
            ix->dirty = false;
        else if (first_err == 0)
            first_err = rc;
    }
    if (set->dir_dirty) {
        int rc = set->fo->sync_dir(set->fo->ctx, set->dir);
        if (rc == 0)
            set->dir_dirty = false;
        else if (first_err == 0)
            first_err = rc;
    }
    return first_err;
}

int index_set_sync_begin(struct index_set *set, struct index_sync_list *out)
{
    memset(out, 0, sizeof *out);
    int rc = index_set_flush(set);
    if (rc < 0)
        return rc;
    size_t cap = hmap_count(set->map);
    out->paths = calloc(cap ? cap : 1, sizeof *out->paths);
    if (!out->paths)
        return CY_ENOMEM;
    size_t it = 0;
    const void *key;
    size_t klen;
    void *val;
    while (hmap_next(set->map, &it, &key, &klen, &val)) {
        struct index *ix = val;
        if (!ix->dirty || !ix->on_disk)
            continue;
        out->paths[out->n] = strdup(make_path(set, set->path, ix->id, false));
        if (!out->paths[out->n]) {
            index_sync_list_free(out);
            return CY_ENOMEM;
        }
        out->n++;
    }
    if (set->dir_dirty) {
        out->dir = strdup(set->dir);
        if (!out->dir) {
            index_sync_list_free(out);
            return CY_ENOMEM;
        }
    }
    /* Only now that nothing can fail: the marks move to the list. */
    it = 0;
    while (hmap_next(set->map, &it, &key, &klen, &val)) {
        struct index *ix = val;
        if (ix->on_disk)
            ix->dirty = false;
    }
    set->dir_dirty = false;
    return 0;
}

int index_sync_files(const struct fileops *fo, const struct index_sync_list *l)
{
    int first_err = 0;
    for (size_t i = 0; i < l->n; i++) {
        int fd = fo->open(fo->ctx, l->paths[i], O_RDONLY, 0);
        if (fd == -ENOENT)
            continue; /* removed since: nothing of it needs to be durable */
        int rc = fd < 0 ? fd : fo->datasync(fo->ctx, fd);
        if (fd >= 0)
            fo->close(fo->ctx, fd);
        if (rc < 0 && first_err == 0)
            first_err = rc;
    }
    if (l->dir && first_err == 0)
        first_err = fo->sync_dir(fo->ctx, l->dir);
    return first_err;
}

void index_set_sync_failed(struct index_set *set)
{
    size_t it = 0;
    const void *key;
    size_t klen;
    void *val;
    while (hmap_next(set->map, &it, &key, &klen, &val))
        ((struct index *)val)->dirty = true;
    set->dir_dirty = true;
}

void index_sync_list_free(struct index_sync_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->paths[i]);
    free(l->paths);
    free(l->dir);
    memset(l, 0, sizeof *l);
}
