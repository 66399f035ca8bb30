/*
 * main.c — coyoted: configuration, the broker, the HTTP server, signals.
 * Globals live here only (STYLE.md): the wake-up eventfd.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "broker/broker.h"
#include "coyote.h"
#include "server/config.h"
#include "server/http.h"

static int wakefd = -1;

/* Every connection is a file descriptor: take up to the hard limit (at most
 * 1048576), so the common soft default of 1024 does not refuse the 1025th
 * client. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 1048576 ? 1048576 : rl.rlim_max;
    if (want <= rl.rlim_cur)
        return;
    rlim_t before = rl.rlim_cur;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        log_info("open files limit raised from %llu to %llu", (unsigned long long)before,
                 (unsigned long long)want);
    else
        log_warn("cannot raise the open files limit from %llu: %s", (unsigned long long)before,
                 strerror(errno));
}

int main(int argc, char **argv)
{
    struct server_config cfg;
    int rc = config_load(&cfg, argc, argv);
    if (rc)
        return rc == 1 ? 0 : 2;
    enum log_level level;
    log_level_parse(cfg.log_level, &level);
    log_set_level(level);

    /* Block SIGTERM/SIGINT before any thread exists (the journals' sync
     * threads inherit the mask): the loop receives them through a signalfd. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);

    uint64_t t0 = clock_mono_ms();
    log_info("coyoted %s starting (pid %d)", COYOTE_VERSION, (int)getpid());
    config_log(&cfg);
    raise_fd_limit();
    if (!cfg.admin_token[0])
        log_warn("no --admin-token: the API is open to anyone who can reach %s", cfg.listen);

    wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wakefd < 0) {
        log_error("eventfd: %s", strerror(errno));
        return 1;
    }
    struct broker_config bc = {
        .data_dir = cfg.data_dir,
        .segment_bytes = cfg.segment_bytes,
        .checkpoint_interval_ms = cfg.checkpoint_interval_ms,
        .checkpoint_bytes = cfg.checkpoint_bytes,
        .limits = cfg.limits,
        .test_clock = cfg.test_clock,
        .on_durable = server_wake,
        .on_durable_arg = &wakefd,
    };
    journal_fsync_parse(cfg.fsync, &bc.fsync, &bc.fsync_interval_ms);
    struct broker *b;
    struct broker_error err = {0};
    rc = broker_open(&bc, &b, &err);
    if (rc) {
        log_error("cannot open the data directory: %s", err.detail);
        return 1;
    }
    struct server *srv;
    rc = server_start(&cfg, b, wakefd, &srv);
    if (rc) {
        broker_close(b);
        return 1;
    }
    log_info("coyoted ready in %" PRIu64 " ms: listening on %s (port %u), data in %s, fsync=%s",
             clock_mono_ms() - t0, cfg.listen, server_port(srv), cfg.data_dir,
             broker_fsync_name(b));

    rc = server_run(srv);
    uint64_t t1 = clock_mono_ms();
    server_free(srv);
    int crc = broker_close(b);
    close(wakefd);
    if (crc) {
        log_error("shutdown: closing the data directory failed: %s", cy_strerror(crc));
        return 1;
    }
    log_info("coyoted stopped in %" PRIu64 " ms (synced and checkpointed)", clock_mono_ms() - t1);
    return rc ? 1 : 0;
}
