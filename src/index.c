/*
 * index.c -- names: validation, hashing (XXH3 with the segment's seed), and the
 * four hash indexes (rooms by name, connections by name, connections by user,
 * groups by name).
 *
 * Each index is an array of u32 bucket heads (record index + 1, 0 = empty);
 * records chain through their own u32 link. Inserts and unlinks take the
 * bucket's stripe lock (lock.c; 256 stripes per index) and publish with
 * a single store, so a chain is always well-formed, even after the holder dies.
 * Lookups take no lock: they walk the chain inside a read section (unlinked
 * records stay readable until their grace period ends) and every index they
 * read is bounds-checked, every walk bounded by the capacity. One exception,
 * pr__conn_find_unpinned (touch by name's first look), walks outside a read
 * section and vouches only for what a record's state word confirms.
 */
#include "internal.h"

#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

/* Whether the 8 bytes of @p w are all printable ASCII (0x20..0x7e). Standard
 * SWAR tests, exact for "is there any such byte": a byte >= 0x80, a byte below
 * 0x20 (valid once no byte has its top bit), a byte equal to 0x7f. */
static bool word_is_printable(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t del = w ^ (0x7f * ones);
    return ((w | ((w - 0x20 * ones) & ~w) | ((del - ones) & ~del)) & highs) == 0;
}

/* A name of 1 to 7 bytes as one word for word_is_printable: its bytes (two
 * overlapping loads from 4 bytes up; the first, middle and last below that),
 * the rest spaces. */
static uint64_t short_name_word(const unsigned char *u, size_t n)
{
    if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, u, 4);
        memcpy(&b, u + n - 4, 4);
        return (uint64_t) a | ((uint64_t) b << 32);
    }
    return 0x2020202020000000ull | u[0] | ((uint64_t) u[n / 2] << 8) | ((uint64_t) u[n - 1] << 16);
}

int pr__validate_name(const char *s, size_t *len)
{
    if (!s)
        return PRESENCE_ENAMELEN;
    size_t n = strnlen(s, PRESENCE_NAME_MAX + 1);
    if (n == 0 || n > PRESENCE_NAME_MAX)
        return PRESENCE_ENAMELEN;
    const unsigned char *u = (const unsigned char *) s;
    /* fast path: printable ASCII, 8 bytes at a time, the last 8 overlapping the
     * words before; a word that is not goes to the byte loop below, which finds
     * what it is */
    size_t i = 0;
    if (n < 8) {
        if (word_is_printable(short_name_word(u, n)))
            i = n;
    } else {
        uint64_t w;
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, u + i, 8);
            if (!word_is_printable(w))
                break;
        }
        if (i < n && i + 8 > n) {
            memcpy(&w, u + n - 8, 8);
            if (word_is_printable(w))
                i = n;
        }
    }
    while (i < n) {
        unsigned c = u[i];
        if (c < 0x20 || c == 0x7f)
            return PRESENCE_ENAMECTRL;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return PRESENCE_ENAMEUTF8;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (u[i + j] & 0xc0) != 0x80)
                return PRESENCE_ENAMEUTF8;
            cp = (cp << 6) | (u[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return PRESENCE_ENAMEUTF8;
        if (cp >= 0x80 && cp <= 0x9f) /* C1 controls */
            return PRESENCE_ENAMECTRL;
        i += k + 1;
    }
    if (len)
        *len = n;
    return 0;
}

int presence_validate_name(const char *name)
{
    return pr__validate_name(name, NULL);
}

uint32_t pr__hash(const struct presence *p, const char *s, size_t n)
{
    return (uint32_t) XXH3_64bits_withSeed(s, n, p->h->hash_seed);
}

static uint32_t nbuckets(const struct presence *p, unsigned table)
{
    switch (table) {
    case PR_T_ROOM:
        return p->h->nb_rooms;
    case PR_T_CONN:
        return p->h->nb_conns;
    case PR_T_USER:
        return p->h->nb_users;
    default:
        return p->h->nb_groups;
    }
}

uint32_t *pr__bucket(const struct presence *p, unsigned table, uint32_t hash)
{
    static const size_t offs[] = {
        offsetof(struct pr_header, off_rb), offsetof(struct pr_header, off_cb),
        offsetof(struct pr_header, off_ub), offsetof(struct pr_header, off_gb)};
    uint64_t off = *(const uint64_t *) (const void *) ((const char *) p->h + offs[table & 3]);
    return (uint32_t *) (void *) (p->base + off) + (hash & (nbuckets(p, table) - 1));
}

pr_lock_t *pr__stripe(const struct presence *p, unsigned table, uint32_t hash)
{
    struct pr_stripe *s = PR_REGION(p, off_stripes, struct pr_stripe);
    uint32_t b = hash & (nbuckets(p, table) - 1);
    return &s[(size_t) (table & 3) * p->h->nstripes + (b & (p->h->nstripes - 1))].lock;
}

/* The chain link of record @idx in @table, or NULL. */
static uint32_t *chain_link(const struct presence *p, unsigned table, uint32_t idx)
{
    switch (table) {
    case PR_T_ROOM: {
        struct pr_room *r = pr__room(p, idx);
        return r ? &r->bucket_next : NULL;
    }
    case PR_T_CONN: {
        struct pr_conn *c = pr__conn(p, idx);
        return c ? &c->bucket_next : NULL;
    }
    case PR_T_USER: {
        struct pr_conn *c = pr__conn(p, idx);
        return c ? &c->user_next : NULL;
    }
    default: {
        struct pr_group *g = pr__group(p, idx);
        return g ? &g->bucket_next : NULL;
    }
    }
}

int64_t pr__room_find(struct presence *p, const char *name, size_t n, uint32_t hash)
{
    uint32_t cur = pr_load(pr__bucket(p, PR_T_ROOM, hash));
    for (uint32_t steps = 0; cur != 0 && steps <= p->h->cap_rooms; steps++) {
        struct pr_room *r = pr__room(p, cur - 1);
        if (!r)
            return PRESENCE_ECORRUPT;
        if (r->name_hash == hash && PR_ST_STATE(pr_load(&r->h.state)) == PR_LIVE &&
            pr__blob_eq(p, r->name_blob, r->name_len, name, n))
            return cur - 1;
        cur = pr_load(&r->bucket_next);
    }
    return -ENOENT;
}

/* Whether the @n bytes at @a and @b are equal, for the short names kept inline
 * in connection records: overlapping word compares, no call. */
static inline bool equal_short(const char *a, const char *b, size_t n)
{
    if (n >= 8) {
        uint64_t x, y;
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y)
                return false;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        uint32_t x0, y0, x1, y1;
        memcpy(&x0, a, 4);
        memcpy(&y0, b, 4);
        memcpy(&x1, a + n - 4, 4);
        memcpy(&y1, b + n - 4, 4);
        return x0 == y0 && x1 == y1;
    }
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

int64_t pr__conn_find(struct presence *p, const char *name, size_t n, uint32_t hash)
{
    uint32_t cur = pr_load(pr__bucket(p, PR_T_CONN, hash));
    for (uint32_t steps = 0; cur != 0 && steps <= p->h->cap_conns; steps++) {
        struct pr_conn *c = pr__conn(p, cur - 1);
        if (!c)
            return PRESENCE_ECORRUPT;
        if (c->name_hash == hash && c->name_len == n &&
            PR_ST_STATE(pr_load(&c->h.state)) == PR_LIVE &&
            (n <= PR_CONN_INLINE ? equal_short(c->name_inline, name, n)
                                 : pr__blob_eq(p, c->name_blob, c->name_len, name, n)))
            return cur - 1;
        cur = pr_load(&c->bucket_next);
    }
    return -ENOENT;
}

/* Without a read section the records the walk meets may be freed and reused
 * under it. Records are never unmapped and every index is bounds-checked, so
 * that is harmless, but the walk may then miss (a reused record's link leads
 * into another chain) or go round a loop: it gives up after a few steps, and
 * everything but a find goes back to the caller as -EAGAIN. A find is a record
 * that was LIVE with this name at some moment: its state word is read first
 * (a reuse bumps the generation in it before rewriting the name: alloc.c), and
 * the caller, having used the record, reads the word again; the same word means
 * the same connection throughout, as for a touch by handle. */
#define PR_UNPINNED_STEPS 8u
PR_OPTIMISTIC int64_t pr__conn_find_unpinned(struct presence *p, const char *name, size_t n,
                                             uint32_t hash, uint64_t *state)
{
    if (n > PR_CONN_INLINE)
        return -EAGAIN;
    uint32_t cur = pr_load(pr__bucket(p, PR_T_CONN, hash));
    for (uint32_t steps = 0; cur != 0 && steps < PR_UNPINNED_STEPS; steps++) {
        struct pr_conn *c = pr__conn(p, cur - 1);
        if (!c)
            return -EAGAIN;
        uint64_t st = pr_load(&c->h.state);
        pr_smp_rmb(); /* the state word before the name it vouches for */
        if (PR_ST_STATE(st) == PR_LIVE && c->name_hash == hash && c->name_len == n &&
            equal_short(c->name_inline, name, n)) {
            *state = st;
            return cur - 1;
        }
        cur = pr_load(&c->bucket_next);
    }
    return -EAGAIN;
}

int64_t pr__group_find(struct presence *p, const char *name, size_t n, uint32_t hash)
{
    uint32_t cur = pr_load(pr__bucket(p, PR_T_GROUP, hash));
    for (uint32_t steps = 0; cur != 0 && steps <= p->h->cap_groups; steps++) {
        struct pr_group *g = pr__group(p, cur - 1);
        if (!g)
            return PRESENCE_ECORRUPT;
        if (g->name_hash == hash && PR_ST_STATE(pr_load(&g->h.state)) == PR_LIVE &&
            pr__blob_eq(p, g->name_blob, g->name_len, name, n))
            return cur - 1;
        cur = pr_load(&g->bucket_next);
    }
    return -ENOENT;
}

int pr__stripe_lock(struct presence *p, unsigned table, uint32_t hash)
{
    uint32_t b = hash & (nbuckets(p, table) - 1);
    uint32_t id = (table & 3) * p->h->nstripes + (b & (p->h->nstripes - 1));
    return pr__lock(p, pr__stripe(p, table, hash), pr__stripe_repair, id);
}

/* Unlinks @idx from its chain. Caller holds the stripe lock. */
void pr__chain_unlink(struct presence *p, unsigned table, uint32_t hash, uint32_t idx)
{
    uint32_t *slot = pr__bucket(p, table, hash);
    uint32_t cap = table == PR_T_ROOM    ? p->h->cap_rooms
                   : table == PR_T_GROUP ? p->h->cap_groups
                                         : p->h->cap_conns;
    for (uint32_t steps = 0; steps <= cap; steps++) {
        uint32_t cur = pr_load(slot);
        if (cur == 0)
            return;
        uint32_t *next = chain_link(p, table, cur - 1);
        if (!next)
            return;
        if (cur - 1 == idx) {
            pr_store(slot, pr_load(next));
            return;
        }
        slot = next;
    }
}

/* Insert at the head. Caller holds the stripe lock; the record is complete. */
void pr__chain_insert(struct presence *p, unsigned table, uint32_t hash, uint32_t idx)
{
    uint32_t *b = pr__bucket(p, table, hash);
    pr_store(chain_link(p, table, idx), pr_load(b));
    pr_store(b, idx + 1); /* publish */
}

/* Stripe repair after its holder died: unlink records that are not LIVE from
 * every chain of the stripe. Inserts publish with one store, so chains are
 * well-formed; only half-finished deletions can be left. */
void pr__stripe_repair(struct presence *p, uint32_t stripe_id)
{
    unsigned table = stripe_id / p->h->nstripes;
    uint32_t s = stripe_id % p->h->nstripes;
    uint32_t nb = nbuckets(p, table);
    for (uint32_t b = s; b < nb; b += p->h->nstripes) {
        uint32_t *slot = pr__bucket(p, table, b);
        for (uint32_t steps = 0; steps <= PR_MAX_RECORDS; steps++) {
            uint32_t cur = pr_load(slot);
            if (cur == 0)
                break;
            uint32_t *next = chain_link(p, table, cur - 1);
            if (!next) {
                pr_store(slot, 0u); /* cut a corrupted chain */
                break;
            }
            struct pr_rec *r = pr__rec(p,
                                       table == PR_T_ROOM    ? PR_K_ROOM
                                       : table == PR_T_GROUP ? PR_K_GROUP
                                                             : PR_K_CONN,
                                       cur - 1);
            if (PR_ST_STATE(pr_load(&r->state)) != PR_LIVE)
                pr_store(slot, pr_load(next));
            else
                slot = next;
        }
    }
}
