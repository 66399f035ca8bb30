/*
 * exec.c — `coyote consume --exec CMD`: run CMD once per message.
 *
 * The command runs as `/bin/sh -c CMD` with:
 *   stdin        the message's value (then end of file)
 *   environment  ours, plus COYOTE_TOPIC, COYOTE_PARTITION, COYOTE_OFFSET,
 *                COYOTE_MSG_ID, COYOTE_KEY (only when the message has a key),
 *                COYOTE_ATTEMPT (queue/FIFO), COYOTE_TIMESTAMP, COYOTE_GROUP,
 *                COYOTE_MODE and COYOTE_HEADER_<NAME> per header (NAME
 *                uppercased, every byte that is not a letter or digit → '_');
 *                stale variables of those names are removed first
 *   stdout/err   ours
 *   group        its own process group, signals at their defaults
 *
 * The wait is one poll loop over a signalfd (SIGINT, SIGTERM, SIGCHLD, all
 * blocked by consume.c) and the non-blocking pipe to the command's stdin, so
 * a command that never reads its stdin cannot wedge coyote, Ctrl-C is seen
 * while the command runs, and the lease keeps being extended (the tick).
 * Everything the child needs is prepared before posix_spawn: nothing unsafe
 * runs between fork and exec in a process that may have library threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

extern char **environ;

struct env {
    char **vars;
    size_t n, cap;
};

static int env_push(struct env *e, char *s)
{
    if (!s)
        return -1;
    if (e->n + 2 > e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 64;
        char **vars = realloc(e->vars, cap * sizeof *vars);
        if (!vars) {
            free(s);
            return -1;
        }
        e->vars = vars;
        e->cap = cap;
    }
    e->vars[e->n++] = s;
    e->vars[e->n] = NULL;
    return 0;
}

/* "NAME=value" from a value of len bytes (cut at a NUL byte: the environment
 * cannot hold one). */
static int env_set(struct env *e, const char *name, const char *value, size_t len)
{
    size_t vlen = strnlen(value, len);
    size_t nlen = strlen(name);
    char *s = malloc(nlen + vlen + 2);
    if (!s)
        return -1;
    memcpy(s, name, nlen);
    s[nlen] = '=';
    memcpy(s + nlen + 1, value, vlen);
    s[nlen + 1 + vlen] = '\0';
    return env_push(e, s);
}

static int env_setu(struct env *e, const char *name, uint64_t v)
{
    char buf[24];
    int len = snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    return env_set(e, name, buf, (size_t)len);
}

static void env_free(struct env *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->vars[i]);
    free(e->vars);
}

/* Is this inherited variable one that we set per message? */
static bool ours(const char *var)
{
    static const char *const names[] = {
        "COYOTE_TOPIC=", "COYOTE_PARTITION=", "COYOTE_OFFSET=",    "COYOTE_MSG_ID=",
        "COYOTE_KEY=",   "COYOTE_ATTEMPT=",   "COYOTE_TIMESTAMP=", "COYOTE_GROUP=",
        "COYOTE_MODE=",  "COYOTE_HEADER_",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strncmp(var, names[i], strlen(names[i])) == 0)
            return true;
    return false;
}

static int build_env(const struct cli_exec_msg *m, struct env *e)
{
    const cy_received *msg = m->msg;
    memset(e, 0, sizeof *e);
    for (char **v = environ; v && *v; v++)
        if (!ours(*v) && env_push(e, strdup(*v)) != 0)
            return -1;
    if (env_set(e, "COYOTE_TOPIC", m->topic, strlen(m->topic)) != 0 ||
        env_setu(e, "COYOTE_PARTITION", m->partition) != 0 ||
        env_setu(e, "COYOTE_OFFSET", m->offset) != 0 ||
        env_set(e, "COYOTE_MSG_ID", m->msg_id, strlen(m->msg_id)) != 0 ||
        env_setu(e, "COYOTE_TIMESTAMP", msg->timestamp) != 0 ||
        env_set(e, "COYOTE_GROUP", m->group, strlen(m->group)) != 0 ||
        env_set(e, "COYOTE_MODE", cli_mode_name(m->mode), strlen(cli_mode_name(m->mode))) != 0)
        return -1;
    if (msg->key) {
        size_t klen = msg->key_len ? msg->key_len : strlen(msg->key);
        if (env_set(e, "COYOTE_KEY", msg->key, klen) != 0)
            return -1;
    }
    if (m->mode != CY_STREAM && env_setu(e, "COYOTE_ATTEMPT", msg->attempt) != 0)
        return -1;
    for (size_t i = 0; i < msg->n_headers; i++) {
        const char *hname = msg->headers[i].name ? msg->headers[i].name : "";
        const char *hvalue = msg->headers[i].value ? msg->headers[i].value : "";
        size_t len = strlen(hname);
        char *name = malloc(len + sizeof "COYOTE_HEADER_");
        if (!name)
            return -1;
        memcpy(name, "COYOTE_HEADER_", sizeof "COYOTE_HEADER_" - 1);
        char *d = name + sizeof "COYOTE_HEADER_" - 1;
        for (size_t k = 0; k < len; k++) {
            unsigned char c = (unsigned char)hname[k];
            if (c >= 'a' && c <= 'z')
                c = (unsigned char)(c - 'a' + 'A');
            else if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
                c = '_';
            d[k] = (char)c;
        }
        d[len] = '\0';
        int rc = env_set(e, name, hvalue, strlen(hvalue));
        free(name);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int spawn(const char *cmd, char **envp, int stdin_fd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, defaults;
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    int rc;

    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGCHLD);
    sigaddset(&defaults, SIGQUIT);
    sigaddset(&defaults, SIGHUP);
    if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
        return rc;
    if ((rc = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    rc = posix_spawn_file_actions_adddup2(&fa, stdin_fd, 0);
    if (rc == 0)
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF);
    if (rc == 0)
        rc = posix_spawnattr_setpgroup(&attr, 0);
    if (rc == 0)
        rc = posix_spawnattr_setsigmask(&attr, &none);
    if (rc == 0)
        rc = posix_spawnattr_setsigdefault(&attr, &defaults);
    if (rc == 0)
        rc = posix_spawn(pid, "/bin/sh", &fa, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

int cli_exec(const char *cmd, const struct cli_exec_msg *m, int *n_signals,
             const struct cli_exec_tick *tick, int *exit_status)
{
    struct env env;
    int pipefd[2] = {-1, -1}, sfd = -1;
    pid_t pid = -1;
    int rc = CLI_OK;
    sigset_t watched;

    *exit_status = -1;
    if (build_env(m, &env) != 0) {
        rc = cli_errorf("--exec: out of memory");
        goto out;
    }
    sigemptyset(&watched);
    sigaddset(&watched, SIGINT);
    sigaddset(&watched, SIGTERM);
    sigaddset(&watched, SIGCHLD);
    sfd = signalfd(-1, &watched, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0 || pipe2(pipefd, O_CLOEXEC) != 0) {
        rc = cli_errorf("--exec: %s", strerror(errno));
        goto out;
    }
    int err = spawn(cmd, env.vars, pipefd[0], &pid);
    close(pipefd[0]);
    pipefd[0] = -1;
    if (err != 0) {
        pid = -1;
        rc = cli_errorf("--exec: cannot run /bin/sh: %s", strerror(err));
        goto out;
    }
    if (fcntl(pipefd[1], F_SETFL, O_NONBLOCK) != 0) {
        rc = cli_errorf("--exec: %s", strerror(errno));
        goto out;
    }

    const uint8_t *value = m->msg->value;
    size_t left = m->msg->value_len, written = 0;
    if (left == 0) {
        close(pipefd[1]);
        pipefd[1] = -1;
    }
    uint64_t next_tick = tick && tick->every_ms ? now_ms() + tick->every_ms : 0;
    for (;;) {
        int status;
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) {
            pid = -1;
            if (WIFEXITED(status))
                *exit_status = WEXITSTATUS(status);
            else if (WIFSIGNALED(status))
                *exit_status = 128 + WTERMSIG(status);
            break;
        }
        if (got < 0 && errno != EINTR) {
            rc = cli_errorf("--exec: waitpid: %s", strerror(errno));
            pid = -1;
            goto out;
        }
        struct pollfd pfd[2] = {{.fd = sfd, .events = POLLIN},
                                {.fd = pipefd[1], .events = POLLOUT}};
        int timeout = -1;
        if (next_tick) {
            uint64_t now = now_ms();
            timeout = next_tick > now ? (int)(next_tick - now) : 0;
        }
        int ready = poll(pfd, pipefd[1] >= 0 ? 2 : 1, timeout);
        if (ready < 0 && errno != EINTR) {
            rc = cli_errorf("--exec: poll: %s", strerror(errno));
            goto out;
        }
        if (ready > 0 && (pfd[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (si.ssi_signo == SIGCHLD)
                    continue; /* waitpid above tells */
                ++*n_signals;
                if (*n_signals >= 2)
                    kill(-pid, SIGTERM);
            }
        }
        if (ready > 0 && pipefd[1] >= 0 && (pfd[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = write(pipefd[1], value + written, left);
            if (n > 0) {
                written += (size_t)n;
                left -= (size_t)n;
            }
            /* Done, or the command closed its stdin (EPIPE: SIGPIPE is ignored). */
            if (left == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                close(pipefd[1]);
                pipefd[1] = -1;
            }
        }
        if (next_tick && now_ms() >= next_tick) {
            tick->fn(tick->arg);
            next_tick = now_ms() + tick->every_ms;
        }
    }
out:
    if (pid > 0) { /* only on an internal failure: do not leave it running */
        kill(-pid, SIGTERM);
        waitpid(pid, NULL, 0);
    }
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    if (sfd >= 0)
        close(sfd);
    env_free(&env);
    return rc;
}
