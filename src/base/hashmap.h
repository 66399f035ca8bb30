/*
 * hashmap.h — an open-addressing hash table from byte-string keys to pointers.
 *
 * Hashing is SipHash-1-3 keyed with a per-process random seed (getrandom at
 * first use), so clients cannot force collisions. Keys are copied into the
 * table; values are the caller's (the table never frees them). Not
 * thread-safe. Allocation failures return CY_ENOMEM (never abort), so the
 * table is usable inside the client library.
 *
 * Invariants: 1. capacity is a power of two; 2. load (live + tombstones) stays
 * below 3/4, the table grows or rehashes before it would pass that.
 */
#ifndef COYOTE_BASE_HASHMAP_H
#define COYOTE_BASE_HASHMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hmap;

/* 64-bit keyed hash of bytes with this process's random seed. */
uint64_t hash_bytes(const void *p, size_t n);
/* SipHash-1-3 with an explicit 128-bit key (k0, k1), for tests and callers
 * that need stable values. */
uint64_t siphash13(uint64_t k0, uint64_t k1, const void *p, size_t n);

/* A new empty table, or NULL when out of memory. */
struct hmap *hmap_new(void);
/* Frees the table and its key copies; not the values. NULL is allowed. */
void hmap_free(struct hmap *m);
size_t hmap_count(const struct hmap *m);
/* Insert or replace. If `old` is not NULL it receives the replaced value (or
 * NULL). 0 or CY_ENOMEM (the table is unchanged then). */
int hmap_put(struct hmap *m, const void *key, size_t klen, void *val, void **old);
/* The value for key, or NULL when absent. */
void *hmap_get(const struct hmap *m, const void *key, size_t klen);
/* Remove key; *old (if not NULL) receives its value. 0 or CY_ENOTFOUND. */
int hmap_del(struct hmap *m, const void *key, size_t klen, void **old);

/* Iteration in table order: start with it = 0; each call returns true and
 * sets key/klen/val (key owned by the table, valid until it changes) or false
 * at the end. Deleting the current item during iteration is allowed (copy its
 * key first: deletion frees it); inserting during iteration is not (a rehash
 * may skip or repeat items). hmap_get cannot tell a stored NULL from absence. */
bool hmap_next(const struct hmap *m, size_t *it, const void **key, size_t *klen, void **val);

#endif
