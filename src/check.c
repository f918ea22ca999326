/*
 * check.c -- whole-segment views: stats, the invariant checker, and the
 * maintenance pass (repairs, dead owners, orphan sweep, reclamation).
 *
 * Reachability: a room, connection or group is reachable when its index chain
 * holds it; a presence when its room's list holds it; a group member when its
 * group's list does. Every record is then exactly one of: FREE on its free
 * stack, reachable and LIVE, or RETIRED in limbo -- anything else on a
 * quiescent segment is a violation (check) or an orphan left by a dead
 * process (sweep).
 *
 * The sweep never races a live writer: it suspects orphans (phase 1), waits for
 * a grace period (every read section active then has ended, and every
 * operation runs inside one), re-marks, and acts only on records whose state
 * word has not changed and that are still unreachable (phase 2).
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- marking ------------------------------------------------------------------ */

struct marks {
    uint8_t *room, *conn, *pres, *group, *gmember, *limbo_rec[8];
    uint8_t *blob_ref, *blob_limbo; /* per arena unit */
    uint64_t nunits;
};

static void marks_free(struct marks *m)
{
    free(m->room);
    free(m->conn);
    free(m->pres);
    free(m->group);
    free(m->gmember);
    for (int i = 0; i < 8; i++)
        free(m->limbo_rec[i]);
    free(m->blob_ref);
    free(m->blob_limbo);
    memset(m, 0, sizeof *m);
}

static void mark_blob(struct marks *m, uint32_t ref)
{
    if (ref && ref - 1 < m->nunits)
        m->blob_ref[ref - 1] = 1;
}

static uint8_t *kind_marks(struct marks *m, unsigned kind)
{
    switch (kind) {
    case PR_K_ROOM:
        return m->room;
    case PR_K_CONN:
        return m->conn;
    case PR_K_PRES:
        return m->pres;
    case PR_K_GROUP:
        return m->group;
    default:
        return m->gmember;
    }
}

/* Walks every index and list. Returns 0 or -ENOMEM. */
static int mark_all(struct presence *p, struct marks *m)
{
    struct pr_header *h = p->h;
    memset(m, 0, sizeof *m);
    m->nunits = (uint64_t) h->arena_pages * PR_UNITS_PAGE;
    m->room = calloc(h->cap_rooms, 1);
    m->conn = calloc(h->cap_conns, 1);
    m->pres = calloc(h->cap_pres, 1);
    m->group = calloc(h->cap_groups, 1);
    m->gmember = calloc(h->cap_gmembers, 1);
    m->blob_ref = calloc(m->nunits, 1);
    m->blob_limbo = calloc(m->nunits, 1);
    for (unsigned k = PR_K_ROOM; k <= PR_K_GMEMBER; k++)
        m->limbo_rec[k] = calloc(pr__kind_cap(p, k), 1);
    if (!m->room || !m->conn || !m->pres || !m->group || !m->gmember || !m->blob_ref ||
        !m->blob_limbo || !m->limbo_rec[PR_K_ROOM] || !m->limbo_rec[PR_K_CONN] ||
        !m->limbo_rec[PR_K_PRES] || !m->limbo_rec[PR_K_GROUP] || !m->limbo_rec[PR_K_GMEMBER]) {
        marks_free(m);
        return -ENOMEM;
    }
    for (uint32_t b = 0; b < h->nb_rooms; b++) {
        uint32_t cur = pr_load(pr__bucket(p, PR_T_ROOM, b));
        for (uint32_t s = 0; cur && s <= h->cap_rooms; s++) {
            struct pr_room *r = pr__room(p, cur - 1);
            if (!r)
                break;
            /* A room met again (a corrupted chain's cycle) has had its members
             * walked: walking them again would make this O(rooms x presences). */
            uint32_t q1 = m->room[cur - 1] ? 0 : pr_load(&r->members);
            m->room[cur - 1] = 1;
            for (uint32_t t = 0; q1 && t <= h->cap_pres; t++) {
                struct pr_pres *q = pr__pres(p, q1 - 1);
                if (!q)
                    break;
                m->pres[q1 - 1] = 1;
                q1 = pr_load(&q->room_next);
            }
            cur = pr_load(&r->bucket_next);
        }
    }
    for (uint32_t b = 0; b < h->nb_conns; b++) {
        uint32_t cur = pr_load(pr__bucket(p, PR_T_CONN, b));
        for (uint32_t s = 0; cur && s <= h->cap_conns; s++) {
            struct pr_conn *c = pr__conn(p, cur - 1);
            if (!c)
                break;
            m->conn[cur - 1] = 1;
            cur = pr_load(&c->bucket_next);
        }
    }
    for (uint32_t b = 0; b < h->nb_groups; b++) {
        uint32_t cur = pr_load(pr__bucket(p, PR_T_GROUP, b));
        for (uint32_t s = 0; cur && s <= h->cap_groups; s++) {
            struct pr_group *g = pr__group(p, cur - 1);
            if (!g)
                break;
            uint32_t m1 = m->group[cur - 1] ? 0 : pr_load(&g->members); /* as for rooms */
            m->group[cur - 1] = 1;
            for (uint32_t t = 0; m1 && t <= h->cap_gmembers; t++) {
                struct pr_gmember *gm = pr__gmember(p, m1 - 1);
                if (!gm)
                    break;
                m->gmember[m1 - 1] = 1;
                m1 = pr_load(&gm->next);
            }
            cur = pr_load(&g->bucket_next);
        }
    }
    /* limbo: the threads' stacks, the header's and the lease holder's batches. An item is in one
     * list at most: a walk that meets a marked item has met a cycle (or a list
     * joined to another) and stops, so all the walks together take O(items). */
    bool more = true;
    for (uint32_t b = 0; more; b++) {
        uint32_t it = pr__limbo_list(p, b, &more);
        for (uint64_t s = 0; it && s <= m->nunits + PR_MAX_RECORDS; s++) {
            unsigned kind = PR_ITEM_KIND(it);
            uint32_t idx = PR_ITEM_IDX(it);
            uint32_t next;
            if (kind == PR_K_BLOB) {
                uint32_t len;
                const char *d = pr__blob_get(p, idx + 1, &len);
                if (!d || idx >= m->nunits || m->blob_limbo[idx])
                    break;
                m->blob_limbo[idx] = 1;
                next = pr_load(&((struct pr_blob *) (void *) (d - PR_BLOB_HDR))->link);
            } else {
                struct pr_rec *r = pr__rec(p, kind, idx);
                if (!r || m->limbo_rec[kind][idx])
                    break;
                m->limbo_rec[kind][idx] = 1;
                next = pr_load(&r->link);
            }
            it = next;
        }
    }
    /* blobs held by any record that is not FREE */
    for (uint32_t i = 0; i < h->cap_rooms; i++)
        if (PR_ST_STATE(pr_load(&pr__room(p, i)->h.state)) != PR_FREE) {
            mark_blob(m, pr__room(p, i)->name_blob);
            for (unsigned k = 0; k < PR_MCHUNKS; k++)
                mark_blob(m, pr_load(&pr__room(p, i)->mchunk[k]));
        }
    for (uint32_t i = 0; i < h->cap_conns; i++)
        if (PR_ST_STATE(pr_load(&pr__conn(p, i)->h.state)) != PR_FREE) {
            mark_blob(m, pr__conn(p, i)->name_blob);
            mark_blob(m, pr__conn(p, i)->user_blob);
        }
    for (uint32_t i = 0; i < h->cap_pres; i++)
        if (PR_ST_STATE(pr_load(&pr__pres(p, i)->h.state)) != PR_FREE)
            mark_blob(m, pr_load(&pr__pres(p, i)->state_blob));
    for (uint32_t i = 0; i < h->cap_groups; i++)
        if (PR_ST_STATE(pr_load(&pr__group(p, i)->h.state)) != PR_FREE)
            mark_blob(m, pr__group(p, i)->name_blob);
    for (uint32_t i = 0; i < h->cap_gmembers; i++)
        if (PR_ST_STATE(pr_load(&pr__gmember(p, i)->h.state)) != PR_FREE)
            mark_blob(m, pr__gmember(p, i)->name_blob);
    for (uint32_t i = 0; i < h->cap_readers; i++) {
        struct pr_reader *r = pr__reader(p, i);
        if (pr_load(&r->owner))
            mark_blob(m, pr_load(&r->inflight_blob));
    }
    return 0;
}

/* Marks the records on @kind's free stacks. A shard's walk is trusted only if
 * its head word did not change while it ran and every node it met was FREE
 * (pops run concurrently; only the lease holder pushes). Returns false if no
 * stable snapshot of every shard could be had, in which case callers must not
 * act on it. */
static bool stack_snapshot(struct presence *p, unsigned kind, uint8_t *marks)
{
    uint32_t cap = pr__kind_cap(p, kind);
    memset(marks, 0, cap ? cap : 1);
    uint8_t *walk = malloc(cap ? cap : 1);
    if (!walk)
        return false;
    bool stable = true;
    for (uint32_t sh = 0; sh < PR_NSHARD && stable; sh++) {
        uint64_t *head = &p->h->free_head[sh][kind];
        stable = false;
        for (int tries = 0; tries < 64 && !stable; tries++) {
            memset(walk, 0, cap ? cap : 1);
            uint64_t hw = pr_load(head);
            uint32_t cur = PR_FH_IDX1(hw);
            bool torn = false;
            for (uint32_t s = 0; cur && !torn; s++) {
                struct pr_rec *r = pr__rec(p, kind, cur - 1);
                if (!r || s > cap || walk[cur - 1] || PR_ST_STATE(pr_load(&r->state)) != PR_FREE) {
                    torn = true;
                    break;
                }
                walk[cur - 1] = 1;
                cur = pr_load(&r->link);
            }
            stable = !torn && pr_load(head) == hw;
        }
        for (uint32_t i = 0; stable && i < cap; i++)
            marks[i] |= walk[i];
    }
    free(walk);
    return stable;
}

/* Whether record @idx is on its free stack; *cache holds the snapshot (NULL
 * before the first call; every caller frees it). *stable tells whether the
 * answer can be acted on. */
// NOLINTBEGIN(clang-analyzer-unix.Malloc): the analyzer loses *cache across calls
static bool on_free_stack(struct presence *p, unsigned kind, uint32_t idx, uint8_t **cache,
                          bool *stable)
{
    if (!*cache) {
        uint32_t cap = pr__kind_cap(p, kind);
        uint8_t *snap = calloc(cap ? cap + 1 : 2, 1);
        if (!snap) {
            *stable = false;
            return true;
        }
        snap[cap] = stack_snapshot(p, kind, snap) ? 1 : 0;
        *cache = snap; /* the caller frees it */
    }
    *stable = (*cache)[pr__kind_cap(p, kind)] != 0;
    return (*cache)[idx] != 0;
}
// NOLINTEND(clang-analyzer-unix.Malloc)

/* ---- check ------------------------------------------------------------------ */

struct report {
    presence_strlist_t *l;
    size_t cap;
    int n;
};

__attribute__((format(printf, 2, 3))) static void viol(struct report *rep, const char *fmt, ...)
{
    rep->n++;
    if (!rep->l)
        return;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is right above
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (rep->l->count == rep->cap) {
        size_t nc = rep->cap ? rep->cap * 2 : 16;
        char **ni = realloc(rep->l->items, nc * sizeof *ni);
        if (!ni)
            return;
        rep->l->items = ni;
        rep->cap = nc;
    }
    char *s = strdup(buf);
    if (s)
        rep->l->items[rep->l->count++] = s;
}

static const char *kind_name(unsigned k)
{
    static const char *n[] = {"?",     "room",         "connection", "presence",
                              "group", "group member", "blob"};
    return k < 7 ? n[k] : "?";
}

static void check_records(struct presence *p, struct marks *m, struct report *rep)
{
    static const unsigned kinds[] = {PR_K_ROOM, PR_K_CONN, PR_K_PRES, PR_K_GROUP, PR_K_GMEMBER};
    for (size_t k = 0; k < 5; k++) {
        unsigned kind = kinds[k];
        uint8_t *stack = NULL;
        uint8_t *reach = kind_marks(m, kind);
        for (uint32_t i = 0; i < pr__kind_cap(p, kind); i++) {
            uint64_t st = pr_load(&pr__rec(p, kind, i)->state);
            switch (PR_ST_STATE(st)) {
            case PR_FREE: {
                bool stable;
                if (!on_free_stack(p, kind, i, &stack, &stable) && stable)
                    viol(rep, "%s %u is free but not on its free stack (leaked)", kind_name(kind),
                         i);
                else if (!stable && i == 0)
                    viol(rep, "%s free stack changed during every walk (not quiescent)",
                         kind_name(kind));
                break;
            }
            case PR_LIVE:
                if (!reach[i])
                    viol(rep, "%s %u is live but unreachable", kind_name(kind), i);
                break;
            case PR_RETIRED:
                if (!m->limbo_rec[kind][i])
                    viol(rep, "%s %u is retired but not in limbo (leaked)", kind_name(kind), i);
                break;
            case PR_CLAIMED:
            case PR_DEAD:
                viol(rep, "%s %u is %s (an operation in progress or a leak)", kind_name(kind), i,
                     PR_ST_STATE(st) == PR_DEAD ? "dead" : "claimed");
                break;
            default:
                viol(rep, "%s %u has an invalid state word", kind_name(kind), i);
            }
            if (reach[i] && PR_ST_STATE(st) != PR_LIVE)
                viol(rep, "%s %u is reachable but not live", kind_name(kind), i);
        }
        free(stack);
    }
}

/* Room @ri's member array (members.c), which claims to be exact: one entry
 * per LIVE presence (their count is checked against the list's by the
 * caller), each naming a presence of this room that points back at it, with
 * its names. */
static void check_member_array(struct presence *p, uint32_t ri, struct report *rep)
{
    const struct pr_room *r = pr__room(p, ri);
    uint32_t n = r->occupancy;
    if (n > PR_MCHUNKS * PR_MCHUNK_MAX) {
        viol(rep, "room %u: member array said exact for %u members", ri, n);
        return;
    }
    for (uint32_t k = 0, i = 0; i < n; k++) {
        uint32_t len;
        const struct pr_mentry *e =
            (const struct pr_mentry *) (const void *) pr__blob_get(p, r->mchunk[k], &len);
        uint32_t stop = k * PR_MCHUNK_MAX + (e ? len / (uint32_t) sizeof *e : 0);
        if (stop <= i || (stop < n && stop != (k + 1) * PR_MCHUNK_MAX)) {
            viol(rep, "room %u: member array chunk %u missing or short", ri, k);
            return;
        }
        for (; i < n && i < stop; i++, e++) {
            const struct pr_pres *q = pr__pres(p, e->pres);
            if (!q || q->room != ri || q->room_slot != i ||
                PR_ST_STATE(pr_load(&q->h.state)) != PR_LIVE)
                viol(rep, "room %u: member array entry %u names presence %u, not its own", ri, i,
                     e->pres);
            else if (e->conn_blob != q->conn_blob || e->user_blob != q->user_blob ||
                     e->conn_len != q->conn_len || e->user_len != q->user_len)
                viol(rep, "room %u: member array entry %u has names other than presence %u's", ri,
                     i, e->pres);
        }
    }
}

static void check_lists(struct presence *p, struct marks *m, struct report *rep)
{
    const struct pr_header *h = p->h;
    uint8_t *in_conn = calloc(h->cap_pres, 1);
    if (!in_conn)
        return;
    for (uint32_t ri = 0; ri < h->cap_rooms; ri++) {
        struct pr_room *r = pr__room(p, ri);
        if (PR_ST_STATE(pr_load(&r->h.state)) != PR_LIVE)
            continue;
        /* Hash the blob's own bytes: name_len is only trusted once it matches. */
        uint32_t nlen;
        const char *name = pr__blob_get(p, r->name_blob, &nlen);
        if (!name || nlen != r->name_len)
            viol(rep, "room %u: name blob %u invalid", ri, r->name_blob);
        else if (r->name_hash != pr__hash(p, name, nlen))
            viol(rep, "room %u: name hash does not match its name", ri);
        uint32_t occ = 0, anon = 0, prev = 0, cur = r->members;
        for (uint32_t s = 0; cur && s <= h->cap_pres; s++) {
            struct pr_pres *q = pr__pres(p, cur - 1);
            if (!q) {
                viol(rep, "room %u: member index %u out of bounds", ri, cur - 1);
                break;
            }
            if (q->room != ri)
                viol(rep, "room %u: presence %u names room %u", ri, cur - 1, q->room);
            if (q->room_prev != prev)
                viol(rep, "room %u: presence %u has a wrong back link", ri, cur - 1);
            occ++;
            anon += q->h.aux & 1u;
            prev = cur;
            cur = q->room_next;
        }
        if (occ != r->occupancy)
            viol(rep, "room %u: occupancy %u but %u members listed", ri, r->occupancy, occ);
        if (anon != r->anonymous)
            viol(rep, "room %u: anonymous %u but %u listed", ri, r->anonymous, anon);
        if (r->version & 1u)
            viol(rep, "room %u: version is odd (a write in progress)", ri);
        if (r->marray)
            check_member_array(p, ri, rep);
    }
    for (uint32_t ci = 0; ci < h->cap_conns; ci++) {
        struct pr_conn *c = pr__conn(p, ci);
        if (PR_ST_STATE(pr_load(&c->h.state)) != PR_LIVE)
            continue;
        uint32_t nlen;
        const char *name = pr__blob_get(p, c->name_blob, &nlen);
        if (!name || nlen != c->name_len)
            viol(rep, "connection %u: name blob invalid", ci);
        else if (nlen <= PR_CONN_INLINE && memcmp(name, c->name_inline, nlen) != 0)
            viol(rep, "connection %u: the copy of its name differs from the name", ci);
        if (c->user_len && !pr__blob_get(p, c->user_blob, NULL))
            viol(rep, "connection %u: user blob invalid", ci);
        if (pr_load(&c->last_seen) & PR_TOMB)
            viol(rep, "connection %u: removal left unfinished", ci);
        uint32_t n = 0, cur = c->presences;
        for (uint32_t s = 0; cur && s <= h->cap_pres; s++) {
            struct pr_pres *q = pr__pres(p, cur - 1);
            if (!q) {
                viol(rep, "connection %u: presence index out of bounds", ci);
                break;
            }
            if (q->conn != ci)
                viol(rep, "connection %u: presence %u names connection %u", ci, cur - 1, q->conn);
            if (!m->pres[cur - 1])
                viol(rep, "connection %u: presence %u is not in its room", ci, cur - 1);
            in_conn[cur - 1] = 1;
            n++;
            cur = q->conn_next;
        }
        if (n != c->npres)
            viol(rep, "connection %u: npres %u but %u listed", ci, c->npres, n);
        if (n == 0)
            viol(rep, "connection %u: live with no presence", ci);
    }
    for (uint32_t pi = 0; pi < h->cap_pres; pi++)
        if (m->pres[pi] && !in_conn[pi])
            viol(rep, "presence %u is in its room but not in its connection", pi);
    free(in_conn);
    for (uint32_t gi = 0; gi < h->cap_groups; gi++) {
        struct pr_group *g = pr__group(p, gi);
        if (PR_ST_STATE(pr_load(&g->h.state)) != PR_LIVE)
            continue;
        uint32_t n = 0, cur = g->members;
        for (uint32_t s = 0; cur && s <= h->cap_gmembers; s++) {
            struct pr_gmember *gm = pr__gmember(p, cur - 1);
            if (!gm)
                break;
            if (gm->group != gi)
                viol(rep, "group %u: member %u names group %u", gi, cur - 1, gm->group);
            n++;
            cur = gm->next;
        }
        if (n != g->count)
            viol(rep, "group %u: count %u but %u listed", gi, g->count, n);
        if (n > PRESENCE_GROUP_MAX_ROOMS)
            viol(rep, "group %u holds %u rooms", gi, n);
    }
}

static void check_blobs(struct presence *p, struct marks *m, struct report *rep)
{
    const struct pr_header *h = p->h;
    for (uint32_t pg = 0; pg < h->arena_pages; pg++) {
        struct pr_page *pm = PR_REGION(p, off_pages, struct pr_page) + pg;
        uint32_t c1 = pr_load(&pm->cls);
        if (c1 == 0)
            continue;
        if (c1 > PR_NCLASSES) {
            viol(rep, "arena page %u has invalid class %u", pg, c1);
            continue;
        }
        uint32_t cells = PR_UNITS_PAGE >> (c1 - 1);
        for (uint32_t cell = 0; cell < cells; cell++) {
            if (!((pr_load(&pm->bits[cell / 64]) >> (cell % 64)) & 1u))
                continue;
            uint64_t unit = (uint64_t) pg * PR_UNITS_PAGE + ((uint64_t) cell << (c1 - 1));
            if (!m->blob_ref[unit] && !m->blob_limbo[unit])
                viol(rep, "blob %llu is allocated but unreferenced (leaked)",
                     (unsigned long long) unit + 1);
        }
    }
    for (uint64_t u = 0; u < m->nunits; u++)
        if (m->blob_ref[u] && !pr__blob_allocated(p, (uint32_t) u + 1))
            viol(rep, "blob %llu is referenced but not allocated", (unsigned long long) u + 1);
}

int presence_check(presence_t *p, presence_strlist_t **out)
{
    struct report rep = {NULL, 0, 0};
    if (out) {
        rep.l = calloc(1, sizeof *rep.l);
        if (!rep.l)
            return -ENOMEM;
    }
    struct marks m;
    if (mark_all(p, &m) != 0) {
        presence_strlist_free(rep.l);
        return -ENOMEM;
    }
    check_records(p, &m, &rep);
    check_lists(p, &m, &rep);
    check_blobs(p, &m, &rep);
    marks_free(&m);
    if (out)
        *out = rep.l;
    return rep.n;
}

/* ---- stats -------------------------------------------------------------------- */

/* Live records of a kind: one load per record (O(capacity), no lock). Counted
 * here rather than kept in counters, which a process killed between a state
 * change and its counter update would leave off by one for good. */
static uint32_t count_live(const struct presence *p, unsigned kind)
{
    uint32_t n = 0, cap = pr__kind_cap(p, kind);
    for (uint32_t i = 0; i < cap; i++)
        n += PR_ST_STATE(pr_load(&pr__rec(p, kind, i)->state)) == PR_LIVE;
    return n;
}

int presence_stats(presence_t *p, presence_stats_t *s)
{
    const struct pr_header *h = p->h;
    memset(s, 0, sizeof *s);
    s->segment_bytes = h->segment_size;
    s->rooms = count_live(p, PR_K_ROOM);
    s->rooms_cap = h->cap_rooms;
    s->connections = count_live(p, PR_K_CONN);
    s->connections_cap = h->cap_conns;
    s->presences = count_live(p, PR_K_PRES);
    s->presences_cap = h->cap_pres;
    s->groups = count_live(p, PR_K_GROUP);
    s->groups_cap = h->cap_groups;
    s->group_members_cap = h->cap_gmembers;
    for (uint32_t i = 0; i < h->cap_gmembers; i++)
        s->group_members += PR_ST_STATE(pr_load(&pr__gmember(p, i)->h.state)) == PR_LIVE;
    s->arena_used = (uint64_t) pr__counter(p, PR_C_ARENA);
    s->arena_cap = (uint64_t) h->arena_pages * PR_PAGE_SIZE;
    s->procs_cap = h->cap_procs;
    for (uint32_t i = 0; i < h->cap_procs; i++)
        s->procs_attached += (uint32_t) pr_load(&pr__proc(p, i)->owner) != 0;
    s->readers_cap = h->cap_readers;
    for (uint32_t i = 0; i < h->cap_readers; i++)
        s->readers_active += pr_load(&pr__reader(p, i)->owner) != 0;
    s->epoch = pr_load(&h->global_epoch);
    s->limbo = pr__limbo_count(p);
    s->max_age_ms = h->max_age_ms;
    s->state_max = h->state_max;
    s->bytes_per_presence = sizeof(struct pr_pres) + sizeof(struct pr_mentry);
    s->joins = (uint64_t) pr__counter(p, PR_C_JOINS);
    s->leaves = (uint64_t) pr__counter(p, PR_C_LEAVES);
    s->expired = (uint64_t) pr__counter(p, PR_C_EXPIRED);
    s->reclaimed = (uint64_t) pr__counter(p, PR_C_RECLAIMED);
    uint64_t ro = pr_load(&h->reaper_owner);
    s->reaper_pid =
        ro && pr__proc_alive(p, (uint32_t) ro - 1, (uint32_t) (ro >> 32)) ? h->reaper_pid : 0;
    s->ring_tail = pr_load(&h->ring_tail);
    s->ring_entries = h->ring_entries;
    s->ring_oldest = s->ring_tail > h->ring_entries ? s->ring_tail - h->ring_entries : 0;
    for (uint32_t i = 0; i < PR_NSUBS; i++)
        s->subscribers += pr_load(&h->subs[i].owner) != 0;
    s->ring_waiters = pr_load(&h->ring_waiters);
    s->lapped = pr_load(&h->reaper_lapped);
    s->reaper_last_sweep_ns = pr_load(&h->reaper_last_sweep_ns);
    s->reaper_sweeps = pr_load(&h->reaper_sweeps);
    s->reaper_expired = pr_load(&h->reaper_expired);
    s->reaper_reclaimed = pr_load(&h->reaper_reclaimed);
    s->layout_version = h->layout_version;
    s->creator_pid = (int32_t) h->creator_pid;
    s->owner_uid = h->uid;
    s->mode = h->mode;
    s->created_ns = h->created_realtime_ns;
    return 0;
}

/* Frees the process slots of dead processes once their bound connections,
 * reader slots and subscriptions are gone (the sweep removed them just before):
 * the owner word keeps its generation and loses its pid. */
void pr__procs_collect(struct presence *p)
{
    for (uint32_t i = 0; i < p->h->cap_procs; i++) {
        struct pr_proc *pp = pr__proc(p, i);
        uint64_t owner = pr_load(&pp->owner);
        uint32_t gen = (uint32_t) (owner >> 32);
        if ((uint32_t) owner == 0 || pr__proc_alive(p, i, gen))
            continue;
        pr_cas(&pp->owner, owner, (uint64_t) gen << 32);
    }
}

int64_t pr__counter(const struct presence *p, enum pr_ctr c)
{
    /* Unsigned: wraps instead of overflowing (UB) on slots a corruption filled with garbage. */
    uint64_t sum = 0;
    for (uint32_t i = 0; i < p->h->cap_procs; i++)
        sum += (uint64_t) pr_load(&pr__proc(p, i)->ctr[c]);
    uint32_t nslots = pr__readers_used(p);
    for (uint32_t i = 0; i < nslots; i++)
        sum += (uint64_t) pr_load(&pr__reader(p, i)->ctr[c]);
    return (int64_t) sum;
}

void presence_proc_list_free(presence_proc_list_t *l)
{
    if (l) {
        free(l->items);
        free(l);
    }
}

int presence_procs(presence_t *p, presence_proc_list_t **out)
{
    const struct pr_header *h = p->h;
    presence_proc_list_t *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->items = calloc(h->cap_procs ? h->cap_procs : 1, sizeof *l->items);
    if (!l->items) {
        free(l);
        return -ENOMEM;
    }
    l->global_epoch = pr_load(&h->global_epoch);
    uint64_t reaper = pr_load(&h->reaper_owner);
    for (uint32_t i = 0; i < h->cap_procs; i++) {
        uint64_t owner = pr_load(&pr__proc(p, i)->owner);
        if ((uint32_t) owner == 0)
            continue;
        presence_proc_info_t *it = &l->items[l->count++];
        uint32_t gen = (uint32_t) (owner >> 32);
        uint64_t word = ((uint64_t) gen << 32) | (i + 1);
        it->slot = i;
        it->pid = (pid_t) (uint32_t) owner;
        it->alive = pr__proc_alive(p, i, gen);
        it->is_reaper = reaper == word;
        it->attached_ns = pr_load(&pr__proc(p, i)->attached_ns);
        for (uint32_t r = 0; r < h->cap_readers; r++) {
            struct pr_reader *rd = pr__reader(p, r);
            if (pr_load(&rd->owner) != word)
                continue;
            it->readers++;
            uint64_t e = pr_load(&rd->epoch);
            if (e && (it->oldest_epoch == 0 || e < it->oldest_epoch))
                it->oldest_epoch = e;
        }
        for (uint32_t k = 0; k < PR_NSUBS; k++)
            it->subscribers += pr_load(&h->subs[k].owner) == word;
    }
    *out = l;
    return 0;
}

/* ---- maintenance ----------------------------------------------------------------- */

/* Takes over, repairs and releases every lock whose holder is dead (reads
 * the lock words; only held ones cost more). */
static void touch_all_locks(struct presence *p)
{
    const struct pr_header *h = p->h;
    struct pr_stripe *stripes = PR_REGION(p, off_stripes, struct pr_stripe);
    for (uint32_t i = 0; i < 4 * h->nstripes; i++)
        pr__lock_recover(p, &stripes[i].lock, pr__stripe_repair, i);
    for (uint32_t i = 0; i < h->cap_rooms; i++)
        pr__lock_recover(p, &pr__room(p, i)->lock, pr__room_repair, i);
    for (uint32_t i = 0; i < h->cap_conns; i++)
        pr__lock_recover(p, &pr__conn(p, i)->lock, pr__conn_repair, i);
    for (uint32_t i = 0; i < h->cap_groups; i++)
        pr__lock_recover(p, &pr__group(p, i)->lock, pr__group_repair, i);
}

static bool sweep_push(struct presence *p, size_t *cap, uint32_t item, uint64_t state)
{
    if (p->nsweep == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        uint32_t *ni = realloc(p->sweep_items, nc * sizeof *ni);
        if (!ni)
            return false;
        p->sweep_items = ni;
        uint64_t *ns = realloc(p->sweep_states, nc * sizeof *ns);
        if (!ns)
            return false;
        p->sweep_states = ns;
        *cap = nc;
    }
    p->sweep_items[p->nsweep] = item;
    p->sweep_states[p->nsweep++] = state;
    return true;
}

/* What the sweep remembers of a blob it suspects: its allocation (seq) and its
 * owner. The seq alone does not say whether the blob was used in between: a
 * state blob that set_state allocated and had not attached yet (only the last
 * of several is in the reader slot's inflight_blob) is unreferenced in phase 1;
 * after the grace period a later set_state may have attached it and be
 * detaching it again, between its xchg and its retire (unreferenced, not in
 * limbo yet), and freeing it then freed it twice (once here, once from limbo)
 * while its cell went to someone else. A state blob's owner is 0 until
 * set_state has attached it (it sets the owner just after the xchg, under the
 * room lock), and it is detached only later, once, to be retired. So: seen
 * unreferenced with owner 0 in both phases, it was never attached and the
 * operation that allocated it is over (a leak); seen unreferenced with its
 * owner set in phase 1, it was on its way to limbo, and is there by phase 2
 * (or its carrier died: a leak). Both phases read the fingerprints before
 * their marks (blob_fps): read after, an attach that the marks missed would
 * show up as an owner. */
static uint64_t blob_print(const char *d)
{
    const struct pr_blob *b = (const struct pr_blob *) (const void *) (d - PR_BLOB_HDR);
    return ((uint64_t) pr_load(&b->owner) << 32) | pr_load(&b->seq);
}

/* The fingerprints of the allocated blobs, read before the marks: a blob that
 * a set_state attaches after the marks read its presence, and then sets the
 * owner of, would otherwise be suspected with an owner that says it was
 * attached already (and then its later trip to limbo would fool phase 2).
 * Returns the count, with *out NULL when there is none or no memory. */
struct blob_fp {
    uint32_t unit;
    uint64_t fp;
};
static size_t blob_fps(struct presence *p, struct blob_fp **out)
{
    size_t n = 0, cap = 0;
    struct blob_fp *v = NULL;
    for (uint32_t pg = 0; pg < p->h->arena_pages; pg++) {
        struct pr_page *pm = PR_REGION(p, off_pages, struct pr_page) + pg;
        uint32_t c1 = pr_load(&pm->cls);
        if (c1 == 0 || c1 > PR_NCLASSES)
            continue;
        uint32_t cells = PR_UNITS_PAGE >> (c1 - 1);
        for (uint32_t cell = 0; cell < cells; cell++) {
            uint64_t unit = (uint64_t) pg * PR_UNITS_PAGE + ((uint64_t) cell << (c1 - 1));
            if (!((pr_load(&pm->bits[cell / 64]) >> (cell % 64)) & 1u) || unit >= PR_MAX_RECORDS)
                continue;
            const char *d = pr__blob_get(p, (uint32_t) unit + 1, NULL);
            if (!d)
                continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 256;
                struct blob_fp *nv = realloc(v, nc * sizeof *nv);
                if (!nv) {
                    free(v);
                    *out = NULL;
                    return 0;
                }
                v = nv;
                cap = nc;
            }
            v[n].unit = (uint32_t) unit;
            v[n++].fp = blob_print(d);
        }
    }
    *out = v;
    return n;
}

/* Phase 1: suspects records that no index reaches and that are not where their
 * state says (FREE off its stack, RETIRED out of limbo, CLAIMED/DEAD/LIVE
 * unreachable), and blobs nothing references. */
static int sweep_suspect(struct presence *p)
{
    static const unsigned kinds[] = {PR_K_ROOM, PR_K_CONN, PR_K_PRES, PR_K_GROUP, PR_K_GMEMBER};
    pr__claims_complete(p); /* a dead process's half-made claim: a record to find */
    struct blob_fp *fps;
    size_t nfp = blob_fps(p, &fps); /* before the marks */
    struct marks m;
    if (mark_all(p, &m) != 0) {
        free(fps);
        return -ENOMEM;
    }
    size_t cap = 0;
    p->nsweep = 0;
    for (size_t k = 0; k < 5; k++) {
        unsigned kind = kinds[k];
        uint8_t *stack = NULL, *reach = kind_marks(&m, kind);
        for (uint32_t i = 0; i < pr__kind_cap(p, kind); i++) {
            uint64_t st = pr_load(&pr__rec(p, kind, i)->state);
            unsigned s = PR_ST_STATE(st);
            bool stable = false;
            bool odd = (s == PR_FREE && !on_free_stack(p, kind, i, &stack, &stable) && stable) ||
                       (s == PR_RETIRED && !m.limbo_rec[kind][i]) ||
                       ((s == PR_CLAIMED || s == PR_DEAD || s == PR_LIVE) && !reach[i]);
            if (odd && !sweep_push(p, &cap, PR_ITEM(kind, i), st))
                break;
        }
        free(stack);
    }
    for (size_t j = 0; j < nfp; j++) {
        uint32_t unit = fps[j].unit;
        if (m.blob_ref[unit] || m.blob_limbo[unit] || !pr__blob_allocated(p, unit + 1))
            continue;
        const char *d = pr__blob_get(p, unit + 1, NULL);
        if (d && blob_print(d) == fps[j].fp) /* the same blob, not attached since */
            sweep_push(p, &cap, PR_ITEM(PR_K_BLOB, unit), fps[j].fp);
    }
    free(fps);
    marks_free(&m);
    p->sweep_epoch = pr_load(&p->h->global_epoch);
    return 0;
}

static uint64_t min_reader_epoch(struct presence *p)
{
    uint64_t min = UINT64_MAX;
    for (uint32_t i = 0; i < p->h->cap_readers; i++) {
        struct pr_reader *r = pr__reader(p, i);
        uint64_t e = pr_load(&r->epoch);
        if (pr_load(&r->owner) && e && e < min)
            min = e;
    }
    return min;
}

/* Phase 2, after a grace period: act on suspects that did not move. */
static int sweep_act(struct presence *p)
{
    /* Blobs: compare the fingerprints before the marks (see blob_fps). */
    uint8_t *same = calloc(p->nsweep ? p->nsweep : 1, 1);
    if (!same)
        return -ENOMEM;
    for (size_t j = 0; j < p->nsweep; j++) {
        uint32_t item = p->sweep_items[j];
        const char *d =
            PR_ITEM_KIND(item) == PR_K_BLOB ? pr__blob_get(p, PR_ITEM_IDX(item) + 1, NULL) : NULL;
        same[j] = d && blob_print(d) == p->sweep_states[j];
    }
    struct marks m;
    if (mark_all(p, &m) != 0) {
        free(same);
        return -ENOMEM;
    }
    int fixed = 0;
    uint8_t *stacks[8] = {0};
    for (size_t j = 0; j < p->nsweep; j++) {
        uint32_t item = p->sweep_items[j];
        unsigned kind = PR_ITEM_KIND(item);
        uint32_t i = PR_ITEM_IDX(item);
        if (kind == PR_K_BLOB) {
            const char *d = pr__blob_get(p, i + 1, NULL);
            if (same[j] && d && pr__blob_allocated(p, i + 1) && !m.blob_ref[i] &&
                !m.blob_limbo[i] && blob_print(d) == p->sweep_states[j]) {
                pr__blob_free(p, i + 1);
                fixed++;
            }
            continue;
        }
        struct pr_rec *r = pr__rec(p, kind, i);
        uint64_t st = pr_load(&r->state);
        if (st != p->sweep_states[j])
            continue;
        unsigned s = PR_ST_STATE(st);
        if (s == PR_FREE) {
            bool stable;
            if (!on_free_stack(p, kind, i, &stacks[kind], &stable) && stable) {
                pr__rec_push_free(p, kind, i);
                fixed++;
            }
        } else if (s == PR_RETIRED) {
            if (!m.limbo_rec[kind][i]) {
                pr__retire(p, item);
                fixed++;
            }
        } else if (!kind_marks(&m, kind)[i]) {
            if (kind == PR_K_CONN) {
                struct pr_conn *c = pr__conn(p, i);
                if (c->user_len && pr__stripe_lock(p, PR_T_USER, c->user_hash) == 0) {
                    pr__chain_unlink(p, PR_T_USER, c->user_hash, i);
                    pr__unlock(pr__stripe(p, PR_T_USER, c->user_hash));
                }
            }
            if (pr_cas(&r->state, st, PR_ST(PR_ST_GEN(st), PR_RETIRED, PR_ST_SLOT(st)))) {
                if (s == PR_LIVE) {
                }
                pr__retire(p, item);
                fixed++;
            }
        }
    }
    for (int k = 0; k < 8; k++)
        free(stacks[k]);
    free(same);
    marks_free(&m);
    p->nsweep = 0;
    return fixed;
}

int presence_maintain(presence_t *p)
{
    if (p->rdonly)
        return -EROFS;
    if (pr__my_slot(p) == UINT32_MAX)
        return -EUSERS;
    int rc = pr__lease_take(p);
    if (rc)
        return rc == -EBUSY ? 0 : rc;
    int n = pr__reclaim(p); /* also clears reader slots of dead processes */
    if (pr_xchg(&p->h->owners_changed, 0u) && !pr_load(&p->h->needs_sweep)) {
        /* a process detached: its bound connections go; no full sweep needed */
        struct pr_tls *t = pr__enter(p);
        if (t) {
            pr__remove_dead_owners(p);
            pr__exit(p, t);
        }
        pr__procs_collect(p);
    }
    if (pr_xchg(&p->h->needs_sweep, 0u)) {
        touch_all_locks(p);
        struct pr_tls *t = pr__enter(p);
        if (t) {
            pr__remove_dead_owners(p);
            pr__finish_removals(p);
            pr__members_restore_all(p);
            pr__exit(p, t);
        }
        pr__subs_collect(p);
        pr__procs_collect(p);
        sweep_suspect(p);
        pr_fetch_add(&p->h->global_epoch, 1);
    }
    if (p->nsweep && min_reader_epoch(p) > p->sweep_epoch)
        n += sweep_act(p);
    n += pr__reclaim(p);
    pr__lease_drop(p);
    return n;
}
