/*
 * batch_publisher.c — high-rate publishing with the batching publisher:
 * cy_publisher_send queues a message and returns; a background thread sends
 * batches and reports every message to a completion callback, which counts.
 *
 *   usage: example_batch_publisher [URL [TOPIC [COUNT]]]
 *
 *   URL    http://host:port or file:///dir; default $COYOTE_URL, else
 *          http://127.0.0.1:8624
 *   TOPIC  default "events"
 *   COUNT  messages to send; default 1000
 *
 *   sent 1000, stored 1000, failed 0 in 0.041 s
 *   offsets: lowest 0, highest 999
 *
 * Exits 0 when every message was stored.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <coyote.h>

/* Updated by on_done only, which always runs on the publisher's one thread;
 * main reads it after cy_publisher_close has joined that thread. */
struct tally {
    unsigned long stored, failed, unplaced;
    int first_error;
    uint64_t lowest, highest;
};

/* One call per message, in the order of cy_publisher_send, once its batch
 * is stored (rc 0) or has finally failed. msg_arg is what was given to
 * cy_publisher_send (here the message's number). */
static void on_done(void *arg, int rc, uint32_t partition, uint64_t offset, void *msg_arg)
{
    struct tally *t = arg;
    (void)msg_arg;
    if (rc) {
        if (!t->failed++)
            t->first_error = rc;
        return;
    }
    t->stored++;
    /* A batch spread over several partitions is stored, but which message
     * got which offset is not known: the position is (UINT32_MAX, UINT64_MAX). */
    if (partition == UINT32_MAX) {
        t->unplaced++;
        return;
    }
    if (t->stored - t->unplaced == 1 || offset < t->lowest)
        t->lowest = offset;
    if (offset > t->highest)
        t->highest = offset;
}

static double now_s(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("COYOTE_URL");
    if (!url || !*url)
        url = "http://127.0.0.1:8624";
    const char *topic = argc > 2 ? argv[2] : "events";
    unsigned long count = argc > 3 ? strtoul(argv[3], NULL, 10) : 1000;
    if (argc > 4 || (argc > 1 && strcmp(argv[1], "--help") == 0)) {
        fprintf(stderr, "usage: %s [URL [TOPIC [COUNT]]]\n", argv[0]);
        return 2;
    }

    cy_client *c;
    int rc = cy_open(url, NULL, &c);
    if (rc) {
        fprintf(stderr, "cannot open %s: %s\n", url, cy_strerror(rc));
        return 1;
    }

    struct tally t = {0};
    cy_publisher_opts po = {
        .linger_ms = 5,        /* a batch leaves after 5 ms ... */
        .batch_size = 100,     /* ... or as soon as it holds 100 messages */
        .max_in_flight = 1000, /* cy_publisher_send blocks beyond this */
        .on_done = on_done,
        .arg = &t,
    };
    cy_publisher *p;
    rc = cy_publisher_new(c, topic, &po, &p);
    if (rc) {
        fprintf(stderr, "cannot start the publisher: %s\n", cy_strerror(rc));
        cy_close(c);
        return 1;
    }

    double start = now_s();
    unsigned long sent = 0;
    for (unsigned long i = 0; i < count; i++) {
        char value[32], key[16];
        snprintf(value, sizeof value, "event %lu", i);
        snprintf(key, sizeof key, "device-%lu", i % 8);
        cy_message m = {.value = value, .value_len = strlen(value), .key = key};
        /* The message is copied: value and key may go out of scope now. */
        rc = cy_publisher_send(p, &m, (void *)(uintptr_t)i);
        if (rc) {
            fprintf(stderr, "send: %s\n", cy_strerror(rc));
            break;
        }
        sent++;
    }
    /* close = flush (wait for every report) + stop the thread; it returns the
     * first error reported since the last flush. */
    int prc = cy_publisher_close(p);
    double secs = now_s() - start;

    printf("sent %lu, stored %lu, failed %lu in %.3f s\n", sent, t.stored, t.failed, secs);
    if (t.stored > t.unplaced)
        printf("offsets: lowest %" PRIu64 ", highest %" PRIu64 "\n", t.lowest, t.highest);
    if (t.unplaced)
        printf("%lu stored at positions not reported (batches over several partitions)\n",
               t.unplaced);
    if (t.failed)
        printf("first error: %s\n", cy_strerror(t.first_error));
    if (prc && !t.failed)
        printf("close: %s\n", cy_strerror(prc));
    int crc = cy_close(c);
    return rc || prc || crc || t.stored != count ? 1 : 0;
}
