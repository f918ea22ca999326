/*
 * group.c -- groups: named sets of at most PRESENCE_GROUP_MAX_ROOMS room names
 * (the rooms need not exist). A group is a record in the group index with a
 * list of member records; the list and its count change under the group's
 * lock (lock.c), and are read lock-free (query.c expands groups).
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int lock_group(struct presence *p, uint32_t gi)
{
    return pr__lock(p, &pr__group(p, gi)->lock, pr__group_repair, gi);
}

void pr__group_repair(struct presence *p, uint32_t gi)
{
    struct pr_group *g = pr__group(p, gi);
    uint32_t *slot = &g->members, n = 0;
    for (uint32_t s = 0; s <= p->h->cap_gmembers; s++) {
        uint32_t cur = pr_load(slot);
        struct pr_gmember *m = cur ? pr__gmember(p, cur - 1) : NULL;
        if (!m) {
            if (cur)
                pr_store(slot, 0u);
            break;
        }
        uint64_t st = pr_load(&m->h.state);
        if (PR_ST_STATE(st) != PR_LIVE || m->group != gi) {
            if (PR_ST_STATE(st) == PR_CLAIMED)
                pr_cas(&m->h.state, st, PR_ST(PR_ST_GEN(st), PR_DEAD, PR_ST_SLOT(st)));
            pr_store(slot, pr_load(&m->next));
            continue;
        }
        n++;
        slot = &m->next;
    }
    g->count = n;
}

static void retire_dead(struct presence *p, unsigned kind, uint32_t idx)
{
    struct pr_rec *r = pr__rec(p, kind, idx);
    uint64_t st = pr_load(&r->state);
    if ((PR_ST_STATE(st) == PR_DEAD || PR_ST_STATE(st) == PR_CLAIMED) &&
        pr_cas(&r->state, st, PR_ST(PR_ST_GEN(st), PR_RETIRED, PR_ST_SLOT(st))))
        pr__retire(p, PR_ITEM(kind, idx));
}

static void set_state(struct presence *p, struct pr_rec *r, unsigned state)
{
    uint64_t st = pr_load(&r->state);
    pr_store(&r->state, PR_ST(PR_ST_GEN(st), state, pr__my_slot(p)));
}

static int64_t member_find(struct presence *p, uint32_t gi, const char *s, size_t n, uint32_t hash)
{
    struct pr_group *g = pr__group(p, gi);
    uint32_t cur = pr_load(&g->members);
    for (uint32_t k = 0; cur && k <= p->h->cap_gmembers; k++) {
        struct pr_gmember *m = pr__gmember(p, cur - 1);
        if (!m)
            return PRESENCE_ECORRUPT;
        if (m->name_hash == hash && PR_ST_STATE(pr_load(&m->h.state)) == PR_LIVE &&
            pr__blob_eq(p, m->name_blob, m->name_len, s, n))
            return cur - 1;
        cur = pr_load(&m->next);
    }
    return -ENOENT;
}

/* The group named @name; with @create, made if absent (then *created is set). */
static int64_t group_get(struct presence *p, const char *name, size_t n, uint32_t hash, bool create,
                         bool *created)
{
    if (created)
        *created = false;
    int64_t gi = pr__group_find(p, name, n, hash);
    if (gi != -ENOENT || !create)
        return gi;
    int rc = pr__stripe_lock(p, PR_T_GROUP, hash);
    if (rc)
        return rc;
    gi = pr__group_find(p, name, n, hash);
    if (gi == -ENOENT) {
        gi = pr__rec_claim(p, PR_K_GROUP);
        if (gi >= 0) {
            struct pr_group *g = pr__group(p, (uint32_t) gi);
            int64_t nb = pr__blob_new(p, name, (uint32_t) n, PR_ITEM(PR_K_GROUP, (uint32_t) gi));
            if (nb < 0) {
                pr__blob_attached(p);
                retire_dead(p, PR_K_GROUP, (uint32_t) gi);
                gi = -ENOSPC;
            } else {
                g->name_blob = (uint32_t) nb;
                g->name_len = (uint32_t) n;
                g->name_hash = hash;
                g->members = 0;
                g->count = 0;
                set_state(p, &g->h, PR_LIVE);
                pr__chain_insert(p, PR_T_GROUP, hash, (uint32_t) gi);
                pr__blob_attached(p);
                *created = true;
            }
        }
    }
    pr__unlock(pr__stripe(p, PR_T_GROUP, hash));
    return gi;
}

/* Unpublishes group @gi (locked, empty); retire it after unlocking. */
static void group_unpublish_locked(struct presence *p, uint32_t gi)
{
    struct pr_group *g = pr__group(p, gi);
    /* stripe first, then DEAD: see conn_unpublish_locked() in registry.c */
    bool gs = pr__stripe_lock(p, PR_T_GROUP, g->name_hash) == 0;
    set_state(p, &g->h, PR_DEAD);
    if (gs) {
        pr__chain_unlink(p, PR_T_GROUP, g->name_hash, gi);
        pr__unlock(pr__stripe(p, PR_T_GROUP, g->name_hash));
    }
}

static int validate_all(const char *const *rooms, size_t n)
{
    if (n && !rooms)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        int rc = pr__validate_name(rooms[i], NULL);
        if (rc)
            return rc;
    }
    return 0;
}

int presence_group_add(presence_t *p, const char *group, const char *const *rooms, size_t nrooms)
{
    size_t gn;
    int rc = pr__validate_name(group, &gn);
    if (!rc)
        rc = validate_all(rooms, nrooms);
    if (rc)
        return rc;
    if (p->rdonly)
        return -EROFS;
    if (nrooms > PRESENCE_GROUP_MAX_ROOMS)
        return PRESENCE_EGROUPFULL;
    struct pr_tls *t = pr__enter(p);
    if (!t)
        return -EUSERS;
    uint32_t ghash = pr__hash(p, group, gn);
    bool created;
    int64_t gi = group_get(p, group, gn, ghash, true, &created);
    if (gi < 0) {
        pr__exit(p, t);
        return (int) gi;
    }
    struct pr_group *g = pr__group(p, (uint32_t) gi);
    rc = lock_group(p, (uint32_t) gi);
    if (rc) {
        pr__exit(p, t);
        return rc;
    }
    /* Which names are new (and distinct)? Count before changing anything. */
    int64_t *claimed = calloc(nrooms ? nrooms : 1, sizeof *claimed);
    size_t fresh = 0;
    if (!claimed)
        rc = -ENOMEM;
    for (size_t i = 0; !rc && i < nrooms; i++) {
        size_t n = strlen(rooms[i]);
        claimed[i] = -1;
        bool dup = member_find(p, (uint32_t) gi, rooms[i], n, pr__hash(p, rooms[i], n)) >= 0;
        for (size_t j = 0; j < i && !dup; j++)
            dup = claimed[j] != -1 && strcmp(rooms[j], rooms[i]) == 0;
        if (!dup) {
            claimed[i] = -2; /* to add */
            fresh++;
        }
    }
    if (!rc && g->count + fresh > PRESENCE_GROUP_MAX_ROOMS)
        rc = PRESENCE_EGROUPFULL;
    /* Claim every record and blob first: a full segment changes nothing. */
    for (size_t i = 0; !rc && i < nrooms; i++) {
        if (claimed[i] != -2)
            continue;
        int64_t mi = pr__rec_claim(p, PR_K_GMEMBER);
        if (mi < 0) {
            rc = (int) mi;
            break;
        }
        claimed[i] = mi;
        struct pr_gmember *m = pr__gmember(p, (uint32_t) mi);
        size_t n = strlen(rooms[i]);
        int64_t nb = pr__blob_new(p, rooms[i], (uint32_t) n, PR_ITEM(PR_K_GMEMBER, (uint32_t) mi));
        m->name_blob = nb > 0 ? (uint32_t) nb : 0;
        pr__blob_attached(p);
        if (nb < 0)
            rc = -ENOSPC;
        m->name_len = (uint32_t) n;
        m->name_hash = pr__hash(p, rooms[i], n);
        m->group = (uint32_t) gi;
    }
    int added = 0;
    for (size_t i = 0; claimed && i < nrooms; i++) {
        if (claimed[i] < 0)
            continue;
        struct pr_gmember *m = pr__gmember(p, (uint32_t) claimed[i]);
        if (rc) {
            retire_dead(p, PR_K_GMEMBER, (uint32_t) claimed[i]);
            continue;
        }
        m->next = g->members;
        set_state(p, &m->h, PR_LIVE);
        pr_store(&g->members, (uint32_t) claimed[i] + 1);
        g->count++;
        added++;
    }
    /* A failed call leaves no trace: drop the group only if this call made it. */
    bool drop = rc && created && g->count == 0 && g->members == 0;
    if (drop)
        group_unpublish_locked(p, (uint32_t) gi);
    pr__unlock(&g->lock);
    if (drop)
        retire_dead(p, PR_K_GROUP, (uint32_t) gi);
    free(claimed);
    pr__exit(p, t);
    return rc ? rc : added;
}

/* Removes the named rooms (all when @rooms is NULL and @all). */
static int group_remove_locked(struct presence *p, uint32_t gi, const char *const *rooms,
                               size_t nrooms, bool all)
{
    struct pr_group *g = pr__group(p, gi);
    int removed = 0;
    uint32_t *slot = &g->members;
    for (uint32_t k = 0; k <= p->h->cap_gmembers; k++) {
        uint32_t cur = pr_load(slot);
        struct pr_gmember *m = cur ? pr__gmember(p, cur - 1) : NULL;
        if (!m)
            break;
        bool hit = all;
        for (size_t i = 0; !hit && i < nrooms; i++)
            hit = pr__blob_eq(p, m->name_blob, m->name_len, rooms[i], strlen(rooms[i]));
        if (hit && PR_ST_STATE(pr_load(&m->h.state)) == PR_LIVE) {
            set_state(p, &m->h, PR_DEAD);
            pr_store(slot, m->next);
            g->count--;
            removed++;
            retire_dead(p, PR_K_GMEMBER, cur - 1);
            continue;
        }
        slot = &m->next;
    }
    return removed;
}

int presence_group_remove(presence_t *p, const char *group, const char *const *rooms, size_t nrooms)
{
    size_t gn;
    int rc = pr__validate_name(group, &gn);
    if (!rc)
        rc = validate_all(rooms, nrooms);
    if (rc)
        return rc;
    if (p->rdonly)
        return -EROFS;
    struct pr_tls *t = pr__enter(p);
    if (!t)
        return -EUSERS;
    int64_t gi = group_get(p, group, gn, pr__hash(p, group, gn), false, NULL);
    if (gi < 0) {
        pr__exit(p, t);
        return gi == -ENOENT ? PRESENCE_ENOGROUP : (int) gi;
    }
    rc = lock_group(p, (uint32_t) gi);
    if (!rc) {
        rc = group_remove_locked(p, (uint32_t) gi, rooms, nrooms, false);
        pr__unlock(&pr__group(p, (uint32_t) gi)->lock);
    }
    pr__exit(p, t);
    return rc;
}

int presence_group_delete(presence_t *p, const char *group)
{
    size_t gn;
    int rc = pr__validate_name(group, &gn);
    if (rc)
        return rc;
    if (p->rdonly)
        return -EROFS;
    struct pr_tls *t = pr__enter(p);
    if (!t)
        return -EUSERS;
    int64_t gi = group_get(p, group, gn, pr__hash(p, group, gn), false, NULL);
    int deleted = 0;
    if (gi >= 0 && lock_group(p, (uint32_t) gi) == 0) {
        struct pr_group *g = pr__group(p, (uint32_t) gi);
        if (PR_ST_STATE(pr_load(&g->h.state)) == PR_LIVE) {
            group_remove_locked(p, (uint32_t) gi, NULL, 0, true);
            group_unpublish_locked(p, (uint32_t) gi);
            deleted = 1;
        }
        pr__unlock(&g->lock);
        if (deleted)
            retire_dead(p, PR_K_GROUP, (uint32_t) gi);
    }
    pr__exit(p, t);
    return gi < 0 && gi != -ENOENT ? (int) gi : deleted;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

int presence_groups(presence_t *p, presence_strlist_t **out)
{
    presence_strlist_t *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->items = calloc(p->h->cap_groups ? p->h->cap_groups : 1, sizeof *l->items);
    if (!l->items) {
        free(l);
        return -ENOMEM;
    }
    struct pr_tls *t = pr__enter(p);
    for (uint32_t gi = 0; gi < p->h->cap_groups; gi++) {
        struct pr_group *g = pr__group(p, gi);
        if (PR_ST_STATE(pr_load(&g->h.state)) != PR_LIVE)
            continue;
        uint32_t len;
        const char *d = pr__blob_get(p, g->name_blob, &len);
        if (!d || len != g->name_len)
            continue;
        char *s = malloc((size_t) len + 1);
        if (!s)
            break;
        memcpy(s, d, len);
        s[len] = '\0';
        l->items[l->count++] = s;
    }
    if (t)
        pr__exit(p, t);
    qsort(l->items, l->count, sizeof *l->items, cmp_name);
    *out = l;
    return 0;
}
