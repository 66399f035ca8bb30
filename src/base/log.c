/* log.c — leveled logging (see log.h). Lines are written with one write(2)
 * each so concurrent threads never interleave inside a line. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "coyote.h"

static int level_now = CYLOG_INFO;
static void (*log_hook)(void *, enum log_level, const char *);
static void *log_hook_arg;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};

void log_set_level(enum log_level level)
{
    __atomic_store_n(&level_now, (int)level, __ATOMIC_RELAXED);
}

enum log_level log_get_level(void)
{
    return (enum log_level)__atomic_load_n(&level_now, __ATOMIC_RELAXED);
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i <= CYLOG_OFF; i++) {
        if (strcasecmp(s, level_names[i]) == 0 || (i == CYLOG_WARN && !strcasecmp(s, "warning"))) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return CY_EINVAL;
}

void log_set_hook(void (*hook)(void *arg, enum log_level level, const char *line), void *arg)
{
    log_hook = hook;
    log_hook_arg = arg;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    if ((int)level < (int)log_get_level() || level >= CYLOG_OFF)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log_hook) {
        log_hook(log_hook_arg, level, msg);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2200];
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], msg);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w; /* nothing sensible to do when stderr is gone */
}
