/*
 * coyote_mkdata.c — writes a data directory through the store API, for the
 * checker's integration test and for poking at recovery by hand.
 *
 *   coyote-mkdata [options] DIR
 *
 * DIR receives one store per namespace, DIR/ns-0 … DIR/ns-<N-1> (or DIR
 * itself with --single). Each store gets P partitions (ids 0x1000 + p) and M
 * messages per partition, published in batches, optionally interleaved with
 * non-publish command records and periodic checkpoints. Running it again on
 * the same directory recovers each store and appends after what is there.
 *
 * --crash leaves the stores as a killed process would: the journal is synced
 * (journal_sync) and the process ends with _exit, so nothing is closed: no
 * final checkpoint, index entries still in memory are lost, LOCK is released
 * by the kernel.
 *
 * Everything is deterministic (timestamps and payloads derive from counters),
 * so two runs with the same options write the same bytes.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "coyote.h"
#include "storage/store.h"

#define PART_ID_BASE 0x1000u
#define CMD_RECORD_TYPE 16 /* the first type the broker owns; opaque to the store */

struct options {
    const char *dir;
    unsigned namespaces;
    unsigned partitions;
    unsigned messages; /* per partition */
    unsigned batch;    /* messages per partition per publish record */
    unsigned parts_per_publish;
    unsigned msg_size;
    unsigned commands_every; /* a command record after every K publishes (0: none) */
    unsigned checkpoint_every;
    uint64_t segment_bytes;
    uint64_t ts_start;
    enum journal_fsync fsync;
    uint32_t fsync_interval_ms;
    bool single;
    bool crash;
    bool no_preallocate;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: coyote-mkdata [options] DIR\n"
               "\n"
               "Write a Coyote data directory with the store API (for tests).\n"
               "\n"
               "  --namespaces N          stores DIR/ns-0 .. DIR/ns-<N-1> (default 1)\n"
               "  --single                DIR itself is the (only) store\n"
               "  --partitions P          partitions per store, ids 0x1000+p (default 4)\n"
               "  --messages M            messages per partition (default 100)\n"
               "  --batch B               messages per partition per publish (default 1)\n"
               "  --parts-per-publish K   partitions in one publish record (default 1, max 64)\n"
               "  --size BYTES            message size (default 100)\n"
               "  --commands-every K      a non-publish record (type 16) after every K\n"
               "                          publishes (default 0: none)\n"
               "  --checkpoint-every K    store_checkpoint after every K publishes (default 0)\n"
               "  --segment-bytes BYTES   journal segment capacity (default 64 MiB, min 4096)\n"
               "  --ts-start MS           timestamp of the first publish (default 1700000000000)\n"
               "  --fsync POLICY          always | interval=<ms> | never (default never)\n"
               "  --no-preallocate        do not fallocate segments\n"
               "  --crash                 sync the journal, then _exit without closing\n"
               "  -h, --help              this text\n"
               "\n"
               "Running it again on the same DIR appends after what is there.\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (*s < '0' || *s > '9' || *end || errno)
        return CY_EINVAL;
    *out = v;
    return 0;
}

static int parse_uint(const char *s, unsigned *out)
{
    uint64_t v;
    if (parse_u64(s, &v) || v > 100000000u)
        return CY_EINVAL;
    *out = (unsigned)v;
    return 0;
}

/* Deterministic payload bytes for (part, offset). */
static void fill_payload(uint8_t *p, size_t n, uint64_t part, uint64_t offset)
{
    uint64_t x = (part * 0x9E3779B97F4A7C15ull) ^ (offset + 1) * 0xBF58476D1CE4E5B9ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x >> 31;
        x *= 0x94D049BB133111EBull;
        p[i] = (uint8_t)(x >> 56);
    }
}

static int fill_store(const struct options *o, const char *dir)
{
    struct store_config cfg = {
        .dir = dir,
        .segment_bytes = o->segment_bytes,
        .fsync = o->fsync,
        .fsync_interval_ms = o->fsync_interval_ms,
        .no_preallocate = o->no_preallocate,
        .checkpoint_interval_ms = 3600000,
        .checkpoint_bytes = 1ull << 40,
    };
    struct store *s = NULL;
    int rc = store_open(&cfg, NULL, &s);
    if (rc) {
        fprintf(stderr, "coyote-mkdata: %s: open: %s\n", dir, cy_strerror(rc));
        return rc;
    }

    unsigned np = o->partitions;
    uint64_t *next = calloc(np, sizeof *next); /* offset to publish next */
    uint64_t *left = calloc(np, sizeof *left); /* messages still to publish */
    size_t per_rec = (size_t)o->batch * o->parts_per_publish;
    struct msgrec_msg *msgs = calloc(per_rec, sizeof *msgs);
    uint8_t *payload = malloc(per_rec * (o->msg_size ? o->msg_size : 1));
    struct msgrec_part parts[STORE_MAX_PUBLISH_PARTS];
    if (!next || !left || !msgs || !payload) {
        rc = CY_ENOMEM;
        goto out;
    }
    uint64_t ts = o->ts_start;
    struct journal *j = store_journal(s);
    if (journal_last_timestamp(j) >= ts)
        ts = journal_last_timestamp(j) + 1;
    for (unsigned p = 0; p < np; p++) {
        rc = store_part_next(s, PART_ID_BASE + p, &next[p]);
        if (rc)
            goto out;
        left[p] = o->messages;
    }

    unsigned publishes = 0, cursor = 0;
    for (;;) {
        /* Pick up to parts_per_publish partitions with messages left, round robin. */
        size_t nparts = 0, m = 0;
        for (unsigned k = 0; k < np && nparts < o->parts_per_publish; k++) {
            unsigned p = (cursor + k) % np;
            if (!left[p])
                continue;
            uint32_t count = left[p] < o->batch ? (uint32_t)left[p] : o->batch;
            struct msgrec_part *mp = &parts[nparts++];
            mp->part_id = PART_ID_BASE + p;
            mp->first_offset = next[p];
            mp->count = count;
            mp->msgs = &msgs[m];
            for (uint32_t i = 0; i < count; i++, m++) {
                uint8_t *d = payload + m * o->msg_size;
                fill_payload(d, o->msg_size, p, next[p] + i);
                msgs[m].data = d;
                msgs[m].len = o->msg_size;
                msgs[m].key_hash = (next[p] + i) % 3 == 0 ? 0 : (uint32_t)(p * 7919u + i + 1);
            }
            next[p] += count;
            left[p] -= count;
        }
        if (!nparts)
            break;
        cursor = (cursor + 1) % np;

        char extra[32];
        int extra_len = publishes % 2 ? snprintf(extra, sizeof extra, "pub-%u", publishes) : 0;
        rc = store_publish(s, ts++, parts, nparts, extra, (uint32_t)extra_len, NULL);
        if (rc) {
            fprintf(stderr, "coyote-mkdata: %s: publish: %s\n", dir, cy_strerror(rc));
            goto out;
        }
        publishes++;
        if (o->commands_every && publishes % o->commands_every == 0) {
            char body[48];
            int n = snprintf(body, sizeof body, "command after publish %u", publishes);
            rc = store_append(s, CMD_RECORD_TYPE, ts++, body, (uint32_t)n, NULL);
            if (rc) {
                fprintf(stderr, "coyote-mkdata: %s: append: %s\n", dir, cy_strerror(rc));
                goto out;
            }
        }
        if (o->checkpoint_every && publishes % o->checkpoint_every == 0) {
            rc = store_checkpoint(s);
            if (rc) {
                fprintf(stderr, "coyote-mkdata: %s: checkpoint: %s\n", dir, cy_strerror(rc));
                goto out;
            }
        }
    }
    if (o->crash) {
        rc = journal_sync(j);
        fflush(NULL);
        _exit(rc ? 1 : 0); /* see the file comment (main allows --crash for one store only) */
    }
out:
    free(payload);
    free(msgs);
    free(left);
    free(next);
    int close_rc = store_close(s);
    if (!rc && close_rc) {
        fprintf(stderr, "coyote-mkdata: %s: close: %s\n", dir, cy_strerror(close_rc));
        rc = close_rc;
    }
    return rc;
}

int main(int argc, char **argv)
{
    struct options o = {
        .namespaces = 1,
        .partitions = 4,
        .messages = 100,
        .batch = 1,
        .parts_per_publish = 1,
        .msg_size = 100,
        .ts_start = 1700000000000ull,
        .fsync = JOURNAL_FSYNC_NEVER,
    };
    enum {
        OPT_NAMESPACES = 256,
        OPT_SINGLE,
        OPT_PARTITIONS,
        OPT_MESSAGES,
        OPT_BATCH,
        OPT_PARTS_PER,
        OPT_SIZE,
        OPT_COMMANDS,
        OPT_CHECKPOINT,
        OPT_SEGMENT,
        OPT_TS,
        OPT_FSYNC,
        OPT_NOPREALLOC,
        OPT_CRASH,
    };
    static const struct option longopts[] = {
        {"namespaces", required_argument, NULL, OPT_NAMESPACES},
        {"single", no_argument, NULL, OPT_SINGLE},
        {"partitions", required_argument, NULL, OPT_PARTITIONS},
        {"messages", required_argument, NULL, OPT_MESSAGES},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"parts-per-publish", required_argument, NULL, OPT_PARTS_PER},
        {"size", required_argument, NULL, OPT_SIZE},
        {"commands-every", required_argument, NULL, OPT_COMMANDS},
        {"checkpoint-every", required_argument, NULL, OPT_CHECKPOINT},
        {"segment-bytes", required_argument, NULL, OPT_SEGMENT},
        {"ts-start", required_argument, NULL, OPT_TS},
        {"fsync", required_argument, NULL, OPT_FSYNC},
        {"no-preallocate", no_argument, NULL, OPT_NOPREALLOC},
        {"crash", no_argument, NULL, OPT_CRASH},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case OPT_NAMESPACES: bad = parse_uint(optarg, &o.namespaces) || !o.namespaces; break;
        case OPT_SINGLE: o.single = true; break;
        case OPT_PARTITIONS: bad = parse_uint(optarg, &o.partitions) || !o.partitions; break;
        case OPT_MESSAGES: bad = parse_uint(optarg, &o.messages); break;
        case OPT_BATCH: bad = parse_uint(optarg, &o.batch) || !o.batch; break;
        case OPT_PARTS_PER:
            bad = parse_uint(optarg, &o.parts_per_publish) || !o.parts_per_publish ||
                  o.parts_per_publish > STORE_MAX_PUBLISH_PARTS;
            break;
        case OPT_SIZE: bad = parse_uint(optarg, &o.msg_size); break;
        case OPT_COMMANDS: bad = parse_uint(optarg, &o.commands_every); break;
        case OPT_CHECKPOINT: bad = parse_uint(optarg, &o.checkpoint_every); break;
        case OPT_SEGMENT: bad = parse_u64(optarg, &o.segment_bytes); break;
        case OPT_TS: bad = parse_u64(optarg, &o.ts_start); break;
        case OPT_FSYNC: bad = journal_fsync_parse(optarg, &o.fsync, &o.fsync_interval_ms); break;
        case OPT_NOPREALLOC: o.no_preallocate = true; break;
        case OPT_CRASH: o.crash = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) {
            fprintf(stderr, "coyote-mkdata: bad value for --%s: %s\n", longopts[c - 256].name,
                    optarg);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        usage(stderr);
        return 2;
    }
    o.dir = argv[optind];
    if (o.crash && !o.single && o.namespaces > 1) {
        fprintf(stderr, "coyote-mkdata: --crash needs a single store (--single or 1 namespace)\n");
        return 2;
    }
    log_set_level(CYLOG_WARN);

    if (o.single)
        return fill_store(&o, o.dir) ? 1 : 0;
    for (unsigned n = 0; n < o.namespaces; n++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/ns-%u", o.dir, n);
        if (fill_store(&o, path))
            return 1;
    }
    return 0;
}
