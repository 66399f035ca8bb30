/*
 * log.h — leveled logging to stderr (or a hook, for tests).
 *
 * One line per call: "2026-11-22T14:07:42.123Z INFO  message". The level and
 * the hook are process-wide settings made once by main() or a test.
 */
#ifndef COYOTE_BASE_LOG_H
#define COYOTE_BASE_LOG_H

enum log_level { CYLOG_DEBUG = 0, CYLOG_INFO, CYLOG_WARN, CYLOG_ERROR, CYLOG_OFF };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "debug" | "info" | "warn" | "error" | "off"; 0 or CY_EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
/* Send formatted lines (without the timestamp, no trailing newline) to `hook`
 * instead of stderr; NULL restores stderr. */
void log_set_hook(void (*hook)(void *arg, enum log_level level, const char *line), void *arg);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(CYLOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_write(CYLOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(CYLOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(CYLOG_ERROR, __VA_ARGS__)

#endif
