/*
 * hashmap.c — open addressing with linear probing and tombstones (see hashmap.h).
 *
 * The slot array holds the full 64-bit hash next to a pointer to the entry, so
 * a probe compares hashes without touching the entry; an entry is one
 * allocation holding the value, the key length and a copy of the key bytes.
 *
 * Slot states:
 *
 *     EMPTY --put--> LIVE --del--> TOMB --put (same probe path)--> LIVE
 *       ^                                        |
 *       +------------- rehash -------------------+
 *
 * Invariants:
 *   1. cap is 0 (nothing allocated yet) or a power of two >= MIN_CAP.
 *   2. (live + tombs) * 4 < cap * 3: at least a quarter of the slots are
 *      EMPTY, so every probe sequence ends at an EMPTY slot.
 *   3. A key is stored at most once, somewhere on the probe path from
 *      hash & (cap - 1) that precedes the first EMPTY slot.
 *   4. Deletion never moves another entry (it leaves a tombstone) and never
 *      resizes, which is what lets hmap_next continue past a deleted item.
 *   5. Every failing allocation happens before the table is modified, so
 *      CY_ENOMEM leaves it exactly as it was.
 */
#include "base/hashmap.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "coyote.h"

#define MIN_CAP 8

struct entry {
    void *val;
    size_t klen;
    uint8_t key[];
};

struct slot {
    uint64_t hash;
    struct entry *e; /* NULL: EMPTY; &tombstone: TOMB; else LIVE */
};

struct hmap {
    struct slot *slots;
    size_t cap;   /* 0 or a power of two */
    size_t live;  /* LIVE slots */
    size_t tombs; /* TOMB slots */
};

/* Only its address matters: it marks a deleted slot. */
static struct entry tombstone;
#define TOMB (&tombstone)

/* --- SipHash-1-3 -------------------------------------------------------- */

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

#define SIPROUND           \
    do {                   \
        v0 += v1;          \
        v1 = rotl(v1, 13); \
        v1 ^= v0;          \
        v0 = rotl(v0, 32); \
        v2 += v3;          \
        v3 = rotl(v3, 16); \
        v3 ^= v2;          \
        v0 += v3;          \
        v3 = rotl(v3, 21); \
        v3 ^= v0;          \
        v2 += v1;          \
        v1 = rotl(v1, 17); \
        v1 ^= v2;          \
        v2 = rotl(v2, 32); \
    } while (0)

uint64_t siphash13(uint64_t k0, uint64_t k1, const void *p, size_t n)
{
    const uint8_t *in = p;
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull;
    uint64_t v1 = k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull;
    uint64_t v3 = k1 ^ 0x7465646279746573ull;

    size_t whole = n & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load_le64(in + i);
        v3 ^= m;
        SIPROUND; /* c = 1 compression round */
        v0 ^= m;
    }

    /* The last block carries the length's low byte in its top byte, so
     * inputs that differ only by trailing zero bytes hash differently. */
    uint64_t b = (uint64_t)n << 56;
    for (size_t i = 0; i < (n & 7); i++)
        b |= (uint64_t)in[whole + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;

    v2 ^= 0xff;
    SIPROUND; /* d = 3 finalization rounds */
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* --- the per-process seed ----------------------------------------------- */

static uint64_t seed[2];
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

/* Only reached when getrandom(2) is unavailable (very old kernels, seccomp
 * sandboxes): the seed then only has to differ between processes and be hard
 * to guess from outside, and time, pid and ASLR addresses give that. */
static void seed_fallback(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t mono = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    uint64_t mix[4] = {t, mono, (uint64_t)getpid(), (uint64_t)(uintptr_t)&seed};
    seed[0] = siphash13(0x0123456789abcdefull, (uintptr_t)&mix, mix, sizeof mix);
    seed[1] = siphash13(seed[0], (uintptr_t)&seed_once, mix, sizeof mix);
}

static void seed_init(void)
{
    uint8_t raw[16];
    size_t got = 0;
    while (got < sizeof raw) {
        /* flags 0: blocks only until the kernel's pool is first initialized */
        ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            seed_fallback();
            return;
        }
        got += (size_t)r;
    }
    seed[0] = load_le64(raw);
    seed[1] = load_le64(raw + 8);
}

uint64_t hash_bytes(const void *p, size_t n)
{
    pthread_once(&seed_once, seed_init);
    return siphash13(seed[0], seed[1], p, n);
}

/* --- the table ---------------------------------------------------------- */

struct hmap *hmap_new(void)
{
    /* Slots are allocated by the first put, so an unused map costs little. */
    return calloc(1, sizeof(struct hmap));
}

void hmap_free(struct hmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].e && m->slots[i].e != TOMB)
            free(m->slots[i].e);
    }
    free(m->slots);
    free(m);
}

size_t hmap_count(const struct hmap *m)
{
    return m->live;
}

static bool key_equal(const struct entry *e, const void *key, size_t klen)
{
    return e->klen == klen && (klen == 0 || memcmp(e->key, key, klen) == 0);
}

/* The index of key's LIVE slot, or m->cap when it is absent. When `insert_at`
 * is not NULL and the key is absent, it receives the slot a new entry should
 * take: the first TOMB on the probe path, else the EMPTY slot that ended it. */
static size_t find(const struct hmap *m, uint64_t h, const void *key, size_t klen,
                   size_t *insert_at)
{
    if (m->cap == 0) {
        if (insert_at)
            *insert_at = 0;
        return 0;
    }
    size_t mask = m->cap - 1;
    size_t first_tomb = m->cap;
    /* Invariant 2 guarantees an EMPTY slot, so this loop terminates. */
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const struct slot *s = &m->slots[i];
        if (!s->e) {
            if (insert_at)
                *insert_at = first_tomb < m->cap ? first_tomb : i;
            return m->cap;
        }
        if (s->e == TOMB) {
            if (first_tomb == m->cap)
                first_tomb = i;
        } else if (s->hash == h && key_equal(s->e, key, klen)) {
            return i;
        }
    }
}

/* Move every LIVE entry into a fresh array of `cap` slots, dropping the
 * tombstones. 0 or CY_ENOMEM, with m untouched on failure. */
static int rehash(struct hmap *m, size_t cap)
{
    struct slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return CY_ENOMEM;
    size_t mask = cap - 1;
    for (size_t i = 0; i < m->cap; i++) {
        struct slot s = m->slots[i];
        if (!s.e || s.e == TOMB)
            continue;
        size_t j = (size_t)s.hash & mask;
        while (slots[j].e)
            j = (j + 1) & mask;
        slots[j] = s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->tombs = 0;
    return 0;
}

/* Make room for one more LIVE entry in a slot that is now EMPTY, keeping
 * invariant 2; *rehashed tells whether the slots were rebuilt. The new size
 * leaves `live + 1` at most half full, so a long run of puts follows before
 * the next rehash; a table clogged with tombstones is rebuilt at the same (or
 * a smaller) size instead of growing. */
static int make_room(struct hmap *m, bool *rehashed)
{
    *rehashed = false;
    if ((m->live + m->tombs + 1) * 4 < m->cap * 3)
        return 0;
    size_t cap = MIN_CAP;
    while (cap / 2 < m->live + 1) {
        if (cap > SIZE_MAX / 2 / sizeof(struct slot))
            return CY_ENOMEM;
        cap *= 2;
    }
    int rc = rehash(m, cap);
    *rehashed = rc == 0;
    return rc;
}

int hmap_put(struct hmap *m, const void *key, size_t klen, void *val, void **old)
{
    uint64_t h = hash_bytes(key, klen);
    size_t at = 0; /* set by find() whenever the key is absent */
    size_t i = find(m, h, key, klen, &at);
    if (i < m->cap) {
        if (old)
            *old = m->slots[i].e->val;
        m->slots[i].e->val = val;
        return 0;
    }

    if (klen > SIZE_MAX - sizeof(struct entry))
        return CY_ENOMEM;
    struct entry *e = malloc(sizeof *e + klen);
    if (!e)
        return CY_ENOMEM;
    e->val = val;
    e->klen = klen;
    if (klen)
        memcpy(e->key, key, klen);

    bool reuse_tomb = at < m->cap && m->slots[at].e == TOMB;
    if (!reuse_tomb) {
        bool rehashed;
        int rc = make_room(m, &rehashed);
        if (rc) {
            free(e);
            return rc;
        }
        if (rehashed)
            find(m, h, key, klen, &at); /* `at` indexed the old array */
    }

    struct slot *s = &m->slots[at];
    if (reuse_tomb)
        m->tombs--;
    s->hash = h;
    s->e = e;
    m->live++;
    if (old)
        *old = NULL;
    return 0;
}

void *hmap_get(const struct hmap *m, const void *key, size_t klen)
{
    if (m->live == 0)
        return NULL;
    uint64_t h = hash_bytes(key, klen);
    size_t i = find(m, h, key, klen, NULL);
    return i < m->cap ? m->slots[i].e->val : NULL;
}

int hmap_del(struct hmap *m, const void *key, size_t klen, void **old)
{
    if (m->live == 0)
        return CY_ENOTFOUND;
    uint64_t h = hash_bytes(key, klen);
    size_t i = find(m, h, key, klen, NULL);
    if (i >= m->cap)
        return CY_ENOTFOUND;
    struct slot *s = &m->slots[i];
    if (old)
        *old = s->e->val;
    free(s->e);
    s->e = TOMB;
    m->live--;
    m->tombs++;
    return 0;
}

bool hmap_next(const struct hmap *m, size_t *it, const void **key, size_t *klen, void **val)
{
    for (size_t i = *it; i < m->cap; i++) {
        const struct slot *s = &m->slots[i];
        if (!s->e || s->e == TOMB)
            continue;
        *key = s->e->key;
        *klen = s->e->klen;
        *val = s->e->val;
        *it = i + 1;
        return true;
    }
    *it = m->cap;
    return false;
}
