/*
 * dead_reason.h — where cy_set_dead_reason (serve.c) puts a reason.
 *
 * Inside cy_serve's handlers the reason goes to the message the calling
 * worker thread runs (serve.c keeps a thread-local slot for it while the
 * handler runs), so it also works through decorators and the router, which
 * pass their own copy of the cy_context on. Anywhere else it is dropped —
 * or, for tests that call a handler directly, given to a hook.
 */
#ifndef COYOTE_CLIENT_DEAD_REASON_H
#define COYOTE_CLIENT_DEAD_REASON_H

#include "coyote.h"

/* The longest reason the broker takes (bytes); cy_set_dead_reason truncates
 * to it at a UTF-8 character boundary. */
#define DEAD_REASON_MAX_BYTES 1024u

/* Test-only: on the calling thread, a cy_set_dead_reason made outside any
 * cy_serve handler calls fn(arg, ctx, reason) (reason valid during the call
 * only). fn NULL: off. */
typedef void (*dead_reason_hook)(void *arg, const cy_context *ctx, const char *reason);
void dead_reason_set_hook(dead_reason_hook fn, void *arg);

#endif
