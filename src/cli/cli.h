/*
 * cli.h — the pieces the `coyote` command-line tool's commands share.
 *
 * The tool is a thin layer over the public client library (include/coyote.h):
 * data commands (publish, consume, seek) use its typed calls, admin commands
 * send JSON through cy_call_json and render the JSON answer. One file per
 * command group:
 *
 *   main.c     global options, dispatch, `coyote help`
 *   args.c     option parsing, numbers, times, durations
 *   output.c   error reporting, the client, JSON strings, times, tables
 *   publish.c  coyote publish
 *   consume.c  coyote consume (printing, settling, signals)
 *   exec.c     consume --exec: one child process per message
 *   admin.c    ns, topic, seek
 *   groups.c   group, queue, dlq
 *
 * Exit status: 0 success, 1 a failure reported by the broker or the system
 * (one line on stderr: "coyote: <code>: <detail>"), 2 a usage error (one line
 * and a hint to --help).
 */
#ifndef COYOTE_CLI_CLI_H
#define COYOTE_CLI_CLI_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "coyote.h"

#define CLI_DEFAULT_URL "http://127.0.0.1:8624"

enum {
    CLI_OK = 0,
    CLI_FAIL = 1,
    CLI_USAGE = 2,
    CLI_HELP_SHOWN = -1, /* cli_parse printed --help: the command exits 0 */
};

#if defined(__GNUC__)
#define CLI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLI_PRINTF(a, b)
#endif

/* The invocation: global options and the open client. One per process. */
struct cli {
    const char *url;   /* --server / COYOTE_URL / CLI_DEFAULT_URL */
    const char *token; /* --token / COYOTE_TOKEN, or NULL */
    const char *ns;    /* --namespace / COYOTE_NAMESPACE; NULL: the default one */
    bool json;         /* --json: machine output */
    bool help;         /* --help seen */
    const char *cmd;   /* "publish", "topic get": names the command in messages */
    const char *usage; /* the command's help text (for --help and hints) */
    cy_client *client; /* opened by cli_client() */
};

/* ---- args.c ------------------------------------------------------------------------ */

/* A growable array of borrowed strings (argv elements). */
struct cli_list {
    const char **items;
    size_t n, cap;
};
int cli_list_push(struct cli_list *l, const char *s);
void cli_list_free(struct cli_list *l);

enum cli_opt_kind {
    CLI_FLAG,  /* bool *dst */
    CLI_VALUE, /* const char **dst; given twice: the last wins */
    CLI_LIST,  /* struct cli_list *dst; repeatable */
};
struct cli_opt {
    const char *name; /* without the dashes: "group" for --group */
    enum cli_opt_kind kind;
    void *dst;
};

/* Parse argv[0..argc) for cli->cmd: the options in opts[0..n_opts) and the
 * global ones (--server, --token, --namespace, --json, --help/-h), as
 * "--name value" or "--name=value", anywhere; "--" ends options. The other
 * words go to *positional (borrowed from argv). Returns CLI_OK, CLI_USAGE
 * (message printed), or CLI_HELP_SHOWN (usage printed to stdout). */
int cli_parse(struct cli *cli, int argc, char **argv, const struct cli_opt *opts, size_t n_opts,
              struct cli_list *positional);

/* Print "coyote: <message>" and a hint to `coyote <cmd> --help` on stderr;
 * returns CLI_USAGE. */
int cli_usage_error(const struct cli *cli, const char *fmt, ...) CLI_PRINTF(2, 3);

/* Parse an unsigned decimal integer (the whole string) into *out, at most max.
 * `what` names the option in the usage error. Returns CLI_OK or CLI_USAGE. */
int cli_parse_u64(const struct cli *cli, const char *what, const char *s, uint64_t max,
                  uint64_t *out);

/* Parse a time: milliseconds since the Unix epoch, or RFC 3339
 * ("2026-11-22T15:01:26Z", fractions and a ±hh:mm offset allowed). */
int cli_parse_time(const struct cli *cli, const char *what, const char *s, uint64_t *ms);

/* Parse "queue" | "fifo" | "stream" (allow_stream) into *mode. */
int cli_parse_mode(const struct cli *cli, const char *s, bool allow_stream, cy_mode *mode);
const char *cli_mode_name(cy_mode mode);

/* ---- output.c ------------------------------------------------------------------------ */

/* Open the client for cli->url once (lazily); on failure report it and
 * return CLI_FAIL. */
int cli_client(struct cli *cli, cy_client **out);
void cli_close(struct cli *cli);

/* Report a failed library call (rc < 0) as one line on stderr: the broker's
 * code and detail, the "no server" hint, or cy_strerror. `what` (may be
 * NULL) names the action for non-broker errors. Returns CLI_FAIL. */
int cli_fail(struct cli *cli, int rc, const char *what);
/* "coyote: <message>" on stderr; returns CLI_FAIL. */
int cli_errorf(const char *fmt, ...) CLI_PRINTF(1, 2);

/* Run an admin operation: body (reference stolen; "namespace" is added from
 * --namespace when add_ns) → *resp (parsed; caller json_decref) and, if raw
 * is not NULL, *raw (the response text, free with cy_free). Reports failures;
 * returns CLI_OK or CLI_FAIL. */
int cli_call(struct cli *cli, const char *op, json_t *body, bool add_ns, json_t **resp, char **raw);
/* Set (*obj)[key] = value (reference stolen). When value or *obj is NULL (a
 * string that is not UTF-8, or no memory) *obj is dropped and becomes NULL,
 * which cli_call then reports. */
void cli_jput(json_t **obj, const char *key, json_t *value);
/* Print the response text followed by a newline (the --json output). */
void cli_print_raw(const char *raw);

/* Write s[0..n) as a JSON string literal; bytes that are not valid UTF-8
 * become U+FFFD. */
void cli_json_string(FILE *f, const void *s, size_t n);

/* Format ms since the epoch as RFC 3339 UTC ("2026-11-22T15:01:26.123Z"). */
void cli_format_time(uint64_t ms, char out[40]);

/* The value of a JSON scalar as table text into buf: integers in decimal,
 * null as "-", strings as they are, booleans as yes/no. Returns buf or the
 * string itself. */
const char *cli_jtext(const json_t *v, char *buf, size_t size);
/* Like cli_jtext for a timestamp field: RFC 3339, or "-" when null. */
const char *cli_jtime(const json_t *v, char *buf, size_t size);
uint64_t cli_ju64(const json_t *v);

/* A text table: columns padded to their widest cell, two spaces apart; at
 * most CLI_TABLE_MAX_COLS columns. */
#define CLI_TABLE_MAX_COLS 16
struct cli_table {
    size_t cols;
    char **cells;
    size_t n, cap;
};
void cli_table_init(struct cli_table *t, size_t cols);
/* Append one row of t->cols cells (copied). */
int cli_table_row(struct cli_table *t, ...);
void cli_table_print(const struct cli_table *t, FILE *f);
void cli_table_free(struct cli_table *t);

/* ---- commands ---------------------------------------------------------------------------- */

/* Each takes the words after the command (argv[0] is the first of them) and
 * returns the exit status. */
int cmd_publish(struct cli *cli, int argc, char **argv);
int cmd_consume(struct cli *cli, int argc, char **argv);
int cmd_seek(struct cli *cli, int argc, char **argv);
int cmd_ns(struct cli *cli, int argc, char **argv);
int cmd_topic(struct cli *cli, int argc, char **argv);
int cmd_group(struct cli *cli, int argc, char **argv);
int cmd_queue(struct cli *cli, int argc, char **argv);
int cmd_dlq(struct cli *cli, int argc, char **argv);

/* Dispatch a command group ("topic get ..."): argv[0] is the subcommand. */
struct cli_sub {
    const char *name;
    int (*run)(struct cli *cli, int argc, char **argv);
    const char *usage;
};
int cli_dispatch_sub(struct cli *cli, const char *group, const char *group_usage,
                     const struct cli_sub *subs, size_t n_subs, int argc, char **argv);

/* ---- exec.c --------------------------------------------------------------------------------- */

/* What --exec passes to the command about one message. */
struct cli_exec_msg {
    const char *topic; /* bare topic name */
    const char *group;
    cy_mode mode;
    uint32_t partition;
    uint64_t offset;
    const char *msg_id;
    const cy_received *msg;
};

/* Called every every_ms while the command runs (queue/FIFO: extend the lease). */
struct cli_exec_tick {
    uint64_t every_ms; /* 0: never */
    void (*fn)(void *arg);
    void *arg;
};

/* Run `/bin/sh -c cmd` with the message's value on its stdin and COYOTE_*
 * variables in its environment, in its own process group (so the terminal's
 * Ctrl-C reaches only coyote, which lets the command finish). Waits for it;
 * meanwhile SIGINT and SIGTERM (which the caller keeps blocked, with SIGCHLD)
 * each add one to *n_signals, and from the second one on the command's
 * process group gets SIGTERM. *exit_status gets the command's exit status
 * (128 + the signal number when a signal ended it). tick may be NULL.
 * Returns CLI_OK, or CLI_FAIL when the command could not be run (reported). */
int cli_exec(const char *cmd, const struct cli_exec_msg *m, int *n_signals,
             const struct cli_exec_tick *tick, int *exit_status);

#endif
