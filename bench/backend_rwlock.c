/*
 * backend_rwlock.c -- presence-bench: the "obvious design" baseline our library must beat.
 *
 * One plain POSIX shm segment (shm_open + mmap) holds a process-shared
 * pthread_rwlock_t (PTHREAD_PROCESS_SHARED, glibc's default reader preference) over
 * fixed-size records:
 *   rooms        name, member count, head of its member list (rooms are never freed:
 *                an empty room stays, as in the library until prune_rooms)
 *   connections  name, user, last_seen (atomic), timeout, head of its presence list
 *   presences    (room, connection) plus an inline state document, linked into both
 *                the room's member list and the connection's list (doubly linked by
 *                32-bit indexes), so here_now is O(members) and leave is O(rooms of
 *                the connection)
 * and three open-addressing indexes (linear probing, backward-shift deletion, 32-bit
 * hash cached in the slot; xxh3 as the library uses): room name -> room, connection
 * name -> connection, user -> connections (duplicates allowed).
 *
 * Honest tuning: every read (here_now, where_now, get_state) takes the read lock and
 * copies its answer out into a per-process buffer reused across calls; join, leave
 * and prune take the write lock; touch takes only the READ lock and stores last_seen
 * (a coarse-clock stamp, as the library takes; skipped when it would not move) with a
 * relaxed atomic store (concurrent touches of one connection are harmless and
 * prune, the only reader of last_seen that matters, holds the write lock). A
 * connection is freed when it leaves its last room. There is no crash recovery: a
 * process killed while holding the lock wedges every other process, one of the
 * things the library is designed not to do.
 *
 * Record references are index + 1 so that 0 means "none".
 */
#include "backend.h"
#include "cleanup.h"
#include "clock.h"
#include "map.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define RW_MAGIC      0x6b636f6c77722d70ull /* "p-rwlock" */
#define RW_NAME_CAP   256                   /* names are 1..255 bytes, NUL-terminated */
#define RW_STATE_CAP  128                   /* inline state document */
#define RW_NONE       0u
#define RW_DEFAULT_MS 60000u
#define RW_EUSER      (-EEXIST) /* connection exists with another user */

/* ---------------------------------------------------------------- layout ---- */

typedef struct rw_room {
    char name[RW_NAME_CAP];
    uint32_t hash;
    uint32_t count;
    uint32_t head; /* first presence in the room */
    uint32_t next_free;
} rw_room_t;

typedef struct rw_conn {
    char name[RW_NAME_CAP];
    char user[RW_NAME_CAP];     /* "" = anonymous */
    _Atomic uint64_t last_seen; /* stamp_ns(): CLOCK_MONOTONIC_COARSE, rounded up */
    uint64_t timeout_ns;
    uint32_t hash, uhash;
    uint32_t head; /* first presence of the connection */
    uint32_t count;
    uint32_t next_free;
    uint32_t used;
} rw_conn_t;

typedef struct rw_pres {
    uint32_t room, conn;
    uint32_t rprev, rnext; /* the room's member list */
    uint32_t cprev, cnext; /* the connection's presence list */
    uint32_t next_free;
    uint32_t state_len;
    char state[RW_STATE_CAP];
} rw_pres_t;

typedef struct rw_slot {
    uint32_t hash;
    uint32_t ref; /* RW_NONE = empty */
} rw_slot_t;

typedef struct rw_pool {
    uint32_t cap;  /* records */
    uint32_t hwm;  /* records ever handed out: 1..hwm have been used */
    uint32_t free; /* free-list head */
    uint32_t used;
} rw_pool_t;

typedef struct rw_hdr {
    uint64_t magic;
    uint64_t size;
    pthread_rwlock_t lock;
    rw_pool_t rooms, conns, pres;
    uint32_t room_mask, conn_mask; /* index sizes - 1; the user index uses conn_mask */
    uint64_t off_rooms, off_conns, off_pres, off_ridx, off_cidx, off_uidx;
} rw_hdr_t;

typedef struct rw_store {
    char name[64];
} rw_store_t;

typedef struct rw_handle {
    rw_hdr_t *hdr;
    size_t size;
    rw_room_t *rooms;
    rw_conn_t *conns;
    rw_pres_t *pres;
    rw_slot_t *ridx, *cidx, *uidx;
    char *buf; /* answers are copied out here */
    size_t buflen, bufcap;
} rw_handle_t;

#define ROOM(h, ref) (&(h)->rooms[(ref) -1])
#define CONN(h, ref) (&(h)->conns[(ref) -1])
#define PRES(h, ref) (&(h)->pres[(ref) -1])

/* ------------------------------------------------------- private helpers ---- */

static uint32_t name_hash(const char *s)
{
    return (uint32_t) XXH3_64bits(s, strlen(s));
}

static int check_name(const char *s, bool optional)
{
    if (s == NULL)
        return optional ? 0 : -EINVAL;
    size_t n = strlen(s);
    return (n == 0 || n >= RW_NAME_CAP) ? -EINVAL : 0;
}

/* Appends @p s and its NUL to the answer buffer. */
static int out_put(rw_handle_t *h, const char *s, size_t n)
{
    if (h->buflen + n + 1 > h->bufcap) {
        size_t cap = h->bufcap ? h->bufcap : 4096;
        while (cap < h->buflen + n + 1)
            cap *= 2;
        char *nb = realloc(h->buf, cap);
        if (nb == NULL)
            return -ENOMEM;
        h->buf = nb;
        h->bufcap = cap;
    }
    memcpy(h->buf + h->buflen, s, n);
    h->buf[h->buflen + n] = '\0';
    h->buflen += n + 1;
    return 0;
}

static uint64_t next_pow2(uint64_t v)
{
    uint64_t p = 16;
    while (p < v)
        p <<= 1;
    return p;
}

static uint32_t pool_take(rw_pool_t *p, void *base, size_t stride, size_t next_off)
{
    uint32_t ref;
    if (p->free != RW_NONE) {
        ref = p->free;
        memcpy(&p->free, (char *) base + (ref - 1) * stride + next_off, sizeof p->free);
    } else if (p->hwm < p->cap) {
        ref = ++p->hwm;
    } else {
        return RW_NONE;
    }
    p->used++;
    return ref;
}

static void pool_give(rw_pool_t *p, void *base, size_t stride, size_t next_off, uint32_t ref)
{
    memcpy((char *) base + (ref - 1) * stride + next_off, &p->free, sizeof p->free);
    p->free = ref;
    p->used--;
}

static bool pool_full(const rw_pool_t *p)
{
    return p->free == RW_NONE && p->hwm >= p->cap;
}

static void idx_insert(rw_slot_t *idx, uint32_t mask, uint32_t hash, uint32_t ref)
{
    uint32_t i = hash & mask;
    while (idx[i].ref != RW_NONE)
        i = (i + 1) & mask;
    idx[i].hash = hash;
    idx[i].ref = ref;
}

/* Removes the slot holding @p ref, shifting later members of its probe run back. */
static void idx_remove(rw_slot_t *idx, uint32_t mask, uint32_t hash, uint32_t ref)
{
    uint32_t i = hash & mask;
    while (idx[i].ref != ref) {
        if (idx[i].ref == RW_NONE)
            return;
        i = (i + 1) & mask;
    }
    for (uint32_t j = i;;) {
        j = (j + 1) & mask;
        if (idx[j].ref == RW_NONE)
            break;
        uint32_t home = idx[j].hash & mask;
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            idx[i] = idx[j];
            i = j;
        }
    }
    idx[i].ref = RW_NONE;
    idx[i].hash = 0;
}

static uint32_t room_find(const rw_handle_t *h, const char *name, uint32_t hash)
{
    uint32_t mask = h->hdr->room_mask;
    for (uint32_t i = hash & mask; h->ridx[i].ref != RW_NONE; i = (i + 1) & mask)
        if (h->ridx[i].hash == hash && strcmp(ROOM(h, h->ridx[i].ref)->name, name) == 0)
            return h->ridx[i].ref;
    return RW_NONE;
}

static uint32_t conn_find(const rw_handle_t *h, const char *name, uint32_t hash)
{
    uint32_t mask = h->hdr->conn_mask;
    for (uint32_t i = hash & mask; h->cidx[i].ref != RW_NONE; i = (i + 1) & mask)
        if (h->cidx[i].hash == hash && strcmp(CONN(h, h->cidx[i].ref)->name, name) == 0)
            return h->cidx[i].ref;
    return RW_NONE;
}

/* Collects up to @p max connections whose uuid is @p uuid: by user, else by name. */
static size_t conns_of_uuid(const rw_handle_t *h, const char *uuid, uint32_t *out, size_t max)
{
    uint32_t hash = name_hash(uuid), mask = h->hdr->conn_mask;
    size_t n = 0;
    for (uint32_t i = hash & mask; h->uidx[i].ref != RW_NONE && n < max; i = (i + 1) & mask)
        if (h->uidx[i].hash == hash && strcmp(CONN(h, h->uidx[i].ref)->user, uuid) == 0)
            out[n++] = h->uidx[i].ref;
    if (n == 0) {
        uint32_t c = conn_find(h, uuid, hash);
        if (c != RW_NONE)
            out[n++] = c;
    }
    return n;
}

static void pres_remove(rw_handle_t *h, uint32_t pref)
{
    rw_pres_t *p = PRES(h, pref);
    rw_room_t *r = ROOM(h, p->room);
    rw_conn_t *c = CONN(h, p->conn);
    if (p->rprev)
        PRES(h, p->rprev)->rnext = p->rnext;
    else
        r->head = p->rnext;
    if (p->rnext)
        PRES(h, p->rnext)->rprev = p->rprev;
    if (p->cprev)
        PRES(h, p->cprev)->cnext = p->cnext;
    else
        c->head = p->cnext;
    if (p->cnext)
        PRES(h, p->cnext)->cprev = p->cprev;
    r->count--;
    c->count--;
    pool_give(&h->hdr->pres, h->pres, sizeof *h->pres, offsetof(rw_pres_t, next_free), pref);
}

static void conn_remove(rw_handle_t *h, uint32_t cref)
{
    rw_conn_t *c = CONN(h, cref);
    idx_remove(h->cidx, h->hdr->conn_mask, c->hash, cref);
    if (c->user[0] != '\0')
        idx_remove(h->uidx, h->hdr->conn_mask, c->uhash, cref);
    c->used = 0;
    c->name[0] = '\0';
    pool_give(&h->hdr->conns, h->conns, sizeof *h->conns, offsetof(rw_conn_t, next_free), cref);
}

/* The presence of connection @p cref in room @p rref, or RW_NONE. */
static uint32_t pres_find(const rw_handle_t *h, uint32_t cref, uint32_t rref)
{
    for (uint32_t p = CONN(h, cref)->head; p != RW_NONE; p = PRES(h, p)->cnext)
        if (PRES(h, p)->room == rref)
            return p;
    return RW_NONE;
}

/* join under the write lock; @p state may be NULL. */
static int join_locked(rw_handle_t *h, const bench_key_t *k, uint64_t timeout_ms, const char *state)
{
    const char *user = k->user ? k->user : "";
    size_t slen = state ? strlen(state) : 0;
    if (slen >= RW_STATE_CAP)
        return -E2BIG;
    uint64_t now = stamp_ns();
    uint32_t ch = name_hash(k->conn), rh = name_hash(k->room);
    uint32_t cref = conn_find(h, k->conn, ch), rref = room_find(h, k->room, rh);
    if (cref != RW_NONE) {
        if (strcmp(CONN(h, cref)->user, user) != 0)
            return RW_EUSER;
        if (rref != RW_NONE) {
            uint32_t p = pres_find(h, cref, rref);
            if (p != RW_NONE) {
                atomic_store_explicit(&CONN(h, cref)->last_seen, now, memory_order_relaxed);
                return 1;
            }
        }
    }
    rw_hdr_t *hd = h->hdr;
    if ((cref == RW_NONE && pool_full(&hd->conns)) || (rref == RW_NONE && pool_full(&hd->rooms)) ||
        pool_full(&hd->pres))
        return -ENOSPC;
    if (rref == RW_NONE) {
        rref = pool_take(&hd->rooms, h->rooms, sizeof *h->rooms, offsetof(rw_room_t, next_free));
        rw_room_t *r = ROOM(h, rref);
        memcpy(r->name, k->room, strlen(k->room) + 1);
        r->hash = rh;
        r->count = 0;
        r->head = RW_NONE;
        idx_insert(h->ridx, hd->room_mask, rh, rref);
    }
    if (cref == RW_NONE) {
        cref = pool_take(&hd->conns, h->conns, sizeof *h->conns, offsetof(rw_conn_t, next_free));
        rw_conn_t *c = CONN(h, cref);
        memcpy(c->name, k->conn, strlen(k->conn) + 1);
        memcpy(c->user, user, strlen(user) + 1);
        c->hash = ch;
        c->uhash = user[0] ? name_hash(user) : 0;
        c->timeout_ns = (timeout_ms ? timeout_ms : RW_DEFAULT_MS) * 1000000u;
        c->head = RW_NONE;
        c->count = 0;
        c->used = 1;
        idx_insert(h->cidx, hd->conn_mask, ch, cref);
        if (user[0])
            idx_insert(h->uidx, hd->conn_mask, c->uhash, cref);
    }
    uint32_t pref = pool_take(&hd->pres, h->pres, sizeof *h->pres, offsetof(rw_pres_t, next_free));
    rw_pres_t *p = PRES(h, pref);
    rw_room_t *r = ROOM(h, rref);
    rw_conn_t *c = CONN(h, cref);
    p->room = rref;
    p->conn = cref;
    p->rprev = RW_NONE;
    p->rnext = r->head;
    if (r->head)
        PRES(h, r->head)->rprev = pref;
    r->head = pref;
    p->cprev = RW_NONE;
    p->cnext = c->head;
    if (c->head)
        PRES(h, c->head)->cprev = pref;
    c->head = pref;
    r->count++;
    c->count++;
    p->state_len = (uint32_t) slen;
    if (slen)
        memcpy(p->state, state, slen + 1);
    atomic_store_explicit(&c->last_seen, now, memory_order_relaxed);
    return 0;
}

/* ------------------------------------------------------------- vtable ---- */

#ifndef MADV_COLLAPSE
#    define MADV_COLLAPSE 25 /* Linux 6.1 */
#endif

static int rw_setup(const bench_store_spec_t *spec, void **store, char *err, size_t errlen)
{
    static unsigned seq;
    rw_store_t *st = calloc(1, sizeof *st);
    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(st->name, sizeof st->name, "/presence-bench-rw-%d-%u", (int) getpid(), seq++);

    uint64_t rooms = spec->rooms + 64, conns = spec->connections + 64;
    uint64_t pres = spec->presences + 64;
    if (rooms > UINT32_MAX / 4 || conns > UINT32_MAX / 4 || pres > UINT32_MAX / 4) {
        snprintf(err, errlen, "rwlock: workload too large");
        free(st);
        return -1;
    }
    uint64_t rmask = next_pow2(rooms * 2) - 1, cmask = next_pow2(conns * 2) - 1;
    uint64_t off = (sizeof(rw_hdr_t) + 63) & ~63ull;
    rw_hdr_t tmp;
    memset(&tmp, 0, sizeof tmp);
#define RW_PLACE(field, bytes)          \
    do {                                \
        tmp.field = off;                \
        off += ((bytes) + 63) & ~63ull; \
    } while (0)
    RW_PLACE(off_rooms, rooms * sizeof(rw_room_t));
    RW_PLACE(off_conns, conns * sizeof(rw_conn_t));
    RW_PLACE(off_pres, pres * sizeof(rw_pres_t));
    RW_PLACE(off_ridx, (rmask + 1) * sizeof(rw_slot_t));
    RW_PLACE(off_cidx, (cmask + 1) * sizeof(rw_slot_t));
    RW_PLACE(off_uidx, (cmask + 1) * sizeof(rw_slot_t));
#undef RW_PLACE

    int fd = shm_open(st->name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "rwlock: shm_open %s: %s", st->name, strerror(errno));
        free(st);
        return -1;
    }
    cleanup_add_shm(st->name);
    void *base = MAP_FAILED;
    /* --huge-pages: reserved up front (as the library does) and moved into 2 MiB pages */
    int sized = spec->huge_pages ? posix_fallocate(fd, 0, (off_t) off)
                                 : (ftruncate(fd, (off_t) off) == 0 ? 0 : errno);
    if (sized == 0)
        base = bench_map_aligned(fd, off);
    else
        errno = sized;
    if (base != MAP_FAILED && spec->huge_pages &&
        madvise(base, off & ~(BENCH_HUGE_PAGE - 1), MADV_COLLAPSE) != 0)
        fprintf(stderr,
                "presence-bench: rwlock: the kernel did not give the segment 2 MiB "
                "pages (%s); running in 4 KiB pages\n",
                strerror(errno));
    if (base == MAP_FAILED) {
        snprintf(err, errlen, "rwlock: sizing %s to %llu bytes: %s", st->name,
                 (unsigned long long) off, strerror(errno));
        close(fd);
        shm_unlink(st->name);
        cleanup_del_shm(st->name);
        free(st);
        return -1;
    }
    close(fd);
    rw_hdr_t *hd = base;
    *hd = tmp;
    hd->size = off;
    hd->rooms.cap = (uint32_t) rooms;
    hd->conns.cap = (uint32_t) conns;
    hd->pres.cap = (uint32_t) pres;
    hd->room_mask = (uint32_t) rmask;
    hd->conn_mask = (uint32_t) cmask;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    int rc = pthread_rwlock_init(&hd->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (rc != 0) {
        snprintf(err, errlen, "rwlock: pthread_rwlock_init: %s", strerror(rc));
        munmap(base, off);
        shm_unlink(st->name);
        cleanup_del_shm(st->name);
        free(st);
        return -1;
    }
    atomic_thread_fence(memory_order_release);
    hd->magic = RW_MAGIC;
    munmap(base, off);
    *store = st;
    return 0;
}

static void rw_teardown(void *store)
{
    rw_store_t *st = store;
    if (st == NULL)
        return;
    shm_unlink(st->name);
    cleanup_del_shm(st->name);
    free(st);
}

static int rw_open(void *store, void **out, char *err, size_t errlen)
{
    rw_store_t *st = store;
    int fd = shm_open(st->name, O_RDWR, 0);
    if (fd < 0) {
        snprintf(err, errlen, "rwlock: shm_open %s: %s", st->name, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || (size_t) sb.st_size < sizeof(rw_hdr_t)) {
        snprintf(err, errlen, "rwlock: %s: truncated segment", st->name);
        close(fd);
        return -1;
    }
    void *base = bench_map_aligned(fd, (size_t) sb.st_size);
    close(fd);
    if (base == MAP_FAILED) {
        snprintf(err, errlen, "rwlock: mmap %s: %s", st->name, strerror(errno));
        return -1;
    }
    rw_hdr_t *hd = base;
    if (hd->magic != RW_MAGIC || hd->size != (uint64_t) sb.st_size) {
        snprintf(err, errlen, "rwlock: %s: not a finished baseline segment", st->name);
        munmap(base, (size_t) sb.st_size);
        return -1;
    }
    rw_handle_t *h = calloc(1, sizeof *h);
    if (h == NULL) {
        munmap(base, (size_t) sb.st_size);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->hdr = hd;
    h->size = (size_t) sb.st_size;
    h->rooms = (rw_room_t *) ((char *) base + hd->off_rooms);
    h->conns = (rw_conn_t *) ((char *) base + hd->off_conns);
    h->pres = (rw_pres_t *) ((char *) base + hd->off_pres);
    h->ridx = (rw_slot_t *) ((char *) base + hd->off_ridx);
    h->cidx = (rw_slot_t *) ((char *) base + hd->off_cidx);
    h->uidx = (rw_slot_t *) ((char *) base + hd->off_uidx);
    *out = h;
    return 0;
}

static void rw_close(void *hv)
{
    rw_handle_t *h = hv;
    if (h == NULL)
        return;
    munmap(h->hdr, h->size);
    free(h->buf);
    free(h);
}

static int rw_join(void *hv, const bench_key_t *k, uint64_t timeout_ms)
{
    rw_handle_t *h = hv;
    if (check_name(k->room, false) || check_name(k->conn, false) || check_name(k->user, true))
        return -EINVAL;
    pthread_rwlock_wrlock(&h->hdr->lock);
    int rc = join_locked(h, k, timeout_ms, NULL);
    pthread_rwlock_unlock(&h->hdr->lock);
    return rc;
}

static int rw_leave(void *hv, const bench_key_t *k)
{
    rw_handle_t *h = hv;
    if (check_name(k->room, false) || check_name(k->conn, false))
        return -EINVAL;
    uint32_t ch = name_hash(k->conn), rh = name_hash(k->room);
    int removed = 0;
    pthread_rwlock_wrlock(&h->hdr->lock);
    uint32_t cref = conn_find(h, k->conn, ch), rref = room_find(h, k->room, rh);
    if (cref != RW_NONE && rref != RW_NONE) {
        uint32_t p = pres_find(h, cref, rref);
        if (p != RW_NONE) {
            pres_remove(h, p);
            removed = 1;
            if (CONN(h, cref)->count == 0)
                conn_remove(h, cref);
        }
    }
    pthread_rwlock_unlock(&h->hdr->lock);
    return removed;
}

static int rw_touch(void *hv, const bench_key_t *k)
{
    rw_handle_t *h = hv;
    if (check_name(k->conn, false))
        return -EINVAL;
    uint32_t ch = name_hash(k->conn);
    uint64_t now = stamp_ns();
    pthread_rwlock_rdlock(&h->hdr->lock);
    uint32_t cref = conn_find(h, k->conn, ch);
    /* as the library: no store when the stamp would not move (same clock tick) */
    if (cref != RW_NONE &&
        atomic_load_explicit(&CONN(h, cref)->last_seen, memory_order_relaxed) < now)
        atomic_store_explicit(&CONN(h, cref)->last_seen, now, memory_order_relaxed);
    pthread_rwlock_unlock(&h->hdr->lock);
    return cref != RW_NONE ? 0 : 1;
}

static int rw_here_now(void *hv, const char *room)
{
    rw_handle_t *h = hv;
    if (check_name(room, false))
        return -EINVAL;
    uint32_t rh = name_hash(room);
    int n = 0, rc = 0;
    h->buflen = 0;
    pthread_rwlock_rdlock(&h->hdr->lock);
    uint32_t rref = room_find(h, room, rh);
    if (rref != RW_NONE) {
        for (uint32_t p = ROOM(h, rref)->head; p != RW_NONE && rc == 0; p = PRES(h, p)->rnext) {
            const rw_conn_t *c = CONN(h, PRES(h, p)->conn);
            const char *uuid = c->user[0] ? c->user : c->name;
            rc = out_put(h, uuid, strlen(uuid));
            n++;
        }
    }
    pthread_rwlock_unlock(&h->hdr->lock);
    return rc < 0 ? rc : n;
}

static int rw_where_now(void *hv, const char *uuid)
{
    rw_handle_t *h = hv;
    if (check_name(uuid, false))
        return -EINVAL;
    uint32_t conns[64];
    int n = 0, rc = 0;
    h->buflen = 0;
    pthread_rwlock_rdlock(&h->hdr->lock);
    size_t nc = conns_of_uuid(h, uuid, conns, 64);
    for (size_t i = 0; i < nc; i++) {
        for (uint32_t p = CONN(h, conns[i])->head; p != RW_NONE && rc == 0; p = PRES(h, p)->cnext) {
            const char *name = ROOM(h, PRES(h, p)->room)->name;
            rc = out_put(h, name, strlen(name));
            n++;
        }
    }
    pthread_rwlock_unlock(&h->hdr->lock);
    return rc < 0 ? rc : n;
}

static int rw_get_state(void *hv, const bench_key_t *k)
{
    rw_handle_t *h = hv;
    const char *uuid = k->user ? k->user : k->conn;
    if (check_name(k->room, false) || check_name(uuid, false))
        return -EINVAL;
    uint32_t rh = name_hash(k->room), conns[64];
    int n = 0, rc = 0;
    h->buflen = 0;
    pthread_rwlock_rdlock(&h->hdr->lock);
    uint32_t rref = room_find(h, k->room, rh);
    size_t nc = rref != RW_NONE ? conns_of_uuid(h, uuid, conns, 64) : 0;
    for (size_t i = 0; i < nc && rc == 0; i++) {
        uint32_t p = pres_find(h, conns[i], rref);
        if (p != RW_NONE) {
            rc = out_put(h, PRES(h, p)->state, PRES(h, p)->state_len);
            n++;
        }
    }
    pthread_rwlock_unlock(&h->hdr->lock);
    return rc < 0 ? rc : n;
}

static int rw_prune(void *hv)
{
    rw_handle_t *h = hv;
    int removed = 0;
    pthread_rwlock_wrlock(&h->hdr->lock);
    uint64_t now = now_ns();
    for (uint32_t cref = 1; cref <= h->hdr->conns.hwm; cref++) {
        rw_conn_t *c = CONN(h, cref);
        if (!c->used)
            continue;
        uint64_t seen = atomic_load_explicit(&c->last_seen, memory_order_relaxed);
        if (seen + c->timeout_ns >= now)
            continue;
        while (c->head != RW_NONE)
            pres_remove(h, c->head);
        conn_remove(h, cref);
        removed++;
    }
    pthread_rwlock_unlock(&h->hdr->lock);
    return removed;
}

static int rw_populate(void *hv, const bench_key_t *keys, size_t n, uint64_t timeout_ms,
                       const char *state)
{
    rw_handle_t *h = hv;
    int rc = 0;
    pthread_rwlock_wrlock(&h->hdr->lock);
    for (size_t i = 0; i < n && rc >= 0; i++) {
        const bench_key_t *k = &keys[i];
        if (check_name(k->room, false) || check_name(k->conn, false) || check_name(k->user, true))
            rc = -EINVAL;
        else
            rc = join_locked(h, k, timeout_ms, state);
    }
    pthread_rwlock_unlock(&h->hdr->lock);
    return rc < 0 ? rc : 0;
}

static const char *rw_errstr(void *hv, int rc)
{
    (void) hv;
    switch (rc) {
    case -EINVAL:
        return "name empty or longer than 255 bytes";
    case -ENOSPC:
        return "store full";
    case RW_EUSER:
        return "connection already joined with a different user";
    case -E2BIG:
        return "state too large";
    default:
        return rc < 0 ? strerror(-rc) : "unexpected result";
    }
}

const bench_backend_t bench_backend_rwlock = {
    .name = "rwlock",
    .description = "process-shared pthread rwlock over a hash table in plain shm",
    .batch = 1,
    .setup = rw_setup,
    .teardown = rw_teardown,
    .open = rw_open,
    .close = rw_close,
    .join = rw_join,
    .leave = rw_leave,
    .touch = rw_touch,
    .here_now = rw_here_now,
    .where_now = rw_where_now,
    .get_state = rw_get_state,
    .prune = rw_prune,
    .populate = rw_populate,
    .errstr = rw_errstr,
};
