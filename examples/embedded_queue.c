/*
 * embedded_queue.c — a durable work queue inside one program: with a
 * file:///dir URL the broker runs in this process on that directory (no
 * server), and jobs survive the program's exit, a crash or a reboot.
 *
 *   usage: example_embedded_queue [URL]
 *
 *   URL  file:///some/dir (the directory is created); default $COYOTE_URL,
 *        else http://127.0.0.1:8624 (the same code works against a coyoted)
 *
 * Each run works at most 3 jobs of the queue "work", acking each; when it
 * finds the queue empty it first queues 5 new jobs. Run it twice on the same
 * directory: the first run queues 5 jobs and does 3, the second finds the 2
 * the first one left and does them.
 *
 *   $ example_embedded_queue file:///tmp/q
 *   the queue is empty: queued 5 jobs
 *   done: job 1 (0:0, attempt 1)
 *   ...
 *   did 3 jobs; more may be waiting: run me again
 *   $ example_embedded_queue file:///tmp/q
 *   done: job 4 (0:3, attempt 1)
 *   done: job 5 (0:4, attempt 1)
 *   did 2 jobs; the queue is empty
 *
 * Only one process at a time may open a directory: a second one gets
 * CY_ELOCKED. A job whose worker dies before its ack is not lost: its lease
 * (here 10 s) runs out and the next receive hands it out again (attempt 2).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coyote.h>

#define TOPIC "work"
#define GROUP "embedded"
#define PER_RUN 3

/* Lease up to PER_RUN jobs. */
static int take(cy_client *c, cy_batch *b)
{
    cy_receive_opts ro = {.batch_size = PER_RUN, .has_lease = true, .lease_ms = 10000};
    return cy_receive(c, CY_QUEUE, TOPIC, GROUP, &ro, b);
}

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("COYOTE_URL");
    if (!url || !*url)
        url = "http://127.0.0.1:8624";
    if (argc > 2 || (argc > 1 && strcmp(argv[1], "--help") == 0)) {
        fprintf(stderr, "usage: %s [URL]   (URL: file:///dir for the embedded broker)\n", argv[0]);
        return 2;
    }

    /* fsync "always" (the default) makes every publish and ack durable
     * before the call returns; "interval=100" trades the last 100 ms for
     * speed (cy_options.fsync, embedded only). */
    cy_client *c;
    int rc = cy_open(url, NULL, &c);
    if (rc == CY_ELOCKED) {
        fprintf(stderr, "%s is in use by another process\n", url);
        return 1;
    }
    if (rc) {
        fprintf(stderr, "cannot open %s: %s\n", url, cy_strerror(rc));
        return 1;
    }

    cy_batch b;
    rc = take(c, &b);
    if (!rc && b.n == 0) {
        /* Nothing waiting: queue 5 jobs in one atomic publish. */
        char text[5][16];
        cy_message jobs[5];
        for (int i = 0; i < 5; i++) {
            snprintf(text[i], sizeof text[i], "job %d", i + 1);
            jobs[i] = (cy_message){.value = text[i], .value_len = strlen(text[i])};
        }
        rc = cy_publish(c, TOPIC, jobs, 5, NULL, NULL);
        if (!rc) {
            printf("the queue is empty: queued 5 jobs\n");
            rc = take(c, &b);
        }
    }
    if (rc) {
        fprintf(stderr, "%s: %s\n", url, cy_strerror(rc));
        cy_close(c);
        return 1;
    }

    size_t done = 0;
    for (size_t i = 0; i < b.n; i++) {
        const cy_received *m = &b.msgs[i];
        /* ... the job's work goes here ... then the ack settles it for good. */
        const char *id = m->msg_id;
        rc = cy_ack(c, CY_QUEUE, TOPIC, GROUP, &id, 1);
        if (rc) {
            fprintf(stderr, "ack %s: %s\n", id, cy_strerror(rc));
            break;
        }
        printf("done: %.*s (%s, attempt %" PRIu32 ")\n", (int)m->value_len, (const char *)m->value,
               m->msg_id, m->attempt);
        done++;
    }
    if (!rc)
        printf("did %zu job%s; %s\n", done, done == 1 ? "" : "s",
               done == PER_RUN ? "more may be waiting: run me again" : "the queue is empty");
    cy_batch_free(&b);

    /* Closing syncs and checkpoints the directory and releases it. */
    int crc = cy_close(c);
    return rc || crc ? 1 : 0;
}
