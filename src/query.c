/*
 * query.c -- the read side: here_now, where_now, users, anonymous_count,
 * occupancy, rooms, get_state. None of them takes a lock or waits: each walks
 * lists inside a read section (epoch.c), skips records that are not LIVE,
 * bounds every walk by the capacity and every index by its array.
 *
 * A room's member list is read under its seqlock version: a walk that saw the
 * version even and unchanged is an exact snapshot; if writers kept changing
 * the room, the last walk is returned, still self-consistent (the occupancy
 * reported is the number of occupants seen).
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* here_now asks for the names of the occupant this many ahead of the copy. */
#define PR_HN_AHEAD 8

static char *dup_blob(const struct presence *p, uint32_t ref, uint32_t len)
{
    uint32_t n;
    const char *d = pr__blob_get(p, ref, &n);
    if (!d || n != len)
        return NULL;
    char *s = malloc((size_t) n + 1);
    if (s) {
        memcpy(s, d, n);
        s[n] = '\0';
    }
    return s;
}

static char *dup_blob_any(const struct presence *p, uint32_t ref)
{
    uint32_t n;
    const char *d = pr__blob_get(p, ref, &n);
    if (!d)
        return NULL;
    char *s = malloc((size_t) n + 1);
    if (s) {
        memcpy(s, d, n);
        s[n] = '\0';
    }
    return s;
}

void presence_strlist_free(presence_strlist_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    free(l);
}

static int strlist_push(presence_strlist_t *l, char *s, size_t *cap)
{
    if (!s)
        return -ENOMEM;
    if (l->count == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        char **ni = realloc(l->items, nc * sizeof *ni);
        if (!ni) {
            free(s);
            return -ENOMEM;
        }
        l->items = ni;
        *cap = nc;
    }
    l->items[l->count++] = s;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Sorts and removes duplicates. */
static void strlist_unique(presence_strlist_t *l)
{
    if (l->count < 2)
        return;
    qsort(l->items, l->count, sizeof *l->items, cmp_str);
    size_t w = 1;
    for (size_t i = 1; i < l->count; i++) {
        if (strcmp(l->items[i], l->items[w - 1]) == 0)
            free(l->items[i]);
        else
            l->items[w++] = l->items[i];
    }
    l->count = w;
}

static int64_t room_lookup(struct presence *p, const char *room)
{
    size_t n;
    int rc = pr__validate_name(room, &n);
    if (rc)
        return rc;
    return pr__room_find(p, room, n, pr__hash(p, room, n));
}

/* Expands rooms and groups into distinct room names (strings point into the
 * caller's arrays or are owned by the returned list's second half). */
int pr__expand_rooms(struct presence *p, const char *const *rooms, size_t nrooms,
                     const char *const *groups, size_t ngroups, char ***out, size_t *nout);

static int group_rooms(struct presence *p, const char *group, presence_strlist_t *l, size_t *cap);

/* ---- group expansion ------------------------------------------------------ */

static int group_rooms(struct presence *p, const char *group, presence_strlist_t *l, size_t *cap)
{
    size_t n;
    int rc = pr__validate_name(group, &n);
    if (rc)
        return rc;
    int64_t gi = pr__group_find(p, group, n, pr__hash(p, group, n));
    if (gi < 0)
        return gi == -ENOENT ? PRESENCE_ENOGROUP : (int) gi;
    struct pr_group *g = pr__group(p, (uint32_t) gi);
    uint32_t cur = pr_load(&g->members);
    for (uint32_t s = 0; cur && s <= p->h->cap_gmembers; s++) {
        struct pr_gmember *m = pr__gmember(p, cur - 1);
        if (!m)
            return PRESENCE_ECORRUPT;
        if (PR_ST_STATE(pr_load(&m->h.state)) == PR_LIVE && m->group == (uint32_t) gi) {
            rc = strlist_push(l, dup_blob(p, m->name_blob, m->name_len), cap);
            if (rc)
                return rc;
        }
        cur = pr_load(&m->next);
    }
    return 0;
}

int presence_group_list(presence_t *p, const char *group, presence_strlist_t **out)
{
    presence_strlist_t *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    size_t cap = 0;
    struct pr_tls *t = pr__enter(p);
    int rc = t ? group_rooms(p, group, l, &cap) : -EUSERS;
    if (t)
        pr__exit(p, t);
    if (rc) {
        presence_strlist_free(l);
        return rc;
    }
    strlist_unique(l);
    *out = l;
    return 0;
}

/* Names are validated; the result is a malloc'd array of malloc'd strings in
 * request order without duplicates. */
static int expand(struct presence *p, const char *const *rooms, size_t nrooms,
                  const char *const *groups, size_t ngroups, presence_strlist_t *l)
{
    size_t cap = 0;
    int rc = 0;
    if ((nrooms && !rooms) || (ngroups && !groups))
        return -EINVAL;
    for (size_t i = 0; i < nrooms && !rc; i++) {
        rc = pr__validate_name(rooms[i], NULL);
        if (!rc)
            rc = strlist_push(l, strdup(rooms[i]), &cap);
    }
    struct pr_tls *t = (ngroups && !rc) ? pr__enter(p) : NULL;
    if (ngroups && !rc && !t)
        rc = -EUSERS;
    for (size_t i = 0; i < ngroups && !rc; i++)
        rc = group_rooms(p, groups[i], l, &cap);
    if (t)
        pr__exit(p, t);
    if (rc)
        return rc;
    /* drop duplicates, keep first occurrence order */
    size_t w = 0;
    for (size_t i = 0; i < l->count; i++) {
        bool dup = false;
        for (size_t j = 0; j < w && !dup; j++)
            dup = strcmp(l->items[j], l->items[i]) == 0;
        if (dup)
            free(l->items[i]);
        else
            l->items[w++] = l->items[i];
    }
    l->count = w;
    return 0;
}

int pr__expand_rooms(struct presence *p, const char *const *rooms, size_t nrooms,
                     const char *const *groups, size_t ngroups, char ***out, size_t *nout)
{
    presence_strlist_t l = {0, NULL};
    int rc = expand(p, rooms, nrooms, groups, ngroups, &l);
    if (rc) {
        for (size_t i = 0; i < l.count; i++)
            free(l.items[i]);
        free(l.items);
        return rc;
    }
    /* One allocation: pointer array followed by the strings. */
    size_t bytes = l.count * sizeof(char *);
    for (size_t i = 0; i < l.count; i++)
        bytes += strlen(l.items[i]) + 1;
    char **arr = malloc(bytes ? bytes : 1);
    if (!arr) {
        for (size_t i = 0; i < l.count; i++)
            free(l.items[i]);
        free(l.items);
        return -ENOMEM;
    }
    char *s = (char *) (arr + l.count);
    for (size_t i = 0; i < l.count; i++) {
        size_t n = strlen(l.items[i]) + 1;
        memcpy(s, l.items[i], n);
        arr[i] = s;
        s += n;
        free(l.items[i]);
    }
    free(l.items);
    *out = arr;
    *nout = l.count;
    return 0;
}

/* ---- here_now --------------------------------------------------------------- */

/* Per-thread scratch for a room walk: the blob refs of the occupants listed,
 * reused across calls so that a here_now costs one allocation per room. */
struct occ_ref {
    uint32_t conn, uuid, state; /* blob refs; uuid 0: anonymous, state 0: none */
    uint16_t conn_len, uuid_len;
};
struct walk_scratch {
    struct occ_ref *refs;
    size_t nrefs, caprefs;
    size_t bytes; /* the names' bytes with their NULs (states not included) */
};
static PR_TLS struct walk_scratch scratch;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

/* A room's occupant block (the array and its strings) is kept, once freed,
 * for the thread's next here_now, up to PR_SPARE_MAX bytes: a block of a few
 * KiB freed next to the heap's top made glibc consolidate its fast bins on
 * every call (6% of a here_now(100) under load). Blocks carry their size. */
#define PR_SPARE_MAX 65536u
struct occ_block {
    size_t cap, pad; /* 16 bytes: the array after it stays aligned */
};
static PR_TLS struct occ_block *spare_block;
static PR_TLS bool thread_registered;

/* Frees the exiting thread's scratch and spare block (a key destructor runs
 * in that thread). */
static void scratch_free(void *unused)
{
    (void) unused;
    free(scratch.refs);
    memset(&scratch, 0, sizeof scratch);
    free(spare_block);
    spare_block = NULL;
}

static void scratch_key_init(void)
{
    (void) pthread_key_create(&scratch_key, scratch_free);
}

/* Has this thread's scratch and spare freed when it exits. */
static void thread_register(void)
{
    if (thread_registered)
        return;
    pthread_once(&scratch_once, scratch_key_init);
    thread_registered = pthread_setspecific(scratch_key, &scratch) == 0;
}

static void *occ_block_get(size_t bytes)
{
    struct occ_block *b = spare_block;
    if (b && b->cap >= bytes) {
        spare_block = NULL;
        return b + 1;
    }
    b = malloc(sizeof *b + bytes);
    if (!b)
        return NULL;
    b->cap = bytes;
    return b + 1;
}

static void occ_block_put(void *block)
{
    struct occ_block *b = block ? (struct occ_block *) block - 1 : NULL;
    if (!b || b->cap > PR_SPARE_MAX || (spare_block && spare_block->cap >= b->cap)) {
        free(b);
        return;
    }
    thread_register();
    free(spare_block); /* the larger one stays */
    spare_block = b;
}

void presence_here_now_free(presence_here_now_t *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->nrooms; i++)
        occ_block_put(res->rooms[i].occupants); /* one block: the array and its strings */
    free(res);                                  /* one block: itself, the rooms, their names */
}

static int scratch_grow(void)
{
    thread_register(); /* the thread's first: free it when the thread exits */
    size_t nc = scratch.caprefs ? scratch.caprefs * 2 : 128;
    struct occ_ref *nr = realloc(scratch.refs, nc * sizeof *nr);
    if (!nr)
        return -ENOMEM;
    scratch.refs = nr;
    scratch.caprefs = nc;
    return 0;
}

/* Records one occupant (its names' refs and lengths, its state's ref) in @o;
 * returns the bytes its names take in the answer, NULs included. Without
 * @conns (PRESENCE_UUIDS_ONLY) a user's connection id is left out (conn 0). */
static inline size_t occ_set(struct occ_ref *o, bool conns, uint32_t conn, uint32_t cl,
                             uint32_t user, uint32_t ul, uint32_t state)
{
    if (ul && !conns)
        conn = cl = 0;
    o->conn = conn;
    o->conn_len = (uint16_t) cl;
    o->uuid = ul ? user : 0; /* anonymous: the connection id is its uuid */
    o->uuid_len = (uint16_t) ul;
    o->state = state;
    return (conn ? cl + 1 : 0) + (ul ? ul + 1 : 0);
}

/* Room @ri's member array (members.c), read under the caller's seqlock: the
 * occupancy and, when listing, the entries in the window [lo, hi), in array
 * order. Returns 0 or PRESENCE_ECORRUPT (a chunk missing or too small: a
 * write in between, which the seqlock then tells, or corruption). */
static inline __attribute__((always_inline)) int walk_array(struct presence *p,
                                                            const struct pr_room *r,
                                                            bool with_state, bool conns, size_t lo,
                                                            size_t hi, uint32_t *occupancy)
{
    const struct pr_arena_view a = pr__arena_view(p);
    const struct pr_pres *pres = PR_REGION(p, off_pres, struct pr_pres);
    const uint32_t cap = p->h->cap_pres, n = pr_load(&r->occupancy);
    if (n > cap || n > PR_MCHUNKS * PR_MCHUNK_MAX)
        return PRESENCE_ECORRUPT;
    size_t end = hi < n ? hi : n, nrefs = 0, bytes = 0;
    while (lo < end && end - lo > scratch.caprefs)
        if (scratch_grow() != 0)
            return -ENOMEM;
    struct occ_ref *refs = scratch.refs;
    for (size_t i = lo; i < end;) {
        uint32_t k = (uint32_t) (i / PR_MCHUNK_MAX), len = 0;
        const struct pr_mentry *e = (const struct pr_mentry *) (const void *) pr__view_blob(
            &a, pr_load(&r->mchunk[k]), &len);
        size_t first = (size_t) k * PR_MCHUNK_MAX, stop = first + len / sizeof *e;
        if (!e || stop <= i)
            return PRESENCE_ECORRUPT;
        for (stop = stop < end ? stop : end; i < stop; i++) {
            const struct pr_mentry *m = &e[i - first];
            uint32_t state = 0;
            if (with_state) {
                uint32_t pi = pr_load(&m->pres);
                if (pi >= cap)
                    return PRESENCE_ECORRUPT;
                state = pr_load(&pres[pi].state_blob);
            }
            bytes += occ_set(&refs[nrefs++], conns, pr_load(&m->conn_blob), pr_load(&m->conn_len),
                             pr_load(&m->user_blob), pr_load(&m->user_len), state);
        }
    }
    scratch.nrefs = nrefs;
    scratch.bytes = bytes;
    *occupancy = n;
    return 0;
}

/* One walk of room @ri's members: counts them and, when listing, records the
 * blob refs and name lengths of the occupants in the window (copies kept in the
 * presence record or the member array, so the walk reads nothing else).
 * Returns 0 or an error. */
static int walk_room(struct presence *p, uint32_t ri, unsigned flags, size_t limit, size_t offset,
                     bool use_array, uint32_t *occupancy)
{
    struct pr_room *r = pr__room(p, ri);
    const struct pr_pres *pres = PR_REGION(p, off_pres, struct pr_pres);
    const uint32_t cap = p->h->cap_pres;
    const bool list =
        (flags & (PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE | PRESENCE_UUIDS_ONLY)) != 0;
    const bool with_state = (flags & PRESENCE_INCLUDE_STATE) != 0;
    const bool conns = (flags & PRESENCE_UUIDS_ONLY) == 0;
    const size_t lo = list ? offset : SIZE_MAX, hi = limit ? offset + limit : SIZE_MAX;
    if (use_array && pr_load(&r->marray)) {
        if (!with_state && !conns) /* the uuids alone: a copy of its own, for speed */
            return walk_array(p, r, false, false, lo, hi, occupancy);
        return walk_array(p, r, with_state, conns, lo, hi, occupancy);
    }
    size_t seen = 0, nrefs = 0, bytes = 0, caprefs = scratch.caprefs;
    struct occ_ref *refs = scratch.refs;
    uint32_t cur = pr_load(&r->members);
    for (uint32_t s = 0; cur && s <= cap; s++) {
        if (cur - 1 >= cap)
            return PRESENCE_ECORRUPT;
        const struct pr_pres *q = pres + (cur - 1);
        if (PR_ST_STATE(pr_load(&q->h.state)) == PR_LIVE && q->room == ri) {
            size_t k = seen++;
            if (k >= lo && k < hi) {
                if (nrefs == caprefs) {
                    if (scratch_grow() != 0)
                        return -ENOMEM;
                    refs = scratch.refs;
                    caprefs = scratch.caprefs;
                }
                bytes += occ_set(&refs[nrefs++], conns, q->conn_blob, q->conn_len, q->user_blob,
                                 q->user_len, with_state ? pr_load(&q->state_blob) : 0);
            }
        }
        cur = pr_load(&q->room_next);
    }
    scratch.nrefs = nrefs;
    scratch.bytes = bytes;
    *occupancy = (uint32_t) seen;
    return 0;
}

/* memcpy for short strings, inline: overlapping word moves, no call. */
static inline void copy_short(char *d, const char *s, size_t n)
{
    if (n >= 16) {
        for (size_t i = 0; i + 16 < n; i += 16)
            __builtin_memcpy(d + i, s + i, 16);
        __builtin_memcpy(d + n - 16, s + n - 16, 16);
    } else if (n >= 8) {
        __builtin_memcpy(d, s, 8);
        __builtin_memcpy(d + n - 8, s + n - 8, 8);
    } else if (n >= 4) {
        __builtin_memcpy(d, s, 4);
        __builtin_memcpy(d + n - 4, s + n - 4, 4);
    } else {
        for (size_t i = 0; i < n; i++)
            d[i] = s[i];
    }
}

/* Copies @n bytes from @d and a NUL to *@at, advancing it; the copy. */
static inline char *put_str(char **at, const char *d, uint32_t n)
{
    char *s = *at;
    copy_short(s, d, n);
    s[n] = '\0';
    *at = s + n + 1;
    return s;
}

/* Copies blob @ref (a state, whatever its length) with put_str. NULL when the
 * ref does not check out (corruption). */
static inline char *put_blob(const struct pr_arena_view *a, uint32_t ref, char **at)
{
    uint32_t n;
    const char *d = pr__view_blob(a, ref, &n);
    return d ? put_str(at, d, n) : NULL;
}

/* The same for a name, which must hold @want bytes (its length as the snapshot
 * recorded it): the checks fold into two compares (the ref, and the header and
 * name inside the arena) and one of the blob's own length. */
static inline char *put_name(const struct pr_arena_view *a, uint32_t ref, uint32_t want, char **at)
{
    uint64_t off = ((uint64_t) ref - 1) * PR_UNIT; /* ref 0 wraps around */
    if (off >= a->bytes || a->bytes - off < (uint64_t) PR_BLOB_HDR + want)
        return NULL;
    const struct pr_blob *b = (const struct pr_blob *) (const void *) (a->base + off);
    return pr_load(&b->len) == want ? put_str(at, (const char *) (b + 1), want) : NULL;
}

/* Builds the result of the walk in one block: the occupant array, then the
 * strings. The refs came from an exact snapshot and the blobs they name stay
 * readable for the read section (names are immutable, a replaced state is
 * retired, not overwritten), so this copy needs no retry. */
static inline __attribute__((always_inline)) int
room_result_from_scratch(const struct presence *p, presence_room_result_t *rr, bool with_state,
                         bool conns)
{
    const struct pr_arena_view a = pr__arena_view(p);
    const struct occ_ref *refs = scratch.refs;
    size_t n = scratch.nrefs, bytes = scratch.bytes;
    for (size_t i = 0; with_state && i < n; i++) {
        uint32_t st;
        if (refs[i].state) {
            if (!pr__view_blob(&a, refs[i].state, &st))
                return PRESENCE_ECORRUPT;
            bytes += (size_t) st + 1;
        }
    }
    char *block = occ_block_get(n * sizeof(presence_occupant_t) + bytes + 1);
    if (!block)
        return -ENOMEM;
    presence_occupant_t *occ = (presence_occupant_t *) (void *) block;
    char *str = block + n * sizeof(presence_occupant_t);
    bool bad = false;
    for (size_t i = 0; i < n; i++) {
        const struct occ_ref *o = &refs[i];
        if (i + PR_HN_AHEAD < n) { /* the names are scattered: ask for them early */
            pr__view_prefetch(&a, o[PR_HN_AHEAD].conn);
            pr__view_prefetch(&a, o[PR_HN_AHEAD].uuid);
        }
        /* anonymous: its uuid is the connection id, which is then copied anyway */
        bool want_conn = conns || !o->uuid;
        char *conn = want_conn ? put_name(&a, o->conn, o->conn_len, &str) : NULL;
        char *uuid = o->uuid ? put_name(&a, o->uuid, o->uuid_len, &str) : conn;
        occ[i].conn = conns ? conn : NULL;
        occ[i].uuid = uuid;
        occ[i].state = NULL;
        if (with_state && o->state) {
            occ[i].state = put_blob(&a, o->state, &str);
            bad |= !occ[i].state;
        }
        bad |= (want_conn && !conn) || !uuid;
    }
    if (bad) {
        occ_block_put(block);
        return PRESENCE_ECORRUPT;
    }
    rr->occupants = occ;
    rr->noccupants = n;
    return 0;
}

static int room_snapshot(struct presence *p, uint32_t ri, unsigned flags, size_t limit,
                         size_t offset, presence_room_result_t *rr)
{
    struct pr_room *r = pr__room(p, ri);
    int rc = 0;
    uint32_t occ = 0;
    /* The member array gives exact snapshots, and only those: a copy that the
     * version does not confirm can hold an entry twice (moved by a removal
     * under the reader's eyes). A writer descheduled inside its write section
     * keeps the version odd for a while, and a reader does not wait for it, so
     * the last attempts walk the list instead, whose answer is whole even when
     * unconfirmed: every member listed was in the room during the walk, once,
     * and the occupancy is the count listed. */
    for (int attempt = 0; attempt < 8; attempt++) {
        uint32_t v1 = pr_load(&r->version);
        rc = walk_room(p, ri, flags, limit, offset, attempt < 4, &occ);
        pr_smp_rmb(); /* the walk's loads before the version's second load */
        uint32_t v2 = pr_load(&r->version);
        if (v1 == v2 && !(v1 & 1u))
            break; /* an exact snapshot (or a real error) */
        if (rc != 0 && rc != PRESENCE_ECORRUPT)
            break;
    }
    if (rc)
        return rc;
    rr->occupancy = occ;
    bool with_state = (flags & PRESENCE_INCLUDE_STATE) != 0;
    bool conns = (flags & PRESENCE_UUIDS_ONLY) == 0;
    if (!with_state && !conns) /* the uuids alone: a copy of its own, for speed */
        return room_result_from_scratch(p, rr, false, false);
    return room_result_from_scratch(p, rr, with_state, conns);
}

/* The result in one block: the header, the room array, the room names. */
static presence_here_now_t *here_now_block(const char *const *names, size_t n)
{
    size_t bytes = sizeof(presence_here_now_t) + n * sizeof(presence_room_result_t);
    for (size_t i = 0; i < n; i++)
        bytes += strlen(names[i]) + 1;
    presence_here_now_t *res = calloc(1, bytes);
    if (!res)
        return NULL;
    res->rooms = (presence_room_result_t *) (void *) (res + 1);
    char *str = (char *) (res->rooms + n);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]) + 1;
        res->rooms[i].name = memcpy(str, names[i], len);
        str += len;
    }
    return res;
}

int presence_here_now(presence_t *p, const char *const *rooms, size_t nrooms,
                      const char *const *groups, size_t ngroups, unsigned flags, size_t limit,
                      size_t offset, presence_here_now_t **out)
{
    if (flags & ~(unsigned) (PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE | PRESENCE_UUIDS_ONLY))
        return PRESENCE_EOPTION;
    presence_strlist_t names = {0, NULL};
    size_t nnames = 0;
    presence_here_now_t *res = NULL;
    int rc = 0;
    if (ngroups == 0 && nrooms == 1 && rooms) { /* the common call: no copies to make */
        rc = pr__validate_name(rooms[0], NULL);
        res = rc ? NULL : here_now_block(rooms, 1);
        nnames = 1;
    } else {
        rc = expand(p, rooms, nrooms, groups, ngroups, &names);
        res = rc ? NULL : here_now_block((const char *const *) names.items, names.count);
        nnames = names.count;
        for (size_t i = 0; i < names.count; i++)
            free(names.items[i]);
        free(names.items);
    }
    if (!res)
        return rc ? rc : -ENOMEM;
    struct pr_tls *t = pr__enter(p);
    if (!t)
        rc = -EUSERS;
    for (size_t i = 0; !rc && i < nnames; i++) {
        presence_room_result_t *rr = &res->rooms[res->nrooms++];
        size_t len = strlen(rr->name);
        int64_t ri = pr__room_find(p, rr->name, len, pr__hash(p, rr->name, len));
        if (ri == -ENOENT)
            continue; /* occupancy 0, as PubNub answers */
        if (ri < 0) {
            rc = (int) ri;
            break;
        }
        rc = room_snapshot(p, (uint32_t) ri, flags, limit, offset, rr);
        res->total_occupancy += rr->occupancy;
    }
    if (t)
        pr__exit(p, t);
    res->total_channels = res->nrooms;
    if (rc) {
        presence_here_now_free(res);
        return rc;
    }
    *out = res;
    return 0;
}

/* ---- where_now, users, counts ------------------------------------------------ */

static int conn_rooms(struct presence *p, uint32_t ci, presence_strlist_t *l, size_t *cap)
{
    struct pr_conn *c = pr__conn(p, ci);
    uint32_t cur = pr_load(&c->presences);
    for (uint32_t s = 0; cur && s <= p->h->cap_pres; s++) {
        struct pr_pres *q = pr__pres(p, cur - 1);
        if (!q)
            return PRESENCE_ECORRUPT;
        if (PR_ST_STATE(pr_load(&q->h.state)) == PR_LIVE && q->conn == ci) {
            struct pr_room *r = pr__room(p, q->room);
            if (!r)
                return PRESENCE_ECORRUPT;
            int rc = strlist_push(l, dup_blob(p, r->name_blob, r->name_len), cap);
            if (rc)
                return rc;
        }
        cur = pr_load(&q->conn_next);
    }
    return 0;
}

int presence_where_now(presence_t *p, const char *uuid, presence_strlist_t **out)
{
    size_t n;
    int rc = pr__validate_name(uuid, &n);
    if (rc)
        return rc;
    presence_strlist_t *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    size_t cap = 0;
    struct pr_tls *t = pr__enter(p);
    if (!t) {
        free(l);
        return -EUSERS;
    }
    uint32_t hash = pr__hash(p, uuid, n);
    int64_t ci = pr__conn_find(p, uuid, n, hash);
    if (ci >= 0)
        rc = conn_rooms(p, (uint32_t) ci, l, &cap);
    /* connections whose user is uuid */
    uint32_t cur = pr_load(pr__bucket(p, PR_T_USER, hash));
    for (uint32_t s = 0; !rc && cur && s <= p->h->cap_conns; s++) {
        struct pr_conn *c = pr__conn(p, cur - 1);
        if (!c) {
            rc = PRESENCE_ECORRUPT;
            break;
        }
        if (c->user_hash == hash && PR_ST_STATE(pr_load(&c->h.state)) == PR_LIVE &&
            pr__blob_eq(p, c->user_blob, c->user_len, uuid, n) && (int64_t) (cur - 1) != ci)
            rc = conn_rooms(p, cur - 1, l, &cap);
        cur = pr_load(&c->user_next);
    }
    pr__exit(p, t);
    if (rc) {
        presence_strlist_free(l);
        return rc;
    }
    strlist_unique(l);
    *out = l;
    return 0;
}

static int room_users(struct presence *p, uint32_t ri, presence_strlist_t *l)
{
    struct pr_room *r = pr__room(p, ri);
    size_t cap = 0;
    uint32_t cur = pr_load(&r->members);
    for (uint32_t s = 0; cur && s <= p->h->cap_pres; s++) {
        struct pr_pres *q = pr__pres(p, cur - 1);
        if (!q)
            return PRESENCE_ECORRUPT;
        if (PR_ST_STATE(pr_load(&q->h.state)) == PR_LIVE && q->room == ri && !(q->h.aux & 1u)) {
            struct pr_conn *c = pr__conn(p, q->conn);
            if (!c)
                return PRESENCE_ECORRUPT;
            int rc = strlist_push(l, dup_blob(p, c->user_blob, c->user_len), &cap);
            if (rc)
                return rc;
        }
        cur = pr_load(&q->room_next);
    }
    strlist_unique(l);
    return 0;
}

int presence_users(presence_t *p, const char *room, presence_strlist_t **out)
{
    presence_strlist_t *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    struct pr_tls *t = pr__enter(p);
    if (!t) {
        free(l);
        return -EUSERS;
    }
    int64_t ri = room_lookup(p, room);
    int rc = ri >= 0 ? room_users(p, (uint32_t) ri, l) : (ri == -ENOENT ? 0 : (int) ri);
    pr__exit(p, t);
    if (rc) {
        presence_strlist_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

static int room_counter(presence_t *p, const char *room, bool anonymous)
{
    struct pr_tls *t = pr__enter(p);
    if (!t)
        return -EUSERS;
    int64_t ri = room_lookup(p, room);
    int rc;
    if (ri >= 0) {
        struct pr_room *r = pr__room(p, (uint32_t) ri);
        uint32_t v = anonymous ? pr_load(&r->anonymous) : pr_load(&r->occupancy);
        /* No room holds more presences than exist: a larger counter is corrupted
         * (and must not come back as a negative int posing as an error). */
        rc = v <= p->h->cap_pres ? (int) v : PRESENCE_ECORRUPT;
    } else {
        rc = ri == -ENOENT ? 0 : (int) ri;
    }
    pr__exit(p, t);
    return rc;
}

int presence_anonymous_count(presence_t *p, const char *room)
{
    return room_counter(p, room, true);
}

int presence_occupancy(presence_t *p, const char *room)
{
    return room_counter(p, room, false);
}

/* ---- rooms ----------------------------------------------------------------- */

void presence_room_list_free(presence_room_list_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i].name);
    free(l->items);
    free(l);
}

static int cmp_room(const void *a, const void *b)
{
    return strcmp(((const presence_room_info_t *) a)->name,
                  ((const presence_room_info_t *) b)->name);
}

int presence_rooms(presence_t *p, const char *prefix, presence_room_list_t **out)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    presence_room_list_t *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    size_t cap = 0;
    int rc = 0;
    struct pr_tls *t = pr__enter(p);
    if (!t) {
        free(l);
        return -EUSERS;
    }
    for (uint32_t ri = 0; ri < p->h->cap_rooms && !rc; ri++) {
        struct pr_room *r = pr__room(p, ri);
        if (PR_ST_STATE(pr_load(&r->h.state)) != PR_LIVE)
            continue;
        char *name = dup_blob(p, r->name_blob, r->name_len);
        if (!name)
            continue; /* changed under us */
        if (plen && strncmp(name, prefix, plen) != 0) {
            free(name);
            continue;
        }
        if (l->count == cap) {
            size_t nc = cap ? cap * 2 : 16;
            presence_room_info_t *ni = realloc(l->items, nc * sizeof *ni);
            if (!ni) {
                free(name);
                rc = -ENOMEM;
                break;
            }
            l->items = ni;
            cap = nc;
        }
        presence_room_info_t *it = &l->items[l->count++];
        it->name = name;
        it->occupancy = pr_load(&r->occupancy);
        it->anonymous = pr_load(&r->anonymous);
        presence_strlist_t users = {0, NULL};
        rc = room_users(p, ri, &users);
        it->users = (uint32_t) users.count;
        for (size_t i = 0; i < users.count; i++)
            free(users.items[i]);
        free(users.items);
    }
    pr__exit(p, t);
    if (rc) {
        presence_room_list_free(l);
        return rc;
    }
    if (l->count > 1)
        qsort(l->items, l->count, sizeof *l->items, cmp_room);
    *out = l;
    return 0;
}

/* ---- get_state -------------------------------------------------------------- */

void presence_state_list_free(presence_state_list_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->count; i++) {
        free(l->items[i].room);
        free(l->items[i].uuid);
        free(l->items[i].state);
    }
    free(l->items);
    free(l);
}

/* The connections a uuid names: the connection with that id, and every
 * connection whose user is that uuid. Appends indexes to *v (grown as needed). */
static int uuid_conns(struct presence *p, const char *uuid, size_t n, uint32_t **v, size_t *nv)
{
    size_t cap = 0;
    *v = NULL;
    *nv = 0;
    uint32_t hash = pr__hash(p, uuid, n);
    int64_t ci = pr__conn_find(p, uuid, n, hash);
    uint32_t cur = pr_load(pr__bucket(p, PR_T_USER, hash));
    for (uint32_t s = 0; s <= p->h->cap_conns + 1; s++) {
        int64_t pick = -1;
        if (s == 0) {
            pick = ci >= 0 ? ci : -1;
        } else {
            if (!cur)
                break;
            struct pr_conn *c = pr__conn(p, cur - 1);
            if (!c)
                return PRESENCE_ECORRUPT;
            if (c->user_hash == hash && PR_ST_STATE(pr_load(&c->h.state)) == PR_LIVE &&
                pr__blob_eq(p, c->user_blob, c->user_len, uuid, n) && (int64_t) (cur - 1) != ci)
                pick = cur - 1;
            cur = pr_load(&c->user_next);
        }
        if (pick < 0)
            continue;
        if (*nv == cap) {
            size_t nc = cap ? cap * 2 : 4;
            uint32_t *nvv = realloc(*v, nc * sizeof **v);
            if (!nvv)
                return -ENOMEM;
            *v = nvv;
            cap = nc;
        }
        (*v)[(*nv)++] = (uint32_t) pick;
    }
    return 0;
}

int presence_get_state(presence_t *p, const char *const *rooms, size_t nrooms,
                       const char *const *groups, size_t ngroups, const char *uuid,
                       presence_state_list_t **out)
{
    size_t un;
    int rc = pr__validate_name(uuid, &un);
    if (rc)
        return rc;
    presence_strlist_t names = {0, NULL};
    rc = expand(p, rooms, nrooms, groups, ngroups, &names);
    presence_state_list_t *l = calloc(1, sizeof *l);
    if (!l && !rc)
        rc = -ENOMEM;
    struct pr_tls *t = rc ? NULL : pr__enter(p);
    if (!rc && !t)
        rc = -EUSERS;
    uint32_t *conns = NULL;
    size_t nconns = 0, cap = 0;
    if (!rc)
        rc = uuid_conns(p, uuid, un, &conns, &nconns);
    for (size_t i = 0; !rc && nconns && i < names.count; i++) {
        int64_t ri = room_lookup(p, names.items[i]);
        if (ri < 0)
            continue;
        for (size_t j = 0; !rc && j < nconns; j++) {
            struct pr_conn *c = pr__conn(p, conns[j]);
            uint32_t cur = pr_load(&c->presences);
            for (uint32_t s = 0; cur && s <= p->h->cap_pres; s++) {
                struct pr_pres *q = pr__pres(p, cur - 1);
                if (!q) {
                    rc = PRESENCE_ECORRUPT;
                    break;
                }
                if (q->room == (uint32_t) ri && q->conn == conns[j] &&
                    PR_ST_STATE(pr_load(&q->h.state)) == PR_LIVE) {
                    if (l->count == cap) {
                        size_t nc = cap ? cap * 2 : 8;
                        presence_state_item_t *ni = realloc(l->items, nc * sizeof *ni);
                        if (!ni) {
                            rc = -ENOMEM;
                            break;
                        }
                        l->items = ni;
                        cap = nc;
                    }
                    presence_state_item_t *it = &l->items[l->count++];
                    it->room = strdup(names.items[i]);
                    it->uuid = strdup(uuid);
                    uint32_t sb = pr_load(&q->state_blob);
                    it->state = sb ? dup_blob_any(p, sb) : NULL;
                    if (!it->room || !it->uuid)
                        rc = -ENOMEM;
                    break;
                }
                cur = pr_load(&q->conn_next);
            }
        }
    }
    if (t)
        pr__exit(p, t);
    free(conns);
    for (size_t i = 0; i < names.count; i++)
        free(names.items[i]);
    free(names.items);
    if (rc) {
        presence_state_list_free(l);
        return rc;
    }
    *out = l;
    return 0;
}
