/*
 * bench/broker.c — how fast is the in-process broker (broker.h), and how much
 * memory does it need? A program that prints figures, never a pass/fail test.
 *
 * In one run, in a fresh temporary directory under --dir (removed at the
 * end), with the durability policy of --fsync (default "always"), 100-byte
 * messages:
 *
 *   1. publish: broker_publish of 100 messages per call, then
 *      broker_wait_durable.
 *   2. queue: on a pre-filled backlog, cycles of broker_queue_receive (batch
 *      100), broker_queue_ack of those 100 ids, wait durable.
 *   3. FIFO: the same on a backlog keyed over 10,000 keys (FIFO groups).
 *   4. stream replay: a large backlog (default 10M messages) read from the
 *      start by broker_stream_receive (batch 1000) + broker_stream_commit of
 *      the last offset, wait durable — until the end of the backlog.
 *   5. memory: on the same backlog, a queue group with 10,000 messages leased
 *      and not acked: peak RSS (getrusage) and current RSS (/proc/self/statm)
 *      before and after, and the growth per in-flight message.
 *
 * Every call-based case runs in three variants (the same work, one thread,
 * like the server's event loop):
 *   "1 caller"   each call waits for its own durability before the next;
 *   "K burst"    K calls are issued, then the caller waits for the last one's
 *                durability (which covers all K), and starts the next K;
 *   "K window"   a closed loop of K callers: K calls outstanding at all times;
 *                when K are outstanding the oldest is waited for, and every
 *                call found durable by then completes (the way the loop keeps
 *                many connections' requests in flight while the group-commit
 *                thread syncs).
 * Latency is per call: from its issue to the moment it was seen durable.
 *
 * Invariants of the measurement:
 *   1. Each section (publish, queue, FIFO, replay+memory) runs in its own
 *      child process, forked from a parent that never opened a broker, so
 *      "peak RSS" is that section's own peak (the parent collects the rows
 *      through a pipe and prints the summary).
 *   2. Backlogs are written with fsync "never" (setup, reported separately),
 *      then the broker is closed (checkpoint) and reopened with --fsync: the
 *      measured calls run under the policy asked for.
 *   3. A measured window starts and ends with nothing outstanding: the
 *      warm-up is drained before it starts, and the end drains every call.
 *   4. broker_tick runs about once a second inside the loops, as the server
 *      calls it (checkpoints and retention are part of the cost).
 *   5. Every variant of a consumer case uses its own consumer group, so each
 *      starts from the beginning of the same backlog.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "broker/broker.h"
#include "coyote.h"

#define MIB (1024.0 * 1024.0)
#define MSG_BYTES 100u
#define CALL_BATCH 100u    /* publish / queue / FIFO messages per call */
#define REPLAY_BATCH 1000u /* stream receive batch */
#define SETUP_BATCH 1000u  /* messages per publish while filling a backlog */
#define MEM_BATCH 1000u    /* receive batch of the memory case */
#define MAX_ROWS 16
#define TICK_MS 1000u

#define TARGET_PUBLISH 1e6
#define TARGET_QUEUE 5e5
#define TARGET_FIFO 3e5
#define TARGET_REPLAY 2e6
#define TARGET_RSS_MB 100.0

enum { SEC_PUBLISH = 1, SEC_QUEUE = 2, SEC_FIFO = 4, SEC_REPLAY = 8 };

/* ---- options ------------------------------------------------------------ */

struct options {
    const char *dir;
    enum journal_fsync fsync;
    uint32_t fsync_interval_ms;
    char fsync_name[24];
    double seconds;     /* measured duration of a publish / queue / FIFO variant */
    double warmup;      /* unmeasured lead-in of each of those variants */
    double max_seconds; /* cap of one stream replay variant */
    unsigned callers;   /* K */
    uint64_t queue_msgs, fifo_msgs, replay_msgs;
    uint32_t fifo_keys;
    uint32_t inflight;
    unsigned sections;
};

static volatile sig_atomic_t interrupted;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* snprintf that may truncate (labels, error texts): no truncation warning. */
static void fmt_into(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fmt_into(char *dst, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_broker [options]\n"
            "\n"
            "Measures the in-process broker (publish, queue and FIFO receive+ack, stream\n"
            "replay) and the memory of a queue group over a large backlog, with 100 B\n"
            "messages, and prints the figures next to the targets.\n"
            "\n"
            "  --dir PATH          where to create the temporary data directory (default: the\n"
            "                      current directory; use the file system of the data dir)\n"
            "  --fsync POLICY      always (default) | interval=N | never\n"
            "  --quick             1 s per variant after 0.2 s warm-up, backlogs of 1M\n"
            "                      messages (queue, FIFO, replay)\n"
            "  --seconds N         measured duration of each publish/queue/FIFO variant\n"
            "                      (default 3)\n"
            "  --warmup N          unmeasured lead-in of those variants, seconds (default 0.5)\n"
            "  --max-seconds N     cap on one stream replay variant (default 60)\n"
            "  --callers K         calls in flight in the burst and window variants (default 64)\n"
            "  --queue-msgs N      queue backlog (default 3000000)\n"
            "  --fifo-msgs N       FIFO backlog (default 2000000)\n"
            "  --fifo-keys N       distinct keys of the FIFO backlog (default 10000)\n"
            "  --replay-msgs N     stream replay / memory backlog (default 10000000)\n"
            "  --inflight N        leased, unacked messages of the memory case (default 10000)\n"
            "  --only LIST         sections to run, comma-separated: publish,queue,fifo,replay\n"
            "                      (replay includes the memory case; default: all)\n"
            "  --help              this text\n"
            "\n"
            "Variants: \"1 caller\" waits for each call's durability; \"K burst\" issues K calls\n"
            "then waits for the last; \"K window\" keeps K calls outstanding (waits for the\n"
            "oldest when K are out). Latency is per call, issue to durable. Peak RSS is per\n"
            "section (each runs in its own process).\n");
}

static int parse_double(const char *s, double *v)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !(d >= 0))
        return CY_EINVAL;
    *v = d;
    return 0;
}

static int parse_u64(const char *s, uint64_t *v, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s || *end || x < min || x > max || *s == '-')
        return CY_EINVAL;
    *v = x;
    return 0;
}

static int parse_sections(const char *s, unsigned *out)
{
    *out = 0;
    while (*s) {
        size_t len = strcspn(s, ",");
        if (len == 7 && !strncmp(s, "publish", 7))
            *out |= SEC_PUBLISH;
        else if (len == 5 && !strncmp(s, "queue", 5))
            *out |= SEC_QUEUE;
        else if (len == 4 && !strncmp(s, "fifo", 4))
            *out |= SEC_FIFO;
        else if ((len == 6 && !strncmp(s, "replay", 6)) || (len == 6 && !strncmp(s, "memory", 6)))
            *out |= SEC_REPLAY;
        else
            return CY_EINVAL;
        s += len;
        if (*s)
            s++;
    }
    return *out ? 0 : CY_EINVAL;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){.dir = ".", .seconds = 3, .warmup = 0.5, .max_seconds = 60,
                          .callers = 64, .queue_msgs = 3000000, .fifo_msgs = 2000000,
                          .replay_msgs = 10000000, .fifo_keys = 10000, .inflight = 10000,
                          .sections = SEC_PUBLISH | SEC_QUEUE | SEC_FIFO | SEC_REPLAY};
    /* --quick first, so explicit sizes win whatever the order. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") == 0) {
            o->seconds = 1;
            o->warmup = 0.2;
            o->queue_msgs = 1000000;
            o->fifo_msgs = 1000000;
            o->replay_msgs = 1000000;
        }
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = true;
        uint64_t x;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--quick") == 0) {
            takes = false;
        } else if (!v) {
            rc = CY_EINVAL;
        } else if (strcmp(a, "--dir") == 0) {
            o->dir = v;
        } else if (strcmp(a, "--fsync") == 0) {
            rc = journal_fsync_parse(v, &o->fsync, &o->fsync_interval_ms);
        } else if (strcmp(a, "--seconds") == 0) {
            rc = parse_double(v, &o->seconds);
            if (!rc && o->seconds <= 0)
                rc = CY_EINVAL;
        } else if (strcmp(a, "--warmup") == 0) {
            rc = parse_double(v, &o->warmup);
        } else if (strcmp(a, "--max-seconds") == 0) {
            rc = parse_double(v, &o->max_seconds);
            if (!rc && o->max_seconds <= 0)
                rc = CY_EINVAL;
        } else if (strcmp(a, "--callers") == 0) {
            rc = parse_u64(v, &x, 2, 100000);
            o->callers = (unsigned)x;
        } else if (strcmp(a, "--queue-msgs") == 0) {
            rc = parse_u64(v, &o->queue_msgs, CALL_BATCH, UINT64_C(1) << 40);
        } else if (strcmp(a, "--fifo-msgs") == 0) {
            rc = parse_u64(v, &o->fifo_msgs, CALL_BATCH, UINT64_C(1) << 40);
        } else if (strcmp(a, "--fifo-keys") == 0) {
            rc = parse_u64(v, &x, 1, 10000000);
            o->fifo_keys = (uint32_t)x;
        } else if (strcmp(a, "--replay-msgs") == 0) {
            rc = parse_u64(v, &o->replay_msgs, REPLAY_BATCH, UINT64_C(1) << 40);
        } else if (strcmp(a, "--inflight") == 0) {
            rc = parse_u64(v, &x, 1, 100000000);
            o->inflight = (uint32_t)x;
        } else if (strcmp(a, "--only") == 0) {
            rc = parse_sections(v, &o->sections);
        } else {
            rc = CY_EINVAL;
        }
        if (rc) {
            fprintf(stderr, "bench_broker: bad option %s%s%s (see --help)\n", a,
                    v && takes ? " " : "", v && takes ? v : "");
            return rc;
        }
        if (takes)
            i++;
    }
    if (o->inflight > o->replay_msgs) {
        fprintf(stderr, "bench_broker: --inflight must not exceed --replay-msgs\n");
        return CY_EINVAL;
    }
    journal_fsync_name(o->fsync, o->fsync_interval_ms, o->fsync_name, sizeof o->fsync_name);
    return 0;
}

/* ---- small helpers ------------------------------------------------------ */

static double now_s(void) { return (double)clock_mono_ns() / 1e9; }

static double ms(uint64_t ns) { return (double)ns / 1e6; }

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array (p in [0, 1]). */
static uint64_t pct_u64(const uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t k = (size_t)(p * (double)n + 0.999999);
    return v[k ? k - 1 : 0];
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

/* Current RSS, KiB (/proc/self/statm: size resident ...), -1 if unknown. */
static long cur_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (n != 2)
        return -1;
    return (long)(resident * (unsigned long)sysconf(_SC_PAGESIZE) / 1024);
}

/* Peak RSS of this process so far, KiB: getrusage's ru_maxrss. The kernel's
 * RSS counters are approximate (per-CPU / per-thread caches), so it can read
 * a little below the current RSS: never report a peak below that. */
static long peak_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long cur = cur_rss_kib();
    return ru.ru_maxrss > cur ? ru.ru_maxrss : cur;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static double kib_mib(long kib) { return (double)kib / 1024.0; }

/* The first three fields of /proc/loadavg ("?" when unknown): the figures
 * of a CPU-bound case depend on what else the machine runs. */
static const char *loadavg(char *buf, size_t n)
{
    snprintf(buf, n, "?");
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f)
        return buf;
    double a, b, c;
    if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
        snprintf(buf, n, "%.2f %.2f %.2f", a, b, c);
    fclose(f);
    return buf;
}

/* ---- result rows (child → parent through a pipe) ------------------------ */

enum row_kind { ROW_RATE, ROW_SETUP, ROW_MEMORY, ROW_FAILED, ROW_NOTE };

struct row {
    int kind;
    char label[48];
    char variant[24];
    uint64_t msgs, calls;
    double secs;
    double rate;   /* msgs/s */
    double target; /* msgs/s; MiB for ROW_MEMORY */
    uint64_t p50_ns, p99_ns, max_ns;
    double cpu_pct;
    long peak_rss_kib; /* of the section's process when the row was made */
    /* ROW_MEMORY */
    long rss_before_kib, rss_after_kib, peak_before_kib;
    uint64_t backlog, in_flight;
    double bytes_per_msg;
    char error[200];
};

static int row_fd = -1; /* the child's end of the pipe */

static void emit(struct row *r)
{
    r->peak_rss_kib = peak_rss_kib();
    if (row_fd >= 0) {
        /* Smaller than PIPE_BUF: one atomic write. */
        ssize_t w = write(row_fd, r, sizeof *r);
        (void)w;
    }
}

static void fail_row(const char *label, const char *what, int rc, const struct broker_error *err)
{
    struct row r = {.kind = ROW_FAILED};
    snprintf(r.label, sizeof r.label, "%s", label);
    if (err && err->code)
        fmt_into(r.error, sizeof r.error, "%s: %s (%d %s: %s)", what, cy_strerror(rc),
                 err->status, err->code, err->detail);
    else
        snprintf(r.error, sizeof r.error, "%s: %s", what, cy_strerror(rc));
    say("  FAILED: %s\n", r.error);
    emit(&r);
}

/* ---- the broker --------------------------------------------------------- */

struct bench {
    const struct options *o;
    char dir[4096];
    struct broker *b;
    uint64_t last_tick_ms;
    uint64_t tick_max_ns; /* longest broker_tick since reset (checkpoints run in it) */
    uint8_t value[MSG_BYTES + 256];
    struct broker_error err;
};

static int bench_open(struct bench *bn, enum journal_fsync pol, uint32_t interval_ms)
{
    struct broker_config cfg = {.data_dir = bn->dir, .fsync = pol,
                                .fsync_interval_ms = interval_ms};
    broker_limits_default(&cfg.limits);
    memset(&bn->err, 0, sizeof bn->err);
    int rc = broker_open(&cfg, &bn->b, &bn->err);
    bn->last_tick_ms = clock_mono_ms();
    return rc;
}

static int bench_close(struct bench *bn)
{
    int rc = broker_close(bn->b);
    bn->b = NULL;
    return rc;
}

/* broker_tick about once a second, as the server does. */
static void maybe_tick(struct bench *bn)
{
    uint64_t t = clock_mono_ms();
    if (t - bn->last_tick_ms >= TICK_MS) {
        uint64_t t0 = clock_mono_ns();
        broker_tick(bn->b);
        uint64_t d = clock_mono_ns() - t0;
        if (d > bn->tick_max_ns)
            bn->tick_max_ns = d;
        bn->last_tick_ms = t;
    }
}

static const char *err_text(const struct broker_error *e)
{
    return e->code ? e->detail : "";
}

/* ---- the call pipeline: 1 caller, K burst, K window --------------------- */

enum pipe_mode { PIPE_SERIAL, PIPE_BURST, PIPE_WINDOW };

struct variant {
    enum pipe_mode mode;
    unsigned k;
    char name[24];
};

struct pending {
    uint64_t t0;
    struct broker_wait w;
};

struct pipeline {
    struct bench *bn;
    enum pipe_mode mode;
    unsigned k;
    struct pending *ring;
    unsigned head, count;
    bool record;
    uint64_t *lat;
    size_t nlat, caplat;
    uint64_t msgs, calls;
};

static int pipe_init(struct pipeline *pl, struct bench *bn, const struct variant *v)
{
    memset(pl, 0, sizeof *pl);
    pl->bn = bn;
    pl->mode = v->mode;
    pl->k = v->mode == PIPE_SERIAL ? 1 : v->k;
    pl->ring = calloc(pl->k, sizeof *pl->ring);
    return pl->ring ? 0 : CY_ENOMEM;
}

static void pipe_free(struct pipeline *pl)
{
    free(pl->ring);
    free(pl->lat);
}

static int pipe_sample(struct pipeline *pl, uint64_t ns)
{
    if (!pl->record)
        return 0;
    if (pl->nlat == pl->caplat) {
        size_t cap = pl->caplat ? pl->caplat * 2 : 4096;
        uint64_t *l = realloc(pl->lat, cap * sizeof *l);
        if (!l)
            return CY_ENOMEM;
        pl->lat = l;
        pl->caplat = cap;
    }
    pl->lat[pl->nlat++] = ns;
    return 0;
}

/* Complete the oldest outstanding call at time t. */
static int pipe_pop(struct pipeline *pl, uint64_t t)
{
    int rc = pipe_sample(pl, t - pl->ring[pl->head].t0);
    pl->head = (pl->head + 1) % pl->k;
    pl->count--;
    return rc;
}

/* Wait for every outstanding call; they complete together. */
static int pipe_drain(struct pipeline *pl)
{
    for (unsigned i = 0; i < pl->count; i++) {
        int rc = broker_wait_durable(pl->bn->b, &pl->ring[(pl->head + i) % pl->k].w);
        if (rc)
            return rc;
    }
    uint64_t t = clock_mono_ns();
    while (pl->count) {
        int rc = pipe_pop(pl, t);
        if (rc)
            return rc;
    }
    return 0;
}

/* One call was issued at t0 and must be durable at w before it is answered. */
static int pipe_push(struct pipeline *pl, uint64_t t0, const struct broker_wait *w)
{
    pl->ring[(pl->head + pl->count) % pl->k] = (struct pending){t0, *w};
    pl->count++;
    if (pl->count < pl->k)
        return 0;
    if (pl->mode != PIPE_WINDOW)
        return pipe_drain(pl);
    int rc = broker_wait_durable(pl->bn->b, &pl->ring[pl->head].w);
    if (rc)
        return rc;
    uint64_t t = clock_mono_ns();
    rc = pipe_pop(pl, t);
    while (!rc && pl->count) {
        bool failed;
        if (!broker_is_durable(pl->bn->b, &pl->ring[pl->head].w, &failed))
            break;
        if (failed)
            return CY_EREADONLY;
        rc = pipe_pop(pl, t);
    }
    return rc;
}

/* One call of a case: do it, report the messages it moved (0: nothing left,
 * nothing to wait for) and what it must wait for. */
typedef int (*call_fn)(struct bench *bn, void *ctx, struct broker_wait *w, uint32_t *msgs);

struct measured {
    uint64_t msgs, calls;
    double secs, cpu_pct;
    uint64_t p50, p99, max;
    uint64_t tick_max; /* longest broker_tick in the measured window */
    bool exhausted;
};

/* Run one variant: `warmup` seconds unmeasured (drained), then `seconds`
 * measured, or until a call reports nothing left. */
static int run_variant(struct bench *bn, const struct variant *v, call_fn fn, void *ctx,
                       double warmup, double seconds, struct measured *m)
{
    struct pipeline pl;
    memset(m, 0, sizeof *m);
    int rc = pipe_init(&pl, bn, v);
    if (rc)
        return rc;
    for (int phase = 0; phase < 2 && !rc && !m->exhausted; phase++) {
        double len = phase == 0 ? warmup : seconds;
        if (len <= 0)
            continue;
        pl.record = phase == 1;
        bn->tick_max_ns = 0;
        uint64_t msgs0 = pl.msgs, calls0 = pl.calls;
        double cpu0 = cpu_seconds();
        double t0 = now_s(), until = t0 + len;
        while (!rc && !interrupted) {
            uint64_t c0 = clock_mono_ns();
            struct broker_wait w = {0};
            uint32_t n = 0;
            rc = fn(bn, ctx, &w, &n);
            if (rc)
                break;
            if (n == 0) {
                m->exhausted = true;
                break;
            }
            pl.msgs += n;
            pl.calls++;
            rc = pipe_push(&pl, c0, &w);
            maybe_tick(bn);
            if ((pl.calls & 15) == 0 && now_s() >= until)
                break;
        }
        if (!rc)
            rc = pipe_drain(&pl);
        if (phase == 1 && !rc) {
            m->secs = now_s() - t0;
            m->msgs = pl.msgs - msgs0;
            m->calls = pl.calls - calls0;
            m->cpu_pct = m->secs > 0 ? 100.0 * (cpu_seconds() - cpu0) / m->secs : 0;
            m->tick_max = bn->tick_max_ns;
        }
    }
    if (!rc && pl.nlat) {
        qsort(pl.lat, pl.nlat, sizeof *pl.lat, cmp_u64);
        m->p50 = pct_u64(pl.lat, pl.nlat, 0.50);
        m->p99 = pct_u64(pl.lat, pl.nlat, 0.99);
        m->max = pl.lat[pl.nlat - 1];
    }
    pipe_free(&pl);
    return rc;
}

static void variants_of(const struct options *o, struct variant v[3])
{
    v[0] = (struct variant){PIPE_SERIAL, 1, "1 caller"};
    v[1] = (struct variant){PIPE_BURST, o->callers, ""};
    v[2] = (struct variant){PIPE_WINDOW, o->callers, ""};
    snprintf(v[1].name, sizeof v[1].name, "%u burst", o->callers);
    snprintf(v[2].name, sizeof v[2].name, "%u window", o->callers);
}

static void print_rate_header(void)
{
    say("  %-10s %11s %9s %9s %9s %6s %11s %9s %6s %8s\n", "variant", "msgs/s", "p50 ms",
        "p99 ms", "max ms", "cpu%", "msgs/cpu-s", "calls", "secs", "tick ms");
}

static void rate_row(const char *label, const struct variant *v, const struct measured *m,
                     double target)
{
    struct row r = {.kind = ROW_RATE, .msgs = m->msgs, .calls = m->calls, .secs = m->secs,
                    .target = target, .p50_ns = m->p50, .p99_ns = m->p99, .max_ns = m->max,
                    .cpu_pct = m->cpu_pct};
    snprintf(r.label, sizeof r.label, "%s", label);
    snprintf(r.variant, sizeof r.variant, "%s", v->name);
    r.rate = m->secs > 0 ? (double)m->msgs / m->secs : 0;
    if (!m->msgs) {
        r.kind = ROW_NOTE;
        fmt_into(r.error, sizeof r.error, "%s: no measurement: the backlog ran out during the "
                 "warm-up (raise the backlog size)", v->name);
        say("  %-10s %s\n", v->name, r.error + strlen(v->name) + 2);
        emit(&r);
        return;
    }
    say("  %-10s %11.0f %9.3f %9.3f %9.3f %6.0f %11.0f %9" PRIu64 " %6.2f %8.1f%s\n", v->name,
        r.rate, ms(m->p50), ms(m->p99), ms(m->max), m->cpu_pct,
        m->cpu_pct > 0 ? r.rate * 100.0 / m->cpu_pct : 0, m->calls, m->secs, ms(m->tick_max),
        m->exhausted ? "  (backlog exhausted)" : "");
    emit(&r);
}

/* ---- filling a backlog ---------------------------------------------------- */

struct keyset {
    char *buf; /* n keys of KEY_LEN bytes */
    uint32_t n;
};
#define KEY_LEN 6 /* "k00000" */

/* Publish `total` messages to `topic` in batches of SETUP_BATCH under fsync
 * "never", close (checkpoint) and reopen under the policy asked for. */
static int fill_backlog(struct bench *bn, const char *label, struct bstr topic, uint64_t total,
                        const struct keyset *keys)
{
    const struct options *o = bn->o;
    double t0 = now_s(), cpu0 = cpu_seconds();
    int rc = bench_open(bn, JOURNAL_FSYNC_NEVER, 0);
    if (rc) {
        fail_row(label, "broker_open (never)", rc, &bn->err);
        return rc;
    }
    struct broker_msg_in *msgs = calloc(SETUP_BATCH, sizeof *msgs);
    if (!msgs) {
        bench_close(bn);
        return CY_ENOMEM;
    }
    uint64_t done = 0, next_report = total / 4;
    while (done < total && !interrupted) {
        uint32_t n = total - done < SETUP_BATCH ? (uint32_t)(total - done) : SETUP_BATCH;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t k = done + i;
            msgs[i] = (struct broker_msg_in){.value = bn->value + (k & 127),
                                             .value_len = MSG_BYTES};
            if (keys) {
                msgs[i].has_key = true;
                msgs[i].key = (struct bstr){keys->buf + (k % keys->n) * KEY_LEN, KEY_LEN};
            }
        }
        struct broker_publish_req req = {.topic = {topic, -1}, .msgs = msgs, .n_msgs = n};
        struct broker_publish_res res;
        struct broker_wait w;
        rc = broker_publish(bn->b, &req, &res, &w, &bn->err);
        if (rc) {
            fail_row(label, "broker_publish (setup)", rc, &bn->err);
            break;
        }
        done += n;
        maybe_tick(bn);
        if (total >= 4000000 && done >= next_report && done < total) {
            say("  setup: %" PRIu64 " of %" PRIu64 " messages published (%.1f s)\n", done, total,
                now_s() - t0);
            next_report += total / 4;
        }
    }
    free(msgs);
    double t_pub = now_s() - t0;
    double tc = now_s();
    int crc = bench_close(bn);
    if (!rc && crc) {
        fail_row(label, "broker_close (setup)", crc, NULL);
        rc = crc;
    }
    double t_close = now_s() - tc;
    if (rc || interrupted)
        return rc ? rc : CY_ECLOSED;
    double to = now_s();
    rc = bench_open(bn, o->fsync, o->fsync_interval_ms);
    if (rc) {
        fail_row(label, "broker_open", rc, &bn->err);
        return rc;
    }
    double t_open = now_s() - to;
    double secs = now_s() - t0;
    say("  setup: %" PRIu64 " messages%s published under fsync never in %.2f s (%.0f msgs/s, "
        "cpu %.0f%%); close %.2f s (sync + checkpoint); reopen under %s %.3f s; RSS %.1f MiB "
        "(peak %.1f MiB)\n",
        total, keys ? " (keyed)" : "", t_pub, (double)total / t_pub,
        100.0 * (cpu_seconds() - cpu0) / secs, t_close, o->fsync_name, t_open,
        kib_mib(cur_rss_kib()), kib_mib(peak_rss_kib()));
    struct row r = {.kind = ROW_SETUP, .msgs = total, .secs = secs,
                    .rate = (double)total / t_pub};
    snprintf(r.label, sizeof r.label, "%s", label);
    snprintf(r.variant, sizeof r.variant, "setup");
    emit(&r);
    return 0;
}

/* ---- 1. publish ----------------------------------------------------------- */

struct pub_ctx {
    struct broker_msg_in msgs[CALL_BATCH];
    uint64_t seq;
};

static int publish_call(struct bench *bn, void *arg, struct broker_wait *w, uint32_t *msgs)
{
    struct pub_ctx *c = arg;
    for (uint32_t i = 0; i < CALL_BATCH; i++)
        c->msgs[i] = (struct broker_msg_in){.value = bn->value + ((c->seq + i) & 127),
                                            .value_len = MSG_BYTES};
    c->seq += CALL_BATCH;
    struct broker_publish_req req = {.topic = {BSTR("pub"), -1}, .msgs = c->msgs,
                                     .n_msgs = CALL_BATCH};
    struct broker_publish_res res;
    int rc = broker_publish(bn->b, &req, &res, w, &bn->err);
    if (rc)
        return rc;
    *msgs = CALL_BATCH;
    return 0;
}

static int section_publish(struct bench *bn)
{
    const struct options *o = bn->o;
    const char *label = "publish";
    say("== 1. publish: %u x %u B per call, fsync %s ==\n", CALL_BATCH, MSG_BYTES,
        o->fsync_name);
    int rc = bench_open(bn, o->fsync, o->fsync_interval_ms);
    if (rc) {
        fail_row(label, "broker_open", rc, &bn->err);
        return rc;
    }
    struct variant v[3];
    variants_of(o, v);
    print_rate_header();
    struct pub_ctx *c = calloc(1, sizeof *c);
    rc = c ? 0 : CY_ENOMEM;
    for (int i = 0; i < 3 && !rc && !interrupted; i++) {
        struct measured m;
        rc = run_variant(bn, &v[i], publish_call, c, o->warmup, o->seconds, &m);
        if (rc)
            fail_row(label, v[i].name, rc, &bn->err);
        else
            rate_row(label, &v[i], &m, TARGET_PUBLISH);
    }
    free(c);
    int crc = bench_close(bn);
    return rc ? rc : crc;
}

/* ---- 2, 3. queue and FIFO receive + ack ----------------------------------- */

struct q_ctx {
    enum broker_mode mode;
    struct bstr topic;
    char group[32];
    uint32_t batch;
    uint64_t lease_ms;
    struct broker_msg_id ids[REPLAY_BATCH];
};

static int queue_call(struct bench *bn, void *arg, struct broker_wait *w, uint32_t *msgs)
{
    struct q_ctx *c = arg;
    struct bstr group = {c->group, strlen(c->group)};
    struct broker_receive_req rq = {.topic = {c->topic, -1}, .group = group,
                                    .batch_size = c->batch, .has_lease = c->lease_ms != 0,
                                    .lease_ms = c->lease_ms};
    struct broker_receive_res res;
    struct broker_wait rw;
    int rc = broker_queue_receive(bn->b, c->mode, &rq, &res, &rw, &bn->err);
    if (rc)
        return rc;
    *msgs = (uint32_t)res.n;
    if (!res.n)
        return 0;
    for (size_t i = 0; i < res.n; i++)
        c->ids[i] = (struct broker_msg_id){res.msgs[i].partition, res.msgs[i].offset};
    struct broker_ids_req ar = {.topic = c->topic, .group = group, .ids = c->ids,
                                .n_ids = res.n};
    rc = broker_queue_ack(bn->b, c->mode, &ar, w, &bn->err);
    if (!rc && !w->ns)
        *w = rw;
    return rc;
}

static int section_queue(struct bench *bn, enum broker_mode mode)
{
    const struct options *o = bn->o;
    bool fifo = mode == BROKER_FIFO;
    const char *label = fifo ? "FIFO" : "queue";
    uint64_t total = fifo ? o->fifo_msgs : o->queue_msgs;
    struct bstr topic = fifo ? BSTR("fifo") : BSTR("queue");
    if (fifo)
        say("\n== 3. FIFO receive + ack: batches of %u on a backlog of %" PRIu64
            " messages over %" PRIu32 " keys, fsync %s ==\n",
            CALL_BATCH, total, o->fifo_keys, o->fsync_name);
    else
        say("\n== 2. queue receive + ack: batches of %u on a backlog of %" PRIu64
            " messages, fsync %s ==\n",
            CALL_BATCH, total, o->fsync_name);
    struct keyset keys = {0};
    if (fifo) {
        keys.n = o->fifo_keys;
        keys.buf = malloc((size_t)keys.n * KEY_LEN + 1);
        if (!keys.buf)
            return CY_ENOMEM;
        for (uint32_t i = 0; i < keys.n; i++) {
            char tmp[16];
            snprintf(tmp, sizeof tmp, "k%05" PRIu32, i % 100000);
            memcpy(keys.buf + (size_t)i * KEY_LEN, tmp, KEY_LEN);
        }
    }
    int rc = fill_backlog(bn, label, topic, total, fifo ? &keys : NULL);
    free(keys.buf);
    if (rc)
        return rc;
    struct variant v[3];
    variants_of(o, v);
    print_rate_header();
    for (int i = 0; i < 3 && !rc && !interrupted; i++) {
        struct q_ctx c = {.mode = mode, .topic = topic, .batch = CALL_BATCH};
        snprintf(c.group, sizeof c.group, "g%d", i);
        struct measured m;
        rc = run_variant(bn, &v[i], queue_call, &c, o->warmup, o->seconds, &m);
        if (rc)
            fail_row(label, v[i].name, rc, &bn->err);
        else
            rate_row(label, &v[i], &m, fifo ? TARGET_FIFO : TARGET_QUEUE);
    }
    int crc = bench_close(bn);
    return rc ? rc : crc;
}

/* ---- 4. stream replay ------------------------------------------------------- */

struct s_ctx {
    char group[32];
};

static int stream_call(struct bench *bn, void *arg, struct broker_wait *w, uint32_t *msgs)
{
    struct s_ctx *c = arg;
    struct bstr group = {c->group, strlen(c->group)};
    struct broker_receive_req rq = {.topic = {BSTR("replay"), -1}, .group = group,
                                    .batch_size = REPLAY_BATCH, .start_earliest = true};
    struct broker_receive_res res;
    struct broker_wait rw;
    int rc = broker_stream_receive(bn->b, &rq, &res, &rw, &bn->err);
    if (rc)
        return rc;
    *msgs = (uint32_t)res.n;
    if (!res.n)
        return 0;
    /* Commit the last offset received of every partition in the batch. */
    uint64_t last[BROKER_MAX_PARTITIONS];
    bool seen[BROKER_MAX_PARTITIONS] = {false};
    for (size_t i = 0; i < res.n; i++) {
        uint32_t p = res.msgs[i].partition;
        if (p < BROKER_MAX_PARTITIONS) {
            last[p] = res.msgs[i].offset;
            seen[p] = true;
        }
    }
    *w = rw;
    for (uint32_t p = 0; p < BROKER_MAX_PARTITIONS && !rc; p++) {
        if (!seen[p])
            continue;
        struct broker_commit_req cr = {.topic = {BSTR("replay"), (int32_t)p}, .group = group,
                                       .offset = last[p]};
        struct broker_wait cw;
        rc = broker_stream_commit(bn->b, &cr, &cw, &bn->err);
        if (!rc && cw.ns)
            *w = cw; /* later than the receive's */
    }
    return rc;
}

/* ---- 5. memory ---------------------------------------------------------------- */

static int memory_case(struct bench *bn, long rss_start_kib)
{
    const struct options *o = bn->o;
    const char *label = "memory";
    say("\n== 5. memory: queue group over the %" PRIu64 "-message backlog, %" PRIu32
        " messages leased and not acked ==\n",
        o->replay_msgs, o->inflight);
    /* Warm the receive path's reusable buffers in another group, so the growth
     * measured below is the group state, not the first receive's scratch. */
    struct bstr topic = BSTR("replay");
    struct broker_receive_req rq = {.topic = {topic, -1}, .batch_size = MEM_BATCH,
                                    .has_lease = true, .lease_ms = 3600 * 1000};
    struct broker_receive_res res;
    struct broker_wait w;
    rq.group = BSTR("mem-warm");
    int rc = broker_queue_receive(bn->b, BROKER_QUEUE, &rq, &res, &w, &bn->err);
    if (rc) {
        fail_row(label, "broker_queue_receive (warm-up)", rc, &bn->err);
        return rc;
    }
    long before = cur_rss_kib(), peak_before = peak_rss_kib();
    rq.group = BSTR("mem");
    uint64_t got = 0;
    double t0 = now_s();
    while (got < o->inflight && !interrupted) {
        uint32_t want = o->inflight - got < MEM_BATCH ? (uint32_t)(o->inflight - got) : MEM_BATCH;
        rq.batch_size = want;
        rc = broker_queue_receive(bn->b, BROKER_QUEUE, &rq, &res, &w, &bn->err);
        if (rc) {
            fail_row(label, "broker_queue_receive", rc, &bn->err);
            return rc;
        }
        if (!res.n)
            break;
        got += res.n;
    }
    double secs = now_s() - t0;
    long after = cur_rss_kib(), peak_after = peak_rss_kib();
    struct broker_group_info gi;
    uint64_t in_flight = got;
    if (broker_group_get(bn->b, (struct broker_ns_ref){0}, topic, BROKER_QUEUE, BSTR("mem"), &gi,
                         &bn->err) == 0)
        in_flight = gi.in_flight;
    else
        say("  (broker_group_get failed: %s)\n", err_text(&bn->err));
    struct row r = {.kind = ROW_MEMORY, .msgs = got, .secs = secs, .target = TARGET_RSS_MB,
                    .rss_before_kib = before, .rss_after_kib = after,
                    .peak_before_kib = peak_before, .backlog = o->replay_msgs,
                    .in_flight = in_flight};
    snprintf(r.label, sizeof r.label, "%s", label);
    snprintf(r.variant, sizeof r.variant, "%" PRIu32 " in flight", o->inflight);
    r.bytes_per_msg = got ? (double)(after - before) * 1024.0 / (double)got : 0;
    say("  RSS at the section's start %.1f MiB\n", kib_mib(rss_start_kib));
    say("  before the leases: current RSS %.1f MiB, peak RSS %.1f MiB\n", kib_mib(before),
        kib_mib(peak_before));
    say("  after %" PRIu64 " leased (group reports %" PRIu64 " in flight; %.3f s): current RSS "
        "%.1f MiB, peak RSS %.1f MiB\n",
        got, in_flight, secs, kib_mib(after), kib_mib(peak_after));
    say("  growth: %+.1f KiB = %.1f bytes per in-flight message (page granularity)\n",
        (double)(after - before), r.bytes_per_msg);
    emit(&r);
    return 0;
}

static int section_replay(struct bench *bn)
{
    const struct options *o = bn->o;
    const char *label = "stream";
    long rss_start = cur_rss_kib();
    say("\n== 4. stream replay: receive %u + commit, backlog of %" PRIu64 " messages, fsync %s "
        "==\n",
        REPLAY_BATCH, o->replay_msgs, o->fsync_name);
    int rc = fill_backlog(bn, label, BSTR("replay"), o->replay_msgs, NULL);
    if (rc)
        return rc;
    struct variant v[3];
    variants_of(o, v);
    print_rate_header();
    for (int i = 0; i < 3 && !rc && !interrupted; i++) {
        struct s_ctx c;
        snprintf(c.group, sizeof c.group, "s%d", i);
        struct measured m;
        rc = run_variant(bn, &v[i], stream_call, &c, 0, o->max_seconds, &m);
        if (rc)
            fail_row(label, v[i].name, rc, &bn->err);
        else
            rate_row(label, &v[i], &m, TARGET_REPLAY);
    }
    if (!rc && !interrupted)
        rc = memory_case(bn, rss_start);
    int crc = bench_close(bn);
    return rc ? rc : crc;
}

/* ---- sections in child processes ----------------------------------------------- */

struct results {
    struct row rows[MAX_ROWS * 4];
    unsigned n;
};

static int run_section(const struct options *o, const char *root, int sec, struct results *res)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -errno;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        close(fds[0]);
        close(fds[1]);
        return e;
    }
    if (pid == 0) {
        close(fds[0]);
        row_fd = fds[1];
        struct bench *bn = calloc(1, sizeof *bn);
        if (!bn)
            _exit(3);
        bn->o = o;
        uint64_t x = 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i < sizeof bn->value; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bn->value[i] = (uint8_t)('a' + x % 26);
        }
        const char *name = sec == SEC_PUBLISH ? "publish"
                           : sec == SEC_QUEUE ? "queue"
                           : sec == SEC_FIFO  ? "fifo"
                                              : "replay";
        fmt_into(bn->dir, sizeof bn->dir, "%s/%s", root, name);
        int rc;
        switch (sec) {
        case SEC_PUBLISH: rc = section_publish(bn); break;
        case SEC_QUEUE: rc = section_queue(bn, BROKER_QUEUE); break;
        case SEC_FIFO: rc = section_queue(bn, BROKER_FIFO); break;
        default: rc = section_replay(bn); break;
        }
        if (bn->b)
            broker_close(bn->b);
        remove_tree(bn->dir);
        fflush(stdout);
        close(row_fd);
        free(bn);
        _exit(rc ? 1 : 0);
    }
    close(fds[1]);
    struct row r;
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fds[0], (char *)&r + got, sizeof r - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == sizeof r) {
            if (res->n < sizeof res->rows / sizeof res->rows[0])
                res->rows[res->n++] = r;
            got = 0;
        }
    }
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFSIGNALED(status)) {
        struct row f = {.kind = ROW_FAILED};
        snprintf(f.label, sizeof f.label, "%s", sec == SEC_PUBLISH ? "publish"
                                                : sec == SEC_QUEUE ? "queue"
                                                : sec == SEC_FIFO  ? "FIFO"
                                                                   : "stream");
        snprintf(f.error, sizeof f.error, "the section's process died of signal %d (%s)",
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
        say("  FAILED: %s\n", f.error);
        if (res->n < sizeof res->rows / sizeof res->rows[0])
            res->rows[res->n++] = f;
        return CY_ECLOSED;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : CY_ECLOSED;
}

/* ---- summary -------------------------------------------------------------------- */

static const char *case_name(const char *label)
{
    if (!strcmp(label, "publish"))
        return "publish, 100 per call";
    if (!strcmp(label, "queue"))
        return "queue receive+ack, 100";
    if (!strcmp(label, "FIFO"))
        return "FIFO receive+ack, 100";
    if (!strcmp(label, "stream"))
        return "stream replay, 1000+commit";
    return label;
}

static void print_summary(const struct options *o, const struct results *res)
{
    say("\n== Summary: fsync %s, %u B messages; latency per call, issue to durable; peak RSS "
        "of the case's process ==\n",
        o->fsync_name, MSG_BYTES);
    say("%-27s %-10s %11s %9s %7s %9s %9s %11s %9s\n", "case", "variant", "msgs/s", "target",
        "of tgt", "p50 ms", "p99 ms", "msgs/cpu-s", "peak MiB");
    for (unsigned i = 0; i < res->n; i++) {
        const struct row *r = &res->rows[i];
        switch (r->kind) {
        case ROW_RATE:
            say("%-27s %-10s %11.0f %9.0f %6.0f%% %9.3f %9.3f %11.0f %9.1f\n",
                case_name(r->label), r->variant, r->rate, r->target, 100.0 * r->rate / r->target,
                ms(r->p50_ns), ms(r->p99_ns), r->cpu_pct > 0 ? r->rate * 100.0 / r->cpu_pct : 0,
                kib_mib(r->peak_rss_kib));
            break;
        case ROW_SETUP:
            say("%-27s %-10s %11.0f %9s %7s %9s %9s %11s %9.1f  (%" PRIu64 " msgs, fsync never; "
                "%.1f s with close+reopen)\n",
                case_name(r->label), "setup", r->rate, "-", "-", "-", "-", "-",
                kib_mib(r->peak_rss_kib), r->msgs, r->secs);
            break;
        case ROW_MEMORY:
            say("%-27s %-10s peak RSS %.1f MiB (target < %.0f MB = %.1f MiB: %s); current "
                "%.1f -> %.1f MiB; %+.1f B per in-flight msg (%" PRIu64 " backlog, %" PRIu64
                " in flight)\n",
                "memory, queue group", r->variant, kib_mib(r->peak_rss_kib), r->target,
                r->target * 1e6 / MIB,
                (double)r->peak_rss_kib * 1024.0 < r->target * 1e6 ? "under" : "OVER",
                kib_mib(r->rss_before_kib), kib_mib(r->rss_after_kib), r->bytes_per_msg,
                r->backlog, r->in_flight);
            break;
        case ROW_NOTE:
            say("%-27s %s\n", case_name(r->label), r->error);
            break;
        default:
            say("%-27s FAILED: %s\n", case_name(r->label), r->error);
            break;
        }
    }
}

/* ---- main ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    struct options o;
    if (parse_options(argc, argv, &o) != 0)
        return 2;
    log_set_level(CYLOG_WARN);

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char root[4096];
    int n = snprintf(root, sizeof root, "%s/coyote-bench-broker-XXXXXX", o.dir);
    if (n < 0 || (size_t)n >= sizeof root || !mkdtemp(root)) {
        fprintf(stderr, "bench_broker: cannot create a directory in %s: %s\n", o.dir,
                strerror(errno));
        return 1;
    }
    char la[64];
    say("bench_broker: fsync %s, %u B messages, %ld CPUs (load average %s); %.1f s per variant "
        "after %.1f s warm-up; K = %u; data in %s\n\n",
        o.fsync_name, MSG_BYTES, sysconf(_SC_NPROCESSORS_ONLN), loadavg(la, sizeof la),
        o.seconds, o.warmup, o.callers, root);

    struct results *res = calloc(1, sizeof *res);
    if (!res) {
        remove_tree(root);
        return 1;
    }
    int status = 0;
    static const int order[] = {SEC_PUBLISH, SEC_QUEUE, SEC_FIFO, SEC_REPLAY};
    for (size_t i = 0; i < sizeof order / sizeof order[0] && !interrupted; i++) {
        if (!(o.sections & order[i]))
            continue;
        if (run_section(&o, root, order[i], res) != 0)
            status = 1;
    }
    if (interrupted)
        say("\n(interrupted)\n");
    print_summary(&o, res);
    say("\nload average at the end: %s (msgs/s of CPU-bound variants drop when other work "
        "shares the CPUs; msgs/cpu-s = msgs per second of this process's CPU time, all "
        "threads)\n",
        loadavg(la, sizeof la));
    free(res);
    remove_tree(root);
    return status;
}
