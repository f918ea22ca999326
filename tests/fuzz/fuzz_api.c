/*
 * fuzz_api.c -- libFuzzer target: random sequences of write operations with
 * hostile names, JSON, sizes and limits, checked against a model of the
 * registry after every call.
 *
 * Each input gets a fresh segment (capacities from one of three profiles: tiny,
 * so that capacities run out; small; and one with room for groups of 2000) and
 * is decoded as a sequence of operations: join, join_ex (handle, flags), leave,
 * leave_all, touch, touch_handle, set_state, group_add (also in bulk, up to
 * 2100 rooms), group_remove, group_delete, prune_rooms, on_message, and reader
 * cross-checks (here_now with limit/offset and groups, get_state, where_now).
 *
 * The model knows which (room, connection) presences exist with their state,
 * each connection's user, which rooms exist (a room stays until prune_rooms),
 * and the groups. For every call it predicts the outcome from its own rules
 * (its own UTF-8 validator, jansson for the JSON) and checks:
 *   - a rejection is a negative, named code with a description, and exactly
 *     the one predicted when the model can tell (bad names, JSON, unknown group,
 *     user conflict, options); -ENOSPC only when the segment could really be
 *     out of records or arena pages;
 *   - an accepted call returns what the model says (JOINED/REFRESHED, 1/0,
 *     counts);
 *   - nothing else changed: presence_stats' counts (rooms, connections,
 *     presences, groups, group members, joins, leaves) equal the model's after
 *     every call, and the rooms, uuids and groups the call touched read back
 *     exactly as the model has them (occupancy, anonymous count, users,
 *     here_now with state, where_now, group_list).
 * At the end everything is compared and presence_check must find nothing.
 * Any mismatch abort()s, so that libFuzzer records the input.
 *
 * Input format: byte 0 = profile; then operations, each an opcode byte and its
 * arguments (opcode % 16: 0-1 join, 2 join_ex, 3-4 leave, 5 leave_all, 6 touch,
 * 7 touch_handle, 8-9 set_state, 10 group_add, 11 bulk group_add, 12
 * group_remove, 13 group_delete, 14 prune_rooms, 15 on_message if bit 4 is set,
 * else a reader cross-check; at most 400 operations). A name argument is one byte: < 0xa0 a valid name from a pool,
 * < 0xe0 an invalid or edge-case name from a pool (NULL, "", 256 bytes, control
 * characters, bad UTF-8), else a literal: a length byte and that many raw bytes
 * (0xff: 256..511 bytes). A JSON argument: < 0xc0 one of a pool (NULL, arrays,
 * duplicates, "\u0000", documents of state_max and state_max + 1 bytes...),
 * else a literal with a 16-bit length.
 */
#include "fuzz_common.h"
#include "internal.h"
#include "layout.h"
#include "presence.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define API_PREFIX "pr-fuzz-api-"
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- input -------------------------------------------------------------------------- */

struct in {
    const uint8_t *d;
    size_t n, i;
};

static uint8_t rd8(struct in *in)
{
    return in->i < in->n ? in->d[in->i++] : 0;
}

static uint16_t rd16(struct in *in)
{
    uint16_t lo = rd8(in);
    return (uint16_t) (lo | (uint16_t) rd8(in) << 8);
}

/* Strings made for this input, freed at its end. */
static char **garbage;
static size_t ngarbage, capgarbage;

static char *keep(char *s)
{
    if (!s)
        abort();
    if (ngarbage == capgarbage) {
        capgarbage = capgarbage ? capgarbage * 2 : 64;
        garbage = realloc(garbage, capgarbage * sizeof *garbage);
        if (!garbage)
            abort();
    }
    garbage[ngarbage++] = s;
    return s;
}

static char *xstrdup(const char *s)
{
    char *r = strdup(s);
    if (!r)
        abort();
    return r;
}

static char name255[256], name256[257];

static const char *const valid_names[] = {
    "r0", "r1", "r2", "r3", "c0", "c1", "c2", "u0", "u1", "g0", "g1", "é", "日本", "a b",
    "x/y:z", name255, "\xf0\x9f\x98\x80", "\xc2\xa0", "\xef\xbf\xbf", "b1", "b2",
};
static const char *const edge_names[] = {
    NULL,     "",         name256,    "\x01",     "a\x7f",    "\x1f",     "\xc0\xaf",
    "\xc1\xbf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xc2\x85",
    "\xc2\x9f", "\xe0\x80\x80", "\xf0\x80\x80\x80", "a\xff",   "\xe6\x97", "\x80",
    "ok\n",   "\xf8\x88\x80\x80\x80", "\xed\xbf\xbf",
};

static const char *rd_name_from(struct in *in, uint8_t b)
{
    if (b < 0xa0)
        return valid_names[b % N(valid_names)];
    if (b < 0xe0)
        return edge_names[(b - 0xa0) % N(edge_names)];
    size_t len = rd8(in);
    if (len == 0xff)
        len = 256 + rd8(in);
    char *s = keep(calloc(len + 1, 1));
    for (size_t k = 0; k < len && in->i < in->n; k++)
        s[k] = (char) rd8(in);
    return s; /* an embedded NUL simply ends it */
}

static const char *rd_name(struct in *in)
{
    return rd_name_from(in, rd8(in));
}

/* A user: NULL (anonymous) or a name. */
static const char *rd_user(struct in *in)
{
    uint8_t b = rd8(in);
    return b < 0x30 ? NULL : rd_name_from(in, b);
}

static const char *json_pool[16];
static size_t njson_pool;

static const char *rd_json(struct in *in)
{
    uint8_t b = rd8(in);
    if (b < 0xc0)
        return json_pool[b % njson_pool];
    size_t len = rd16(in) % 2048;
    char *s = keep(calloc(len + 1, 1));
    for (size_t k = 0; k < len && in->i < in->n; k++)
        s[k] = (char) rd8(in);
    return s;
}

/* A list of names: NULL with a count (bad input), or 0..max names. */
struct names {
    const char **v;
    size_t n;
    bool null_list;
};

static struct names rd_names(struct in *in, unsigned max)
{
    struct names l = {NULL, 0, false};
    uint8_t c = rd8(in);
    if (c == 0xff) {
        l.null_list = true;
        l.n = 1;
        return l;
    }
    l.n = c % (max + 1);
    if (l.n) {
        l.v = (const char **) (void *) keep(calloc(l.n, sizeof *l.v));
        for (size_t k = 0; k < l.n; k++)
            l.v[k] = rd_name(in);
    }
    return l;
}

/* ---- the model's own rules ---------------------------------------------------------------- */

/* Names: 1..255 bytes of UTF-8 (shortest form, no surrogates, <= U+10FFFF) without
 * C0, DEL or C1 controls; the first offending character decides the code. */
static int model_name_err(const char *s)
{
    if (!s)
        return PRESENCE_ENAMELEN;
    size_t n = strlen(s);
    if (n == 0 || n > PRESENCE_NAME_MAX)
        return PRESENCE_ENAMELEN;
    const unsigned char *u = (const unsigned char *) s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        if (c < 0x20 || c == 0x7f)
            return PRESENCE_ENAMECTRL;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return PRESENCE_ENAMEUTF8;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (u[i + j] & 0xc0) != 0x80)
                return PRESENCE_ENAMEUTF8;
            cp = cp << 6 | (u[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return PRESENCE_ENAMEUTF8;
        if (cp <= 0x9f)
            return PRESENCE_ENAMECTRL;
        i += k + 1;
    }
    return 0;
}

struct mroom {
    char *name;
    bool exists;
};
struct mconn {
    char *name, *user; /* user NULL: anonymous */
    bool exists;
    bool has_handle;
    presence_conn_t handle;
};
struct mpres {
    size_t room, conn;
    json_t *state; /* NULL: none */
};
struct mgroup {
    char *name;
    bool exists;
    char **m;
    size_t n, cap;
};

static struct model {
    struct mroom *rooms;
    size_t nrooms, caprooms;
    struct mconn *conns;
    size_t nconns, capconns;
    struct mpres *pres;
    size_t npres, cappres;
    struct mgroup *groups;
    size_t ngroups, capgroups;
    presence_conn_t *stale; /* handles of removed connections */
    size_t nstale, capstale;
    uint64_t joins, leaves;
} M;

#define GROW(arr, n, cap)                                                                          \
    do {                                                                                           \
        if ((n) == (cap)) {                                                                        \
            (cap) = (cap) ? (cap) * 2 : 16;                                                        \
            void *np_ = realloc((arr), (cap) * sizeof *(arr));                                     \
            if (!np_)                                                                              \
                abort();                                                                           \
            (arr) = np_;                                                                           \
        }                                                                                          \
    } while (0)

static void model_reset(void)
{
    for (size_t i = 0; i < M.nrooms; i++)
        free(M.rooms[i].name);
    for (size_t i = 0; i < M.nconns; i++) {
        free(M.conns[i].name);
        free(M.conns[i].user);
    }
    for (size_t i = 0; i < M.npres; i++)
        json_decref(M.pres[i].state);
    for (size_t i = 0; i < M.ngroups; i++) {
        free(M.groups[i].name);
        for (size_t k = 0; k < M.groups[i].n; k++)
            free(M.groups[i].m[k]);
        free(M.groups[i].m);
    }
    free(M.rooms);
    free(M.conns);
    free(M.pres);
    free(M.groups);
    free(M.stale);
    memset(&M, 0, sizeof M);
}

/* Index of the room/conn/group named @s (created in the table, not existing, if new). */
static size_t m_room(const char *s)
{
    for (size_t i = 0; i < M.nrooms; i++)
        if (strcmp(M.rooms[i].name, s) == 0)
            return i;
    GROW(M.rooms, M.nrooms, M.caprooms);
    M.rooms[M.nrooms] = (struct mroom){xstrdup(s), false};
    return M.nrooms++;
}

static size_t m_conn(const char *s)
{
    for (size_t i = 0; i < M.nconns; i++)
        if (strcmp(M.conns[i].name, s) == 0)
            return i;
    GROW(M.conns, M.nconns, M.capconns);
    memset(&M.conns[M.nconns], 0, sizeof M.conns[M.nconns]);
    M.conns[M.nconns].name = xstrdup(s);
    return M.nconns++;
}

static size_t m_group(const char *s)
{
    for (size_t i = 0; i < M.ngroups; i++)
        if (strcmp(M.groups[i].name, s) == 0)
            return i;
    GROW(M.groups, M.ngroups, M.capgroups);
    memset(&M.groups[M.ngroups], 0, sizeof M.groups[M.ngroups]);
    M.groups[M.ngroups].name = xstrdup(s);
    return M.ngroups++;
}

/* The record of a name (created in the table if new). m_group() may move the table:
 * never write M.groups[m_group(x)] (the array may be read before the call). */
static struct mgroup *mg(const char *s)
{
    size_t i = m_group(s);
    return &M.groups[i];
}

static struct mconn *mc(const char *s)
{
    size_t i = m_conn(s);
    return &M.conns[i];
}

/* A group's members are kept sorted (groups of 2000: no quadratic model). Returns
 * the position of @s, or where it would go (*found tells which). */
static size_t m_group_pos(const struct mgroup *g, const char *s, bool *found)
{
    size_t lo = 0, hi = g->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->m[mid], s);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static bool m_group_has(const struct mgroup *g, const char *s)
{
    bool found;
    m_group_pos(g, s, &found);
    return found;
}

static void m_group_insert(struct mgroup *g, const char *s)
{
    bool found;
    size_t at = m_group_pos(g, s, &found);
    if (found)
        return;
    GROW(g->m, g->n, g->cap);
    memmove(g->m + at + 1, g->m + at, (g->n - at) * sizeof *g->m);
    g->m[at] = xstrdup(s);
    g->n++;
}

static bool m_group_erase(struct mgroup *g, const char *s)
{
    bool found;
    size_t at = m_group_pos(g, s, &found);
    if (!found)
        return false;
    free(g->m[at]);
    memmove(g->m + at, g->m + at + 1, (g->n - at - 1) * sizeof *g->m);
    g->n--;
    return true;
}

static long m_find_pres(size_t room, size_t conn)
{
    for (size_t i = 0; i < M.npres; i++)
        if (M.pres[i].room == room && M.pres[i].conn == conn)
            return (long) i;
    return -1;
}

static void m_remove_pres(size_t i)
{
    size_t conn = M.pres[i].conn;
    json_decref(M.pres[i].state);
    M.pres[i] = M.pres[--M.npres];
    M.leaves++;
    for (size_t k = 0; k < M.npres; k++)
        if (M.pres[k].conn == conn)
            return;
    /* its last presence: the connection goes, its handle goes stale */
    struct mconn *c = &M.conns[conn];
    c->exists = false;
    if (c->has_handle) {
        GROW(M.stale, M.nstale, M.capstale);
        M.stale[M.nstale++] = c->handle;
    }
    c->has_handle = false;
    free(c->user);
    c->user = NULL;
}

static bool same_user(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* ---- the segment -------------------------------------------------------------------------- */

static char seg_name[64];
static presence_t *P;
static presence_options_t O;

struct profile {
    uint32_t rooms, conns, pres, groups, gmembers, pages, state_max;
};
static const struct profile profiles[] = {
    {4, 4, 6, 2, 6, 4, 200},       /* tiny: capacities run out */
    {24, 24, 48, 6, 48, 8, 1500},  /* small */
    {12, 12, 24, 3, 4100, 16, 600}, /* groups of 2000 */
};

static char big_ok[4096], big_over[4096];

static void make_json_pool(uint32_t state_max)
{
    /* {"p":"xxx"} is 8 bytes plus the x's: exactly state_max, and one more. */
    size_t x = state_max - 8;
    memcpy(big_ok, "{\"p\":\"", 6);
    memset(big_ok + 6, 'x', x);
    memcpy(big_ok + 6 + x, "\"}", 3);
    memcpy(big_over, big_ok, 6);
    memset(big_over + 6, 'y', x + 1);
    memcpy(big_over + 7 + x, "\"}", 3);
    static const char *const fixed[] = {
        NULL,
        "{}",
        "{\"a\":1}",
        "{ \"mood\" : \"ok\", \"n\" : [1, 2, {\"b\": null}] }",
        "{\"k\":\"\\u0000x\"}",
        "{\"a\":1,\"a\":2}",
        "[]",
        "1",
        "\"s\"",
        "{",
        "{\"a\":\"\xff\"}",
        "{\"a\":1} x",
        "{\"\xc3\xa9\":\"\\u00e9\",\"t\":true,\"f\":1.5e3}",
    };
    njson_pool = 0;
    for (size_t i = 0; i < N(fixed); i++)
        json_pool[njson_pool++] = fixed[i];
    json_pool[njson_pool++] = big_ok;
    json_pool[njson_pool++] = big_over;
}

static void open_segment(uint8_t profile_byte)
{
    const struct profile *pf = &profiles[profile_byte % N(profiles)];
    presence_options_init(&O);
    O.rooms = pf->rooms;
    O.connections = pf->conns;
    O.presences = pf->pres;
    O.groups = pf->groups;
    O.group_members = pf->gmembers;
    O.arena_bytes = (uint64_t) pf->pages * PR_PAGE_SIZE;
    O.state_max = pf->state_max;
    O.ring_entries = 64;
    O.procs = 2;
    O.readers = 4;
    O.flags = PRESENCE_CREATE | PRESENCE_EXCL;
    int rc = presence_open(seg_name, &O, &P);
    if (rc)
        FUZZ_FAIL("presence_open(create): %d %s", rc, presence_strerror(rc));
    presence_unlink(seg_name); /* the mapping stays; nothing is left behind */
    make_json_pool(pf->state_max);
}

/* Whether @need records of @kind are free (walks the free stacks of every
 * shard, at most @need steps in all; the segment is quiescent). */
static bool have_free(unsigned kind, size_t need)
{
    uint32_t cap = pr__kind_cap(P, kind), n = 0;
    for (unsigned sh = 0; sh < PR_NSHARD; sh++) {
        uint32_t cur = PR_FH_IDX1(P->h->free_head[sh][kind]);
        for (uint32_t steps = 0; cur && n < need && steps <= cap; steps++) {
            struct pr_rec *r = pr__rec(P, kind, cur - 1);
            if (!r)
                break;
            n++;
            cur = r->link;
        }
    }
    return n >= need;
}

static uint32_t spare_pages(void)
{
    uint32_t used = P->h->next_page;
    return used < P->h->arena_pages ? P->h->arena_pages - used : 0;
}

static unsigned blob_class(size_t payload)
{
    unsigned c = 0;
    while (c < PR_NCLASSES && ((size_t) PR_UNIT << c) < payload + PR_BLOB_HDR)
        c++;
    return c;
}

/* Pages that @n blobs of @payload bytes could need at most. */
static uint32_t pages_for(size_t n, size_t payload)
{
    uint32_t per = PR_UNITS_PAGE >> blob_class(payload);
    return (uint32_t) ((n + per - 1) / per);
}

/* ---- checks ------------------------------------------------------------------------------- */

static const char *show(const char *s)
{
    return s ? s : "(null)";
}

/* A call answered @rc where the model expected @want. -ENOSPC is accepted instead
 * when @nospc_ok (the segment could really be out of records or arena pages). */
static void expect(const char *what, int rc, int want, bool nospc_ok)
{
    fuzz_check_err(rc, what);
    if (rc == want)
        return;
    if (rc == -ENOSPC && nospc_ok)
        return;
    FUZZ_FAIL("%s: returned %d (%s), model expects %d (%s)%s", what, rc, presence_err_name(rc),
              want, presence_err_name(want), rc == -ENOSPC ? " -- ENOSPC with room to spare" : "");
}

static size_t m_count_rooms(void)
{
    size_t n = 0;
    for (size_t i = 0; i < M.nrooms; i++)
        n += M.rooms[i].exists;
    return n;
}

static void verify_counts(const char *after)
{
    presence_stats_t st;
    int rc = presence_stats(P, &st);
    FUZZ_ASSERT(rc == 0, "stats: %d", rc);
    size_t conns = 0, groups = 0, gm = 0;
    for (size_t i = 0; i < M.nconns; i++)
        conns += M.conns[i].exists;
    for (size_t i = 0; i < M.ngroups; i++)
        if (M.groups[i].exists) {
            groups++;
            gm += M.groups[i].n;
        }
    if (st.rooms != m_count_rooms() || st.connections != conns || st.presences != M.npres ||
        st.groups != groups || st.group_members != gm || st.joins != M.joins ||
        st.leaves != M.leaves)
        FUZZ_FAIL("after %s: stats rooms %u conns %u pres %u groups %u members %u joins %llu "
                  "leaves %llu; model %zu %zu %zu %zu %zu %llu %llu",
                  after, st.rooms, st.connections, st.presences, st.groups, st.group_members,
                  (unsigned long long) st.joins, (unsigned long long) st.leaves, m_count_rooms(),
                  conns, M.npres, groups, gm, (unsigned long long) M.joins,
                  (unsigned long long) M.leaves);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Sorted, unique copy of @v (pointers only). */
static size_t sort_unique(const char **v, size_t n)
{
    if (n < 2)
        return n;
    qsort(v, n, sizeof *v, cmp_str);
    size_t w = 1;
    for (size_t i = 1; i < n; i++)
        if (strcmp(v[i], v[w - 1]) != 0)
            v[w++] = v[i];
    return w;
}

static void same_list(const char *what, const char *key, presence_strlist_t *got,
                      const char **want, size_t nwant)
{
    bool ok = got->count == nwant;
    for (size_t i = 0; ok && i < nwant; i++)
        ok = strcmp(got->items[i], want[i]) == 0;
    if (!ok) {
        fprintf(stderr, "%s(%s): got %zu:", what, key, got->count);
        for (size_t i = 0; i < got->count; i++)
            fprintf(stderr, " [%s]", got->items[i]);
        fprintf(stderr, "\n  model %zu:", nwant);
        for (size_t i = 0; i < nwant; i++)
            fprintf(stderr, " [%s]", want[i]);
        FUZZ_FAIL("%s(%s) differs from the model", what, key);
    }
}

static bool json_text_equals(const char *text, const json_t *want)
{
    if (!text || !want)
        return !text && !want;
    json_error_t e;
    json_t *got = json_loads(text, JSON_ALLOW_NUL, &e);
    bool eq = got && json_equal(got, (json_t *) want);
    json_decref(got);
    return eq;
}

static const char *m_uuid(const struct mconn *c)
{
    return c->user ? c->user : c->name;
}

/* One room as here_now (uuids + state), occupancy, anonymous_count and users see it. */
static void verify_room(const char *name)
{
    size_t ri = m_room(name);
    size_t occ = 0, anon = 0;
    const char **users = calloc(M.npres + 1, sizeof *users);
    if (!users)
        abort();
    size_t nusers = 0;
    for (size_t i = 0; i < M.npres; i++)
        if (M.pres[i].room == ri) {
            occ++;
            const struct mconn *c = &M.conns[M.pres[i].conn];
            if (c->user)
                users[nusers++] = c->user;
            else
                anon++;
        }
    nusers = sort_unique(users, nusers);
    int rc = presence_occupancy(P, name);
    FUZZ_ASSERT(rc >= 0 && (size_t) rc == occ, "occupancy(%s) = %d, model %zu", name, rc, occ);
    rc = presence_anonymous_count(P, name);
    FUZZ_ASSERT(rc >= 0 && (size_t) rc == anon, "anonymous_count(%s) = %d, model %zu", name, rc,
                anon);
    presence_strlist_t *ul = NULL;
    rc = presence_users(P, name, &ul);
    FUZZ_ASSERT(rc == 0, "users(%s): %d", name, rc);
    same_list("users", name, ul, users, nusers);
    presence_strlist_free(ul);
    free(users);

    presence_here_now_t *hn = NULL;
    const char *one[1] = {name};
    rc = presence_here_now(P, one, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE, 0,
                           0, &hn);
    FUZZ_ASSERT(rc == 0, "here_now(%s): %d", name, rc);
    FUZZ_ASSERT(hn->nrooms == 1 && hn->total_channels == 1 && strcmp(hn->rooms[0].name, name) == 0,
                "here_now(%s): %zu rooms", name, hn->nrooms);
    const presence_room_result_t *rr = &hn->rooms[0];
    FUZZ_ASSERT(rr->occupancy == occ && rr->noccupants == occ && hn->total_occupancy == occ,
                "here_now(%s): occupancy %u, %zu listed, model %zu", name, rr->occupancy,
                rr->noccupants, occ);
    for (size_t k = 0; k < rr->noccupants; k++) {
        const presence_occupant_t *o = &rr->occupants[k];
        size_t ci = m_conn(o->conn);
        long pi = m_find_pres(ri, ci);
        FUZZ_ASSERT(pi >= 0, "here_now(%s): occupant %s is not in the model", name, o->conn);
        for (size_t j = 0; j < k; j++)
            FUZZ_ASSERT(strcmp(rr->occupants[j].conn, o->conn) != 0,
                        "here_now(%s): %s listed twice", name, o->conn);
        FUZZ_ASSERT(strcmp(o->uuid, m_uuid(&M.conns[ci])) == 0,
                    "here_now(%s): %s has uuid %s, model %s", name, o->conn, o->uuid,
                    m_uuid(&M.conns[ci]));
        FUZZ_ASSERT(json_text_equals(o->state, M.pres[pi].state),
                    "here_now(%s): %s has state %s, model differs", name, o->conn, show(o->state));
    }
    /* the uuids alone: the same occupants in the same order, no connection ids */
    presence_here_now_t *uo = NULL;
    rc = presence_here_now(P, one, 1, NULL, 0, PRESENCE_UUIDS_ONLY | PRESENCE_INCLUDE_STATE, 0, 0,
                           &uo);
    FUZZ_ASSERT(rc == 0 && uo->rooms[0].noccupants == occ && uo->rooms[0].occupancy == occ,
                "here_now(%s, UUIDS_ONLY): %d", name, rc);
    for (size_t k = 0; k < occ; k++) {
        const presence_occupant_t *o = &uo->rooms[0].occupants[k], *f = &rr->occupants[k];
        bool same_state = o->state ? f->state && strcmp(o->state, f->state) == 0 : !f->state;
        FUZZ_ASSERT(o->conn == NULL && strcmp(o->uuid, f->uuid) == 0 && same_state,
                    "here_now(%s, UUIDS_ONLY): occupant %zu is %s, not %s", name, k, o->uuid,
                    f->uuid);
    }
    presence_here_now_free(uo);
    presence_here_now_free(hn);
}

/* where_now(@uuid): rooms of the connection named uuid and of connections whose user is uuid. */
static void verify_uuid(const char *uuid)
{
    const char **want = calloc(M.npres + 1, sizeof *want);
    if (!want)
        abort();
    size_t n = 0;
    for (size_t i = 0; i < M.npres; i++) {
        const struct mconn *c = &M.conns[M.pres[i].conn];
        if (strcmp(c->name, uuid) == 0 || (c->user && strcmp(c->user, uuid) == 0))
            want[n++] = M.rooms[M.pres[i].room].name;
    }
    n = sort_unique(want, n);
    presence_strlist_t *l = NULL;
    int rc = presence_where_now(P, uuid, &l);
    FUZZ_ASSERT(rc == 0, "where_now(%s): %d", uuid, rc);
    same_list("where_now", uuid, l, want, n);
    presence_strlist_free(l);
    free(want);
}

static void verify_group(const char *name)
{
    size_t gi = m_group(name);
    const struct mgroup *g = &M.groups[gi];
    presence_strlist_t *l = NULL;
    int rc = presence_group_list(P, name, &l);
    if (!g->exists) {
        FUZZ_ASSERT(rc == PRESENCE_ENOGROUP, "group_list(%s) of a missing group: %d", name, rc);
        return;
    }
    FUZZ_ASSERT(rc == 0, "group_list(%s): %d", name, rc);
    const char **want = calloc(g->n + 1, sizeof *want);
    if (!want)
        abort();
    for (size_t k = 0; k < g->n; k++)
        want[k] = g->m[k];
    size_t n = sort_unique(want, g->n);
    FUZZ_ASSERT(n == g->n, "model group %s has duplicates", name);
    same_list("group_list", name, l, want, n);
    presence_strlist_free(l);
    free(want);
}

/* Names a call touched: verified after it. */
static const char *t_rooms[8192], *t_uuids[64], *t_groups[16];
static size_t nt_rooms, nt_uuids, nt_groups;

static void touch_room(const char *s)
{
    if (s && !model_name_err(s) && nt_rooms < N(t_rooms))
        t_rooms[nt_rooms++] = s;
}
static void touch_uuid(const char *s)
{
    if (s && !model_name_err(s) && nt_uuids < N(t_uuids))
        t_uuids[nt_uuids++] = s;
}
static void touch_group(const char *s)
{
    if (s && !model_name_err(s) && nt_groups < N(t_groups))
        t_groups[nt_groups++] = s;
}

static void verify_touched(const char *after)
{
    verify_counts(after);
    size_t nr = nt_rooms > 64 ? 64 : nt_rooms; /* bulk group calls: a sample */
    for (size_t i = 0; i < nr; i++)
        verify_room(t_rooms[i]);
    for (size_t i = 0; i < nt_uuids; i++)
        verify_uuid(t_uuids[i]);
    for (size_t i = 0; i < nt_groups; i++)
        verify_group(t_groups[i]);
    nt_rooms = nt_uuids = nt_groups = 0;
}

static void verify_all(void)
{
    verify_counts("the end");
    for (size_t i = 0; i < M.nrooms; i++)
        verify_room(M.rooms[i].name);
    for (size_t i = 0; i < M.nconns; i++) {
        verify_uuid(M.conns[i].name);
        if (M.conns[i].user)
            verify_uuid(M.conns[i].user);
    }
    for (size_t i = 0; i < M.ngroups; i++)
        verify_group(M.groups[i].name);

    /* rooms(): every existing room, sorted, with its counts */
    presence_room_list_t *rl = NULL;
    int rc = presence_rooms(P, NULL, &rl);
    FUZZ_ASSERT(rc == 0, "rooms: %d", rc);
    FUZZ_ASSERT(rl->count == m_count_rooms(), "rooms: %zu listed, model %zu", rl->count,
                m_count_rooms());
    for (size_t i = 0; i < rl->count; i++) {
        if (i)
            FUZZ_ASSERT(strcmp(rl->items[i - 1].name, rl->items[i].name) < 0, "rooms: not sorted");
        size_t ri = m_room(rl->items[i].name);
        FUZZ_ASSERT(M.rooms[ri].exists, "rooms: %s does not exist in the model", rl->items[i].name);
        int occ = presence_occupancy(P, rl->items[i].name);
        FUZZ_ASSERT(occ >= 0 && rl->items[i].occupancy == (uint32_t) occ, "rooms: %s occupancy",
                    rl->items[i].name);
    }
    presence_room_list_free(rl);

    presence_strlist_t *gl = NULL;
    rc = presence_groups(P, &gl);
    FUZZ_ASSERT(rc == 0, "groups: %d", rc);
    const char **want = calloc(M.ngroups + 1, sizeof *want);
    size_t n = 0;
    for (size_t i = 0; i < M.ngroups; i++)
        if (M.groups[i].exists)
            want[n++] = M.groups[i].name;
    n = sort_unique(want, n);
    same_list("groups", "", gl, want, n);
    free(want);
    presence_strlist_free(gl);

    presence_strlist_t *msgs = NULL;
    rc = presence_check(P, &msgs);
    if (rc != 0) {
        for (size_t i = 0; msgs && i < msgs->count; i++)
            fprintf(stderr, "  check: %s\n", msgs->items[i]);
        FUZZ_FAIL("presence_check found %d violations", rc);
    }
    presence_strlist_free(msgs);
}

/* ---- operations --------------------------------------------------------------------------- */

static int first_err(int a, int b)
{
    return a ? a : b;
}

static void op_join(struct in *in, bool ex)
{
    const char *room = rd_name(in), *conn = rd_name(in), *user = rd_user(in);
    unsigned flags = ex ? rd8(in) % 4 : 0; /* bit 1: not a flag */
    int want = first_err(model_name_err(room), model_name_err(conn));
    want = first_err(want, user ? model_name_err(user) : 0);
    want = first_err(want, (flags & ~(unsigned) PRESENCE_BOUND) ? PRESENCE_EOPTION : 0);
    size_t ri = 0, ci = 0;
    bool nospc_ok = false;
    if (!want) {
        ri = m_room(room);
        ci = m_conn(conn);
        if (M.conns[ci].exists && !same_user(M.conns[ci].user, user))
            want = PRESENCE_EUSERCONFLICT;
        else if (M.conns[ci].exists && m_find_pres(ri, ci) >= 0)
            want = PRESENCE_REFRESHED;
        else
            want = PRESENCE_JOINED;
        nospc_ok = want == PRESENCE_JOINED &&
                   (!have_free(PR_K_ROOM, 1) || !have_free(PR_K_CONN, 1) ||
                    !have_free(PR_K_PRES, 1) || spare_pages() < 3);
    }
    presence_conn_t h = {0, 0};
    int rc = ex ? presence_join_ex(P, room, conn, user, 0, flags, &h)
                : presence_join(P, room, conn, user);
    expect("join", rc, want, nospc_ok);
    if (rc >= 0) {
        FUZZ_ASSERT(!ex || (h.index < O.connections && h.generation != 0),
                    "join_ex: handle {%u, %u}", h.index, h.generation);
        struct mconn *c = &M.conns[ci];
        if (rc == PRESENCE_JOINED) {
            if (!c->exists) {
                c->exists = true;
                c->user = user ? xstrdup(user) : NULL;
            }
            M.rooms[ri].exists = true;
            GROW(M.pres, M.npres, M.cappres);
            M.pres[M.npres++] = (struct mpres){ri, ci, NULL};
            M.joins++;
        }
        if (ex) {
            FUZZ_ASSERT(!c->has_handle || (c->handle.index == h.index &&
                                           c->handle.generation == h.generation),
                        "join_ex: the handle of %s changed", conn);
            c->handle = h;
            c->has_handle = true;
        }
    }
    touch_room(room);
    touch_uuid(conn);
    touch_uuid(user);
}

static void op_leave(struct in *in)
{
    const char *room = rd_name(in), *conn = rd_name(in);
    int want = first_err(model_name_err(room), model_name_err(conn));
    long pi = -1;
    if (!want) {
        pi = m_find_pres(m_room(room), m_conn(conn));
        want = pi >= 0 ? 1 : 0;
    }
    int rc = presence_leave(P, room, conn);
    expect("leave", rc, want, false);
    if (rc == 1)
        m_remove_pres((size_t) pi);
    touch_room(room);
    touch_uuid(conn);
}

static void op_leave_all(struct in *in)
{
    const char *conn = rd_name(in);
    int want = model_name_err(conn);
    if (!want) {
        size_t ci = m_conn(conn);
        for (size_t i = 0; i < M.npres; i++)
            if (M.pres[i].conn == ci) {
                want++;
                touch_room(M.rooms[M.pres[i].room].name);
            }
    }
    int rc = presence_leave_all(P, conn);
    expect("leave_all", rc, want, false);
    if (rc > 0) {
        size_t ci = m_conn(conn);
        for (size_t i = M.npres; i-- > 0;)
            if (M.pres[i].conn == ci)
                m_remove_pres(i);
    }
    touch_uuid(conn);
}

static void op_touch(struct in *in)
{
    const char *conn = rd_name(in);
    int want = model_name_err(conn);
    if (!want)
        want = mc(conn)->exists ? 0 : PRESENCE_NOT_PRESENT;
    expect("touch", presence_touch(P, conn), want, false);
}

static void op_touch_handle(struct in *in)
{
    uint8_t how = rd8(in);
    presence_conn_t h;
    int want;
    if (how % 3 == 0 && M.nconns) {
        struct mconn *c = &M.conns[rd8(in) % M.nconns];
        if (!c->has_handle)
            return;
        h = c->handle;
        want = 0; /* has_handle implies it exists */
    } else if (how % 3 == 1 && M.nstale) {
        h = M.stale[rd8(in) % M.nstale];
        want = PRESENCE_NOT_PRESENT;
    } else {
        h.index = rd16(in);
        h.generation = rd8(in);
        if (h.index >= O.connections || h.generation == 0) {
            want = PRESENCE_ESTALE;
        } else {
            int rc = presence_touch_handle(P, h);
            FUZZ_ASSERT(rc == 0 || rc == PRESENCE_NOT_PRESENT, "touch_handle({%u, %u}): %d",
                        h.index, h.generation, rc);
            return;
        }
    }
    expect("touch_handle", presence_touch_handle(P, h), want, false);
}

static void op_on_message(struct in *in)
{
    const char *conn = rd_name(in);
    uint8_t b = rd8(in);
    char msg[16];
    size_t len;
    if (b & 1) {
        memcpy(msg, "\"heartbeat\"", 11);
        len = 11 - (b & 2 ? 1 : 0);
    } else {
        len = b % sizeof msg;
        for (size_t k = 0; k < len; k++)
            msg[k] = (char) rd8(in);
    }
    int want = model_name_err(conn);
    if (!want) {
        want = mc(conn)->exists ? 0 : PRESENCE_MSG_NOT_PRESENT;
        if (len == 11 && memcmp(msg, "\"heartbeat\"", 11) == 0)
            want |= PRESENCE_MSG_HEARTBEAT;
    }
    expect("on_message", presence_on_message(P, conn, msg, len), want, false);
}

/* Distinct room names of @rooms and the members of @groups (valid and existing). */
static size_t expand(const struct names *rooms, const struct names *groups, const char ***out)
{
    size_t cap = rooms->n + 1;
    for (size_t k = 0; k < groups->n; k++)
        cap += mg(groups->v[k])->n;
    const char **v = calloc(cap, sizeof *v);
    if (!v)
        abort();
    size_t n = 0;
    for (size_t k = 0; k < rooms->n; k++)
        v[n++] = rooms->v[k];
    for (size_t k = 0; k < groups->n; k++) {
        const struct mgroup *g = mg(groups->v[k]);
        for (size_t j = 0; j < g->n; j++)
            v[n++] = g->m[j];
    }
    *out = v;
    return sort_unique(v, n);
}

/* The error of expanding @rooms and @groups, or 0. */
static int expand_err(const struct names *rooms, const struct names *groups)
{
    if (rooms->null_list)
        return -EINVAL;
    for (size_t k = 0; k < rooms->n; k++)
        if (model_name_err(rooms->v[k]))
            return model_name_err(rooms->v[k]);
    if (groups->null_list)
        return -EINVAL;
    for (size_t k = 0; k < groups->n; k++) {
        int e = model_name_err(groups->v[k]);
        if (e)
            return e;
        if (!mg(groups->v[k])->exists)
            return PRESENCE_ENOGROUP;
    }
    return 0;
}

static void op_set_state(struct in *in)
{
    struct names rooms = rd_names(in, 4), groups = rd_names(in, 2);
    groups.null_list = false; /* only room lists are ever NULL (-EINVAL) */
    if (groups.v == NULL)
        groups.n = 0;
    const char *conn = rd_name(in);
    const char *json = rd_json(in);
    int want = model_name_err(conn);
    json_t *doc = NULL;
    size_t clen = 0;
    if (!want) {
        json_error_t e;
        doc = json ? json_loads(json, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e) : NULL;
        if (!doc || !json_is_object(doc)) {
            want = PRESENCE_ESTATEJSON;
        } else {
            char *compact = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (!compact)
                abort();
            clen = strlen(compact);
            free(compact);
            if (clen > O.state_max)
                want = PRESENCE_ESTATESIZE;
        }
    }
    want = first_err(want, expand_err(&rooms, &groups));
    const char **names = NULL;
    size_t nn = 0, upd = 0;
    bool nospc_ok = false;
    if (!want) {
        nn = expand(&rooms, &groups, &names);
        size_t ci = m_conn(conn);
        for (size_t k = 0; M.conns[ci].exists && k < nn; k++)
            upd += m_find_pres(m_room(names[k]), ci) >= 0;
        want = (int) upd;
        nospc_ok = upd && spare_pages() < pages_for(upd, clen);
    }
    int rc = presence_set_state(P, rooms.null_list ? NULL : rooms.v, rooms.n, groups.v, groups.n,
                                conn, json);
    expect("set_state", rc, want, nospc_ok);
    if (rc > 0) {
        size_t ci = m_conn(conn);
        for (size_t k = 0; k < nn; k++) {
            long pi = m_find_pres(m_room(names[k]), ci);
            if (pi >= 0) {
                json_decref(M.pres[pi].state);
                M.pres[pi].state = json_incref(doc);
            }
        }
    }
    for (size_t k = 0; k < nn; k++)
        touch_room(names[k]);
    for (size_t k = 0; !rooms.null_list && k < rooms.n; k++)
        touch_room(rooms.v[k]);
    free(names);
    json_decref(doc);
    touch_uuid(conn);
}

static int group_add(const char *group, const struct names *rooms)
{
    int want = model_name_err(group);
    want = first_err(want, rooms->null_list ? -EINVAL : 0);
    for (size_t k = 0; !want && k < rooms->n; k++)
        want = model_name_err(rooms->v[k]);
    if (!want && rooms->n > PRESENCE_GROUP_MAX_ROOMS)
        want = PRESENCE_EGROUPFULL;
    size_t fresh = 0;
    const char **nv = NULL;
    bool nospc_ok = false;
    if (!want) {
        struct mgroup *g = mg(group);
        nv = calloc(rooms->n + 1, sizeof *nv);
        if (!nv)
            abort();
        for (size_t k = 0; k < rooms->n; k++)
            if (!g->exists || !m_group_has(g, rooms->v[k]))
                nv[fresh++] = rooms->v[k];
        fresh = sort_unique(nv, fresh);
        size_t have = g->exists ? g->n : 0;
        want = have + fresh > PRESENCE_GROUP_MAX_ROOMS ? PRESENCE_EGROUPFULL : (int) fresh;
        uint32_t pages = g->exists ? 0 : pages_for(1, strlen(group));
        size_t per_class[PR_NCLASSES + 1] = {0};
        for (size_t k = 0; k < fresh; k++)
            per_class[blob_class(strlen(nv[k]))]++;
        for (unsigned c = 0; c < PR_NCLASSES; c++)
            pages += (uint32_t) ((per_class[c] + (PR_UNITS_PAGE >> c) - 1) / (PR_UNITS_PAGE >> c));
        nospc_ok = (!g->exists && !have_free(PR_K_GROUP, 1)) ||
                   !have_free(PR_K_GMEMBER, fresh) || spare_pages() < pages;
        if (want == PRESENCE_EGROUPFULL) /* group creation may run out first */
            nospc_ok = nospc_ok && !g->exists;
    }
    int rc = presence_group_add(P, group, rooms->null_list ? NULL : rooms->v, rooms->n);
    expect("group_add", rc, want, nospc_ok);
    if (rc >= 0) {
        struct mgroup *g = mg(group);
        g->exists = true;
        for (size_t k = 0; k < fresh; k++)
            m_group_insert(g, nv[k]);
    }
    for (size_t k = 0; k < fresh && k < 64; k++)
        touch_room(nv[k]);
    free(nv);
    touch_group(group);
    return rc;
}

static void op_group_add(struct in *in)
{
    const char *group = rd_name(in);
    struct names rooms = rd_names(in, 5);
    group_add(group, &rooms);
}

/* Up to 2100 generated room names b<start>..b<start+n-1> into a group: more than
 * 2000 in one call (rejected before any work), else in calls of up to 128 names
 * (group_add deduplicates a request in O(n^2): whole 2000-name calls would make
 * the fuzzer crawl). Stops at the first failure. An input gets 4300 names that
 * do work (two full groups and then some); later bulk calls add up to 16. */
static size_t bulk_budget;

static void op_group_bulk(struct in *in)
{
    const char *group = rd_name(in);
    size_t n = rd16(in) % 2101;
    if (n <= PRESENCE_GROUP_MAX_ROOMS) {
        if (n > bulk_budget)
            n %= 17;
        bulk_budget -= n < bulk_budget ? n : bulk_budget;
    }
    unsigned start = rd8(in) * 16u;
    size_t chunk = 1 + rd8(in) % 128;
    const char **v = (const char **) (void *) keep(calloc(n + 1, sizeof *v));
    for (size_t k = 0; k < n; k++) {
        char buf[24];
        snprintf(buf, sizeof buf, "b%zu", start + k);
        v[k] = keep(xstrdup(buf));
    }
    if (n == 0 || n > PRESENCE_GROUP_MAX_ROOMS)
        chunk = n ? n : 1;
    for (size_t off = 0; off < n || n == 0; off += chunk) {
        struct names sub = {v + off, n - off < chunk ? n - off : chunk, false};
        if (group_add(group, &sub) < 0 || n == 0)
            break;
    }
}

static void op_group_remove(struct in *in)
{
    const char *group = rd_name(in);
    struct names rooms = rd_names(in, 5);
    int want = model_name_err(group);
    want = first_err(want, rooms.null_list ? -EINVAL : 0);
    for (size_t k = 0; !want && k < rooms.n; k++)
        want = model_name_err(rooms.v[k]);
    if (!want && !mg(group)->exists)
        want = PRESENCE_ENOGROUP;
    const char **distinct = NULL;
    size_t nd = 0;
    if (!want) { /* each member goes once, however often it is named */
        const struct mgroup *g = mg(group);
        distinct = calloc(rooms.n + 1, sizeof *distinct);
        if (!distinct)
            abort();
        for (size_t k = 0; k < rooms.n; k++)
            distinct[k] = rooms.v[k];
        nd = sort_unique(distinct, rooms.n);
        for (size_t k = 0; k < nd; k++)
            want += m_group_has(g, distinct[k]);
    }
    int rc = presence_group_remove(P, group, rooms.null_list ? NULL : rooms.v, rooms.n);
    expect("group_remove", rc, want, false);
    if (rc > 0) {
        struct mgroup *g = mg(group);
        for (size_t k = 0; k < nd; k++)
            m_group_erase(g, distinct[k]);
    }
    free(distinct);
    touch_group(group);
}

static void op_group_delete(struct in *in)
{
    const char *group = rd_name(in);
    int want = model_name_err(group);
    if (!want)
        want = mg(group)->exists ? 1 : 0;
    int rc = presence_group_delete(P, group);
    expect("group_delete", rc, want, false);
    if (rc == 1) {
        struct mgroup *g = mg(group);
        for (size_t k = 0; k < g->n; k++)
            free(g->m[k]);
        g->n = 0;
        g->exists = false;
    }
    touch_group(group);
}

static void op_prune_rooms(void)
{
    int want = 0;
    for (size_t i = 0; i < M.nrooms; i++) {
        if (!M.rooms[i].exists)
            continue;
        bool empty = true;
        for (size_t k = 0; empty && k < M.npres; k++)
            empty = M.pres[k].room != i;
        if (empty) {
            want++;
            touch_room(M.rooms[i].name);
        }
    }
    int rc = presence_prune_rooms(P);
    expect("prune_rooms", rc, want, false);
    for (size_t i = 0; rc > 0 && i < M.nrooms; i++) {
        bool empty = true;
        for (size_t k = 0; empty && k < M.npres; k++)
            empty = M.pres[k].room != i;
        if (empty)
            M.rooms[i].exists = false;
    }
}

/* Reader cross-checks: here_now with groups, flags, limit and offset; get_state. */
static void op_query(struct in *in)
{
    struct names rooms = rd_names(in, 4), groups = rd_names(in, 2);
    groups.null_list = false;
    if (groups.v == NULL)
        groups.n = 0;
    unsigned flags = rd8(in) % 4;
    size_t limit = rd8(in) % 4, offset = rd8(in) % 4;
    const char *uuid = rd_name(in);
    int want = expand_err(&rooms, &groups);
    const char **names = NULL;
    size_t nn = want ? 0 : expand(&rooms, &groups, &names);

    presence_here_now_t *hn = NULL;
    int rc = presence_here_now(P, rooms.null_list ? NULL : rooms.v, rooms.n, groups.v, groups.n,
                               flags, limit, offset, &hn);
    expect("here_now", rc, want, false);
    if (rc == 0) {
        FUZZ_ASSERT(hn->nrooms == nn && hn->total_channels == nn, "here_now: %zu rooms, model %zu",
                    hn->nrooms, nn);
        uint64_t total = 0;
        for (size_t i = 0; i < hn->nrooms; i++) {
            const presence_room_result_t *rr = &hn->rooms[i];
            size_t ri = m_room(rr->name), occ = 0;
            bool listed = false;
            for (size_t k = 0; k < nn && !listed; k++)
                listed = strcmp(names[k], rr->name) == 0;
            FUZZ_ASSERT(listed, "here_now: room %s was not asked for", rr->name);
            for (size_t k = 0; k < M.npres; k++)
                occ += M.pres[k].room == ri;
            size_t shown = occ > offset ? occ - offset : 0;
            if (limit && shown > limit)
                shown = limit;
            if (!(flags & (PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE)))
                shown = 0;
            FUZZ_ASSERT(rr->occupancy == occ && rr->noccupants == shown,
                        "here_now(%s, limit %zu, offset %zu): %u / %zu, model %zu / %zu", rr->name,
                        limit, offset, rr->occupancy, rr->noccupants, occ, shown);
            for (size_t k = 0; k < rr->noccupants; k++) {
                const presence_occupant_t *o = &rr->occupants[k];
                long pi = m_find_pres(ri, m_conn(o->conn));
                FUZZ_ASSERT(pi >= 0, "here_now(%s): %s is not in the model", rr->name, o->conn);
                FUZZ_ASSERT((flags & PRESENCE_INCLUDE_STATE) ||
                                o->state == NULL,
                            "here_now: state without INCLUDE_STATE");
                if (flags & PRESENCE_INCLUDE_STATE)
                    FUZZ_ASSERT(json_text_equals(o->state, M.pres[pi].state),
                                "here_now(%s): state of %s", rr->name, o->conn);
            }
            total += occ;
        }
        FUZZ_ASSERT(hn->total_occupancy == total, "here_now: total %llu, model %llu",
                    (unsigned long long) hn->total_occupancy, (unsigned long long) total);
        presence_here_now_free(hn);
    }

    /* get_state(uuid): one row per (room, connection named uuid or with user uuid). */
    int wantg = first_err(model_name_err(uuid), want);
    presence_state_list_t *sl = NULL;
    rc = presence_get_state(P, rooms.null_list ? NULL : rooms.v, rooms.n, groups.v, groups.n, uuid,
                            &sl);
    expect("get_state", rc, wantg, false);
    if (rc == 0) {
        size_t rows = 0;
        for (size_t k = 0; k < M.npres; k++) {
            const struct mconn *c = &M.conns[M.pres[k].conn];
            bool mine = strcmp(c->name, uuid) == 0 || (c->user && strcmp(c->user, uuid) == 0);
            bool asked = false;
            for (size_t j = 0; mine && j < nn && !asked; j++)
                asked = strcmp(names[j], M.rooms[M.pres[k].room].name) == 0;
            rows += mine && asked;
        }
        FUZZ_ASSERT(sl->count == rows, "get_state(%s): %zu rows, model %zu", uuid, sl->count, rows);
        for (size_t i = 0; i < sl->count; i++) {
            const presence_state_item_t *it = &sl->items[i];
            FUZZ_ASSERT(strcmp(it->uuid, uuid) == 0, "get_state: uuid %s", it->uuid);
            size_t ri = m_room(it->room);
            bool found = false;
            for (size_t k = 0; k < M.npres && !found; k++) {
                const struct mconn *c = &M.conns[M.pres[k].conn];
                found = M.pres[k].room == ri &&
                        (strcmp(c->name, uuid) == 0 || (c->user && strcmp(c->user, uuid) == 0)) &&
                        json_text_equals(it->state, M.pres[k].state);
            }
            FUZZ_ASSERT(found, "get_state(%s): row %s %s is not in the model", uuid, it->room,
                        show(it->state));
        }
        presence_state_list_free(sl);
    }
    free(names);
    if (!model_name_err(uuid))
        verify_uuid(uuid);
}

/* ---- driver --------------------------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    fuzz_remove_stale(API_PREFIX);
    snprintf(seg_name, sizeof seg_name, API_PREFIX "%d", (int) getpid());
    memset(name255, 'n', 255);
    memset(name256, 'o', 256);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size, 0};
    presence_unlink(seg_name);
    open_segment(rd8(&in));
    bulk_budget = 4300;
    unsigned ops = 0;
    while (in.i < in.n && ops++ < 400) {
        uint8_t op = rd8(&in);
        const char *what;
        switch (op % 16) {
        case 0: case 1: op_join(&in, false); what = "join"; break;
        case 2: op_join(&in, true); what = "join_ex"; break;
        case 3: case 4: op_leave(&in); what = "leave"; break;
        case 5: op_leave_all(&in); what = "leave_all"; break;
        case 6: op_touch(&in); what = "touch"; break;
        case 7: op_touch_handle(&in); what = "touch_handle"; break;
        case 8: case 9: op_set_state(&in); what = "set_state"; break;
        case 10: op_group_add(&in); what = "group_add"; break;
        case 11: op_group_bulk(&in); what = "group_add(bulk)"; break;
        case 12: op_group_remove(&in); what = "group_remove"; break;
        case 13: op_group_delete(&in); what = "group_delete"; break;
        case 14: op_prune_rooms(); what = "prune_rooms"; break;
        default:
            if (op & 0x10)
                op_on_message(&in), what = "on_message";
            else
                op_query(&in), what = "query";
            break;
        }
        verify_touched(what);
    }
    verify_all();
    presence_close(P);
    P = NULL;
    model_reset();
    for (size_t i = 0; i < ngarbage; i++)
        free(garbage[i]);
    ngarbage = 0;
    return 0;
}
