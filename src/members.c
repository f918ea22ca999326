/*
 * members.c -- each room's member array: the room's LIVE presences as 16-byte
 * entries (struct pr_mentry) in up to PR_MCHUNKS arena blobs, so that a
 * listing (here_now, query.c) reads one array and the names instead of
 * chasing the room's list one presence record after another, a dependent
 * cache miss per member.
 *
 * Owns pr_room.marray and .mchunk[], and pr_pres.room_slot.
 *
 * Invariants, while r->marray is 1 and the room's version is even:
 *   - entries 0 .. occupancy-1 are exactly the room's LIVE presences, entry i
 *     in chunk i / PR_MCHUNK_MAX at i % PR_MCHUNK_MAX, and that presence's
 *     room_slot is i;
 *   - an entry's names are its presence's copies (immutable while it lives).
 * The list (room_next / room_prev) stays the source of truth: a crashed
 * writer's repair rebuilds the array from it, and a writer that meets an
 * inconsistency, or cannot allocate a chunk, sets marray to 0, which sends
 * readers to the list until the room is empty again (an empty array is exact)
 * or the maintenance after a process's death rebuilds it
 * (pr__members_restore_all: a prune killed before its end leaves off the
 * arrays of every room it had removed from).
 *
 * Writers change entries under the room lock, inside the room's seqlock write
 * section; readers copy them under the seqlock and bounds-check every ref. A
 * chunk is only replaced outside a write section by a larger copy of itself,
 * so a reader sees the same entries in either; the old one is retired through
 * limbo. A chunk after the first is retired when its one entry leaves, an
 * emptied room keeps at most a smallest chunk, and the rest are freed with the
 * room (registry.c, pr__free_item). The arrays' cells are counted
 * (PR_C_MEMBERS) and kept within the arena's share for them (members_budget),
 * so names and states never go short because of them. Prune turns off the
 * arrays of the rooms it removes from and rebuilds them at its end
 * (registry.c, members_defer).
 */
#include "internal.h"

#include <string.h>

/* The chunk @ref as a writable array, with its capacity in entries (0 and
 * NULL when the ref is not a valid blob). */
static uint32_t chunk_view(const struct presence *p, uint32_t ref, struct pr_mentry **out)
{
    uint32_t len = 0;
    const char *d = ref ? pr__blob_get(p, ref, &len) : NULL;
    *out = (struct pr_mentry *) (void *) (char *) d; /* the writer's view */
    return d ? len / (uint32_t) sizeof(struct pr_mentry) : 0;
}

/* Entry @i of room @r, or NULL when its chunk is missing or too small. */
static struct pr_mentry *entry_at(const struct presence *p, const struct pr_room *r, uint32_t i)
{
    uint32_t k = i / PR_MCHUNK_MAX, off = i % PR_MCHUNK_MAX;
    struct pr_mentry *e = NULL;
    if (k >= PR_MCHUNKS || off >= chunk_view(p, pr_load(&r->mchunk[k]), &e))
        return NULL;
    return e + off;
}

static void entry_fill(struct pr_mentry *e, uint32_t pi, const struct pr_pres *q)
{
    pr_store(&e->pres, pi);
    pr_store(&e->conn_blob, q->conn_blob);
    pr_store(&e->user_blob, q->user_blob);
    pr_store(&e->conn_len, q->conn_len);
    pr_store(&e->user_len, q->user_len);
}

static void entry_copy(struct pr_mentry *d, const struct pr_mentry *s)
{
    pr_store(&d->pres, pr_load(&s->pres));
    pr_store(&d->conn_blob, pr_load(&s->conn_blob));
    pr_store(&d->user_blob, pr_load(&s->user_blob));
    pr_store(&d->conn_len, pr_load(&s->conn_len));
    pr_store(&d->user_len, pr_load(&s->user_len));
}

/* The arena cell a chunk of @cap entries takes. */
static int64_t chunk_cell(uint32_t cap)
{
    int64_t cell = PR_UNIT;
    while ((uint64_t) cell < (uint64_t) cap * sizeof(struct pr_mentry) + PR_BLOB_HDR)
        cell *= 2;
    return cell;
}

/* The capacity chunk 0 grows to from @cap: the smallest cell that holds one
 * more entry, filled (at most PR_MCHUNK_MAX). */
static uint32_t grown_cap(uint32_t cap)
{
    uint64_t c = ((uint64_t) chunk_cell(cap + 1) - PR_BLOB_HDR) / sizeof(struct pr_mentry);
    return c < PR_MCHUNK_MAX ? (uint32_t) c : PR_MCHUNK_MAX;
}

/* Forgets chunk @k of @r (its cell leaves the arrays' count); its ref or 0. */
static uint32_t chunk_forget(struct presence *p, struct pr_room *r, unsigned k)
{
    struct pr_mentry *e;
    uint32_t ref = pr_xchg(&r->mchunk[k], 0u), cap = chunk_view(p, ref, &e);
    if (ref)
        pr__count(p, PR_C_MEMBERS, -chunk_cell(cap));
    return ref;
}

/* Forgets chunk @k of @r and retires it (a reader may be copying it). */
static void chunk_drop(struct presence *p, struct pr_room *r, unsigned k)
{
    uint32_t ref = chunk_forget(p, r, k);
    if (ref)
        pr__retire(p, PR_ITEM(PR_K_BLOB, ref - 1));
}

/* Replaces chunk @k of room @ri by one of @want entries holding the first
 * @keep entries of the old one (which is retired). Within the arena's share
 * for arrays, so that names never go short: beyond it (-ENOSPC), the room is
 * listed through its list. */
static int chunk_grow(struct presence *p, uint32_t ri, uint32_t k, uint32_t want, uint32_t keep)
{
    struct pr_room *r = pr__room(p, ri);
    struct pr_mentry *old, *e;
    uint32_t prev = pr_load(&r->mchunk[k]), cap = chunk_view(p, prev, &old);
    int64_t cell = chunk_cell(want);
    if (keep > cap || keep > want)
        return PRESENCE_ECORRUPT;
    if (pr__counter(p, PR_C_MEMBERS) + cell > (int64_t) p->h->members_budget)
        return -ENOSPC;
    int64_t ref = pr__blob_new(p, NULL, want * (uint32_t) sizeof *e, PR_ITEM(PR_K_ROOM, ri));
    if (ref < 0) {
        pr__blob_attached(p);
        return (int) ref;
    }
    pr__count(p, PR_C_MEMBERS, cell);
    chunk_view(p, (uint32_t) ref, &e);
    for (uint32_t i = 0; i < keep; i++)
        entry_copy(&e[i], &old[i]);
    pr_smp_wmb(); /* the copy before the ref that publishes it */
    pr_store(&r->mchunk[k], (uint32_t) ref);
    pr__blob_attached(p);
    if (prev) {
        pr__count(p, PR_C_MEMBERS, -chunk_cell(cap));
        pr__retire(p, PR_ITEM(PR_K_BLOB, prev - 1));
    }
    return 0;
}

int pr__members_reserve(struct presence *p, uint32_t ri)
{
    struct pr_room *r = pr__room(p, ri);
    if (!pr_load(&r->marray))
        return 0;
    uint32_t n = r->occupancy, k = n / PR_MCHUNK_MAX, used = n % PR_MCHUNK_MAX;
    if (k >= PR_MCHUNKS)
        return -ENOSPC;
    struct pr_mentry *e;
    uint32_t cap = chunk_view(p, pr_load(&r->mchunk[k]), &e);
    if (used < cap)
        return 0;
    return chunk_grow(p, ri, k, k == 0 ? grown_cap(cap) : PR_MCHUNK_MAX, used);
}

int pr__members_fit(struct presence *p, uint32_t ri)
{
    struct pr_room *r = pr__room(p, ri);
    uint32_t n = r->occupancy;
    if (n > PR_MCHUNKS * PR_MCHUNK_MAX)
        return -ENOSPC;
    for (uint32_t k = 0; k * PR_MCHUNK_MAX < n; k++) {
        uint32_t need =
            n - k * PR_MCHUNK_MAX < PR_MCHUNK_MAX ? n - k * PR_MCHUNK_MAX : PR_MCHUNK_MAX;
        struct pr_mentry *e;
        uint32_t want = chunk_view(p, pr_load(&r->mchunk[k]), &e);
        if (want >= need)
            continue;
        while (want < need)
            want = k == 0 ? grown_cap(want) : PR_MCHUNK_MAX;
        int rc = chunk_grow(p, ri, k, want, 0);
        if (rc)
            return rc;
    }
    return 0;
}

void pr__members_add(struct presence *p, struct pr_room *r, uint32_t pi, struct pr_pres *q)
{
    if (!pr_load(&r->marray))
        return;
    uint32_t n = r->occupancy;
    struct pr_mentry *e = entry_at(p, r, n);
    if (!e) {
        pr_store(&r->marray, 0u);
        return;
    }
    entry_fill(e, pi, q);
    q->room_slot = n;
}

void pr__members_remove(struct presence *p, struct pr_room *r, uint32_t pi, struct pr_pres *q)
{
    uint32_t n = r->occupancy;
    if (n <= 1) { /* the room empties: an empty array is exact, and holds at most
                     a smallest chunk (kept: a room of one comes and goes often) */
        struct pr_mentry *e;
        for (unsigned k = 0; k < PR_MCHUNKS; k++)
            if (k > 0 || chunk_view(p, pr_load(&r->mchunk[0]), &e) > grown_cap(0))
                chunk_drop(p, r, k);
        pr_store(&r->marray, 1u);
        return;
    }
    if (!pr_load(&r->marray))
        return;
    uint32_t s = q->room_slot;
    struct pr_mentry *hole = s < n ? entry_at(p, r, s) : NULL, *last = entry_at(p, r, n - 1);
    struct pr_pres *moved = last ? pr__pres(p, pr_load(&last->pres)) : NULL;
    if (!hole || !moved || pr_load(&hole->pres) != pi) {
        pr_store(&r->marray, 0u);
        return;
    }
    if (hole != last) {
        entry_copy(hole, last);
        PR_KILL_POINT("members");
        moved->room_slot = s;
    }
    if ((n - 1) % PR_MCHUNK_MAX == 0 && (n - 1) / PR_MCHUNK_MAX < PR_MCHUNKS)
        /* the one entry of a chunk after the first went */
        chunk_drop(p, r, (n - 1) / PR_MCHUNK_MAX);
}

void pr__members_rebuild(struct presence *p, uint32_t ri)
{
    struct pr_room *r = pr__room(p, ri);
    uint32_t i = 0, cur = r->members;
    bool exact = true;
    for (uint32_t steps = 0; cur && steps <= p->h->cap_pres; steps++) {
        struct pr_pres *q = pr__pres(p, cur - 1);
        struct pr_mentry *e = q ? entry_at(p, r, i) : NULL;
        if (!e) {
            exact = false;
            break;
        }
        entry_fill(e, cur - 1, q);
        q->room_slot = i++;
        cur = q->room_next;
    }
    pr_store(&r->marray, exact && i == r->occupancy ? 1u : 0u);
}

void pr__members_free(struct presence *p, struct pr_room *r)
{
    pr_store(&r->marray, 1u);
    for (unsigned k = 0; k < PR_MCHUNKS; k++)
        pr__blob_free(p, chunk_forget(p, r, k)); /* forgotten, then freed */
}
