/*
 * main.c — coyoted, the Coyote server.
 *
 * This build holds the storage engine only: it opens (and, after a crash,
 * recovers) the data directory, checkpoints it periodically, and shuts down
 * cleanly on SIGTERM/SIGINT. The HTTP API of API.md arrives with the broker
 * and server layers; until then coyoted says so at start-up.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "coyote.h"
#include "storage/store.h"

#define COYOTE_VERSION "0.1.0"

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: coyoted [OPTIONS]\n"
            "\n"
            "The Coyote message broker server.\n"
            "\n"
            "Options (each also read from the environment variable shown):\n"
            "  --data-dir DIR      data directory (COYOTE_DATA_DIR; default ./coyote-data)\n"
            "  --fsync POLICY      always | interval=<ms> | never (COYOTE_FSYNC; default always)\n"
            "                        always: a write is acknowledged after fdatasync covered it\n"
            "                        interval=<ms>: fdatasync every <ms> (1..60000); a crash of\n"
            "                          the machine may lose the last <ms> of acknowledged writes\n"
            "                        never: fdatasync only at checkpoints and shutdown\n"
            "  --log-level LEVEL   debug | info | warn | error (COYOTE_LOG_LEVEL; default info)\n"
            "  -h, --help          show this text\n"
            "  --version           print the version\n"
            "\n"
            "Signals: SIGTERM or SIGINT stop the server cleanly (sync, checkpoint, exit 0).\n"
            "This build contains the storage engine; the HTTP API (API.md) is not built yet.\n");
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

int main(int argc, char **argv)
{
    const char *data_dir = env_or("COYOTE_DATA_DIR", "./coyote-data");
    const char *fsync_s = env_or("COYOTE_FSYNC", "always");
    const char *level_s = env_or("COYOTE_LOG_LEVEL", "info");
    enum { OPT_DATA_DIR = 256, OPT_FSYNC, OPT_LOG_LEVEL, OPT_VERSION };
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"fsync", required_argument, NULL, OPT_FSYNC},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_DATA_DIR: data_dir = optarg; break;
        case OPT_FSYNC: fsync_s = optarg; break;
        case OPT_LOG_LEVEL: level_s = optarg; break;
        case 'h': usage(stdout); return 0;
        case OPT_VERSION: printf("coyoted %s\n", COYOTE_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "coyoted: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    enum log_level level;
    if (log_level_parse(level_s, &level)) {
        fprintf(stderr, "coyoted: --log-level: '%s' is not one of debug, info, warn, error\n",
                level_s);
        return 2;
    }
    log_set_level(level);
    struct store_config cfg = {.dir = NULL};
    if (journal_fsync_parse(fsync_s, &cfg.fsync, &cfg.fsync_interval_ms)) {
        fprintf(stderr,
                "coyoted: --fsync: '%s' is not always, never or interval=<ms> (1..60000)\n",
                fsync_s);
        return 2;
    }
    char fsync_name[32];
    journal_fsync_name(cfg.fsync, cfg.fsync_interval_ms, fsync_name, sizeof fsync_name);

    char ns_dir[4096];
    snprintf(ns_dir, sizeof ns_dir, "%s/ns/default", data_dir);
    cfg.dir = ns_dir;

    uint64_t t0 = clock_mono_ms();
    log_info("coyoted %s starting: data-dir=%s fsync=%s log-level=%s", COYOTE_VERSION, data_dir,
             fsync_name, level_s);
    struct store *st;
    int rc = store_open(&cfg, NULL, &st);
    if (rc) {
        log_error("cannot open the data directory %s: %s", data_dir, cy_strerror(rc));
        return 1;
    }
    struct store_stats ss;
    store_get_stats(st, &ss);
    log_info("coyoted ready in %" PRIu64 " ms: journal %" PRIu64 " bytes in %" PRIu32
             " segments, %" PRIu32 " partitions; HTTP API not built yet (storage engine only)",
             clock_mono_ms() - t0, ss.journal_bytes, ss.segments, ss.partitions);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    while (!stop_signal) {
        sleep(1);
        rc = store_maybe_checkpoint(st, clock_mono_ms());
        if (rc)
            log_warn("checkpoint failed: %s", cy_strerror(rc));
    }
    uint64_t t1 = clock_mono_ms();
    rc = store_close(st);
    if (rc) {
        log_error("shutdown: closing the data directory failed: %s", cy_strerror(rc));
        return 1;
    }
    log_info("coyoted stopped on signal %d in %" PRIu64 " ms", (int)stop_signal,
             clock_mono_ms() - t1);
    return 0;
}
