/*
 * coyote_check.c — verify a data directory without changing it, in the
 * spirit of redis-check-aof and mdb_stat. Usage and output: docs/check.md.
 *
 *   coyote-check [--quiet | --verbose] DIR
 *
 * DIR is one store directory (it has journal/) or a directory holding store
 * directories at any depth. Each store is checked in four passes:
 *
 *   1. snapshots (snap/): every file decodes, its name matches the position
 *      it covers, its STORE section is well formed;
 *   2. indexes (index/): headers; the files are kept in memory for 3 and 4;
 *   3. journal (journal/): every segment header, the chaining of segments,
 *      every record, every publish body, the partitions' offsets (dense and
 *      increasing), each message against its index entry, and where each
 *      partition continues after each snapshot's position;
 *   4. cross-checks: snapshot positions against the journal's extent and
 *      their high waters against the journal, index entries the journal did
 *      not account for, missing or short indexes.
 *
 * Verdicts follow recovery (journal_file_open, store_open), so what recovery
 * repairs by design is a warning, and only damage is an error:
 *   - a bad record at or after the durable hint is the torn tail recovery
 *     cuts (warning); before the hint it is lost synced data (error);
 *   - index bytes below the in-force checkpoint's high water were synced by
 *     that checkpoint: a bad or disagreeing entry there is an error; at or
 *     above it they are unsynced derived data that recovery cuts, replaces or
 *     rebuilds from the journal (warning). Missing or short index files are
 *     rebuilt by recovery (warning).
 *
 * Memory: one segment and all index files of the store being checked.
 *
 * Invariants of this program:
 *   1. Nothing is modified and LOCK is not taken: every file is opened
 *      O_RDONLY through fileops_posix (a live directory may show a torn tail).
 *   2. Every problem is printed with the file and the file offset it is at.
 *   3. Exit status: 0 no damage (warnings allowed), 1 damage (or nothing to
 *      check), 2 usage.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "base/hashmap.h"
#include "coyote.h"
#include "storage/fileops.h"
#include "storage/index.h"
#include "storage/journal.h"
#include "storage/msgrec.h"
#include "storage/snapshot.h"
#include "storage/store.h"

/* Copies of format constants that their modules keep private (index.c,
 * journal_file.c, snapshot.c, store.c); docs/storage.md is the reference. */
#define INDEX_MAGIC 0x58495943u
#define INDEX_VERSION 1
#define SEG_MIN_CAPACITY 4096ull
#define SEG_MAX_CAPACITY (1ull << 40)
#define SNAP_MAGIC 0x4E535943u
#define SNAP_END_MAGIC 0x444E4559u
#define SNAP_HEADER_SIZE 48
#define STORE_SECTION_VERSION 1

#define DETAIL_LIMIT 10 /* detailed lines per file and kind before "... and N more" */
#define MAX_DEPTH 64    /* directory levels searched for stores */
#define NONE UINT64_MAX

enum severity { SEV_ERROR, SEV_WARN };

struct options {
    bool quiet;
    bool verbose;
};

/* One decoded snapshot file. */
struct snap {
    char *path;
    uint64_t name_pos;
    bool valid;
    uint64_t covered;
    uint64_t created_ms;
    size_t n_sections;
    uint8_t *raw;
    size_t raw_len;
    /* STORE section: count triples {id, base, next} at store_parts */
    bool has_store;
    bool store_ok;
    uint32_t store_count;
    const uint8_t *store_parts;
};

/* An index entry that disagrees with the journal (severity decided later). */
struct mismatch {
    uint64_t offset;
    struct index_entry want, have;
};

/* Everything known about one partition id. */
struct part {
    uint64_t id;
    /* journal */
    bool in_journal;
    uint64_t jfirst, jnext, jfirst_pos;
    uint64_t messages;
    unsigned gen;           /* store's resync generation when last seen */
    unsigned offset_errors; /* reported offset discontinuities */
    uint64_t *after;        /* per valid snapshot: first offset at a position >= its covered */
    /* index file */
    bool index_file;        /* a file exists */
    bool index_ok;          /* and its header is valid */
    const char *header_bad; /* why the header is damaged (recovery rebuilds the index) */
    uint64_t header_bad_off;
    char *ix_path;
    uint8_t *ix; /* the whole file */
    size_t ix_len;
    uint64_t ix_base, ix_count;
    struct mismatch *mm;
    size_t n_mm, cap_mm;
    /* in-force checkpoint */
    bool in_ckpt;
    uint64_t ckpt_base, ckpt_next;
};

struct seg {
    uint64_t base; /* from the name */
    char *path;
    bool header_ok;
    struct journal_segment_header h;
    uint64_t size;
    uint64_t records;
};

/* Journal positions [from, to) the scan could not read (damage, I/O errors). */
struct hole {
    uint64_t from, to;
};

struct store_check {
    const struct options *opt;
    const char *dir;
    char *jdir, *idir, *sdir;
    struct hmap *parts;
    struct snap *snaps; /* descending by name */
    size_t n_snaps;
    struct snap **slots; /* the valid ones, descending by covered */
    size_t n_slots;
    struct seg *segs;
    size_t n_segs;
    uint8_t *seg_buf;
    size_t seg_cap;

    uint64_t start, end, hint, first_pos, last_pos;
    uint64_t verify_from; /* journal_file_open verifies records from here on */
    uint64_t ckpt_floor;  /* the highest position a valid snapshot covers: synced */
    bool have_last;
    uint64_t last_ts;
    uint64_t records, publishes, messages, bytes;
    uint64_t index_entries, index_files;
    unsigned gen; /* bumped where the scan had to skip damage */
    struct hole *holes;
    size_t n_holes, cap_holes;
    const struct snap *in_force;
    uint64_t errors, warnings;
};

static const struct fileops *fo = &fileops_posix;

/* ---- reporting ------------------------------------------------------------- */

static void report(struct store_check *sc, enum severity sev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(struct store_check *sc, enum severity sev, const char *fmt, ...)
{
    if (sev == SEV_ERROR)
        sc->errors++;
    else
        sc->warnings++;
    if (sev == SEV_WARN && sc->opt->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs(sev == SEV_ERROR ? "error: " : "warning: ", stdout);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

/* A summary line (not with --quiet) or, with detail set, a --verbose one. */
static void print_line(const struct store_check *sc, bool detail, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void print_line(const struct store_check *sc, bool detail, const char *fmt, ...)
{
    if (detail ? !sc->opt->verbose : sc->opt->quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}
#define say(sc, ...) print_line((sc), false, __VA_ARGS__)
#define note(sc, ...) print_line((sc), true, __VA_ARGS__)

static _Noreturn void oom(void)
{
    fprintf(stderr, "coyote-check: out of memory\n");
    exit(1);
}

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (!p)
        oom();
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- partitions ----------------------------------------------------------------- */

static struct part *part_find(struct store_check *sc, uint64_t id)
{
    return hmap_get(sc->parts, &id, sizeof id);
}

static struct part *part_get(struct store_check *sc, uint64_t id)
{
    struct part *p = part_find(sc, id);
    if (p)
        return p;
    p = xcalloc(1, sizeof *p);
    p->id = id;
    p->after = xcalloc(sc->n_slots, sizeof *p->after);
    for (size_t k = 0; k < sc->n_slots; k++)
        p->after[k] = NONE;
    if (hmap_put(sc->parts, &p->id, sizeof p->id, p, NULL))
        oom();
    return p;
}

static int cmp_part(const void *a, const void *b)
{
    const struct part *x = *(struct part *const *)a, *y = *(struct part *const *)b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The partitions sorted by id (for stable output); caller frees the array. */
static struct part **parts_sorted(struct store_check *sc, size_t *n)
{
    *n = hmap_count(sc->parts);
    struct part **v = xcalloc(*n, sizeof *v);
    size_t it = 0, i = 0;
    const void *k;
    size_t kl;
    void *val;
    while (hmap_next(sc->parts, &it, &k, &kl, &val))
        v[i++] = val;
    if (*n > 1)
        qsort(v, *n, sizeof *v, cmp_part);
    return v;
}

/* ---- directory listings ------------------------------------------------------------ */

struct names {
    char **v;
    size_t n, cap;
};

static int collect(void *arg, const char *name)
{
    struct names *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        char **nv = realloc(l->v, cap * sizeof *nv);
        if (!nv)
            return CY_ENOMEM;
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n] = strdup(name);
    if (!l->v[l->n])
        return CY_ENOMEM;
    l->n++;
    return 0;
}

static void names_free(struct names *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Read a whole file; 0 or a negative code (reported by the caller). */
static int read_file(const char *path, uint8_t **data, size_t *len)
{
    return fo_read_file(fo, path, SIZE_MAX, data, len);
}

/* ---- pass 1: snapshots ----------------------------------------------------------- */

/* Where and why snapshot_decode rejects data (it only says CY_ECORRUPT). */
static void snap_locate(const uint8_t *d, size_t len, uint64_t *off, const char **why)
{
    *off = 0;
    if (len < 4 || le_get32(d) != SNAP_MAGIC) {
        *why = len < 4 ? "file cut short before the magic number" : "not a snapshot (bad magic)";
        return;
    }
    if (len < 6 || le_get16(d + 4) != 1) {
        *why = len < 6 ? "file cut short in the header" : "unsupported format version";
        return;
    }
    if (len < SNAP_HEADER_SIZE) {
        *why = "file cut short in the header";
        return;
    }
    if (crc32c(0, d, 44) != le_get32(d + 44) || le_get16(d + 6) != SNAP_HEADER_SIZE) {
        *why = "header checksum mismatch";
        return;
    }
    uint32_t n = le_get32(d + 24);
    if (n > SNAPSHOT_MAX_SECTIONS) {
        *why = "too many sections";
        return;
    }
    size_t pos = SNAP_HEADER_SIZE;
    for (uint32_t i = 0; i < n; i++) {
        *off = pos;
        if (len - pos < 12) {
            *why = "file cut short in a section header";
            return;
        }
        uint64_t slen = le_get64(d + pos + 4);
        uint64_t left = len - pos - 12;
        if (left < 4 || slen > left - 4) {
            *why = "file cut short in a section (or a section length is wrong)";
            return;
        }
        uint32_t crc = crc32c(0, d + pos, 12);
        crc = crc32c(crc, d + pos + 12, (size_t)slen);
        if (crc != le_get32(d + pos + 12 + slen)) {
            *why = "section checksum mismatch";
            return;
        }
        pos += 12 + (size_t)slen + 4;
    }
    *off = pos;
    if (len - pos < 8)
        *why = "file cut short before the trailer";
    else if (len - pos > 8)
        *why = "bytes after the trailer";
    else if (le_get32(d + pos) != SNAP_END_MAGIC)
        *why = "bad trailer magic";
    else
        *why = "trailer checksum mismatch";
}

static int cmp_snap_desc(const void *a, const void *b)
{
    const struct snap *x = a, *y = b;
    return x->name_pos < y->name_pos ? 1 : x->name_pos > y->name_pos ? -1 : 0;
}

static void check_snapshot(struct store_check *sc, struct snap *s)
{
    int rc = read_file(s->path, &s->raw, &s->raw_len);
    if (rc) {
        report(sc, SEV_ERROR, "%s: cannot read: %s", s->path, cy_strerror(rc));
        return;
    }
    struct snapshot snap;
    rc = snapshot_decode(s->raw, s->raw_len, &snap);
    if (rc) {
        uint64_t off;
        const char *why;
        snap_locate(s->raw, s->raw_len, &off, &why);
        report(sc, SEV_ERROR,
               "%s: offset %" PRIu64 ": snapshot does not decode: %s (recovery skips it)", s->path,
               off, why);
        return;
    }
    if (snap.covered_pos != s->name_pos) {
        report(sc, SEV_ERROR,
               "%s: offset 8: covers position %" PRIu64 " but is named for %" PRIu64
               " (recovery skips it)",
               s->path, snap.covered_pos, s->name_pos);
        return;
    }
    s->valid = true;
    s->covered = snap.covered_pos;
    s->created_ms = snap.created_ms;
    s->n_sections = snap.n_sections;
    for (size_t i = 0; i < snap.n_sections; i++) {
        if (snap.sections[i].tag != SNAP_SECTION_STORE)
            continue;
        const uint8_t *d = snap.sections[i].data;
        uint64_t len = snap.sections[i].len;
        uint64_t off = (uint64_t)(d - s->raw);
        s->has_store = true;
        if (len < 8 || le_get32(d) != STORE_SECTION_VERSION ||
            (uint64_t)le_get32(d + 4) * 24 != len - 8) {
            report(sc, SEV_ERROR,
                   "%s: offset %" PRIu64 ": STORE section is malformed (version or count does "
                   "not match its length %" PRIu64 "): recovery fails on it",
                   s->path, off, len);
            continue;
        }
        s->store_ok = true;
        s->store_count = le_get32(d + 4);
        s->store_parts = d + 8;
        for (uint32_t k = 0; k < s->store_count; k++) {
            const uint8_t *t = s->store_parts + 24 * (size_t)k;
            if (le_get64(t + 8) > le_get64(t + 16)) {
                report(sc, SEV_ERROR,
                       "%s: offset %" PRIu64 ": partition %016" PRIx64 " has base %" PRIu64
                       " above its next offset %" PRIu64,
                       s->path, off + 8 + 24 * (uint64_t)k, le_get64(t), le_get64(t + 8),
                       le_get64(t + 16));
                s->store_ok = false;
            }
        }
    }
    if (!s->has_store)
        report(sc, SEV_WARN, "%s: has no STORE section (no partition high waters)", s->path);
}

static void load_snapshots(struct store_check *sc)
{
    struct names l = {0};
    int rc = fo->list_dir(fo->ctx, sc->sdir, collect, &l);
    if (rc == -ENOENT) {
        note(sc, "  note: %s does not exist (no checkpoint yet)", sc->sdir);
        return;
    }
    if (rc) {
        report(sc, SEV_ERROR, "%s: cannot list: %s", sc->sdir, cy_strerror(rc));
        names_free(&l);
        return;
    }
    sc->snaps = xcalloc(l.n, sizeof *sc->snaps);
    for (size_t i = 0; i < l.n; i++) {
        uint64_t pos;
        if (fo_parse_name(l.v[i], 20, 10, ".snap", &pos)) {
            struct snap *s = &sc->snaps[sc->n_snaps++];
            s->name_pos = pos;
            s->path = path_join(sc->sdir, l.v[i]);
        } else if (fo_parse_name(l.v[i], 20, 10, ".snap.tmp", &pos)) {
            note(sc, "  note: %s/%s: unfinished checkpoint; the next checkpoint deletes it",
                 sc->sdir, l.v[i]);
        }
    }
    names_free(&l);
    if (sc->n_snaps > 1)
        qsort(sc->snaps, sc->n_snaps, sizeof *sc->snaps, cmp_snap_desc);
    sc->slots = xcalloc(sc->n_snaps, sizeof *sc->slots);
    for (size_t i = 0; i < sc->n_snaps; i++) {
        check_snapshot(sc, &sc->snaps[i]);
        if (sc->snaps[i].valid) {
            sc->slots[sc->n_slots++] = &sc->snaps[i];
            if (sc->snaps[i].covered > sc->ckpt_floor)
                sc->ckpt_floor = sc->snaps[i].covered;
        }
    }
}

/* ---- pass 2: indexes ------------------------------------------------------------- */

static void load_index(struct store_check *sc, uint64_t id, const char *name)
{
    struct part *p = part_get(sc, id);
    p->index_file = true;
    p->ix_path = path_join(sc->idir, name);
    int rc = read_file(p->ix_path, &p->ix, &p->ix_len);
    if (rc) {
        report(sc, SEV_ERROR, "%s: cannot read: %s", p->ix_path, cy_strerror(rc));
        return;
    }
    sc->index_files++;
    /* As index.c load(): a foreign magic or version is CY_EFORMAT (store_open
     * fails); anything else is CY_ECORRUPT (the store discards and rebuilds the
     * index), judged in check_indexes once the checkpoint is known. */
    const uint8_t *h = p->ix;
    const char *why = NULL, *foreign = NULL;
    uint64_t off = 0;
    static const uint8_t zero[INDEX_HEADER_SIZE];
    if (p->ix_len < INDEX_HEADER_SIZE)
        why = "header cut short";
    else if (le_get32(h) != INDEX_MAGIC && memcmp(h, zero, sizeof zero) == 0)
        why = "header is all zeros";
    else if (le_get32(h) != INDEX_MAGIC)
        foreign = "not an index (bad magic)";
    else if (le_get16(h + 4) != INDEX_VERSION)
        foreign = "unsupported format version", off = 4;
    else if (crc32c(0, h, 60) != le_get32(h + 60))
        why = "header checksum mismatch", off = 60;
    else if (le_get16(h + 6) != INDEX_HEADER_SIZE)
        why = "wrong header size", off = 6;
    else if (le_get64(h + 8) != id)
        why = "partition id in the header differs from the file name", off = 8;
    if (foreign) {
        report(sc, SEV_ERROR, "%s: offset %" PRIu64 ": %s: recovery refuses to open the store",
               p->ix_path, off, foreign);
        return;
    }
    if (why) {
        p->header_bad = why;
        p->header_bad_off = off;
        return;
    }
    p->index_ok = true;
    p->ix_base = le_get64(h + 16);
    p->ix_count = (p->ix_len - INDEX_HEADER_SIZE) / INDEX_ENTRY_SIZE;
}

static void load_indexes(struct store_check *sc)
{
    struct names l = {0};
    int rc = fo->list_dir(fo->ctx, sc->idir, collect, &l);
    if (rc == -ENOENT) {
        note(sc, "  note: %s does not exist (created at first open)", sc->idir);
        return;
    }
    if (rc) {
        report(sc, SEV_ERROR, "%s: cannot list: %s", sc->idir, cy_strerror(rc));
        names_free(&l);
        return;
    }
    for (size_t i = 0; i < l.n; i++) {
        uint64_t id;
        if (fo_parse_name(l.v[i], 16, 16, ".idx", &id))
            load_index(sc, id, l.v[i]);
        else if (fo_parse_name(l.v[i], 16, 16, ".idx.tmp", &id))
            note(sc, "  note: %s/%s: left by an interrupted rewrite; recovery deletes it", sc->idir,
                 l.v[i]);
    }
    names_free(&l);
}

/* ---- pass 3: journal ------------------------------------------------------------- */

static int cmp_seg(const void *a, const void *b)
{
    const struct seg *x = a, *y = b;
    return x->base < y->base ? -1 : x->base > y->base;
}

static const char *file_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Read segment s's header; 0, or a code with *why set. */
static int read_seg_header(struct seg *s, const char **why, int *sys_err)
{
    *sys_err = 0;
    int fd = fo->open(fo->ctx, s->path, O_RDONLY, 0);
    if (fd < 0) {
        *sys_err = fd;
        *why = "cannot open";
        return fd;
    }
    uint8_t h[JOURNAL_SEGMENT_HEADER];
    int rc = fo->fsize(fo->ctx, fd, &s->size);
    ssize_t got = rc ? rc : fo_read_full(fo, fd, h, sizeof h, 0);
    fo->close(fo->ctx, fd);
    if (got < 0) {
        *sys_err = (int)got;
        *why = "cannot read";
        return (int)got;
    }
    if (got < (ssize_t)sizeof h) {
        *why = "header cut short";
        return CY_ECORRUPT;
    }
    rc = journal_segment_header_decode(h, sizeof h, &s->h);
    if (rc == CY_EFORMAT) {
        *why = le_get32(h) == JOURNAL_SEGMENT_MAGIC ? "unsupported format version or header size"
                                                    : "not a journal segment (bad magic)";
        return rc;
    }
    if (rc) {
        *why = "header checksum mismatch";
        return rc;
    }
    if (s->h.base != s->base) {
        *why = "base position in the header differs from the file name";
        return CY_ECORRUPT;
    }
    if (s->h.capacity < SEG_MIN_CAPACITY || s->h.capacity > SEG_MAX_CAPACITY) {
        *why = "capacity out of range";
        return CY_ECORRUPT;
    }
    return 0;
}

/* List segments and check headers and chaining (journal_file.c open_segments). */
static void check_seg_headers(struct store_check *sc)
{
    struct names l = {0};
    int rc = fo->list_dir(fo->ctx, sc->jdir, collect, &l);
    if (rc) {
        report(sc, SEV_ERROR, "%s: cannot list: %s", sc->jdir, cy_strerror(rc));
        names_free(&l);
        return;
    }
    sc->segs = xcalloc(l.n, sizeof *sc->segs);
    for (size_t i = 0; i < l.n; i++) {
        uint64_t base;
        if (fo_parse_name(l.v[i], 20, 10, ".seg", &base)) {
            struct seg *s = &sc->segs[sc->n_segs++];
            s->base = base;
            s->path = path_join(sc->jdir, l.v[i]);
        }
    }
    names_free(&l);
    if (sc->n_segs > 1)
        qsort(sc->segs, sc->n_segs, sizeof *sc->segs, cmp_seg);

    uint64_t hint = 0;
    for (size_t k = 0; k < sc->n_segs; k++) {
        struct seg *s = &sc->segs[k];
        bool last = k + 1 == sc->n_segs;
        const char *why;
        int sys;
        rc = read_seg_header(s, &why, &sys);
        if (rc == CY_ECORRUPT && last && s->base >= hint && (k > 0 || s->base == 0)) {
            /* journal_file_open takes it for a creation that was never synced. */
            if (s->base < sc->ckpt_floor)
                report(sc, SEV_ERROR,
                       "%s: offset 0: %s: recovery deletes this newest segment as never synced, "
                       "but a checkpoint covers position %" PRIu64 " (checkpointed data is lost)",
                       s->path, why, sc->ckpt_floor);
            else
                report(sc, SEV_WARN,
                       "%s: offset 0: %s: the newest segment's creation was never synced; "
                       "recovery deletes it",
                       s->path, why);
            free(s->path);
            sc->n_segs--;
            break;
        }
        if (rc) {
            if (sys)
                report(sc, SEV_ERROR, "%s: %s: %s", s->path, why, cy_strerror(sys));
            else
                report(sc, SEV_ERROR,
                       "%s: offset 0: segment header: %s: recovery refuses to "
                       "open the journal",
                       s->path, why);
            continue;
        }
        s->header_ok = true;
        if (s->h.hint_valid && s->h.durable_hint > hint)
            hint = s->h.durable_hint;
        if (!s->h.hint_valid)
            note(sc, "  note: %s: durable hint fails its checksum (ignored, as recovery does)",
                 s->path);
        if (k > 0 && sc->segs[k - 1].header_ok) {
            const struct seg *prev = &sc->segs[k - 1];
            if (s->base < prev->base + JOURNAL_RECORD_HEADER ||
                s->base - prev->base > prev->h.capacity)
                report(sc, SEV_ERROR,
                       "%s: offset 8: base %" PRIu64 " does not follow segment %s (base %" PRIu64
                       ", capacity %" PRIu64 "): recovery refuses to open the journal",
                       s->path, s->base, file_name(prev->path), prev->base, prev->h.capacity);
        }
    }
    if (sc->n_segs) {
        sc->start = sc->segs[0].base;
        if (hint < sc->start)
            hint = sc->start;
        uint64_t last_base = sc->segs[sc->n_segs - 1].base;
        sc->verify_from = hint < last_base ? hint : last_base;
    }
    sc->hint = hint;
}

/* The record being scanned, for the message callback. */
struct rec_ctx {
    struct store_check *sc;
    const struct seg *seg;
    const struct journal_record *rec;
};

/* The scan skips [from, to): offsets there are unknown, do not cascade. */
static void skip_range(struct store_check *sc, uint64_t from, uint64_t to)
{
    sc->gen++;
    if (from >= to)
        return;
    if (sc->n_holes == sc->cap_holes) {
        sc->cap_holes = sc->cap_holes ? sc->cap_holes * 2 : 8;
        sc->holes = realloc(sc->holes, sc->cap_holes * sizeof *sc->holes);
        if (!sc->holes)
            oom();
    }
    sc->holes[sc->n_holes++] = (struct hole){from, to};
}

static bool in_hole(const struct store_check *sc, uint64_t pos)
{
    for (size_t i = 0; i < sc->n_holes; i++)
        if (pos >= sc->holes[i].from && pos < sc->holes[i].to)
            return true;
    return false;
}

static uint64_t file_off(const struct seg *s, uint64_t pos)
{
    return JOURNAL_SEGMENT_HEADER + (pos - s->base);
}

static void add_mismatch(struct part *p, uint64_t offset, const struct index_entry *want,
                         const struct index_entry *have)
{
    if (p->n_mm == p->cap_mm) {
        p->cap_mm = p->cap_mm ? p->cap_mm * 2 : 16;
        p->mm = realloc(p->mm, p->cap_mm * sizeof *p->mm);
        if (!p->mm)
            oom();
    }
    p->mm[p->n_mm++] = (struct mismatch){offset, *want, *have};
}

static int on_message(void *arg, uint64_t part_id, uint64_t offset, const struct msgrec_msg *m)
{
    struct rec_ctx *c = arg;
    struct store_check *sc = c->sc;
    const struct journal_record *rec = c->rec;
    struct part *p = part_get(sc, part_id);
    sc->messages++;
    p->messages++;
    if (!p->in_journal) {
        p->in_journal = true;
        p->jfirst = offset;
        p->jnext = offset + 1;
        p->jfirst_pos = rec->pos;
    } else if (offset != p->jnext) {
        if (p->gen != sc->gen && offset > p->jnext) {
            /* after skipped damage: the gap is that damage, not a new problem */
        } else if (p->offset_errors++ < DETAIL_LIMIT) {
            report(sc, SEV_ERROR,
                   "%s: offset %" PRIu64 ": record at position %" PRIu64 ": partition %016" PRIx64
                   " continues at offset %" PRIu64 " but the previous message was %" PRIu64
                   " (offsets must be dense and increasing)",
                   c->seg->path, file_off(c->seg, rec->pos), rec->pos, part_id, offset,
                   p->jnext - 1);
        } else {
            sc->errors++;
        }
        if (offset + 1 > p->jnext)
            p->jnext = offset + 1;
    } else {
        p->jnext = offset + 1;
    }
    p->gen = sc->gen;
    for (size_t k = 0; k < sc->n_slots; k++)
        if (p->after[k] == NONE && rec->pos >= sc->slots[k]->covered)
            p->after[k] = offset;

    if (p->index_ok && offset >= p->ix_base && offset - p->ix_base < p->ix_count) {
        struct index_entry have, want;
        want.pos = rec->pos + JOURNAL_RECORD_HEADER + m->body_offset;
        want.timestamp_ms = rec->timestamp_ms;
        want.len = m->len;
        want.key_hash = m->key_hash;
        want.msg_crc = m->crc;
        const uint8_t *q = p->ix + INDEX_HEADER_SIZE + (offset - p->ix_base) * INDEX_ENTRY_SIZE;
        if (index_entry_decode(q, &have) == 0 &&
            (have.pos != want.pos || have.len != want.len || have.msg_crc != want.msg_crc ||
             have.timestamp_ms != want.timestamp_ms || have.key_hash != want.key_hash))
            add_mismatch(p, offset, &want, &have);
    }
    return 0;
}

static void check_record(struct store_check *sc, const struct seg *s,
                         const struct journal_record *rec, bool first_in_seg)
{
    sc->records++;
    sc->bytes += rec->next - rec->pos;
    if (!sc->have_last)
        sc->first_pos = rec->pos;
    sc->last_pos = rec->pos;
    sc->have_last = true;
    if (rec->timestamp_ms < sc->last_ts)
        report(sc, SEV_ERROR,
               "%s: offset %" PRIu64 ": record at position %" PRIu64 " has timestamp %" PRIu64
               ", older than the previous record's %" PRIu64 " (timestamps never decrease)",
               s->path, file_off(s, rec->pos), rec->pos, rec->timestamp_ms, sc->last_ts);
    else
        sc->last_ts = rec->timestamp_ms;
    if (first_in_seg && rec->timestamp_ms < s->h.first_timestamp)
        report(sc, SEV_ERROR,
               "%s: offset %" PRIu64 ": first record's timestamp %" PRIu64
               " is older than the segment header's first timestamp %" PRIu64,
               s->path, file_off(s, rec->pos), rec->timestamp_ms, s->h.first_timestamp);
    if (rec->type != JREC_PUBLISH)
        return;
    sc->publishes++;
    /* Validate first, so a malformed body contributes no messages. */
    if (msgrec_decode(rec->body, rec->len, NULL, NULL, NULL, NULL) != 0) {
        report(sc, SEV_ERROR,
               "%s: offset %" PRIu64 ": publish record at position %" PRIu64
               " has a malformed body (%" PRIu32 " bytes: lengths, counts or message checksums)",
               s->path, file_off(s, rec->pos), rec->pos, rec->len);
        skip_range(sc, rec->pos, rec->next); /* its partitions' offsets are unknown */
        return;
    }
    struct rec_ctx c = {sc, s, rec};
    msgrec_decode(rec->body, rec->len, on_message, &c, NULL, NULL);
}

/* Read [64, 64 + n) of segment s into sc->seg_buf; the byte count or < 0. */
static ssize_t read_seg_data(struct store_check *sc, const struct seg *s, uint64_t n)
{
    if (n > SIZE_MAX)
        return CY_ENOMEM;
    if (n > sc->seg_cap) {
        uint8_t *b = realloc(sc->seg_buf, (size_t)n);
        if (!b)
            return CY_ENOMEM;
        sc->seg_buf = b;
        sc->seg_cap = (size_t)n;
    }
    int fd = fo->open(fo->ctx, s->path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    ssize_t got = fo_read_full(fo, fd, sc->seg_buf, (size_t)n, JOURNAL_SEGMENT_HEADER);
    fo->close(fo->ctx, fd);
    return got;
}

/* Number of bytes from buf[from] to the last non-zero byte before buf[to]. */
static uint64_t nonzero_extent(const uint8_t *buf, uint64_t from, uint64_t to)
{
    while (to > from && buf[to - 1] == 0)
        to--;
    return to - from;
}

static void report_dropped_segments(struct store_check *sc, size_t from)
{
    for (size_t k = from; k < sc->n_segs; k++)
        report(sc, SEV_WARN,
               "%s: starts after the torn tail; recovery deletes this segment (%" PRIu64 " bytes)",
               sc->segs[k].path, sc->segs[k].size);
}

/* Walk every record of every segment (journal_file.c recover_tail, but from
 * the first segment on and without stopping at damage before the hint). */
static void scan_journal(struct store_check *sc)
{
    uint64_t pos = sc->start;
    sc->end = sc->start;
    for (size_t i = 0; i < sc->n_segs; i++) {
        struct seg *s = &sc->segs[i];
        bool last = i + 1 == sc->n_segs;
        uint64_t next_base = last ? UINT64_MAX : sc->segs[i + 1].base;
        if (!s->header_ok) {
            skip_range(sc, s->base, next_base);
            continue;
        }
        if (pos != s->base)
            sc->gen++; /* the previous segment was damaged or ended elsewhere (reported) */
        pos = s->base;
        uint64_t limit = last ? s->base + s->h.capacity : next_base;
        if (limit - s->base > s->h.capacity)
            limit = s->base + s->h.capacity; /* chaining error, reported already */
        uint64_t have = s->size > JOURNAL_SEGMENT_HEADER ? s->size - JOURNAL_SEGMENT_HEADER : 0;
        if (have > limit - s->base)
            have = limit - s->base;
        ssize_t got = read_seg_data(sc, s, have);
        if (got < 0) {
            report(sc, SEV_ERROR, "%s: cannot read: %s", s->path, cy_strerror((int)got));
            skip_range(sc, s->base, next_base);
            continue;
        }
        const uint8_t *data = sc->seg_buf;
        uint64_t n = (uint64_t)got;
        const char *why = NULL;
        while (pos - s->base < n) {
            struct journal_record rec;
            uint64_t at = pos - s->base;
            int d = journal_record_decode(data + at, (size_t)(n - at), pos, &rec);
            if (d == 1)
                break;
            if (d) {
                why = d == -EAGAIN ? "cut short" : "damaged (checksum or header check failed)";
                break;
            }
            check_record(sc, s, &rec, s->records == 0);
            s->records++;
            pos = rec.next;
        }
        note(sc,
             "  segment %s: base %" PRIu64 ", capacity %" PRIu64 ", %" PRIu64
             " records, end %" PRIu64 ", hint %s%" PRIu64,
             file_name(s->path), s->base, s->h.capacity, s->records, pos,
             s->h.hint_valid ? "" : "(invalid) ", s->h.durable_hint);
        if (!last && pos == limit && !why)
            continue;
        uint64_t off = file_off(s, pos);
        if (!last || why) {
            const char *what = why ? why : "missing: the segment ends before the next one starts";
            if (pos < sc->hint) {
                report(sc, SEV_ERROR,
                       "%s: offset %" PRIu64 ": record at position %" PRIu64
                       " is %s; it lies before the durable position %" PRIu64
                       ", so it is not a torn tail: %s",
                       s->path, off, pos, what, sc->hint,
                       pos >= sc->verify_from
                           ? "recovery refuses to open the journal"
                           : "synced records are lost (recovery fails if it replays or rebuilds "
                             "from before here)");
                skip_range(sc, pos, next_base);
                sc->end = pos;
                if (!last)
                    continue;
                break;
            }
            uint64_t tail = nonzero_extent(data, pos - s->base, n);
            if (pos < sc->ckpt_floor)
                report(
                    sc, SEV_ERROR,
                    "%s: offset %" PRIu64 ": record at position %" PRIu64
                    " is %s; recovery cuts the journal here as a torn tail (durable hint %" PRIu64
                    "), but a checkpoint covers position %" PRIu64
                    ": checkpointed records are lost",
                    s->path, off, pos, what, sc->hint, sc->ckpt_floor);
            else if (tail)
                report(sc, SEV_WARN,
                       "%s: offset %" PRIu64 ": torn tail: %" PRIu64
                       " bytes after position %" PRIu64
                       " would be cut at recovery (record %s; durable hint %" PRIu64 ")",
                       s->path, off, tail, pos, what, sc->hint);
            else
                report(sc, SEV_WARN,
                       "%s: offset %" PRIu64 ": torn tail: the segment ends at position %" PRIu64
                       " before the next segment's base %" PRIu64
                       "; recovery cuts there (durable hint %" PRIu64 ")",
                       s->path, off, pos, limit, sc->hint);
            report_dropped_segments(sc, i + 1);
            sc->end = pos;
            return;
        }
        /* The last segment, ending cleanly at pos. */
        sc->end = pos;
        if (pos < sc->hint)
            report(sc, SEV_ERROR,
                   "%s: offset %" PRIu64 ": the journal ends at position %" PRIu64
                   " but a segment header says %" PRIu64
                   " was durable: synced records are missing (recovery does not notice)",
                   s->path, off, pos, sc->hint);
        if (pos - s->base + JOURNAL_RECORD_HEADER < n) {
            uint64_t from = pos - s->base + JOURNAL_RECORD_HEADER;
            uint64_t stray = nonzero_extent(data, from, n);
            if (stray) {
                uint64_t first = from;
                while (!data[first])
                    first++;
                report(sc, SEV_WARN,
                       "%s: offset %" PRIu64
                       ": non-zero bytes after the end of data (position %" PRIu64
                       "), up to %" PRIu64 " bytes: recovery ignores them",
                       s->path, JOURNAL_SEGMENT_HEADER + first, pos, stray);
            }
        }
    }
}

/* ---- pass 4: cross-checks ---------------------------------------------------------- */

static uint64_t triple(const struct snap *s, uint32_t k, int field)
{
    return le_get64(s->store_parts + 24 * (size_t)k + 8 * (size_t)field);
}

static void check_snapshot_positions(struct store_check *sc)
{
    for (size_t i = 0; i < sc->n_snaps; i++) {
        struct snap *s = &sc->snaps[i];
        if (!s->valid)
            continue;
        if (s->covered > sc->end)
            report(sc, SEV_ERROR,
                   "%s: offset 8: covers position %" PRIu64 " but the journal ends at %" PRIu64
                   ": checkpointed data is missing from the journal",
                   s->path, s->covered, sc->end);
        else if (s->covered < sc->start)
            report(sc, SEV_ERROR,
                   "%s: offset 8: covers position %" PRIu64 " but the journal starts at %" PRIu64
                   ": segments it needs were deleted",
                   s->path, s->covered, sc->start);
        else if (!sc->in_force)
            sc->in_force = s;
    }
    if (!sc->in_force && sc->start != 0)
        report(sc, SEV_ERROR,
               "%s: the journal starts at position %" PRIu64
               " but no valid checkpoint covers what came before: recovery refuses to open it",
               sc->dir, sc->start);
}

/* Each valid snapshot's partition high waters against the journal. */
static void check_snapshot_parts(struct store_check *sc)
{
    for (size_t k = 0; k < sc->n_slots; k++) {
        const struct snap *s = sc->slots[k];
        if (!s->store_ok || s->covered > sc->end || s->covered < sc->start)
            continue; /* reported by check_snapshot_positions */
        unsigned shown = 0;
        for (uint32_t t = 0; t < s->store_count; t++) {
            uint64_t id = triple(s, t, 0), next = triple(s, t, 2);
            struct part *p = part_find(sc, id);
            if (!p || !p->in_journal)
                continue;
            uint64_t cont = p->after[k] != NONE ? p->after[k] : p->jnext;
            if (cont == next)
                continue;
            if (shown++ < DETAIL_LIMIT)
                report(sc, SEV_ERROR,
                       "%s: offset %" PRIu64 ": partition %016" PRIx64 ": next offset %" PRIu64
                       " at position %" PRIu64 ", but the journal %s offset %" PRIu64,
                       s->path, (uint64_t)(s->store_parts - s->raw) + 24 * (uint64_t)t, id, next,
                       s->covered, p->after[k] != NONE ? "continues at" : "ends at", cont);
            else
                sc->errors++;
        }
        /* Every partition written before the checkpoint must be in it. */
        size_t np;
        struct part **v = parts_sorted(sc, &np);
        for (size_t i = 0; i < np; i++) {
            struct part *p = v[i];
            if (!p->in_journal || p->jfirst_pos >= s->covered)
                continue;
            bool found = false;
            for (uint32_t t = 0; t < s->store_count && !found; t++)
                found = triple(s, t, 0) == p->id;
            if (!found)
                report(sc, SEV_ERROR,
                       "%s: partition %016" PRIx64 " has messages before position %" PRIu64
                       " but the checkpoint does not list it",
                       s->path, p->id, s->covered);
        }
        free(v);
    }
    const struct snap *f = sc->in_force;
    if (f && f->store_ok)
        for (uint32_t t = 0; t < f->store_count; t++) {
            struct part *p = part_get(sc, triple(f, t, 0));
            p->in_ckpt = true;
            p->ckpt_base = triple(f, t, 1);
            p->ckpt_next = triple(f, t, 2);
        }
}

/* One index file's entries, now that the journal and the checkpoint are known. */
static void check_index_entries(struct store_check *sc, struct part *p)
{
    uint64_t hw = p->in_ckpt ? p->ckpt_next : 0;
    uint64_t shown_err = 0, shown_warn = 0, more_err = 0, more_warn = 0;
#define FLAG(sev, ...)                                                   \
    do {                                                                 \
        uint64_t *shown = (sev) == SEV_ERROR ? &shown_err : &shown_warn; \
        if ((*shown)++ < DETAIL_LIMIT)                                   \
            report(sc, (sev), __VA_ARGS__);                              \
        else if ((sev) == SEV_ERROR)                                     \
            more_err++, sc->errors++;                                    \
        else                                                             \
            more_warn++, sc->warnings++;                                 \
    } while (0)

    uint64_t last_pos = 0, last_ts = 0, retained = 0, unread = 0, stale = 0, stale_first = 0;
    bool have_last = false;
    for (uint64_t i = 0; i < p->ix_count; i++) {
        uint64_t o = p->ix_base + i;
        uint64_t off = INDEX_HEADER_SIZE + i * INDEX_ENTRY_SIZE;
        enum severity sev = o < hw ? SEV_ERROR : SEV_WARN;
        /* index.c load() keeps the longest valid prefix: a bad entry is where
         * the index is cut; below the high water that forces a rebuild. */
        const char *fate =
            o < hw ? "a checkpoint synced it; recovery cuts the index here and rebuilds it"
                   : "never synced; recovery cuts the index here and re-indexes from the journal";
        struct index_entry e;
        if (index_entry_decode(p->ix + off, &e)) {
            FLAG(sev,
                 "%s: offset %" PRIu64 ": entry for offset %" PRIu64 " fails its checksum (%s)",
                 p->ix_path, off, o, fate);
            continue;
        }
        if (have_last && (e.pos < last_pos || e.timestamp_ms < last_ts))
            FLAG(sev,
                 "%s: offset %" PRIu64 ": entry for offset %" PRIu64
                 " goes back in position or time (%s)",
                 p->ix_path, off, o, fate);
        have_last = true;
        last_pos = e.pos;
        last_ts = e.timestamp_ms;
        if (p->in_journal && o >= p->jfirst && o < p->jnext)
            continue; /* compared during the scan */
        if (e.pos < sc->start) {
            retained++; /* its segment was deleted by retention */
            continue;
        }
        if (in_hole(sc, e.pos)) {
            unread++; /* in journal damage reported already */
            continue;
        }
        uint64_t known = p->in_journal && p->jnext > hw ? p->jnext : hw;
        if (o >= known) {
            if (!stale++)
                stale_first = o;
            continue;
        }
        FLAG(SEV_ERROR,
             "%s: offset %" PRIu64 ": entry for offset %" PRIu64
             " points at journal position %" PRIu64 " but the journal holds no such message",
             p->ix_path, off, o, e.pos);
    }
    for (size_t i = 0; i < p->n_mm; i++) {
        const struct mismatch *m = &p->mm[i];
        uint64_t off = INDEX_HEADER_SIZE + (m->offset - p->ix_base) * INDEX_ENTRY_SIZE;
        enum severity sev = m->offset < hw ? SEV_ERROR : SEV_WARN;
        FLAG(sev,
             "%s: offset %" PRIu64 ": entry for offset %" PRIu64
             " disagrees with the journal (position %" PRIu64 "/%" PRIu64 ", length %" PRIu32
             "/%" PRIu32 ", crc %08" PRIx32 "/%08" PRIx32 ", time %" PRIu64 "/%" PRIu64
             ", key hash %08" PRIx32 "/%08" PRIx32 " in index/journal)%s",
             p->ix_path, off, m->offset, m->have.pos, m->want.pos, m->have.len, m->want.len,
             m->have.msg_crc, m->want.msg_crc, m->have.timestamp_ms, m->want.timestamp_ms,
             m->have.key_hash, m->want.key_hash,
             sev == SEV_ERROR ? ": a checkpoint synced it (recovery trusts synced entries)"
                              : ": recovery replaces it");
    }
    if (stale)
        report(sc, SEV_WARN,
               "%s: %" PRIu64 " entries from offset %" PRIu64
               " on are past the journal: stale (would be cut at recovery)",
               p->ix_path, stale, stale_first);
    if (unread)
        note(sc, "  note: %s: %" PRIu64 " entries point into damaged journal ranges (not checked)",
             p->ix_path, unread);
    if (retained)
        note(sc, "  note: %s: %" PRIu64 " entries point before the journal start (retention)",
             p->ix_path, retained);
    if (more_err)
        printf("error: %s: %" PRIu64 " more errors like the above not shown\n", p->ix_path,
               more_err);
    if (more_warn && !sc->opt->quiet)
        printf("warning: %s: %" PRIu64 " more warnings like the above not shown\n", p->ix_path,
               more_warn);
#undef FLAG
    uint64_t partial = (p->ix_len - INDEX_HEADER_SIZE) % INDEX_ENTRY_SIZE;
    if (partial)
        report(sc, SEV_WARN,
               "%s: offset %" PRIu64 ": %" PRIu64
               " bytes of an incomplete entry at the end (would be cut at recovery)",
               p->ix_path, INDEX_HEADER_SIZE + p->ix_count * INDEX_ENTRY_SIZE, partial);
}

static void check_indexes(struct store_check *sc)
{
    size_t np;
    struct part **v = parts_sorted(sc, &np);
    for (size_t i = 0; i < np; i++) {
        struct part *p = v[i];
        if (p->index_ok) {
            sc->index_entries += p->ix_count;
            check_index_entries(sc, p);
            uint64_t ix_next = p->ix_base + p->ix_count;
            if (!p->in_journal && !p->in_ckpt)
                report(sc, SEV_WARN,
                       "%s: no checkpoint or journal record knows partition %016" PRIx64
                       ": recovery removes this index",
                       p->ix_path, p->id);
            else if (p->in_ckpt && (ix_next < p->ckpt_next || p->ix_base > p->ckpt_base))
                report(sc, SEV_WARN,
                       "%s: holds offsets [%" PRIu64 ", %" PRIu64
                       ") but the checkpoint says [%" PRIu64 ", %" PRIu64
                       "): recovery rebuilds it from the journal",
                       p->ix_path, p->ix_base, ix_next, p->ckpt_base, p->ckpt_next);
            else if (p->in_journal && ix_next < p->jnext)
                note(sc,
                     "  note: %s: offsets [%" PRIu64 ", %" PRIu64
                     ") are not indexed yet; recovery indexes them from the journal",
                     p->ix_path, ix_next > p->jfirst ? ix_next : p->jfirst, p->jnext);
        } else if (p->header_bad) {
            bool synced = p->in_ckpt && p->ckpt_next > p->ckpt_base;
            report(sc, synced ? SEV_ERROR : SEV_WARN,
                   "%s: offset %" PRIu64 ": %s: %s; recovery discards the index and rebuilds it "
                   "from the journal",
                   p->ix_path, p->header_bad_off, p->header_bad,
                   synced ? "a checkpoint synced this file" : "never synced by a checkpoint");
        } else if (!p->index_file && p->in_ckpt && p->ckpt_next > p->ckpt_base) {
            report(sc, SEV_WARN,
                   "%s: no index for partition %016" PRIx64 " (checkpoint: offsets [%" PRIu64
                   ", %" PRIu64 ")): recovery rebuilds it from the journal",
                   sc->idir, p->id, p->ckpt_base, p->ckpt_next);
        }
    }
    free(v);
}

/* ---- one store -------------------------------------------------------------------- */

static void print_summary(struct store_check *sc)
{
    uint64_t partitions = 0;
    size_t np;
    struct part **v = parts_sorted(sc, &np);
    for (size_t i = 0; i < np; i++)
        partitions += v[i]->in_journal;
    say(sc,
        "  journal: %zu segments, %" PRIu64 " records, %" PRIu64 " bytes, positions [%" PRIu64
        ", %" PRIu64 ")",
        sc->n_segs, sc->records, sc->bytes, sc->start, sc->end);
    if (sc->have_last)
        say(sc, "  records: first at %" PRIu64 ", last at %" PRIu64 ", durable hint %" PRIu64,
            sc->first_pos, sc->last_pos, sc->hint);
    else
        say(sc, "  records: none, durable hint %" PRIu64, sc->hint);
    say(sc, "  publishes: %" PRIu64 " records, %" PRIu64 " messages, %" PRIu64 " partitions",
        sc->publishes, sc->messages, partitions);
    for (size_t i = 0; i < np; i++) {
        const struct part *p = v[i];
        char jr[64] = "none", ir[64] = "none", cr[64] = "none";
        if (p->in_journal)
            snprintf(jr, sizeof jr, "[%" PRIu64 ", %" PRIu64 ")", p->jfirst, p->jnext);
        if (p->index_ok)
            snprintf(ir, sizeof ir, "[%" PRIu64 ", %" PRIu64 ")", p->ix_base,
                     p->ix_base + p->ix_count);
        if (p->in_ckpt)
            snprintf(cr, sizeof cr, "[%" PRIu64 ", %" PRIu64 ")", p->ckpt_base, p->ckpt_next);
        note(sc,
             "  partition %016" PRIx64 ": journal offsets %s (%" PRIu64
             " messages), index %s, checkpoint %s",
             p->id, jr, p->messages, ir, cr);
    }
    free(v);
    say(sc, "  indexes: %" PRIu64 " files, %" PRIu64 " entries", sc->index_files,
        sc->index_entries);
    if (!sc->n_snaps) {
        say(sc, "  snapshots: none");
    } else {
        char line[512];
        size_t len = 0;
        for (size_t i = sc->n_snaps; i-- > 0 && len < sizeof line - 40;) {
            const struct snap *s = &sc->snaps[i];
            len += (size_t)snprintf(line + len, sizeof line - len, "%s%" PRIu64 "%s",
                                    len ? ", " : "", s->name_pos, s->valid ? "" : " (damaged)");
        }
        char force[48] = "none";
        if (sc->in_force)
            snprintf(force, sizeof force, "%" PRIu64, sc->in_force->covered);
        say(sc, "  snapshots: %zu, covering %s; in force: %s", sc->n_snaps, line, force);
        for (size_t i = 0; i < sc->n_snaps; i++) {
            const struct snap *s = &sc->snaps[i];
            if (s->valid)
                note(sc,
                     "  snapshot %s: covers %" PRIu64 ", created %" PRIu64 " ms, %zu sections, "
                     "%" PRIu32 " partitions",
                     file_name(s->path), s->covered, s->created_ms, s->n_sections,
                     s->store_ok ? s->store_count : 0);
        }
    }
    say(sc, "  result: %s (errors: %" PRIu64 ", warnings: %" PRIu64 ")",
        sc->errors ? "DAMAGED" : "ok", sc->errors, sc->warnings);
}

static void store_check_free(struct store_check *sc)
{
    size_t it = 0;
    const void *k;
    size_t kl;
    void *v;
    while (hmap_next(sc->parts, &it, &k, &kl, &v)) {
        struct part *p = v;
        free(p->after);
        free(p->ix_path);
        free(p->ix);
        free(p->mm);
        free(p);
    }
    hmap_free(sc->parts);
    for (size_t i = 0; i < sc->n_snaps; i++) {
        free(sc->snaps[i].path);
        free(sc->snaps[i].raw);
    }
    free(sc->snaps);
    free(sc->slots);
    for (size_t i = 0; i < sc->n_segs; i++)
        free(sc->segs[i].path);
    free(sc->segs);
    free(sc->seg_buf);
    free(sc->holes);
    free(sc->jdir);
    free(sc->idir);
    free(sc->sdir);
}

/* Check one store; adds its counts to *errors and *warnings. */
static void check_store(const struct options *opt, const char *dir, uint64_t *errors,
                        uint64_t *warnings)
{
    struct store_check sc = {.opt = opt, .dir = dir};
    sc.jdir = path_join(dir, "journal");
    sc.idir = path_join(dir, "index");
    sc.sdir = path_join(dir, "snap");
    sc.parts = hmap_new();
    if (!sc.parts)
        oom();
    say(&sc, "store %s", dir);
    load_snapshots(&sc);
    load_indexes(&sc);
    check_seg_headers(&sc);
    scan_journal(&sc);
    check_snapshot_positions(&sc);
    check_snapshot_parts(&sc);
    check_indexes(&sc);
    print_summary(&sc);
    *errors += sc.errors;
    *warnings += sc.warnings;
    store_check_free(&sc);
}

/* ---- finding stores ----------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every directory under dir (itself included) that has a journal/ subdirectory.
 * Symbolic links are not followed below the top, and a store's own
 * subdirectories are not searched. */
static void find_stores(const char *dir, int depth, struct names *out)
{
    char *j = path_join(dir, "journal");
    bool store = is_dir(j);
    free(j);
    if (store) {
        if (collect(out, dir))
            oom();
        return;
    }
    if (depth >= MAX_DEPTH)
        return;
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "coyote-check: %s: cannot list: %s\n", dir, strerror(errno));
        return;
    }
    struct names sub = {0};
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *p = path_join(dir, de->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && collect(&sub, p))
            oom();
        free(p);
    }
    closedir(d);
    if (sub.n > 1)
        qsort(sub.v, sub.n, sizeof *sub.v, cmp_str);
    for (size_t i = 0; i < sub.n; i++)
        find_stores(sub.v[i], depth + 1, out);
    names_free(&sub);
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: coyote-check [--quiet | --verbose] DIR\n"
               "\n"
               "Verify a Coyote data directory without modifying it (it opens every file\n"
               "read-only and does not take the LOCK; on a directory in use, the newest\n"
               "records may show as a torn tail).\n"
               "\n"
               "DIR is a store directory (one that has journal/) or any directory holding\n"
               "store directories at any depth; every store found is checked.\n"
               "\n"
               "What is verified, per store:\n"
               "  journal/   every segment header (magic, version, checksum, base = file\n"
               "             name, capacity), the chaining of segments (each one starts where\n"
               "             the previous one's records end), every record's header and\n"
               "             checksum in order, timestamps never decreasing, every publish\n"
               "             body, and that each partition's offsets are dense and increasing.\n"
               "             A bad record after the durable hint is the torn tail recovery\n"
               "             would cut (a warning); before it, it is damage.\n"
               "  index/     every header; every entry's checksum and order; entries for\n"
               "             offsets the journal holds must match it (position, length,\n"
               "             checksum, time, key hash). Entries past the journal are stale\n"
               "             (warning). A problem below the checkpoint's high water is damage\n"
               "             (recovery trusts those entries); above it, a warning (recovery\n"
               "             re-indexes from the journal).\n"
               "  snap/      every snapshot decodes, is named for the position it covers,\n"
               "             covers a position inside the journal [start, end], and its\n"
               "             partition high waters agree with where the journal continues.\n"
               "\n"
               "Output: problems as they are found, each naming the file and the byte\n"
               "offset in it (\"error: FILE: offset N: reason\" or \"warning: ...\"), then a\n"
               "summary per store: segments, records, bytes, positions, durable hint,\n"
               "publishes, messages, partitions, indexes, snapshots and the positions they\n"
               "cover, and the result.\n"
               "\n"
               "Options:\n"
               "  -q, --quiet     print errors only (no summaries, no warnings)\n"
               "  -v, --verbose   also print each segment, partition (offset ranges of the\n"
               "                  journal, the index and the checkpoint) and snapshot\n"
               "  -h, --help      this text\n"
               "\n"
               "Exit status: 0 no damage (warnings allowed), 1 damage found (or no store\n"
               "under DIR), 2 usage error (bad option, DIR missing or not a directory).\n");
}

int main(int argc, char **argv)
{
    struct options opt = {0};
    static const struct option longopts[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "qvh", longopts, NULL)) != -1) {
        switch (c) {
        case 'q': opt.quiet = true; break;
        case 'v': opt.verbose = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind + 1 != argc || (opt.quiet && opt.verbose)) {
        if (opt.quiet && opt.verbose)
            fprintf(stderr, "coyote-check: --quiet and --verbose exclude each other\n");
        usage(stderr);
        return 2;
    }
    const char *dir = argv[optind];
    struct stat st;
    if (stat(dir, &st) != 0) {
        fprintf(stderr, "coyote-check: %s: %s\n", dir, strerror(errno));
        return 2;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "coyote-check: %s: not a directory\n", dir);
        return 2;
    }

    struct names stores = {0};
    find_stores(dir, 0, &stores);
    if (!stores.n) {
        fprintf(stderr,
                "coyote-check: %s: no store found (no directory with a journal/ "
                "subdirectory)\n",
                dir);
        return 1;
    }
    uint64_t errors = 0, warnings = 0;
    for (size_t i = 0; i < stores.n; i++) {
        check_store(&opt, stores.v[i], &errors, &warnings);
        fflush(stdout);
    }
    if (!opt.quiet && stores.n > 1)
        printf("checked %zu stores (errors: %" PRIu64 ", warnings: %" PRIu64 ")\n", stores.n,
               errors, warnings);
    names_free(&stores);
    return errors ? 1 : 0;
}
