/*
 * stream_replay.c — time travel on a stream: move a stream group's cursor to
 * a point in time, then replay everything from there to the end, committing
 * as it goes.
 *
 *   usage: example_stream_replay URL TOPIC WHEN [GROUP]
 *
 *   URL    http://host:port or file:///dir; "-" for the default ($COYOTE_URL,
 *          else http://127.0.0.1:8624)
 *   TOPIC  a topic that exists (every partition is replayed)
 *   WHEN   milliseconds since the Unix epoch (0: from the beginning), or an
 *          RFC 3339 time: 2026-11-22T15:01:26Z, 2026-11-22T16:01:26.250+01:00
 *   GROUP  the stream group to move; default "replay"
 *
 * Prints each message, then a total:
 *
 *   orders~0 offset 3 at 2026-11-22T15:01:26.585Z key=customer-1: hello
 *   replayed 1 message
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <coyote.h>

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
 * (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* WHEN → ms since the epoch: all digits, or YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM). */
static int parse_when(const char *s, uint64_t *ms)
{
    if (*s && strspn(s, "0123456789") == strlen(s)) {
        *ms = strtoull(s, NULL, 10);
        return 0;
    }
    unsigned y, mo, d, h, mi, sec, frac = 0, oh = 0, om = 0;
    int used = 0;
    if (sscanf(s, "%4u-%2u-%2u%*1[Tt ]%2u:%2u:%2u%n", &y, &mo, &d, &h, &mi, &sec, &used) != 6 ||
        used != 19)
        return -1;
    const char *p = s + used;
    if (*p == '.') { /* milliseconds: the first three digits count */
        unsigned scale = 100;
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            frac += (unsigned)(*p - '0') * scale;
    }
    int sign = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && sscanf(p + 1, "%2u:%2u", &oh, &om) == 2 &&
               strlen(p) == 6) {
        sign = *p == '-' ? -1 : 1;
        p += 6;
    } else {
        return -1;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec -
                sign * (int64_t)(oh * 60 + om) * 60;
    if (t < 0)
        return -1;
    *ms = (uint64_t)t * 1000 + frac;
    return 0;
}

/* ms since the epoch → "2026-11-22T15:01:26.585Z" */
static void format_ms(uint64_t ms, char *out, size_t len)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm *tm = gmtime(&secs);
    size_t n = tm ? strftime(out, len, "%Y-%m-%dT%H:%M:%S", tm) : 0;
    snprintf(out + n, len - n, ".%03uZ", (unsigned)(ms % 1000));
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr,
                "usage: %s URL|- TOPIC WHEN [GROUP]\n"
                "  WHEN: ms since the epoch, or RFC 3339 (2026-11-22T15:01:26Z)\n",
                argv[0]);
        return 2;
    }
    const char *url = strcmp(argv[1], "-") != 0 ? argv[1] : getenv("COYOTE_URL");
    if (!url || !*url)
        url = "http://127.0.0.1:8624";
    const char *topic = argv[2], *group = argc > 4 ? argv[4] : "replay";
    uint64_t when;
    if (parse_when(argv[3], &when) != 0) {
        fprintf(stderr, "%s: '%s' is not a time (ms since the epoch, or RFC 3339)\n", argv[0],
                argv[3]);
        return 2;
    }

    cy_client *c;
    int rc = cy_open(url, NULL, &c);
    if (rc) {
        fprintf(stderr, "cannot open %s: %s\n", url, cy_strerror(rc));
        return 1;
    }

    /* Seek every partition of the topic to the first message at or after
     * `when` (a time in the future: the end). This overwrites the group's
     * cursors and releases its leases; a new group is created. */
    rc = cy_seek(c, topic, group, CY_SEEK_TIMESTAMP, when);
    if (rc)
        goto fail;

    /* Receive until a receive comes back empty (caught up). A stream receive
     * leases each partition it returned messages from; committing the last
     * offset handed out moves the cursor past it and releases the lease. */
    unsigned long replayed = 0;
    cy_receive_opts ro = {.batch_size = 100};
    for (;;) {
        cy_batch b;
        rc = cy_receive(c, CY_STREAM, topic, group, &ro, &b);
        if (rc)
            goto fail;
        if (b.n == 0)
            break;
        for (size_t i = 0; i < b.n; i++) {
            const cy_received *m = &b.msgs[i];
            char at[40];
            format_ms(m->timestamp, at, sizeof at);
            printf("%s offset %" PRIu64 " at %s%s%.*s: %.*s\n", m->topic, m->offset, at,
                   m->key ? " key=" : "", m->key ? (int)m->key_len : 0, m->key ? m->key : "",
                   (int)m->value_len, (const char *)m->value);
            replayed++;
            /* A batch holds each partition's messages in offset order:
             * commit at the last one of each partition. */
            if (i + 1 == b.n || b.msgs[i + 1].partition != m->partition) {
                rc = cy_commit(c, m->topic, group, m->offset);
                if (rc) {
                    cy_batch_free(&b);
                    goto fail;
                }
            }
        }
        cy_batch_free(&b);
    }
    printf("replayed %lu message%s\n", replayed, replayed == 1 ? "" : "s");
    return cy_close(c) ? 1 : 0;

fail:;
    const char *detail, *code = cy_last_error(c, &detail, NULL);
    fprintf(stderr, "%s: %s%s%s\n", topic, cy_strerror(rc), code ? ": " : "", code ? detail : "");
    cy_close(c);
    return 1;
}
