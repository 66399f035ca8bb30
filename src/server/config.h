/*
 * config.h — coyoted's configuration: built-in defaults, then an optional INI
 * file (--config / COYOTE_CONFIG), then COYOTE_* environment variables, then
 * command-line flags; each later source overrides the earlier ones (DESIGN.md
 * §4). One table describes every option once: its flag, variable, INI key,
 * type and help line, so --help, the start-up print and the parsers agree.
 */
#ifndef COYOTE_SERVER_CONFIG_H
#define COYOTE_SERVER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/log.h"
#include "broker/broker.h"

#define COYOTE_VERSION "0.1.0" /* coyoted --version and the start-up line */

struct server_config {
    char listen[256];     /* host:port */
    char data_dir[4096];
    char fsync[32];       /* always | interval=<ms> | never */
    char admin_token[512];
    bool test_clock;
    char config_file[4096];
    char log_level[16];
    uint64_t max_body_bytes;
    uint64_t segment_bytes;
    uint64_t checkpoint_interval_ms;
    uint64_t checkpoint_bytes;
    uint64_t shutdown_timeout_ms;
    struct broker_limits limits;
};

/* Defaults, then INI, env and argv. Returns 0; 1 when --help/--version was
 * printed (exit 0); 2 with a message on stderr for a bad option (exit 2). */
int config_load(struct server_config *c, int argc, char **argv);
/* Log the effective configuration (secrets masked), one line. */
void config_log(const struct server_config *c);
void config_usage(FILE *out);

#endif
