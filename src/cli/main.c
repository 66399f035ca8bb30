/*
 * main.c — `coyote`, the command-line client of the Coyote broker: global
 * options, dispatch to the command files, `coyote help`.
 *
 *   coyote [GLOBAL OPTIONS] COMMAND [ARGS] [OPTIONS]
 *
 * Global options may also follow the command. Defaults come from the
 * environment: COYOTE_URL, COYOTE_TOKEN, COYOTE_NAMESPACE.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#ifndef COYOTE_CLI_VERSION
#define COYOTE_CLI_VERSION "0.1.0"
#endif

static const char usage_main[] =
    "Usage: coyote [GLOBAL OPTIONS] COMMAND [ARGS] [OPTIONS]\n"
    "\n"
    "The command-line client of the Coyote message broker.\n"
    "\n"
    "Messages:\n"
    "  publish TOPIC [VALUE...]       publish values, or one message per stdin line\n"
    "  consume TOPIC --group G        print (or --exec a command for) each message,\n"
    "                                 then settle it\n"
    "  seek TOPIC --group G ...       move a stream group's cursor\n"
    "\n"
    "Administration:\n"
    "  ns configure|get|list          namespaces and their retention\n"
    "  topic configure|get|list|trim  partitions, offsets, sizes, trimming\n"
    "  group list|get                 consumer groups and their lag\n"
    "  queue configure                retry schedule, DLQ topic, max deliveries\n"
    "  dlq redrive                    redeliver a group's dead-lettered messages\n"
    "  help [COMMAND [SUB]]           this text, or a command's\n"
    "\n"
    "Global options (before or after the command):\n"
    "  --server URL     http://host:port of a coyoted, or file:///dir to run the\n"
    "                   broker embedded on a data directory (env COYOTE_URL;\n"
    "                   default " CLI_DEFAULT_URL ")\n"
    "  --token T        bearer token of a server started with --admin-token\n"
    "                   (env COYOTE_TOKEN)\n"
    "  --namespace NS   namespace of the data and topic commands\n"
    "                   (env COYOTE_NAMESPACE; default: the default namespace)\n"
    "  --json           machine output: the server's JSON, or one JSON object per\n"
    "                   message\n"
    "  -h, --help       help of any command\n"
    "\n"
    "Exit status: 0 success; 1 an error, reported in one line on stderr\n"
    "(\"coyote: <code>: <detail>\"); 2 a usage error.\n"
    "\n"
    "Examples:\n"
    "  coyote publish orders 'hello world'\n"
    "  seq 1 1000 | coyote publish numbers\n"
    "  coyote consume orders --group billing --count 10\n"
    "  coyote consume jobs --group workers --follow --exec './handle-job.sh'\n"
    "  coyote topic get orders\n";

typedef int (*command_fn)(struct cli *cli, int argc, char **argv);

static const struct {
    const char *name;
    command_fn run;
} commands[] = {
    {"publish", cmd_publish}, {"consume", cmd_consume}, {"seek", cmd_seek},
    {"ns", cmd_ns},           {"namespace", cmd_ns},    {"topic", cmd_topic},
    {"group", cmd_group},     {"queue", cmd_queue},     {"dlq", cmd_dlq},
};

static command_fn find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return commands[i].run;
    return NULL;
}

/* Does the global option at argv[i] take the next word as its value? */
static bool takes_value(const char *arg)
{
    return strcmp(arg, "--server") == 0 || strcmp(arg, "--token") == 0 ||
           strcmp(arg, "--namespace") == 0;
}

int cli_dispatch_sub(struct cli *cli, const char *group, const char *group_usage,
                     const struct cli_sub *subs, size_t n_subs, int argc, char **argv)
{
    static char cmd_name[64];
    cli->cmd = group;
    cli->usage = group_usage;
    /* The subcommand is the first word that is not an option (global options
     * may come before it: `coyote topic --json list`). */
    int at = 0;
    while (at < argc && argv[at][0] == '-' && strcmp(argv[at], "--") != 0) {
        if (strcmp(argv[at], "--help") == 0 || strcmp(argv[at], "-h") == 0)
            cli->help = true;
        at += takes_value(argv[at]) && at + 1 < argc ? 2 : 1;
    }
    if (at >= argc && !cli->help)
        return cli_usage_error(cli, "'%s' needs a subcommand", group);
    if (at >= argc || strcmp(argv[at], "help") == 0) {
        fputs(group_usage, stdout);
        return CLI_OK;
    }
    for (size_t i = 0; i < n_subs; i++) {
        if (strcmp(subs[i].name, argv[at]) != 0)
            continue;
        snprintf(cmd_name, sizeof cmd_name, "%s %s", group, subs[i].name);
        cli->cmd = cmd_name;
        cli->usage = subs[i].usage;
        /* The words around the subcommand, in their order. */
        char **rest = malloc((size_t)argc * sizeof *rest);
        if (!rest)
            return cli_errorf("out of memory");
        int n = 0;
        for (int k = 0; k < argc; k++)
            if (k != at)
                rest[n++] = argv[k];
        int rc = subs[i].run(cli, n, rest);
        free(rest);
        return rc == CLI_HELP_SHOWN ? CLI_OK : rc;
    }
    return cli_usage_error(cli, "unknown subcommand '%s %s'", group, argv[at]);
}

static const char usage_help[] =
    "Usage: coyote help [COMMAND [SUB]]\n"
    "\n"
    "Print the help of coyote, or of a command: `coyote help topic get` is\n"
    "`coyote topic get --help`.\n"
    "\n"
    "Examples:\n"
    "  coyote help\n"
    "  coyote help consume\n"
    "  coyote help topic get\n";

/* "coyote help [COMMAND [SUB]]": run the command with --help. */
static int help(struct cli *cli, int argc, char **argv)
{
    struct cli_list words = {0};
    cli->cmd = "help";
    cli->usage = usage_help;
    int rc = cli_parse(cli, argc, argv, NULL, 0, &words); /* --help: usage_help */
    if (rc != CLI_OK)
        goto out;
    if (words.n == 0) {
        fputs(usage_main, stdout);
        goto out;
    }
    if (words.n > 2) {
        rc = cli_usage_error(cli, "help takes at most COMMAND and SUB");
        goto out;
    }
    command_fn run = find_command(words.items[0]);
    if (!run) {
        rc = cli_usage_error(cli, "unknown command '%s'", words.items[0]);
        goto out;
    }
    char help_flag[] = "--help";
    char *args[2] = {NULL, NULL};
    int n = 0;
    if (words.n > 1)
        args[n++] = (char *)words.items[1];
    args[n++] = help_flag;
    cli->cmd = NULL;
    cli->usage = NULL;
    cli->help = true;
    rc = run(cli, n, args);
out:
    cli_list_free(&words);
    return rc;
}

/* Take a global option at argv[*i] (before the command). Returns 1 if it was
 * one, 0 if not, or CLI_USAGE + 10 on a missing value (reported). */
static int global_option(struct cli *cli, int argc, char **argv, int *i)
{
    static const struct {
        const char *name;
        size_t offset;
    } valued[] = {
        {"--server", offsetof(struct cli, url)},
        {"--token", offsetof(struct cli, token)},
        {"--namespace", offsetof(struct cli, ns)},
    };
    const char *a = argv[*i];
    if (strcmp(a, "--json") == 0) {
        cli->json = true;
        return 1;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        cli->help = true;
        return 1;
    }
    for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) {
        size_t len = strlen(valued[k].name);
        const char **dst = (const char **)((char *)cli + valued[k].offset);
        if (strcmp(a, valued[k].name) == 0) {
            if (*i + 1 >= argc) {
                cli_usage_error(cli, "option '%s' needs a value", a);
                return CLI_USAGE + 10;
            }
            *dst = argv[++*i];
            return 1;
        }
        if (strncmp(a, valued[k].name, len) == 0 && a[len] == '=') {
            *dst = a + len + 1;
            return 1;
        }
    }
    return 0;
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

/* A closed 0, 1 or 2 would be taken by the next file the process opens —
 * the client's socket — and printed messages would go there: give each
 * closed one /dev/null, opened so that using it fails (stdout: EBADF), or
 * discards (stderr). */
static void fill_std_fds(void)
{
    static const int flags[3] = {O_WRONLY, O_RDONLY, O_WRONLY};
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
            continue;
        int got = open("/dev/null", flags[fd]);
        if (got >= 0 && got != fd) {
            dup2(got, fd);
            close(got);
        }
    }
}

int main(int argc, char **argv)
{
    struct cli cli;
    fill_std_fds();
    memset(&cli, 0, sizeof cli);
    cli.url = env_or("COYOTE_URL", CLI_DEFAULT_URL);
    cli.token = env_or("COYOTE_TOKEN", NULL);
    cli.ns = env_or("COYOTE_NAMESPACE", NULL);

    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            puts("coyote " COYOTE_CLI_VERSION);
            return CLI_OK;
        }
        int g = global_option(&cli, argc, argv, &i);
        if (g == 0)
            break;
        if (g != 1)
            return CLI_USAGE;
    }
    if (i >= argc) {
        if (cli.help) {
            fputs(usage_main, stdout);
            return CLI_OK;
        }
        fputs(usage_main, stderr);
        return CLI_USAGE;
    }
    const char *name = argv[i];
    int rest_argc = argc - i - 1;
    char **rest = argv + i + 1;
    if (name[0] == '-')
        return cli_usage_error(&cli, "unknown option '%s'", name);
    command_fn run = strcmp(name, "help") == 0 ? help : find_command(name);
    if (!run)
        return cli_usage_error(&cli, "unknown command '%s'", name);
    int rc = run(&cli, rest_argc, rest);
    cli_close(&cli);
    errno = 0;
    if (fflush(stdout) != 0 && (rc == CLI_OK || rc == CLI_HELP_SHOWN))
        rc = cli_errorf("writing to stdout: %s", strerror(errno ? errno : EIO));
    return rc == CLI_HELP_SHOWN ? CLI_OK : rc;
}
