/*
 * queue_worker.c — a queue consumer on the consumer server (cy_serve): four
 * handler threads, a retry schedule and a dead-letter topic.
 *
 *   usage: example_queue_worker [URL [TOPIC [COUNT]]]
 *
 *   URL    http://host:port or file:///dir; default $COYOTE_URL, else
 *          http://127.0.0.1:8624
 *   TOPIC  default "jobs"; the group is "workers", the DLQ topic "<TOPIC>-dlq"
 *   COUNT  stop after this many deliveries; 0 (default): run until SIGINT or
 *          SIGTERM
 *
 * The handler prints each delivery and decides its outcome from the value:
 *   contains "poison"  CY_DEAD   dead-lettered at once (copied to the DLQ topic)
 *   contains "retry"   CY_RETRY  nacked: redelivered 100 ms later, then 300 ms
 *                                later, then dead-lettered (the retry schedule)
 *   anything else      CY_DONE   acked
 * Output, one line per delivery (from any of the four threads):
 *
 *   0:2 attempt 1: retry-me -> retry
 *
 * Try it: example_publish URL jobs hello retry-me poison; example_queue_worker URL jobs 5
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* nanosleep under -std=c17 */
#endif
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <coyote.h>

/* Set by the signal handler, read by the main thread: the only things a
 * signal handler may safely do is set a flag like this one. cy_serve_stop is
 * called by main, never from the handler (coyote.h). */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* Does value[0..n) contain word? (Values are bytes, not C strings.) */
static int contains(const uint8_t *value, size_t n, const char *word)
{
    size_t w = strlen(word);
    for (size_t i = 0; i + w <= n; i++)
        if (memcmp(value + i, word, w) == 0)
            return 1;
    return 0;
}

/* Runs on the server's worker threads, several at once: everything it
 * touches is either the message (its own) or atomic. */
static cy_outcome handle(const cy_context *ctx, const cy_received *m)
{
    atomic_uint *handled = ctx->user;
    cy_outcome outcome = CY_DONE;
    if (contains(m->value, m->value_len, "poison"))
        outcome = CY_DEAD;
    else if (contains(m->value, m->value_len, "retry"))
        outcome = CY_RETRY;
    static const char *const names[] = {"done", "retry", "dead"};
    printf("%s attempt %" PRIu32 ": %.*s -> %s\n", m->msg_id, m->attempt, (int)m->value_len,
           (const char *)m->value, names[outcome]);
    atomic_fetch_add(handled, 1);
    return outcome;
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("COYOTE_URL");
    if (!url || !*url)
        url = "http://127.0.0.1:8624";
    const char *topic = argc > 2 ? argv[2] : "jobs";
    unsigned count = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 0;
    if (argc > 4 || (argc > 1 && strcmp(argv[1], "--help") == 0)) {
        fprintf(stderr, "usage: %s [URL [TOPIC [COUNT]]]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* one line at a time, also into a pipe */

    cy_client *c;
    int rc = cy_open(url, NULL, &c);
    if (rc) {
        fprintf(stderr, "cannot open %s: %s\n", url, cy_strerror(rc));
        return 1;
    }

    /* The group's configuration lives in the broker (configure replaces it
     * as a whole): two retries, then the DLQ topic. max_deliveries catches a
     * message whose handler keeps crashing the process (its lease expires
     * again and again without a nack). */
    char dlq[80];
    snprintf(dlq, sizeof dlq, "%s-dlq", topic);
    cy_queue_config cfg = {
        .retry_count = 2,
        .retry_schedule = {100, 300},
        .dlq_topic = dlq,
        .max_deliveries = 5,
    };
    rc = cy_queue_configure(c, CY_QUEUE, topic, "workers", &cfg);
    if (rc) {
        const char *detail, *code = cy_last_error(c, &detail, NULL);
        fprintf(stderr, "configure failed: %s%s%s\n", cy_strerror(rc), code ? ": " : "",
                code ? detail : "");
        cy_close(c);
        return 1;
    }

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    atomic_uint handled = 0;
    cy_serve_opts opts = {
        .mode = CY_QUEUE,
        .topic = topic,
        .group = "workers",
        .workers = 4,
        .batch_wait_ms = 500, /* long poll: wait up to 0.5 s for a full batch (10) */
        .lease_ms = 10000,    /* extended while a handler runs, up to deadline_ms */
        .deadline_ms = 60000,
    };
    cy_server *s;
    rc = cy_serve_start(c, &opts, (cy_handler){.fn = handle, .arg = &handled}, &s);
    if (rc) {
        fprintf(stderr, "cannot start the consumer: %s\n", cy_strerror(rc));
        cy_close(c);
        return 1;
    }
    printf("serving %s for group workers (DLQ %s)\n", topic, dlq);

    const struct timespec tick = {.tv_sec = 0, .tv_nsec = 20 * 1000000L};
    while (!stop_signal && (count == 0 || atomic_load(&handled) < count))
        nanosleep(&tick, NULL);

    if (stop_signal)
        printf("signal %d: stopping\n", (int)stop_signal);
    /* Graceful: in-flight handlers finish and their messages are settled;
     * messages received but not started go back to the group at once. */
    rc = cy_serve_stop(s);
    printf("stopped after %u deliveries%s%s\n", atomic_load(&handled), rc ? ": " : "",
           rc ? cy_strerror(rc) : "");
    int crc = cy_close(c);
    return rc || crc ? 1 : 0;
}
