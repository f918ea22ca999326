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

#include <stdlib.h>
#include <string.h>

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

/* uuid of a presence's connection: its user if set, else its id. */
static char *conn_uuid(const struct presence *p, const struct pr_conn *c)
{
    return c->user_len ? dup_blob(p, c->user_blob, c->user_len)
                       : dup_blob(p, c->name_blob, c->name_len);
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

void presence_here_now_free(presence_here_now_t *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->nrooms; i++) {
        presence_room_result_t *r = &res->rooms[i];
        for (size_t j = 0; j < r->noccupants; j++) {
            free(r->occupants[j].uuid);
            free(r->occupants[j].conn);
            free(r->occupants[j].state);
        }
        free(r->occupants);
        free(r->name);
    }
    free(res->rooms);
    free(res);
}

static void occupants_free(presence_room_result_t *rr)
{
    for (size_t j = 0; j < rr->noccupants; j++) {
        free(rr->occupants[j].uuid);
        free(rr->occupants[j].conn);
        free(rr->occupants[j].state);
    }
    free(rr->occupants);
    rr->occupants = NULL;
    rr->noccupants = 0;
}

/* One walk of room @ri's members into @rr. Returns 0 or an error. */
static int walk_room(struct presence *p, uint32_t ri, unsigned flags, size_t limit, size_t offset,
                     presence_room_result_t *rr)
{
    struct pr_room *r = pr__room(p, ri);
    size_t cap = 0, seen = 0;
    uint32_t cur = pr_load(&r->members);
    for (uint32_t s = 0; cur && s <= p->h->cap_pres; s++) {
        struct pr_pres *q = pr__pres(p, cur - 1);
        if (!q)
            return PRESENCE_ECORRUPT;
        if (PR_ST_STATE(pr_load(&q->h.state)) == PR_LIVE && q->room == ri) {
            size_t k = seen++;
            bool want = (flags & (PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE)) &&
                        k >= offset && (limit == 0 || k - offset < limit);
            if (want) {
                struct pr_conn *c = pr__conn(p, q->conn);
                if (!c)
                    return PRESENCE_ECORRUPT;
                if (rr->noccupants == cap) {
                    size_t nc = cap ? cap * 2 : 16;
                    presence_occupant_t *no = realloc(rr->occupants, nc * sizeof *no);
                    if (!no)
                        return -ENOMEM;
                    rr->occupants = no;
                    cap = nc;
                }
                presence_occupant_t *o = &rr->occupants[rr->noccupants++];
                o->uuid = conn_uuid(p, c);
                o->conn = dup_blob(p, c->name_blob, c->name_len);
                uint32_t sb = pr_load(&q->state_blob);
                o->state = (flags & PRESENCE_INCLUDE_STATE) && sb ? dup_blob_any(p, sb) : NULL;
                if (!o->uuid || !o->conn)
                    return PRESENCE_ECORRUPT;
            }
        }
        cur = pr_load(&q->room_next);
    }
    rr->occupancy = (uint32_t) seen;
    return 0;
}

static int room_snapshot(struct presence *p, uint32_t ri, unsigned flags, size_t limit,
                         size_t offset, presence_room_result_t *rr)
{
    struct pr_room *r = pr__room(p, ri);
    int rc = 0;
    for (int attempt = 0; attempt < 8; attempt++) {
        uint32_t v1 = pr_load(&r->version);
        occupants_free(rr);
        rc = walk_room(p, ri, flags, limit, offset, rr);
        pr_smp_mb();
        uint32_t v2 = pr_load(&r->version);
        if (rc || (v1 == v2 && !(v1 & 1u)))
            break;
    }
    return rc;
}

int presence_here_now(presence_t *p, const char *const *rooms, size_t nrooms,
                      const char *const *groups, size_t ngroups, unsigned flags, size_t limit,
                      size_t offset, presence_here_now_t **out)
{
    presence_strlist_t names = {0, NULL};
    int rc = expand(p, rooms, nrooms, groups, ngroups, &names);
    presence_here_now_t *res = calloc(1, sizeof *res);
    if (!res && !rc)
        rc = -ENOMEM;
    if (!rc && names.count) {
        res->rooms = calloc(names.count, sizeof *res->rooms);
        if (!res->rooms)
            rc = -ENOMEM;
    }
    struct pr_tls *t = rc ? NULL : pr__enter(p);
    if (!rc && !t)
        rc = -EUSERS;
    for (size_t i = 0; !rc && i < names.count; i++) {
        presence_room_result_t *rr = &res->rooms[res->nrooms++];
        rr->name = names.items[i];
        names.items[i] = NULL;
        int64_t ri = pr__room_find(p, rr->name, strlen(rr->name),
                                   pr__hash(p, rr->name, strlen(rr->name)));
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
    res ? res->total_channels = res->nrooms : 0;
    for (size_t i = 0; i < names.count; i++)
        free(names.items[i]);
    free(names.items);
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
        rc = (int) (anonymous ? pr_load(&r->anonymous) : pr_load(&r->occupancy));
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
    return strcmp(((const presence_room_info_t *) a)->name, ((const presence_room_info_t *) b)->name);
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
    size_t cap = 0;
    for (size_t i = 0; !rc && i < names.count; i++) {
        int64_t ri = room_lookup(p, names.items[i]);
        if (ri < 0)
            continue;
        struct pr_room *r = pr__room(p, (uint32_t) ri);
        uint32_t cur = pr_load(&r->members);
        for (uint32_t s = 0; !rc && cur && s <= p->h->cap_pres; s++) {
            struct pr_pres *q = pr__pres(p, cur - 1);
            struct pr_conn *c = q ? pr__conn(p, q->conn) : NULL;
            if (!q || !c) {
                rc = PRESENCE_ECORRUPT;
                break;
            }
            bool match = c->user_len ? pr__blob_eq(p, c->user_blob, c->user_len, uuid, un)
                                     : pr__blob_eq(p, c->name_blob, c->name_len, uuid, un);
            if (match && PR_ST_STATE(pr_load(&q->h.state)) == PR_LIVE && q->room == (uint32_t) ri) {
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
            }
            cur = pr_load(&q->room_next);
        }
    }
    if (t)
        pr__exit(p, t);
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
