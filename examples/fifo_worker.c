/*
 * fifo_worker.c — the consumer server in FIFO mode: four handler threads
 * work at once, yet the messages of one key are handled one after another,
 * in the order they were published.
 *
 *   usage: example_fifo_worker [URL [TOPIC [KEYS [PER_KEY]]]]
 *
 *   URL      http://host:port or file:///dir; default $COYOTE_URL, else
 *            http://127.0.0.1:8624
 *   TOPIC    default "payments"; the FIFO group is "ledger"
 *   KEYS     how many keys (accounts) to publish for; default 4
 *   PER_KEY  messages per key; default 5 (KEYS x PER_KEY at most 10000: they
 *            go in one publish, which must stay under the broker's body limit)
 *
 * It publishes PER_KEY messages for each of KEYS keys, interleaved
 * (acct-0 #1, acct-1 #1, ..., acct-0 #2, ...), each tagged with this run's id
 * and its sequence number in headers; then serves the group until it has
 * seen them all, checking in the handler that each key's sequence numbers
 * arrive as 1, 2, 3, ... even though handlers take random time on four
 * threads. Messages left by an earlier run are acked and skipped.
 *
 *   acct-2 #3 (0:10) in order
 *   20 messages, 4 keys: per-key order held
 *
 * Exits 0 when every key's order held, 1 otherwise.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* nanosleep, pthreads under -std=c17 */
#endif
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <coyote.h>

#define MAX_KEYS 64
#define MAX_MESSAGES 10000

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* What the handlers share (ctx->user). */
struct ledger {
    char run[32];            /* this run's id: header "run" */
    pthread_mutex_t lock;    /* guards next[] */
    unsigned next[MAX_KEYS]; /* per key: the sequence number expected next */
    atomic_uint seen;        /* messages of this run handled */
    atomic_uint out_of_order;
};

/* The value of header `name`, or NULL. */
static const char *header(const cy_received *m, const char *name)
{
    for (size_t i = 0; i < m->n_headers; i++)
        if (strcmp(m->headers[i].name, name) == 0)
            return m->headers[i].value;
    return NULL;
}

static cy_outcome handle(const cy_context *ctx, const cy_received *m)
{
    struct ledger *l = ctx->user;
    const char *run = header(m, "run"), *seq_s = header(m, "seq");
    unsigned k;
    if (!run || strcmp(run, l->run) != 0 || !seq_s || !m->key ||
        sscanf(m->key, "acct-%u", &k) != 1 || k >= MAX_KEYS) {
        printf("%s: not from this run, skipped\n", m->msg_id);
        return CY_DONE;
    }
    unsigned seq = (unsigned)strtoul(seq_s, NULL, 10);

    /* Work for 0..9 ms: without FIFO mode, four threads would soon finish a
     * key's messages out of order. */
    struct timespec work = {.tv_sec = 0, .tv_nsec = (long)(m->offset * 7 % 10) * 1000000L};
    nanosleep(&work, NULL);

    pthread_mutex_lock(&l->lock);
    int in_order = seq == l->next[k];
    if (in_order)
        l->next[k]++;
    else
        l->next[k] = seq + 1; /* count each break once */
    pthread_mutex_unlock(&l->lock);
    if (!in_order)
        atomic_fetch_add(&l->out_of_order, 1);
    printf("acct-%u #%u (%s) %s\n", k, seq, m->msg_id, in_order ? "in order" : "OUT OF ORDER");
    atomic_fetch_add(&l->seen, 1);
    return CY_DONE;
}

/* Publish per_key messages for each of n_keys keys in one atomic call. */
static int publish_run(cy_client *c, const char *topic, const struct ledger *l, unsigned n_keys,
                       unsigned per_key)
{
    size_t n = (size_t)n_keys * per_key;
    cy_message *msgs = calloc(n, sizeof *msgs);
    cy_header *hdrs = calloc(n * 2, sizeof *hdrs);
    char(*text)[3][24] = calloc(n, sizeof *text); /* key, seq, value of each message */
    int rc = CY_ENOMEM;
    if (!msgs || !hdrs || !text)
        goto done;
    for (size_t i = 0; i < n; i++) {
        unsigned k = (unsigned)(i % n_keys), seq = (unsigned)(i / n_keys) + 1;
        snprintf(text[i][0], sizeof text[i][0], "acct-%u", k);
        snprintf(text[i][1], sizeof text[i][1], "%u", seq);
        snprintf(text[i][2], sizeof text[i][2], "acct-%u #%u", k, seq);
        hdrs[2 * i] = (cy_header){.name = "run", .value = l->run};
        hdrs[2 * i + 1] = (cy_header){.name = "seq", .value = text[i][1]};
        msgs[i] = (cy_message){.value = text[i][2],
                               .value_len = strlen(text[i][2]),
                               .headers = &hdrs[2 * i],
                               .n_headers = 2,
                               .key = text[i][0]};
    }
    rc = cy_publish(c, topic, msgs, n, NULL, NULL);
done:
    free(text);
    free(hdrs);
    free(msgs);
    return rc;
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("COYOTE_URL");
    if (!url || !*url)
        url = "http://127.0.0.1:8624";
    const char *topic = argc > 2 ? argv[2] : "payments";
    unsigned n_keys = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 4;
    unsigned per_key = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : 5;
    if (argc > 5 || n_keys == 0 || n_keys > MAX_KEYS || per_key == 0 ||
        per_key > MAX_MESSAGES / n_keys || (argc > 1 && strcmp(argv[1], "--help") == 0)) {
        fprintf(stderr, "usage: %s [URL [TOPIC [KEYS (1..%d) [PER_KEY]]]] (at most %d messages)\n",
                argv[0], MAX_KEYS, MAX_MESSAGES);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct ledger l = {.seen = 0, .out_of_order = 0};
    struct timespec now;
    timespec_get(&now, TIME_UTC);
    snprintf(l.run, sizeof l.run, "%lld.%09ld", (long long)now.tv_sec, now.tv_nsec);
    for (unsigned k = 0; k < MAX_KEYS; k++)
        l.next[k] = 1;
    pthread_mutex_init(&l.lock, NULL);

    cy_client *c;
    int rc = cy_open(url, NULL, &c);
    if (rc) {
        fprintf(stderr, "cannot open %s: %s\n", url, cy_strerror(rc));
        return 1;
    }
    rc = publish_run(c, topic, &l, n_keys, per_key);
    if (rc) {
        fprintf(stderr, "publish failed: %s\n", cy_strerror(rc));
        cy_close(c);
        return 1;
    }
    unsigned total = n_keys * per_key;
    printf("published %u messages for %u keys\n", total, n_keys);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    cy_serve_opts opts = {
        .mode = CY_FIFO,
        .topic = topic,
        .group = "ledger",
        .workers = 4,
        .batch_wait_ms = 200,
    };
    cy_server *s;
    rc = cy_serve_start(c, &opts, (cy_handler){.fn = handle, .arg = &l}, &s);
    if (rc) {
        fprintf(stderr, "cannot start the consumer: %s\n", cy_strerror(rc));
        cy_close(c);
        return 1;
    }
    const struct timespec tick = {.tv_sec = 0, .tv_nsec = 20 * 1000000L};
    while (!stop_signal && atomic_load(&l.seen) < total)
        nanosleep(&tick, NULL);
    rc = cy_serve_stop(s);
    cy_close(c);
    pthread_mutex_destroy(&l.lock);

    unsigned seen = atomic_load(&l.seen), bad = atomic_load(&l.out_of_order);
    if (rc)
        fprintf(stderr, "the consumer met an error: %s\n", cy_strerror(rc));
    printf("%u messages, %u keys: %s\n", seen, n_keys,
           bad            ? "per-key order BROKEN"
           : seen < total ? "stopped early"
                          : "per-key order held");
    return rc || bad || seen < total ? 1 : 0;
}
