/*
 * snapshot.h — checkpoint files (DESIGN.md §2).
 *
 * A snapshot is the state of a namespace (opaque sections supplied by the
 * store and the broker) together with the journal position it covers: replaying
 * the journal from `covered_pos` on top of it gives the current state.
 *
 * File "<dir>/<covered_pos as 20 decimal digits>.snap", written atomically:
 * "<name>.tmp", write, fdatasync, rename, sync_dir. The two newest valid
 * snapshots are kept (retention never deletes journal segments newer than the
 * older one, so recovery can fall back to it when the newest is damaged);
 * older ones are deleted after a successful write. Format in docs/storage.md:
 * header (magic "CYSN", version, covered_pos, created_ms, section count, CRC),
 * then per section: tag u32, length u64, bytes, CRC-32C of tag+length+bytes.
 */
#ifndef COYOTE_STORAGE_SNAPSHOT_H
#define COYOTE_STORAGE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "storage/fileops.h"

#define SNAPSHOT_MAX_SECTIONS 64

struct snapshot_section {
    uint32_t tag;       /* meaning given by the writer (store / broker) */
    const uint8_t *data; /* on load: points into snapshot.raw */
    uint64_t len;
};

struct snapshot {
    uint64_t covered_pos;
    uint64_t created_ms;
    size_t n_sections;
    struct snapshot_section sections[SNAPSHOT_MAX_SECTIONS];
    uint8_t *raw; /* the file's bytes (owned; freed by snapshot_free) */
    size_t raw_len;
};

/* Write a snapshot atomically, then delete all but the two newest.
 * 0, CY_EINVAL (more than SNAPSHOT_MAX_SECTIONS), or -errno (the temp file
 * is removed; an older snapshot stays in force). */
int snapshot_write(const struct fileops *fo, const char *dir, uint64_t covered_pos,
                   uint64_t created_ms, const struct snapshot_section *sections, size_t n);

/* The same, keeping `prev_valid` (a position the caller knows holds a valid
 * snapshot: the one it recovered from or last wrote; UINT64_MAX: unknown) as
 * the fallback instead of the newest one below, so a damaged newer file never
 * displaces a valid fallback. */
int snapshot_write_keep(const struct fileops *fo, const char *dir, uint64_t covered_pos,
                        uint64_t created_ms, const struct snapshot_section *sections, size_t n,
                        uint64_t prev_valid);

/* Decode a snapshot from bytes (the pure parser, fuzzed). On success the
 * sections of *out point into `data`, which must outlive them; out->raw is
 * left NULL. CY_EFORMAT (magic/version), CY_ECORRUPT (checksum, lengths). */
int snapshot_decode(const uint8_t *data, size_t len, struct snapshot *out);

/* Load the newest snapshot in dir whose checksums verify; damaged ones are
 * logged (warn) and skipped. If `max_pos` is not UINT64_MAX, snapshots covering
 * a position beyond it are skipped too (the journal ends before them).
 * 0 (caller frees with snapshot_free), CY_ENOTFOUND when none is valid, -errno. */
int snapshot_load_newest(const struct fileops *fo, const char *dir, uint64_t max_pos,
                         struct snapshot *out);
void snapshot_free(struct snapshot *s);

/* The covered positions of the valid-looking snapshot files in dir (by name),
 * ascending, at most `max`; returns the count or -errno. Used by retention:
 * nothing at or after the oldest kept snapshot's position may be deleted. */
int snapshot_list(const struct fileops *fo, const char *dir, uint64_t *positions, int max);

#endif
