/* coyoted_proc.h — run the real server, coyoted, as a child process of a test.
 *
 * coyoted is started as
 *     coyoted --listen 127.0.0.1:PORT --data-dir DIR [extra args...]
 * with stdin and stdout on /dev/null and its stderr on a pipe that is read
 * until the line "coyoted ready in N ms: listening on ... (port P)" (never by
 * sleeping; 30 s at most), which gives the port (PORT 0: any free port).
 * From then on a thread drains the pipe so the server never blocks on its log.
 *
 *     struct coyoted_proc s;
 *     const char *extra[] = {"--fsync", "never", NULL};
 *     if (coyoted_start(&s, coyoted_path(COYOTED_PATH_OR_NULL), dir, 0, extra, true))
 *         fail_msg("could not start coyoted");
 *     ... http://127.0.0.1:s.port ...
 *     coyoted_kill(&s);                       // kill -9
 *     if (coyoted_restart(&s, true)) ...      // same binary, port, dir, args
 *     coyoted_stop(&s, SIGTERM);              // graceful
 *
 * Not thread-safe: one test thread owns a struct coyoted_proc.
 */
#ifndef COYOTE_TEST_COYOTED_PROC_H
#define COYOTE_TEST_COYOTED_PROC_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

/* COYOTED_PATH is a compile definition of only some test targets; a test
 * passes COYOTED_PATH_OR_NULL to coyoted_path() (expanded in the test). */
#ifdef COYOTED_PATH
#define COYOTED_PATH_OR_NULL COYOTED_PATH
#else
#define COYOTED_PATH_OR_NULL NULL
#endif

#define COYOTED_MAX_EXTRA 8

struct coyoted_proc {
    pid_t pid;     /* the running server, -1 (or 0 when zeroed) when none */
    unsigned port; /* the port it listens on (kept after a stop, for a restart) */
    int err_fd;    /* read end of its stderr pipe while it runs */
    pthread_t drain;
    bool draining;
    /* what coyoted_restart() starts again */
    char bin[PATH_MAX];
    char dir[PATH_MAX];
    int n_extra;
    char extra[COYOTED_MAX_EXTRA][256];
};

/* The coyoted binary to run, or NULL when none is found: $COYOTED when set
 * (not checked), else $COYOTED_PATH, else `compiled` (a test's COYOTED_PATH;
 * may be NULL), else ../coyoted next to this test binary's directory — the
 * last three only when executable. The result may be a static buffer. */
const char *coyoted_path(const char *compiled);

/* Start bin on 127.0.0.1:port (0: any) with its data in dir and the
 * NULL-terminated extra arguments (may be NULL; at most COYOTED_MAX_EXTRA).
 * 0 once it is ready (p->pid, p->port set); -1 when it did not come up: the
 * child is then killed and reaped, and its stderr printed when `loud`. */
int coyoted_start(struct coyoted_proc *p, const char *bin, const char *dir, unsigned port,
                  const char *const *extra, bool loud);

/* Start it again with the same binary, data dir, arguments and port (the one
 * it had). A server still running is stopped (SIGTERM) first. 0 or -1, as
 * coyoted_start (p->port is kept either way, so it can be retried). */
int coyoted_restart(struct coyoted_proc *p, bool loud);

/* Send sig (SIGTERM: a graceful stop), reap it, join the drain thread, close
 * the pipe. Its wait status, or -1 when nothing ran or waitpid failed. Safe
 * to call again, or on a zeroed or failed-to-start struct (returns -1). */
int coyoted_stop(struct coyoted_proc *p, int sig);

/* coyoted_stop(p, SIGKILL): kill -9. */
int coyoted_kill(struct coyoted_proc *p);

#endif
