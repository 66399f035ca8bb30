/*
 * consume.c — `coyote consume TOPIC --group G`: receive, print (or --exec),
 * settle.
 *
 * Invariants:
 *   1. A message is settled only after it was handled: printed (invariant 6),
 *      or its --exec command exited 0. Queue/FIFO: ack (a failed command:
 *      nack, so the group's retry schedule and DLQ apply). Stream: commit the
 *      partition's last handled offset.
 *   2. Nothing stays leased by an exiting coyote. Messages received but not
 *      handled (interrupted, a closed stdout, a write error, a failed stream
 *      command, a command that could not run) are given back at once:
 *      stream: a seek to the first of them on their partition, which releases
 *      the lease, so the next consumer starts there; queue/FIFO: their lease
 *      is cut to 1 ms (extend-lease), never a nack — a nack counts toward the
 *      retry schedule and, with none left (the default), dead-letters a
 *      message that was never handled. A cut lease is an expired lease to the
 *      broker, exactly as if coyote had died: the next delivery has attempt +
 *      1 and, for a group with max_deliveries, one expiry more.
 *   3. Signals: SIGINT, SIGTERM (and SIGCHLD, for exec.c) are blocked for the
 *      whole command — also in the library's threads, created after the block
 *      — so no library call is ever interrupted; they are taken synchronously
 *      between messages (and while waiting for a pipe's reader). The first
 *      stops after the current message (settled, exit 0); a second one while
 *      a command runs terminates the command, whose message is then neither
 *      settled nor nacked — an interrupted command did not fail — but given
 *      back as in invariant 2 (exit 130).
 *   4. --count N: no receive asks for more than the messages still wanted,
 *      so nothing is leased that will not be handled.
 *   5. FIFO with --exec: after a nack, the later messages of the same key in
 *      the batch were released by the broker (its order restarts); they are
 *      skipped, not run, and not given back again.
 *   6. Printed means seen by the reader. To a file or terminal: written and
 *      flushed. To a pipe: written, and then read by the reader — coyote
 *      writes the next message only once the pipe is empty again (FIONREAD;
 *      the pipe is shrunk to one page, where "writable" means "empty", so
 *      poll wakes coyote). Pipe writes bypass stdio and carry at most a page
 *      each, when poll says there is room, so none blocks: a reader that
 *      stops reading never keeps a signal from being taken (a message cut
 *      short by one is not printed). A reader that exits (`| head -1`)
 *      leaves what it did not read unsettled; coyote gives it and the rest of
 *      the batch back (invariant 2) and exits 0, as a closed pipe is a normal
 *      way to stop. SIGPIPE is ignored, so EPIPE comes back as an error.
 *
 * Without --follow a receive that returns nothing ends the command; with it,
 * receives long-poll (--wait-ms) until a signal, and transient failures (no
 * server, a timeout, every stream partition leased elsewhere) are retried
 * every --wait-ms.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

static const char usage_consume[] =
    "Usage: coyote consume TOPIC --group G [OPTIONS]\n"
    "\n"
    "Receive messages for consumer group G, print each value on its own line (or\n"
    "run --exec CMD for it), and settle each message once it was handled: ack in\n"
    "queue and FIFO mode, commit in stream mode. Stops when a receive returns\n"
    "nothing, after --count messages, or (with --follow) at SIGINT/SIGTERM: the\n"
    "current message is finished and settled first, and the exit status is 0.\n"
    "To a pipe, a message counts as printed once the reader has read it: when the\n"
    "reader exits (`| head -1`), what it did not read is released at once, not\n"
    "settled, and the exit status is 0. TOPIC~P reads one partition.\n"
    "\n"
    "Options:\n"
    "  --group G          consumer group (required)\n"
    "  --mode M           queue (default), fifo or stream\n"
    "  --count N          stop after N messages\n"
    "  --from P           stream: where a new group starts, earliest (default) or\n"
    "                     latest; or a TIME (RFC 3339 or ms since the epoch): first\n"
    "                     seek the group to the first message at or after it\n"
    "  --follow           keep long-polling for new messages until interrupted\n"
    "  --exec CMD         run `/bin/sh -c CMD` per message, value on stdin; exit 0\n"
    "                     acks/commits; non-zero nacks (queue/FIFO: retried per the\n"
    "                     group's retry schedule, then dead-lettered) or, in stream\n"
    "                     mode, stops without committing (exit status 1); a\n"
    "                     second SIGINT terminates CMD and releases its message\n"
    "                     without a nack (exit status 130)\n"
    "  --batch-size N     messages per receive, 1..1000 (default 100; 1 with --exec)\n"
    "  --lease-ms N       lease of received messages (default 30000 queue/FIFO,\n"
    "                     300000 stream); --exec extends queue/FIFO leases while\n"
    "                     the command runs\n"
    "  --wait-ms N        --follow: long-poll wait per receive (default 1000)\n"
    "  --json             one JSON object per message: topic, partition, offset\n"
    "                     (stream) or msg_id and attempt (queue/FIFO), key,\n"
    "                     headers, timestamp, scheduled_at, value (a string)\n"
    "\n"
    "--exec environment: COYOTE_TOPIC, COYOTE_PARTITION, COYOTE_OFFSET,\n"
    "COYOTE_MSG_ID, COYOTE_KEY (when keyed), COYOTE_ATTEMPT (queue/FIFO),\n"
    "COYOTE_TIMESTAMP, COYOTE_GROUP, COYOTE_MODE, and COYOTE_HEADER_<NAME> per\n"
    "header (NAME uppercased, characters other than letters and digits as _).\n"
    "\n"
    "Examples:\n"
    "  coyote consume orders --group billing\n"
    "  coyote consume clicks --group analytics --mode stream \\\n"
    "      --from 2026-11-22T15:00:00Z\n"
    "  coyote consume jobs --group workers --follow --exec 'sh ./handle.sh'\n";

struct consumer {
    struct cli *cli;
    cy_client *client;
    const char *topic; /* as given: "name" or "name~p" */
    char *base;        /* "name" */
    const char *group;
    cy_mode mode;
    const char *exec;
    bool has_count;
    uint64_t count, handled;
    bool follow;
    uint64_t wait_ms;
    uint32_t batch_size;
    bool has_lease;
    uint64_t lease_ms;
    bool start_earliest;
    sigset_t blocked;
    int n_signals;
    bool outage_reported;
    /* stdout, when printing (invariant 6) */
    bool out_pipe;     /* a pipe or FIFO: a message is printed once its reader read it */
    bool out_one_page; /* the pipe holds one page: POLLOUT means "empty" */
    int out_old_size;  /* the pipe's size before it was shrunk (restored at exit), or 0 */
    size_t out_chunk;  /* the most one write to the pipe may carry: a page */
    bool out_empty;    /* the pipe was seen empty since the last write */
    int stop_fd;       /* signalfd of SIGINT and SIGTERM for the pipe waits, or -1 */
    bool out_closed;   /* the reader went away: stop, exit 0 */
    bool terminated;   /* a second signal terminated an --exec command: exit 130 */
};

/* Take pending SIGINT/SIGTERM (invariant 3); true once one came. */
static bool stopping(struct consumer *k)
{
    sigset_t stop;
    struct timespec zero = {0, 0};
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    while (sigtimedwait(&stop, NULL, &zero) > 0)
        k->n_signals++;
    return k->n_signals > 0;
}

/* Sleep ms, or less when a stop signal comes. */
static void pause_ms(struct consumer *k, uint64_t ms)
{
    sigset_t stop;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    if (sigtimedwait(&stop, NULL, &ts) > 0)
        k->n_signals++;
}

/* May --follow retry after this failure? Reports it once per outage. */
static bool transient(struct consumer *k, int rc)
{
    if (!k->follow)
        return false;
    if (rc == CY_ESERVER) {
        const char *detail = NULL;
        int status = 0;
        const char *code = cy_last_error(k->client, &detail, &status);
        if (code && strcmp(code, "no_available_leases") == 0)
            return true; /* other consumers of the group hold every partition */
        if (status != 503)
            return false;
    } else if (rc != CY_ECONNECT && rc != CY_ETIMEDOUT) {
        return false;
    }
    if (!k->outage_reported) {
        cli_fail(k->cli, rc, "receive");
        fprintf(stderr, "coyote: retrying every %llu ms (Ctrl-C to stop)\n",
                (unsigned long long)k->wait_ms);
        k->outage_reported = true;
    }
    return true;
}

/* Partition and offset of a received message ("p:o" for queue/FIFO). */
static void position_of(const struct consumer *k, const cy_received *m, uint32_t *partition,
                        uint64_t *offset)
{
    *partition = m->partition;
    *offset = m->offset;
    if (k->mode != CY_STREAM && m->msg_id[0]) {
        char *end;
        unsigned long p = strtoul(m->msg_id, &end, 10);
        if (*end == ':') {
            *partition = (uint32_t)p;
            *offset = strtoull(end + 1, NULL, 10);
        }
    }
}

static void print_json(const struct consumer *k, const cy_received *m, FILE *f)
{
    uint32_t partition;
    uint64_t offset;
    char name[160];
    position_of(k, m, &partition, &offset);
    int len = snprintf(name, sizeof name, "%s~%u", k->base, partition);
    fputs("{\"topic\":", f);
    cli_json_string(f, name, len > 0 && (size_t)len < sizeof name ? (size_t)len : 0);
    fprintf(f, ",\"partition\":%u", partition);
    if (k->mode == CY_STREAM) {
        fprintf(f, ",\"offset\":%llu", (unsigned long long)offset);
    } else {
        fputs(",\"msg_id\":", f);
        cli_json_string(f, m->msg_id, strlen(m->msg_id));
        fprintf(f, ",\"attempt\":%u", m->attempt);
    }
    fputs(",\"key\":", f);
    if (m->key)
        cli_json_string(f, m->key, m->key_len ? m->key_len : strlen(m->key));
    else
        fputs("null", f);
    fputs(",\"headers\":{", f);
    for (size_t i = 0; i < m->n_headers; i++) {
        const char *hn = m->headers[i].name ? m->headers[i].name : "";
        const char *hv = m->headers[i].value ? m->headers[i].value : "";
        if (i)
            fputc(',', f);
        cli_json_string(f, hn, strlen(hn));
        fputc(':', f);
        cli_json_string(f, hv, strlen(hv));
    }
    fprintf(f, "},\"timestamp\":%llu,\"scheduled_at\":", (unsigned long long)m->timestamp);
    if (m->has_scheduled_at)
        fprintf(f, "%llu", (unsigned long long)m->scheduled_at);
    else
        fputs("null", f);
    fputs(",\"value\":", f);
    cli_json_string(f, m->value, m->value_len);
    fputs("}\n", f);
}

/* Write one message (its value and a newline, or its --json line) to f. */
static void format_message(const struct consumer *k, const cy_received *m, FILE *f)
{
    if (k->cli->json) {
        print_json(k, m, f);
    } else {
        if (m->value_len)
            fwrite(m->value, 1, m->value_len, f);
        fputc('\n', f);
    }
}

/* Prepare stdout for printing (invariant 6). A pipe or FIFO is shrunk to one
 * page, so that poll's POLLOUT means "the reader has read everything", and
 * the waits get a signalfd for SIGINT and SIGTERM (blocked, invariant 3).
 * When the pipe cannot be shrunk, the waits poll its FIONREAD instead. A
 * file, terminal or socket needs nothing: written is printed. */
static int output_open(struct consumer *k)
{
    struct stat st;
    if (fstat(STDOUT_FILENO, &st) != 0 || !S_ISFIFO(st.st_mode))
        return CLI_OK;
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    k->stop_fd = signalfd(-1, &stop, SFD_CLOEXEC | SFD_NONBLOCK);
    if (k->stop_fd < 0)
        return cli_errorf("signalfd: %s", strerror(errno));
    k->out_pipe = true;
    long page = sysconf(_SC_PAGESIZE);
    k->out_chunk = page > 0 && page <= 1L << 20 ? (size_t)page : 4096;
#ifdef F_SETPIPE_SZ
    int size = fcntl(STDOUT_FILENO, F_GETPIPE_SZ);
    if (page > 0 && page <= 1L << 20 && size > 0) {
        int shrunk = size == page ? size : fcntl(STDOUT_FILENO, F_SETPIPE_SZ, (int)page);
        if (shrunk == page) {
            k->out_one_page = true;
            k->out_old_size = size == page ? 0 : size;
        }
    }
#endif
    return CLI_OK;
}

/* Undo output_open: the pipe gets its size back (best effort: it may be
 * read on after coyote, and a one-page pipe is slow). */
static void output_close(struct consumer *k)
{
#ifdef F_SETPIPE_SZ
    if (k->out_old_size > 0)
        (void)fcntl(STDOUT_FILENO, F_SETPIPE_SZ, k->out_old_size);
#endif
    if (k->stop_fd >= 0)
        close(k->stop_fd);
    k->stop_fd = -1;
}

/* Bytes written to the stdout pipe that its reader has not read; 0 when
 * that cannot be told (then written counts as read, as for a file). */
static int unread_bytes(void)
{
    int unread = 0;
    if (ioctl(STDOUT_FILENO, FIONREAD, &unread) != 0 || unread < 0)
        return 0;
    return unread;
}

/* Count the SIGINT/SIGTERM waiting on k->stop_fd (invariant 3). */
static void take_signals(struct consumer *k)
{
    struct signalfd_siginfo si;
    while (read(k->stop_fd, &si, sizeof si) == (ssize_t)sizeof si)
        k->n_signals++;
}

/* Print one message to a file or terminal and flush it. Returns 0, or
 * -errno when the write failed. */
static int print_to_file(const struct consumer *k, const cy_received *m)
{
    format_message(k, m, stdout);
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout))
        return 0;
    return errno ? -errno : -EIO;
}

/* Print one message to the stdout pipe, past stdio: at most a page per
 * write, each once poll says there is room, so no write blocks and a reader
 * that stops reading cannot keep SIGINT/SIGTERM from being seen. Returns 0
 * once all of it is written; 1 when SIGINT/SIGTERM came first (counted in
 * k->n_signals; the reader may have part of it); or -errno (-EPIPE: the
 * reader is gone). */
static int print_to_pipe(struct consumer *k, const cy_received *m)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return -ENOMEM;
    format_message(k, m, f);
    if (fclose(f) != 0) {
        free(text);
        return -ENOMEM;
    }
    int rc = 0;
    for (size_t done = 0; done < len && rc == 0;) {
        struct pollfd pfd[2] = {{.fd = STDOUT_FILENO, .events = POLLOUT},
                                {.fd = k->stop_fd, .events = POLLIN}};
        if (k->out_empty) {
            k->out_empty = false; /* room for a page: no need to ask */
        } else if (poll(pfd, 2, -1) < 0) {
            rc = errno == EINTR ? 0 : -errno;
            continue;
        } else if (pfd[1].revents & POLLIN) {
            take_signals(k);
            rc = 1;
            break;
        } else if (!(pfd[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
            continue;
        }
        /* Room means a free page (or, shrunk, an empty pipe): a write of at
         * most a page fits. No reader: the write says EPIPE. */
        size_t n = len - done < k->out_chunk ? len - done : k->out_chunk;
        ssize_t w = write(STDOUT_FILENO, text + done, n);
        if (w > 0)
            done += (size_t)w;
        else if (w < 0 && errno != EINTR && errno != EAGAIN)
            rc = -errno;
    }
    free(text);
    return rc;
}

/* Wait until the reader of the stdout pipe has read everything written so
 * far (invariant 6). Returns 0 once it has; 1 when it did not and will not:
 * the reader went away (k->out_closed) or SIGINT/SIGTERM came (counted in
 * k->n_signals); or -errno when poll failed. */
static int wait_read(struct consumer *k)
{
    int backoff_ms = 1;
    for (;;) {
        if (unread_bytes() == 0) {
            k->out_empty = true;
            return 0;
        }
        /* One page: POLLOUT once it is empty. Larger: only POLLERR (no
         * reader) and the signals wake poll, so look again at growing
         * intervals. */
        struct pollfd pfd[2] = {{.fd = STDOUT_FILENO, .events = k->out_one_page ? POLLOUT : 0},
                                {.fd = k->stop_fd, .events = POLLIN}};
        int ready = poll(pfd, 2, k->out_one_page ? -1 : backoff_ms);
        if (ready < 0 && errno != EINTR)
            return -errno;
        if (ready > 0 && (pfd[1].revents & POLLIN)) {
            take_signals(k);
            return unread_bytes() == 0 ? 0 : 1;
        }
        if (ready > 0 && (pfd[0].revents & (POLLERR | POLLHUP))) {
            if (unread_bytes() == 0)
                return 0; /* read, then gone: the next write says EPIPE */
            k->out_closed = true;
            return 1;
        }
        if (backoff_ms < 64)
            backoff_ms *= 2;
    }
}

/* "name~p" for a stream commit or seek. */
static void partition_topic(const struct consumer *k, uint32_t partition, char *out, size_t size)
{
    snprintf(out, size, "%s~%u", k->base, partition);
}

/* Stream: commit each partition's last offset among msgs[from..to). */
static int commit_range(struct consumer *k, const cy_batch *b, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        uint32_t p = b->msgs[i].partition;
        bool last = true; /* is i the last message of its partition in the range? */
        for (size_t j = i + 1; j < to && last; j++)
            if (b->msgs[j].partition == p)
                last = false;
        if (!last)
            continue;
        char tp[160];
        partition_topic(k, p, tp, sizeof tp);
        int rc = cy_commit(k->client, tp, k->group, b->msgs[i].offset);
        if (rc < 0)
            return cli_fail(k->cli, rc, "commit");
    }
    return CLI_OK;
}

/* Queue/FIFO: cut the leases of ids[0..n) to 1 ms (invariant 2). */
static int release_leases(struct consumer *k, const char **ids, size_t n)
{
    if (n == 0)
        return CLI_OK;
    int rc = cy_extend(k->client, k->mode, k->topic, k->group, ids, n, 1);
    if (rc == CY_ESERVER) {
        /* All or nothing: one lease that expired meanwhile (a slow reader)
         * or a message acked elsewhere refuses the call. Such a message is
         * no longer ours; release the others one by one. */
        rc = 0;
        for (size_t i = 0; i < n; i++) {
            int one = cy_extend(k->client, k->mode, k->topic, k->group, &ids[i], 1, 1);
            if (one < 0 && one != CY_ESERVER)
                rc = one;
        }
    }
    return rc < 0 ? cli_fail(k->cli, rc, "release the leases (extend-lease)") : CLI_OK;
}

/* Give back msgs[from..n) but those marked in skip (may be NULL), received
 * and not handled (invariant 2). Stream: seek each partition to its first
 * offset among them, which releases the lease. Queue/FIFO: cut their leases
 * to 1 ms; never a nack. */
static int release_range(struct consumer *k, const cy_batch *b, size_t from, const bool *skip)
{
    int result = CLI_OK;
    if (from >= b->n)
        return CLI_OK;
    if (k->mode != CY_STREAM) {
        const char **ids = malloc((b->n - from) * sizeof *ids);
        size_t n = 0;
        if (!ids)
            return cli_errorf("out of memory");
        for (size_t i = from; i < b->n; i++)
            if (!skip || !skip[i])
                ids[n++] = b->msgs[i].msg_id;
        result = release_leases(k, ids, n);
        free(ids);
        return result;
    }
    for (size_t i = from; i < b->n; i++) {
        uint32_t p = b->msgs[i].partition;
        bool first = true;
        for (size_t j = from; j < i && first; j++)
            if (b->msgs[j].partition == p)
                first = false;
        if (!first)
            continue;
        char tp[160];
        partition_topic(k, p, tp, sizeof tp);
        int rc = cy_seek(k->client, tp, k->group, CY_SEEK_OFFSET, b->msgs[i].offset);
        if (rc < 0)
            result = cli_fail(k->cli, rc, "release the stream lease (seek)");
    }
    return result;
}

/* Queue/FIFO: ack msgs[from..to) in one call. */
static int ack_range(struct consumer *k, const cy_batch *b, size_t from, size_t to)
{
    if (to <= from)
        return CLI_OK;
    const char **ids = malloc((to - from) * sizeof *ids);
    if (!ids)
        return cli_errorf("out of memory");
    for (size_t i = from; i < to; i++)
        ids[i - from] = b->msgs[i].msg_id;
    int rc = cy_ack(k->client, k->mode, k->topic, k->group, ids, to - from);
    free(ids);
    return rc < 0 ? cli_fail(k->cli, rc, "ack") : CLI_OK;
}

/* Settle msgs[from..to): ack (queue/FIFO) or commit (stream). */
static int settle_range(struct consumer *k, const cy_batch *b, size_t from, size_t to)
{
    return k->mode == CY_STREAM ? commit_range(k, b, from, to) : ack_range(k, b, from, to);
}

/* Print the batch, then settle what was printed (read by a pipe's reader)
 * and give back the rest. */
static int handle_printed(struct consumer *k, const cy_batch *b)
{
    size_t printed = 0;
    int err = 0; /* 1: not printed, and why is recorded; < 0: -errno */
    for (; printed < b->n; printed++) {
        const cy_received *m = &b->msgs[printed];
        if (stopping(k))
            break;
        err = k->out_pipe ? print_to_pipe(k, m) : print_to_file(k, m);
        if (err == 0 && k->out_pipe)
            err = wait_read(k);
        if (err != 0)
            break;
    }
    k->handled += printed;
    int rc = settle_range(k, b, 0, printed);
    int rc2 = release_range(k, b, printed, NULL);
    if (err == -EPIPE)
        k->out_closed = true; /* the reader's choice (`| head`): exit 0 */
    if (err < 0) {
        /* Drop what stdio still holds, so that nothing tries to write it
         * again at exit. */
        __fpurge(stdout);
        clearerr(stdout);
        if (err != -EPIPE) {
            cli_errorf("writing to stdout: %s", strerror(-err));
            return CLI_FAIL;
        }
    }
    return rc != CLI_OK ? rc : rc2;
}

/* The lease keep-alive of a running --exec command (queue/FIFO). */
struct keepalive {
    struct consumer *k;
    const char *msg_id;
    bool warned;
};

static void extend_lease(void *arg)
{
    struct keepalive *ka = arg;
    struct consumer *k = ka->k;
    uint64_t lease = k->has_lease ? k->lease_ms : 30000;
    int rc = cy_extend(k->client, k->mode, k->topic, k->group, &ka->msg_id, 1, lease);
    if (rc < 0 && !ka->warned) {
        cli_fail(k->cli, rc, "extend the lease");
        ka->warned = true;
    }
}

static bool same_key(const cy_received *a, const cy_received *b)
{
    if (!a->key || !b->key)
        return false;
    size_t la = a->key_len ? a->key_len : strlen(a->key);
    size_t lb = b->key_len ? b->key_len : strlen(b->key);
    return la == lb && memcmp(a->key, b->key, la) == 0;
}

/* Run --exec for one message; *status gets the command's exit status. */
static int exec_one(struct consumer *k, const cy_received *m, int *status)
{
    struct cli_exec_msg em = {.topic = k->base, .group = k->group, .mode = k->mode, .msg = m};
    char msg_id[48];
    position_of(k, m, &em.partition, &em.offset);
    if (m->msg_id[0]) {
        em.msg_id = m->msg_id;
    } else {
        snprintf(msg_id, sizeof msg_id, "%u:%llu", em.partition, (unsigned long long)em.offset);
        em.msg_id = msg_id;
    }
    struct keepalive ka = {k, m->msg_id, false};
    uint64_t lease = k->has_lease ? k->lease_ms : 30000;
    struct cli_exec_tick tick = {lease / 3 ? lease / 3 : 1, extend_lease, &ka};
    return cli_exec(k->exec, &em, &k->n_signals, k->mode == CY_STREAM ? NULL : &tick, status);
}

/* Run --exec for each message of the batch and settle it. */
static int handle_exec(struct consumer *k, const cy_batch *b)
{
    bool *given_back = calloc(b->n, sizeof *given_back); /* nacked, or released by a nack (FIFO) */
    int rc = CLI_OK;
    if (!given_back)
        return cli_errorf("out of memory");
    for (size_t i = 0; i < b->n; i++) {
        const cy_received *m = &b->msgs[i];
        if (stopping(k)) {
            rc = release_range(k, b, i, given_back);
            break;
        }
        if (given_back[i]) /* invariant 5 */
            continue;
        int status;
        rc = exec_one(k, m, &status);
        if (rc != CLI_OK) {
            release_range(k, b, i, given_back);
            break;
        }
        if (k->n_signals >= 2) {
            /* The second signal terminated the command (invariant 3). It did
             * not fail, so no nack: a success is still settled, anything
             * else is given back with the rest of the batch. */
            k->terminated = true;
            if (status == 0) {
                k->handled++;
                rc = settle_range(k, b, i, i + 1);
                int rc2 = release_range(k, b, i + 1, given_back);
                rc = rc != CLI_OK ? rc : rc2;
            } else {
                rc = release_range(k, b, i, given_back);
            }
            break;
        }
        k->handled++;
        if (status == 0) {
            rc = settle_range(k, b, i, i + 1);
            if (rc != CLI_OK)
                break;
            continue;
        }
        if (k->mode == CY_STREAM) {
            uint32_t partition;
            uint64_t offset;
            position_of(k, m, &partition, &offset);
            cli_errorf("--exec: the command exited with status %d on %s~%u offset %llu; not "
                       "committed",
                       status, k->base, partition, (unsigned long long)offset);
            release_range(k, b, i, NULL);
            rc = CLI_FAIL;
            break;
        }
        const char *id = m->msg_id;
        int err = cy_nack(k->client, k->mode, k->topic, k->group, &id, 1, false, 0);
        if (err < 0) {
            rc = cli_fail(k->cli, err, "nack");
            break;
        }
        given_back[i] = true;
        if (k->mode == CY_FIFO) /* the broker released the key's later messages */
            for (size_t j = i + 1; j < b->n; j++)
                given_back[j] = given_back[j] || same_key(&b->msgs[j], m);
    }
    free(given_back);
    return rc;
}

static int run(struct consumer *k)
{
    for (;;) {
        if (k->has_count && k->handled >= k->count)
            return CLI_OK;
        if (stopping(k))
            return CLI_OK;
        uint64_t want = k->batch_size;
        if (k->has_count && k->count - k->handled < want)
            want = k->count - k->handled;
        cy_receive_opts o;
        memset(&o, 0, sizeof o);
        o.batch_size = (uint32_t)want;
        o.has_lease = k->has_lease;
        o.lease_ms = k->lease_ms;
        o.batch_wait_ms = k->follow ? k->wait_ms : 0;
        o.start_earliest = k->start_earliest;
        cy_batch b;
        memset(&b, 0, sizeof b);
        int rc = cy_receive(k->client, k->mode, k->topic, k->group, &o, &b);
        if (rc < 0) {
            if (transient(k, rc)) {
                pause_ms(k, k->wait_ms);
                continue;
            }
            return cli_fail(k->cli, rc, "receive");
        }
        if (k->outage_reported) {
            fputs("coyote: receiving again\n", stderr);
            k->outage_reported = false;
        }
        if (b.n == 0) {
            cy_batch_free(&b);
            if (!k->follow)
                return CLI_OK;
            continue;
        }
        rc = k->exec ? handle_exec(k, &b) : handle_printed(k, &b);
        cy_batch_free(&b);
        if (rc != CLI_OK || k->out_closed || k->terminated)
            return rc;
    }
}

int cmd_consume(struct cli *cli, int argc, char **argv)
{
    const char *group = NULL, *mode = NULL, *count = NULL, *from = NULL, *exec = NULL;
    const char *batch = NULL, *lease = NULL, *wait = NULL;
    bool follow = false;
    struct cli_list pos = {0};
    const struct cli_opt opts[] = {
        {"group", CLI_VALUE, &group},      {"mode", CLI_VALUE, &mode},
        {"count", CLI_VALUE, &count},      {"from", CLI_VALUE, &from},
        {"follow", CLI_FLAG, &follow},     {"exec", CLI_VALUE, &exec},
        {"batch-size", CLI_VALUE, &batch}, {"lease-ms", CLI_VALUE, &lease},
        {"wait-ms", CLI_VALUE, &wait},
    };
    struct consumer k;
    memset(&k, 0, sizeof k);
    k.cli = cli;
    k.stop_fd = -1;
    cli->cmd = "consume";
    cli->usage = usage_consume;
    int rc = cli_parse(cli, argc, argv, opts, sizeof opts / sizeof opts[0], &pos);
    if (rc != CLI_OK)
        goto out;
    if (pos.n != 1) {
        rc = cli_usage_error(cli, pos.n ? "consume takes one TOPIC" : "consume needs a TOPIC");
        goto out;
    }
    if (!group) {
        rc = cli_usage_error(cli, "consume needs --group G");
        goto out;
    }
    k.topic = pos.items[0];
    k.group = group;
    k.mode = CY_QUEUE;
    k.exec = exec;
    k.follow = follow;
    k.start_earliest = true;
    if (mode && (rc = cli_parse_mode(cli, mode, true, &k.mode)) != CLI_OK)
        goto out;
    uint64_t v = exec ? 1 : 100;
    if (batch && (rc = cli_parse_u64(cli, "--batch-size", batch, 1000, &v)) != CLI_OK)
        goto out;
    if (v == 0) {
        rc = cli_usage_error(cli, "--batch-size must be at least 1");
        goto out;
    }
    k.batch_size = (uint32_t)v;
    if (count) {
        k.has_count = true;
        if ((rc = cli_parse_u64(cli, "--count", count, UINT64_MAX, &k.count)) != CLI_OK)
            goto out;
    }
    if (lease) {
        k.has_lease = true;
        if ((rc = cli_parse_u64(cli, "--lease-ms", lease, UINT64_MAX / 2, &k.lease_ms)) != CLI_OK)
            goto out;
    }
    k.wait_ms = 1000;
    if (wait && (rc = cli_parse_u64(cli, "--wait-ms", wait, 3600000, &k.wait_ms)) != CLI_OK)
        goto out;
    bool seek_time = false;
    uint64_t from_ms = 0;
    if (from) {
        if (k.mode != CY_STREAM) {
            rc = cli_usage_error(cli, "--from is for --mode stream (a new queue or FIFO group "
                                      "starts at the earliest message)");
            goto out;
        }
        if (strcmp(from, "earliest") == 0) {
            k.start_earliest = true;
        } else if (strcmp(from, "latest") == 0) {
            k.start_earliest = false;
        } else {
            if ((rc = cli_parse_time(cli, "--from", from, &from_ms)) != CLI_OK)
                goto out;
            seek_time = true;
        }
    }
    const char *tilde = strrchr(k.topic, '~');
    size_t blen = tilde ? (size_t)(tilde - k.topic) : strlen(k.topic);
    k.base = strndup(k.topic, blen);
    if (!k.base) {
        rc = cli_errorf("out of memory");
        goto out;
    }

    /* Invariant 3: block before the client (and its threads) exist. */
    sigemptyset(&k.blocked);
    sigaddset(&k.blocked, SIGINT);
    sigaddset(&k.blocked, SIGTERM);
    sigaddset(&k.blocked, SIGCHLD);
    sigprocmask(SIG_BLOCK, &k.blocked, NULL);
    signal(SIGPIPE, SIG_IGN); /* a closed stdout is EPIPE, then settled (invariant 6) */
    if (!k.exec && (rc = output_open(&k)) != CLI_OK)
        goto out;
    if ((rc = cli_client(cli, &k.client)) != CLI_OK)
        goto out;
    if (seek_time) {
        int err = cy_seek(k.client, k.topic, k.group, CY_SEEK_TIMESTAMP, from_ms);
        if (err < 0) {
            rc = cli_fail(cli, err, "seek");
            goto out;
        }
    }
    rc = run(&k);
    if (rc == CLI_OK && k.terminated)
        rc = 130; /* interrupted twice: the running command was terminated */
out:
    output_close(&k);
    free(k.base);
    cli_list_free(&pos);
    return rc;
}
