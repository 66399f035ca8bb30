/*
 * args.c — command-line parsing for `coyote`: options, numbers, times, modes.
 *
 * Options are long only ("--group G" or "--group=G"), plus -h; they may come
 * before, between or after the positional words; "--" ends them (so a value
 * starting with "-" can be published). The global options are accepted by
 * every command.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int cli_list_push(struct cli_list *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        const char **items = realloc(l->items, cap * sizeof *items);
        if (!items)
            return CY_ENOMEM;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = s;
    return 0;
}

void cli_list_free(struct cli_list *l)
{
    free(l->items);
    l->items = NULL;
    l->n = l->cap = 0;
}

int cli_usage_error(const struct cli *cli, const char *fmt, ...)
{
    va_list ap;
    fputs("coyote: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cli->cmd)
        fprintf(stderr, "\nTry 'coyote %s --help'.\n", cli->cmd);
    else
        fputs("\nTry 'coyote help'.\n", stderr);
    return CLI_USAGE;
}

/* Find the option called name (len bytes) among opts and the global ones. */
static int set_option(struct cli *cli, const struct cli_opt *opts, size_t n_opts, const char *name,
                      size_t len, const char *inline_value, int *i, int argc, char **argv)
{
    struct cli_opt globals[] = {
        {"server", CLI_VALUE, &cli->url},   {"token", CLI_VALUE, &cli->token},
        {"namespace", CLI_VALUE, &cli->ns}, {"json", CLI_FLAG, &cli->json},
        {"help", CLI_FLAG, &cli->help},
    };
    const struct cli_opt *found = NULL;
    for (size_t k = 0; k < n_opts && !found; k++)
        if (strlen(opts[k].name) == len && memcmp(opts[k].name, name, len) == 0)
            found = &opts[k];
    for (size_t k = 0; k < sizeof globals / sizeof globals[0] && !found; k++)
        if (strlen(globals[k].name) == len && memcmp(globals[k].name, name, len) == 0)
            found = &globals[k];
    if (!found)
        return cli_usage_error(cli, "unknown option '--%.*s'", (int)len, name);
    if (found->kind == CLI_FLAG) {
        if (inline_value)
            return cli_usage_error(cli, "option '--%s' takes no value", found->name);
        *(bool *)found->dst = true;
        return CLI_OK;
    }
    const char *value = inline_value;
    if (!value) {
        if (*i + 1 >= argc)
            return cli_usage_error(cli, "option '--%s' needs a value", found->name);
        value = argv[++*i];
    }
    if (found->kind == CLI_VALUE) {
        *(const char **)found->dst = value;
    } else if (cli_list_push(found->dst, value) != 0) {
        return cli_errorf("out of memory");
    }
    return CLI_OK;
}

int cli_parse(struct cli *cli, int argc, char **argv, const struct cli_opt *opts, size_t n_opts,
              struct cli_list *positional)
{
    bool options_done = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int rc;
        if (options_done || a[0] != '-' || a[1] == '\0') {
            if (cli_list_push(positional, a) != 0)
                return cli_errorf("out of memory");
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strcmp(a, "-h") == 0) {
            cli->help = true;
            continue;
        }
        if (a[1] != '-')
            return cli_usage_error(cli, "unknown option '%s' (options are long: --name)", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        rc = set_option(cli, opts, n_opts, name, len, eq ? eq + 1 : NULL, &i, argc, argv);
        if (rc != CLI_OK)
            return rc;
    }
    if (cli->help) {
        fputs(cli->usage ? cli->usage : "", stdout);
        return CLI_HELP_SHOWN;
    }
    return CLI_OK;
}

int cli_parse_u64(const struct cli *cli, const char *what, const char *s, uint64_t max,
                  uint64_t *out)
{
    if (!s || s[0] < '0' || s[0] > '9')
        return cli_usage_error(cli, "%s: '%s' is not a non-negative integer", what, s ? s : "");
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0')
        return cli_usage_error(cli, "%s: '%s' is not a non-negative integer", what, s);
    if (errno == ERANGE || v > max)
        return cli_usage_error(cli, "%s: %s is too large (at most %llu)", what, s,
                               (unsigned long long)max);
    *out = v;
    return CLI_OK;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* Read exactly n digits at *p into *v. */
static bool digits(const char **p, int n, unsigned *v)
{
    unsigned x = 0;
    for (int k = 0; k < n; k++) {
        char c = (*p)[k];
        if (c < '0' || c > '9')
            return false;
        x = x * 10 + (unsigned)(c - '0');
    }
    *p += n;
    *v = x;
    return true;
}

static bool parse_rfc3339(const char *s, uint64_t *ms)
{
    unsigned year, mon, day, hour, min, sec, frac_ms = 0;
    const char *p = s;
    if (!digits(&p, 4, &year) || *p++ != '-' || !digits(&p, 2, &mon) || *p++ != '-' ||
        !digits(&p, 2, &day))
        return false;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return false;
    p++;
    if (!digits(&p, 2, &hour) || *p++ != ':' || !digits(&p, 2, &min) || *p++ != ':' ||
        !digits(&p, 2, &sec))
        return false;
    if (*p == '.') {
        p++;
        int n = 0;
        while (*p >= '0' && *p <= '9') {
            if (n < 3)
                frac_ms = frac_ms * 10 + (unsigned)(*p - '0');
            n++;
            p++;
        }
        if (n == 0)
            return false;
        for (; n < 3; n++)
            frac_ms *= 10;
    }
    int64_t offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1;
        unsigned oh, om;
        p++;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) || oh > 23 || om > 59)
            return false;
        offset_min = sign * (int64_t)(oh * 60 + om);
    } else {
        return false;
    }
    if (*p != '\0' || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
        sec > 60)
        return false;
    int64_t secs =
        days_from_civil(year, mon, day) * 86400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    if (secs < 0)
        return false;
    *ms = (uint64_t)secs * 1000 + frac_ms;
    return true;
}

int cli_parse_time(const struct cli *cli, const char *what, const char *s, uint64_t *ms)
{
    const uint64_t max_ts = 253402207200998ULL; /* API.md: 9999-12-31T23:59:59.998Z */
    if (s && s[0] >= '0' && s[0] <= '9' && strspn(s, "0123456789") == strlen(s))
        return cli_parse_u64(cli, what, s, max_ts, ms);
    if (s && parse_rfc3339(s, ms) && *ms <= max_ts)
        return CLI_OK;
    return cli_usage_error(cli,
                           "%s: '%s' is not a time (RFC 3339 like 2026-11-22T15:01:26Z, or "
                           "milliseconds since the epoch)",
                           what, s ? s : "");
}

int cli_parse_mode(const struct cli *cli, const char *s, bool allow_stream, cy_mode *mode)
{
    if (strcmp(s, "queue") == 0)
        *mode = CY_QUEUE;
    else if (strcmp(s, "fifo") == 0)
        *mode = CY_FIFO;
    else if (allow_stream && strcmp(s, "stream") == 0)
        *mode = CY_STREAM;
    else
        return cli_usage_error(cli, "--mode: '%s' is not %s", s,
                               allow_stream ? "queue, fifo or stream" : "queue or fifo");
    return CLI_OK;
}

const char *cli_mode_name(cy_mode mode)
{
    switch (mode) {
    case CY_STREAM: return "stream";
    case CY_QUEUE: return "queue";
    case CY_FIFO: return "fifo";
    }
    return "?";
}
