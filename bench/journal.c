/*
 * bench/journal.c — how fast is the journal compared to the disk under it?
 *
 * A program that prints figures, never a pass/fail test. In one run, in a
 * fresh temporary directory on the file system of --dir (removed at the end):
 *
 *   1. The raw disk: a sequential 1 MiB pwrite+fdatasync loop on a file
 *      preallocated by writing it (MB/s), the latency of one fdatasync after a
 *      4 KiB pwrite (p50/p99) — over written blocks, and over fallocated
 *      (unwritten) blocks as journal segments have them — and the
 *      pwrite+fdatasync bandwidth at the write size one group commit covers
 *      (appenders × record), the ceiling of a closed-loop load.
 *   2. The journal, for record sizes × appender threads × fsync policies:
 *      each thread appends one record, waits until it is durable
 *      (journal_wait_durable; not under "never"), and appends the next.
 *      Records/s, MB/s, append-to-durable latency percentiles, the syncs
 *      the group-commit thread performed and the records each one covered.
 *   3. The peak RSS of the process.
 *   4. The ratios: "always" throughput as a share of the raw bandwidth, and
 *      its p99 latency in units of one raw fdatasync.
 *
 * Invariants of the measurement:
 *   1. Appends are serialized by one bench mutex that also hands out the
 *      timestamps, so timestamps never decrease and the journal's "one owner
 *      thread appends" contract holds (the broker's loop thread plays that
 *      role in the server).
 *   2. The hot path takes no lock of its own besides that one: latencies go to
 *      per-thread arrays, merged and sorted after the case.
 *   3. Only the window after the warm-up counts: samples are kept when the
 *      operation completes inside it, journal counters are read at its edges.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "coyote.h"
#include "storage/journal.h"

#define MIB (1024u * 1024u)
#define RAW_FILE_BYTES (32ull * MIB)
#define RAW_SMALL_WRITE 4096u
#define WORKER_STACK (256u * 1024u)
#define MAX_LIST 8
/* A wait for durability this long means the journal stopped syncing: the case
 * fails with -ETIMEDOUT instead of hanging the benchmark. */
#define STUCK_WAIT_MS 5000
#define CASE_PROBE_SAMPLES 30

/* ---- options ------------------------------------------------------------ */

struct policy_spec {
    enum journal_fsync policy;
    uint32_t interval_ms;
    char name[24];
};

struct options {
    const char *dir;
    double seconds;
    double warmup;
    double raw_seconds;
    unsigned sync_samples;
    bool json;
    uint32_t sizes[MAX_LIST];
    unsigned nsizes;
    unsigned threads[MAX_LIST];
    unsigned nthreads;
    struct policy_spec policies[MAX_LIST];
    unsigned npolicies;
};

static FILE *out_human; /* stdout, or stderr when --json owns stdout */
static volatile sig_atomic_t interrupted;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out_human, fmt, ap);
    va_end(ap);
    fflush(out_human);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_journal [options]\n"
            "\n"
            "Measures the raw disk (pwrite+fdatasync) and the journal (group commit) on the\n"
            "same file system, and prints how close the journal gets to the disk.\n"
            "\n"
            "  --dir PATH        where to create the temporary directory (default: the current\n"
            "                    directory; use the file system of the broker's data dir)\n"
            "  --seconds N       measured duration of each journal case (default 3)\n"
            "  --warmup N        warm-up before each case, seconds (default 0.5)\n"
            "  --raw-seconds N   duration of the raw 1 MiB pwrite+fdatasync loop (default 2)\n"
            "  --sync-samples N  raw 4 KiB fdatasync samples (default 200)\n"
            "  --quick           1 s per case, 0.2 s warm-up, 1 s raw loop\n"
            "  --sizes LIST      record body sizes in bytes (default 100,1024)\n"
            "  --threads LIST    appender thread counts (default 1,64)\n"
            "  --policies LIST   fsync policies, ';'-separated (default\n"
            "                    \"always;interval=10;never\")\n"
            "  --json            one JSON object per line on stdout (the table goes to stderr)\n"
            "  --help            this text\n"
            "\n"
            "Latency is append-to-durable: append one record, journal_wait_durable on it,\n"
            "under \"always\" and \"interval\"; under \"never\" only the append is timed (nothing\n"
            "waits) and the final journal_sync is reported separately.\n");
}

static int parse_double(const char *s, double *v)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !(d > 0))
        return CY_EINVAL;
    *v = d;
    return 0;
}

static int parse_u32_list(const char *s, uint32_t *v, unsigned *n, uint32_t min, uint32_t max)
{
    *n = 0;
    while (*s) {
        char *end;
        errno = 0;
        unsigned long x = strtoul(s, &end, 10);
        if (errno || end == s || x < min || x > max || *n == MAX_LIST)
            return CY_EINVAL;
        v[(*n)++] = (uint32_t)x;
        if (*end == ',')
            end++;
        else if (*end)
            return CY_EINVAL;
        s = end;
    }
    return *n ? 0 : CY_EINVAL;
}

static int parse_policies(const char *s, struct options *o)
{
    o->npolicies = 0;
    char item[64];
    while (*s) {
        size_t len = strcspn(s, ";,");
        if (len == 0 || len >= sizeof item || o->npolicies == MAX_LIST)
            return CY_EINVAL;
        memcpy(item, s, len);
        item[len] = '\0';
        struct policy_spec *p = &o->policies[o->npolicies];
        if (journal_fsync_parse(item, &p->policy, &p->interval_ms) != 0)
            return CY_EINVAL;
        journal_fsync_name(p->policy, p->interval_ms, p->name, sizeof p->name);
        o->npolicies++;
        s += len;
        if (*s)
            s++;
    }
    return o->npolicies ? 0 : CY_EINVAL;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){.dir = ".", .seconds = 3, .warmup = 0.5, .raw_seconds = 2,
                          .sync_samples = 200, .sizes = {100, 1024}, .nsizes = 2,
                          .threads = {1, 64}, .nthreads = 2};
    int rc = parse_policies("always;interval=10;never", o);
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
            takes = false;
        } else if (strcmp(a, "--quick") == 0) {
            o->seconds = 1;
            o->warmup = 0.2;
            o->raw_seconds = 1;
            takes = false;
        } else if (!v) {
            rc = CY_EINVAL;
        } else if (strcmp(a, "--dir") == 0) {
            o->dir = v;
        } else if (strcmp(a, "--seconds") == 0) {
            rc = parse_double(v, &o->seconds);
        } else if (strcmp(a, "--warmup") == 0) {
            rc = parse_double(v, &o->warmup);
        } else if (strcmp(a, "--raw-seconds") == 0) {
            rc = parse_double(v, &o->raw_seconds);
        } else if (strcmp(a, "--sync-samples") == 0) {
            uint32_t n[MAX_LIST];
            unsigned k;
            rc = parse_u32_list(v, n, &k, 10, 100000);
            if (!rc && k != 1)
                rc = CY_EINVAL;
            if (!rc)
                o->sync_samples = n[0];
        } else if (strcmp(a, "--sizes") == 0) {
            rc = parse_u32_list(v, o->sizes, &o->nsizes, 1, 16 * MIB);
        } else if (strcmp(a, "--threads") == 0) {
            rc = parse_u32_list(v, o->threads, &o->nthreads, 1, 4096);
        } else if (strcmp(a, "--policies") == 0) {
            rc = parse_policies(v, o);
        } else {
            rc = CY_EINVAL;
        }
        if (rc) {
            fprintf(stderr, "bench_journal: bad option %s%s%s (see --help)\n", a, v ? " " : "",
                    v && takes ? v : "");
            return rc;
        }
        if (takes)
            i++;
    }
    return rc;
}

/* ---- small helpers ------------------------------------------------------ */

static double now_s(void) { return (double)clock_mono_ns() / 1e9; }

/* Sleep up to s seconds, in short steps so ^C ends a case early. */
static void nap(double s)
{
    double until = now_s() + s;
    for (;;) {
        double left = until - now_s();
        if (left <= 0 || interrupted)
            return;
        if (left > 0.02)
            left = 0.02;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array (p in [0, 1]). */
static uint64_t pct_u32(const uint32_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t k = (size_t)(p * (double)n + 0.999999);
    return v[k ? k - 1 : 0];
}

static uint64_t pct_u64(const uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t k = (size_t)(p * (double)n + 0.999999);
    return v[k ? k - 1 : 0];
}

static double ms(uint64_t ns) { return (double)ns / 1e6; }

static const char *fs_name(const char *path)
{
    struct statfs sf;
    if (statfs(path, &sf) != 0)
        return "unknown";
    switch ((unsigned long)sf.f_type) {
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x01021994: return "tmpfs";
    case 0x794C7630: return "overlayfs";
    case 0x2FC12FC1: return "zfs";
    case 0x6969: return "nfs";
    default: return "other";
    }
}

/* dir/name into buf; CY_ETOOBIG when it does not fit. */
static int join_path(char *buf, size_t len, const char *dir, const char *name)
{
    int n = snprintf(buf, len, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= len ? CY_ETOOBIG : 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) ? -errno : 0;
    return unlink(path) ? -errno : 0;
}

static void remove_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- 1. the raw disk ---------------------------------------------------- */

struct raw_result {
    double seq_mbps;       /* 1 MiB pwrite + fdatasync, MB/s (10^6 B/s) */
    uint64_t seq_iters;
    double seq_secs;
    uint64_t small_p50_ns, small_p99_ns;   /* 4 KiB over written blocks */
    uint64_t unwr_p50_ns, unwr_p99_ns;     /* 4 KiB into fallocated, unwritten blocks */
    uint64_t end_p50_ns, end_p99_ns;       /* 4 KiB over written blocks, after the cases */
    unsigned nsamples;
    /* pwrite+fdatasync at the size of one group commit of a case */
    unsigned nceil;
    uint32_t ceil_bytes[MAX_LIST * MAX_LIST];
    double ceil_mbps[MAX_LIST * MAX_LIST];
    double ceil_sync_ns[MAX_LIST * MAX_LIST];
};

static int write_full(int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* pwrite n bytes at *off (wrapping inside the file) then fdatasync, for about
 * `secs` seconds (at least `min_iters` times). */
static int write_sync_loop(int fd, const uint8_t *buf, size_t n, double secs, unsigned min_iters,
                           uint64_t *iters, double *elapsed)
{
    uint64_t off = 0, k = 0;
    double t0 = now_s(), t;
    do {
        if (off + n > RAW_FILE_BYTES)
            off = 0;
        int rc = write_full(fd, buf, n, off);
        if (!rc && fdatasync(fd) != 0)
            rc = -errno;
        if (rc)
            return rc;
        off += n;
        k++;
        t = now_s();
    } while ((t - t0 < secs || k < min_iters) && !interrupted);
    *iters = k;
    *elapsed = t - t0;
    return 0;
}

/* 4 KiB pwrite + fdatasync latency, n times at consecutive offsets from off. */
static int small_sync_samples(int fd, const uint8_t *buf, unsigned n, uint64_t off,
                              uint64_t *p50, uint64_t *p99)
{
    uint64_t *lat = calloc(n, sizeof *lat);
    if (!lat)
        return CY_ENOMEM;
    int rc = 0;
    for (unsigned i = 0; i < n && !rc; i++) {
        uint64_t t0 = clock_mono_ns();
        rc = write_full(fd, buf, RAW_SMALL_WRITE, off + (uint64_t)i * RAW_SMALL_WRITE);
        if (!rc && fdatasync(fd) != 0)
            rc = -errno;
        lat[i] = clock_mono_ns() - t0;
    }
    if (!rc) {
        qsort(lat, n, sizeof *lat, cmp_u64);
        *p50 = pct_u64(lat, n, 0.50);
        *p99 = pct_u64(lat, n, 0.99);
    }
    free(lat);
    return rc;
}

static int raw_measure(const struct options *o, const char *dir, struct raw_result *r)
{
    char path[4096], path2[4096];
    if (join_path(path, sizeof path, dir, "raw-written.dat") ||
        join_path(path2, sizeof path2, dir, "raw-fallocated.dat"))
        return CY_ETOOBIG;
    uint8_t *buf = aligned_alloc(4096, MIB);
    int fd = -1, fd2 = -1, rc = 0;
    if (!buf)
        return CY_ENOMEM;
    fill_random(buf, MIB, 0x9E3779B97F4A7C15ull);

    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    /* Preallocate by writing, so the loop only overwrites data blocks and
     * fdatasync has no metadata to commit. */
    for (uint64_t off = 0; off < RAW_FILE_BYTES && !rc; off += MIB)
        rc = write_full(fd, buf, MIB, off);
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    if (rc)
        goto fail;

    rc = write_sync_loop(fd, buf, MIB, o->raw_seconds, 8, &r->seq_iters, &r->seq_secs);
    if (rc)
        goto fail;
    r->seq_mbps = (double)r->seq_iters * MIB / r->seq_secs / 1e6;

    r->nsamples = o->sync_samples;
    if ((uint64_t)o->sync_samples * RAW_SMALL_WRITE > RAW_FILE_BYTES)
        r->nsamples = (unsigned)(RAW_FILE_BYTES / RAW_SMALL_WRITE);
    rc = small_sync_samples(fd, buf, r->nsamples, 0, &r->small_p50_ns, &r->small_p99_ns);
    if (rc)
        goto fail;

    /* The same over fallocated blocks, as in a journal segment: the first
     * write to an unwritten extent makes fdatasync commit the extent change
     * through the file system's own journal. */
    fd2 = open(path2, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd2 < 0) {
        rc = -errno;
        goto fail;
    }
    if (fallocate(fd2, 0, 0, (off_t)r->nsamples * RAW_SMALL_WRITE) != 0 || fsync(fd2) != 0) {
        rc = -errno;
        goto fail;
    }
    rc = small_sync_samples(fd2, buf, r->nsamples, 0, &r->unwr_p50_ns, &r->unwr_p99_ns);
    if (rc)
        goto fail;

    /* The closed-loop ceiling: with A appenders each waiting for its record,
     * one group commit covers at most A records. */
    r->nceil = 0;
    for (unsigned t = 0; t < o->nthreads; t++) {
        for (unsigned s = 0; s < o->nsizes; s++) {
            uint64_t b = (uint64_t)o->threads[t] * (o->sizes[s] + JOURNAL_RECORD_HEADER);
            if (o->threads[t] < 2 || b > MIB)
                continue;
            bool seen = false;
            for (unsigned k = 0; k < r->nceil; k++)
                seen |= r->ceil_bytes[k] == b;
            if (seen)
                continue;
            uint64_t iters;
            double secs;
            rc = write_sync_loop(fd, buf, (size_t)b, o->raw_seconds / 4, 8, &iters, &secs);
            if (rc)
                goto fail;
            r->ceil_bytes[r->nceil] = (uint32_t)b;
            r->ceil_mbps[r->nceil] = (double)iters * (double)b / secs / 1e6;
            r->ceil_sync_ns[r->nceil] = secs * 1e9 / (double)iters;
            r->nceil++;
        }
    }

fail:
    if (fd >= 0)
        close(fd);
    if (fd2 >= 0)
        close(fd2);
    unlink(path);
    unlink(path2);
    free(buf);
    return rc;
}

/* The 4 KiB fdatasync latency again, on a fresh written file of `samples`
 * blocks: before each case and after the last, because a shared or
 * rate-limited device changes speed during a run. */
static int raw_probe(const char *dir, unsigned samples, uint64_t *p50, uint64_t *p99)
{
    char path[4096];
    if (join_path(path, sizeof path, dir, "raw-probe.dat"))
        return CY_ETOOBIG;
    size_t n = (size_t)samples * RAW_SMALL_WRITE;
    uint8_t *buf = malloc(n);
    if (!buf)
        return CY_ENOMEM;
    fill_random(buf, n, 0xD1B54A32D192ED03ull);
    int rc = 0, fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        rc = -errno;
    if (!rc)
        rc = write_full(fd, buf, n, 0);
    if (!rc && fsync(fd) != 0)
        rc = -errno;
    if (!rc)
        rc = small_sync_samples(fd, buf, samples, 0, p50, p99);
    if (fd >= 0)
        close(fd);
    unlink(path);
    free(buf);
    return rc;
}

/* ---- 2. the journal ----------------------------------------------------- */

enum phase { PHASE_WARMUP, PHASE_MEASURE, PHASE_STOP };

struct bench_case {
    struct policy_spec pol;
    uint32_t size;
    unsigned appenders;
    bool wait;

    struct journal *j;
    pthread_mutex_t append_mu; /* invariant 1: serializes appends, guards last_ts */
    uint64_t last_ts;
    atomic_int phase;
};

struct worker {
    struct bench_case *c;
    pthread_t thread;
    uint8_t *body;
    uint32_t *lat; /* ns, one per operation completed in the window */
    size_t n, cap;
    int err;
};

struct case_result {
    uint64_t disk_p50;      /* raw 4 KiB pwrite+fdatasync p50 just before the case */
    uint64_t records;       /* appends in the window (journal counter) */
    uint64_t completed;     /* operations completed in the window (samples) */
    double secs;
    uint64_t syncs;
    uint64_t sync_ns;       /* total fdatasync time in the window */
    uint64_t p50, p99, p999, max;
    double final_sync_ms;   /* "never": journal_sync after the window */
    double cpu_pct;         /* process CPU time / wall time in the window, % */
    double csw_per_rec;     /* voluntary + involuntary context switches per record */
    size_t sample_bytes;
    int err;
};

static uint64_t next_timestamp(struct bench_case *c)
{
    uint64_t ts = clock_wall_ms();
    if (ts < c->last_ts)
        ts = c->last_ts;
    c->last_ts = ts;
    return ts;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct bench_case *c = w->c;
    for (;;) {
        int ph = atomic_load_explicit(&c->phase, memory_order_acquire);
        if (ph == PHASE_STOP)
            break;
        uint64_t t0 = clock_mono_ns(), end = 0;
        pthread_mutex_lock(&c->append_mu);
        int rc = journal_append(c->j, JREC_PUBLISH, next_timestamp(c), w->body, c->size, NULL,
                                &end);
        pthread_mutex_unlock(&c->append_mu);
        if (!rc && c->wait)
            rc = journal_wait_durable(c->j, end, STUCK_WAIT_MS);
        if (rc) {
            w->err = rc;
            break;
        }
        uint64_t dt = clock_mono_ns() - t0;
        if (atomic_load_explicit(&c->phase, memory_order_relaxed) != PHASE_MEASURE)
            continue;
        if (w->n == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 4096;
            uint32_t *nl = realloc(w->lat, cap * sizeof *nl);
            if (!nl) {
                w->err = CY_ENOMEM;
                break;
            }
            w->lat = nl;
            w->cap = cap;
        }
        w->lat[w->n++] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
    }
    return NULL;
}

static void cpu_snapshot(double *cpu_s, uint64_t *csw)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
             (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    *csw = (uint64_t)ru.ru_nvcsw + (uint64_t)ru.ru_nivcsw;
}

static int run_case(const struct options *o, const char *root, unsigned index,
                    struct bench_case *c, struct case_result *res)
{
    char dir[4096], name[32];
    memset(res, 0, sizeof *res);
    snprintf(name, sizeof name, "case-%u", index);
    if (join_path(dir, sizeof dir, root, name))
        return CY_ETOOBIG;

    uint64_t p99;
    int rc = raw_probe(root, CASE_PROBE_SAMPLES, &res->disk_p50, &p99);
    if (rc)
        return rc;
    struct journal_file_config cfg = {.dir = dir, .fsync = c->pol.policy,
                                      .fsync_interval_ms = c->pol.interval_ms};
    rc = journal_file_open(&cfg, &c->j);
    if (rc)
        return rc;
    pthread_mutex_init(&c->append_mu, NULL);
    c->last_ts = 0;
    atomic_store(&c->phase, PHASE_WARMUP);

    struct worker *ws = calloc(c->appenders, sizeof *ws);
    unsigned started = 0;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WORKER_STACK);
    if (!ws) {
        rc = CY_ENOMEM;
        goto stop;
    }
    for (unsigned i = 0; i < c->appenders; i++) {
        ws[i].c = c;
        ws[i].body = malloc(c->size);
        if (!ws[i].body) {
            rc = CY_ENOMEM;
            goto stop;
        }
        fill_random(ws[i].body, c->size, 0x2545F4914F6CDD1Dull + i);
    }
    for (; started < c->appenders; started++) {
        if (pthread_create(&ws[started].thread, &attr, worker_main, &ws[started]) != 0) {
            rc = -EAGAIN;
            goto stop;
        }
    }

    nap(o->warmup);
    struct journal_stats s0, s1;
    double cpu0, cpu1;
    uint64_t csw0, csw1;
    journal_get_stats(c->j, &s0);
    cpu_snapshot(&cpu0, &csw0);
    double t0 = now_s();
    atomic_store_explicit(&c->phase, PHASE_MEASURE, memory_order_release);
    nap(o->seconds);
    atomic_store_explicit(&c->phase, PHASE_STOP, memory_order_release);
    double t1 = now_s();
    journal_get_stats(c->j, &s1);
    cpu_snapshot(&cpu1, &csw1);

    res->secs = t1 - t0;
    res->records = s1.appends - s0.appends;
    res->syncs = s1.syncs - s0.syncs;
    res->sync_ns = s1.sync_ns_total - s0.sync_ns_total;
    res->cpu_pct = 100.0 * (cpu1 - cpu0) / res->secs;
    res->csw_per_rec = res->records ? (double)(csw1 - csw0) / (double)res->records : 0;

stop:
    atomic_store_explicit(&c->phase, PHASE_STOP, memory_order_release);
    for (unsigned i = 0; i < started; i++)
        pthread_join(ws[i].thread, NULL);
    pthread_attr_destroy(&attr);

    if (!rc && !c->wait) {
        uint64_t f0 = clock_mono_ns();
        rc = journal_sync(c->j);
        res->final_sync_ms = ms(clock_mono_ns() - f0);
    }

    size_t total = 0;
    for (unsigned i = 0; ws && i < c->appenders; i++) {
        total += ws[i].n;
        res->sample_bytes += ws[i].cap * sizeof(uint32_t);
        if (ws[i].err && !rc)
            rc = ws[i].err;
    }
    uint32_t *all = total ? malloc(total * sizeof *all) : NULL;
    if (all) {
        size_t k = 0;
        for (unsigned i = 0; i < c->appenders; i++) {
            memcpy(all + k, ws[i].lat, ws[i].n * sizeof *all);
            k += ws[i].n;
            free(ws[i].lat); /* keep the peak RSS near one copy of the samples */
            ws[i].lat = NULL;
        }
        qsort(all, total, sizeof *all, cmp_u32);
        res->completed = total;
        res->p50 = pct_u32(all, total, 0.50);
        res->p99 = pct_u32(all, total, 0.99);
        res->p999 = pct_u32(all, total, 0.999);
        res->max = all[total - 1];
        free(all);
    } else if (total && !rc) {
        rc = CY_ENOMEM;
    }
    for (unsigned i = 0; ws && i < c->appenders; i++) {
        free(ws[i].body);
        free(ws[i].lat);
    }
    free(ws);

    int crc = journal_close(c->j);
    if (!rc)
        rc = crc;
    c->j = NULL;
    pthread_mutex_destroy(&c->append_mu);
    remove_tree(dir);
    res->err = rc;
    return rc;
}

/* ---- reporting ---------------------------------------------------------- */

static double payload_mbps(const struct bench_case *c, const struct case_result *r)
{
    return r->secs > 0 ? (double)r->records * c->size / r->secs / 1e6 : 0;
}

static double journal_mbps(const struct bench_case *c, const struct case_result *r)
{
    return r->secs > 0
               ? (double)r->records * (c->size + JOURNAL_RECORD_HEADER) / r->secs / 1e6
               : 0;
}

static void print_raw(const struct options *o, const struct raw_result *r, const char *root)
{
    say("== Raw disk: %s (%s) ==\n", root, fs_name(root));
    say("  sequential 1 MiB pwrite+fdatasync        %9.1f MB/s   (%" PRIu64
        " iterations in %.2f s, %.2f ms each)\n",
        r->seq_mbps, r->seq_iters, r->seq_secs, r->seq_secs * 1e3 / (double)r->seq_iters);
    say("  4 KiB pwrite+fdatasync, written blocks    p50 %7.3f ms   p99 %7.3f ms   (%u samples)\n",
        ms(r->small_p50_ns), ms(r->small_p99_ns), r->nsamples);
    say("  4 KiB pwrite+fdatasync, fallocated blocks p50 %7.3f ms   p99 %7.3f ms   (%u samples; "
        "journal segments are fallocated)\n",
        ms(r->unwr_p50_ns), ms(r->unwr_p99_ns), r->nsamples);
    for (unsigned k = 0; k < r->nceil; k++)
        say("  %6" PRIu32 " B pwrite+fdatasync (one group of a case) %9.1f MB/s   (%.3f ms "
            "each)\n",
            r->ceil_bytes[k], r->ceil_mbps[k], r->ceil_sync_ns[k] / 1e6);
    if (o->json) {
        printf("{\"case\":\"raw\",\"fs\":\"%s\",\"seq_1mib_mb_per_s\":%.1f,\"seq_iterations\":%"
               PRIu64 ",\"sync_4k_p50_ms\":%.4f,\"sync_4k_p99_ms\":%.4f,"
               "\"sync_4k_fallocated_p50_ms\":%.4f,\"sync_4k_fallocated_p99_ms\":%.4f,"
               "\"samples\":%u",
               fs_name(root), r->seq_mbps, r->seq_iters, ms(r->small_p50_ns),
               ms(r->small_p99_ns), ms(r->unwr_p50_ns), ms(r->unwr_p99_ns), r->nsamples);
        printf(",\"group_write\":[");
        for (unsigned k = 0; k < r->nceil; k++)
            printf("%s{\"bytes\":%" PRIu32 ",\"mb_per_s\":%.1f,\"ms_per_sync\":%.4f}",
                   k ? "," : "", r->ceil_bytes[k], r->ceil_mbps[k], r->ceil_sync_ns[k] / 1e6);
        printf("]}\n");
        fflush(stdout);
    }
}

static void print_table_header(void)
{
    say("\n== Journal: latency = append-to-durable (append, then journal_wait_durable), except "
        "under \"never\" ==\n");
    say("%-12s %6s %4s %10s %8s %10s %10s %10s %7s %8s %8s %5s %5s %6s %8s\n", "policy",
        "record", "thr", "records/s", "MB/s", "p50", "p99", "p99.9", "syncs", "rec/sync",
        "ms/sync", "busy%", "cpu%", "csw/r", "disk ms");
}

/* "812.3 us" below a millisecond, "1.234 ms" above: never columns of zeros. */
static const char *lat_str(uint64_t ns, char *buf, size_t len)
{
    if (ns < 1000000)
        snprintf(buf, len, "%.1f us", (double)ns / 1e3);
    else
        snprintf(buf, len, "%.3f ms", ms(ns));
    return buf;
}

static void print_case(const struct options *o, const struct bench_case *c,
                       const struct case_result *r)
{
    if (r->err == -ETIMEDOUT) {
        say("%-12s %5" PRIu32 "B %4u   FAILED: journal_wait_durable timed out: durable did not "
            "advance for %d ms (the journal stopped syncing)\n",
            c->pol.name, c->size, c->appenders, STUCK_WAIT_MS);
    } else if (r->err) {
        say("%-12s %5" PRIu32 "B %4u   FAILED: %s\n", c->pol.name, c->size, c->appenders,
            cy_strerror(r->err));
    }
    if (r->err) {
        if (o->json)
            printf("{\"case\":\"journal\",\"policy\":\"%s\",\"record_bytes\":%" PRIu32
                   ",\"appenders\":%u,\"error\":\"%s\"}\n",
                   c->pol.name, c->size, c->appenders, cy_strerror(r->err));
        return;
    }
    double rps = (double)r->records / r->secs;
    double rec_per_sync = r->syncs ? (double)r->records / (double)r->syncs : 0;
    double avg_sync_ms = r->syncs ? ms(r->sync_ns) / (double)r->syncs : 0;
    double busy_pct = 100.0 * (double)r->sync_ns / 1e9 / r->secs;
    char l50[24], l99[24], l999[24];
    say("%-12s %5" PRIu32 "B %4u %10.0f %8.2f %10s %10s %10s %7" PRIu64 " %8.1f %8.3f %5.0f "
        "%5.0f %6.2f %8.3f\n",
        c->pol.name, c->size, c->appenders, rps, payload_mbps(c, r),
        lat_str(r->p50, l50, sizeof l50), lat_str(r->p99, l99, sizeof l99),
        lat_str(r->p999, l999, sizeof l999), r->syncs, rec_per_sync, avg_sync_ms, busy_pct,
        r->cpu_pct, r->csw_per_rec, ms(r->disk_p50));
    if (!c->wait)
        say("%-12s %6s %4s   ^ append only (nothing waits under never); final journal_sync of "
            "the unsynced tail: %.1f ms\n",
            "", "", "", r->final_sync_ms);
    if (o->json) {
        printf("{\"case\":\"journal\",\"policy\":\"%s\",\"record_bytes\":%" PRIu32
               ",\"appenders\":%u,\"waits_for_durable\":%s,\"seconds\":%.3f,\"records\":%" PRIu64
               ",\"records_per_s\":%.1f,\"mb_per_s\":%.3f,\"journal_mb_per_s\":%.3f,"
               "\"latency_ns\":{\"p50\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"p999\":%" PRIu64
               ",\"max\":%" PRIu64 ",\"samples\":%" PRIu64 "},\"syncs\":%" PRIu64
               ",\"records_per_sync\":%.2f,\"avg_sync_ms\":%.4f,\"sync_busy_pct\":%.1f,"
               "\"cpu_pct\":%.1f,"
               "\"context_switches_per_record\":%.3f,\"disk_sync_4k_p50_ms\":%.4f",
               c->pol.name, c->size, c->appenders, c->wait ? "true" : "false", r->secs,
               r->records, rps, payload_mbps(c, r), journal_mbps(c, r), r->p50, r->p99, r->p999,
               r->max, r->completed, r->syncs, rec_per_sync, avg_sync_ms, busy_pct, r->cpu_pct,
               r->csw_per_rec, ms(r->disk_p50));
        if (!c->wait)
            printf(",\"final_sync_ms\":%.3f", r->final_sync_ms);
        printf("}\n");
        fflush(stdout);
    }
}

static void print_legend(void)
{
    say("  MB/s: record bodies (10^6 B/s, 20-byte record headers not counted). syncs: fdatasync "
        "rounds of the group-commit\n"
        "  thread in the window; ms/sync: their mean duration; busy%%: the share of the window "
        "they took (no sync is in\n"
        "  flight the rest of the time). cpu%%: process CPU time / wall time (200 = both cores, "
        "which the appenders and\n"
        "  the journal share). csw/r: context switches per record. disk ms: p50 of a raw 4 KiB "
        "pwrite+fdatasync\n"
        "  measured just before the case (%d samples).\n",
        CASE_PROBE_SAMPLES);
}

static void print_ratios(const struct options *o, const struct raw_result *raw,
                         const struct bench_case *cases, const struct case_result *res,
                         unsigned ncases)
{
    bool header = false;
    for (unsigned i = 0; i < ncases; i++) {
        const struct bench_case *c = &cases[i];
        const struct case_result *r = &res[i];
        if (c->pol.policy != JOURNAL_FSYNC_ALWAYS || r->err || c->appenders < 2)
            continue;
        if (!header) {
            say("\n== Ratios (always; MB/s counts record bodies, raw = 1 MiB pwrite+fdatasync "
                "loop) ==\n");
            header = true;
        }
        double mbps = payload_mbps(c, r);
        double pct = raw->seq_mbps > 0 ? 100.0 * mbps / raw->seq_mbps : 0;
        double times = raw->small_p50_ns ? (double)r->p99 / (double)raw->small_p50_ns : 0;
        say("always, %u appenders, %" PRIu32 " B: durable MB/s = %.2f = %.1f %% of raw 1 MiB-"
            "fdatasync bandwidth (%.1f MB/s)\n",
            c->appenders, c->size, mbps, pct, raw->seq_mbps);
        double times_here = r->disk_p50 ? (double)r->p99 / (double)r->disk_p50 : 0;
        say("always, %u appenders, %" PRIu32 " B: p99 append-to-durable = %.3f ms = %.2f x one "
            "raw fdatasync (p50 %.3f ms; %.2f x the %.3f ms measured just before the case)\n",
            c->appenders, c->size, ms(r->p99), times, ms(raw->small_p50_ns), times_here,
            ms(r->disk_p50));
        uint64_t group = (uint64_t)c->appenders * (c->size + JOURNAL_RECORD_HEADER);
        double ceil_pct = -1, ceil_mbps = 0;
        for (unsigned k = 0; k < raw->nceil; k++) {
            if (raw->ceil_bytes[k] == group) {
                ceil_mbps = raw->ceil_mbps[k] * c->size / (c->size + JOURNAL_RECORD_HEADER);
                ceil_pct = ceil_mbps > 0 ? 100.0 * mbps / ceil_mbps : 0;
            }
        }
        if (ceil_pct >= 0)
            say("    closed-loop ceiling: %u x %" PRIu32 " B in flight = one %" PRIu64
                " B pwrite+fdatasync per group -> %.2f MB/s of bodies; journal reaches %.1f %% "
                "of it\n",
                c->appenders, c->size + JOURNAL_RECORD_HEADER, group, ceil_mbps, ceil_pct);
        if (o->json) {
            printf("{\"case\":\"ratio\",\"policy\":\"always\",\"record_bytes\":%" PRIu32
                   ",\"appenders\":%u,\"durable_mb_per_s\":%.3f,\"pct_of_raw_bandwidth\":%.2f,"
                   "\"p99_ms\":%.4f,\"p99_over_raw_sync_p50\":%.3f,"
                   "\"p99_over_case_disk_p50\":%.3f",
                   c->size, c->appenders, mbps, pct, ms(r->p99), times, times_here);
            if (ceil_pct >= 0)
                printf(",\"closed_loop_ceiling_mb_per_s\":%.3f,\"pct_of_ceiling\":%.2f", ceil_mbps,
                       ceil_pct);
            printf("}\n");
        }
    }
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct options o;
    if (parse_options(argc, argv, &o) != 0)
        return 2;
    out_human = o.json ? stderr : stdout;
    log_set_level(CYLOG_WARN);

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char root[4096];
    if (join_path(root, sizeof root, o.dir, "coyote-bench-XXXXXX") || !mkdtemp(root)) {
        fprintf(stderr, "bench_journal: cannot create a directory in %s: %s\n", o.dir,
                strerror(errno));
        return 1;
    }

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double load[1] = {0};
    getloadavg(load, 1);
    say("bench_journal: %.1f s per case after %.1f s warm-up, %ld CPUs shared by the appenders "
        "and the journal's sync thread; load average %.2f\n\n",
        o.seconds, o.warmup, ncpu, load[0]);
    if (load[0] > (double)ncpu)
        say("WARNING: other processes keep the CPUs busy (load %.2f > %ld CPUs): the figures "
            "measure them too\n\n",
            load[0], ncpu);

    int status = 0;
    struct raw_result raw = {0};
    int rc = raw_measure(&o, root, &raw);
    if (rc) {
        fprintf(stderr, "bench_journal: raw disk measurement failed: %s\n", cy_strerror(rc));
        status = 1;
        goto done;
    }
    print_raw(&o, &raw, root);

    unsigned ncases = o.nsizes * o.nthreads * o.npolicies;
    struct bench_case *cases = calloc(ncases, sizeof *cases);
    struct case_result *res = calloc(ncases, sizeof *res);
    if (!cases || !res) {
        free(cases);
        free(res);
        status = 1;
        goto done;
    }
    print_table_header();
    size_t max_samples = 0;
    unsigned n = 0;
    /* Policy by policy: the "never" cases write gigabytes and come last, so
     * their write-back does not slow the durable cases. */
    for (unsigned p = 0; p < o.npolicies && !interrupted; p++) {
        for (unsigned s = 0; s < o.nsizes && !interrupted; s++) {
            for (unsigned t = 0; t < o.nthreads && !interrupted; t++) {
                struct bench_case *c = &cases[n];
                c->pol = o.policies[p];
                c->size = o.sizes[s];
                c->appenders = o.threads[t];
                c->wait = c->pol.policy != JOURNAL_FSYNC_NEVER;
                int crc = run_case(&o, root, n, c, &res[n]);
                if (crc) {
                    res[n].err = crc;
                    status = 1;
                }
                if (res[n].sample_bytes > max_samples)
                    max_samples = res[n].sample_bytes;
                print_case(&o, c, &res[n]);
                n++;
            }
        }
    }
    print_legend();
    if (interrupted)
        say("(interrupted: %u of %u cases ran)\n", n, ncases);
    if (!interrupted && raw_probe(root, raw.nsamples, &raw.end_p50_ns, &raw.end_p99_ns) == 0) {
        say("\n4 KiB pwrite+fdatasync after the cases: p50 %.3f ms, p99 %.3f ms (before: p50 "
            "%.3f ms)\n",
            ms(raw.end_p50_ns), ms(raw.end_p99_ns), ms(raw.small_p50_ns));
        double a = (double)raw.end_p50_ns, b = (double)raw.small_p50_ns;
        if (a > 2 * b || b > 2 * a)
            say("WARNING: the disk changed speed during the run (a shared or rate-limited "
                "device?); compare cases with care, or run again\n");
        if (o.json)
            printf("{\"case\":\"raw_end\",\"sync_4k_p50_ms\":%.4f,\"sync_4k_p99_ms\":%.4f}\n",
                   ms(raw.end_p50_ns), ms(raw.end_p99_ns));
    }
    print_ratios(&o, &raw, cases, res, n);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    say("\npeak RSS: %.1f MiB (includes the latency sample arrays, at most %.1f MiB in one "
        "case)\n",
        (double)ru.ru_maxrss / 1024.0, (double)max_samples / MIB);
    getloadavg(load, 1);
    say("load average at the end: %.2f\n", load[0]);
    if (o.json)
        printf("{\"case\":\"process\",\"peak_rss_kib\":%ld,\"max_sample_bytes\":%zu,"
               "\"load_average_end\":%.2f}\n",
               ru.ru_maxrss, max_samples, load[0]);
    free(cases);
    free(res);

done:
    remove_tree(root);
    return status;
}
