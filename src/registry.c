/*
 * registry.c -- the write side: join, leave, leave_all, touch, on_message,
 * prune, prune_rooms, set_state, and the repair of rooms and connections whose
 * lock holder died.
 *
 * Locking (no global lock; readers take none of these):
 *   room lock -> connection lock -> stripe locks (room; connection -> user).
 * A presence's links and the counters of its room and connection change only
 * while both its room's and its connection's locks are held. Connection and
 * room records are created under their index stripe lock.
 *
 * Crash ordering (what a repair can rely on):
 *   - join links a presence into both lists while it is CLAIMED, then makes it
 *     LIVE, then updates counters: a repair unlinks every non-LIVE presence from
 *     the locked object's list and recounts from what is LIVE;
 *   - leave makes the presence DEAD first, then unlinks and counts;
 *   - records are complete before the single store that publishes them.
 * Whatever a dead process left unreachable is retired by the maintenance sweep.
 *
 * touch is a CAS on last_seen; removal of a connection (prune, owner death)
 * first CASes last_seen to a tombstone, so exactly one of touch and prune wins.
 */
#include "internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pr_name {
    const char *s;
    size_t n;
    uint32_t hash;
};

static int name_prep(struct presence *p, const char *s, struct pr_name *out)
{
    int rc = pr__validate_name(s, &out->n);
    if (rc)
        return rc;
    out->s = s;
    out->hash = pr__hash(p, s, out->n);
    return 0;
}

int pr__test_trust_miss;

/* For a lookup that changes nothing when the name is absent: its length and
 * hash only. A name that is found equals a stored one, validated when it was
 * stored; one that is not found is validated then (bad_name_or), so that bad
 * input still gets its own error. Saves the validation's ~70 instructions on
 * the path that finds (a touch by name is ~350). */
static int name_prep_lookup(struct presence *p, const char *s, struct pr_name *out)
{
    size_t n = s ? strnlen(s, PRESENCE_NAME_MAX + 1) : 0;
    if (n == 0 || n > PRESENCE_NAME_MAX)
        return PRESENCE_ENAMELEN; /* what pr__validate_name says of these */
    out->s = s;
    out->n = n;
    out->hash = pr__hash(p, s, n);
    return 0;
}

/* The error of invalid name @s, else @rc. */
static int bad_name_or(const char *s, int rc)
{
    int bad = pr__validate_name(s, NULL);
    return bad ? bad : rc;
}

/* A room's seqlock, writer side (under the room lock): the odd version is
 * ordered before the list's stores (store-store; readers order load-load). */
static void room_write_begin(struct pr_room *r)
{
    pr_store(&r->version, r->version + 1);
    pr_smp_wmb();
}

static void room_write_end(struct pr_room *r)
{
    pr_store(&r->version, r->version + 1);
}

static int lock_room(struct presence *p, uint32_t ri)
{
    return pr__lock(p, &pr__room(p, ri)->lock, pr__room_repair, ri);
}

static int lock_conn(struct presence *p, uint32_t ci)
{
    return pr__lock(p, &pr__conn(p, ci)->lock, pr__conn_repair, ci);
}

static bool is_live(const struct pr_rec *r)
{
    return PR_ST_STATE(pr_load(&r->state)) == PR_LIVE;
}

/* DEAD -> RETIRED exactly once (the sweep may race us), then limbo. */
static void retire_rec(struct presence *p, unsigned kind, uint32_t idx)
{
    struct pr_rec *r = pr__rec(p, kind, idx);
    if (!r)
        return;
    uint64_t st = pr_load(&r->state);
    unsigned s = PR_ST_STATE(st);
    if (s != PR_DEAD && s != PR_CLAIMED)
        return;
    if (pr_cas(&r->state, st, PR_ST(PR_ST_GEN(st), PR_RETIRED, PR_ST_SLOT(st)))) {
        PR_KILL_POINT("retire");
        pr__retire(p, PR_ITEM(kind, idx));
    }
}

static void mark_dead(struct presence *p, struct pr_rec *r)
{
    uint64_t st = pr_load(&r->state);
    pr_store(&r->state, PR_ST(PR_ST_GEN(st), PR_DEAD, pr__my_slot(p)));
}

/* Test-only: overwrite a freed presence or blob so that a reader that can still
 * reach it (a broken grace period) sees garbage it can detect. */
static void poison(struct presence *p, uint32_t item)
{
    unsigned kind = PR_ITEM_KIND(item);
    uint32_t idx = PR_ITEM_IDX(item);
    if (kind == PR_K_PRES) {
        struct pr_pres *q = pr__pres(p, idx);
        if (q) {
            q->room = q->conn = 0xdeadbeefu;
            q->room_next = q->conn_next = 0xdeadbeefu;
        }
    } else if (kind == PR_K_BLOB) {
        uint32_t len;
        char *d = (char *) pr__blob_get(p, idx + 1, &len);
        if (d)
            memset(d, '#', len);
    }
}

/* Called when an item's grace period is over: release its blobs, refill its stack. */
void pr__free_item(struct presence *p, uint32_t item)
{
    unsigned kind = PR_ITEM_KIND(item);
    uint32_t idx = PR_ITEM_IDX(item);
    if (pr__test_poison) {
        poison(p, item);
        if (kind == PR_K_PRES && pr__pres(p, idx))
            poison(p, PR_ITEM(PR_K_BLOB, pr__pres(p, idx)->state_blob - 1));
    }
    /* Each record forgets its blobs (stores) before they are freed: a process
     * killed in between leaves them allocated and unreferenced, which the sweep
     * frees. Freed first and forgotten after, a crash in between left a record
     * (RETIRED, out of limbo: the sweep retires it again) still naming blobs
     * that were freed and then reallocated to others, and its second free freed
     * theirs. */
    uint32_t b1 = 0, b2 = 0;
    switch (kind) {
    case PR_K_BLOB:
        pr__blob_free(p, idx + 1);
        return;
    case PR_K_ROOM: {
        struct pr_room *r = pr__room(p, idx);
        if (!r)
            return;
        b1 = pr_xchg(&r->name_blob, 0u);
        pr__members_free(p, r);
        break;
    }
    case PR_K_CONN: {
        struct pr_conn *c = pr__conn(p, idx);
        if (!c)
            return;
        b1 = pr_xchg(&c->name_blob, 0u);
        b2 = pr_xchg(&c->user_blob, 0u);
        break;
    }
    case PR_K_PRES: {
        struct pr_pres *q = pr__pres(p, idx);
        if (!q)
            return;
        b1 = pr_xchg(&q->state_blob, 0u);
        break;
    }
    case PR_K_GROUP: {
        struct pr_group *g = pr__group(p, idx);
        if (!g)
            return;
        b1 = pr_xchg(&g->name_blob, 0u);
        break;
    }
    case PR_K_GMEMBER: {
        struct pr_gmember *m = pr__gmember(p, idx);
        if (!m)
            return;
        b1 = pr_xchg(&m->name_blob, 0u);
        break;
    }
    default:
        return;
    }
    pr__blob_free(p, b1);
    pr__blob_free(p, b2);
    pr__rec_push_free(p, kind, idx);
}

/* ---- repair ------------------------------------------------------------- */

void pr__room_repair(struct presence *p, uint32_t ri)
{
    struct pr_room *r = pr__room(p, ri);
    uint32_t *slot = &r->members, prev = 0, occ = 0, anon = 0;
    if (!(r->version & 1u)) /* readers retry until the list and array are whole */
        room_write_begin(r);
    for (uint32_t steps = 0; steps <= p->h->cap_pres; steps++) {
        uint32_t cur = pr_load(slot);
        struct pr_pres *q = cur ? pr__pres(p, cur - 1) : NULL;
        if (!q) {
            if (cur)
                pr_store(slot, 0u);
            break;
        }
        uint64_t st = pr_load(&q->h.state);
        if (PR_ST_STATE(st) != PR_LIVE || q->room != ri) {
            if (PR_ST_STATE(st) == PR_CLAIMED)
                pr_cas(&q->h.state, st, PR_ST(PR_ST_GEN(st), PR_DEAD, PR_ST_SLOT(st)));
            pr_store(slot, pr_load(&q->room_next));
            continue;
        }
        q->room_prev = prev;
        prev = cur;
        occ++;
        anon += q->h.aux & 1u;
        slot = &q->room_next;
    }
    pr_store(&r->occupancy, occ);
    pr_store(&r->anonymous, anon);
    pr__members_rebuild(p, ri);
    room_write_end(r);
}

void pr__conn_repair(struct presence *p, uint32_t ci)
{
    struct pr_conn *c = pr__conn(p, ci);
    uint32_t *slot = &c->presences, n = 0;
    for (uint32_t steps = 0; steps <= p->h->cap_pres; steps++) {
        uint32_t cur = pr_load(slot);
        struct pr_pres *q = cur ? pr__pres(p, cur - 1) : NULL;
        if (!q) {
            if (cur)
                pr_store(slot, 0u);
            break;
        }
        uint64_t st = pr_load(&q->h.state);
        if (PR_ST_STATE(st) != PR_LIVE || q->conn != ci) {
            if (PR_ST_STATE(st) == PR_CLAIMED)
                pr_cas(&q->h.state, st, PR_ST(PR_ST_GEN(st), PR_DEAD, PR_ST_SLOT(st)));
            pr_store(slot, pr_load(&q->conn_next));
            continue;
        }
        n++;
        slot = &q->conn_next;
    }
    pr_store(&c->npres, n);
}

/* ---- connection and room records ----------------------------------------- */

static bool conn_user_is(const struct presence *p, const struct pr_conn *c, const struct pr_name *u)
{
    if (!u)
        return c->user_len == 0;
    return c->user_len != 0 && pr__blob_eq(p, c->user_blob, c->user_len, u->s, u->n);
}

/* Finds or creates the connection. Sets *created. */
static int64_t conn_get_or_create(struct presence *p, const struct pr_name *cn,
                                  const struct pr_name *un, uint64_t timeout_ms, unsigned flags,
                                  bool *created)
{
    *created = false;
    int64_t ci = pr__conn_find(p, cn->s, cn->n, cn->hash);
    if (ci != -ENOENT)
        goto found;
    int rc = pr__stripe_lock(p, PR_T_CONN, cn->hash);
    if (rc)
        return rc;
    ci = pr__conn_find(p, cn->s, cn->n, cn->hash);
    if (ci != -ENOENT) {
        pr__unlock(pr__stripe(p, PR_T_CONN, cn->hash));
        goto found;
    }
    ci = pr__rec_claim(p, PR_K_CONN);
    if (ci < 0) {
        pr__unlock(pr__stripe(p, PR_T_CONN, cn->hash));
        return ci;
    }
    struct pr_conn *c = pr__conn(p, (uint32_t) ci);
    uint32_t item = PR_ITEM(PR_K_CONN, (uint32_t) ci);
    int64_t nb = pr__blob_new(p, cn->s, (uint32_t) cn->n, item);
    int64_t ub = (nb > 0 && un) ? pr__blob_new(p, un->s, (uint32_t) un->n, item) : 0;
    if (nb < 0 || ub < 0) {
        if (nb > 0)
            pr__blob_free(p, (uint32_t) nb);
        pr__blob_attached(p);
        retire_rec(p, PR_K_CONN, (uint32_t) ci);
        pr__unlock(pr__stripe(p, PR_T_CONN, cn->hash));
        return -ENOSPC;
    }
    c->name_blob = (uint32_t) nb;
    c->name_len = (uint16_t) cn->n;
    if (cn->n <= PR_CONN_INLINE)
        memcpy(c->name_inline, cn->s, cn->n);
    c->name_hash = cn->hash;
    c->user_blob = (uint32_t) ub;
    c->user_len = un ? (uint16_t) un->n : 0;
    c->user_hash = un ? un->hash : 0;
    c->presences = 0;
    c->npres = 0;
    c->timeout_ms = (uint32_t) (timeout_ms > UINT32_MAX ? UINT32_MAX : timeout_ms);
    c->owner_proc = p->proc + 1;
    c->owner_gen = p->proc_gen;
    c->h.aux = flags & PRESENCE_BOUND;
    pr_store(&c->last_seen, pr__stamp_ns());
    uint64_t st = pr_load(&c->h.state);
    pr_store(&c->h.state, PR_ST(PR_ST_GEN(st), PR_LIVE, PR_ST_SLOT(st)));
    /* Counted with the state, not after the index insert: a process killed
     * before the insert leaves a LIVE unreachable record, which the sweep
     * retires and uncounts (check.c), so the counter must already include it. */
    PR_KILL_POINT("create_conn");
    if (un) {
        rc = pr__stripe_lock(p, PR_T_USER, un->hash);
        if (rc == 0) {
            pr__chain_insert(p, PR_T_USER, un->hash, (uint32_t) ci);
            pr__unlock(pr__stripe(p, PR_T_USER, un->hash));
        }
    }
    pr__chain_insert(p, PR_T_CONN, cn->hash, (uint32_t) ci);
    pr__blob_attached(p);
    pr__unlock(pr__stripe(p, PR_T_CONN, cn->hash));
    *created = true;
    return ci;
found:
    if (ci < 0)
        return ci;
    if (!conn_user_is(p, pr__conn(p, (uint32_t) ci), un))
        return PRESENCE_EUSERCONFLICT;
    return ci;
}

static int64_t room_get_or_create(struct presence *p, const struct pr_name *rn, bool *created)
{
    *created = false;
    int64_t ri = pr__room_find(p, rn->s, rn->n, rn->hash);
    if (ri != -ENOENT)
        return ri;
    int rc = pr__stripe_lock(p, PR_T_ROOM, rn->hash);
    if (rc)
        return rc;
    ri = pr__room_find(p, rn->s, rn->n, rn->hash);
    if (ri == -ENOENT) {
        ri = pr__rec_claim(p, PR_K_ROOM);
        if (ri >= 0) {
            struct pr_room *r = pr__room(p, (uint32_t) ri);
            int64_t nb =
                pr__blob_new(p, rn->s, (uint32_t) rn->n, PR_ITEM(PR_K_ROOM, (uint32_t) ri));
            if (nb < 0) {
                pr__blob_attached(p);
                retire_rec(p, PR_K_ROOM, (uint32_t) ri);
                ri = -ENOSPC;
            } else {
                r->name_blob = (uint32_t) nb;
                r->name_len = (uint32_t) rn->n;
                r->name_hash = rn->hash;
                r->members = 0;
                r->occupancy = 0;
                r->anonymous = 0;
                r->marray = 1; /* empty: exact */
                uint64_t st = pr_load(&r->h.state);
                pr_store(&r->h.state, PR_ST(PR_ST_GEN(st), PR_LIVE, PR_ST_SLOT(st)));
                pr__chain_insert(p, PR_T_ROOM, rn->hash, (uint32_t) ri);
                pr__blob_attached(p);
                *created = true;
            }
        }
    }
    pr__unlock(pr__stripe(p, PR_T_ROOM, rn->hash));
    return ri;
}

/* Unpublishes connection @ci (lock held, no presences). Caller retires it after unlocking. */
static void conn_unpublish_locked(struct presence *p, uint32_t ci)
{
    struct pr_conn *c = pr__conn(p, ci);
    uint64_t ls = pr_load(&c->last_seen);
    if (!(ls & PR_TOMB))
        pr_cas(&c->last_seen, ls, PR_TOMB | PR_EV_LEAVE);
    /* The stripe locks are taken before the record turns DEAD: a process
     * killed anywhere from then on leaves it DEAD in a chain whose stripe lock
     * it held, and that stripe's repair unlinks it (a DEAD record left in a
     * chain with no lock held would stay there: nothing else unlinks it). */
    bool cs = pr__stripe_lock(p, PR_T_CONN, c->name_hash) == 0;
    bool us = cs && c->user_len && pr__stripe_lock(p, PR_T_USER, c->user_hash) == 0;
    mark_dead(p, &c->h);
    /* Uncounted with the state: a DEAD record is never counted (the sweep
     * retires one a dead process left without touching the counter). */
    if (us) {
        pr__chain_unlink(p, PR_T_USER, c->user_hash, ci);
        pr__unlock(pr__stripe(p, PR_T_USER, c->user_hash));
    }
    if (cs) {
        pr__chain_unlink(p, PR_T_CONN, c->name_hash, ci);
        pr__unlock(pr__stripe(p, PR_T_CONN, c->name_hash));
    }
}

/* Removes the connection if it has no presence. Returns true if it did (retired). */
static bool conn_delete_if_empty(struct presence *p, uint32_t ci)
{
    struct pr_conn *c = pr__conn(p, ci);
    if (lock_conn(p, ci) != 0)
        return false;
    bool del = is_live(&c->h) && c->npres == 0 && c->presences == 0;
    if (del)
        conn_unpublish_locked(p, ci);
    pr__unlock(&c->lock);
    if (del)
        retire_rec(p, PR_K_CONN, ci);
    return del;
}

/* Removes the room if it is empty. */
static bool room_delete_if_empty(struct presence *p, uint32_t ri, bool emit)
{
    struct pr_room *r = pr__room(p, ri);
    if (lock_room(p, ri) != 0)
        return false;
    bool del = is_live(&r->h) && r->occupancy == 0 && r->members == 0;
    if (del) {
        if (emit)
            pr__emit(p, PR_EV_ROOM_DELETED, ri, UINT32_MAX, 0);
        /* stripe first, then DEAD: see conn_unpublish_locked() */
        bool rs = pr__stripe_lock(p, PR_T_ROOM, r->name_hash) == 0;
        mark_dead(p, &r->h);
        if (rs) {
            pr__chain_unlink(p, PR_T_ROOM, r->name_hash, ri);
            pr__unlock(pr__stripe(p, PR_T_ROOM, r->name_hash));
        }
    }
    pr__unlock(&r->lock);
    if (del)
        retire_rec(p, PR_K_ROOM, ri);
    return del;
}

/* The LIVE presence of connection @ci in room @ri, or -1. */
static int64_t find_presence(struct presence *p, uint32_t ci, uint32_t ri)
{
    struct pr_conn *c = pr__conn(p, ci);
    uint32_t cur = pr_load(&c->presences);
    for (uint32_t steps = 0; cur != 0 && steps <= p->h->cap_pres; steps++) {
        struct pr_pres *q = pr__pres(p, cur - 1);
        if (!q)
            return PRESENCE_ECORRUPT;
        if (q->room == ri && is_live(&q->h))
            return cur - 1;
        cur = pr_load(&q->conn_next);
    }
    return -1;
}

static int touch_conn(struct pr_conn *c)
{
    if (!is_live(&c->h))
        return PRESENCE_NOT_PRESENT;
    for (;;) {
        uint64_t ls = pr_load(&c->last_seen);
        if (ls & PR_TOMB)
            return PRESENCE_NOT_PRESENT;
        uint64_t now = pr__stamp_ns();
        if (now <= ls || pr_cas(&c->last_seen, ls, now)) /* same tick: nothing to write */
            return 0;
    }
}

/* Prune's rooms whose member arrays it turned off (members_defer), to restore
 * at its end: one removal after another in the same rooms would each move an
 * entry and the presence it names (cold lines) for an array that prune mostly
 * empties anyway. Per thread; on only inside presence_prune. */
static PR_TLS struct {
    bool on;
    uint32_t *rooms;
    size_t n, cap;
} deferred;

/* In prune: turns room @ri's array off instead of keeping it, remembering the
 * room. False (keep it) when the room empties (an empty array is exact), when
 * it is large (its rebuild walks the list: one dependent miss per member left,
 * so a large room losing a few keeps its array up one removal at a time), or
 * when there is no memory to remember it. */
#define PR_DEFER_MAX 1024u
static bool members_defer(struct pr_room *r, uint32_t ri)
{
    if (!deferred.on || r->occupancy <= 1)
        return false;
    if (!pr_load(&r->marray))
        return true; /* off already (this prune, or no room for it) */
    if (r->occupancy > PR_DEFER_MAX)
        return false;
    if (deferred.n == deferred.cap) {
        size_t nc = deferred.cap ? deferred.cap * 2 : 64;
        uint32_t *v = realloc(deferred.rooms, nc * sizeof *v);
        if (!v)
            return false;
        deferred.rooms = v;
        deferred.cap = nc;
    }
    deferred.rooms[deferred.n++] = ri;
    pr_store(&r->marray, 0u);
    return true;
}

/* Gives room @ri its array back if it is off: rebuilt from the list, under the
 * lock; left off when it cannot get the memory. */
static void members_turn_on(struct presence *p, uint32_t ri)
{
    struct pr_room *r = pr__room(p, ri);
    if (!r || lock_room(p, ri) != 0)
        return;
    if (is_live(&r->h) && !pr_load(&r->marray) && pr__members_fit(p, ri) == 0) {
        room_write_begin(r);
        pr__members_rebuild(p, ri);
        room_write_end(r);
    }
    pr__unlock(&r->lock);
}

/* The end of prune: each room it turned off gets its array back. */
static void members_restore_deferred(struct presence *p)
{
    for (size_t i = 0; i < deferred.n; i++)
        members_turn_on(p, deferred.rooms[i]);
    free(deferred.rooms);
    memset(&deferred, 0, sizeof deferred);
}

void pr__members_restore_all(struct presence *p)
{
    for (uint32_t ri = 0; ri < p->h->cap_rooms; ri++) {
        struct pr_room *r = pr__room(p, ri);
        if (r && is_live(&r->h) && !pr_load(&r->marray)) /* the rest under its lock */
            members_turn_on(p, ri);
    }
}

/* Removes presence @pi from room @ri and connection @ci (both locked). */
static void pres_remove_locked(struct presence *p, uint32_t ri, uint32_t ci, uint32_t pi,
                               enum pr_event_type why)
{
    struct pr_room *r = pr__room(p, ri);
    struct pr_conn *c = pr__conn(p, ci);
    struct pr_pres *q = pr__pres(p, pi);
    room_write_begin(r);
    mark_dead(p, &q->h);
    /* The global count changes with the record's state, not after the event: a
     * process killed anywhere later (the unlink, the event ring's claim or
     * commit) leaves it right; the room's repair recounts the rest. */
    /* room list: doubly linked, O(1) */
    struct pr_pres *next = q->room_next ? pr__pres(p, q->room_next - 1) : NULL;
    if (q->room_prev) {
        struct pr_pres *prev = pr__pres(p, q->room_prev - 1);
        if (prev)
            pr_store(&prev->room_next, q->room_next);
    } else {
        pr_store(&r->members, q->room_next);
    }
    if (next)
        next->room_prev = q->room_prev;
    PR_KILL_POINT("unlink");
    /* connection list: short, walk it */
    uint32_t *slot = &c->presences;
    for (uint32_t steps = 0; *slot != 0 && steps <= p->h->cap_pres; steps++) {
        if (*slot == pi + 1) {
            pr_store(slot, q->conn_next);
            break;
        }
        struct pr_pres *o = pr__pres(p, *slot - 1);
        if (!o)
            break;
        slot = &o->conn_next;
    }
    if (!members_defer(r, ri))
        pr__members_remove(p, r, pi, q);
    pr_store(&r->occupancy, r->occupancy - 1); /* read lock-free */
    pr_store(&r->anonymous, r->anonymous - (q->h.aux & 1u));
    pr_store(&c->npres, c->npres - 1);
    room_write_end(r);
    pr__emit(p, why, ri, ci, r->occupancy);
    if (why == PR_EV_TIMEOUT)
        pr__count(p, PR_C_EXPIRED, 1);
    else
        pr__count(p, PR_C_LEAVES, 1);
}

/* Removes every presence of @ci, one event each with reason @why, then the
 * connection. Safe to run by several processes at once (they help each other). */
static int conn_remove_all(struct presence *p, uint32_t ci, enum pr_event_type why)
{
    struct pr_conn *c = pr__conn(p, ci);
    int count = 0;
    for (uint32_t rounds = 0; rounds <= p->h->cap_pres + 1; rounds++) {
        /* Pick a presence without the lock (we are in a read section), then
         * take its room's lock and the connection's, and check it again. */
        int64_t pi = -1;
        uint32_t cur = pr_load(&c->presences);
        for (uint32_t s = 0; cur && s <= p->h->cap_pres; s++) {
            struct pr_pres *q = pr__pres(p, cur - 1);
            if (!q)
                break;
            if (is_live(&q->h)) {
                pi = cur - 1;
                break;
            }
            cur = pr_load(&q->conn_next);
        }
        if (pi < 0) {
            /* None left: remove the connection itself. */
            if (lock_conn(p, ci) != 0)
                break;
            bool gone = is_live(&c->h) && c->npres == 0;
            if (gone)
                conn_unpublish_locked(p, ci);
            bool again = is_live(&c->h) && c->npres != 0; /* a join slipped in */
            pr__unlock(&c->lock);
            if (gone)
                retire_rec(p, PR_K_CONN, ci);
            if (!again)
                break;
            continue;
        }
        uint32_t ri = pr__pres(p, (uint32_t) pi)->room;
        if (!pr__room(p, ri) || lock_room(p, ri) != 0)
            break;
        if (lock_conn(p, ci) != 0) {
            pr__unlock(&pr__room(p, ri)->lock);
            break;
        }
        struct pr_pres *q = pr__pres(p, (uint32_t) pi);
        bool removed = false, gone = false;
        if (is_live(&q->h) && q->conn == ci && q->room == ri && is_live(&c->h)) {
            pres_remove_locked(p, ri, ci, (uint32_t) pi, why);
            removed = true;
            count++;
            if (c->npres == 0 && c->presences == 0) {
                conn_unpublish_locked(p, ci);
                gone = true;
            }
        }
        pr__unlock(&c->lock);
        pr__unlock(&pr__room(p, ri)->lock);
        if (removed)
            retire_rec(p, PR_K_PRES, (uint32_t) pi);
        if (gone) {
            retire_rec(p, PR_K_CONN, ci);
            break;
        }
        if (!is_live(&c->h))
            break;
    }
    return count;
}

/* ---- public write operations -------------------------------------------- */

#define ENTER_OR_FAIL(p, t) \
    do {                    \
        if ((p)->rdonly)    \
            return -EROFS;  \
        (t) = pr__enter(p); \
        if (!(t))           \
            return -EUSERS; \
    } while (0)

static int join_once(struct presence *p, const struct pr_name *rn, const struct pr_name *cn,
                     const struct pr_name *un, uint64_t timeout_ms, unsigned flags,
                     presence_conn_t *handle)
{
    for (unsigned attempt = 0; attempt < 10000; attempt++) {
        bool conn_new, room_new;
        int64_t ci = conn_get_or_create(p, cn, un, timeout_ms, flags, &conn_new);
        if (ci < 0)
            return (int) ci;
        int64_t ri = room_get_or_create(p, rn, &room_new);
        if (ri < 0) {
            if (conn_new)
                conn_delete_if_empty(p, (uint32_t) ci);
            return (int) ri;
        }
        struct pr_room *r = pr__room(p, (uint32_t) ri);
        struct pr_conn *c = pr__conn(p, (uint32_t) ci);
        int rc = lock_room(p, (uint32_t) ri);
        if (rc)
            return rc;
        if (!is_live(&r->h)) {
            pr__unlock(&r->lock);
            continue;
        }
        rc = lock_conn(p, (uint32_t) ci);
        if (rc) {
            pr__unlock(&r->lock);
            return rc;
        }
        uint64_t ls = pr_load(&c->last_seen);
        if (!is_live(&c->h) || (ls & PR_TOMB)) {
            pr__unlock(&c->lock);
            pr__unlock(&r->lock);
            if (is_live(&c->h)) /* being removed: help finish, then retry */
                conn_remove_all(p, (uint32_t) ci, (enum pr_event_type)(ls & 0xff));
            continue;
        }
        if (handle) {
            handle->index = (uint32_t) ci;
            handle->generation = PR_ST_GEN(pr_load(&c->h.state));
        }
        int64_t existing = find_presence(p, (uint32_t) ci, (uint32_t) ri);
        if (existing >= 0) {
            touch_conn(c);
            pr__unlock(&c->lock);
            pr__unlock(&r->lock);
            return PRESENCE_REFRESHED;
        }
        int64_t pi = pr__rec_claim(p, PR_K_PRES);
        if (pi < 0) {
            pr__unlock(&c->lock);
            pr__unlock(&r->lock);
            if (conn_new)
                conn_delete_if_empty(p, (uint32_t) ci);
            if (room_new)
                room_delete_if_empty(p, (uint32_t) ri, false);
            return (int) pi;
        }
        struct pr_pres *q = pr__pres(p, (uint32_t) pi);
        q->room = (uint32_t) ri;
        q->conn = (uint32_t) ci;
        q->state_blob = 0;
        q->h.aux = c->user_len == 0 ? 1u : 0u;
        q->conn_blob = c->name_blob;
        q->user_blob = c->user_blob;
        q->conn_len = c->name_len;
        q->user_len = c->user_len;
        q->room_prev = 0;
        bool listed = pr__members_reserve(p, (uint32_t) ri) == 0;
        room_write_begin(r);
        if (!listed)
            pr_store(&r->marray, 0u); /* readers walk the list */
        q->room_next = r->members;
        if (r->members) {
            struct pr_pres *first = pr__pres(p, r->members - 1);
            if (first)
                first->room_prev = (uint32_t) pi + 1;
        }
        pr_store(&r->members, (uint32_t) pi + 1);
        PR_KILL_POINT("link");
        q->conn_next = c->presences;
        pr_store(&c->presences, (uint32_t) pi + 1);
        uint64_t st = pr_load(&q->h.state);
        pr_store(&q->h.state, PR_ST(PR_ST_GEN(st), PR_LIVE, PR_ST_SLOT(st)));
        PR_KILL_POINT("counter");
        pr__members_add(p, r, (uint32_t) pi, q);
        pr_store(&r->occupancy, r->occupancy + 1); /* read lock-free */
        pr_store(&r->anonymous, r->anonymous + q->h.aux);
        pr_store(&c->npres, c->npres + 1);
        room_write_end(r);
        touch_conn(c);
        if (room_new)
            pr__emit(p, PR_EV_ROOM_CREATED, (uint32_t) ri, UINT32_MAX, 0);
        pr__emit(p, PR_EV_JOIN, (uint32_t) ri, (uint32_t) ci, r->occupancy);
        pr__unlock(&c->lock);
        pr__unlock(&r->lock);
        pr__count(p, PR_C_JOINS, 1);
        return PRESENCE_JOINED;
    }
    return -EAGAIN;
}

int presence_join_ex(presence_t *p, const char *room, const char *conn, const char *user,
                     uint64_t timeout_ms, unsigned flags, presence_conn_t *handle_out)
{
    struct pr_name rn, cn, un;
    int rc = name_prep(p, room, &rn);
    if (!rc)
        rc = name_prep(p, conn, &cn);
    if (!rc && user)
        rc = name_prep(p, user, &un);
    if (rc)
        return rc;
    if ((flags & ~(unsigned) PRESENCE_BOUND) != 0)
        return PRESENCE_EOPTION;
    if (p->rdonly)
        return -EROFS;
    /* Out of space: reclaim what has passed its grace period (outside our own
     * read section, which would pin it) and try again. A reader process that
     * is descheduled inside its read section delays reclamation, so keep at it
     * for up to 200 ms while the limbo holds something; with the limbo empty
     * and the join still failing, the segment is really full. */
    uint64_t deadline = 0;
    bool nothing_left = false;
    for (;;) {
        struct pr_tls *t = pr__enter(p);
        if (!t)
            return -EUSERS;
        rc = join_once(p, &rn, &cn, user ? &un : NULL, timeout_ms, flags, handle_out);
        pr__exit(p, t);
        if (rc != -ENOSPC || nothing_left)
            return rc;
        uint64_t now = pr__now_ns();
        if (deadline == 0)
            deadline = now + 200000000ull;
        else if (now > deadline)
            return rc;
        int freed = pr__reclaim_for_space(p);
        if (freed < 0)
            return rc;
        /* An empty limbo after the reclaim: the next attempt sees all the space
         * there is and is the last. (Not "freed == 0" as well: the attempt's own
         * rollback -- a connection or room it made -- is in the limbo each time,
         * so freed never reached 0 and a full segment spun the whole 200 ms.) */
        nothing_left = pr__limbo_empty(p);
        if (freed == 0 && !nothing_left) {
            struct timespec ts = {0, 200000}; /* 0.2 ms: let the pinning reader run */
            nanosleep(&ts, NULL);
        }
    }
}

int presence_join(presence_t *p, const char *room, const char *conn, const char *user)
{
    return presence_join_ex(p, room, conn, user, 0, 0, NULL);
}

int presence_leave(presence_t *p, const char *room, const char *conn)
{
    struct pr_name rn, cn;
    int rc = name_prep(p, room, &rn);
    if (!rc)
        rc = name_prep(p, conn, &cn);
    if (rc)
        return rc;
    struct pr_tls *t;
    ENTER_OR_FAIL(p, t);
    int removed = 0;
    int64_t ri = pr__room_find(p, rn.s, rn.n, rn.hash);
    int64_t ci = pr__conn_find(p, cn.s, cn.n, cn.hash);
    if (ri >= 0 && ci >= 0 && lock_room(p, (uint32_t) ri) == 0) {
        struct pr_room *r = pr__room(p, (uint32_t) ri);
        struct pr_conn *c = pr__conn(p, (uint32_t) ci);
        if (lock_conn(p, (uint32_t) ci) == 0) {
            int64_t pi = is_live(&r->h) && is_live(&c->h)
                             ? find_presence(p, (uint32_t) ci, (uint32_t) ri)
                             : -1;
            bool conn_gone = false;
            if (pi >= 0) {
                pres_remove_locked(p, (uint32_t) ri, (uint32_t) ci, (uint32_t) pi, PR_EV_LEAVE);
                removed = 1;
                if (c->npres == 0 && c->presences == 0) {
                    conn_unpublish_locked(p, (uint32_t) ci);
                    conn_gone = true;
                }
            }
            pr__unlock(&c->lock);
            if (conn_gone)
                retire_rec(p, PR_K_CONN, (uint32_t) ci);
            if (pi >= 0)
                retire_rec(p, PR_K_PRES, (uint32_t) pi);
        }
        pr__unlock(&r->lock);
    }
    pr__exit(p, t);
    return ri < 0 && ri != -ENOENT ? (int) ri : removed;
}

int presence_leave_all(presence_t *p, const char *conn)
{
    struct pr_name cn;
    int rc = name_prep(p, conn, &cn);
    if (rc)
        return rc;
    struct pr_tls *t;
    ENTER_OR_FAIL(p, t);
    int64_t ci = pr__conn_find(p, cn.s, cn.n, cn.hash);
    int n = ci >= 0 ? conn_remove_all(p, (uint32_t) ci, PR_EV_LEAVE) : 0;
    pr__exit(p, t);
    return n;
}

int presence_touch(presence_t *p, const char *conn)
{
    struct pr_name cn;
    int rc = name_prep_lookup(p, conn, &cn);
    if (rc)
        return rc;
    if (p->rdonly)
        return bad_name_or(conn, -EROFS);
    /* First without a read section (its fence is a fifth of a touch): a find
     * whose state word reads the same after the touch was that connection
     * throughout (pr__conn_find_unpinned). Anything else asks again inside one. */
    uint64_t st;
    int64_t ci = pr__conn_find_unpinned(p, cn.s, cn.n, cn.hash, &st);
    if (ci >= 0) {
        struct pr_conn *c = pr__conn(p, (uint32_t) ci);
        rc = touch_conn(c);
        pr_smp_rmb(); /* the touch's loads before the state word's second load */
        if (pr_load(&c->h.state) == st)
            return rc;
    } else if (PR_UNLIKELY(pr__test_trust_miss)) {
        return PRESENCE_NOT_PRESENT; /* test switch: the wrong answer, on purpose */
    }
    struct pr_tls *t = pr__enter(p);
    if (!t)
        return bad_name_or(conn, -EUSERS);
    ci = pr__conn_find(p, cn.s, cn.n, cn.hash);
    rc = ci >= 0 ? touch_conn(pr__conn(p, (uint32_t) ci)) : PRESENCE_NOT_PRESENT;
    pr__exit(p, t);
    return ci >= 0 ? rc : bad_name_or(conn, rc);
}

int presence_touch_handle(presence_t *p, presence_conn_t h)
{
    if (p->rdonly)
        return -EROFS;
    struct pr_conn *c = pr__conn(p, h.index);
    if (!c || h.generation == 0)
        return PRESENCE_ESTALE;
    /* No read section needed: records are never unmapped, and the generation
     * check makes a recycled record answer "not present". */
    uint64_t st = pr_load(&c->h.state);
    if (PR_ST_GEN(st) != h.generation || PR_ST_STATE(st) != PR_LIVE)
        return PRESENCE_NOT_PRESENT;
    int rc = touch_conn(c);
    if (rc == 0 && PR_ST_GEN(pr_load(&c->h.state)) != h.generation)
        return PRESENCE_NOT_PRESENT;
    return rc;
}

int presence_on_message(presence_t *p, const char *conn, const void *msg, size_t len)
{
    int rc = presence_touch(p, conn);
    if (rc < 0)
        return rc;
    int mask = rc == PRESENCE_NOT_PRESENT ? PRESENCE_MSG_NOT_PRESENT : 0;
    if (msg && len == 11 && memcmp(msg, "\"heartbeat\"", 11) == 0)
        mask |= PRESENCE_MSG_HEARTBEAT;
    return mask;
}

/* Prune walks connections in index order and prefetches in three stages, so
 * that the cache misses of several removals overlap instead of following one
 * another: the record 16 ahead, what that record points at 8 ahead, what
 * those point at 4 ahead. A prefetch has no effect on correctness; the
 * addresses are only kept inside the segment. */

/* Whether prune may remove connection @ci (a guess for the prefetches: one
 * with its own timeout counts as due). Its record, or NULL. */
static struct pr_conn *removal_due(struct presence *p, uint32_t ci, uint64_t now,
                                   uint64_t max_age_ns)
{
    struct pr_conn *c = pr__conn(p, ci);
    if (!c || !is_live(&c->h))
        return NULL;
    uint64_t ls = pr_load(&c->last_seen);
    if ((ls & PR_TOMB) || ls >= now || (now - ls <= max_age_ns && c->timeout_ms == 0))
        return NULL;
    return c;
}

/* The second stage: its first presence, its names, its index buckets. */
static void prefetch_removal(struct presence *p, uint32_t ci, uint64_t now, uint64_t max_age_ns)
{
    struct pr_conn *c = removal_due(p, ci, now, max_age_ns);
    if (!c)
        return;
    uint32_t first = pr_load(&c->presences);
    if (first && pr__pres(p, first - 1))
        __builtin_prefetch(pr__pres(p, first - 1), 1);
    pr__blob_prefetch(p, c->name_blob);
    pr__blob_prefetch(p, c->user_blob);
    __builtin_prefetch(pr__bucket(p, PR_T_CONN, c->name_hash));
    if (c->user_len)
        __builtin_prefetch(pr__bucket(p, PR_T_USER, c->user_hash));
}

/* The third stage: the neighbours the removal writes, the presence's
 * room-list neighbours and the heads of the two hash chains when they are not
 * the connection itself. */
static void prefetch_neighbours(struct presence *p, uint32_t ci, uint64_t now, uint64_t max_age_ns)
{
    struct pr_conn *c = removal_due(p, ci, now, max_age_ns);
    if (!c)
        return;
    uint32_t first = pr_load(&c->presences);
    struct pr_pres *q = first ? pr__pres(p, first - 1) : NULL;
    if (q) {
        struct pr_pres *prev = q->room_prev ? pr__pres(p, q->room_prev - 1) : NULL;
        struct pr_pres *next = q->room_next ? pr__pres(p, q->room_next - 1) : NULL;
        if (prev)
            __builtin_prefetch(prev, 1);
        if (next)
            __builtin_prefetch(next, 1);
    }
    uint32_t head = pr_load(pr__bucket(p, PR_T_CONN, c->name_hash));
    if (head && head != ci + 1 && pr__conn(p, head - 1))
        __builtin_prefetch(pr__conn(p, head - 1), 1);
    if (c->user_len) {
        head = pr_load(pr__bucket(p, PR_T_USER, c->user_hash));
        if (head && head != ci + 1 && pr__conn(p, head - 1))
            __builtin_prefetch(pr__conn(p, head - 1), 1);
    }
}

int presence_prune(presence_t *p, uint64_t max_age_ms)
{
    struct pr_tls *t;
    ENTER_OR_FAIL(p, t);
    if (max_age_ms == 0)
        max_age_ms = p->h->max_age_ms;
    uint64_t now = pr__now_ns();
    uint64_t max_age_ns =
        max_age_ms > UINT64_MAX / 1000000ull ? UINT64_MAX : max_age_ms * 1000000ull;
    int count = 0;
    pr__emit_bulk_begin(p);
    deferred.on = true;
    for (uint32_t ci = 0; ci < p->h->cap_conns; ci++) {
        struct pr_conn *c = pr__conn(p, ci);
        if (ci + 16 < p->h->cap_conns)
            __builtin_prefetch(pr__conn(p, ci + 16));
        if (ci + 8 < p->h->cap_conns)
            prefetch_removal(p, ci + 8, now, max_age_ns);
        if (ci + 4 < p->h->cap_conns)
            prefetch_neighbours(p, ci + 4, now, max_age_ns);
        if (!is_live(&c->h))
            continue;
        uint64_t ls = pr_load(&c->last_seen);
        if (ls & PR_TOMB)
            continue;
        /* strictly older than now - timeout only; no overflow for huge timeouts */
        uint64_t timeout_ms = c->timeout_ms ? c->timeout_ms : max_age_ms;
        if (timeout_ms > UINT64_MAX / 1000000ull || ls >= now ||
            now - ls <= timeout_ms * 1000000ull)
            continue;
        if (!pr_cas(&c->last_seen, ls, PR_TOMB | PR_EV_TIMEOUT))
            continue; /* touched (or claimed) meanwhile */
        conn_remove_all(p, ci, PR_EV_TIMEOUT);
        count++;
    }
    members_restore_deferred(p);
    pr__emit_bulk_end();
    pr__exit(p, t);
    return count;
}

int presence_prune_rooms(presence_t *p)
{
    struct pr_tls *t;
    ENTER_OR_FAIL(p, t);
    int count = 0;
    for (uint32_t ri = 0; ri < p->h->cap_rooms; ri++) {
        struct pr_room *r = pr__room(p, ri);
        if (is_live(&r->h) && pr_load(&r->occupancy) == 0 && room_delete_if_empty(p, ri, true))
            count++;
    }
    pr__exit(p, t);
    return count;
}

/* Removes connections bound to processes that are dead (reason owner_died). */
int pr__remove_dead_owners(struct presence *p)
{
    int count = 0;
    for (uint32_t ci = 0; ci < p->h->cap_conns; ci++) {
        struct pr_conn *c = pr__conn(p, ci);
        if (!is_live(&c->h) || !(c->h.aux & PRESENCE_BOUND) || c->owner_proc == 0)
            continue;
        if (pr__proc_alive(p, c->owner_proc - 1, c->owner_gen))
            continue;
        uint64_t ls = pr_load(&c->last_seen);
        if ((ls & PR_TOMB) || !pr_cas(&c->last_seen, ls, PR_TOMB | PR_EV_OWNER_DIED))
            continue;
        conn_remove_all(p, ci, PR_EV_OWNER_DIED);
        count++;
    }
    return count;
}

/* Finishes removals a dead process left half-done (tombstoned connections),
 * and removes connections left without a presence: a process killed in a join
 * after creating the connection and before linking the presence (or in the
 * leave of its last presence, after the unlink) leaves one that nothing else
 * would remove until it expires. Under the connection's lock, an empty one is
 * removed only if it is still empty: a join in progress elsewhere that has not
 * linked its presence yet finds it gone and retries with a new one. */
int pr__finish_removals(struct presence *p)
{
    int count = 0;
    for (uint32_t ci = 0; ci < p->h->cap_conns; ci++) {
        struct pr_conn *c = pr__conn(p, ci);
        uint64_t ls = pr_load(&c->last_seen);
        if (!is_live(&c->h))
            continue;
        if (ls & PR_TOMB)
            count += conn_remove_all(p, ci, (enum pr_event_type)(ls & 0xff));
        else if (pr_load(&c->npres) == 0 && pr_load(&c->presences) == 0)
            conn_delete_if_empty(p, ci);
    }
    return count;
}

/* ---- state ----------------------------------------------------------------- */

/* Expands rooms and groups into a list of distinct room names (into *out). */
int pr__expand_rooms(struct presence *p, const char *const *rooms, size_t nrooms,
                     const char *const *groups, size_t ngroups, char ***out, size_t *nout);

int presence_set_state(presence_t *p, const char *const *rooms, size_t nrooms,
                       const char *const *groups, size_t ngroups, const char *conn,
                       const char *json)
{
    struct pr_name cn;
    int rc = name_prep(p, conn, &cn);
    if (rc)
        return rc;
    if (p->rdonly)
        return -EROFS;
    if (!json)
        return PRESENCE_ESTATEJSON;
    json_error_t jerr;
    /* "\u0000" is valid JSON: accept it (the compact text we store escapes it again). */
    json_t *doc = json_loads(json, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!doc || !json_is_object(doc)) {
        json_decref(doc);
        return PRESENCE_ESTATEJSON;
    }
    char *compact = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!compact)
        return -ENOMEM;
    size_t clen = strlen(compact);
    if (clen > p->h->state_max) {
        free(compact);
        return PRESENCE_ESTATESIZE;
    }
    char **names = NULL;
    size_t n = 0;
    rc = pr__expand_rooms(p, rooms, nrooms, groups, ngroups, &names, &n);
    if (rc) {
        free(compact);
        return rc;
    }
    struct pr_tls *t = pr__enter(p);
    if (!t) {
        free(compact);
        free(names);
        return -EUSERS;
    }
    int updated = 0;
    int64_t ci = pr__conn_find(p, cn.s, cn.n, cn.hash);
    uint32_t *refs = calloc(n ? n : 1, sizeof *refs);
    if (!refs)
        rc = -ENOMEM;
    /* First allocate every blob, so that running out of space changes nothing. */
    for (size_t i = 0; ci >= 0 && rc == 0 && i < n; i++) {
        size_t rl = strlen(names[i]);
        int64_t ri = pr__room_find(p, names[i], rl, pr__hash(p, names[i], rl));
        if (ri < 0 || find_presence(p, (uint32_t) ci, (uint32_t) ri) < 0)
            continue;
        int64_t ref = pr__blob_new(p, compact, (uint32_t) clen, 0);
        if (ref < 0) {
            rc = (int) ref;
            break;
        }
        refs[i] = (uint32_t) ref;
    }
    for (size_t i = 0; i < n && refs; i++) {
        if (!refs[i])
            continue;
        if (rc) {
            pr__blob_free(p, refs[i]);
            continue;
        }
        size_t rl = strlen(names[i]);
        int64_t ri = pr__room_find(p, names[i], rl, pr__hash(p, names[i], rl));
        int64_t pi = -1;
        if (ri >= 0 && lock_room(p, (uint32_t) ri) == 0) {
            struct pr_room *r = pr__room(p, (uint32_t) ri);
            pi = find_presence(p, (uint32_t) ci, (uint32_t) ri);
            if (pi >= 0) {
                struct pr_pres *q = pr__pres(p, (uint32_t) pi);
                struct pr_blob *b =
                    (struct pr_blob *) (void *) ((char *) pr__blob_get(p, refs[i], NULL) -
                                                 PR_BLOB_HDR);
                room_write_begin(r);
                uint32_t old = pr_xchg(&q->state_blob, refs[i]);
                /* Just after attaching, under the room lock (so before any
                 * set_state can detach it): the sweep tells a blob that was
                 * attached since it suspected it by this owner (check.c,
                 * blob_print). Set before the xchg, it let a sweep suspect the
                 * blob unattached with this owner and free it later, after the
                 * grace period, while another set_state carried it to limbo. */
                pr_store(&b->owner, PR_ITEM(PR_K_PRES, (uint32_t) pi));
                PR_KILL_POINT("state_swap");
                room_write_end(r);
                pr__emit(p, PR_EV_STATE_CHANGE, (uint32_t) ri, (uint32_t) ci, r->occupancy);
                pr__unlock(&r->lock);
                if (old)
                    pr__retire(p, PR_ITEM(PR_K_BLOB, old - 1));
                updated++;
            } else {
                pr__unlock(&r->lock);
            }
        }
        if (pi < 0)
            pr__blob_free(p, refs[i]);
    }
    pr__blob_attached(p);
    pr__exit(p, t);
    free(refs);
    free(names);
    free(compact);
    return rc ? rc : updated;
}
