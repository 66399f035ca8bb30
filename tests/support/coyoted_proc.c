/* coyoted_proc.c — run the real coyoted for a test (see coyoted_proc.h). */
#include "coyoted_proc.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"

#define READY_TIMEOUT_MS 30000

const char *coyoted_path(const char *compiled)
{
    static char path[PATH_MAX + 16];
    const char *env = getenv("COYOTED");
    if (env && *env)
        return env;
    env = getenv("COYOTED_PATH");
    if (env && *env && access(env, X_OK) == 0)
        return env;
    if (compiled && access(compiled, X_OK) == 0)
        return compiled;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return NULL;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash)
        return NULL;
    *slash = 0;
    snprintf(path, sizeof path, "%.4000s/../coyoted", self);
    return access(path, X_OK) == 0 ? path : NULL;
}

static void *drain_stderr(void *arg)
{
    struct coyoted_proc *p = arg;
    char buf[4096];
    while (read(p->err_fd, buf, sizeof buf) > 0) {
    }
    return NULL;
}

/* The port of the first complete ready line in text, or 0. */
static unsigned ready_port(const char *text)
{
    const char *ready = strstr(text, "coyoted ready in ");
    const char *nl = ready ? strchr(ready, '\n') : NULL;
    const char *at = ready ? strstr(ready, "(port ") : NULL;
    if (ready && nl && at && at < nl)
        return (unsigned)strtoul(at + 6, NULL, 10);
    return 0;
}

static int spawn(struct coyoted_proc *p, bool loud)
{
    p->pid = -1;
    p->err_fd = -1;
    p->draining = false;
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", p->port);
    const char *argv[6 + COYOTED_MAX_EXTRA + 1];
    int argc = 0;
    argv[argc++] = "coyoted";
    argv[argc++] = "--listen";
    argv[argc++] = listen;
    argv[argc++] = "--data-dir";
    argv[argc++] = p->dir;
    for (int i = 0; i < p->n_extra; i++)
        argv[argc++] = p->extra[i];
    argv[argc] = NULL;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC)) {
        perror("pipe2");
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(fds[1], 2);
        execv(p->bin, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);

    /* Read the log until the ready line; keep the tail when it fills up. */
    char text[16384];
    size_t len = 0;
    text[0] = 0;
    unsigned port = 0;
    uint64_t give_up = clock_mono_ms() + READY_TIMEOUT_MS;
    while (!port) {
        uint64_t now = clock_mono_ms();
        if (now >= give_up)
            break;
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        if (poll(&pfd, 1, (int)(give_up - now)) <= 0)
            break;
        if (len == sizeof text - 1) {
            size_t keep = 1024;
            memmove(text, text + len - keep, keep);
            len = keep;
        }
        ssize_t n = read(fds[0], text + len, sizeof text - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        text[len] = 0;
        port = ready_port(text);
    }
    if (!port) {
        if (loud)
            fprintf(stderr, "coyoted (%s) did not become ready; its stderr:\n%s\n", p->bin, text);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(fds[0]);
        return -1;
    }
    p->pid = pid;
    p->port = port;
    p->err_fd = fds[0];
    p->draining = pthread_create(&p->drain, NULL, drain_stderr, p) == 0;
    return 0;
}

int coyoted_start(struct coyoted_proc *p, const char *bin, const char *dir, unsigned port,
                  const char *const *extra, bool loud)
{
    memset(p, 0, sizeof *p);
    p->pid = -1;
    p->err_fd = -1;
    if (!bin || !dir || strlen(bin) >= sizeof p->bin || strlen(dir) >= sizeof p->dir) {
        if (loud)
            fprintf(stderr, "coyoted_start: no binary, or a path too long\n");
        return -1;
    }
    strcpy(p->bin, bin);
    strcpy(p->dir, dir);
    for (int i = 0; extra && extra[i]; i++) {
        if (i == COYOTED_MAX_EXTRA || strlen(extra[i]) >= sizeof p->extra[i]) {
            if (loud)
                fprintf(stderr, "coyoted_start: too many or too long extra arguments\n");
            return -1;
        }
        strcpy(p->extra[i], extra[i]);
        p->n_extra = i + 1;
    }
    p->port = port;
    return spawn(p, loud);
}

int coyoted_restart(struct coyoted_proc *p, bool loud)
{
    coyoted_stop(p, SIGTERM);
    return spawn(p, loud);
}

int coyoted_stop(struct coyoted_proc *p, int sig)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    int st = 0;
    int ret = waitpid(p->pid, &st, 0) == p->pid ? st : -1;
    if (p->draining)
        pthread_join(p->drain, NULL);
    if (p->err_fd >= 0)
        close(p->err_fd);
    p->pid = -1;
    p->err_fd = -1;
    p->draining = false;
    return ret;
}

int coyoted_kill(struct coyoted_proc *p)
{
    return coyoted_stop(p, SIGKILL);
}
