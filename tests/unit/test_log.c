/*
 * test_log.c — log lines reach the hook (or stderr, in the documented
 * format), the level filters them, and level names parse. The level and hook
 * are process-wide, so every test restores the defaults in its teardown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four headers above, which it needs */

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "coyote.h"

struct capture {
    int count;
    enum log_level level[16];
    char line[16][4096];
};

static void capture_hook(void *arg, enum log_level level, const char *line)
{
    struct capture *c = arg;
    if (c->count < 16) {
        c->level[c->count] = level;
        snprintf(c->line[c->count], sizeof c->line[0], "%s", line);
    }
    c->count++;
}

static int setup_capture(void **state)
{
    struct capture *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    log_set_hook(capture_hook, c);
    *state = c;
    return 0;
}

static int teardown_capture(void **state)
{
    log_set_hook(NULL, NULL);
    log_set_level(CYLOG_INFO);
    free(*state);
    return 0;
}

static void test_hook_receives_formatted_line(void **state)
{
    struct capture *c = *state;
    log_set_level(CYLOG_DEBUG);
    log_info("segment %u sealed at offset %llu", 7u, 123456789012ull);
    assert_int_equal(c->count, 1);
    assert_int_equal(c->level[0], CYLOG_INFO);
    /* no timestamp, no level name, no newline: just the message */
    assert_string_equal(c->line[0], "segment 7 sealed at offset 123456789012");

    log_debug("d");
    log_warn("w%s", "!");
    log_error("e");
    assert_int_equal(c->count, 4);
    assert_int_equal(c->level[1], CYLOG_DEBUG);
    assert_string_equal(c->line[1], "d");
    assert_int_equal(c->level[2], CYLOG_WARN);
    assert_string_equal(c->line[2], "w!");
    assert_int_equal(c->level[3], CYLOG_ERROR);
    assert_string_equal(c->line[3], "e");
}

static void emit_all(void)
{
    log_debug("debug");
    log_info("info");
    log_warn("warn");
    log_error("error");
}

static void test_level_filters(void **state)
{
    struct capture *c = *state;
    static const struct {
        enum log_level level;
        int passed;
    } cases[] = {
        {CYLOG_DEBUG, 4}, {CYLOG_INFO, 3}, {CYLOG_WARN, 2}, {CYLOG_ERROR, 1}, {CYLOG_OFF, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c->count = 0;
        log_set_level(cases[i].level);
        assert_int_equal(log_get_level(), cases[i].level);
        emit_all();
        assert_int_equal(c->count, cases[i].passed);
        /* the ones that pass are the most severe ones */
        for (int k = 0; k < c->count; k++)
            assert_true(c->level[k] >= cases[i].level);
    }
}

static void test_off_is_not_a_message_level(void **state)
{
    struct capture *c = *state;
    log_set_level(CYLOG_DEBUG);
    log_write(CYLOG_OFF, "never");
    assert_int_equal(c->count, 0);
}

static void test_long_message_is_truncated_not_overflowed(void **state)
{
    struct capture *c = *state;
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    log_error("%s", big);
    assert_int_equal(c->count, 1);
    size_t n = strlen(c->line[0]);
    assert_true(n > 1000 && n < sizeof big - 1);
    assert_true(strspn(c->line[0], "x") == n);
}

static void test_level_parse(void **state)
{
    static const struct {
        const char *name;
        enum log_level level;
    } good[] = {
        {"debug", CYLOG_DEBUG}, {"info", CYLOG_INFO}, {"warn", CYLOG_WARN},
        {"error", CYLOG_ERROR}, {"off", CYLOG_OFF},   {"DEBUG", CYLOG_DEBUG},
        {"Info", CYLOG_INFO},   {"WARN", CYLOG_WARN}, {"warning", CYLOG_WARN},
        {"OFF", CYLOG_OFF},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        enum log_level out = (enum log_level)99;
        assert_int_equal(log_level_parse(good[i].name, &out), 0);
        assert_int_equal(out, good[i].level);
    }
    static const char *const bad[] = {"", "verbose", "inf", "debugx", " info", "err", "0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        enum log_level out = CYLOG_ERROR;
        assert_int_equal(log_level_parse(bad[i], &out), CY_EINVAL);
        assert_int_equal(out, CYLOG_ERROR); /* untouched on failure */
    }
}

/* With no hook, lines go to stderr as "YYYY-MM-DDTHH:MM:SS.mmmZ LEVEL msg\n",
 * one write per line. */
static void test_stderr_format(void **state)
{
    log_set_hook(NULL, NULL);
    log_set_level(CYLOG_INFO);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
    log_info("hello %d", 42);
    log_debug("filtered");
    log_warn("careful");
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);

    char out[512];
    ssize_t n = 0, r;
    while ((r = read(fds[0], out + n, sizeof out - 1 - (size_t)n)) > 0)
        n += r;
    close(fds[0]);
    out[n] = '\0';

    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                             "INFO  hello 42\n"
                             "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                             "WARN  careful\n$",
                             REG_EXTENDED),
                     0);
    int match = regexec(&re, out, 0, NULL, 0);
    regfree(&re);
    if (match != 0)
        print_error("stderr got: \"%s\"\n", out);
    assert_int_equal(match, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hook_receives_formatted_line, setup_capture,
                                        teardown_capture),
        cmocka_unit_test_setup_teardown(test_level_filters, setup_capture, teardown_capture),
        cmocka_unit_test_setup_teardown(test_off_is_not_a_message_level, setup_capture,
                                        teardown_capture),
        cmocka_unit_test_setup_teardown(test_long_message_is_truncated_not_overflowed,
                                        setup_capture, teardown_capture),
        cmocka_unit_test(test_level_parse),
        cmocka_unit_test_setup_teardown(test_stderr_format, setup_capture, teardown_capture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
