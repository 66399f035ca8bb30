/*
 * publish.c — publish a few keyed messages with headers, in one atomic call,
 * and print where they were stored.
 *
 *   usage: example_publish [URL [TOPIC [VALUE...]]]
 *
 *   URL    http://host:port (a coyoted) or file:///dir (the broker in this
 *          process); default $COYOTE_URL, else http://127.0.0.1:8624
 *   TOPIC  default "orders"
 *   VALUE  message values; default "hello" "world" "again"
 *
 * Message i gets the key "customer-<i % 2>" (messages of one key go to one
 * partition, in order) and two headers. Prints one line per partition that
 * received messages:
 *
 *   orders~0: offsets 0..2 (3 messages)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coyote.h>

#define MAX_VALUES 64

int main(int argc, char **argv)
{
    const char *url = argc > 1 ? argv[1] : getenv("COYOTE_URL");
    if (!url || !*url)
        url = "http://127.0.0.1:8624";
    const char *topic = argc > 2 ? argv[2] : "orders";
    static const char *const defaults[] = {"hello", "world", "again"};
    const char *const *values = argc > 3 ? (const char *const *)argv + 3 : defaults;
    size_t n = argc > 3 ? (size_t)(argc - 3) : 3;
    if (n > MAX_VALUES || (argc > 1 && strcmp(argv[1], "--help") == 0)) {
        fprintf(stderr, "usage: %s [URL [TOPIC [VALUE...]]] (at most %d values)\n", argv[0],
                MAX_VALUES);
        return 2;
    }

    cy_client *c;
    int rc = cy_open(url, NULL, &c);
    if (rc) {
        fprintf(stderr, "cannot open %s: %s\n", url, cy_strerror(rc));
        return 1;
    }

    /* Headers are name/value C strings; the library copies everything it
     * sends, so these can live on the stack. */
    const cy_header headers[] = {
        {.name = "content-type", .value = "text/plain"},
        {.name = "source", .value = "example_publish"},
    };
    char keys[MAX_VALUES][16];
    cy_message msgs[MAX_VALUES];
    for (size_t i = 0; i < n; i++) {
        snprintf(keys[i], sizeof keys[i], "customer-%zu", i % 2);
        msgs[i] = (cy_message){
            .value = values[i],
            .value_len = strlen(values[i]), /* values are bytes: pointer + length */
            .headers = headers,
            .n_headers = 2,
            .key = keys[i], /* key_len 0: strlen(key) */
        };
    }

    /* All or nothing: when cy_publish returns 0 every message is durable. A
     * NULL idempotency key means a retry after a timeout could store the
     * messages twice; pass a key of your own to make retries safe. */
    cy_publish_result res;
    rc = cy_publish(c, topic, msgs, n, NULL, &res);
    if (rc) {
        const char *detail, *code = cy_last_error(c, &detail, NULL);
        fprintf(stderr, "publish to %s failed: %s%s%s\n", topic, cy_strerror(rc), code ? ": " : "",
                code ? detail : "");
        cy_close(c);
        return 1;
    }
    /* One entry per partition; end_offset is one past the last offset. */
    for (size_t i = 0; i < res.n; i++) {
        const cy_partition_offsets *p = &res.parts[i];
        printf("%s~%" PRIu32 ": offsets %" PRIu64 "..%" PRIu64 " (%" PRIu64 " messages)\n", topic,
               p->partition, p->start_offset, p->end_offset - 1, p->end_offset - p->start_offset);
    }
    return cy_close(c) ? 1 : 0;
}
