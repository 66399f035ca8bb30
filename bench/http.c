/*
 * bench/http.c — an HTTP/1.1 load generator for coyoted. A program that
 * prints figures, never a pass/fail test.
 *
 * It starts the server itself (fork/exec of the coyoted next to this binary,
 * or --server PATH, on 127.0.0.1:0 with a temporary data directory under
 * --dir and --fsync always unless told otherwise), or drives a running one
 * (--url host:port). Then, each case for --seconds after a --warmup:
 *
 *   1. publish: batch 1 / 10 / 100 messages per request, 100 B / 1 KiB string
 *      values, JSON bodies (and MessagePack bodies, built by hand, for batch
 *      100), over each connection count of --conns (default 8 and 64).
 *   2. queue: receive (batch 100) + ack of the ids received, --consumers
 *      connections (default 4), on a backlog published beforehand.
 *   3. FIFO: the same with FIFO groups, backlog keyed over --fifo-keys keys.
 *   4. stream: receive (batch --stream-batch) + commit of the last offset, one
 *      consumer per partition (--consumers partitions).
 *   5. memory: a fresh server; its RSS with a --mem-backlog message backlog
 *      (published as 100 × 100 B JSON per request over 8 connections, a queue
 *      group on it), then with 2× and 4× that backlog.
 *
 * Figures per case: msgs/s, requests/s, p50/p99/p99.9 request latency, the
 * server's CPU time per message (utime+stime of /proc/<pid>/stat, all its
 * threads, across the measured window), its peak RSS during the case (VmHWM
 * of /proc/<pid>/status, reset at the start of each case through
 * /proc/<pid>/clear_refs), and this process's own CPU use.
 *
 * The client: one thread, non-blocking sockets on one epoll set, HTTP/1.1
 * keep-alive, up to --depth requests pipelined per connection (consumers
 * pipeline the ack with the next receive when depth ≥ 2). Responses are
 * parsed properly: status line, Content-Length or chunked bodies, Connection:
 * close (the connection is reopened); a status other than 200 is an error and
 * counted, a closed connection counts its outstanding requests as errors.
 * The loop is closed: a connection sends its next request when a response
 * arrives. A request's latency is from the moment it was queued for sending to
 * the moment its whole response was read; it counts when the response
 * completes inside the measured window.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024.0 * 1024.0)
#define QMAX 64u                 /* most requests outstanding on one connection */
#define MAX_CONN_COUNTS 8
#define MAX_RESULTS 64
#define MAX_HEADER_BYTES 65536u  /* a response header larger than this is malformed */
#define STALL_NS (20ull * 1000000000ull)
#define DRAIN_NS (10ull * 1000000000ull)
#define FILL_BATCH 1000u         /* messages per publish while filling a backlog */
#define CONSUMER_BATCH 100u      /* queue / FIFO receive batch */

#define TARGET_BATCH_PUB 620e3
#define TARGET_SINGLE_PUB 50e3
#define TARGET_SINGLE_P99_MS 4.0
#define TARGET_QUEUE 225e3
#define TARGET_RSS_MIB 48.0

enum { S_PUBLISH = 1, S_QUEUE = 2, S_FIFO = 4, S_STREAM = 8, S_MEMORY = 16, S_ALL = 31 };

static struct options {
    double seconds, warmup;
    bool quick;
    unsigned conns[MAX_CONN_COUNTS];
    unsigned nconns;
    unsigned batches[MAX_CONN_COUNTS], nbatches;
    unsigned sizes[MAX_CONN_COUNTS], nsizes;
    unsigned formats; /* 1 json, 2 msgpack */
    unsigned depth;
    const char *server_path;
    const char *fsync;
    const char *url;
    long pid;
    const char *dir;
    unsigned only;
    uint64_t queue_msgs, fifo_msgs, stream_msgs, mem_backlog;
    unsigned fifo_keys, stream_batch, consumers;
} opt;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* ---- small utilities ------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "bench_http: out of memory\n");
        exit(2);
    }
    return q;
}

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_reserve(struct sbuf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + extra)
        nc *= 2;
    b->p = xrealloc(b->p, nc);
    b->cap = nc;
}

static void sb_put(struct sbuf *b, const void *p, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void sb_puts(struct sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_byte(struct sbuf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    sb_put(b, &c, 1);
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    sb_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void sb_free(struct sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

struct lvec {
    uint64_t *v;
    size_t n, cap;
};

static void lv_push(struct lvec *l, uint64_t x)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4096;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = x;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The p-quantile (0..1) of a sorted vector, in ms; -1 when empty. */
static double pct_ms(const struct lvec *l, double p)
{
    if (!l->n)
        return -1;
    size_t i = (size_t)(p * (double)l->n);
    if (i >= l->n)
        i = l->n - 1;
    return (double)l->v[i] / 1e6;
}

/* ---- the server process ---------------------------------------------------------------- */

struct server {
    pid_t pid;            /* 0: not ours */
    long stat_pid;        /* the pid whose /proc we read, 0 = none */
    char data[PATH_MAX];
    char log[PATH_MAX];
    unsigned port;
};

static char g_tmp[PATH_MAX];      /* our temporary directory, "" if none */
static struct sockaddr_storage g_addr;
static socklen_t g_alen;
static char g_hostport[300];

static struct server g_main_srv, g_mem_srv;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *path)
{
    if (path[0])
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void print_log_tail(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, sz > 4000 ? sz - 4000 : 0, SEEK_SET);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    fprintf(stderr, "---- server log (%s), last lines ----\n%s\n----\n", path, buf);
}

static int resolve(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof host)
        return -1;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = 0;
    char *h = host;
    if (h[0] == '[') {
        h++;
        size_t n = strlen(h);
        if (n && h[n - 1] == ']')
            h[n - 1] = 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(h, colon + 1, &hints, &ai) || !ai)
        return -1;
    memcpy(&g_addr, ai->ai_addr, ai->ai_addrlen);
    g_alen = ai->ai_addrlen;
    freeaddrinfo(ai);
    snprintf(g_hostport, sizeof g_hostport, "%s", hostport);
    return 0;
}

static int start_server(struct server *s, const char *name)
{
    if (snprintf(s->data, sizeof s->data, "%s/%s", g_tmp, name) >= (int)sizeof s->data ||
        snprintf(s->log, sizeof s->log, "%s/%s.log", g_tmp, name) >= (int)sizeof s->log) {
        fprintf(stderr, "bench_http: --dir path too long\n");
        return -1;
    }
    int logfd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0) {
        fprintf(stderr, "bench_http: %s: %s\n", s->log, strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        dup2(logfd, 1);
        dup2(logfd, 2);
        signal(SIGINT, SIG_IGN); /* ^C goes to the process group: we stop it ourselves */
        char *argv[] = {(char *)opt.server_path, "--listen", "127.0.0.1:0", "--data-dir", s->data,
                        "--fsync", (char *)opt.fsync, NULL};
        execv(opt.server_path, argv);
        fprintf(stderr, "exec %s: %s\n", opt.server_path, strerror(errno));
        _exit(127);
    }
    close(logfd);
    s->pid = pid;
    s->stat_pid = pid;
    uint64_t deadline = now_ns() + 60ull * 1000000000ull;
    while (now_ns() < deadline && !g_stop) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "bench_http: %s exited during start-up\n", opt.server_path);
            print_log_tail(s->log);
            s->pid = 0;
            return -1;
        }
        FILE *f = fopen(s->log, "r");
        if (f) {
            char line[2048];
            while (fgets(line, sizeof line, f)) {
                const char *p = strstr(line, "ready in");
                const char *q = p ? strstr(p, "(port ") : NULL;
                if (q) {
                    s->port = (unsigned)strtoul(q + 6, NULL, 10);
                    fclose(f);
                    char hp[64];
                    snprintf(hp, sizeof hp, "127.0.0.1:%u", s->port);
                    return resolve(hp);
                }
            }
            fclose(f);
        }
        usleep(10000);
    }
    fprintf(stderr, "bench_http: no ready line from %s\n", opt.server_path);
    print_log_tail(s->log);
    return -1;
}

static void stop_server(struct server *s)
{
    if (!s->pid)
        return;
    kill(s->pid, SIGTERM);
    uint64_t deadline = now_ns() + 60ull * 1000000000ull;
    int st;
    while (waitpid(s->pid, &st, WNOHANG) == 0) {
        if (now_ns() > deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            break;
        }
        usleep(10000);
    }
    s->pid = 0;
}

/* utime+stime of a process in seconds, or -1. */
static double proc_cpu_s(long pid)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++;
    /* fields after the name: 3 state ... 14 utime 15 stime */
    unsigned long long ut = 0, stt = 0;
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 14)
            ut = strtoull(tok, NULL, 10);
        else if (field == 15) {
            stt = strtoull(tok, NULL, 10);
            break;
        }
    }
    return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

/* A "VmXXX:" line of /proc/<pid>/status in KiB, or -1. */
static long proc_status_kb(long pid, const char *key)
{
    if (pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Reset VmHWM to the current RSS (Linux ≥ 4.0). Returns false when not allowed. */
static bool proc_reset_hwm(long pid)
{
    if (pid <= 0)
        return false;
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/clear_refs", pid);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = write(fd, "5", 1) == 1;
    close(fd);
    return ok;
}

/* Busy CPU time of the whole machine in seconds (user+nice+system+irq+softirq+steal). */
static double machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 7)
        return -1;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void loadavg(char *out, size_t n)
{
    out[0] = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f)
        return;
    double a = 0, b = 0, c = 0;
    if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
        snprintf(out, n, "%.2f %.2f %.2f", a, b, c);
    fclose(f);
}

/* ---- connections -------------------------------------------------------------------- */

static int connect_blocking(void)
{
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&g_addr, g_alen)) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

enum kind { K_PUB, K_RECV, K_ACK };

struct pend {
    uint64_t t0;
    uint32_t n; /* messages this request settles (publish batch, ids acked, offsets committed) */
    uint8_t kind;
};

struct conn {
    int fd;
    unsigned idx;
    /* reading: r.p[rpos .. r.len) is not parsed yet */
    struct sbuf r;
    size_t rpos;
    bool have_hdr, chunked, until_close, close_after;
    int status;
    size_t hdr_len, clen;
    struct sbuf chunk; /* a decoded chunked body */
    /* writing: w.p[wpos .. w.len) is not sent yet */
    struct sbuf w;
    size_t wpos;
    bool pollout;
    struct pend q[QMAX];
    unsigned qh, qn;
    /* consumers */
    struct sbuf recv_req; /* the prebuilt receive request */
    struct sbuf ack;      /* the body of the next ack / commit, empty if none */
    uint32_t ack_n;
    bool recv_out, dry;
    unsigned part;
};

enum wtype { W_PUBLISH, W_QUEUE, W_FIFO, W_STREAM };

struct work {
    enum wtype type;
    char label[64];
    unsigned conns, depth;
    double seconds, warmup;
    /* publish: nvar prebuilt requests of batch messages each, used round-robin */
    struct sbuf *var;
    unsigned nvar, batch;
    uint64_t limit; /* stop issuing after this many messages (0 = time-bound) */
    /* consumers */
    char topic[96], group[64];
    unsigned rbatch;
    const char *target;
};

struct result {
    char label[64];
    unsigned conns, depth;
    enum wtype type;
    double secs;
    uint64_t msgs, reqs, errors, reconnects;
    double p50, p99, p999;
    double rp50, rp99, ap50, ap99; /* consumers: receive and ack/commit separately */
    uint64_t nrecv, nack;
    double srv_cpu_s; /* -1: unknown */
    long srv_peak_kb, srv_rss_kb;
    bool hwm_reset;
    double gen_cpu_s;
    double other_cpu_s; /* -1: unknown */
    bool exhausted, exhausted_warmup, stalled, interrupted;
    char err[200];
    const char *target;
};

static struct run {
    struct work *w;
    struct conn *c;
    unsigned nc;
    int epfd;
    int phase; /* 0 warm-up, 1 measured, 2 drain */
    uint64_t issued_msgs, issued_reqs, settled_msgs;
    uint64_t msgs, reqs, errors, reconnects;
    struct lvec lat[2]; /* [0] publish / receive, [1] ack / commit */
    uint64_t inflight;
    unsigned dry;
    uint64_t last_progress;
    char err[200];
} R;

static void note_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_error(const char *fmt, ...)
{
    R.errors++;
    if (R.err[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(R.err, sizeof R.err, fmt, ap);
    va_end(ap);
}

static void conn_reset_io(struct conn *c)
{
    c->r.len = c->rpos = 0;
    c->w.len = c->wpos = 0;
    c->have_hdr = false;
    c->qh = c->qn = 0;
    c->ack.len = 0;
    c->ack_n = 0;
    c->recv_out = false;
    c->pollout = false;
}

static int conn_open(struct conn *c)
{
    c->fd = connect_blocking();
    if (c->fd < 0)
        return -1;
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(R.epfd, EPOLL_CTL_ADD, c->fd, &ev)) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    conn_reset_io(c);
    return 0;
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    R.inflight -= c->qn;
    c->qn = 0;
}

static void set_pollout(struct conn *c, bool on)
{
    if (c->pollout == on || c->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u), .data.ptr = c};
    epoll_ctl(R.epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->pollout = on;
}

/* Returns -1 when the connection failed. */
static int conn_flush(struct conn *c)
{
    while (c->wpos < c->w.len) {
        ssize_t n = send(c->fd, c->w.p + c->wpos, c->w.len - c->wpos, MSG_NOSIGNAL);
        if (n > 0) {
            c->wpos += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_pollout(c, true);
            return 0;
        }
        return -1;
    }
    c->w.len = c->wpos = 0;
    set_pollout(c, false);
    return 0;
}

static void push_pend(struct conn *c, enum kind k, uint32_t n)
{
    struct pend *p = &c->q[(c->qh + c->qn) % QMAX];
    p->t0 = now_ns();
    p->n = n;
    p->kind = (uint8_t)k;
    c->qn++;
    R.inflight++;
}

static void append_request(struct sbuf *out, const char *path, const char *ctype, const void *body,
                           size_t blen)
{
    sb_printf(out,
              "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
              path, g_hostport, ctype, blen);
    sb_put(out, body, blen);
}

static const char *ack_path(enum wtype t)
{
    return t == W_FIFO ? "/api/v1.msgs.fifo.ack"
           : t == W_STREAM ? "/api/v1.msgs.stream.commit"
                           : "/api/v1.msgs.queue.ack";
}

/* Queue the requests this connection may send now. */
static void pump(struct conn *c)
{
    struct work *w = R.w;
    if (R.phase == 2 || g_stop || c->fd < 0)
        return;
    if (w->type == W_PUBLISH) {
        while (c->qn < w->depth && (!w->limit || R.issued_msgs < w->limit)) {
            struct sbuf *v = &w->var[R.issued_reqs % w->nvar];
            sb_put(&c->w, v->p, v->len);
            push_pend(c, K_PUB, w->batch);
            R.issued_reqs++;
            R.issued_msgs += w->batch;
        }
        return;
    }
    if (c->ack.len && c->qn < w->depth) {
        append_request(&c->w, ack_path(w->type), "application/json", c->ack.p, c->ack.len);
        push_pend(c, K_ACK, c->ack_n);
        c->ack.len = 0;
    }
    if (!c->recv_out && !c->dry && c->qn < w->depth && (w->depth >= 2 || c->qn == 0)) {
        sb_put(&c->w, c->recv_req.p, c->recv_req.len);
        push_pend(c, K_RECV, 0);
        c->recv_out = true;
    }
}

/* Build the ack (queue/FIFO) or commit (stream) body from a receive response.
 * Returns the number of messages received. The values are JSON arrays of
 * integers, so the keys searched for cannot occur inside them. */
static uint32_t parse_receive(struct conn *c, const char *body, size_t blen)
{
    struct work *w = R.w;
    uint32_t n = 0;
    const char *p = body, *end = body + blen;
    c->ack.len = 0;
    if (w->type == W_STREAM) {
        unsigned long long last = 0;
        static const char key[] = "\"offset\":";
        while ((p = memmem(p, (size_t)(end - p), key, sizeof key - 1))) {
            p += sizeof key - 1;
            while (p < end && *p == ' ')
                p++;
            last = strtoull(p, NULL, 10);
            n++;
        }
        if (n)
            sb_printf(&c->ack, "{\"topic\":\"%s~%u\",\"consumer_group\":\"%s\",\"offset\":%llu}",
                      w->topic, c->part, w->group, last);
    } else {
        static const char key[] = "\"msg_id\":";
        sb_printf(&c->ack, "{\"topic\":\"%s\",\"consumer_group\":\"%s\",\"msg_ids\":[", w->topic,
                  w->group);
        while ((p = memmem(p, (size_t)(end - p), key, sizeof key - 1))) {
            p += sizeof key - 1;
            while (p < end && *p == ' ')
                p++;
            if (p >= end || *p != '"')
                continue;
            const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
            if (!q)
                break;
            if (n)
                sb_byte(&c->ack, ',');
            sb_put(&c->ack, p, (size_t)(q - p + 1));
            n++;
            p = q + 1;
        }
        sb_puts(&c->ack, "]}");
        if (!n)
            c->ack.len = 0;
    }
    c->ack_n = n;
    return n;
}

static void on_response(struct conn *c, int status, const char *body, size_t blen)
{
    if (!c->qn) {
        note_error("a response nobody asked for (status %d)", status);
        return;
    }
    struct pend p = c->q[c->qh];
    c->qh = (c->qh + 1) % QMAX;
    c->qn--;
    R.inflight--;
    uint64_t t = now_ns();
    R.last_progress = t;
    bool measured = R.phase == 1;
    if (measured) {
        lv_push(&R.lat[p.kind == K_ACK], t - p.t0);
        R.reqs++;
    }
    if (status != 200) {
        if (measured || R.phase == 0) {
            char snip[120];
            size_t k = blen < sizeof snip - 1 ? blen : sizeof snip - 1;
            memcpy(snip, body, k);
            snip[k] = 0;
            for (size_t i = 0; i < k; i++)
                if ((unsigned char)snip[i] < 32 || (unsigned char)snip[i] > 126)
                    snip[i] = '.';
            note_error("HTTP %d: %s", status, snip);
        }
        if (p.kind == K_RECV)
            c->recv_out = false;
        return;
    }
    switch (p.kind) {
    case K_PUB:
        R.settled_msgs += p.n;
        if (measured)
            R.msgs += p.n;
        break;
    case K_RECV:
        c->recv_out = false;
        if (!parse_receive(c, body, blen) && !c->dry) {
            c->dry = true;
            R.dry++;
        }
        break;
    case K_ACK:
        R.settled_msgs += p.n;
        if (measured)
            R.msgs += p.n;
        break;
    }
}

/* Parse one response from the read buffer. 1: delivered, 0: need more, -1: malformed. */
static int parse_one(struct conn *c)
{
    for (;;) {
        char *base = c->r.p + c->rpos;
        size_t avail = c->r.len - c->rpos;
        if (!c->have_hdr) {
            char *e = avail >= 4 ? memmem(base, avail, "\r\n\r\n", 4) : NULL;
            if (!e)
                return avail > MAX_HEADER_BYTES ? -1 : 0;
            size_t hl = (size_t)(e - base) + 4;
            if (hl < 12 || memcmp(base, "HTTP/1.", 7) != 0 || base[8] != ' ')
                return -1;
            int minor = base[7] - '0';
            int st = atoi(base + 9);
            if (st < 100 || st > 999)
                return -1;
            bool keep = minor >= 1, chunked = false, have_cl = false;
            size_t cl = 0;
            /* header lines */
            char *line = memchr(base, '\n', hl);
            while (line && line + 1 < base + hl - 2) {
                line++;
                char *eol = memchr(line, '\n', (size_t)(base + hl - line));
                if (!eol)
                    break;
                char *colon = memchr(line, ':', (size_t)(eol - line));
                if (colon) {
                    size_t nl = (size_t)(colon - line);
                    char *v = colon + 1;
                    while (v < eol && (*v == ' ' || *v == '\t'))
                        v++;
                    size_t vl = (size_t)(eol - v);
                    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
                        vl--;
                    if (nl == 14 && !strncasecmp(line, "Content-Length", 14)) {
                        cl = strtoull(v, NULL, 10);
                        have_cl = true;
                    } else if (nl == 17 && !strncasecmp(line, "Transfer-Encoding", 17)) {
                        chunked = vl >= 7 && !strncasecmp(v + vl - 7, "chunked", 7);
                    } else if (nl == 10 && !strncasecmp(line, "Connection", 10)) {
                        if (vl >= 5 && strcasestr(v, "close") && strcasestr(v, "close") < v + vl)
                            keep = false;
                        else if (vl >= 10 && strcasestr(v, "keep-alive") &&
                                 strcasestr(v, "keep-alive") < v + vl)
                            keep = true;
                    }
                }
                line = eol;
            }
            if (st < 200) { /* 100 Continue and friends: skip */
                c->rpos += hl;
                continue;
            }
            c->status = st;
            c->hdr_len = hl;
            c->chunked = chunked;
            c->close_after = !keep;
            c->until_close = false;
            if (st == 204 || st == 304)
                c->clen = 0;
            else if (chunked)
                c->clen = 0;
            else if (have_cl)
                c->clen = cl;
            else
                c->until_close = true;
            c->have_hdr = true;
        }
        if (c->until_close)
            return 0; /* delivered at EOF */
        if (c->chunked) {
            const char *p = base + c->hdr_len, *end = base + avail;
            c->chunk.len = 0;
            for (;;) {
                const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
                if (!eol)
                    return 0;
                char *hend;
                unsigned long long sz = strtoull(p, &hend, 16);
                if (hend == p)
                    return -1;
                p = eol + 2;
                if (sz == 0) { /* trailers until an empty line */
                    for (;;) {
                        const char *e2 = memmem(p, (size_t)(end - p), "\r\n", 2);
                        if (!e2)
                            return 0;
                        bool empty = e2 == p;
                        p = e2 + 2;
                        if (empty)
                            break;
                    }
                    break;
                }
                if ((size_t)(end - p) < sz + 2)
                    return 0;
                sb_put(&c->chunk, p, (size_t)sz);
                p += sz + 2;
            }
            size_t used = (size_t)(p - base);
            c->have_hdr = false;
            c->rpos += used;
            on_response(c, c->status, c->chunk.p ? c->chunk.p : "", c->chunk.len);
            return 1;
        }
        size_t total = c->hdr_len + c->clen;
        if (avail < total) {
            /* make room for the whole response */
            if (c->r.cap < c->rpos + total) {
                size_t keep = c->r.len - c->rpos;
                memmove(c->r.p, c->r.p + c->rpos, keep);
                c->r.len = keep;
                c->rpos = 0;
                sb_reserve(&c->r, total - keep + 16384);
            }
            return 0;
        }
        c->have_hdr = false;
        c->rpos += total;
        on_response(c, c->status, base + c->hdr_len, c->clen);
        return 1;
    }
}

static void conn_failed(struct conn *c, const char *why)
{
    if (c->qn)
        note_error("connection %u: %s with %u request(s) outstanding", c->idx, why, c->qn);
    else if (R.phase != 2)
        note_error("connection %u: %s", c->idx, why);
    /* A lost receive's messages come back when their leases expire. */
    conn_close(c);
    if (R.phase != 2 && !g_stop) {
        R.reconnects++;
        if (conn_open(c) == 0)
            pump(c);
    }
}

static void on_readable(struct conn *c)
{
    for (;;) {
        if (c->rpos == c->r.len)
            c->r.len = c->rpos = 0;
        else if (c->rpos > c->r.cap / 2) {
            memmove(c->r.p, c->r.p + c->rpos, c->r.len - c->rpos);
            c->r.len -= c->rpos;
            c->rpos = 0;
        }
        sb_reserve(&c->r, 65536);
        size_t room = c->r.cap - c->r.len;
        ssize_t n = recv(c->fd, c->r.p + c->r.len, room, 0);
        if (n > 0) {
            c->r.len += (size_t)n;
            int rc;
            while ((rc = parse_one(c)) == 1) {
                if (c->close_after) {
                    c->close_after = false;
                    R.reconnects++;
                    uint64_t inflight_before = c->qn;
                    conn_close(c);
                    if (inflight_before)
                        note_error("server closed a connection with %" PRIu64
                                   " request(s) outstanding",
                                   inflight_before);
                    if (R.phase != 2 && !g_stop && conn_open(c) == 0) {
                        pump(c);
                        if (conn_flush(c))
                            conn_failed(c, "send failed");
                    }
                    return;
                }
            }
            if (rc < 0) {
                conn_failed(c, "malformed response");
                return;
            }
            if ((size_t)n < room)
                break;
            continue;
        }
        if (n == 0) {
            if (c->have_hdr && c->until_close) {
                c->have_hdr = false;
                on_response(c, c->status, c->r.p + c->rpos + c->hdr_len,
                            c->r.len - c->rpos - c->hdr_len);
                c->r.len = c->rpos = 0;
            }
            conn_failed(c, "closed by the server");
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        conn_failed(c, strerror(errno));
        return;
    }
    pump(c);
    if (conn_flush(c))
        conn_failed(c, "send failed");
}

/* ---- one case ---------------------------------------------------------------------- */

static void build_recv_request(struct work *w, struct conn *c)
{
    struct sbuf body = {0};
    const char *path;
    if (w->type == W_STREAM) {
        sb_printf(&body,
                  "{\"topic\":\"%s~%u\",\"consumer_group\":\"%s\",\"batch_size\":%u,"
                  "\"default_starting_position\":\"earliest\"}",
                  w->topic, c->part, w->group, w->rbatch);
        path = "/api/v1.msgs.stream.receive";
    } else {
        sb_printf(&body,
                  "{\"topic\":\"%s\",\"consumer_group\":\"%s\",\"batch_size\":%u,"
                  "\"lease_duration_ms\":30000}",
                  w->topic, w->group, w->rbatch);
        path = w->type == W_FIFO ? "/api/v1.msgs.fifo.receive" : "/api/v1.msgs.queue.receive";
    }
    c->recv_req.len = 0;
    append_request(&c->recv_req, path, "application/json", body.p, body.len);
    sb_free(&body);
}

static void run_case(struct work *w, struct result *res, long stat_pid)
{
    memset(res, 0, sizeof *res);
    snprintf(res->label, sizeof res->label, "%s", w->label);
    res->conns = w->conns;
    res->depth = w->depth;
    res->type = w->type;
    res->target = w->target;
    for (int i = 0; i < 2; i++)
        free(R.lat[i].v);
    memset(&R, 0, sizeof R);
    R.w = w;
    R.epfd = epoll_create1(EPOLL_CLOEXEC);
    R.nc = w->conns;
    R.c = calloc(R.nc, sizeof *R.c);
    if (R.epfd < 0 || !R.c) {
        snprintf(res->err, sizeof res->err, "epoll/calloc failed");
        return;
    }
    for (unsigned i = 0; i < R.nc; i++) {
        struct conn *c = &R.c[i];
        c->idx = i;
        c->part = i;
        c->fd = -1;
        if (w->type != W_PUBLISH)
            build_recv_request(w, c);
        if (conn_open(c)) {
            snprintf(res->err, sizeof res->err, "connect: %s", strerror(errno));
            for (unsigned j = 0; j < i; j++)
                conn_close(&R.c[j]);
            goto out;
        }
    }
    res->hwm_reset = proc_reset_hwm(stat_pid);

    uint64_t t0 = now_ns();
    uint64_t warm_end = t0 + (uint64_t)(w->warmup * 1e9);
    uint64_t end = 0, m0 = 0, m1 = 0, drain_deadline = 0;
    double cpu0 = -1, gen0 = 0, busy0 = -1;
    R.phase = 0;
    R.last_progress = t0;
    for (unsigned i = 0; i < R.nc; i++) {
        pump(&R.c[i]);
        if (conn_flush(&R.c[i]))
            conn_failed(&R.c[i], "send failed");
    }
    struct epoll_event evs[128];
    for (;;) {
        uint64_t t = now_ns();
        if (R.phase == 0 && (t >= warm_end || R.dry == R.nc)) {
            if (R.dry == R.nc)
                res->exhausted_warmup = true;
            R.phase = 1;
            m0 = t;
            end = t + (uint64_t)(w->seconds * 1e9);
            cpu0 = proc_cpu_s(stat_pid);
            gen0 = self_cpu_s();
            busy0 = machine_busy_s();
            R.msgs = R.reqs = 0;
            R.errors = 0;
            R.err[0] = 0;
        }
        bool limit_done = w->limit && R.issued_msgs >= w->limit && R.inflight == 0;
        if (R.phase == 1 && (t >= end || R.dry == R.nc || limit_done || g_stop)) {
            m1 = t;
            double cpu1 = proc_cpu_s(stat_pid);
            res->srv_cpu_s = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
            res->gen_cpu_s = self_cpu_s() - gen0;
            double busy1 = machine_busy_s();
            res->other_cpu_s = busy0 >= 0 && busy1 >= 0 && res->srv_cpu_s >= 0
                                   ? busy1 - busy0 - res->srv_cpu_s - res->gen_cpu_s
                                   : -1;
            if (res->other_cpu_s < 0 && res->other_cpu_s > -0.05)
                res->other_cpu_s = 0; /* tick rounding */
            res->srv_peak_kb = proc_status_kb(stat_pid, "VmHWM");
            res->srv_rss_kb = proc_status_kb(stat_pid, "VmRSS");
            res->exhausted = R.dry == R.nc && !limit_done;
            res->interrupted = g_stop;
            R.phase = 2;
            drain_deadline = t + DRAIN_NS;
        }
        if (R.phase == 2 && (R.inflight == 0 || t >= drain_deadline || g_stop))
            break;
        if (R.phase != 2 && R.inflight && t - R.last_progress > STALL_NS) {
            res->stalled = true;
            m1 = t;
            R.phase = 2;
            drain_deadline = t;
            res->srv_cpu_s = -1;
            break;
        }
        uint64_t next = R.phase == 0 ? warm_end : R.phase == 1 ? end : drain_deadline;
        int timeout = next > t ? (int)((next - t) / 1000000ull) + 1 : 0;
        if (timeout > 200)
            timeout = 200;
        if (w->limit && R.phase == 1 && R.issued_msgs >= w->limit)
            timeout = timeout > 10 ? 10 : timeout;
        int n = epoll_wait(R.epfd, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c);
            if (c->fd >= 0 && (evs[i].events & EPOLLOUT) && conn_flush(c))
                conn_failed(c, "send failed");
        }
    }
    res->secs = (double)(m1 - m0) / 1e9;
    res->msgs = R.msgs;
    res->reqs = R.reqs;
    res->errors = R.errors;
    res->reconnects = R.reconnects;
    snprintf(res->err, sizeof res->err, "%s", R.err);
    {
        struct lvec all = {0};
        for (int k = 0; k < 2; k++) {
            qsort(R.lat[k].v, R.lat[k].n, sizeof(uint64_t), cmp_u64);
            for (size_t i = 0; i < R.lat[k].n; i++)
                lv_push(&all, R.lat[k].v[i]);
        }
        qsort(all.v, all.n, sizeof(uint64_t), cmp_u64);
        res->p50 = pct_ms(&all, 0.50);
        res->p99 = pct_ms(&all, 0.99);
        res->p999 = pct_ms(&all, 0.999);
        res->rp50 = pct_ms(&R.lat[0], 0.50);
        res->rp99 = pct_ms(&R.lat[0], 0.99);
        res->ap50 = pct_ms(&R.lat[1], 0.50);
        res->ap99 = pct_ms(&R.lat[1], 0.99);
        res->nrecv = R.lat[0].n;
        res->nack = R.lat[1].n;
        free(all.v);
    }
    for (unsigned i = 0; i < R.nc; i++)
        conn_close(&R.c[i]);
out:
    for (unsigned i = 0; i < R.nc; i++) {
        struct conn *c = &R.c[i];
        sb_free(&c->r);
        sb_free(&c->w);
        sb_free(&c->chunk);
        sb_free(&c->recv_req);
        sb_free(&c->ack);
    }
    free(R.c);
    R.c = NULL;
    close(R.epfd);
}

/* ---- request bodies -------------------------------------------------------------------- */

static void fill_value(char *v, unsigned n, unsigned seed)
{
    for (unsigned i = 0; i < n; i++)
        v[i] = (char)('a' + (i + seed) % 26);
}

static void mp_str(struct sbuf *b, const char *s, size_t n)
{
    if (n < 32)
        sb_byte(b, 0xa0u | (unsigned)n);
    else if (n < 256) {
        sb_byte(b, 0xd9);
        sb_byte(b, (unsigned)n);
    } else {
        sb_byte(b, 0xda);
        sb_byte(b, (unsigned)(n >> 8));
        sb_byte(b, (unsigned)n & 0xffu);
    }
    sb_put(b, s, n);
}

static void mp_bin(struct sbuf *b, const char *s, size_t n)
{
    if (n < 256) {
        sb_byte(b, 0xc4);
        sb_byte(b, (unsigned)n);
    } else {
        sb_byte(b, 0xc5);
        sb_byte(b, (unsigned)(n >> 8));
        sb_byte(b, (unsigned)n & 0xffu);
    }
    sb_put(b, s, n);
}

static void mp_array(struct sbuf *b, unsigned n)
{
    if (n < 16)
        sb_byte(b, 0x90u | n);
    else {
        sb_byte(b, 0xdc);
        sb_byte(b, n >> 8);
        sb_byte(b, n & 0xffu);
    }
}

/* One complete publish request: batch messages of vsize bytes to topic; when
 * nkeys, message m gets key "k<(key0 + m) % nkeys>". */
static void build_publish(struct sbuf *out, const char *topic, unsigned batch, unsigned vsize,
                          bool msgpack, unsigned key0, unsigned nkeys)
{
    char *val = xrealloc(NULL, vsize + 1);
    struct sbuf body = {0};
    char key[32];
    if (msgpack) {
        sb_byte(&body, 0x82);
        mp_str(&body, "topic", 5);
        mp_str(&body, topic, strlen(topic));
        mp_str(&body, "msgs", 4);
        mp_array(&body, batch);
        for (unsigned m = 0; m < batch; m++) {
            fill_value(val, vsize, m);
            sb_byte(&body, nkeys ? 0x82 : 0x81);
            mp_str(&body, "value", 5);
            mp_bin(&body, val, vsize);
            if (nkeys) {
                int kl = snprintf(key, sizeof key, "k%u", (key0 + m) % nkeys);
                mp_str(&body, "key", 3);
                mp_str(&body, key, (size_t)kl);
            }
        }
    } else {
        sb_printf(&body, "{\"topic\":\"%s\",\"msgs\":[", topic);
        for (unsigned m = 0; m < batch; m++) {
            fill_value(val, vsize, m);
            sb_puts(&body, m ? ",{\"value\":\"" : "{\"value\":\"");
            sb_put(&body, val, vsize);
            sb_byte(&body, '"');
            if (nkeys)
                sb_printf(&body, ",\"key\":\"k%u\"", (key0 + m) % nkeys);
            sb_byte(&body, '}');
        }
        sb_puts(&body, "]}");
    }
    append_request(out, "/api/v1.msgs.publish", msgpack ? "application/msgpack" : "application/json",
                   body.p, body.len);
    sb_free(&body);
    free(val);
}

static void free_vars(struct work *w)
{
    for (unsigned i = 0; i < w->nvar; i++)
        sb_free(&w->var[i]);
    free(w->var);
    w->var = NULL;
    w->nvar = 0;
}

/* One blocking request on its own connection (set-up calls). Returns the
 * status, or -1; the body goes to *resp when given. */
static int sync_request(const char *path, const char *body, struct sbuf *resp)
{
    int fd = connect_blocking();
    if (fd < 0)
        return -1;
    struct sbuf req = {0};
    sb_printf(&req,
              "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
              "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
              path, g_hostport, strlen(body), body);
    size_t off = 0;
    while (off < req.len) {
        ssize_t n = send(fd, req.p + off, req.len - off, MSG_NOSIGNAL);
        if (n <= 0) {
            sb_free(&req);
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    sb_free(&req);
    struct sbuf in = {0};
    for (;;) {
        sb_reserve(&in, 65536);
        ssize_t n = recv(fd, in.p + in.len, in.cap - in.len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        in.len += (size_t)n;
    }
    close(fd);
    int status = -1;
    if (in.len > 12 && !memcmp(in.p, "HTTP/1.", 7))
        status = atoi(in.p + 9);
    if (resp) {
        resp->len = 0;
        const char *e = in.len ? memmem(in.p, in.len, "\r\n\r\n", 4) : NULL;
        if (e)
            sb_put(resp, e + 4, in.len - (size_t)(e + 4 - in.p));
    }
    sb_free(&in);
    return status;
}

static int wait_healthy(void)
{
    for (int i = 0; i < 500 && !g_stop; i++) {
        int fd = connect_blocking();
        if (fd >= 0) {
            char req[512], buf[512];
            int n = snprintf(req, sizeof req,
                             "GET /api/v1.health.ping HTTP/1.1\r\nHost: %s\r\n"
                             "Connection: close\r\n\r\n",
                             g_hostport);
            if (send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
                ssize_t k = recv(fd, buf, sizeof buf - 1, 0);
                if (k > 12 && !memcmp(buf + 9, "200", 3)) {
                    close(fd);
                    return 0;
                }
            }
            close(fd);
        }
        usleep(20000);
    }
    return -1;
}

/* ---- printing ----------------------------------------------------------------------- */

static struct result g_res[MAX_RESULTS];
static unsigned g_nres;

static void fmt_ms(char *out, size_t n, double ms)
{
    if (ms < 0)
        snprintf(out, n, "-");
    else if (ms < 10)
        snprintf(out, n, "%.2f", ms);
    else if (ms < 100)
        snprintf(out, n, "%.1f", ms);
    else
        snprintf(out, n, "%.0f", ms);
}

static void print_header(void)
{
    printf("%-34s %5s %10s %9s %7s %7s %7s %8s %5s %5s %5s %8s %6s  %s\n", "case", "conns",
           "msgs/s", "req/s", "p50 ms", "p99 ms", "p999 ms", "srv us/m", "srv%", "gen%", "oth%",
           "peak MiB", "errors", "target");
    fflush(stdout);
}

static void print_row(const struct result *r)
{
    double rate = r->secs > 0 ? (double)r->msgs / r->secs : 0;
    double rrate = r->secs > 0 ? (double)r->reqs / r->secs : 0;
    char a[16], b[16], c[16], us[16], sp[16], gp[16], op[16], pk[16];
    fmt_ms(a, sizeof a, r->p50);
    fmt_ms(b, sizeof b, r->p99);
    fmt_ms(c, sizeof c, r->p999);
    if (r->srv_cpu_s >= 0 && r->msgs)
        snprintf(us, sizeof us, "%.2f", r->srv_cpu_s * 1e6 / (double)r->msgs);
    else
        snprintf(us, sizeof us, "-");
    if (r->srv_cpu_s >= 0 && r->secs > 0)
        snprintf(sp, sizeof sp, "%.0f", 100.0 * r->srv_cpu_s / r->secs);
    else
        snprintf(sp, sizeof sp, "-");
    snprintf(gp, sizeof gp, "%.0f", r->secs > 0 ? 100.0 * r->gen_cpu_s / r->secs : 0.0);
    if (r->other_cpu_s >= 0 && r->secs > 0)
        snprintf(op, sizeof op, "%.0f", 100.0 * r->other_cpu_s / r->secs);
    else
        snprintf(op, sizeof op, "-");
    if (r->srv_peak_kb > 0)
        snprintf(pk, sizeof pk, "%.1f%s", (double)r->srv_peak_kb / 1024.0, r->hwm_reset ? "" : "*");
    else
        snprintf(pk, sizeof pk, "-");
    printf("%-34s %5u %10.0f %9.0f %7s %7s %7s %8s %5s %5s %5s %8s %6" PRIu64 "  %s\n",
           r->label, r->conns, rate, rrate, a, b, c, us, sp, gp, op, pk, r->errors,
           r->target ? r->target : "");
    if (r->type != W_PUBLISH && (r->nrecv || r->nack)) {
        char r50[16], r99[16], a50[16], a99[16];
        fmt_ms(r50, sizeof r50, r->rp50);
        fmt_ms(r99, sizeof r99, r->rp99);
        fmt_ms(a50, sizeof a50, r->ap50);
        fmt_ms(a99, sizeof a99, r->ap99);
        printf("    receive p50 %s p99 %s ms (%" PRIu64 "), %s p50 %s p99 %s ms (%" PRIu64 ")\n",
               r50, r99, r->nrecv, r->type == W_STREAM ? "commit" : "ack", a50, a99, r->nack);
    }
    if (r->exhausted_warmup)
        printf("    (backlog exhausted during the warm-up: no figures; raise the backlog)\n");
    else if (r->exhausted)
        printf("    (backlog exhausted after %.2f s: the rate is over that time; raise the backlog"
               " for a full window)\n",
               r->secs);
    if (r->stalled)
        printf("    (STALLED: no response for %llu s with requests outstanding)\n",
               STALL_NS / 1000000000ull);
    if (r->interrupted)
        printf("    (interrupted)\n");
    if (r->errors || r->reconnects || r->err[0])
        printf("    errors: %" PRIu64 ", reconnects: %" PRIu64 "%s%s\n", r->errors, r->reconnects,
               r->err[0] ? "; first: " : "", r->err);
    fflush(stdout);
}

static struct result *keep_result(const struct result *r)
{
    if (g_nres >= MAX_RESULTS)
        return NULL;
    g_res[g_nres] = *r;
    return &g_res[g_nres++];
}

/* ---- sections ------------------------------------------------------------------------ */

static unsigned g_topic_seq;

static void topic_name(char *out, size_t n, const char *what)
{
    snprintf(out, n, "bh%ld-%s-%u", (long)getpid(), what, g_topic_seq++);
}

static void run_publish_section(long stat_pid)
{
    const unsigned *batches = opt.batches, *sizes = opt.sizes;
    printf("\n== publish (JSON bodies with string values; MessagePack bodies with bin values"
           " for batch 100) ==\n");
    print_header();
    for (int fmt = 0; fmt < 2 && !g_stop; fmt++)
        for (unsigned bi = 0; bi < opt.nbatches && !g_stop; bi++) {
            if (!(opt.formats & (1u << fmt)) || (fmt == 1 && batches[bi] < 100))
                continue;
            for (unsigned si = 0; si < opt.nsizes && !g_stop; si++)
                for (unsigned ci = 0; ci < opt.nconns && !g_stop; ci++) {
                    struct work w = {0};
                    w.type = W_PUBLISH;
                    w.conns = opt.conns[ci];
                    w.depth = opt.depth;
                    w.seconds = opt.seconds;
                    w.warmup = opt.warmup;
                    w.batch = batches[bi];
                    char topic[96];
                    topic_name(topic, sizeof topic, "pub");
                    w.nvar = 1;
                    w.var = calloc(1, sizeof *w.var);
                    build_publish(&w.var[0], topic, w.batch, sizes[si], fmt == 1, 0, 0);
                    snprintf(w.label, sizeof w.label, "publish %-7s b=%-3u %4u B",
                             fmt ? "msgpack" : "json", w.batch, sizes[si]);
                    if (w.batch == 100 && sizes[si] == 100 && w.conns == 8 && fmt == 0)
                        w.target = ">= 620k msgs/s";
                    else if (w.batch == 1 && sizes[si] == 100 && w.conns == 64 && fmt == 0)
                        w.target = ">= 50k msgs/s, p99 <= 4 ms";
                    struct result r;
                    run_case(&w, &r, stat_pid);
                    free_vars(&w);
                    print_row(&r);
                    keep_result(&r);
                }
        }
}

/* Publish nmsgs messages of 100 B to topic (or to topic~p round-robin over
 * parts partitions), keyed over nkeys keys when nkeys > 0, FILL_BATCH per
 * request as MessagePack (or batch per request as JSON when json), over conns
 * connections. Prints a set-up line. */
static int fill_backlog(const char *topic, uint64_t nmsgs, unsigned nkeys, unsigned parts,
                        bool json, unsigned batch, unsigned conns, long stat_pid)
{
    struct work w = {0};
    w.type = W_PUBLISH;
    w.conns = conns;
    w.depth = 1;
    w.seconds = 1e6;
    w.warmup = 0;
    w.batch = batch;
    w.limit = nmsgs;
    if (parts > 1) {
        w.nvar = parts;
    } else if (nkeys) {
        unsigned a = nkeys, b = batch;
        while (b) {
            unsigned t = a % b;
            a = b;
            b = t;
        }
        w.nvar = nkeys / a;
        if (w.nvar > 64)
            w.nvar = 64;
    } else {
        w.nvar = 1;
    }
    w.var = calloc(w.nvar, sizeof *w.var);
    for (unsigned v = 0; v < w.nvar; v++) {
        char t[128];
        if (parts > 1)
            snprintf(t, sizeof t, "%s~%u", topic, v);
        else
            snprintf(t, sizeof t, "%s", topic);
        build_publish(&w.var[v], t, batch, 100, !json, v * batch, nkeys);
    }
    snprintf(w.label, sizeof w.label, "set-up");
    struct result r;
    run_case(&w, &r, stat_pid);
    free_vars(&w);
    double rate = r.secs > 0 ? (double)R.settled_msgs / r.secs : 0;
    printf("  set-up: %" PRIu64 " x 100 B messages to %s%s (%u per request, %s, %u conns) in "
           "%.2f s = %.0f msgs/s%s%s\n",
           R.settled_msgs, topic, parts > 1 ? "~*" : "", batch, json ? "JSON" : "msgpack", conns,
           r.secs, rate, r.errors ? ", ERRORS: " : "", r.errors ? r.err : "");
    fflush(stdout);
    return r.errors || R.settled_msgs < nmsgs ? -1 : 0;
}

static void run_consumer_section(enum wtype type, long stat_pid)
{
    const char *name = type == W_QUEUE ? "queue" : type == W_FIFO ? "fifo" : "stream";
    uint64_t backlog = type == W_QUEUE ? opt.queue_msgs
                       : type == W_FIFO ? opt.fifo_msgs
                                        : opt.stream_msgs;
    unsigned nkeys = type == W_FIFO ? opt.fifo_keys : 0;
    unsigned parts = type == W_STREAM ? opt.consumers : 1;
    unsigned rbatch = type == W_STREAM ? opt.stream_batch : CONSUMER_BATCH;
    if (type == W_QUEUE)
        printf("\n== queue receive (batch %u) + ack, %u consumers, acks durable ==\n", rbatch,
               opt.consumers);
    else if (type == W_FIFO)
        printf("\n== FIFO receive (batch %u) + ack, %u consumers, keys spread over %u keys ==\n",
               rbatch, opt.consumers, nkeys);
    else
        printf("\n== stream receive (batch %u) + commit of the last offset, %u consumers, one per"
               " partition ==\n",
               rbatch, opt.consumers);
    struct work w = {0};
    w.type = type;
    topic_name(w.topic, sizeof w.topic, name);
    snprintf(w.group, sizeof w.group, "g");
    if (type == W_STREAM) {
        char body[256];
        snprintf(body, sizeof body, "{\"topic\":\"%s\",\"partitions\":%u}", w.topic, parts);
        int st = sync_request("/api/v1.msgs.topic.configure", body, NULL);
        if (st != 200) {
            printf("  topic.configure failed (HTTP %d)\n", st);
            return;
        }
    }
    if (fill_backlog(w.topic, backlog, nkeys, parts, false, FILL_BATCH, 8, stat_pid))
        printf("  (set-up incomplete; figures below are over what was published)\n");
    if (g_stop)
        return;
    w.conns = opt.consumers;
    w.depth = opt.depth >= 2 ? 2 : 1;
    w.seconds = opt.seconds;
    w.warmup = opt.warmup;
    w.rbatch = rbatch;
    snprintf(w.label, sizeof w.label, "%s receive+%s b=%u%s", name,
             type == W_STREAM ? "commit" : "ack", rbatch, w.depth == 2 ? " pipelined" : "");
    if (type == W_QUEUE && rbatch == 100 && opt.consumers == 4)
        w.target = ">= 225k msgs/s";
    print_header();
    struct result r;
    run_case(&w, &r, stat_pid);
    print_row(&r);
    keep_result(&r);
}

struct memrow {
    uint64_t backlog;
    long rss_kb, hwm_kb;
    bool ok;
};

static struct memrow g_mem[3];
static unsigned g_nmem;

static void run_memory_section(void)
{
    printf("\n== memory: RSS of %s server as the backlog grows (100 B messages published 100 per"
           " request as JSON over 8 conns; a queue group received+acked 100 of them) ==\n",
           opt.url ? "the running" : "a fresh");
    long pid = opt.url ? opt.pid : 0;
    if (!opt.url) {
        if (start_server(&g_mem_srv, "memory") || wait_healthy()) {
            printf("  could not start the server for the memory check\n");
            stop_server(&g_mem_srv);
            return;
        }
        pid = g_mem_srv.pid;
        printf("  server pid %ld, fresh data directory; RSS at start %.1f MiB\n", pid,
               (double)proc_status_kb(pid, "VmRSS") / 1024.0);
    }
    char topic[96];
    topic_name(topic, sizeof topic, "mem");
    /* the steps: total backlog 1x, 2x, 4x --mem-backlog */
    uint64_t have = 0;
    g_nmem = 0;
    for (unsigned step = 0; step < 3 && !g_stop; step++) {
        uint64_t want = opt.mem_backlog << step;
        if (fill_backlog(topic, want - have, 0, 1, true, 100, 8, pid))
            printf("  (set-up incomplete)\n");
        have = want;
        char body[256];
        snprintf(body, sizeof body,
                 "{\"topic\":\"%s\",\"consumer_group\":\"mem\",\"batch_size\":100}", topic);
        struct sbuf resp = {0};
        int st = sync_request("/api/v1.msgs.queue.receive", body, &resp);
        if (st == 200) {
            struct sbuf ack = {0};
            sb_printf(&ack, "{\"topic\":\"%s\",\"consumer_group\":\"mem\",\"msg_ids\":[", topic);
            const char *p = resp.p, *end = resp.p + resp.len;
            unsigned n = 0;
            while (p && (p = memmem(p, (size_t)(end - p), "\"msg_id\":\"", 10))) {
                p += 10;
                const char *q = memchr(p, '"', (size_t)(end - p));
                if (!q)
                    break;
                sb_printf(&ack, "%s\"%.*s\"", n++ ? "," : "", (int)(q - p), p);
                p = q;
            }
            sb_puts(&ack, "]}");
            sb_byte(&ack, 0);
            st = sync_request("/api/v1.msgs.queue.ack", ack.p, NULL);
            sb_free(&ack);
        }
        sb_free(&resp);
        if (st != 200)
            printf("  (the queue group's receive/ack failed: HTTP %d)\n", st);
        usleep(200000);
        struct memrow *m = &g_mem[g_nmem++];
        m->backlog = want;
        m->rss_kb = proc_status_kb(pid, "VmRSS");
        m->hwm_kb = proc_status_kb(pid, "VmHWM");
        m->ok = true;
        if (m->rss_kb > 0)
            printf("  backlog %8" PRIu64 ": RSS %6.1f MiB, peak RSS (VmHWM) %6.1f MiB", want,
                   (double)m->rss_kb / 1024.0, (double)m->hwm_kb / 1024.0);
        else
            printf("  backlog %8" PRIu64 ": RSS n/a (no --pid)", want);
        if (step && m->rss_kb > 0) {
            const struct memrow *p0 = &g_mem[step - 1];
            double d = (double)(m->rss_kb - p0->rss_kb) / 1024.0;
            printf("; +%.1f MiB for +%" PRIu64 " messages (%.1f B/msg)", d, want - p0->backlog,
                   d * MIB / (double)(want - p0->backlog));
        }
        printf("\n");
        fflush(stdout);
    }
    if (!opt.url)
        stop_server(&g_mem_srv);
}

/* ---- the summary --------------------------------------------------------------------- */

static const struct result *find_result(enum wtype t, const char *prefix, unsigned conns)
{
    for (unsigned i = 0; i < g_nres; i++)
        if (g_res[i].type == t && !strncmp(g_res[i].label, prefix, strlen(prefix)) &&
            (!conns || g_res[i].conns == conns))
            return &g_res[i];
    return NULL;
}

static void print_summary(void)
{
    printf("\n== the performance issue's targets, next to this run's figures ==\n");
    const struct result *r = find_result(W_PUBLISH, "publish json    b=100  100 B", 8);
    if (r && r->secs > 0) {
        double v = (double)r->msgs / r->secs;
        printf("  batched publish, 100 x 100 B per request, 8 conns:   target >= 620k msgs/s;"
               " measured %.0f msgs/s (%.0f%% of target)\n",
               v, 100.0 * v / TARGET_BATCH_PUB);
        const struct result *m = find_result(W_PUBLISH, "publish msgpack b=100  100 B", 8);
        if (m && m->secs > 0)
            printf("      (the same with MessagePack bodies: %.0f msgs/s)\n",
                   (double)m->msgs / m->secs);
    } else {
        printf("  batched publish, 100 x 100 B per request, 8 conns:   target >= 620k msgs/s;"
               " not run\n");
    }
    r = find_result(W_PUBLISH, "publish json    b=1    100 B", 64);
    if (r && r->secs > 0) {
        double v = (double)r->msgs / r->secs;
        printf("  single-message publish, 64 conns:                    target >= 50k msgs/s,"
               " p99 <= 4 ms; measured %.0f msgs/s (%.0f%%), p99 %.2f ms\n",
               v, 100.0 * v / TARGET_SINGLE_PUB, r->p99);
    } else {
        printf("  single-message publish, 64 conns:                    target >= 50k msgs/s,"
               " p99 <= 4 ms; not run\n");
    }
    r = find_result(W_QUEUE, "queue", 0);
    if (r && r->secs > 0) {
        double v = (double)r->msgs / r->secs;
        printf("  queue receive+ack, batch 100, %u consumers, durable:  target >= 225k msgs/s;"
               " measured %.0f msgs/s (%.0f%% of target)%s\n",
               r->conns, v, 100.0 * v / TARGET_QUEUE, r->exhausted ? " (backlog exhausted)" : "");
    } else {
        printf("  queue receive+ack, batch 100, 4 consumers, durable:  target >= 225k msgs/s;"
               " not run\n");
    }
    if (g_nmem && g_mem[0].hwm_kb > 0) {
        char bl[32];
        snprintf(bl, sizeof bl, "%" PRIu64 "k", g_mem[0].backlog / 1000);
        printf("  peak RSS with a %-5s backlog:                       target <= 48 MiB, flat as"
               " the backlog grows; measured peak %.1f MiB",
               bl, (double)g_mem[0].hwm_kb / 1024.0);
        for (unsigned i = 0; i < g_nmem; i++)
            printf("%s RSS %.1f MiB at %" PRIu64, i ? "," : ";", (double)g_mem[i].rss_kb / 1024.0,
                   g_mem[i].backlog);
        printf("\n");
    } else {
        printf("  peak RSS with a 200k backlog:                        target <= 48 MiB, flat as"
               " the backlog grows; not run%s\n",
               opt.url && !opt.pid ? " (no --pid)" : "");
    }
}

/* ---- options, main ------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_http [options]\n"
            "\n"
            "An HTTP/1.1 load generator for coyoted: publish (batch 1/10/100, 100 B and 1 KiB\n"
            "values, JSON and MessagePack), queue / FIFO receive+ack and stream receive+commit\n"
            "on pre-published backlogs, and the server's RSS as a backlog grows. Prints msgs/s,\n"
            "requests/s, request latency percentiles, the server's CPU time per message and\n"
            "its peak RSS next to the targets of the performance issue. Never pass/fail.\n"
            "\n"
            "  --server PATH       the coyoted to start (default: coyoted next to this program)\n"
            "  --fsync POLICY      --fsync of the started server: always (default) | interval=N |\n"
            "                      never\n"
            "  --url HOST:PORT     use a running server instead of starting one (set-up data\n"
            "                      goes to topics named bh<pid>-*)\n"
            "  --pid N             with --url: the server's pid, to read its CPU time and RSS\n"
            "  --dir PATH          where the temporary directory is made (default: the current\n"
            "                      directory); removed at the end, also after ^C\n"
            "  --quick             1 s per case after 0.3 s warm-up, backlogs of 800k\n"
            "  --seconds N         measured duration per case (default 5)\n"
            "  --warmup N          unmeasured lead-in per case, seconds (default 1)\n"
            "  --conns LIST        connection counts of the publish cases (default 8,64)\n"
            "  --batches LIST      messages per publish request (default 1,10,100)\n"
            "  --sizes LIST        publish value sizes in bytes (default 100,1024)\n"
            "  --formats LIST      publish body formats: json,msgpack (default both; msgpack\n"
            "                      only for batches >= 100)\n"
            "  --depth N           requests pipelined per connection (default 1; consumers\n"
            "                      pipeline the ack with the next receive when N >= 2)\n"
            "  --consumers N       consumer connections (and stream partitions) (default 4)\n"
            "  --queue-msgs N      queue backlog (default 3000000)\n"
            "  --fifo-msgs N       FIFO backlog (default 3000000)\n"
            "  --fifo-keys N       distinct keys of the FIFO backlog (default 10000)\n"
            "  --stream-msgs N     stream backlog (default 4000000)\n"
            "  --stream-batch N    stream receive batch (default 100)\n"
            "  --mem-backlog N     first backlog of the memory check (default 200000; then 2x, 4x)\n"
            "  --only LIST         sections, comma-separated: publish,queue,fifo,stream,memory\n"
            "  --help              this text\n");
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *v = x;
    return 0;
}

static int parse_uint(const char *s, unsigned *v, unsigned lo, unsigned hi)
{
    uint64_t x;
    if (parse_u64(s, &x) || x < lo || x > hi)
        return -1;
    *v = (unsigned)x;
    return 0;
}

static int parse_list(const char *s, unsigned *out, unsigned *n, unsigned lo, unsigned hi)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", s);
    char *save = NULL;
    *n = 0;
    for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n >= MAX_CONN_COUNTS || parse_uint(t, &out[*n], lo, hi))
            return -1;
        (*n)++;
    }
    return *n ? 0 : -1;
}

static int parse_secs(const char *s, double *v)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (errno || end == s || *end || !(d >= 0) || d > 86400)
        return -1;
    *v = d;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    opt.seconds = 5;
    opt.warmup = 1;
    opt.conns[0] = 8;
    opt.conns[1] = 64;
    opt.nconns = 2;
    opt.batches[0] = 1;
    opt.batches[1] = 10;
    opt.batches[2] = 100;
    opt.nbatches = 3;
    opt.sizes[0] = 100;
    opt.sizes[1] = 1024;
    opt.nsizes = 2;
    opt.formats = 3;
    opt.depth = 1;
    opt.fsync = "always";
    opt.dir = ".";
    opt.only = S_ALL;
    opt.queue_msgs = 3000000;
    opt.fifo_msgs = 3000000;
    opt.stream_msgs = 4000000;
    opt.mem_backlog = 200000;
    opt.fifo_keys = 10000;
    opt.stream_batch = 100;
    opt.consumers = 4;
    bool secs_set = false, warm_set = false, q_set = false, f_set = false, s_set = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
#define NEEDV()                                                                                    \
    do {                                                                                           \
        if (!v) {                                                                                  \
            fprintf(stderr, "bench_http: %s needs a value\n", a);                                 \
            return -1;                                                                             \
        }                                                                                          \
        i++;                                                                                       \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--quick")) {
            opt.quick = true;
        } else if (!strcmp(a, "--seconds")) {
            NEEDV();
            bad = parse_secs(v, &opt.seconds) || opt.seconds <= 0;
            secs_set = true;
        } else if (!strcmp(a, "--warmup")) {
            NEEDV();
            bad = parse_secs(v, &opt.warmup);
            warm_set = true;
        } else if (!strcmp(a, "--conns")) {
            NEEDV();
            bad = parse_list(v, opt.conns, &opt.nconns, 1, 4096);
        } else if (!strcmp(a, "--batches")) {
            NEEDV();
            bad = parse_list(v, opt.batches, &opt.nbatches, 1, 65535);
        } else if (!strcmp(a, "--sizes")) {
            NEEDV();
            bad = parse_list(v, opt.sizes, &opt.nsizes, 1, 1 << 20);
        } else if (!strcmp(a, "--formats")) {
            NEEDV();
            opt.formats = 0;
            char tmp[256];
            snprintf(tmp, sizeof tmp, "%s", v);
            char *save = NULL;
            for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "json"))
                    opt.formats |= 1;
                else if (!strcmp(t, "msgpack"))
                    opt.formats |= 2;
                else
                    bad = 1;
            }
            bad |= !opt.formats;
        } else if (!strcmp(a, "--depth")) {
            NEEDV();
            bad = parse_uint(v, &opt.depth, 1, QMAX);
        } else if (!strcmp(a, "--consumers")) {
            NEEDV();
            bad = parse_uint(v, &opt.consumers, 1, 64);
        } else if (!strcmp(a, "--server")) {
            NEEDV();
            opt.server_path = v;
        } else if (!strcmp(a, "--fsync")) {
            NEEDV();
            opt.fsync = v;
        } else if (!strcmp(a, "--url")) {
            NEEDV();
            opt.url = v;
            if (!strncmp(opt.url, "http://", 7))
                opt.url += 7;
        } else if (!strcmp(a, "--pid")) {
            NEEDV();
            uint64_t x;
            bad = parse_u64(v, &x) || x == 0 || x > INT_MAX;
            opt.pid = (long)x;
        } else if (!strcmp(a, "--dir")) {
            NEEDV();
            opt.dir = v;
        } else if (!strcmp(a, "--queue-msgs")) {
            NEEDV();
            bad = parse_u64(v, &opt.queue_msgs) || !opt.queue_msgs;
            q_set = true;
        } else if (!strcmp(a, "--fifo-msgs")) {
            NEEDV();
            bad = parse_u64(v, &opt.fifo_msgs) || !opt.fifo_msgs;
            f_set = true;
        } else if (!strcmp(a, "--stream-msgs")) {
            NEEDV();
            bad = parse_u64(v, &opt.stream_msgs) || !opt.stream_msgs;
            s_set = true;
        } else if (!strcmp(a, "--fifo-keys")) {
            NEEDV();
            bad = parse_uint(v, &opt.fifo_keys, 1, 10000000);
        } else if (!strcmp(a, "--stream-batch")) {
            NEEDV();
            bad = parse_uint(v, &opt.stream_batch, 1, 65535);
        } else if (!strcmp(a, "--mem-backlog")) {
            NEEDV();
            bad = parse_u64(v, &opt.mem_backlog) || !opt.mem_backlog ||
                  opt.mem_backlog > (1ull << 40);
        } else if (!strcmp(a, "--only")) {
            NEEDV();
            opt.only = 0;
            char tmp[256];
            snprintf(tmp, sizeof tmp, "%s", v);
            char *save = NULL;
            for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "publish"))
                    opt.only |= S_PUBLISH;
                else if (!strcmp(t, "queue"))
                    opt.only |= S_QUEUE;
                else if (!strcmp(t, "fifo"))
                    opt.only |= S_FIFO;
                else if (!strcmp(t, "stream"))
                    opt.only |= S_STREAM;
                else if (!strcmp(t, "memory"))
                    opt.only |= S_MEMORY;
                else
                    bad = 1;
            }
        } else {
            fprintf(stderr, "bench_http: unknown option %s (try --help)\n", a);
            return -1;
        }
#undef NEEDV
        if (bad) {
            fprintf(stderr, "bench_http: bad value for %s: %s\n", a, v ? v : "");
            return -1;
        }
    }
    if (opt.quick) {
        if (!secs_set)
            opt.seconds = 1;
        if (!warm_set)
            opt.warmup = 0.3;
        if (!q_set)
            opt.queue_msgs = 800000;
        if (!f_set)
            opt.fifo_msgs = 800000;
        if (!s_set)
            opt.stream_msgs = 800000;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv))
        return 2;
    static char exe_dir_server[PATH_MAX];
    if (!opt.url && !opt.server_path) {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = 0;
            char *slash = strrchr(exe, '/');
            if (slash)
                *slash = 0;
            if (snprintf(exe_dir_server, sizeof exe_dir_server, "%s/coyoted", exe) <
                (int)sizeof exe_dir_server)
                opt.server_path = exe_dir_server;
            else
                opt.server_path = "coyoted";
        } else {
            opt.server_path = "coyoted";
        }
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char la[64];
    loadavg(la, sizeof la);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_http: HTTP/1.1 load generator for coyoted (%s)\n",
           opt.quick ? "--quick" : "full run");

    long stat_pid = 0;
    if (opt.url) {
        if (resolve(opt.url)) {
            fprintf(stderr, "bench_http: --url %s: not host:port\n", opt.url);
            return 2;
        }
        if (wait_healthy()) {
            fprintf(stderr, "bench_http: %s does not answer GET /api/v1.health.ping\n", opt.url);
            return 1;
        }
        stat_pid = opt.pid;
        printf("server: running at %s%s%s; its fsync policy is its own\n", opt.url,
               opt.pid ? ", pid " : " (no --pid: no server CPU or RSS figures)",
               opt.pid ? "" : "");
        if (opt.pid)
            printf("        pid %ld\n", opt.pid);
    } else {
        if (access(opt.server_path, X_OK)) {
            fprintf(stderr, "bench_http: %s: %s (build coyoted, or give --server PATH)\n",
                    opt.server_path, strerror(errno));
            return 2;
        }
        snprintf(g_tmp, sizeof g_tmp, "%s/coyote-bench-http-XXXXXX", opt.dir);
        if (!mkdtemp(g_tmp)) {
            fprintf(stderr, "bench_http: mkdtemp in %s: %s\n", opt.dir, strerror(errno));
            g_tmp[0] = 0;
            return 2;
        }
        if (start_server(&g_main_srv, "server") || wait_healthy()) {
            stop_server(&g_main_srv);
            remove_tree(g_tmp);
            return 1;
        }
        stat_pid = g_main_srv.pid;
        printf("server: %s (pid %ld) on %s, --fsync %s, data in %s\n", opt.server_path, stat_pid,
               g_hostport, opt.fsync, g_tmp);
    }
    printf("machine: %ld CPUs, load average %s. The load generator (1 thread) and the server\n"
           "  share these cores: client CPU (gen%%) is taken from the server, and on 2 cores a\n"
           "  busy client can cap the figures. srv%% = server CPU time / wall time (100 = one\n"
           "  core, all its threads); srv us/m = server CPU microseconds per message; oth%% =\n"
           "  CPU used by anything else (other processes, interrupts): a case with a high oth%%\n"
           "  measured a busy machine.\n",
           ncpu, la);
    if (ncpu > 0 && strtod(la, NULL) > (double)ncpu)
        printf("WARNING: the load average is above the CPU count: other processes are running,"
               " the figures measure them too.\n");
    printf("cases: %.1f s measured after %.1f s warm-up; pipelining depth %u; latency = one HTTP\n"
           "  request, queued to response read; peak MiB = server VmHWM during the case%s\n",
           opt.seconds, opt.warmup, opt.depth,
           stat_pid <= 0              ? " (not known without --pid)"
           : proc_reset_hwm(stat_pid) ? " (reset per case)"
                                      : " (* = could not reset: peak since start)");
    fflush(stdout);

    if ((opt.only & S_PUBLISH) && !g_stop)
        run_publish_section(stat_pid);
    if ((opt.only & S_QUEUE) && !g_stop)
        run_consumer_section(W_QUEUE, stat_pid);
    if ((opt.only & S_FIFO) && !g_stop)
        run_consumer_section(W_FIFO, stat_pid);
    if ((opt.only & S_STREAM) && !g_stop)
        run_consumer_section(W_STREAM, stat_pid);
    if ((opt.only & S_MEMORY) && !g_stop) {
        if (opt.url && !opt.pid)
            printf("\n== memory: skipped (--url without --pid) ==\n");
        else
            run_memory_section();
    }
    if (stat_pid > 0 && !opt.url)
        printf("\nmain server: RSS now %.1f MiB, peak since start %.1f MiB (last reset at the"
               " start of the last case)\n",
               (double)proc_status_kb(stat_pid, "VmRSS") / 1024.0,
               (double)proc_status_kb(stat_pid, "VmHWM") / 1024.0);
    print_summary();
    loadavg(la, sizeof la);
    printf("\nload average at the end: %s%s\n", la, g_stop ? " (interrupted)" : "");
    stop_server(&g_main_srv);
    stop_server(&g_mem_srv);
    remove_tree(g_tmp);
    return g_stop ? 130 : 0;
}
