/*
 * groups.c — consumer groups: `coyote group list|get`, `coyote queue
 * configure`, `coyote dlq redrive`.
 *
 * Like admin.c: a JSON body through cy_call_json, the answer printed as it
 * came (--json) or as lines and tables (shapes in docs/api.md, "Consumer
 * groups").
 */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* ---- group ------------------------------------------------------------------------ */

static const char usage_group[] = "Usage: coyote group SUBCOMMAND ...\n"
                                  "\n"
                                  "Consumer groups (stream, queue and FIFO) and their lag.\n"
                                  "\n"
                                  "  coyote group list [TOPIC]\n"
                                  "  coyote group get TOPIC --group G [--mode queue|fifo|stream]\n"
                                  "\n"
                                  "Run 'coyote group SUBCOMMAND --help' for details.\n";

static const char usage_group_list[] =
    "Usage: coyote group list [TOPIC]\n"
    "\n"
    "List the consumer groups of TOPIC (or of every topic of the namespace): mode,\n"
    "lag in messages and in ms (age of the oldest unconsumed message), messages in\n"
    "flight, waiting for a retry, dead-lettered and delayed.\n";

static const char usage_group_get[] =
    "Usage: coyote group get TOPIC --group G [--mode queue|fifo|stream]\n"
    "\n"
    "Print one consumer group: its totals, its configuration (queue/FIFO) and its\n"
    "lag per partition: the position (stream: the cursor; queue/FIFO: the floor\n"
    "below which everything is settled), lag and lag_ms.\n"
    "\n"
    "Options:\n"
    "  --group G   the consumer group (required)\n"
    "  --mode M    queue (default), fifo or stream\n"
    "\n"
    "Example:\n"
    "  coyote group get clicks --group analytics --mode stream\n";

static void print_groups(const json_t *groups)
{
    struct cli_table t;
    size_t i;
    json_t *g;
    const char *cols[] = {"lag", "lag_ms", "in_flight", "waiting_retry", "dead", "delayed"};
    cli_table_init(&t, 9);
    cli_table_row(&t, "TOPIC", "MODE", "GROUP", "LAG", "LAG_MS", "IN_FLIGHT", "WAITING_RETRY",
                  "DEAD", "DELAYED");
    json_array_foreach(groups, i, g)
    {
        char b[9][48];
        for (size_t c = 0; c < 6; c++)
            cli_jtext(json_object_get(g, cols[c]), b[3 + c], 48);
        cli_table_row(&t, cli_jtext(json_object_get(g, "topic"), b[0], 48),
                      cli_jtext(json_object_get(g, "mode"), b[1], 48),
                      cli_jtext(json_object_get(g, "consumer_group"), b[2], 48), b[3], b[4], b[5],
                      b[6], b[7], b[8]);
    }
    if (t.n > t.cols)
        cli_table_print(&t, stdout);
    else
        printf("no consumer groups\n");
    cli_table_free(&t);
}

static int group_list(struct cli *cli, int argc, char **argv)
{
    struct cli_list pos = {0};
    json_t *resp;
    char *raw;
    int rc = cli_parse(cli, argc, argv, NULL, 0, &pos);
    if (rc == CLI_OK && pos.n > 1)
        rc = cli_usage_error(cli, "group list takes at most one TOPIC");
    if (rc != CLI_OK) {
        cli_list_free(&pos);
        return rc;
    }
    json_t *body = json_object();
    if (pos.n == 1)
        cli_jput(&body, "topic", json_string(pos.items[0]));
    cli_list_free(&pos);
    if ((rc = cli_call(cli, "v1.msgs.group.list", body, true, &resp, &raw)) != CLI_OK)
        return rc;
    if (cli->json)
        cli_print_raw(raw);
    else
        print_groups(json_object_get(resp, "groups"));
    json_decref(resp);
    cy_free(raw);
    return CLI_OK;
}

/* "1000,5000" / "none" for a retry schedule. */
static void schedule_text(const json_t *schedule, char *out, size_t size)
{
    size_t i, len = 0;
    json_t *v;
    out[0] = '\0';
    json_array_foreach(schedule, i, v)
    {
        int n = snprintf(out + len, size - len, "%s%llu", i ? "," : "",
                         (unsigned long long)cli_ju64(v));
        if (n < 0 || (size_t)n >= size - len)
            break;
        len += (size_t)n;
    }
    if (len == 0)
        snprintf(out, size, "none (the first nack dead-letters)");
}

static void print_config(const json_t *config)
{
    char sched[1024], b[48];
    const json_t *dlq = json_object_get(config, "dlq_topic");
    uint64_t max = cli_ju64(json_object_get(config, "max_deliveries"));
    schedule_text(json_object_get(config, "retry_schedule"), sched, sizeof sched);
    printf("retry_schedule:  %s\n", sched);
    printf("dlq_topic:       %s\n", json_is_string(dlq) ? json_string_value(dlq)
                                                        : "none (dead-lettered messages are "
                                                          "kept in the group only: see dlq "
                                                          "redrive)");
    if (max)
        printf("max_deliveries:  %s\n",
               cli_jtext(json_object_get(config, "max_deliveries"), b, sizeof b));
    else
        printf("max_deliveries:  unlimited\n");
}

static void print_group(const json_t *g)
{
    char b[6][48];
    const char *mode = cli_jtext(json_object_get(g, "mode"), b[0], 48);
    bool stream = strcmp(mode, "stream") == 0;
    printf("group %s (%s) on %s\n", cli_jtext(json_object_get(g, "consumer_group"), b[1], 48), mode,
           cli_jtext(json_object_get(g, "topic"), b[2], 48));
    printf("lag:             %s messages, %s ms\n", cli_jtext(json_object_get(g, "lag"), b[1], 48),
           cli_jtext(json_object_get(g, "lag_ms"), b[2], 48));
    if (!stream) {
        printf("in_flight:       %s\n", cli_jtext(json_object_get(g, "in_flight"), b[1], 48));
        printf("waiting_retry:   %s\n", cli_jtext(json_object_get(g, "waiting_retry"), b[1], 48));
        printf("dead:            %s\n", cli_jtext(json_object_get(g, "dead"), b[1], 48));
        printf("delayed:         %s\n", cli_jtext(json_object_get(g, "delayed"), b[1], 48));
        const json_t *config = json_object_get(g, "config");
        if (json_is_object(config))
            print_config(config);
    }
    printf("\n");
    struct cli_table t;
    size_t i;
    json_t *p;
    cli_table_init(&t, stream ? 5 : 4);
    if (stream)
        cli_table_row(&t, "PARTITION", "POSITION", "LAG", "LAG_MS", "LEASED");
    else
        cli_table_row(&t, "PARTITION", "POSITION", "LAG", "LAG_MS");
    json_array_foreach(json_object_get(g, "partitions"), i, p)
    {
        cli_jtext(json_object_get(p, "partition"), b[0], 48);
        cli_jtext(json_object_get(p, stream ? "cursor" : "floor"), b[1], 48);
        cli_jtext(json_object_get(p, "lag"), b[2], 48);
        cli_jtext(json_object_get(p, "lag_ms"), b[3], 48);
        if (stream)
            cli_table_row(&t, b[0], b[1], b[2], b[3],
                          cli_jtext(json_object_get(p, "leased"), b[4], 48));
        else
            cli_table_row(&t, b[0], b[1], b[2], b[3]);
    }
    cli_table_print(&t, stdout);
    cli_table_free(&t);
}

/* Parse TOPIC --group G [--mode M] (stream allowed or not). */
static int topic_group_mode(struct cli *cli, int argc, char **argv, bool allow_stream,
                            const char **topic, const char **group, cy_mode *mode)
{
    const char *mode_opt = NULL;
    struct cli_list pos = {0};
    const struct cli_opt opts[] = {{"group", CLI_VALUE, group}, {"mode", CLI_VALUE, &mode_opt}};
    *group = NULL;
    *mode = CY_QUEUE;
    int rc = cli_parse(cli, argc, argv, opts, 2, &pos);
    if (rc == CLI_OK && pos.n != 1)
        rc = cli_usage_error(cli, "%s needs one TOPIC", cli->cmd);
    if (rc == CLI_OK && !*group)
        rc = cli_usage_error(cli, "%s needs --group G", cli->cmd);
    if (rc == CLI_OK && mode_opt)
        rc = cli_parse_mode(cli, mode_opt, allow_stream, mode);
    if (rc == CLI_OK)
        *topic = pos.items[0];
    cli_list_free(&pos);
    return rc;
}

static int group_get(struct cli *cli, int argc, char **argv)
{
    const char *topic, *group;
    cy_mode mode;
    json_t *resp;
    char *raw;
    int rc = topic_group_mode(cli, argc, argv, true, &topic, &group, &mode);
    if (rc != CLI_OK)
        return rc;
    json_t *body = json_pack("{s:s,s:s,s:s}", "topic", topic, "consumer_group", group, "mode",
                             cli_mode_name(mode));
    if ((rc = cli_call(cli, "v1.msgs.group.get", body, true, &resp, &raw)) != CLI_OK)
        return rc;
    if (cli->json)
        cli_print_raw(raw);
    else
        print_group(resp);
    json_decref(resp);
    cy_free(raw);
    return CLI_OK;
}

static const struct cli_sub group_subs[] = {
    {"list", group_list, usage_group_list},
    {"get", group_get, usage_group_get},
};

int cmd_group(struct cli *cli, int argc, char **argv)
{
    return cli_dispatch_sub(cli, "group", usage_group, group_subs,
                            sizeof group_subs / sizeof group_subs[0], argc, argv);
}

/* ---- queue configure --------------------------------------------------------------------- */

static const char usage_queue[] = "Usage: coyote queue configure TOPIC --group G [OPTIONS]\n"
                                  "\n"
                                  "Run 'coyote queue configure --help' for details.\n";

static const char usage_queue_configure[] =
    "Usage: coyote queue configure TOPIC --group G [--mode queue|fifo]\n"
    "           [--retry-schedule MS,MS,...] [--dlq-topic T] [--max-deliveries N]\n"
    "\n"
    "Replace the configuration of queue (or FIFO) group G on TOPIC; an option left\n"
    "out gets its default. A nacked message is retried after the next delay of the\n"
    "schedule; once the schedule is used up it is dead-lettered: kept dead in the\n"
    "group (`coyote dlq redrive` delivers it again) and, with --dlq-topic, also\n"
    "copied to the DLQ topic (the copy stays there after a redrive).\n"
    "\n"
    "Options:\n"
    "  --group G               the consumer group (required)\n"
    "  --mode M                queue (default) or fifo\n"
    "  --retry-schedule LIST   retry delays in ms, comma-separated (default: none,\n"
    "                          the first nack dead-letters)\n"
    "  --dlq-topic T           the topic dead-lettered messages are also copied to\n"
    "  --max-deliveries N      dead-letter a message whose lease expired N times\n"
    "                          (default 0: unlimited)\n"
    "\n"
    "Example:\n"
    "  coyote queue configure jobs --group workers --retry-schedule 1000,5000 \\\n"
    "      --dlq-topic jobs-dlq --max-deliveries 5\n";

static int queue_configure(struct cli *cli, int argc, char **argv)
{
    const char *group = NULL, *mode_opt = NULL, *schedule = NULL, *dlq = NULL, *max = NULL;
    struct cli_list pos = {0};
    const struct cli_opt opts[] = {
        {"group", CLI_VALUE, &group},
        {"mode", CLI_VALUE, &mode_opt},
        {"retry-schedule", CLI_VALUE, &schedule},
        {"dlq-topic", CLI_VALUE, &dlq},
        {"max-deliveries", CLI_VALUE, &max},
    };
    cy_mode mode = CY_QUEUE;
    json_t *resp = NULL, *body = NULL, *delays = json_array();
    char *raw = NULL;
    uint64_t v;
    int rc = cli_parse(cli, argc, argv, opts, sizeof opts / sizeof opts[0], &pos);
    if (rc == CLI_OK && pos.n != 1)
        rc = cli_usage_error(cli, "queue configure needs one TOPIC");
    if (rc == CLI_OK && !group)
        rc = cli_usage_error(cli, "queue configure needs --group G");
    if (rc == CLI_OK && mode_opt)
        rc = cli_parse_mode(cli, mode_opt, false, &mode);
    if (rc == CLI_OK && schedule && *schedule) {
        char *copy = strdup(schedule), *save = NULL;
        for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok && rc == CLI_OK;
             tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ')
                tok++;
            rc = cli_parse_u64(cli, "--retry-schedule", tok, INT64_MAX, &v);
            if (rc == CLI_OK)
                json_array_append_new(delays, json_integer((json_int_t)v));
        }
        free(copy);
    }
    if (rc != CLI_OK)
        goto out;
    body = json_pack("{s:s,s:s}", "topic", pos.items[0], "consumer_group", group);
    cli_jput(&body, "retry_schedule", delays);
    delays = NULL;
    if (dlq)
        cli_jput(&body, "dlq_topic", json_string(dlq));
    if (max) {
        if ((rc = cli_parse_u64(cli, "--max-deliveries", max, UINT32_MAX, &v)) != CLI_OK)
            goto out;
        cli_jput(&body, "max_deliveries", json_integer((json_int_t)v));
    }
    const char *op = mode == CY_FIFO ? "v1.msgs.fifo.configure" : "v1.msgs.queue.configure";
    rc = cli_call(cli, op, body, true, &resp, &raw);
    body = NULL;
    if (rc != CLI_OK)
        goto out;
    if (cli->json) {
        cli_print_raw(raw);
    } else {
        printf("%s group %s on %s\n", cli_mode_name(mode), group, pos.items[0]);
        print_config(resp);
    }
out:
    json_decref(body);
    json_decref(delays);
    json_decref(resp);
    cy_free(raw);
    cli_list_free(&pos);
    return rc;
}

static const struct cli_sub queue_subs[] = {
    {"configure", queue_configure, usage_queue_configure},
};

int cmd_queue(struct cli *cli, int argc, char **argv)
{
    return cli_dispatch_sub(cli, "queue", usage_queue, queue_subs, 1, argc, argv);
}

/* ---- dlq redrive -------------------------------------------------------------------------- */

static const char usage_dlq[] = "Usage: coyote dlq redrive TOPIC --group G [--mode queue|fifo]\n"
                                "\n"
                                "Run 'coyote dlq redrive --help' for details.\n";

static const char usage_dlq_redrive[] =
    "Usage: coyote dlq redrive TOPIC --group G [--mode queue|fifo]\n"
    "\n"
    "Make every message dead-lettered in queue (or FIFO) group G available again,\n"
    "with its delivery count reset. Copies already sent to a DLQ topic stay there\n"
    "(consume the DLQ topic itself to see them).\n"
    "\n"
    "Example:\n"
    "  coyote dlq redrive jobs --group auditors\n";

static int dlq_redrive(struct cli *cli, int argc, char **argv)
{
    const char *topic, *group;
    cy_mode mode;
    json_t *resp;
    char *raw;
    int rc = topic_group_mode(cli, argc, argv, false, &topic, &group, &mode);
    if (rc != CLI_OK)
        return rc;
    json_t *body = json_pack("{s:s,s:s}", "topic", topic, "consumer_group", group);
    const char *op = mode == CY_FIFO ? "v1.msgs.fifo.redrive-dlq" : "v1.msgs.queue.redrive-dlq";
    if ((rc = cli_call(cli, op, body, true, &resp, &raw)) != CLI_OK)
        return rc;
    if (cli->json)
        cli_print_raw(raw);
    else
        printf("%s group %s on %s: dead-lettered messages are available again\n",
               cli_mode_name(mode), group, topic);
    json_decref(resp);
    cy_free(raw);
    return CLI_OK;
}

static const struct cli_sub dlq_subs[] = {
    {"redrive", dlq_redrive, usage_dlq_redrive},
};

int cmd_dlq(struct cli *cli, int argc, char **argv)
{
    return cli_dispatch_sub(cli, "dlq", usage_dlq, dlq_subs, 1, argc, argv);
}
