/*
 * config.c — coyoted's options: one table, four sources (see config.h).
 */
#include "server/config.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "storage/journal.h"


enum opt_type { OPT_STR, OPT_U64, OPT_U32, OPT_BOOL };

struct opt {
    const char *name; /* flag (--name), INI key, and COYOTE_<NAME> with - → _ */
    enum opt_type type;
    size_t off; /* offset in struct server_config */
    size_t size; /* OPT_STR: buffer size */
    uint64_t min, max;
    const char *help;
    bool secret;
};

#define S(field) offsetof(struct server_config, field), sizeof(((struct server_config *)0)->field)
#define L(field) offsetof(struct server_config, limits.field), 0

static const struct opt opts[] = {
    {"listen", OPT_STR, S(listen), 0, 0, "address to listen on, host:port (default 127.0.0.1:8624)", false},
    {"data-dir", OPT_STR, S(data_dir), 0, 0, "data directory (default ./coyote-data)", false},
    {"fsync", OPT_STR, S(fsync), 0, 0,
     "always | interval=<ms> | never (default always): when a write is acknowledged", false},
    {"admin-token", OPT_STR, S(admin_token), 0, 0,
     "require 'Authorization: Bearer <token>' on /api/ (default: none, the server is open)", true},
    {"test-clock", OPT_BOOL, S(test_clock), 0, 1,
     "enable POST /api/v1.test.clock.advance (tests only; default off)", false},
    {"config", OPT_STR, S(config_file), 0, 0, "INI file with any of these options (key = value)", false},
    {"log-level", OPT_STR, S(log_level), 0, 0, "debug | info | warn | error (default info)", false},
    {"max-body-bytes", OPT_U64, S(max_body_bytes), 1024, 1ull << 30,
     "largest request body; larger → 413 (default 2097152)", false},
    {"segment-bytes", OPT_U64, S(segment_bytes), 1ull << 20, 1ull << 34,
     "journal segment size (default 67108864)", false},
    {"checkpoint-interval-ms", OPT_U64, S(checkpoint_interval_ms), 100, 86400000,
     "checkpoint at least this often (default 60000)", false},
    {"checkpoint-bytes", OPT_U64, S(checkpoint_bytes), 1ull << 20, 1ull << 40,
     "checkpoint after this many journal bytes (default 67108864)", false},
    {"shutdown-timeout-ms", OPT_U64, S(shutdown_timeout_ms), 0, 600000,
     "longest wait for in-flight requests at shutdown (default 10000)", false},
    {"max-value-bytes", OPT_U32, L(max_value_bytes), 0, 64u << 20,
     "largest message value (default 1048576)", false},
    {"max-headers", OPT_U32, L(max_headers), 0, 1024, "most headers per message (default 64)", false},
    {"max-header-bytes", OPT_U32, L(max_header_bytes), 1, 1u << 20,
     "largest header name or value (default 4096)", false},
    {"max-key-bytes", OPT_U32, L(max_key_bytes), 1, 1u << 20, "largest message key (default 1024)", false},
    {"max-batch", OPT_U32, L(max_batch), 1, 65535,
     "most messages one receive returns (default 1000)", false},
    {"max-lease-ms", OPT_U64, L(max_lease_ms), 1, 30ull * 86400000,
     "longest lease (default 43200000 = 12 h)", false},
    {"max-batch-wait-ms", OPT_U64, L(max_batch_wait_ms), 0, 86400000,
     "longest long-poll wait (default 3600000 = 1 h)", false},
    {"max-delay-ms", OPT_U64, L(max_delay_ms), 0, 365ull * 86400000,
     "longest delay_ms (default 2592000000 = 30 days)", false},
    {"dedup-window-ms", OPT_U64, L(dedup_window_ms), 1, 30ull * 86400000,
     "how long an idempotency key is remembered (default 3600000 = 1 h)", false},
    {"fifo-window", OPT_U32, L(fifo_window), 1, 10000000,
     "FIFO: blocked messages per partition before its scan pauses (default 100000)", false},
};
#undef S
#undef L

static void *field(struct server_config *c, const struct opt *o)
{
    return (char *)c + o->off;
}

static int set_opt(struct server_config *c, const struct opt *o, const char *value,
                   const char *source)
{
    void *p = field(c, o);
    switch (o->type) {
    case OPT_STR:
        if (strlen(value) >= o->size) {
            fprintf(stderr, "coyoted: %s: --%s is too long\n", source, o->name);
            return 2;
        }
        strcpy(p, value);
        return 0;
    case OPT_BOOL:
        if (!strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "yes") ||
            !strcmp(value, "on")) {
            *(bool *)p = true;
        } else if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "no") ||
                   !strcmp(value, "off")) {
            *(bool *)p = false;
        } else {
            fprintf(stderr, "coyoted: %s: --%s takes true or false, not '%s'\n", source, o->name,
                    value);
            return 2;
        }
        return 0;
    case OPT_U64:
    case OPT_U32: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (!*value || *end || errno || value[0] == '-' || v < o->min || v > o->max) {
            fprintf(stderr, "coyoted: %s: --%s must be an integer from %" PRIu64 " to %" PRIu64
                            ", not '%s'\n",
                    source, o->name, o->min, o->max, value);
            return 2;
        }
        if (o->type == OPT_U32)
            *(uint32_t *)p = (uint32_t)v;
        else
            *(uint64_t *)p = v;
        return 0;
    }
    }
    return 2;
}

static const struct opt *find_opt(const char *name)
{
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++)
        if (!strcmp(opts[i].name, name))
            return &opts[i];
    return NULL;
}

struct ini_ctx {
    struct server_config *c;
    int rc;
};

static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *x = user;
    (void)section;
    char key[64];
    snprintf(key, sizeof key, "%s", name);
    for (char *k = key; *k; k++)
        if (*k == '_')
            *k = '-';
    const struct opt *o = find_opt(key);
    if (!o || !strcmp(key, "config")) {
        fprintf(stderr, "coyoted: %s: unknown option '%s'\n", x->c->config_file, name);
        x->rc = 2;
        return 0;
    }
    if (set_opt(x->c, o, value, x->c->config_file))
        x->rc = 2;
    return x->rc == 0;
}

static void defaults(struct server_config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->listen, "127.0.0.1:8624");
    strcpy(c->data_dir, "./coyote-data");
    strcpy(c->fsync, "always");
    strcpy(c->log_level, "info");
    c->max_body_bytes = API_MAX_BODY_DEFAULT;
    c->segment_bytes = 64u << 20;
    c->checkpoint_interval_ms = 60000;
    c->checkpoint_bytes = 64u << 20;
    c->shutdown_timeout_ms = 10000;
    broker_limits_default(&c->limits);
}

void config_usage(FILE *out)
{
    fprintf(out, "Usage: coyoted [OPTIONS]\n\n"
                 "The Coyote message broker server: the HTTP API of API.md on one port.\n\n"
                 "Options (flag, or environment variable COYOTE_<NAME>, or INI key <name>;\n"
                 "flags override the environment, which overrides the INI file):\n");
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) {
        const struct opt *o = &opts[i];
        char flag[64], env[64];
        snprintf(flag, sizeof flag, "--%s%s", o->name, o->type == OPT_BOOL ? "" : " V");
        snprintf(env, sizeof env, "COYOTE_%s", o->name);
        for (char *e = env; *e; e++)
            *e = *e == '-' ? '_' : (char)((*e >= 'a' && *e <= 'z') ? *e - 32 : *e);
        fprintf(out, "  %-28s %s\n  %-28s   (%s)\n", flag, o->help, "", env);
    }
    fprintf(out, "  %-28s %s\n  %-28s %s\n", "-h, --help", "show this text", "--version",
            "print the version");
    fprintf(out, "\nSignals: SIGTERM or SIGINT stop accepting connections, finish in-flight\n"
                 "requests, sync, checkpoint and exit 0.\n");
}

int config_load(struct server_config *c, int argc, char **argv)
{
    defaults(c);
    /* --help and --version answer whatever else is wrong (a bad variable or
     * config file must not hide the help). */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            config_usage(stdout);
            return 1;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("coyoted %s\n", COYOTE_VERSION);
            return 1;
        }
    }
    /* The INI file comes first (lowest precedence); find it in argv/env. */
    const char *ini = getenv("COYOTE_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            ini = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9))
            ini = argv[i] + 9;
    }
    if (ini && *ini) {
        snprintf(c->config_file, sizeof c->config_file, "%s", ini);
        struct ini_ctx x = {c, 0};
        int r = ini_parse(ini, ini_cb, &x);
        if (r < 0) {
            fprintf(stderr, "coyoted: cannot read the config file %s\n", ini);
            return 2;
        }
        if (r > 0 && !x.rc) {
            fprintf(stderr, "coyoted: %s: syntax error on line %d\n", ini, r);
            return 2;
        }
        if (x.rc)
            return x.rc;
    }
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) {
        char env[64];
        snprintf(env, sizeof env, "COYOTE_%s", opts[i].name);
        for (char *e = env; *e; e++)
            *e = *e == '-' ? '_' : (char)((*e >= 'a' && *e <= 'z') ? *e - 32 : *e);
        const char *v = getenv(env);
        if (v && *v && strcmp(opts[i].name, "config") && set_opt(c, &opts[i], v, env))
            return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2)) {
            fprintf(stderr, "coyoted: unexpected argument '%s' (see --help)\n", a);
            return 2;
        }
        char name[64];
        const char *eq = strchr(a + 2, '=');
        size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (n >= sizeof name) {
            fprintf(stderr, "coyoted: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        memcpy(name, a + 2, n);
        name[n] = 0;
        const struct opt *o = find_opt(name);
        if (!o) {
            fprintf(stderr, "coyoted: unknown option '--%s' (see --help)\n", name);
            return 2;
        }
        const char *value;
        if (eq)
            value = eq + 1;
        else if (o->type == OPT_BOOL)
            value = "true";
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            fprintf(stderr, "coyoted: --%s needs a value (see --help)\n", name);
            return 2;
        }
        if (set_opt(c, o, value, "command line"))
            return 2;
    }
    enum journal_fsync p;
    uint32_t ms;
    if (journal_fsync_parse(c->fsync, &p, &ms)) {
        fprintf(stderr, "coyoted: --fsync: '%s' is not always, never or interval=<ms> (1..60000)\n",
                c->fsync);
        return 2;
    }
    enum log_level lvl;
    if (log_level_parse(c->log_level, &lvl)) {
        fprintf(stderr, "coyoted: --log-level: '%s' is not debug, info, warn or error\n",
                c->log_level);
        return 2;
    }
    return 0;
}

void config_log(const struct server_config *c)
{
    char line[4096];
    size_t k = 0;
    for (size_t i = 0; i < sizeof opts / sizeof *opts && k < sizeof line - 1; i++) {
        const struct opt *o = &opts[i];
        const void *p = (const char *)c + o->off;
        char v[600];
        switch (o->type) {
        case OPT_STR:
            snprintf(v, sizeof v, "%s", o->secret && *(const char *)p ? "********" : (const char *)p);
            break;
        case OPT_BOOL: snprintf(v, sizeof v, "%s", *(const bool *)p ? "true" : "false"); break;
        case OPT_U32: snprintf(v, sizeof v, "%" PRIu32, *(const uint32_t *)p); break;
        case OPT_U64: snprintf(v, sizeof v, "%" PRIu64, *(const uint64_t *)p); break;
        }
        if (o->type == OPT_STR && !*v)
            snprintf(v, sizeof v, "(none)");
        int w = snprintf(line + k, sizeof line - k, "%s%s=%s", k ? " " : "", o->name, v);
        if (w < 0)
            break;
        k += (size_t)w;
    }
    log_info("configuration: %s", line);
}
