/*
 * xmalloc.h — allocation that never returns NULL: on failure it logs the size
 * and aborts. For the server process only (STYLE.md); code that may run inside
 * a user's process through the client library returns CY_ENOMEM instead.
 */
#ifndef COYOTE_BASE_XMALLOC_H
#define COYOTE_BASE_XMALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
void *xmemdup(const void *p, size_t n);

#endif
