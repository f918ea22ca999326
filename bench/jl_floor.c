/*
 * jl_floor.c -- presence-bench: the join_leave_floor row (jl_floor.h).
 *
 * A join + leave pair of a new connection, done with the least this library's
 * contract (DESIGN.md) asks of any implementation, in one region all workers share
 * as they share a segment:
 *   - the names' lengths and hashes (XXH3, as the library), the join's three, the
 *     leave's two: a leave is a call of its own and finds its connection by name;
 *   - lock words for writers (no global lock): an index stripe of the connection
 *     table, one of the user table, the room; taken by CAS, released by a store;
 *   - the connection linked into and out of a chained hash index by name and one by
 *     user (where_now by user is O(rooms), never O(registry));
 *   - the presence linked into and out of its room's list, the occupancy counted;
 *   - two events in one global order: a fetch-add on one shared tail, 64-byte
 *     entries stamped "being written" then committed first entry last, room,
 *     connection and user names and the occupancy in them, a CLOCK_REALTIME stamp,
 *     then a full fence and a look at a waiter count (the wake-up check);
 *   - last_seen from the coarse clock.
 * What it leaves out, and the library does: validating names, allocating records
 * and names in shared memory (each worker cycles through 64 records of its own, no
 * atomics), read sections and reclamation after a grace period, the connection's
 * own lock, the member arrays, state, bound connections, crash recovery, and rooms
 * created on first use (a room is the slot its name hashes to in a table four times
 * the rooms' number; two names on one slot share it, which only adds contention).
 * Names are compared in the record, the first 48 bytes (the harness's are shorter).
 * So the row is a floor: no implementation of DESIGN.md's architecture (one event
 * ring in the segment, in one global order; locks for writers) does less per pair.
 */
#include "jl_floor.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define JLF_LINE     64u
#define JLF_OWN      64u  /* records per worker, used in turn */
#define JLF_STRIPES  256u /* per table, as the library's */
#define JLF_INLINE   48u  /* name bytes kept in a connection record */
#define JLF_DATA     56u  /* data bytes of a ring entry (64 with its stamp) */
#define JLF_WRITING  (1ull << 63)
#define JLF_START    (1ull << 62)
#define JLF_NAME_MAX 255u

enum { JLF_EV_JOIN = 1, JLF_EV_LEAVE = 2 };

struct jlf_lock {
    uint32_t word;
    uint8_t pad[JLF_LINE - 4];
};

struct jlf_room {
    uint32_t lock, count, head; /* head: first presence, index + 1 */
    uint8_t pad[JLF_LINE - 12];
};

struct jlf_conn { /* 128 bytes, as the library's */
    uint64_t state, last_seen;
    uint32_t hash, user_hash, next, user_next, pres;
    uint16_t len, user_len;
    char name[JLF_INLINE];
    uint8_t pad[128 - 40 - JLF_INLINE];
};
_Static_assert(sizeof(struct jlf_conn) == 128, "a connection record is 128 bytes");

struct jlf_pres { /* 64 bytes, as the library's */
    uint32_t room, conn, prev, next;
    uint8_t pad[JLF_LINE - 16];
};
_Static_assert(sizeof(struct jlf_pres) == 64, "a presence record is 64 bytes");

struct jlf_entry {
    uint64_t stamp;
    uint8_t data[JLF_DATA];
};

struct jlf_event_hdr { /* 32 bytes, as the library's ring record header */
    uint64_t time_ns;
    uint32_t occupancy;
    uint16_t type, reason, nentries, room_len, conn_len, user_len;
    uint8_t pad[8];
};
_Static_assert(sizeof(struct jlf_event_hdr) == 32, "an event header is 32 bytes");

struct jlf_shared {
    _Alignas(JLF_LINE) uint64_t tail;
    _Alignas(JLF_LINE) uint32_t waiters; /* never set here: the check is what counts */
    _Alignas(JLF_LINE) struct jlf_lock stripes[2][JLF_STRIPES];
};

struct jl_floor {
    struct jlf_shared *sh;
    struct jlf_room *rooms;
    uint32_t *buckets[2]; /* by connection name, by user */
    struct jlf_conn *conns;
    struct jlf_pres *pres;
    struct jlf_entry *ring;
    uint32_t room_mask, bucket_mask, ring_mask;
    unsigned workers; /* records are kept for this many */
    uint32_t cursor;  /* this process's next record of its own */
    void *base;
    size_t size;
};

static size_t pow2_at_least(size_t n)
{
    size_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static size_t line_up(size_t n)
{
    return (n + JLF_LINE - 1) & ~(size_t) (JLF_LINE - 1);
}

jl_floor_t *jl_floor_create(size_t conns, uint32_t rooms, unsigned workers, uint32_t ring_entries)
{
    if (workers == 0 || ring_entries < 64 || (ring_entries & (ring_entries - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    jl_floor_t *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    size_t nrooms = pow2_at_least(4 * (size_t) (rooms ? rooms : 1));
    size_t nbuckets = pow2_at_least(2 * (conns + (size_t) workers * JLF_OWN));
    size_t nrec = (size_t) workers * JLF_OWN;
    size_t off_rooms = line_up(sizeof(struct jlf_shared));
    size_t off_buckets = off_rooms + nrooms * sizeof(struct jlf_room);
    size_t off_conns = line_up(off_buckets + 2 * nbuckets * sizeof(uint32_t));
    size_t off_pres = off_conns + nrec * sizeof(struct jlf_conn);
    size_t off_ring = off_pres + nrec * sizeof(struct jlf_pres);
    f->size = off_ring + (size_t) ring_entries * sizeof(struct jlf_entry);
    f->base = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    if (f->base == MAP_FAILED) {
        int e = errno;
        free(f);
        errno = e;
        return NULL;
    }
    char *b = f->base;
    f->sh = (struct jlf_shared *) (void *) b;
    f->rooms = (struct jlf_room *) (void *) (b + off_rooms);
    f->buckets[0] = (uint32_t *) (void *) (b + off_buckets);
    f->buckets[1] = f->buckets[0] + nbuckets;
    f->conns = (struct jlf_conn *) (void *) (b + off_conns);
    f->pres = (struct jlf_pres *) (void *) (b + off_pres);
    f->ring = (struct jlf_entry *) (void *) (b + off_ring);
    f->room_mask = (uint32_t) (nrooms - 1);
    f->bucket_mask = (uint32_t) (nbuckets - 1);
    f->ring_mask = ring_entries - 1;
    f->workers = workers;
    return f;
}

uint64_t jl_floor_tail(const jl_floor_t *f)
{
    return __atomic_load_n(&f->sh->tail, __ATOMIC_ACQUIRE);
}

int jl_floor_event(const jl_floor_t *f, uint64_t pos, jl_floor_event_t *out)
{
    const struct jlf_entry *first = &f->ring[pos & f->ring_mask];
    if (__atomic_load_n(&first->stamp, __ATOMIC_ACQUIRE) != ((pos + 1) | JLF_START))
        return -1;
    struct jlf_event_hdr h;
    memcpy(&h, first->data, sizeof h);
    size_t total = sizeof h + (size_t) h.room_len + h.conn_len + h.user_len;
    if (h.nentries == 0 || h.nentries != (total + JLF_DATA - 1) / JLF_DATA ||
        h.room_len > JLF_NAME_MAX || h.conn_len > JLF_NAME_MAX || h.user_len > JLF_NAME_MAX)
        return -1;
    uint8_t rec[sizeof(struct jlf_event_hdr) + 3 * JLF_NAME_MAX];
    for (uint32_t i = 0; i < h.nentries; i++) {
        const struct jlf_entry *e = &f->ring[(pos + i) & f->ring_mask];
        if (i > 0 && __atomic_load_n(&e->stamp, __ATOMIC_ACQUIRE) != pos + i + 1)
            return -1;
        size_t at = (size_t) i * JLF_DATA, n = total - at < JLF_DATA ? total - at : JLF_DATA;
        memcpy(rec + at, e->data, n);
    }
    out->time_ns = h.time_ns;
    out->occupancy = h.occupancy;
    out->type = h.type;
    const uint8_t *at = rec + sizeof h;
    memcpy(out->room, at, h.room_len);
    out->room[h.room_len] = '\0';
    memcpy(out->conn, at + h.room_len, h.conn_len);
    out->conn[h.conn_len] = '\0';
    memcpy(out->user, at + h.room_len + h.conn_len, h.user_len);
    out->user[h.user_len] = '\0';
    return h.nentries;
}

void jl_floor_destroy(jl_floor_t *f)
{
    if (f == NULL)
        return;
    munmap(f->base, f->size);
    free(f);
}

static uint32_t name_hash(const char *s, size_t n)
{
    return (uint32_t) XXH3_64bits(s, n);
}

static void lock_take(uint32_t *word, uint32_t me)
{
    for (;;) {
        uint32_t free_word = 0;
        if (__atomic_load_n(word, __ATOMIC_RELAXED) == 0 &&
            __atomic_compare_exchange_n(word, &free_word, me, false, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            return;
        __builtin_ia32_pause();
    }
}

static void lock_drop(uint32_t *word)
{
    __atomic_store_n(word, 0u, __ATOMIC_RELEASE);
}

/* A full barrier as the library's ring takes it: a locked add to the stack (what
 * Linux's smp_mb() does on x86; cheaper than mfence). */
static void full_fence(void)
{
#if defined(__x86_64__)
    __asm__ volatile("lock; addl $0,-8(%%rsp)" ::: "memory", "cc");
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

/* Appends one event: claim, stamp "being written", copy, commit (first entry last),
 * fence, look for waiters. */
static void emit(jl_floor_t *f, uint16_t type, uint32_t me, const char *room, size_t rl,
                 const char *conn, size_t cl, const char *user, size_t ul, uint32_t occupancy)
{
    uint8_t rec[sizeof(struct jlf_event_hdr) + 3 * JLF_NAME_MAX];
    struct jlf_event_hdr h = {0};
    size_t total = sizeof h + rl + cl + ul;
    uint32_t k = (uint32_t) ((total + JLF_DATA - 1) / JLF_DATA);
    h.time_ns = clock_ns(CLOCK_REALTIME);
    h.occupancy = occupancy;
    h.type = type;
    h.reason = type == JLF_EV_LEAVE ? type : 0;
    h.nentries = (uint16_t) k;
    h.room_len = (uint16_t) rl;
    h.conn_len = (uint16_t) cl;
    h.user_len = (uint16_t) ul;
    memcpy(rec, &h, sizeof h);
    memcpy(rec + sizeof h, room, rl);
    memcpy(rec + sizeof h + rl, conn, cl);
    if (ul)
        memcpy(rec + sizeof h + rl + cl, user, ul);
    uint64_t pos = __atomic_fetch_add(&f->sh->tail, k, __ATOMIC_SEQ_CST);
    for (uint32_t i = 0; i < k; i++)
        __atomic_store_n(&f->ring[(pos + i) & f->ring_mask].stamp, JLF_WRITING | me,
                         __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    for (uint32_t i = 0; i < k; i++) {
        size_t at = (size_t) i * JLF_DATA, n = total - at < JLF_DATA ? total - at : JLF_DATA;
        memcpy(f->ring[(pos + i) & f->ring_mask].data, rec + at, n);
    }
    for (uint32_t i = k; i-- > 0;)
        __atomic_store_n(&f->ring[(pos + i) & f->ring_mask].stamp,
                         (pos + i + 1) | (i == 0 ? JLF_START : 0), __ATOMIC_RELEASE);
    full_fence();
    (void) __atomic_load_n(&f->sh->waiters, __ATOMIC_RELAXED); /* nobody waits here */
}

/* Record @c's link in table @t's chains (0: by name, 1: by user). */
static uint32_t *chain_next(struct jlf_conn *c, unsigned t)
{
    return t == 0 ? &c->next : &c->user_next;
}

/* Links record @idx (index + 1 in the chains) into table @t's chain of @hash. */
static void chain_insert(jl_floor_t *f, unsigned t, uint32_t hash, uint32_t idx, uint32_t me)
{
    struct jlf_conn *c = &f->conns[idx];
    uint32_t *bucket = &f->buckets[t][hash & f->bucket_mask];
    uint32_t *stripe = &f->sh->stripes[t][hash & (JLF_STRIPES - 1)].word;
    lock_take(stripe, me);
    *chain_next(c, t) = *bucket;
    __atomic_store_n(bucket, idx + 1, __ATOMIC_RELEASE);
    lock_drop(stripe);
}

static void chain_unlink(jl_floor_t *f, unsigned t, uint32_t hash, uint32_t idx, uint32_t me)
{
    uint32_t *link = &f->buckets[t][hash & f->bucket_mask];
    uint32_t *stripe = &f->sh->stripes[t][hash & (JLF_STRIPES - 1)].word;
    lock_take(stripe, me);
    while (*link != 0 && *link != idx + 1) {
        link = chain_next(&f->conns[*link - 1], t);
    }
    if (*link == idx + 1) {
        __atomic_store_n(link, *chain_next(&f->conns[idx], t), __ATOMIC_RELEASE);
    }
    lock_drop(stripe);
}

static size_t name_len(const char *s)
{
    return s != NULL ? strnlen(s, JLF_NAME_MAX + 1) : 0;
}

int jl_floor_pair(jl_floor_t *f, unsigned worker, const bench_key_t *k)
{
    if (worker >= f->workers)
        return -1;
    uint32_t me = worker + 1;
    /* the join */
    size_t rl = name_len(k->room), cl = name_len(k->conn), ul = name_len(k->user);
    uint32_t rh = name_hash(k->room, rl), ch = name_hash(k->conn, cl);
    uint32_t uh = ul ? name_hash(k->user, ul) : 0;
    uint32_t idx = worker * JLF_OWN + f->cursor++ % JLF_OWN;
    struct jlf_conn *c = &f->conns[idx];
    struct jlf_pres *q = &f->pres[idx];
    c->hash = ch;
    c->user_hash = uh;
    c->len = (uint16_t) cl;
    c->user_len = (uint16_t) ul;
    memcpy(c->name, k->conn, cl < JLF_INLINE ? cl : JLF_INLINE);
    c->last_seen = clock_ns(CLOCK_MONOTONIC_COARSE);
    c->pres = 0;
    __atomic_store_n(&c->state, 1u, __ATOMIC_RELEASE);
    chain_insert(f, 0, ch, idx, me);
    if (ul)
        chain_insert(f, 1, uh, idx, me);
    uint32_t ri = rh & f->room_mask;
    struct jlf_room *r = &f->rooms[ri];
    lock_take(&r->lock, me);
    q->room = ri;
    q->conn = idx;
    q->prev = 0;
    q->next = r->head;
    if (r->head != 0)
        f->pres[r->head - 1].prev = idx + 1;
    __atomic_store_n(&r->head, idx + 1, __ATOMIC_RELEASE);
    uint32_t occupancy = ++r->count;
    c->pres = idx + 1;
    lock_drop(&r->lock);
    emit(f, JLF_EV_JOIN, me, k->room, rl, k->conn, cl, k->user, ul, occupancy);

    /* the leave: a call of its own, which finds the connection by name */
    rl = name_len(k->room);
    cl = name_len(k->conn);
    rh = name_hash(k->room, rl);
    ch = name_hash(k->conn, cl);
    uint32_t cur = __atomic_load_n(&f->buckets[0][ch & f->bucket_mask], __ATOMIC_ACQUIRE);
    while (cur != 0) {
        const struct jlf_conn *x = &f->conns[cur - 1];
        if (x->hash == ch && x->len == cl &&
            memcmp(x->name, k->conn, cl < JLF_INLINE ? cl : JLF_INLINE) == 0)
            break;
        cur = __atomic_load_n(&x->next, __ATOMIC_ACQUIRE);
    }
    if (cur != idx + 1 || c->pres == 0)
        return -1;
    q = &f->pres[c->pres - 1];
    r = &f->rooms[rh & f->room_mask];
    lock_take(&r->lock, me);
    if (q->prev != 0)
        f->pres[q->prev - 1].next = q->next;
    else
        __atomic_store_n(&r->head, q->next, __ATOMIC_RELEASE);
    if (q->next != 0)
        f->pres[q->next - 1].prev = q->prev;
    occupancy = --r->count;
    c->pres = 0;
    lock_drop(&r->lock);
    chain_unlink(f, 0, c->hash, idx, me);
    if (c->user_len)
        chain_unlink(f, 1, c->user_hash, idx, me);
    __atomic_store_n(&c->state, 2u, __ATOMIC_RELEASE);
    emit(f, JLF_EV_LEAVE, me, k->room, rl, k->conn, cl, k->user, c->user_len, occupancy);
    return 0;
}
