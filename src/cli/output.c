/*
 * output.c — what every `coyote` command prints through: the client and its
 * errors, admin calls (JSON in, JSON out), JSON strings, times and tables.
 *
 * Errors are one line on stderr, "coyote: <code>: <detail>" for a broker
 * refusal (its code and detail verbatim), and the exit status is 1.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"

int cli_errorf(const char *fmt, ...)
{
    va_list ap;
    fputs("coyote: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_FAIL;
}

static bool is_http(const char *url)
{
    return strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0;
}

int cli_fail(struct cli *cli, int rc, const char *what)
{
    if (rc == CY_ESERVER && cli->client) {
        const char *detail = NULL;
        int status = 0;
        const char *code = cy_last_error(cli->client, &detail, &status);
        if (!code || !*code)
            code = "error";
        const char *hint = "";
        if (strcmp(code, "auth_required") == 0 || strcmp(code, "invalid_token") == 0)
            hint = " (give the token with --token or COYOTE_TOKEN)";
        if (detail && *detail)
            fprintf(stderr, "coyote: %s: %s%s\n", code, detail, hint);
        else
            fprintf(stderr, "coyote: %s (HTTP %d)%s\n", code, status, hint);
    } else if (rc == CY_ECONNECT && is_http(cli->url)) {
        fprintf(stderr,
                "coyote: no server at %s: start one with `make run` or `build/coyoted`, or use "
                "--server file:///path for an embedded data directory\n",
                cli->url);
    } else if (rc == CY_ELOCKED) {
        fprintf(stderr,
                "coyote: %s: %s (a running coyoted? talk to it with --server http://host:port)\n",
                cli->url, cy_strerror(rc));
    } else if (what) {
        fprintf(stderr, "coyote: %s: %s\n", what, cy_strerror(rc));
    } else {
        fprintf(stderr, "coyote: %s\n", cy_strerror(rc));
    }
    return CLI_FAIL;
}

/* --namespace, or NULL for the default one. "default" is what an absent
 * namespace means, and the API refuses the name on data operations, so the
 * tool leaves it out. */
static const char *namespace_of(const struct cli *cli)
{
    return cli->ns && *cli->ns && strcmp(cli->ns, "default") != 0 ? cli->ns : NULL;
}

int cli_client(struct cli *cli, cy_client **out)
{
    if (!cli->client) {
        cy_options opts;
        memset(&opts, 0, sizeof opts);
        opts.token = cli->token;
        opts.ns = namespace_of(cli);
        int rc = cy_open(cli->url, &opts, &cli->client);
        if (rc < 0) {
            cli->client = NULL;
            if (rc == CY_EINVAL)
                return cli_errorf("%s: not a server URL (use http://host:port, or "
                                  "file:///path for an embedded data directory)",
                                  cli->url);
            return cli_fail(cli, rc, cli->url);
        }
    }
    *out = cli->client;
    return CLI_OK;
}

void cli_close(struct cli *cli)
{
    if (cli->client) {
        int rc = cy_close(cli->client);
        cli->client = NULL;
        if (rc < 0)
            cli_fail(cli, rc, "close");
    }
}

int cli_call(struct cli *cli, const char *op, json_t *body, bool add_ns, json_t **resp, char **raw)
{
    cy_client *c;
    *resp = NULL;
    if (raw)
        *raw = NULL;
    if (!body) /* json_pack refuses strings that are not UTF-8 */
        return cli_errorf("the arguments are not valid UTF-8");
    int rc = cli_client(cli, &c);
    if (rc != CLI_OK) {
        json_decref(body);
        return rc;
    }
    if (add_ns && namespace_of(cli) &&
        json_object_set_new(body, "namespace", json_string(namespace_of(cli))) != 0) {
        json_decref(body);
        return cli_errorf("the namespace is not valid UTF-8");
    }
    char *req = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!req)
        return cli_errorf("out of memory");
    char *text = NULL;
    rc = cy_call_json(c, op, req, &text);
    free(req);
    if (rc < 0)
        return cli_fail(cli, rc, op);
    json_error_t err;
    json_t *doc = json_loads(text ? text : "", JSON_DECODE_ANY, &err);
    if (!doc) {
        cy_free(text);
        return cli_errorf("%s: cannot read the answer: %s", op, err.text);
    }
    *resp = doc;
    if (raw)
        *raw = text;
    else
        cy_free(text);
    return CLI_OK;
}

void cli_jput(json_t **obj, const char *key, json_t *value)
{
    if (*obj && value && json_object_set_new(*obj, key, value) == 0)
        return;
    if (!*obj || !value)
        json_decref(value);
    json_decref(*obj);
    *obj = NULL;
}

void cli_print_raw(const char *raw)
{
    fputs(raw ? raw : "", stdout);
    fputc('\n', stdout);
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if (s[k] < 0x80 || s[k] > 0xBF)
            return 0;
    return len;
}

void cli_json_string(FILE *f, const void *data, size_t n)
{
    const unsigned char *s = data;
    size_t i = 0;
    fputc('"', f);
    while (i < n) {
        unsigned c = s[i];
        if (c >= 0x80) {
            size_t len = utf8_seq(s + i, n - i);
            if (len == 0) {
                fputs("\\ufffd", f);
                i++;
            } else {
                fwrite(s + i, 1, len, f);
                i += len;
            }
            continue;
        }
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c < 0x20 || c == 0x7f)
                fprintf(f, "\\u%04x", c);
            else
                fputc((int)c, f);
        }
        i++;
    }
    fputc('"', f);
}

void cli_format_time(uint64_t ms, char out[40])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        snprintf(out, 40, "%llu", (unsigned long long)ms);
        return;
    }
    char text[96]; /* the compiler cannot know the fields' ranges */
    snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
    snprintf(out, 40, "%.39s", text);
}

const char *cli_jtext(const json_t *v, char *buf, size_t size)
{
    if (!v || json_is_null(v))
        return "-";
    if (json_is_integer(v)) {
        snprintf(buf, size, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    if (json_is_real(v)) {
        snprintf(buf, size, "%g", json_real_value(v));
        return buf;
    }
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_true(v))
        return "yes";
    if (json_is_false(v))
        return "no";
    return "?";
}

const char *cli_jtime(const json_t *v, char *buf, size_t size)
{
    char t[40];
    if (!json_is_integer(v))
        return "-";
    cli_format_time((uint64_t)json_integer_value(v), t);
    snprintf(buf, size, "%s", t);
    return buf;
}

uint64_t cli_ju64(const json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

void cli_table_init(struct cli_table *t, size_t cols)
{
    memset(t, 0, sizeof *t);
    t->cols = cols < CLI_TABLE_MAX_COLS ? cols : CLI_TABLE_MAX_COLS;
}

int cli_table_row(struct cli_table *t, ...)
{
    if (t->n + t->cols > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16 * t->cols;
        while (cap < t->n + t->cols)
            cap *= 2;
        char **cells = realloc(t->cells, cap * sizeof *cells);
        if (!cells)
            return CY_ENOMEM;
        t->cells = cells;
        t->cap = cap;
    }
    va_list ap;
    va_start(ap, t);
    for (size_t k = 0; k < t->cols; k++) {
        const char *s = va_arg(ap, const char *);
        t->cells[t->n++] = strdup(s ? s : "");
    }
    va_end(ap);
    return 0;
}

void cli_table_print(const struct cli_table *t, FILE *f)
{
    size_t width[CLI_TABLE_MAX_COLS] = {0};
    for (size_t i = 0; i < t->n; i++) {
        size_t len = strlen(t->cells[i] ? t->cells[i] : "");
        if (len > width[i % t->cols])
            width[i % t->cols] = len;
    }
    for (size_t i = 0; i < t->n; i++) {
        size_t col = i % t->cols;
        const char *s = t->cells[i] ? t->cells[i] : "";
        fputs(s, f);
        if (col + 1 == t->cols) {
            fputc('\n', f);
            continue;
        }
        for (size_t pad = strlen(s); pad < width[col] + 2; pad++)
            fputc(' ', f);
    }
}

void cli_table_free(struct cli_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}
