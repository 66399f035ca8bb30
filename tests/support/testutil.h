/* testutil.h — small helpers shared by the unit tests. */
#ifndef COYOTE_TEST_TESTUTIL_H
#define COYOTE_TEST_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* A fresh directory under $TMPDIR (or /tmp); the returned string is malloc'd.
 * Aborts the test process on failure. */
char *tu_tempdir(const char *prefix);
/* rm -rf path (best effort) and free(path). */
void tu_rmtree(char *path);
/* Deterministic pseudo-random numbers (xorshift64*), for property tests. */
uint64_t tu_rand(uint64_t *state);
/* Fill buf with pseudo-random bytes. */
void tu_fill(uint64_t *state, void *buf, size_t n);

#endif
