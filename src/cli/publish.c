/*
 * publish.c — `coyote publish TOPIC [VALUE...]`.
 *
 * With VALUEs: one atomic publish of one message per VALUE. Without: one
 * message per line of stdin (the newline removed), published in batches.
 *
 * Invariants:
 *   1. A batch is at most --batch lines and about BATCH_BYTES bytes (a single
 *      longer line goes alone), so a request stays well under the server's
 *      2 MiB body limit for ordinary lines.
 *   2. A batch is sent as soon as it is full, or as soon as stdin has nothing
 *      more to read right now: a slow producer (`tail -f log | coyote publish
 *      t`) sees each line published at once, a fast one gets full batches.
 *   3. With --idempotency-key K, batch 0 uses K and batch n uses "K#n", so
 *      running the same command on the same input again stores nothing new.
 *
 * Output: per partition "TOPIC~P START..END" (END one past the last offset, as
 * the API's `offset`), the range from this run's first to its last batch.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

#define BATCH_BYTES (512u * 1024u)
#define MAX_PARTITIONS 64

static const char usage_publish[] =
    "Usage: coyote publish TOPIC [VALUE...] [OPTIONS]\n"
    "\n"
    "Publish each VALUE as one message (all of them in one atomic call), or, with\n"
    "no VALUE, one message per line of stdin (newline removed), sent in batches of\n"
    "up to --batch lines. TOPIC may name a partition: TOPIC~P.\n"
    "\n"
    "Prints one line per partition that received messages, \"TOPIC~P START..END\",\n"
    "END being one past the last offset stored. On a terminal a long run reports\n"
    "its rate on stderr every second (\"N msgs, R msgs/s\").\n"
    "\n"
    "Options:\n"
    "  --key K               message key: picks the partition (djb2 of the key)\n"
    "                        and orders FIFO groups\n"
    "  --header NAME=VALUE   a header on every message (repeatable)\n"
    "  --delay-ms N          hide the messages from queue and FIFO groups for N ms\n"
    "  --idempotency-key K   publishing again with K stores nothing new (stdin\n"
    "                        batch n > 0 uses K#n)\n"
    "  --batch N             stdin lines per publish call, 1..1000 (default 100)\n"
    "  --json                print {\"topics\":[{\"topic\",\"start_offset\",\"offset\"}],\n"
    "                        \"count\"}\n"
    "\n"
    "Examples:\n"
    "  coyote publish orders 'order 1' 'order 2'\n"
    "  coyote publish orders '{\"id\":7}' --key customer-7 --header source=web\n"
    "  seq 1 1000 | coyote publish numbers\n";

struct part_sum {
    bool used;
    uint64_t start, end;
};

struct publisher {
    struct cli *cli;
    cy_client *client;
    const char *topic;
    const char *idempotency_key;
    cy_header *headers;
    size_t n_headers;
    const char *key;
    bool has_delay;
    uint64_t delay_ms;
    uint64_t batch_no;
    uint64_t total; /* messages published */
    bool duplicate;
    struct part_sum parts[MAX_PARTITIONS];
    /* the rate line */
    bool tty;
    double started, last_report;
    bool reported;
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report_rate(struct publisher *p, bool final)
{
    double now = now_seconds();
    if (!p->tty || (!final && now - p->last_report < 1.0) || (final && !p->reported))
        return;
    double elapsed = now - p->started;
    fprintf(stderr, "\r%llu msgs, %.0f msgs/s%s", (unsigned long long)p->total,
            elapsed > 0 ? (double)p->total / elapsed : 0.0, final ? "\n" : "");
    p->last_report = now;
    p->reported = true;
}

/* Publish msgs[0..n) as one call and fold its offsets into p->parts. */
static int publish_batch(struct publisher *p, cy_message *msgs, size_t n)
{
    char *idem = NULL;
    if (p->idempotency_key) {
        size_t len = strlen(p->idempotency_key) + 24;
        idem = malloc(len);
        if (!idem)
            return cli_errorf("out of memory");
        if (p->batch_no == 0)
            snprintf(idem, len, "%s", p->idempotency_key);
        else
            snprintf(idem, len, "%s#%llu", p->idempotency_key, (unsigned long long)p->batch_no);
    }
    for (size_t i = 0; i < n; i++) {
        msgs[i].headers = p->headers;
        msgs[i].n_headers = p->n_headers;
        msgs[i].key = p->key;
        msgs[i].key_len = p->key ? strlen(p->key) : 0;
        msgs[i].has_delay = p->has_delay;
        msgs[i].delay_ms = p->delay_ms;
    }
    cy_publish_result result;
    memset(&result, 0, sizeof result);
    int rc = cy_publish(p->client, p->topic, msgs, n, idem, &result);
    free(idem);
    if (rc < 0)
        return cli_fail(p->cli, rc, "publish");
    for (size_t i = 0; i < result.n && i < MAX_PARTITIONS; i++) {
        const cy_partition_offsets *o = &result.parts[i];
        if (o->partition >= MAX_PARTITIONS)
            continue;
        struct part_sum *s = &p->parts[o->partition];
        if (!s->used) {
            s->used = true;
            s->start = o->start_offset;
        }
        if (o->start_offset < s->start)
            s->start = o->start_offset;
        if (o->end_offset > s->end)
            s->end = o->end_offset;
    }
    p->duplicate |= result.duplicate;
    p->total += n;
    p->batch_no++;
    report_rate(p, false);
    return CLI_OK;
}

/* The topic's name without a "~P" partition suffix. */
static size_t base_len(const char *topic)
{
    const char *tilde = strrchr(topic, '~');
    if (tilde && tilde[1] && strspn(tilde + 1, "0123456789") == strlen(tilde + 1))
        return (size_t)(tilde - topic);
    return strlen(topic);
}

static void print_result(const struct publisher *p)
{
    size_t blen = base_len(p->topic);
    if (p->cli->json) {
        fputs("{\"topics\":[", stdout);
        bool first = true;
        for (uint32_t i = 0; i < MAX_PARTITIONS; i++) {
            if (!p->parts[i].used)
                continue;
            char name[96];
            int len = snprintf(name, sizeof name, "%.*s~%u", (int)blen, p->topic, i);
            printf("%s{\"topic\":", first ? "" : ",");
            cli_json_string(stdout, name, (size_t)len < sizeof name ? (size_t)len : strlen(name));
            printf(",\"start_offset\":%llu,\"offset\":%llu}", (unsigned long long)p->parts[i].start,
                   (unsigned long long)p->parts[i].end);
            first = false;
        }
        printf("],\"count\":%llu%s}\n", (unsigned long long)p->total,
               p->duplicate ? ",\"duplicate\":true" : "");
        return;
    }
    for (uint32_t i = 0; i < MAX_PARTITIONS; i++)
        if (p->parts[i].used)
            printf("%.*s~%u %llu..%llu%s\n", (int)blen, p->topic, i,
                   (unsigned long long)p->parts[i].start, (unsigned long long)p->parts[i].end,
                   p->duplicate ? " (duplicate: nothing new stored)" : "");
}

/* One line of the stdin buffer. */
struct line {
    size_t off, len;
};

/* Read stdin, publishing batches of up to `batch` lines (invariants 1, 2). */
static int publish_stdin(struct publisher *p, size_t batch)
{
    char *buf = NULL;
    size_t cap = 0, len = 0, pos = 0; /* buf[pos..len) is not yet in a line */
    struct line *lines = calloc(batch, sizeof *lines);
    cy_message *msgs = calloc(batch, sizeof *msgs);
    size_t n = 0, bytes = 0;
    bool eof = false;
    int rc = CLI_OK;
    if (!lines || !msgs) {
        rc = cli_errorf("out of memory");
        goto out;
    }
    for (;;) {
        /* Take complete lines from the buffer. */
        while (n < batch && bytes < BATCH_BYTES) {
            char *nl = pos < len ? memchr(buf + pos, '\n', len - pos) : NULL;
            if (!nl) {
                if (!eof || pos == len)
                    break;
                nl = buf + len; /* the last line, without a newline */
            }
            lines[n].off = pos;
            lines[n].len = (size_t)(nl - (buf + pos));
            bytes += lines[n].len;
            n++;
            pos = nl < buf + len ? (size_t)(nl - buf) + 1 : len;
        }
        bool full = n == batch || bytes >= BATCH_BYTES;
        bool drained = eof && pos == len;
        if (!full && !drained && n > 0) {
            /* Send what we have if stdin has nothing more right now. */
            struct pollfd pfd = {.fd = 0, .events = POLLIN};
            if (poll(&pfd, 1, 0) == 0)
                full = true;
        }
        if ((full || drained) && n > 0) {
            for (size_t i = 0; i < n; i++) {
                memset(&msgs[i], 0, sizeof msgs[i]);
                msgs[i].value = buf + lines[i].off;
                msgs[i].value_len = lines[i].len;
            }
            rc = publish_batch(p, msgs, n);
            if (rc != CLI_OK)
                goto out;
            n = 0;
            bytes = 0;
            /* No line points into the buffer any more: compact it. */
            memmove(buf, buf + pos, len - pos);
            len -= pos;
            pos = 0;
            continue;
        }
        if (drained)
            break;
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 64 * 1024;
            char *nbuf = realloc(buf, ncap);
            if (!nbuf) {
                rc = cli_errorf("out of memory");
                goto out;
            }
            buf = nbuf;
            cap = ncap;
        }
        ssize_t got = read(0, buf + len, cap - len);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            rc = cli_errorf("reading stdin: %s", strerror(errno));
            goto out;
        }
        if (got == 0)
            eof = true;
        len += (size_t)got;
    }
out:
    free(buf);
    free(lines);
    free(msgs);
    return rc;
}

int cmd_publish(struct cli *cli, int argc, char **argv)
{
    const char *key = NULL, *delay = NULL, *idem = NULL, *batch_opt = NULL;
    struct cli_list header_args = {0}, pos = {0};
    const struct cli_opt opts[] = {
        {"key", CLI_VALUE, &key},         {"header", CLI_LIST, &header_args},
        {"delay-ms", CLI_VALUE, &delay},  {"idempotency-key", CLI_VALUE, &idem},
        {"batch", CLI_VALUE, &batch_opt},
    };
    struct publisher p;
    memset(&p, 0, sizeof p);
    cy_message *msgs = NULL;
    cli->cmd = "publish";
    cli->usage = usage_publish;
    int rc = cli_parse(cli, argc, argv, opts, sizeof opts / sizeof opts[0], &pos);
    if (rc != CLI_OK)
        goto out;
    if (pos.n == 0) {
        rc = cli_usage_error(cli, "publish needs a TOPIC");
        goto out;
    }
    p.cli = cli;
    p.topic = pos.items[0];
    p.key = key;
    p.idempotency_key = idem;
    uint64_t batch = 100;
    if (batch_opt && (rc = cli_parse_u64(cli, "--batch", batch_opt, 1000, &batch)) != CLI_OK)
        goto out;
    if (batch == 0) {
        rc = cli_usage_error(cli, "--batch must be at least 1");
        goto out;
    }
    if (delay) {
        p.has_delay = true;
        if ((rc = cli_parse_u64(cli, "--delay-ms", delay, UINT64_MAX / 2, &p.delay_ms)) != CLI_OK)
            goto out;
    }
    if (header_args.n) {
        p.headers = calloc(header_args.n, sizeof *p.headers);
        if (!p.headers) {
            rc = cli_errorf("out of memory");
            goto out;
        }
        for (size_t i = 0; i < header_args.n; i++) {
            /* Split "name=value" in place: argv strings are ours to change. */
            char *h = (char *)header_args.items[i];
            char *eq = strchr(h, '=');
            if (!eq || eq == h) {
                rc = cli_usage_error(cli, "--header: '%s' is not NAME=VALUE", h);
                goto out;
            }
            *eq = '\0';
            p.headers[i].name = h;
            p.headers[i].value = eq + 1;
        }
        p.n_headers = header_args.n;
    }
    if ((rc = cli_client(cli, &p.client)) != CLI_OK)
        goto out;
    p.tty = isatty(2);
    p.started = p.last_report = now_seconds();

    if (pos.n > 1) {
        size_t n = pos.n - 1;
        msgs = calloc(n, sizeof *msgs);
        if (!msgs) {
            rc = cli_errorf("out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            msgs[i].value = pos.items[i + 1];
            msgs[i].value_len = strlen(pos.items[i + 1]);
        }
        rc = publish_batch(&p, msgs, n);
    } else {
        /* A person typing gets each line published as they press Enter. */
        if (isatty(0))
            fputs("coyote: publishing one message per line of stdin; end with Ctrl-D\n", stderr);
        rc = publish_stdin(&p, (size_t)batch);
    }
    report_rate(&p, true);
    if (p.total > 0 || rc == CLI_OK)
        print_result(&p);
out:
    free(msgs);
    free(p.headers);
    cli_list_free(&header_args);
    cli_list_free(&pos);
    return rc;
}
