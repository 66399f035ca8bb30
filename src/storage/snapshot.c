/*
 * snapshot.c — checkpoint files: encode/decode, atomic write, retention,
 * loading the newest valid one (DESIGN.md §2, API in snapshot.h).
 *
 * File format, version 1 (all integers little-endian, written field by field):
 *
 *   header, 48 bytes
 *     0  magic       u32  0x4E535943 ("CYSN")
 *     4  version     u16  1
 *     6  header_size u16  48
 *     8  covered_pos u64
 *    16  created_ms  u64
 *    24  n_sections  u32  (<= SNAPSHOT_MAX_SECTIONS)
 *    28  reserved    16 zero bytes
 *    44  header_crc  u32  CRC-32C of bytes 0..43
 *   n_sections times
 *        tag u32, len u64, bytes[len], crc u32 = CRC-32C of tag+len+bytes
 *   trailer, 8 bytes
 *        magic u32 0x444E4559 ("YEND"), crc u32 = CRC-32C of every byte before
 *        the trailer
 *   end of file (a byte after the trailer makes the file corrupt)
 *
 * Invariants:
 *   1. A file named NNNNNNNNNNNNNNNNNNNN.snap (20 decimal digits = covered_pos)
 *      was complete and datasynced before it got that name: it is only ever
 *      created by renaming a synced "<name>.tmp".
 *   2. snapshot_decode never reads outside [data, data+len), whatever the
 *      bytes: every length is checked against the bytes remaining before it
 *      is used, with no arithmetic that can overflow.
 *   3. After a successful snapshot_write the directory holds the new snapshot
 *      and at most one older one (the newest below it); snapshots naming a
 *      position beyond the new one are from a journal future that was lost and
 *      are deleted too.
 *
 * File lifecycle:
 *
 *   (none) --open O_CREAT|O_TRUNC--> N.snap.tmp --write, datasync, rename-->
 *   N.snap --(two newer written)--> unlinked
 *   N.snap.tmp left by a crash or failure --next successful write--> unlinked
 */
#include "storage/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "base/log.h"
#include "coyote.h"

#define SNAP_MAGIC 0x4E535943u   /* "CYSN" */
#define SNAP_END_MAGIC 0x444E4559u /* "YEND" */
#define SNAP_VERSION 1
#define SNAP_HEADER_SIZE 48
#define SNAP_HEADER_CRC_OFF 44
#define SNAP_SECTION_PREFIX 12 /* tag u32 + len u64 */
#define SNAP_TRAILER_SIZE 8

#define SNAP_DIGITS 20
#define SNAP_SUFFIX ".snap"
#define SNAP_TMP_SUFFIX ".snap.tmp"
#define SNAP_NAME_MAX 32 /* 20 digits + ".snap.tmp" + NUL fits */

/* Largest snapshot file snapshot_load_newest reads into memory. */
#if SIZE_MAX > 0xFFFFFFFFu
#define SNAP_MAX_FILE ((size_t)4 << 30)
#else
#define SNAP_MAX_FILE ((size_t)SIZE_MAX)
#endif

static const struct fileops *fo_or_default(const struct fileops *fo)
{
    return fo ? fo : &fileops_posix;
}

/* ---- decoding --------------------------------------------------------------- */

int snapshot_decode(const uint8_t *data, size_t len, struct snapshot *out)
{
    memset(out, 0, sizeof *out);
    if (!data && len)
        return CY_EINVAL;

    /* Magic and version first, so a foreign file reads as "not ours" rather
     * than "damaged"; a file too short to tell is a torn one. */
    if (len < 4)
        return CY_ECORRUPT;
    if (le_get32(data) != SNAP_MAGIC)
        return CY_EFORMAT;
    if (len < 6)
        return CY_ECORRUPT;
    if (le_get16(data + 4) != SNAP_VERSION)
        return CY_EFORMAT;
    if (len < SNAP_HEADER_SIZE)
        return CY_ECORRUPT;
    if (crc32c(0, data, SNAP_HEADER_CRC_OFF) != le_get32(data + SNAP_HEADER_CRC_OFF))
        return CY_ECORRUPT;
    if (le_get16(data + 6) != SNAP_HEADER_SIZE)
        return CY_ECORRUPT;

    uint64_t covered_pos = le_get64(data + 8);
    uint64_t created_ms = le_get64(data + 16);
    uint32_t n_sections = le_get32(data + 24);
    if (n_sections > SNAPSHOT_MAX_SECTIONS)
        return CY_ECORRUPT;

    struct reader r;
    reader_init(&r, data, len);
    rd_bytes(&r, SNAP_HEADER_SIZE);
    for (uint32_t i = 0; i < n_sections; i++) {
        const uint8_t *prefix = rd_bytes(&r, SNAP_SECTION_PREFIX);
        if (!prefix)
            return CY_ECORRUPT;
        uint32_t tag = le_get32(prefix);
        uint64_t slen = le_get64(prefix + 4);
        /* Compare in u64 against what is left before converting to size_t:
         * on a 32-bit build slen may not fit. The section CRC must follow. */
        uint64_t left = reader_left(&r);
        if (left < 4 || slen > left - 4)
            return CY_ECORRUPT;
        const uint8_t *bytes = rd_bytes(&r, (size_t)slen);
        const uint8_t *crcp = rd_bytes(&r, 4);
        if (!bytes || !crcp)
            return CY_ECORRUPT;
        uint32_t crc = crc32c(0, prefix, SNAP_SECTION_PREFIX);
        crc = crc32c(crc, bytes, (size_t)slen);
        if (crc != le_get32(crcp))
            return CY_ECORRUPT;
        out->sections[i].tag = tag;
        out->sections[i].data = bytes;
        out->sections[i].len = slen;
    }

    size_t body_len = r.pos;
    const uint8_t *trailer = rd_bytes(&r, SNAP_TRAILER_SIZE);
    if (!trailer || reader_left(&r) != 0)
        return CY_ECORRUPT;
    if (le_get32(trailer) != SNAP_END_MAGIC)
        return CY_ECORRUPT;
    if (crc32c(0, data, body_len) != le_get32(trailer + 4))
        return CY_ECORRUPT;

    out->covered_pos = covered_pos;
    out->created_ms = created_ms;
    out->n_sections = n_sections;
    return 0;
}

/* ---- names ------------------------------------------------------------------ */

static void format_name(char *name, uint64_t pos, const char *suffix)
{
    snprintf(name, SNAP_NAME_MAX, "%020" PRIu64 "%s", pos, suffix);
}

/* "<dir>/<name>" into path[cap]; 0 or -ENAMETOOLONG. */
static int join_path(char *path, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(path, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* ---- directory scan --------------------------------------------------------- */

/* The snapshot and temp files of a directory, by position. */
struct scan {
    uint64_t *snaps;
    size_t n_snaps, cap_snaps;
    uint64_t *tmps;
    size_t n_tmps, cap_tmps;
};

static int push_pos(uint64_t **arr, size_t *n, size_t *cap, uint64_t pos)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        uint64_t *p = realloc(*arr, ncap * sizeof *p);
        if (!p)
            return CY_ENOMEM;
        *arr = p;
        *cap = ncap;
    }
    (*arr)[(*n)++] = pos;
    return 0;
}

static int scan_entry(void *arg, const char *name)
{
    struct scan *s = arg;
    uint64_t pos;
    if (fo_parse_name(name, SNAP_DIGITS, 10, SNAP_SUFFIX, &pos))
        return push_pos(&s->snaps, &s->n_snaps, &s->cap_snaps, pos);
    if (fo_parse_name(name, SNAP_DIGITS, 10, SNAP_TMP_SUFFIX, &pos))
        return push_pos(&s->tmps, &s->n_tmps, &s->cap_tmps, pos);
    return 0;
}

static void scan_free(struct scan *s)
{
    free(s->snaps);
    free(s->tmps);
    memset(s, 0, sizeof *s);
}

static int cmp_pos_asc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_pos_desc(const void *a, const void *b) { return cmp_pos_asc(b, a); }

static void sort_pos(uint64_t *pos, size_t n, int (*cmp)(const void *, const void *))
{
    if (n > 1) /* qsort's base must not be NULL, even for no elements */
        qsort(pos, n, sizeof *pos, cmp);
}

/* List dir into *s. 0, -ENOENT (no directory), CY_ENOMEM or -errno. */
static int scan_dir(const struct fileops *fo, const char *dir, struct scan *s)
{
    memset(s, 0, sizeof *s);
    int rc = fo->list_dir(fo->ctx, dir, scan_entry, s);
    if (rc < 0)
        scan_free(s);
    return rc;
}

/* ---- writing ---------------------------------------------------------------- */

/* Appends to a file at a moving offset while keeping the CRC of all bytes
 * written so far (the trailer's checksum). */
struct snap_out {
    const struct fileops *fo;
    int fd;
    uint64_t off;
    uint32_t crc;
};

static int out_put(struct snap_out *o, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = fo_write_all(o->fo, o->fd, p, n, o->off);
    if (rc < 0)
        return rc;
    o->off += n;
    o->crc = crc32c(o->crc, p, n);
    return 0;
}

/* Stream the whole file: header, sections (straight from the caller's
 * memory, no copy of a possibly large state), trailer. */
static int write_body(struct snap_out *o, uint64_t covered_pos, uint64_t created_ms,
                      const struct snapshot_section *sections, size_t n)
{
    uint8_t hdr[SNAP_HEADER_SIZE] = {0};
    le_put32(hdr, SNAP_MAGIC);
    le_put16(hdr + 4, SNAP_VERSION);
    le_put16(hdr + 6, SNAP_HEADER_SIZE);
    le_put64(hdr + 8, covered_pos);
    le_put64(hdr + 16, created_ms);
    le_put32(hdr + 24, (uint32_t)n);
    le_put32(hdr + SNAP_HEADER_CRC_OFF, crc32c(0, hdr, SNAP_HEADER_CRC_OFF));
    int rc = out_put(o, hdr, sizeof hdr);

    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct snapshot_section *s = &sections[i];
        uint8_t prefix[SNAP_SECTION_PREFIX], crcb[4];
        le_put32(prefix, s->tag);
        le_put64(prefix + 4, s->len);
        uint32_t crc = crc32c(0, prefix, sizeof prefix);
        crc = crc32c(crc, s->data, (size_t)s->len);
        le_put32(crcb, crc);
        rc = out_put(o, prefix, sizeof prefix);
        if (rc == 0)
            rc = out_put(o, s->data, (size_t)s->len);
        if (rc == 0)
            rc = out_put(o, crcb, sizeof crcb);
    }
    if (rc == 0) {
        uint8_t trailer[SNAP_TRAILER_SIZE];
        le_put32(trailer, SNAP_END_MAGIC);
        le_put32(trailer + 4, o->crc);
        rc = out_put(o, trailer, sizeof trailer);
    }
    return rc;
}

static int try_unlink(const struct fileops *fo, const char *dir, uint64_t pos, const char *suffix)
{
    char name[SNAP_NAME_MAX], path[4096];
    format_name(name, pos, suffix);
    int rc = join_path(path, sizeof path, dir, name);
    if (rc == 0)
        rc = fo->unlink(fo->ctx, path);
    if (rc < 0 && rc != -ENOENT) {
        log_warn("snapshot: cannot remove %s/%s: %s", dir, name, cy_strerror(rc));
        return rc;
    }
    return 0;
}

/* After `kept` was written: delete leftover temp files, every snapshot but
 * `kept` and one fallback below it — `prev` when it is there (a snapshot the
 * caller knows is valid), else the newest one below (see invariant 3) — then
 * sync the directory. Failures are logged, not returned: the new snapshot is
 * durable and in force already; a file left behind is deleted by the next
 * write. */
static void retain(const struct fileops *fo, const char *dir, uint64_t kept, uint64_t prev)
{
    struct scan s;
    int rc = scan_dir(fo, dir, &s);
    if (rc < 0) {
        log_warn("snapshot: cannot list %s for retention: %s", dir, cy_strerror(rc));
        return;
    }
    int removed = 0;
    for (size_t i = 0; i < s.n_tmps; i++) {
        try_unlink(fo, dir, s.tmps[i], SNAP_TMP_SUFFIX);
        removed = 1;
    }
    sort_pos(s.snaps, s.n_snaps, cmp_pos_desc);
    bool prev_there = false;
    for (size_t i = 0; i < s.n_snaps; i++)
        prev_there |= prev < kept && s.snaps[i] == prev;
    int older_kept = 0;
    for (size_t i = 0; i < s.n_snaps; i++) {
        uint64_t pos = s.snaps[i];
        if (pos == kept)
            continue;
        if (prev_there ? pos == prev : (pos < kept && !older_kept)) {
            older_kept = 1; /* the fallback when `kept` turns out damaged */
            continue;
        }
        try_unlink(fo, dir, pos, SNAP_SUFFIX);
        removed = 1;
    }
    scan_free(&s);
    if (removed) {
        rc = fo->sync_dir(fo->ctx, dir);
        if (rc < 0)
            log_warn("snapshot: cannot sync %s after retention: %s", dir, cy_strerror(rc));
    }
}

int snapshot_write(const struct fileops *fo, const char *dir, uint64_t covered_pos,
                   uint64_t created_ms, const struct snapshot_section *sections, size_t n)
{
    return snapshot_write_keep(fo, dir, covered_pos, created_ms, sections, n, UINT64_MAX);
}

int snapshot_write_keep(const struct fileops *fo, const char *dir, uint64_t covered_pos,
                        uint64_t created_ms, const struct snapshot_section *sections, size_t n,
                        uint64_t prev_valid)
{
    fo = fo_or_default(fo);
    if (!dir || n > SNAPSHOT_MAX_SECTIONS || (n && !sections))
        return CY_EINVAL;
    for (size_t i = 0; i < n; i++) {
#if SIZE_MAX < UINT64_MAX
        if (sections[i].len > SIZE_MAX)
            return CY_EINVAL;
#endif
        if (sections[i].len && !sections[i].data)
            return CY_EINVAL;
    }

    char name[SNAP_NAME_MAX], tmp_name[SNAP_NAME_MAX];
    char path[4096], tmp_path[4096];
    format_name(name, covered_pos, SNAP_SUFFIX);
    format_name(tmp_name, covered_pos, SNAP_TMP_SUFFIX);
    int rc = join_path(path, sizeof path, dir, name);
    if (rc == 0)
        rc = join_path(tmp_path, sizeof tmp_path, dir, tmp_name);
    if (rc < 0)
        return rc;

    int fd = fo->open(fo->ctx, tmp_path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0)
        return fd;
    struct snap_out o = {fo, fd, 0, 0};
    rc = write_body(&o, covered_pos, created_ms, sections, n);
    if (rc == 0)
        rc = fo->datasync(fo->ctx, fd);
    int close_rc = fo->close(fo->ctx, fd);
    if (rc == 0)
        rc = close_rc;
    if (rc == 0)
        rc = fo->rename(fo->ctx, tmp_path, path);
    if (rc < 0)
        goto fail;

    /* The rename is durable only with the directory. If this sync fails the
     * new file stays: it is complete and synced, so loading it later is
     * correct; the caller just must not rely on it (nothing was deleted). */
    rc = fo->sync_dir(fo->ctx, dir);
    if (rc < 0)
        return rc;

    retain(fo, dir, covered_pos, prev_valid);
    return 0;

fail:
    fo->unlink(fo->ctx, tmp_path);
    return rc;
}

/* ---- loading ---------------------------------------------------------------- */

int snapshot_load_newest(const struct fileops *fo, const char *dir, uint64_t max_pos,
                         struct snapshot *out)
{
    fo = fo_or_default(fo);
    memset(out, 0, sizeof *out);

    struct scan s;
    int rc = scan_dir(fo, dir, &s);
    if (rc == -ENOENT)
        return CY_ENOTFOUND;
    if (rc < 0)
        return rc;
    sort_pos(s.snaps, s.n_snaps, cmp_pos_desc);

    /* A file that cannot be read (as opposed to one that reads as damaged)
     * is skipped too, but if nothing valid is found its error is returned
     * rather than CY_ENOTFOUND: "no snapshot" would make recovery start
     * from an empty state, which an I/O error does not justify. */
    int io_err = 0;
    rc = CY_ENOTFOUND;
    for (size_t i = 0; i < s.n_snaps; i++) {
        uint64_t pos = s.snaps[i];
        if (pos > max_pos)
            continue;
        char name[SNAP_NAME_MAX], path[4096];
        format_name(name, pos, SNAP_SUFFIX);
        int err = join_path(path, sizeof path, dir, name);
        uint8_t *bytes = NULL;
        size_t len = 0;
        if (err == 0)
            err = fo_read_file(fo, path, SNAP_MAX_FILE, &bytes, &len);
        if (err == -ENOENT)
            continue; /* deleted since the listing */
        if (err == CY_ENOMEM || err == -ENOMEM) {
            rc = CY_ENOMEM;
            break;
        }
        if (err < 0) {
            log_warn("snapshot: cannot read %s/%s: %s", dir, name, cy_strerror(err));
            if (!io_err)
                io_err = err;
            continue;
        }
        err = snapshot_decode(bytes, len, out);
        if (err == 0 && out->covered_pos != pos)
            err = CY_ECORRUPT; /* renamed by hand: its name would mislead retention */
        if (err < 0) {
            log_warn("snapshot: skipping damaged %s/%s: %s", dir, name, cy_strerror(err));
            free(bytes);
            memset(out, 0, sizeof *out);
            continue;
        }
        out->raw = bytes;
        out->raw_len = len;
        rc = 0;
        break;
    }
    if (rc == CY_ENOTFOUND && io_err)
        rc = io_err;
    scan_free(&s);
    return rc;
}

void snapshot_free(struct snapshot *s)
{
    if (!s)
        return;
    free(s->raw);
    memset(s, 0, sizeof *s);
}

int snapshot_list(const struct fileops *fo, const char *dir, uint64_t *positions, int max)
{
    fo = fo_or_default(fo);
    if (max < 0 || (max > 0 && !positions))
        return CY_EINVAL;
    struct scan s;
    int rc = scan_dir(fo, dir, &s);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    sort_pos(s.snaps, s.n_snaps, cmp_pos_asc);
    size_t n = s.n_snaps < (size_t)max ? s.n_snaps : (size_t)max;
    if (n)
        memcpy(positions, s.snaps, n * sizeof *positions);
    scan_free(&s);
    return (int)n;
}
