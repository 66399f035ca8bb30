/*
 * admin.c — `coyote ns ...`, `coyote topic ...` and `coyote seek`.
 *
 * Each command builds the operation's JSON body, sends it with cy_call_json
 * (cli_call) and either prints the server's JSON as it came (--json) or
 * renders it as lines and tables. Response shapes: docs/api.md.
 */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* ---- namespaces ------------------------------------------------------------------- */

static const char usage_ns[] =
    "Usage: coyote ns SUBCOMMAND ...\n"
    "\n"
    "Namespaces: separate logs (own journal and retention) holding topics. The\n"
    "namespace 'default' always exists; data commands use --namespace NS.\n"
    "\n"
    "  coyote ns configure NAME [--period-ms N] [--size-bytes N] [--topic-bytes N]\n"
    "  coyote ns get NAME\n"
    "  coyote ns list\n"
    "\n"
    "Run 'coyote ns SUBCOMMAND --help' for details.\n";

static const char usage_ns_configure[] =
    "Usage: coyote ns configure NAME [--period-ms N] [--size-bytes N]\n"
    "                               [--topic-bytes N]\n"
    "\n"
    "Create namespace NAME, or replace its retention (an option left out means\n"
    "unlimited). Prints the namespace.\n"
    "\n"
    "Options:\n"
    "  --period-ms N     messages older than N ms are never delivered again and are\n"
    "                    deleted soon after\n"
    "  --size-bytes N    the namespace's topics together keep at most N bytes\n"
    "  --topic-bytes N   each topic keeps at most N bytes (oldest data goes first)\n"
    "\n"
    "Example:\n"
    "  coyote ns configure billing --period-ms 604800000 --topic-bytes 1073741824\n";

static const char usage_ns_get[] = "Usage: coyote ns get NAME\n"
                                   "\n"
                                   "Print namespace NAME: its retention, created and updated.\n";

static const char usage_ns_list[] = "Usage: coyote ns list\n"
                                    "\n"
                                    "List the namespaces with their retention.\n";

static void print_namespace(const json_t *ns)
{
    const json_t *ret = json_object_get(ns, "retention");
    const char *fields[] = {"period_ms", "size_bytes", "topic_bytes"};
    char buf[48];
    printf("name:         %s\n", cli_jtext(json_object_get(ns, "name"), buf, sizeof buf));
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_object_get(ret, fields[i]);
        printf("%s:%*s%s\n", fields[i], (int)(13 - strlen(fields[i])), "",
               json_is_integer(v) ? cli_jtext(v, buf, sizeof buf) : "unlimited");
    }
    printf("created:      %s\n", cli_jtime(json_object_get(ns, "created"), buf, sizeof buf));
    printf("updated:      %s\n", cli_jtime(json_object_get(ns, "updated"), buf, sizeof buf));
}

/* Run a namespace op whose answer is one namespace. */
static int namespace_call(struct cli *cli, const char *op, json_t *body)
{
    json_t *resp;
    char *raw;
    int rc = cli_call(cli, op, body, false, &resp, &raw);
    if (rc != CLI_OK)
        return rc;
    if (cli->json)
        cli_print_raw(raw);
    else
        print_namespace(resp);
    json_decref(resp);
    cy_free(raw);
    return CLI_OK;
}

static int ns_configure(struct cli *cli, int argc, char **argv)
{
    const char *values[3] = {NULL, NULL, NULL};
    const char *fields[3] = {"period_ms", "size_bytes", "topic_bytes"};
    struct cli_list pos = {0};
    const struct cli_opt opts[] = {
        {"period-ms", CLI_VALUE, &values[0]},
        {"size-bytes", CLI_VALUE, &values[1]},
        {"topic-bytes", CLI_VALUE, &values[2]},
    };
    int rc = cli_parse(cli, argc, argv, opts, 3, &pos);
    if (rc == CLI_OK && pos.n != 1)
        rc = cli_usage_error(cli, "ns configure needs one NAME");
    json_t *retention = json_object();
    for (size_t i = 0; i < 3 && rc == CLI_OK; i++) {
        uint64_t v;
        if (!values[i])
            continue;
        char what[24];
        snprintf(what, sizeof what, "--%s", opts[i].name);
        rc = cli_parse_u64(cli, what, values[i], INT64_MAX, &v);
        if (rc == CLI_OK)
            cli_jput(&retention, fields[i], json_integer((json_int_t)v));
    }
    if (rc != CLI_OK) {
        json_decref(retention);
        cli_list_free(&pos);
        return rc;
    }
    json_t *body = json_pack("{s:s}", "name", pos.items[0]);
    cli_jput(&body, "retention", retention);
    cli_list_free(&pos);
    return namespace_call(cli, "v1.msgs.namespace.configure", body);
}

static int ns_get(struct cli *cli, int argc, char **argv)
{
    struct cli_list pos = {0};
    int rc = cli_parse(cli, argc, argv, NULL, 0, &pos);
    if (rc == CLI_OK && pos.n != 1)
        rc = cli_usage_error(cli, "ns get needs one NAME");
    if (rc == CLI_OK)
        rc = namespace_call(cli, "v1.msgs.namespace.get", json_pack("{s:s}", "name", pos.items[0]));
    cli_list_free(&pos);
    return rc;
}

static int ns_list(struct cli *cli, int argc, char **argv)
{
    struct cli_list pos = {0};
    json_t *resp;
    char *raw;
    int rc = cli_parse(cli, argc, argv, NULL, 0, &pos);
    if (rc == CLI_OK && pos.n != 0)
        rc = cli_usage_error(cli, "ns list takes no arguments");
    cli_list_free(&pos);
    if (rc != CLI_OK)
        return rc;
    if ((rc = cli_call(cli, "v1.msgs.namespace.list", json_object(), false, &resp, &raw)) != CLI_OK)
        return rc;
    if (cli->json) {
        cli_print_raw(raw);
    } else {
        struct cli_table t;
        size_t i;
        json_t *ns;
        cli_table_init(&t, 6);
        cli_table_row(&t, "NAME", "PERIOD_MS", "SIZE_BYTES", "TOPIC_BYTES", "CREATED", "UPDATED");
        json_array_foreach(json_object_get(resp, "namespaces"), i, ns)
        {
            const json_t *ret = json_object_get(ns, "retention");
            char b[6][48];
            cli_table_row(&t, cli_jtext(json_object_get(ns, "name"), b[0], 48),
                          cli_jtext(json_object_get(ret, "period_ms"), b[1], 48),
                          cli_jtext(json_object_get(ret, "size_bytes"), b[2], 48),
                          cli_jtext(json_object_get(ret, "topic_bytes"), b[3], 48),
                          cli_jtime(json_object_get(ns, "created"), b[4], 48),
                          cli_jtime(json_object_get(ns, "updated"), b[5], 48));
        }
        cli_table_print(&t, stdout);
        cli_table_free(&t);
    }
    json_decref(resp);
    cy_free(raw);
    return CLI_OK;
}

static const struct cli_sub ns_subs[] = {
    {"configure", ns_configure, usage_ns_configure},
    {"get", ns_get, usage_ns_get},
    {"list", ns_list, usage_ns_list},
};

int cmd_ns(struct cli *cli, int argc, char **argv)
{
    return cli_dispatch_sub(cli, "ns", usage_ns, ns_subs, sizeof ns_subs / sizeof ns_subs[0], argc,
                            argv);
}

/* ---- topics ------------------------------------------------------------------------ */

static const char usage_topic[] = "Usage: coyote topic SUBCOMMAND ...\n"
                                  "\n"
                                  "Topics (created on first use: publish, consume, configure).\n"
                                  "\n"
                                  "  coyote topic configure TOPIC --partitions N\n"
                                  "  coyote topic get TOPIC\n"
                                  "  coyote topic list\n"
                                  "  coyote topic trim TOPIC (--before-offset N [--partition P] |\n"
                                  "                          --before-timestamp T)\n"
                                  "\n"
                                  "Run 'coyote topic SUBCOMMAND --help' for details.\n";

static const char usage_topic_configure[] =
    "Usage: coyote topic configure TOPIC --partitions N\n"
    "\n"
    "Set TOPIC's partition count (1..64; it can only grow), creating the topic.\n"
    "\n"
    "Example:\n"
    "  coyote topic configure clicks --partitions 4\n";

static const char usage_topic_get[] =
    "Usage: coyote topic get TOPIC\n"
    "\n"
    "Print TOPIC's partitions (start and end offsets, bytes, oldest message) and its\n"
    "consumer groups with their lag.\n";

static const char usage_topic_list[] = "Usage: coyote topic list\n"
                                       "\n"
                                       "List the topics of the namespace, one per line.\n";

static const char usage_topic_trim[] =
    "Usage: coyote topic trim TOPIC (--before-offset N [--partition P] |\n"
    "                                --before-timestamp T)\n"
    "\n"
    "Delete the messages below a point (the purge of a queue); offsets are never\n"
    "reused. Prints each addressed partition's new start offset.\n"
    "\n"
    "Options:\n"
    "  --before-offset N      delete offsets below N of one partition (TOPIC~P or\n"
    "                         --partition P)\n"
    "  --partition P          the partition for --before-offset\n"
    "  --before-timestamp T   delete, in every partition, what was published before T\n"
    "                         (RFC 3339 or ms since the epoch)\n"
    "\n"
    "Examples:\n"
    "  coyote topic trim orders --before-offset 100 --partition 0\n"
    "  coyote topic trim orders --before-timestamp 2026-11-01T00:00:00Z\n";

/* One positional argument and no other: the common shape of these commands. */
static int one_positional(struct cli *cli, int argc, char **argv, const struct cli_opt *opts,
                          size_t n_opts, const char *what, const char **out)
{
    struct cli_list pos = {0};
    int rc = cli_parse(cli, argc, argv, opts, n_opts, &pos);
    if (rc == CLI_OK && pos.n != 1)
        rc = cli_usage_error(cli, "%s needs one %s", cli->cmd, what);
    if (rc == CLI_OK)
        *out = pos.items[0];
    cli_list_free(&pos);
    return rc;
}

static int topic_configure(struct cli *cli, int argc, char **argv)
{
    const char *topic, *partitions = NULL;
    const struct cli_opt opts[] = {{"partitions", CLI_VALUE, &partitions}};
    uint64_t n;
    json_t *resp;
    char *raw;
    int rc = one_positional(cli, argc, argv, opts, 1, "TOPIC", &topic);
    if (rc != CLI_OK)
        return rc;
    if (!partitions)
        return cli_usage_error(cli, "topic configure needs --partitions N");
    if ((rc = cli_parse_u64(cli, "--partitions", partitions, INT64_MAX, &n)) != CLI_OK)
        return rc;
    json_t *body = json_pack("{s:s,s:I}", "topic", topic, "partitions", (json_int_t)n);
    if ((rc = cli_call(cli, "v1.msgs.topic.configure", body, true, &resp, &raw)) != CLI_OK)
        return rc;
    if (cli->json) {
        cli_print_raw(raw);
    } else {
        uint64_t count = cli_ju64(json_object_get(resp, "partitions"));
        printf("%s: %llu partition%s\n", topic, (unsigned long long)count, count == 1 ? "" : "s");
    }
    json_decref(resp);
    cy_free(raw);
    return CLI_OK;
}

static void print_topic(const json_t *t)
{
    char b[6][48];
    const json_t *parts = json_object_get(t, "partitions");
    printf("topic:       %s\n", cli_jtext(json_object_get(t, "topic"), b[0], 48));
    printf("partitions:  %zu\n", json_array_size(parts));
    printf("bytes:       %s\n", cli_jtext(json_object_get(t, "bytes"), b[0], 48));
    printf("oldest:      %s\n", cli_jtime(json_object_get(t, "oldest_timestamp"), b[0], 48));
    printf("\n");

    struct cli_table tab;
    size_t i;
    json_t *p;
    cli_table_init(&tab, 6);
    cli_table_row(&tab, "PARTITION", "START", "END", "MESSAGES", "BYTES", "OLDEST");
    json_array_foreach(parts, i, p)
    {
        uint64_t start = cli_ju64(json_object_get(p, "start_offset"));
        uint64_t end = cli_ju64(json_object_get(p, "end_offset"));
        snprintf(b[3], 48, "%llu", (unsigned long long)(end > start ? end - start : 0));
        cli_table_row(&tab, cli_jtext(json_object_get(p, "partition"), b[0], 48),
                      cli_jtext(json_object_get(p, "start_offset"), b[1], 48),
                      cli_jtext(json_object_get(p, "end_offset"), b[2], 48), b[3],
                      cli_jtext(json_object_get(p, "bytes"), b[4], 48),
                      cli_jtime(json_object_get(p, "oldest_timestamp"), b[5], 48));
    }
    cli_table_print(&tab, stdout);
    cli_table_free(&tab);

    const json_t *groups = json_object_get(t, "groups");
    const char *modes[] = {"stream", "queue", "fifo"};
    cli_table_init(&tab, 4);
    cli_table_row(&tab, "MODE", "GROUP", "LAG", "LAG_MS");
    for (size_t m = 0; m < 3; m++) {
        json_t *g;
        json_array_foreach(json_object_get(groups, modes[m]), i, g)
        {
            cli_table_row(&tab, modes[m], cli_jtext(json_object_get(g, "consumer_group"), b[0], 48),
                          cli_jtext(json_object_get(g, "lag"), b[1], 48),
                          cli_jtext(json_object_get(g, "lag_ms"), b[2], 48));
        }
    }
    printf("\n");
    if (tab.n > tab.cols)
        cli_table_print(&tab, stdout);
    else
        printf("no consumer groups\n");
    cli_table_free(&tab);
}

static int topic_get(struct cli *cli, int argc, char **argv)
{
    const char *topic;
    json_t *resp;
    char *raw;
    int rc = one_positional(cli, argc, argv, NULL, 0, "TOPIC", &topic);
    if (rc != CLI_OK)
        return rc;
    json_t *body = json_pack("{s:s}", "topic", topic);
    if ((rc = cli_call(cli, "v1.msgs.topic.get", body, true, &resp, &raw)) != CLI_OK)
        return rc;
    if (cli->json)
        cli_print_raw(raw);
    else
        print_topic(resp);
    json_decref(resp);
    cy_free(raw);
    return CLI_OK;
}

static int topic_list(struct cli *cli, int argc, char **argv)
{
    struct cli_list pos = {0};
    json_t *resp;
    char *raw;
    int rc = cli_parse(cli, argc, argv, NULL, 0, &pos);
    if (rc == CLI_OK && pos.n != 0)
        rc = cli_usage_error(cli, "topic list takes no arguments");
    cli_list_free(&pos);
    if (rc != CLI_OK)
        return rc;
    if ((rc = cli_call(cli, "v1.msgs.topic.list", json_object(), true, &resp, &raw)) != CLI_OK)
        return rc;
    if (cli->json) {
        cli_print_raw(raw);
    } else {
        size_t i;
        json_t *name;
        json_array_foreach(json_object_get(resp, "topics"), i, name)
        {
            if (json_is_string(name))
                printf("%s\n", json_string_value(name));
        }
    }
    json_decref(resp);
    cy_free(raw);
    return CLI_OK;
}

static int topic_trim(struct cli *cli, int argc, char **argv)
{
    const char *topic, *offset = NULL, *partition = NULL, *timestamp = NULL;
    const struct cli_opt opts[] = {
        {"before-offset", CLI_VALUE, &offset},
        {"partition", CLI_VALUE, &partition},
        {"before-timestamp", CLI_VALUE, &timestamp},
    };
    uint64_t v, p = 0;
    json_t *resp;
    char *raw;
    char target[160];
    int rc = one_positional(cli, argc, argv, opts, 3, "TOPIC", &topic);
    if (rc != CLI_OK)
        return rc;
    if (!offset == !timestamp)
        return cli_usage_error(cli, "give exactly one of --before-offset and --before-timestamp");
    if (partition && (rc = cli_parse_u64(cli, "--partition", partition, 63, &p)) != CLI_OK)
        return rc;
    if (offset && !partition && !strchr(topic, '~'))
        return cli_usage_error(cli, "--before-offset needs a partition: --partition P or TOPIC~P");
    if (partition)
        snprintf(target, sizeof target, "%s~%llu", topic, (unsigned long long)p);
    else
        snprintf(target, sizeof target, "%s", topic);
    json_t *body = json_pack("{s:s}", "topic", target);
    if (offset) {
        if ((rc = cli_parse_u64(cli, "--before-offset", offset, INT64_MAX, &v)) != CLI_OK) {
            json_decref(body);
            return rc;
        }
        cli_jput(&body, "before_offset", json_integer((json_int_t)v));
    } else {
        if ((rc = cli_parse_time(cli, "--before-timestamp", timestamp, &v)) != CLI_OK) {
            json_decref(body);
            return rc;
        }
        cli_jput(&body, "before_timestamp", json_integer((json_int_t)v));
    }
    if ((rc = cli_call(cli, "v1.msgs.topic.trim", body, true, &resp, &raw)) != CLI_OK)
        return rc;
    if (cli->json) {
        cli_print_raw(raw);
    } else {
        const char *tilde = strrchr(target, '~');
        int blen = tilde ? (int)(tilde - target) : (int)strlen(target);
        size_t i;
        json_t *part;
        json_array_foreach(json_object_get(resp, "partitions"), i, part)
        {
            printf("%.*s~%llu now starts at offset %llu\n", blen, target,
                   (unsigned long long)cli_ju64(json_object_get(part, "partition")),
                   (unsigned long long)cli_ju64(json_object_get(part, "start_offset")));
        }
    }
    json_decref(resp);
    cy_free(raw);
    return CLI_OK;
}

static const struct cli_sub topic_subs[] = {
    {"configure", topic_configure, usage_topic_configure},
    {"get", topic_get, usage_topic_get},
    {"list", topic_list, usage_topic_list},
    {"trim", topic_trim, usage_topic_trim},
};

int cmd_topic(struct cli *cli, int argc, char **argv)
{
    return cli_dispatch_sub(cli, "topic", usage_topic, topic_subs,
                            sizeof topic_subs / sizeof topic_subs[0], argc, argv);
}

/* ---- seek ------------------------------------------------------------------------------- */

static const char usage_seek[] =
    "Usage: coyote seek TOPIC --group G (--offset N --partition P | --to WHERE)\n"
    "\n"
    "Move stream group G's cursor (and release its leases): to an offset of one\n"
    "partition, or on every partition to earliest, latest, or a time (the first\n"
    "message published at or after it). Seeking creates the group if needed.\n"
    "\n"
    "Options:\n"
    "  --group G        the stream consumer group (required)\n"
    "  --offset N       the next offset the group receives on the partition\n"
    "  --partition P    the partition for --offset (or write TOPIC~P)\n"
    "  --to WHERE       earliest | latest | TIME (RFC 3339 or ms since the epoch)\n"
    "\n"
    "Examples:\n"
    "  coyote seek clicks --group analytics --to earliest\n"
    "  coyote seek clicks --group analytics --offset 42 --partition 1\n"
    "  coyote seek clicks --group analytics --to 2026-11-22T15:00:00Z\n";

int cmd_seek(struct cli *cli, int argc, char **argv)
{
    const char *topic, *group = NULL, *offset = NULL, *partition = NULL, *to = NULL;
    const struct cli_opt opts[] = {
        {"group", CLI_VALUE, &group},
        {"offset", CLI_VALUE, &offset},
        {"partition", CLI_VALUE, &partition},
        {"to", CLI_VALUE, &to},
    };
    uint64_t v = 0, p = 0;
    char target[160], where[96];
    json_t *resp;
    char *raw;
    cli->cmd = "seek";
    cli->usage = usage_seek;
    int rc = one_positional(cli, argc, argv, opts, 4, "TOPIC", &topic);
    if (rc != CLI_OK)
        return rc;
    if (!group)
        return cli_usage_error(cli, "seek needs --group G");
    if (!offset == !to)
        return cli_usage_error(cli, "give exactly one of --offset and --to");
    if (partition && (rc = cli_parse_u64(cli, "--partition", partition, 63, &p)) != CLI_OK)
        return rc;
    if (offset && !partition && !strchr(topic, '~'))
        return cli_usage_error(cli, "--offset needs a partition: --partition P or TOPIC~P");
    if (partition)
        snprintf(target, sizeof target, "%s~%llu", topic, (unsigned long long)p);
    else
        snprintf(target, sizeof target, "%s", topic);
    json_t *body = json_pack("{s:s,s:s}", "topic", target, "consumer_group", group);
    if (offset) {
        rc = cli_parse_u64(cli, "--offset", offset, INT64_MAX, &v);
        cli_jput(&body, "offset", json_integer((json_int_t)v));
        snprintf(where, sizeof where, "offset %llu", (unsigned long long)v);
    } else if (strcmp(to, "earliest") == 0 || strcmp(to, "latest") == 0) {
        cli_jput(&body, "position", json_string(to));
        snprintf(where, sizeof where, "%s", to);
    } else {
        rc = cli_parse_time(cli, "--to", to, &v);
        cli_jput(&body, "timestamp", json_integer((json_int_t)v));
        char t[40];
        cli_format_time(v, t);
        snprintf(where, sizeof where, "the first message at or after %s", t);
    }
    if (rc != CLI_OK) {
        json_decref(body);
        return rc;
    }
    if ((rc = cli_call(cli, "v1.msgs.stream.seek", body, true, &resp, &raw)) != CLI_OK)
        return rc;
    if (cli->json)
        cli_print_raw(raw);
    else
        printf("%s: stream group %s now at %s\n", target, group, where);
    json_decref(resp);
    cy_free(raw);
    return CLI_OK;
}
