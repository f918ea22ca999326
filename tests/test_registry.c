/*
 * test_registry.c -- the data model and its semantics (DESIGN.md, "The data model and
 * its semantics"), one process, one fresh segment per test.
 *
 * Every test ends with assert_clean(): presence_check() must report no violation
 * (the violations are printed when it does). Failed calls are checked to have
 * changed nothing with a snapshot of the counters, the event sequence and the
 * room list (snap_take / snap_same).
 *
 * White-box parts (internal.h, layout.h): test_check_detects_corruption breaks a
 * segment on purpose through the handle's base pointer.
 */
#include "internal.h"
#include "layout.h"
#include "presence.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- fixture ----------------------------------------------------------------- */

struct cfg {
    uint32_t rooms, connections, presences, groups, group_members, state_max;
    uint64_t arena_bytes, max_age_ms;
};

struct fx {
    presence_t *p;
    char name[64];
    presence_options_t opts;
};

static unsigned seg_counter;

static int setup(void **state)
{
    const struct cfg *c = *state;
    static const struct cfg none;
    if (!c)
        c = &none;
    struct fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->name, sizeof f->name, "pr-test-%d-reg-%u", (int) getpid(), ++seg_counter);
    presence_unlink(f->name);
    presence_options_t o;
    presence_options_init(&o);
    o.rooms = c->rooms ? c->rooms : 64;
    o.connections = c->connections ? c->connections : 64;
    o.presences = c->presences ? c->presences : 256;
    o.groups = c->groups ? c->groups : 16;
    o.group_members = c->group_members ? c->group_members : 8192;
    o.arena_bytes = c->arena_bytes ? c->arena_bytes : (4u << 20);
    o.state_max = c->state_max ? c->state_max : 32768;
    o.max_age_ms = c->max_age_ms ? c->max_age_ms : 60000;
    o.ring_entries = 64;
    o.procs = 8;
    o.readers = 16;
    o.flags = PRESENCE_CREATE | PRESENCE_EXCL;
    int rc = presence_open(f->name, &o, &f->p);
    if (rc) {
        print_error("presence_open(%s): %d %s\n", f->name, rc, presence_strerror(rc));
        free(f);
        return -1;
    }
    f->opts = o;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f) {
        presence_close(f->p);
        presence_unlink(f->name);
        free(f);
    }
    return 0;
}

#define FX(state) (((struct fx *) *(state))->p)

/* ---- helpers ----------------------------------------------------------------- */

#define assert_rc(expr, want)                                                                     \
    do {                                                                                          \
        int rc_ = (expr);                                                                         \
        int want_ = (want);                                                                       \
        if (rc_ != want_)                                                                         \
            fail_msg("%s = %d (%s), expected %d (%s)", #expr, rc_, presence_err_name(rc_), want_, \
                     presence_err_name(want_));                                                   \
    } while (0)

static void assert_clean(presence_t *p)
{
    presence_strlist_t *l = NULL;
    int n = presence_check(p, &l);
    if (n != 0) {
        print_error("presence_check: %d violation(s)\n", n);
        for (size_t i = 0; l && i < l->count; i++)
            print_error("  %s\n", l->items[i]);
    }
    presence_strlist_free(l);
    assert_int_equal(n, 0);
}

static void msleep(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static presence_stats_t stats(presence_t *p)
{
    presence_stats_t s;
    assert_rc(presence_stats(p, &s), 0);
    return s;
}

/* Whether @l holds exactly the @n names of @ap (in any order). */
static bool holds_exactly(const presence_strlist_t *l, size_t n, va_list ap)
{
    bool ok = l->count == n;
    for (size_t i = 0; ok && i < n; i++) {
        const char *want = va_arg(ap, const char *);
        bool found = false;
        for (size_t j = 0; j < l->count && !found; j++)
            found = strcmp(l->items[j], want) == 0;
        ok = found;
    }
    return ok;
}

static void print_items(const presence_strlist_t *l)
{
    for (size_t j = 0; j < l->count; j++)
        print_error("  '%s'\n", l->items[j]);
}

/* Asserts that @l holds exactly the @n names given (in any order). */
static void expect_set(const presence_strlist_t *l, size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    bool ok = holds_exactly(l, n, ap);
    va_end(ap);
    if (!ok) {
        print_error("list has %zu item(s), expected %zu:\n", l->count, n);
        print_items(l);
        fail();
    }
}

static void expect_where(presence_t *p, const char *uuid, size_t n, ...)
{
    presence_strlist_t *l = NULL;
    assert_rc(presence_where_now(p, uuid, &l), 0);
    va_list ap;
    va_start(ap, n);
    bool ok = holds_exactly(l, n, ap);
    va_end(ap);
    if (!ok) {
        print_error("where_now(%s) has %zu room(s), expected %zu:\n", uuid, l->count, n);
        print_items(l);
    }
    presence_strlist_free(l);
    assert_true(ok);
}

static void assert_sorted(const presence_strlist_t *l)
{
    for (size_t i = 1; i < l->count; i++)
        assert_true(strcmp(l->items[i - 1], l->items[i]) < 0);
}

/* The room list entry of @room, or NULL (into @l). */
static const presence_room_info_t *room_info(const presence_room_list_t *l, const char *room)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->items[i].name, room) == 0)
            return &l->items[i];
    return NULL;
}

static bool room_listed(presence_t *p, const char *room)
{
    presence_room_list_t *l = NULL;
    assert_rc(presence_rooms(p, NULL, &l), 0);
    bool found = room_info(l, room) != NULL;
    presence_room_list_free(l);
    return found;
}

/* The state of @uuid in @room: 1 and *out (malloc'd or NULL) if present, else 0. */
static int state_of(presence_t *p, const char *room, const char *uuid, char **out)
{
    presence_state_list_t *l = NULL;
    const char *rooms[] = {room};
    assert_rc(presence_get_state(p, rooms, 1, NULL, 0, uuid, &l), 0);
    assert_true(l->count <= 1);
    int found = (int) l->count;
    *out = NULL;
    if (found) {
        assert_string_equal(l->items[0].room, room);
        assert_string_equal(l->items[0].uuid, uuid);
        if (l->items[0].state)
            *out = strdup(l->items[0].state);
    }
    presence_state_list_free(l);
    return found;
}

static void expect_state(presence_t *p, const char *room, const char *uuid, const char *want)
{
    char *s = NULL;
    assert_int_equal(state_of(p, room, uuid, &s), 1);
    if (!want) {
        if (s)
            fail_msg("state of %s in %s is '%s', expected none", uuid, room, s);
    } else {
        if (!s)
            fail_msg("state of %s in %s is none, expected '%s'", uuid, room, want);
        assert_string_equal(s, want);
    }
    free(s);
}

/* Observable state, to prove that a failed call changed nothing. */
struct snap {
    presence_stats_t st;
    char rooms[4096];
};

static void snap_take(presence_t *p, struct snap *s)
{
    memset(s, 0, sizeof *s);
    s->st = stats(p);
    presence_room_list_t *l = NULL;
    assert_rc(presence_rooms(p, NULL, &l), 0);
    size_t off = 0;
    for (size_t i = 0; i < l->count && off < sizeof s->rooms; i++)
        off += (size_t) snprintf(s->rooms + off, sizeof s->rooms - off, "%s=%u/%u/%u;",
                                 l->items[i].name, l->items[i].occupancy, l->items[i].users,
                                 l->items[i].anonymous);
    presence_room_list_free(l);
}

/* @arena: also compare arena use (for calls rejected before any allocation). */
static void snap_same(presence_t *p, const struct snap *a, bool arena)
{
    struct snap b;
    snap_take(p, &b);
    assert_string_equal(b.rooms, a->rooms);
    assert_int_equal(b.st.rooms, a->st.rooms);
    assert_int_equal(b.st.connections, a->st.connections);
    assert_int_equal(b.st.presences, a->st.presences);
    assert_int_equal(b.st.groups, a->st.groups);
    assert_int_equal(b.st.group_members, a->st.group_members);
    assert_int_equal(b.st.joins, a->st.joins);
    assert_int_equal(b.st.leaves, a->st.leaves);
    assert_int_equal(b.st.expired, a->st.expired);
    assert_int_equal(b.st.ring_tail, a->st.ring_tail); /* no event */
    if (arena)
        assert_int_equal(b.st.arena_used, a->st.arena_used);
}

static void maintain2(presence_t *p)
{
    assert_true(presence_maintain(p) >= 0);
    assert_true(presence_maintain(p) >= 0);
}

/* ---- configurations ---------------------------------------------------------- */

static struct cfg cfg_state64 = {.state_max = 64};
static struct cfg cfg_maxage150 = {.max_age_ms = 150};
static struct cfg cfg_pres4 = {.presences = 4, .rooms = 16, .connections = 16};
static struct cfg cfg_rooms2 = {.rooms = 2, .connections = 16, .presences = 16};
static struct cfg cfg_conns2 = {.connections = 2, .rooms = 16, .presences = 16};
static struct cfg cfg_arena1 = {.arena_bytes = 65536};
static struct cfg cfg_members = {
    .connections = 40000, .presences = 40000, .arena_bytes = 16u << 20};
static struct cfg cfg_groups_small = {.groups = 1, .group_members = 4};

/* ---- join -------------------------------------------------------------------- */

static void test_join_then_refresh(void **state)
{
    presence_t *p = FX(state);
    presence_stats_t s0 = stats(p);
    assert_rc(presence_join(p, "r", "c", "u"), PRESENCE_JOINED);
    presence_stats_t s1 = stats(p);
    assert_int_equal(s1.joins, s0.joins + 1);
    assert_int_equal(s1.presences, 1);
    assert_int_equal(s1.connections, 1);
    assert_int_equal(s1.rooms, 1);

    assert_rc(presence_join(p, "r", "c", "u"), PRESENCE_REFRESHED);
    assert_rc(presence_join_ex(p, "r", "c", "u", 0, 0, NULL), PRESENCE_REFRESHED);
    presence_stats_t s2 = stats(p);
    assert_int_equal(s2.joins, s1.joins);         /* counted once */
    assert_int_equal(s2.ring_tail, s1.ring_tail); /* no event for a refresh */
    assert_int_equal(s2.presences, 1);
    assert_int_equal(s2.connections, 1);
    assert_int_equal(s2.rooms, 1);
    assert_rc(presence_occupancy(p, "r"), 1);

    /* a second room for the same connection is a new presence */
    assert_rc(presence_join(p, "r2", "c", "u"), PRESENCE_JOINED);
    assert_int_equal(stats(p).connections, 1);
    assert_int_equal(stats(p).presences, 2);
    expect_where(p, "c", 2, "r", "r2");
    assert_clean(p);
}

static void test_join_user_conflict(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "anon-room", "a", NULL), PRESENCE_JOINED);
    struct snap s;
    snap_take(p, &s);
    /* another user, in the same room and in a new one */
    assert_rc(presence_join(p, "r", "c", "other"), PRESENCE_EUSERCONFLICT);
    assert_rc(presence_join(p, "r-new", "c", "other"), PRESENCE_EUSERCONFLICT);
    /* no user for a connection that has one, and a user for an anonymous one */
    assert_rc(presence_join(p, "r-new", "c", NULL), PRESENCE_EUSERCONFLICT);
    assert_rc(presence_join(p, "r-new", "a", "u"), PRESENCE_EUSERCONFLICT);
    assert_rc(presence_join_ex(p, "r-new", "c", "other", 5, PRESENCE_BOUND, NULL),
              PRESENCE_EUSERCONFLICT);
    snap_same(p, &s, true);
    assert_rc(presence_occupancy(p, "r-new"), 0);
    assert_false(room_listed(p, "r-new"));
    expect_where(p, "c", 1, "r");
    expect_where(p, "other", 0);
    expect_where(p, "a", 1, "anon-room");
    presence_strlist_t *l = NULL;
    assert_rc(presence_users(p, "r", &l), 0);
    expect_set(l, 1, "u");
    presence_strlist_free(l);
    assert_clean(p);
}

static void test_join_conflict_does_not_refresh(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", "u"), PRESENCE_JOINED);
    msleep(200);
    assert_rc(presence_join(p, "r", "c", "other"), PRESENCE_EUSERCONFLICT);
    msleep(200);
    /* age ~400 ms since the join; the failed call was no activity */
    assert_rc(presence_prune(p, 300), 1);
    assert_rc(presence_touch(p, "c"), PRESENCE_NOT_PRESENT);
    assert_clean(p);
}

static void test_join_anonymous(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "anon", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r", "anon", NULL), PRESENCE_REFRESHED);
    assert_rc(presence_join(p, "r", "named", "u"), PRESENCE_JOINED);
    assert_rc(presence_anonymous_count(p, "r"), 1);
    assert_rc(presence_occupancy(p, "r"), 2);
    presence_strlist_t *l = NULL;
    assert_rc(presence_users(p, "r", &l), 0);
    expect_set(l, 1, "u"); /* anonymous presences are not users */
    presence_strlist_free(l);
    expect_where(p, "anon", 1, "r");

    const char *rooms[] = {"r"};
    presence_here_now_t *h = NULL;
    assert_rc(presence_here_now(p, rooms, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, 0, 0, &h), 0);
    assert_int_equal(h->nrooms, 1);
    assert_int_equal(h->rooms[0].noccupants, 2);
    bool saw_anon = false, saw_named = false;
    for (size_t i = 0; i < h->rooms[0].noccupants; i++) {
        presence_occupant_t *o = &h->rooms[0].occupants[i];
        if (strcmp(o->conn, "anon") == 0) {
            assert_string_equal(o->uuid, "anon"); /* no user: uuid = connection id */
            saw_anon = true;
        } else {
            assert_string_equal(o->conn, "named");
            assert_string_equal(o->uuid, "u");
            saw_named = true;
        }
    }
    assert_true(saw_anon && saw_named);
    presence_here_now_free(h);
    assert_clean(p);
}

static void test_join_refreshes_last_seen(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    msleep(200);
    assert_rc(presence_join(p, "r", "c", NULL), PRESENCE_REFRESHED);
    msleep(200);
    /* ages: ~400 ms since the first join, ~200 ms since the re-join */
    assert_rc(presence_prune(p, 300), 0);
    assert_rc(presence_occupancy(p, "r"), 1);
    /* a join in another room refreshes the connection too (one last_seen) */
    msleep(200);
    assert_rc(presence_join(p, "r2", "c", NULL), PRESENCE_JOINED);
    msleep(100);
    assert_rc(presence_prune(p, 250), 0);
    /* the test itself is sound: an older max_age does remove it */
    msleep(20);
    assert_rc(presence_prune(p, 50), 1);
    assert_rc(presence_occupancy(p, "r"), 0);
    assert_rc(presence_occupancy(p, "r2"), 0);
    assert_clean(p);
}

static void test_join_timeout_applies_on_create(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    /* the connection exists: its timeout (the default) stays */
    assert_rc(presence_join_ex(p, "r2", "c", NULL, 30, 0, NULL), PRESENCE_JOINED);
    msleep(100);
    assert_rc(presence_prune(p, 10000), 0);
    expect_where(p, "c", 2, "r", "r2");
    assert_clean(p);
}

static void test_join_bad_flags(void **state)
{
    presence_t *p = FX(state);
    struct snap s;
    snap_take(p, &s);
    assert_rc(presence_join_ex(p, "r", "c", NULL, 0, 0x80, NULL), PRESENCE_EOPTION);
    snap_same(p, &s, true);
    assert_false(room_listed(p, "r"));
    assert_clean(p);
}

/* ---- leave ------------------------------------------------------------------- */

static void test_leave(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r", "d", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "other", "c", "u"), PRESENCE_JOINED);
    presence_stats_t s0 = stats(p);
    assert_rc(presence_leave(p, "r", "c"), 1);
    assert_int_equal(stats(p).leaves, s0.leaves + 1);
    assert_rc(presence_leave(p, "r", "c"), 0); /* absent is not an error */
    assert_int_equal(stats(p).leaves, s0.leaves + 1);
    assert_rc(presence_occupancy(p, "r"), 1);
    expect_where(p, "c", 1, "other");
    struct snap s;
    snap_take(p, &s);
    assert_rc(presence_leave(p, "no-such-room", "c"), 0);
    assert_rc(presence_leave(p, "r", "no-such-conn"), 0);
    assert_rc(presence_leave(p, "no-such-room", "no-such-conn"), 0);
    assert_rc(presence_leave(p, "other", "d"), 0); /* both exist, no presence */
    snap_same(p, &s, true);
    assert_clean(p);
}

static void test_leave_all(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r1", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r3", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r1", "d", NULL), PRESENCE_JOINED);
    presence_stats_t s0 = stats(p);
    assert_rc(presence_leave_all(p, "c"), 3);
    presence_stats_t s1 = stats(p);
    assert_int_equal(s1.leaves, s0.leaves + 3);
    assert_int_equal(s1.ring_tail, s0.ring_tail + 3); /* one event per room */
    assert_int_equal(s1.connections, 1);
    assert_int_equal(s1.presences, 1);
    assert_rc(presence_touch(p, "c"), PRESENCE_NOT_PRESENT);
    expect_where(p, "c", 0);
    expect_where(p, "u", 0);
    assert_rc(presence_occupancy(p, "r1"), 1);
    assert_rc(presence_occupancy(p, "r2"), 0);
    assert_rc(presence_leave_all(p, "c"), 0);
    assert_rc(presence_leave_all(p, "never-seen"), 0);
    /* the connection is gone: it may come back with another user */
    assert_rc(presence_join(p, "r1", "c", "someone-else"), PRESENCE_JOINED);
    assert_clean(p);
}

static void test_last_leave_removes_connection(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r1", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_leave(p, "r1", "c"), 1);
    assert_rc(presence_touch(p, "c"), 0);
    assert_int_equal(stats(p).connections, 1);
    assert_rc(presence_leave(p, "r2", "c"), 1);
    assert_rc(presence_touch(p, "c"), PRESENCE_NOT_PRESENT);
    assert_int_equal(stats(p).connections, 0);
    assert_int_equal(stats(p).presences, 0);
    expect_where(p, "u", 0);
    /* gone: a new user is no conflict */
    assert_rc(presence_join(p, "r1", "c", "v"), PRESENCE_JOINED);
    assert_clean(p);
}

/* ---- touch --------------------------------------------------------------------- */

static void test_touch(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    assert_rc(presence_touch(p, "c"), 0);
    assert_rc(presence_touch(p, "unknown"), PRESENCE_NOT_PRESENT);
    assert_int_equal(PRESENCE_NOT_PRESENT, 1);
    struct snap s;
    snap_take(p, &s);
    assert_rc(presence_touch(p, "unknown"), PRESENCE_NOT_PRESENT); /* creates nothing */
    snap_same(p, &s, true);
    /* touch is activity */
    msleep(200);
    assert_rc(presence_touch(p, "c"), 0);
    msleep(200);
    assert_rc(presence_prune(p, 300), 0);
    assert_rc(presence_occupancy(p, "r"), 1);
    assert_clean(p);
}

/* A name of @n bytes, a different one for each length. */
static void name_of_length(char *name, size_t n)
{
    for (size_t i = 0; i < n; i++)
        name[i] = (char) ('a' + (i * 5 + n) % 26);
    name[n] = '\0';
}

/* Touch by name at every length around the records' inline copy (40 bytes: up
 * to it the first look outside a read section, past it the blob compare inside
 * one), with names that differ from a live one in a single byte: live names
 * answer 0 (and move last_seen), the others "not present" and change nothing. */
static void test_touch_name_lengths(void **state)
{
    presence_t *p = FX(state);
    char name[64], other[64];
    for (size_t n = 1; n <= 48; n++) {
        name_of_length(name, n);
        assert_rc(presence_join(p, "r", name, NULL), PRESENCE_JOINED);
    }
    msleep(150); /* well past the stamp's lead (4 ticks) and the coarse clock's lag (2) */
    for (size_t n = 1; n <= 48; n++) {
        name_of_length(name, n);
        assert_rc(presence_touch(p, name), 0);
        memcpy(other, name, n + 1);
        for (size_t i = 0; i < n; i += (n > 8 ? 7 : 1)) {
            other[i] = (char) (name[i] == 'z' ? 'y' : name[i] + 1);
            assert_rc(presence_touch(p, other), PRESENCE_NOT_PRESENT);
            other[i] = name[i];
        }
        other[n] = 'x'; /* one byte longer */
        other[n + 1] = '\0';
        assert_rc(presence_touch(p, other), PRESENCE_NOT_PRESENT);
    }
    /* every one of them was touched: none expires with a max age shorter than
     * the sleep (an untouched one would: 150 ms - a 40 ms lead even at HZ=100 is
     * over 100 ms) but longer than the time since the touches */
    assert_rc(presence_prune(p, 100), 0);
    assert_rc(presence_occupancy(p, "r"), 48);
    assert_clean(p);
}

static void test_touch_handle(void **state)
{
    presence_t *p = FX(state);
    presence_conn_t h = {0, 0}, h2 = {0, 0};
    assert_rc(presence_join_ex(p, "r", "c", NULL, 0, 0, &h), PRESENCE_JOINED);
    assert_int_not_equal(h.generation, 0);
    assert_rc(presence_touch_handle(p, h), 0);
    /* a refresh hands out the same handle */
    assert_rc(presence_join_ex(p, "r", "c", NULL, 0, 0, &h2), PRESENCE_REFRESHED);
    assert_int_equal(h2.index, h.index);
    assert_int_equal(h2.generation, h.generation);

    /* touch_handle is activity */
    msleep(200);
    assert_rc(presence_touch_handle(p, h), 0);
    msleep(200);
    assert_rc(presence_prune(p, 300), 0);

    /* invalid handles */
    presence_conn_t bad = {UINT32_MAX, h.generation};
    assert_rc(presence_touch_handle(p, bad), PRESENCE_ESTALE);
    bad = (presence_conn_t){((struct fx *) *state)->opts.connections, h.generation};
    assert_rc(presence_touch_handle(p, bad), PRESENCE_ESTALE);
    bad = (presence_conn_t){h.index, 0};
    assert_rc(presence_touch_handle(p, bad), PRESENCE_ESTALE);
    /* a valid index that never held a connection */
    bad = (presence_conn_t){h.index + 1, 1};
    int rc = presence_touch_handle(p, bad);
    assert_true(rc == PRESENCE_NOT_PRESENT || rc == PRESENCE_ESTALE);

    /* removed: not present, also once its record is reused */
    assert_rc(presence_leave(p, "r", "c"), 1);
    assert_rc(presence_touch_handle(p, h), PRESENCE_NOT_PRESENT);
    maintain2(p);
    assert_rc(presence_touch_handle(p, h), PRESENCE_NOT_PRESENT);
    for (int i = 0; i < 8; i++) {
        char c[16];
        snprintf(c, sizeof c, "c%d", i);
        assert_rc(presence_join(p, "r", c, NULL), PRESENCE_JOINED);
    }
    assert_rc(presence_join_ex(p, "r", "c", NULL, 0, 0, &h2), PRESENCE_JOINED);
    assert_rc(presence_touch_handle(p, h), PRESENCE_NOT_PRESENT);
    assert_rc(presence_touch_handle(p, h2), 0);
    assert_clean(p);
}

/* ---- on_message ------------------------------------------------------------------ */

static void test_on_message(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    assert_int_equal(strlen("\"heartbeat\""), 11);
    assert_rc(presence_on_message(p, "c", "\"heartbeat\"", 11), PRESENCE_MSG_HEARTBEAT);
    /* not NUL-terminated: exactly 11 bytes */
    char buf[11];
    memcpy(buf, "\"heartbeat\"", 11);
    assert_rc(presence_on_message(p, "c", buf, sizeof buf), PRESENCE_MSG_HEARTBEAT);
    assert_rc(presence_on_message(p, "c", "heartbeat", 9), 0);
    assert_rc(presence_on_message(p, "c", "\"heartbeat\"\n", 12), 0);
    assert_rc(presence_on_message(p, "c", "\"heartbeat\"\0", 12), 0); /* trailing NUL */
    assert_rc(presence_on_message(p, "c", "\"heart\0eat\"", 11), 0);  /* embedded NUL */
    assert_rc(presence_on_message(p, "c", "\"heartbeat", 10), 0);
    assert_rc(presence_on_message(p, "c", "\"HEARTBEAT\"", 11), 0);
    assert_rc(presence_on_message(p, "c", " \"heartbeat\"", 12), 0);
    assert_rc(presence_on_message(p, "c", "", 0), 0);
    assert_rc(presence_on_message(p, "c", NULL, 0), 0);
    assert_rc(presence_on_message(p, "c", "{\"type\":\"chat\"}", 15), 0);
    /* unknown connection: nothing touched, nothing created */
    struct snap s;
    snap_take(p, &s);
    assert_rc(presence_on_message(p, "nobody", "hello", 5), PRESENCE_MSG_NOT_PRESENT);
    assert_rc(presence_on_message(p, "nobody", "\"heartbeat\"", 11),
              PRESENCE_MSG_NOT_PRESENT | PRESENCE_MSG_HEARTBEAT);
    snap_same(p, &s, true);
    assert_rc(presence_touch(p, "nobody"), PRESENCE_NOT_PRESENT);
    assert_clean(p);
}

static void test_on_message_touches(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r", "hb", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r", "idle", NULL), PRESENCE_JOINED);
    msleep(200);
    assert_rc(presence_on_message(p, "c", "hello", 5), 0);
    assert_rc(presence_on_message(p, "hb", "\"heartbeat\"", 11), PRESENCE_MSG_HEARTBEAT);
    msleep(200);
    assert_rc(presence_prune(p, 300), 1); /* only the idle one */
    assert_rc(presence_touch(p, "idle"), PRESENCE_NOT_PRESENT);
    assert_rc(presence_touch(p, "c"), 0);
    assert_rc(presence_touch(p, "hb"), 0);
    assert_rc(presence_occupancy(p, "r"), 2);
    assert_clean(p);
}

/* ---- prune --------------------------------------------------------------------------- */

static void test_prune_per_connection_timeout(void **state)
{
    presence_t *p = FX(state);
    presence_conn_t h;
    assert_rc(presence_join_ex(p, "r", "short", NULL, 50, 0, &h), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r", "long", NULL), PRESENCE_JOINED);
    assert_rc(presence_prune(p, 10000), 0); /* nothing is old yet */
    msleep(120);
    presence_stats_t s0 = stats(p);
    assert_rc(presence_prune(p, 10000), 1); /* its own 50 ms, not max_age */
    assert_rc(presence_occupancy(p, "r"), 1);
    assert_rc(presence_touch(p, "short"), PRESENCE_NOT_PRESENT);
    assert_rc(presence_touch_handle(p, h), PRESENCE_NOT_PRESENT);
    assert_rc(presence_touch(p, "long"), 0);
    presence_stats_t s1 = stats(p);
    assert_int_equal(s1.expired, s0.expired + 1);
    assert_int_equal(s1.connections, 1);
    msleep(120);
    assert_rc(presence_prune(p, 60), 1); /* max_age smaller than its age */
    assert_rc(presence_occupancy(p, "r"), 0);
    assert_int_equal(stats(p).connections, 0);
    assert_int_equal(stats(p).presences, 0);
    /* the room stays, empty, until prune_rooms */
    assert_true(room_listed(p, "r"));
    assert_rc(presence_prune(p, 1), 0);
    assert_clean(p);
}

static void test_prune_default_max_age(void **state)
{
    presence_t *p = FX(state);
    presence_options_t o;
    presence_get_options(p, &o);
    assert_int_equal(o.max_age_ms, 150);
    assert_int_equal(stats(p).max_age_ms, 150);
    assert_rc(presence_join(p, "r", "default", NULL), PRESENCE_JOINED);
    assert_rc(presence_join_ex(p, "r", "own", NULL, 10000, 0, NULL), PRESENCE_JOINED);
    assert_rc(presence_prune(p, 0), 0);
    msleep(250);
    assert_rc(presence_prune(p, 0), 1); /* 0 = the segment's max_age (150 ms) */
    assert_rc(presence_touch(p, "default"), PRESENCE_NOT_PRESENT);
    assert_rc(presence_touch(p, "own"), 0);
    assert_rc(presence_occupancy(p, "r"), 1);
    assert_clean(p);
}

static void test_prune_counts_connections(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join_ex(p, "r1", "c", "u", 1, 0, NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r3", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r1", "d", NULL), PRESENCE_JOINED);
    msleep(60); /* > 1 ms plus last_seen's lead (four ticks) */
    presence_stats_t s0 = stats(p);
    assert_rc(presence_prune(p, 60000), 1); /* connections, not presences */
    presence_stats_t s1 = stats(p);
    assert_int_equal(s1.expired, s0.expired + 3);
    assert_int_equal(s1.ring_tail, s0.ring_tail + 3); /* one timeout event per presence */
    assert_int_equal(s1.presences, 1);
    assert_int_equal(s1.connections, 1);
    assert_rc(presence_occupancy(p, "r1"), 1);
    assert_rc(presence_occupancy(p, "r2"), 0);
    assert_rc(presence_occupancy(p, "r3"), 0);
    expect_where(p, "u", 0);
    assert_clean(p);
}

static void test_prune_huge_max_age(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    assert_rc(presence_join_ex(p, "r", "forever", NULL, UINT64_MAX, 0, NULL), PRESENCE_JOINED);
    msleep(60); /* > 1 ms plus last_seen's lead (four ticks: 16 ms, 40 at HZ=100) */
    /* no overflow: an enormous max_age removes nothing */
    assert_rc(presence_prune(p, UINT64_MAX), 0);
    assert_rc(presence_prune(p, UINT64_MAX / 1000), 0);
    assert_rc(presence_prune(p, UINT64_MAX / 1000000 + 1), 0);
    assert_rc(presence_prune(p, 1ull << 62), 0);
    assert_rc(presence_occupancy(p, "r"), 2);
    /* and a tiny one removes the default connection only */
    assert_rc(presence_prune(p, 1), 1);
    assert_rc(presence_touch(p, "forever"), 0);
    assert_clean(p);
}

static void test_prune_rooms(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "a", "c1", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "b", "c2", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "c", "c3", NULL), PRESENCE_JOINED);
    assert_rc(presence_leave(p, "a", "c1"), 1);
    assert_rc(presence_leave(p, "c", "c3"), 1);
    /* empty rooms stay until prune_rooms */
    presence_room_list_t *l = NULL;
    assert_rc(presence_rooms(p, NULL, &l), 0);
    assert_int_equal(l->count, 3);
    assert_non_null(room_info(l, "a"));
    assert_int_equal(room_info(l, "a")->occupancy, 0);
    assert_int_equal(room_info(l, "b")->occupancy, 1);
    presence_room_list_free(l);
    assert_rc(presence_occupancy(p, "a"), 0);
    assert_int_equal(stats(p).rooms, 3);
    /* a join into an empty room is no room creation */
    presence_stats_t s0 = stats(p);
    assert_rc(presence_join(p, "c", "c4", NULL), PRESENCE_JOINED);
    assert_int_equal(stats(p).ring_tail, s0.ring_tail + 1);
    assert_rc(presence_leave(p, "c", "c4"), 1);

    s0 = stats(p);
    assert_rc(presence_prune_rooms(p), 2);
    presence_stats_t s1 = stats(p);
    assert_int_equal(s1.rooms, 1);
    assert_int_equal(s1.ring_tail, s0.ring_tail + 2); /* room_deleted events */
    assert_rc(presence_rooms(p, NULL, &l), 0);
    assert_int_equal(l->count, 1);
    assert_string_equal(l->items[0].name, "b");
    presence_room_list_free(l);
    assert_rc(presence_prune_rooms(p), 0);
    /* a pruned room comes back on the next join (room_created + join) */
    s0 = stats(p);
    assert_rc(presence_join(p, "a", "c1", NULL), PRESENCE_JOINED);
    assert_int_equal(stats(p).ring_tail, s0.ring_tail + 2);
    assert_clean(p);
}

/* ---- queries ------------------------------------------------------------------------ */

static const presence_room_result_t *hn_room(const presence_here_now_t *h, const char *room)
{
    for (size_t i = 0; i < h->nrooms; i++)
        if (strcmp(h->rooms[i].name, room) == 0)
            return &h->rooms[i];
    return NULL;
}

static const presence_occupant_t *hn_occ(const presence_room_result_t *r, const char *conn)
{
    for (size_t i = 0; i < r->noccupants; i++)
        if (strcmp(r->occupants[i].conn, conn) == 0)
            return &r->occupants[i];
    return NULL;
}

static void test_here_now(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r1", "c1", "u1"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r1", "c2", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r1", "c3", "u1"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c1", "u1"), PRESENCE_JOINED);
    const char *rooms[] = {"r1", "r2", "ghost", "r1"};
    presence_here_now_t *h = NULL;
    assert_rc(presence_here_now(p, rooms, 4, NULL, 0, PRESENCE_INCLUDE_UUIDS, 0, 0, &h), 0);
    assert_int_equal(h->nrooms, 3); /* each room once */
    assert_int_equal(h->total_channels, 3);
    assert_int_equal(h->total_occupancy, 4);
    const presence_room_result_t *r1 = hn_room(h, "r1");
    assert_non_null(r1);
    assert_int_equal(r1->occupancy, 3);
    assert_int_equal(r1->noccupants, r1->occupancy); /* consistent snapshot */
    assert_string_equal(hn_occ(r1, "c1")->uuid, "u1");
    assert_string_equal(hn_occ(r1, "c2")->uuid, "c2");
    assert_string_equal(hn_occ(r1, "c3")->uuid, "u1");
    assert_null(hn_occ(r1, "c1")->state); /* not asked for */
    const presence_room_result_t *r2 = hn_room(h, "r2");
    assert_int_equal(r2->occupancy, 1);
    assert_int_equal(r2->noccupants, 1);
    /* a room that does not exist: occupancy 0, not an error */
    const presence_room_result_t *g = hn_room(h, "ghost");
    assert_non_null(g);
    assert_int_equal(g->occupancy, 0);
    assert_int_equal(g->noccupants, 0);
    presence_here_now_free(h);
    assert_false(room_listed(p, "ghost")); /* a query creates nothing */

    /* without INCLUDE_UUIDS: occupancy only */
    assert_rc(presence_here_now(p, rooms, 3, NULL, 0, 0, 0, 0, &h), 0);
    assert_int_equal(hn_room(h, "r1")->occupancy, 3);
    assert_int_equal(hn_room(h, "r1")->noccupants, 0);
    assert_int_equal(h->total_occupancy, 4);
    presence_here_now_free(h);

    /* nothing asked: an empty answer */
    assert_rc(presence_here_now(p, NULL, 0, NULL, 0, PRESENCE_INCLUDE_UUIDS, 0, 0, &h), 0);
    assert_int_equal(h->nrooms, 0);
    assert_int_equal(h->total_channels, 0);
    assert_int_equal(h->total_occupancy, 0);
    presence_here_now_free(h);

    /* unknown group */
    const char *groups[] = {"no-such-group"};
    h = NULL;
    assert_rc(presence_here_now(p, rooms, 1, groups, 1, 0, 0, 0, &h), PRESENCE_ENOGROUP);
    assert_null(h);
    assert_clean(p);
}

static void test_here_now_state(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c1", "u1"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r", "c2", NULL), PRESENCE_JOINED);
    const char *rooms[] = {"r"};
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c1", "{\"mood\":\"ok\",\"n\":1}"), 1);
    presence_here_now_t *h = NULL;
    assert_rc(presence_here_now(p, rooms, 1, NULL, 0,
                                PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE, 0, 0, &h),
              0);
    const presence_room_result_t *r = hn_room(h, "r");
    assert_int_equal(r->noccupants, 2);
    assert_string_equal(hn_occ(r, "c1")->state, "{\"mood\":\"ok\",\"n\":1}");
    assert_null(hn_occ(r, "c2")->state); /* no state set */
    presence_here_now_free(h);
    /* INCLUDE_UUIDS alone: no state */
    assert_rc(presence_here_now(p, rooms, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, 0, 0, &h), 0);
    assert_null(hn_occ(hn_room(h, "r"), "c1")->state);
    presence_here_now_free(h);
    assert_clean(p);
}

static void test_here_now_limit_offset(void **state)
{
    presence_t *p = FX(state);
    for (int i = 0; i < 10; i++) {
        char c[16];
        snprintf(c, sizeof c, "m%d", i);
        assert_rc(presence_join(p, "big", c, NULL), PRESENCE_JOINED);
    }
    const char *rooms[] = {"big"};
    presence_here_now_t *h = NULL;
    assert_rc(presence_here_now(p, rooms, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, 3, 8, &h), 0);
    assert_int_equal(h->rooms[0].noccupants, 2);
    assert_int_equal(h->rooms[0].occupancy, 10); /* still the whole room */
    assert_int_equal(h->total_occupancy, 10);
    presence_here_now_free(h);
    assert_rc(presence_here_now(p, rooms, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, 0, 10, &h), 0);
    assert_int_equal(h->rooms[0].noccupants, 0);
    assert_int_equal(h->rooms[0].occupancy, 10);
    presence_here_now_free(h);
    assert_rc(presence_here_now(p, rooms, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, 0, 7, &h), 0);
    assert_int_equal(h->rooms[0].noccupants, 3); /* offset without limit */
    presence_here_now_free(h);
    assert_rc(presence_here_now(p, rooms, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, 100, 0, &h), 0);
    assert_int_equal(h->rooms[0].noccupants, 10);
    presence_here_now_free(h);

    /* pages of 3 cover every member exactly once */
    bool seen[10] = {false};
    size_t total = 0;
    for (size_t off = 0; off < 12; off += 3) {
        assert_rc(presence_here_now(p, rooms, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, 3, off, &h), 0);
        assert_int_equal(h->rooms[0].noccupants, off < 9 ? 3 : off < 10 ? 1 : 0);
        for (size_t i = 0; i < h->rooms[0].noccupants; i++) {
            int k = atoi(h->rooms[0].occupants[i].conn + 1);
            assert_in_range(k, 0, 9);
            assert_false(seen[k]);
            seen[k] = true;
            total++;
        }
        presence_here_now_free(h);
    }
    assert_int_equal(total, 10);
    assert_clean(p);
}

static void test_here_now_groups(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r1", "c1", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c2", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c3", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r3", "c4", NULL), PRESENCE_JOINED);
    const char *gr[] = {"r1", "r2", "empty-room"};
    assert_rc(presence_group_add(p, "g", gr, 3), 3);
    const char *gr2[] = {"r2", "r3"};
    assert_rc(presence_group_add(p, "g2", gr2, 2), 2);
    const char *rooms[] = {"r1"};
    const char *groups[] = {"g", "g2"};
    presence_here_now_t *h = NULL;
    assert_rc(presence_here_now(p, rooms, 1, groups, 2, PRESENCE_INCLUDE_UUIDS, 0, 0, &h), 0);
    /* r1 (room and in g), r2 (in g and g2), empty-room, r3: each once */
    assert_int_equal(h->nrooms, 4);
    assert_int_equal(h->total_channels, 4);
    assert_int_equal(h->total_occupancy, 4);
    assert_int_equal(hn_room(h, "r1")->occupancy, 1);
    assert_int_equal(hn_room(h, "r2")->occupancy, 2);
    assert_int_equal(hn_room(h, "r2")->noccupants, 2);
    assert_int_equal(hn_room(h, "r3")->occupancy, 1);
    assert_int_equal(hn_room(h, "empty-room")->occupancy, 0);
    presence_here_now_free(h);
    /* groups alone */
    assert_rc(presence_here_now(p, NULL, 0, groups, 1, 0, 0, 0, &h), 0);
    assert_int_equal(h->nrooms, 3);
    assert_int_equal(h->total_occupancy, 3);
    presence_here_now_free(h);
    const char *bad[] = {"g", "nope"};
    h = NULL;
    assert_rc(presence_here_now(p, NULL, 0, bad, 2, 0, 0, 0, &h), PRESENCE_ENOGROUP);
    assert_null(h);
    assert_clean(p);
}

static void test_where_now(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r1", "c1", "u1"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c1", "u1"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r3", "c3", "u1"), PRESENCE_JOINED); /* same user, 2nd conn */
    assert_rc(presence_join(p, "r1", "c2", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r4", "c4", "u4"), PRESENCE_JOINED);
    expect_where(p, "u1", 3, "r1", "r2", "r3"); /* by user: every connection */
    expect_where(p, "c1", 2, "r1", "r2");       /* by connection id */
    expect_where(p, "c3", 1, "r3");
    expect_where(p, "c2", 1, "r1"); /* anonymous, by connection id */
    expect_where(p, "u4", 1, "r4");
    expect_where(p, "nobody", 0);
    presence_strlist_t *l = NULL;
    assert_rc(presence_where_now(p, "u1", &l), 0);
    assert_sorted(l);
    presence_strlist_free(l);
    /* a user in the same room through two connections: the room once */
    assert_rc(presence_join(p, "r3", "c1", "u1"), PRESENCE_JOINED);
    expect_where(p, "u1", 3, "r1", "r2", "r3");
    assert_rc(presence_leave(p, "r2", "c1"), 1);
    expect_where(p, "u1", 2, "r1", "r3");
    assert_clean(p);
}

static void test_users_anonymous_occupancy(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c1", "alice"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r", "c2", "alice"), PRESENCE_JOINED); /* same user twice */
    assert_rc(presence_join(p, "r", "c3", "bob"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r", "c4", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r", "c5", NULL), PRESENCE_JOINED);
    presence_strlist_t *l = NULL;
    assert_rc(presence_users(p, "r", &l), 0);
    expect_set(l, 2, "alice", "bob");
    assert_sorted(l);
    presence_strlist_free(l);
    assert_rc(presence_anonymous_count(p, "r"), 2);
    assert_rc(presence_occupancy(p, "r"), 5);
    presence_room_list_t *rl = NULL;
    assert_rc(presence_rooms(p, NULL, &rl), 0);
    assert_int_equal(room_info(rl, "r")->occupancy, 5);
    assert_int_equal(room_info(rl, "r")->users, 2);
    assert_int_equal(room_info(rl, "r")->anonymous, 2);
    presence_room_list_free(rl);

    assert_rc(presence_leave(p, "r", "c1"), 1);
    assert_rc(presence_users(p, "r", &l), 0);
    expect_set(l, 2, "alice", "bob"); /* alice is still there through c2 */
    presence_strlist_free(l);
    assert_rc(presence_leave(p, "r", "c2"), 1);
    assert_rc(presence_leave(p, "r", "c4"), 1);
    assert_rc(presence_users(p, "r", &l), 0);
    expect_set(l, 1, "bob");
    presence_strlist_free(l);
    assert_rc(presence_anonymous_count(p, "r"), 1);
    assert_rc(presence_occupancy(p, "r"), 2);

    /* a room that does not exist */
    assert_rc(presence_users(p, "ghost", &l), 0);
    expect_set(l, 0);
    presence_strlist_free(l);
    assert_rc(presence_anonymous_count(p, "ghost"), 0);
    assert_rc(presence_occupancy(p, "ghost"), 0);
    assert_clean(p);
}

static void test_rooms_listing(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "chat.b", "c1", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "chat.a", "c1", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "game.x", "c2", NULL), PRESENCE_JOINED);
    presence_room_list_t *l = NULL;
    assert_rc(presence_rooms(p, "chat.", &l), 0);
    assert_int_equal(l->count, 2);
    assert_string_equal(l->items[0].name, "chat.a");
    assert_string_equal(l->items[1].name, "chat.b");
    presence_room_list_free(l);
    assert_rc(presence_rooms(p, "", &l), 0);
    assert_int_equal(l->count, 3);
    presence_room_list_free(l);
    assert_rc(presence_rooms(p, "zzz", &l), 0);
    assert_int_equal(l->count, 0);
    presence_room_list_free(l);
    assert_clean(p);
}

/* ---- room member arrays (members.c) ----------------------------------------- */

/* Room @room's record, white-box. */
static const struct pr_room *room_rec(presence_t *p, const char *room)
{
    int64_t ri = pr__room_find(p, room, strlen(room), pr__hash(p, room, strlen(room)));
    assert_true(ri >= 0);
    return pr__room(p, (uint32_t) ri);
}

/* Whether room @room's member array claims to be exact. */
static bool array_exact(presence_t *p, const char *room)
{
    return room_rec(p, room)->marray != 0;
}

/* The number of chunks room @room's member array holds. */
static unsigned array_chunks(presence_t *p, const char *room)
{
    unsigned n = 0;
    for (unsigned k = 0; k < PR_MCHUNKS; k++)
        n += room_rec(p, room)->mchunk[k] != 0;
    return n;
}

/* PRESENCE_UUIDS_ONLY: the full answer's uuids (and states), in the same order,
 * with conn NULL, from the member array and from the list walk; pages; and an
 * unknown flag refused with nothing answered. */
static void test_here_now_uuids_only(void **state)
{
    presence_t *p = FX(state);
    const char *users[] = {"u0", NULL, "u0", NULL, "u4", "u5"};
    for (int i = 0; i < 6; i++) {
        char c[8];
        snprintf(c, sizeof c, "c%d", i);
        assert_rc(presence_join(p, "r", c, users[i]), PRESENCE_JOINED);
    }
    const char *rooms[] = {"r"};
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c4", "{\"k\":4}"), 1);
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c3", "{\"k\":3}"), 1);
    for (int walk = 0; walk < 2; walk++) {
        if (walk == 1) /* the list walk, as after a failed chunk allocation */
            ((struct pr_room *) room_rec(p, "r"))->marray = 0;
        presence_here_now_t *full = NULL, *h = NULL;
        assert_rc(presence_here_now(p, rooms, 1, NULL, 0,
                                    PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE, 0, 0, &full),
                  0);
        assert_rc(presence_here_now(p, rooms, 1, NULL, 0,
                                    PRESENCE_UUIDS_ONLY | PRESENCE_INCLUDE_STATE, 0, 0, &h),
                  0);
        const presence_room_result_t *f = &full->rooms[0], *r = &h->rooms[0];
        assert_int_equal(r->occupancy, 6);
        assert_int_equal(r->noccupants, 6);
        assert_int_equal(f->noccupants, 6);
        for (size_t i = 0; i < 6; i++) {
            assert_null(r->occupants[i].conn);
            assert_string_equal(r->occupants[i].uuid, f->occupants[i].uuid);
            if (f->occupants[i].state)
                assert_string_equal(r->occupants[i].state, f->occupants[i].state);
            else
                assert_null(r->occupants[i].state);
        }
        presence_here_now_free(full);
        presence_here_now_free(h);
        /* pages: 4 then 2, the whole room once */
        size_t listed = 0;
        for (size_t off = 0; off < 6; off += 4) {
            assert_rc(presence_here_now(p, rooms, 1, NULL, 0, PRESENCE_UUIDS_ONLY, 4, off, &h), 0);
            assert_int_equal(h->rooms[0].noccupants, off ? 2 : 4);
            for (size_t i = 0; i < h->rooms[0].noccupants; i++) {
                assert_null(h->rooms[0].occupants[i].conn);
                assert_null(h->rooms[0].occupants[i].state); /* not asked for */
                listed++;
            }
            presence_here_now_free(h);
        }
        assert_int_equal(listed, 6);
    }
    presence_here_now_t *h = NULL;
    assert_rc(presence_here_now(p, rooms, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS | (1u << 9), 0, 0, &h),
              PRESENCE_EOPTION);
    assert_null(h);
    assert_clean(p);
}

/* here_now of @room lists exactly the connections "c%05d" with @in[i] set,
 * each once, with uuid "u%05d" for even i and the connection id for odd i;
 * and pages of @page occupants (limit/offset) cover the same set once. */
static void expect_members(presence_t *p, const char *room, const bool *in, size_t n, size_t page)
{
    size_t want = 0;
    for (size_t i = 0; i < n; i++)
        want += in[i];
    uint8_t *seen = calloc(n, 1);
    assert_non_null(seen);
    for (size_t offset = 0, limit = 0, pass = 0; pass < 2; pass++) {
        memset(seen, 0, n);
        size_t listed = 0;
        do {
            presence_here_now_t *h = NULL;
            assert_rc(
                presence_here_now(p, &room, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, limit, offset, &h),
                0);
            const presence_room_result_t *r = &h->rooms[0];
            assert_int_equal(r->occupancy, want);
            for (size_t j = 0; j < r->noccupants; j++) {
                const presence_occupant_t *o = &r->occupants[j];
                unsigned i;
                char uuid[16];
                assert_int_equal(sscanf(o->conn, "c%05u", &i), 1);
                assert_true(i < n && in[i] && !seen[i]);
                seen[i] = 1;
                snprintf(uuid, sizeof uuid, "%c%05u", i % 2 ? 'c' : 'u', i);
                assert_string_equal(o->uuid, uuid);
            }
            listed += r->noccupants;
            offset += r->noccupants;
            bool last = r->noccupants == 0 || limit == 0;
            presence_here_now_free(h);
            if (last)
                break;
        } while (1);
        assert_int_equal(listed, want);
        offset = 0;
        limit = page;
    }
    free(seen);
}

static void member_join(presence_t *p, const char *room, unsigned i)
{
    char conn[16], user[16];
    snprintf(conn, sizeof conn, "c%05u", i);
    snprintf(user, sizeof user, "u%05u", i);
    assert_rc(presence_join(p, room, conn, i % 2 ? NULL : user), PRESENCE_JOINED);
}

static void member_leave(presence_t *p, const char *room, unsigned i)
{
    char conn[16];
    snprintf(conn, sizeof conn, "c%05u", i);
    assert_rc(presence_leave(p, room, conn), 1);
}

/* A room of 9,000 spans three chunks (4,094 entries each); removals fill
 * their holes with the last entry, from anywhere to anywhere. */
static void test_member_array_chunks(void **state)
{
    presence_t *p = FX(state);
    enum { N = 9000 };
    static bool in[N];
    memset(in, 0, sizeof in);
    for (unsigned i = 0; i < N; i++) {
        member_join(p, "big", i);
        in[i] = true;
    }
    assert_true(array_exact(p, "big"));
    assert_int_equal(PR_MCHUNK_MAX, 4094);
    assert_int_equal(array_chunks(p, "big"), 3);
    expect_members(p, "big", in, N, 1000);
    uint64_t x = 88172645463325252ull; /* xorshift64, fixed: the same order every run */
    for (unsigned left = 0; left < 6000;) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned i = (unsigned) (x % N);
        if (!in[i])
            continue;
        member_leave(p, "big", i);
        in[i] = false;
        if (++left % 1500 == 0) {
            expect_members(p, "big", in, N, 777);
            assert_clean(p);
        }
    }
    assert_int_equal(array_chunks(p, "big"), 1); /* 3,000 left: the others went */
    for (unsigned i = 0; i < N; i += 2)
        if (!in[i]) {
            member_join(p, "big", i);
            in[i] = true;
        }
    assert_true(array_exact(p, "big"));
    expect_members(p, "big", in, N, 4094);
    assert_clean(p);
}

/* Beyond PR_MCHUNKS full chunks the room is listed through its list, exactly
 * as well; emptied, its array is exact again. */
static void test_member_array_beyond_chunks(void **state)
{
    presence_t *p = FX(state);
    const unsigned n = PR_MCHUNKS * PR_MCHUNK_MAX + 8;
    bool *in = calloc(n, sizeof *in);
    assert_non_null(in);
    for (unsigned i = 0; i < n; i++) {
        member_join(p, "huge", i);
        in[i] = true;
        if (i + 1 == PR_MCHUNKS * PR_MCHUNK_MAX)
            assert_true(array_exact(p, "huge"));
    }
    assert_false(array_exact(p, "huge"));
    expect_members(p, "huge", in, n, 5000);
    assert_clean(p);
    for (unsigned i = 0; i < n - 1; i++) {
        member_leave(p, "huge", i);
        in[i] = false;
    }
    expect_members(p, "huge", in, n, 0);
    assert_false(array_exact(p, "huge"));
    member_leave(p, "huge", n - 1); /* empty rooms stay until prune_rooms */
    in[n - 1] = false;
    assert_int_equal(array_chunks(p, "huge"), 0); /* an empty room holds none */
    member_join(p, "huge", 1);
    assert_true(array_exact(p, "huge"));
    assert_int_equal(array_chunks(p, "huge"), 1);
    assert_clean(p);
    free(in);
}

/* Prune turns off the arrays of the rooms of up to 1,024 it removes from and
 * rebuilds them at its end ("mid"); a larger room keeps its array up removal by
 * removal ("kept"); a room it empties holds at most a smallest chunk ("gone").
 * Each lists its members from an exact array after. */
static void test_member_array_after_prune(void **state)
{
    presence_t *p = FX(state);
    enum { N = 5000 };
    static bool in[N];
    for (unsigned i = 0; i < N; i++) { /* every 3rd expires; "gone" empties */
        char conn[16], user[16];
        snprintf(conn, sizeof conn, "c%05u", i);
        snprintf(user, sizeof user, "u%05u", i);
        assert_rc(presence_join_ex(p, "kept", conn, i % 2 ? NULL : user, i % 3 ? 0 : 20, 0, NULL),
                  PRESENCE_JOINED);
        in[i] = i % 3 != 0;
        if (i < 200) {
            snprintf(conn, sizeof conn, "g%05u", i);
            assert_rc(presence_join_ex(p, "gone", conn, NULL, 20, 0, NULL), PRESENCE_JOINED);
        }
        if (i < 600) /* the same connections, so the same expiries */
            member_join(p, "mid", i);
    }
    assert_int_equal(array_chunks(p, "kept"), 2);
    msleep(60); /* past the 20 ms and the stamps' lead (coarse clock + 4 ticks) */
    assert_rc(presence_prune(p, 60000), (N + 2) / 3 + 200);
    assert_true(array_exact(p, "kept"));
    expect_members(p, "kept", in, N, 1000);
    assert_true(array_exact(p, "mid"));
    expect_members(p, "mid", in, 600, 100);
    assert_true(array_exact(p, "gone"));
    assert_true(array_chunks(p, "gone") <= 1);
    assert_rc(presence_occupancy(p, "gone"), 0);
    assert_clean(p);
    member_leave(p, "kept", 1); /* and it is kept up again */
    in[1] = false;
    expect_members(p, "kept", in, N, 0);
    assert_clean(p);
}

/* A prune killed before its end leaves the arrays of the rooms it removed from
 * turned off (it turns them back on at its end), and a later prune does not
 * turn on what it did not turn off: the maintenance after the death does. The
 * child only calls the library and dies at a kill point; the parent asserts. */
static void test_member_array_after_killed_prune(void **state)
{
    struct fx *f = *state;
    presence_t *p = f->p;
    enum { ROOMS = 8, N = 800 };
    static bool in[N];
    char room[ROOMS][8];
    for (unsigned r = 0; r < ROOMS; r++)
        snprintf(room[r], sizeof room[r], "k%u", r);
    for (unsigned i = 0; i < N; i++) { /* every 3rd expires, in every room */
        char conn[16], user[16];
        snprintf(conn, sizeof conn, "c%05u", i);
        snprintf(user, sizeof user, "u%05u", i);
        assert_rc(presence_join_ex(p, room[i % ROOMS], conn, i % 2 ? NULL : user, i % 3 ? 0 : 20, 0,
                                   NULL),
                  PRESENCE_JOINED);
    }
    msleep(60); /* past the 20 ms and the stamps' lead */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* dies inside its 40th removal, holding that room's lock */
        presence_t *q;
        setenv("PRESENCE_TEST_KILL_AT", "unlink:40", 1);
        if (presence_open(f->name, NULL, &q) != 0)
            _exit(2);
        presence_prune(q, 60000);
        _exit(3);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    unsigned off = 0;
    for (unsigned r = 0; r < ROOMS; r++)
        off += !array_exact(p, room[r]);
    assert_int_equal(off, ROOMS);                    /* all removed from, none emptied */
    for (unsigned tries = 0; tries < 200; tries++) { /* until the death is seen */
        assert_true(presence_maintain(p) >= 0);
        off = 0;
        for (unsigned r = 0; r < ROOMS; r++)
            off += !array_exact(p, room[r]);
        if (off == 0)
            break;
        msleep(5);
    }
    assert_int_equal(off, 0);
    assert_clean(p);
    assert_true(presence_prune(p, 60000) > 0); /* the expired ones the child left */
    for (unsigned r = 0; r < ROOMS; r++) {
        for (unsigned i = 0; i < N; i++)
            in[i] = i % ROOMS == r && i % 3 != 0;
        assert_true(array_exact(p, room[r]));
        expect_members(p, room[r], in, N, 7);
    }
    assert_clean(p);
}

/* A chunk that cannot be allocated (beyond the arena's share for arrays, or
 * no cell of its class) leaves the join done and the room listed through its
 * list. */
static void test_member_array_no_space(void **state)
{
    presence_t *p = FX(state);
    enum { N = 12 };
    bool in[N] = {false};
    for (unsigned i = 0; i < N; i++) {
        member_join(p, "r", i);
        in[i] = true;
    }
    assert_false(array_exact(p, "r"));
    expect_members(p, "r", in, N, 5);
    assert_clean(p);
    for (unsigned i = 0; i < N; i += 3) {
        member_leave(p, "r", i);
        in[i] = false;
    }
    expect_members(p, "r", in, N, 4);
    assert_clean(p);
}

/* ---- state --------------------------------------------------------------------------- */

static void test_state_replace(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r1", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r3", "other", NULL), PRESENCE_JOINED);
    const char *rooms[] = {"r1", "r2", "r3", "ghost"};
    /* r3: not present there; ghost: no such room -- both skipped */
    assert_rc(presence_set_state(p, rooms, 4, NULL, 0, "c", "{\"a\":1,\"b\":2}"), 2);
    expect_state(p, "r1", "u", "{\"a\":1,\"b\":2}");
    expect_state(p, "r2", "u", "{\"a\":1,\"b\":2}");
    char *s = NULL;
    assert_int_equal(state_of(p, "r3", "u", &s), 0);
    /* whole-object replace: keys of the first document are gone */
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", "{\"z\":true}"), 1);
    expect_state(p, "r1", "u", "{\"z\":true}");
    expect_state(p, "r2", "u", "{\"a\":1,\"b\":2}");
    /* the empty object is an object */
    assert_rc(presence_set_state(p, rooms + 1, 1, NULL, 0, "c", "{}"), 1);
    expect_state(p, "r2", "u", "{}");
    /* whitespace is not kept */
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", " { \"k\" : [1, 2] } "), 1);
    expect_state(p, "r1", "u", "{\"k\":[1,2]}");
    /* any JSON object is accepted, kept in compact form */
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", "{\"n\":{\"m\":[null,true,\"x\"]}}"),
              1);
    expect_state(p, "r1", "u", "{\"n\":{\"m\":[null,true,\"x\"]}}");
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", "{\"s\":\"caf\xc3\xa9\"}"), 1);
    expect_state(p, "r1", "u", "{\"s\":\"caf\xc3\xa9\"}");
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", "{\"nul\":\"a\\u0000b\"}"), 1);
    expect_state(p, "r1", "u", "{\"nul\":\"a\\u0000b\"}");
    /* a connection that is nowhere, and one that does not exist */
    assert_rc(presence_set_state(p, rooms + 2, 1, NULL, 0, "c", "{\"x\":1}"), 0);
    assert_rc(presence_set_state(p, rooms, 2, NULL, 0, "nobody", "{\"x\":1}"), 0);
    assert_int_equal(stats(p).connections, 2);
    assert_clean(p);
}

static void test_state_groups(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r1", "c", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c", NULL), PRESENCE_JOINED);
    const char *gr[] = {"r2", "r3"};
    assert_rc(presence_group_add(p, "g", gr, 2), 2);
    const char *groups[] = {"g"};
    assert_rc(presence_set_state(p, NULL, 0, groups, 1, "c", "{\"v\":1}"), 1);
    expect_state(p, "r1", "c", NULL);
    expect_state(p, "r2", "c", "{\"v\":1}");
    const char *rooms[] = {"r1", "r2"};
    /* r2 is both a room and in g: updated once */
    assert_rc(presence_set_state(p, rooms, 2, groups, 1, "c", "{\"v\":2}"), 2);
    expect_state(p, "r1", "c", "{\"v\":2}");
    expect_state(p, "r2", "c", "{\"v\":2}");
    /* get_state through a group */
    presence_state_list_t *l = NULL;
    assert_rc(presence_get_state(p, NULL, 0, groups, 1, "c", &l), 0);
    assert_int_equal(l->count, 1);
    assert_string_equal(l->items[0].room, "r2");
    assert_string_equal(l->items[0].state, "{\"v\":2}");
    presence_state_list_free(l);
    /* unknown group: error, nothing changed */
    const char *bad[] = {"nope"};
    struct snap s;
    snap_take(p, &s);
    assert_rc(presence_set_state(p, rooms, 2, bad, 1, "c", "{\"v\":3}"), PRESENCE_ENOGROUP);
    snap_same(p, &s, true);
    expect_state(p, "r1", "c", "{\"v\":2}");
    l = NULL;
    assert_rc(presence_get_state(p, rooms, 1, bad, 1, "c", &l), PRESENCE_ENOGROUP);
    assert_null(l);
    assert_clean(p);
}

static void test_state_not_an_object(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    const char *rooms[] = {"r"};
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", "{\"keep\":1}"), 1);
    static const char *const bad[] = {
        "[1]",  "3",   "nope",     "{",       "",           "\"str\"",     "null",
        "true", "{}x", "{\"a\":}", "{'a':1}", "{\"a\":1}}", "[{\"a\":1}]", " ",
    };
    struct snap s;
    snap_take(p, &s);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = presence_set_state(p, rooms, 1, NULL, 0, "c", bad[i]);
        if (rc != PRESENCE_ESTATEJSON)
            fail_msg("set_state('%s') = %d (%s), expected PRESENCE_ESTATEJSON", bad[i], rc,
                     presence_err_name(rc));
    }
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", NULL), PRESENCE_ESTATEJSON);
    snap_same(p, &s, true);
    expect_state(p, "r", "c", "{\"keep\":1}");
    assert_clean(p);
}

static void test_state_too_big(void **state)
{
    presence_t *p = FX(state);
    assert_int_equal(stats(p).state_max, 64);
    assert_rc(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    const char *rooms[] = {"r"};
    char doc[128];
    /* {"k":"xxx...x"} is 8 + n bytes */
    snprintf(doc, sizeof doc, "{\"k\":\"%.*s\"}", 56,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    assert_int_equal(strlen(doc), 64);
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", doc), 1); /* at most state_max */
    char keep[128];
    memcpy(keep, doc, sizeof doc);
    snprintf(doc, sizeof doc, "{\"k\":\"%.*s\"}", 57,
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    assert_int_equal(strlen(doc), 65);
    struct snap s;
    snap_take(p, &s);
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", doc), PRESENCE_ESTATESIZE);
    char big[1024];
    memset(big, 'y', sizeof big);
    memcpy(big, "{\"k\":\"", 6);
    memcpy(big + sizeof big - 3, "\"}", 3);
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", big), PRESENCE_ESTATESIZE);
    snap_same(p, &s, true);
    expect_state(p, "r", "c", keep);
    assert_clean(p);
}

static void test_state_dropped_when_presence_ends(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c", "u"), PRESENCE_JOINED);
    const char *rooms[] = {"r", "r2"};
    assert_rc(presence_set_state(p, rooms, 2, NULL, 0, "c", "{\"s\":1}"), 2);
    /* a refresh keeps it */
    assert_rc(presence_join(p, "r", "c", "u"), PRESENCE_REFRESHED);
    expect_state(p, "r", "u", "{\"s\":1}");
    /* leave drops it */
    assert_rc(presence_leave(p, "r", "c"), 1);
    char *s = NULL;
    assert_int_equal(state_of(p, "r", "u", &s), 0);
    assert_rc(presence_join(p, "r", "c", "u"), PRESENCE_JOINED);
    expect_state(p, "r", "u", NULL);
    expect_state(p, "r2", "u", "{\"s\":1}"); /* the other presence keeps its own */
    /* leave_all drops every one */
    assert_rc(presence_leave_all(p, "c"), 2);
    assert_rc(presence_join(p, "r2", "c", "u"), PRESENCE_JOINED);
    expect_state(p, "r2", "u", NULL);
    /* and so does a timeout */
    assert_rc(presence_set_state(p, rooms + 1, 1, NULL, 0, "c", "{\"s\":2}"), 1);
    msleep(60); /* > 5 ms plus last_seen's lead (four ticks) */
    assert_rc(presence_prune(p, 5), 1);
    assert_rc(presence_join(p, "r2", "c", "u"), PRESENCE_JOINED);
    expect_state(p, "r2", "u", NULL);
    assert_clean(p);
}

static void test_get_state_by_uuid(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c1", "alice"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r", "anon", NULL), PRESENCE_JOINED);
    const char *rooms[] = {"r"};
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c1", "{\"who\":\"alice\"}"), 1);
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "anon", "{\"who\":\"anon\"}"), 1);
    expect_state(p, "r", "alice", "{\"who\":\"alice\"}"); /* by user */
    expect_state(p, "r", "anon", "{\"who\":\"anon\"}");   /* by connection id */
    char *s = NULL;
    assert_int_equal(state_of(p, "r", "nobody", &s), 0);
    assert_int_equal(state_of(p, "ghost-room", "alice", &s), 0);
    /* several rooms at once */
    assert_rc(presence_join(p, "r2", "c1", "alice"), PRESENCE_JOINED);
    const char *both[] = {"r", "r2", "ghost"};
    presence_state_list_t *l = NULL;
    assert_rc(presence_get_state(p, both, 3, NULL, 0, "alice", &l), 0);
    assert_int_equal(l->count, 2);
    for (size_t i = 0; i < l->count; i++) {
        assert_string_equal(l->items[i].uuid, "alice");
        if (strcmp(l->items[i].room, "r") == 0)
            assert_string_equal(l->items[i].state, "{\"who\":\"alice\"}");
        else {
            assert_string_equal(l->items[i].room, "r2");
            assert_null(l->items[i].state);
        }
    }
    presence_state_list_free(l);
    assert_clean(p);
}

/* ---- groups ---------------------------------------------------------------------------- */

static void test_groups(void **state)
{
    presence_t *p = FX(state);
    const char *a[] = {"c", "a", "b"};
    assert_rc(presence_group_add(p, "g", a, 3), 3); /* rooms need not exist */
    const char *b[] = {"b", "d", "d"};
    assert_rc(presence_group_add(p, "g", b, 3), 1); /* duplicates ignored */
    presence_strlist_t *l = NULL;
    assert_rc(presence_group_list(p, "g", &l), 0);
    assert_int_equal(l->count, 4);
    assert_string_equal(l->items[0], "a"); /* sorted */
    assert_string_equal(l->items[1], "b");
    assert_string_equal(l->items[2], "c");
    assert_string_equal(l->items[3], "d");
    presence_strlist_free(l);
    assert_int_equal(stats(p).groups, 1);
    assert_int_equal(stats(p).group_members, 4);
    assert_rc(presence_group_add(p, "g", a, 3), 0);

    const char *rm[] = {"a", "zz", "a"};
    assert_rc(presence_group_remove(p, "g", rm, 3), 1);
    assert_rc(presence_group_remove(p, "g", rm, 3), 0);
    assert_rc(presence_group_list(p, "g", &l), 0);
    expect_set(l, 3, "b", "c", "d");
    presence_strlist_free(l);
    assert_int_equal(stats(p).group_members, 3);

    l = NULL;
    assert_rc(presence_group_remove(p, "nope", rm, 1), PRESENCE_ENOGROUP);
    assert_rc(presence_group_list(p, "nope", &l), PRESENCE_ENOGROUP);
    assert_null(l);

    /* groups are independent */
    assert_rc(presence_group_add(p, "h", a, 1), 1);
    assert_rc(presence_group_delete(p, "g"), 1);
    assert_rc(presence_group_delete(p, "g"), 0);
    assert_rc(presence_group_delete(p, "never"), 0);
    assert_rc(presence_group_list(p, "g", &l), PRESENCE_ENOGROUP);
    assert_rc(presence_group_list(p, "h", &l), 0);
    expect_set(l, 1, "c");
    presence_strlist_free(l);
    assert_int_equal(stats(p).groups, 1);
    assert_int_equal(stats(p).group_members, 1);
    /* a deleted group can be made again, empty */
    assert_rc(presence_group_add(p, "g", b, 1), 1);
    assert_rc(presence_group_list(p, "g", &l), 0);
    expect_set(l, 1, "b");
    presence_strlist_free(l);
    assert_clean(p);
}

static void test_groups_limit(void **state)
{
    presence_t *p = FX(state);
    enum { N = PRESENCE_GROUP_MAX_ROOMS };
    static char names[N + 2][16];
    static const char *ptrs[N + 2];
    for (int i = 0; i < N + 2; i++) {
        snprintf(names[i], sizeof names[i], "room-%05d", i);
        ptrs[i] = names[i];
    }
    assert_int_equal(N, 2000);
    assert_rc(presence_group_add(p, "full", ptrs, N), N);
    presence_strlist_t *l = NULL;
    assert_rc(presence_group_list(p, "full", &l), 0);
    assert_int_equal(l->count, N);
    assert_sorted(l);
    presence_strlist_free(l);

    struct snap s;
    snap_take(p, &s);
    assert_rc(presence_group_add(p, "full", ptrs + N, 1), PRESENCE_EGROUPFULL);
    /* one known (ignored) and one new: still too many */
    assert_rc(presence_group_add(p, "full", ptrs + N - 1, 2), PRESENCE_EGROUPFULL);
    snap_same(p, &s, false);
    assert_rc(presence_group_list(p, "full", &l), 0);
    assert_int_equal(l->count, N);
    presence_strlist_free(l);
    /* rooms already there are no growth */
    assert_rc(presence_group_add(p, "full", ptrs, 5), 0);

    /* 2001 at once, into a new group: nothing added, no group made */
    l = NULL;
    assert_rc(presence_group_add(p, "fresh", ptrs, N + 1), PRESENCE_EGROUPFULL);
    assert_rc(presence_group_list(p, "fresh", &l), PRESENCE_ENOGROUP);
    /* 1999 then 2 more: nothing of the 2 added */
    assert_rc(presence_group_add(p, "almost", ptrs, N - 1), N - 1);
    assert_rc(presence_group_add(p, "almost", ptrs + N - 1, 2), PRESENCE_EGROUPFULL);
    assert_rc(presence_group_list(p, "almost", &l), 0);
    assert_int_equal(l->count, N - 1);
    presence_strlist_free(l);
    assert_rc(presence_group_add(p, "almost", ptrs + N - 1, 1), 1); /* the 2000th fits */
    snap_take(p, &s);
    assert_int_equal(s.st.group_members, 2 * N);
    /* removing makes room again */
    assert_rc(presence_group_remove(p, "full", ptrs, 1), 1);
    assert_rc(presence_group_add(p, "full", ptrs + N, 1), 1);
    assert_clean(p);
}

/* ---- names -------------------------------------------------------------------------------- */

struct bad_name {
    const char *name;
    int err;
};

static char name256[257], name255[256], name255_mb[256], name256_mb[257];

static void make_long_names(void)
{
    memset(name256, 'n', 256);
    name256[256] = '\0';
    memset(name255, 'n', 255);
    name255[255] = '\0';
    /* 253 ASCII bytes + "é" (2 bytes) = 255 bytes */
    memset(name255_mb, 'm', 253);
    memcpy(name255_mb + 253, "\xc3\xa9", 3);
    /* 254 + "é" = 256 bytes */
    memset(name256_mb, 'm', 254);
    memcpy(name256_mb + 254, "\xc3\xa9", 3);
}

static const struct bad_name *bad_names(size_t *n)
{
    make_long_names();
    static struct bad_name t[] = {
        {"", PRESENCE_ENAMELEN},
        {NULL, PRESENCE_ENAMELEN},
        {name256, PRESENCE_ENAMELEN},
        {name256_mb, PRESENCE_ENAMELEN},
        {"\xff", PRESENCE_ENAMEUTF8},
        {"ok\xfe", PRESENCE_ENAMEUTF8},
        {"\xc0\xaf", PRESENCE_ENAMEUTF8},         /* overlong '/' */
        {"\xe0\x80\xaf", PRESENCE_ENAMEUTF8},     /* overlong, 3 bytes */
        {"\xf0\x80\x80\xaf", PRESENCE_ENAMEUTF8}, /* overlong, 4 bytes */
        {"\xe2\x82", PRESENCE_ENAMEUTF8},         /* truncated */
        {"ab\xe2\x82", PRESENCE_ENAMEUTF8},
        {"\xe2\x82x", PRESENCE_ENAMEUTF8},
        {"\xed\xa0\x80", PRESENCE_ENAMEUTF8}, /* surrogate */
        {"\xed\xbf\xbf", PRESENCE_ENAMEUTF8},
        {"\xf4\x90\x80\x80", PRESENCE_ENAMEUTF8}, /* above U+10FFFF */
        {"\x80", PRESENCE_ENAMEUTF8},             /* lone continuation */
        {"\xf8\x88\x80\x80\x80", PRESENCE_ENAMEUTF8},
        {"a\tb", PRESENCE_ENAMECTRL},
        {"\x7f", PRESENCE_ENAMECTRL},
        {"x\n", PRESENCE_ENAMECTRL},
        {"\x01", PRESENCE_ENAMECTRL},
        {"\x1b[31m", PRESENCE_ENAMECTRL},
        {"\xc2\x85", PRESENCE_ENAMECTRL}, /* C1: NEL */
        {"\xc2\x80", PRESENCE_ENAMECTRL},
        {"\xc2\x9f", PRESENCE_ENAMECTRL},
        /* where the word-at-a-time checks reach: names under 8 bytes in one
         * word, the last 8 bytes of longer ones overlapping the words before */
        {"a\001b", PRESENCE_ENAMECTRL},
        {"ab\x7f", PRESENCE_ENAMECTRL},
        {"abc\037e", PRESENCE_ENAMECTRL},
        {"abcdef\x80", PRESENCE_ENAMEUTF8},
        {"abcdefgh\x7f", PRESENCE_ENAMECTRL},
        {"abcdefghijklmn\x01", PRESENCE_ENAMECTRL},
        {"abcdefgh\xc3", PRESENCE_ENAMEUTF8},
    };
    *n = sizeof t / sizeof *t;
    return t;
}

static void test_name_lengths(void **state)
{
    presence_t *p = FX(state);
    make_long_names();
    assert_int_equal(strlen(name255), PRESENCE_NAME_MAX);
    assert_int_equal(strlen(name255_mb), PRESENCE_NAME_MAX);
    assert_rc(presence_join(p, "", "c", NULL), PRESENCE_ENAMELEN);
    assert_rc(presence_join(p, name256, "c", NULL), PRESENCE_ENAMELEN);
    /* 255 bytes is fine, everywhere */
    assert_rc(presence_join(p, name255, name255, name255_mb), PRESENCE_JOINED);
    assert_rc(presence_join(p, name255_mb, name255, name255_mb), PRESENCE_JOINED);
    expect_where(p, name255_mb, 2, name255, name255_mb);
    expect_where(p, name255, 2, name255, name255_mb);
    const char *rooms[] = {name255};
    assert_rc(presence_group_add(p, name255, rooms, 1), 1);
    presence_strlist_t *l = NULL;
    assert_rc(presence_group_list(p, name255, &l), 0);
    expect_set(l, 1, name255);
    presence_strlist_free(l);
    const char *groups[] = {name255};
    presence_here_now_t *h = NULL;
    assert_rc(presence_here_now(p, NULL, 0, groups, 1, PRESENCE_INCLUDE_UUIDS, 0, 0, &h), 0);
    assert_int_equal(h->nrooms, 1);
    assert_string_equal(h->rooms[0].name, name255);
    assert_int_equal(h->rooms[0].noccupants, 1);
    assert_string_equal(h->rooms[0].occupants[0].conn, name255);
    assert_string_equal(h->rooms[0].occupants[0].uuid, name255_mb);
    presence_here_now_free(h);
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, name255, "{\"a\":1}"), 1);
    expect_state(p, name255, name255_mb, "{\"a\":1}");
    assert_rc(presence_touch(p, name255), 0);
    assert_rc(presence_leave(p, name255, name255), 1);
    assert_rc(presence_leave_all(p, name255), 1);
    assert_rc(presence_group_delete(p, name255), 1);
    assert_clean(p);
}

static void test_names_valid_multibyte(void **state)
{
    presence_t *p = FX(state);
    const char *cafe = "caf\xc3\xa9";
    const char *emoji = "\xf0\x9f\x98\x80";       /* U+1F600 */
    const char *cjk = "\xe7\x94\xa8\xe6\x88\xb7"; /* two CJK characters */
    const char *maxcp = "\xf4\x8f\xbf\xbf";       /* U+10FFFF */
    const char *nbsp = "a\xc2\xa0z";              /* U+00A0, first after C1 */
    const char *bmp_end = "\xef\xbf\xbd";         /* U+FFFD */
    assert_rc(presence_join(p, cafe, emoji, cjk), PRESENCE_JOINED);
    assert_rc(presence_join(p, maxcp, nbsp, NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, bmp_end, "c", "\xe2\x82\xac"), PRESENCE_JOINED);
    expect_where(p, cjk, 1, cafe);
    expect_where(p, emoji, 1, cafe);
    presence_strlist_t *l = NULL;
    assert_rc(presence_users(p, cafe, &l), 0);
    expect_set(l, 1, cjk);
    presence_strlist_free(l);
    assert_rc(presence_occupancy(p, maxcp), 1);
    const char *rooms[] = {cafe, maxcp};
    assert_rc(presence_group_add(p, emoji, rooms, 2), 2);
    const char *groups[] = {emoji};
    presence_here_now_t *h = NULL;
    assert_rc(presence_here_now(p, NULL, 0, groups, 1, 0, 0, 0, &h), 0);
    assert_int_equal(h->total_occupancy, 2);
    presence_here_now_free(h);
    assert_clean(p);
}

/* Every API that takes a name rejects every bad name, changing nothing. */
static void test_names_rejected_everywhere(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r0", "c0", "u0"), PRESENCE_JOINED);
    const char *r0[] = {"r0"};
    assert_rc(presence_set_state(p, r0, 1, NULL, 0, "c0", "{\"s\":1}"), 1);
    assert_rc(presence_group_add(p, "g0", r0, 1), 1);
    struct snap s;
    snap_take(p, &s);

    size_t n;
    const struct bad_name *t = bad_names(&n);
    for (size_t i = 0; i < n; i++) {
        const char *b = t[i].name;
        int e = t[i].err;
        const char *arr[] = {b};
        const char *mixed[] = {"fine", b};
        presence_strlist_t *l = NULL;
        presence_here_now_t *h = NULL;
        presence_state_list_t *sl = NULL;
        presence_conn_t hd = {77, 77};
        int got[40];
        int k = 0;
        got[k++] = presence_join(p, b, "c-new", NULL);
        got[k++] = presence_join(p, "r-new", b, NULL);
        got[k++] = b ? presence_join(p, "r-new", "c-new", b) : e; /* NULL user = anonymous */
        got[k++] = presence_join(p, b, "c0", "u0");
        got[k++] = presence_join_ex(p, b, "c-new", NULL, 0, 0, &hd);
        got[k++] = presence_join_ex(p, "r-new", b, NULL, 0, 0, &hd);
        got[k++] = b ? presence_join_ex(p, "r-new", "c-new", b, 0, 0, &hd) : e;
        got[k++] = presence_leave(p, b, "c0");
        got[k++] = presence_leave(p, "r0", b);
        got[k++] = presence_leave_all(p, b);
        got[k++] = presence_touch(p, b);
        got[k++] = presence_on_message(p, b, "\"heartbeat\"", 11);
        got[k++] = presence_where_now(p, b, &l);
        got[k++] = presence_users(p, b, &l);
        got[k++] = presence_anonymous_count(p, b);
        got[k++] = presence_occupancy(p, b);
        got[k++] = presence_here_now(p, arr, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, 0, 0, &h);
        got[k++] = presence_here_now(p, mixed, 2, NULL, 0, 0, 0, 0, &h);
        got[k++] = presence_here_now(p, r0, 1, arr, 1, 0, 0, 0, &h);
        got[k++] = presence_set_state(p, arr, 1, NULL, 0, "c0", "{\"s\":2}");
        got[k++] = presence_set_state(p, mixed, 2, NULL, 0, "c0", "{\"s\":2}");
        got[k++] = presence_set_state(p, r0, 1, arr, 1, "c0", "{\"s\":2}");
        got[k++] = presence_set_state(p, r0, 1, NULL, 0, b, "{\"s\":2}");
        got[k++] = presence_get_state(p, arr, 1, NULL, 0, "u0", &sl);
        got[k++] = presence_get_state(p, r0, 1, arr, 1, "u0", &sl);
        got[k++] = presence_get_state(p, r0, 1, NULL, 0, b, &sl);
        got[k++] = presence_group_add(p, b, r0, 1);
        got[k++] = presence_group_add(p, "g0", arr, 1);
        got[k++] = presence_group_add(p, "g0", mixed, 2);
        got[k++] = presence_group_add(p, "g-new", mixed, 2);
        got[k++] = presence_group_remove(p, b, r0, 1);
        got[k++] = presence_group_remove(p, "g0", arr, 1);
        got[k++] = presence_group_list(p, b, &l);
        got[k++] = presence_group_delete(p, b);
        for (int j = 0; j < k; j++)
            if (got[j] != e)
                fail_msg("bad name #%zu: call #%d returned %d (%s), expected %s", i, j, got[j],
                         presence_err_name(got[j]), presence_err_name(e));
        /* outputs untouched on error */
        assert_null(l);
        assert_null(h);
        assert_null(sl);
        assert_int_equal(hd.index, 77);
        assert_int_equal(hd.generation, 77);
    }
    snap_same(p, &s, true);
    expect_state(p, "r0", "u0", "{\"s\":1}");
    expect_where(p, "c0", 1, "r0");
    presence_strlist_t *l = NULL;
    assert_rc(presence_group_list(p, "g0", &l), 0);
    expect_set(l, 1, "r0");
    presence_strlist_free(l);
    assert_rc(presence_group_list(p, "g-new", &l), PRESENCE_ENOGROUP);
    assert_clean(p);
}

/* ---- full segment ----------------------------------------------------------------------- */

static void test_full_presences(void **state)
{
    presence_t *p = FX(state);
    for (int i = 1; i <= 4; i++) {
        char c[8];
        snprintf(c, sizeof c, "c%d", i);
        assert_rc(presence_join(p, "r1", c, NULL), PRESENCE_JOINED);
    }
    struct snap s;
    snap_take(p, &s);
    assert_int_equal(s.st.presences, 4);
    /* new room, new connection */
    assert_rc(presence_join(p, "r-new", "c5", NULL), -ENOSPC);
    snap_same(p, &s, false);
    assert_rc(presence_occupancy(p, "r-new"), 0);
    assert_false(room_listed(p, "r-new"));
    assert_rc(presence_touch(p, "c5"), PRESENCE_NOT_PRESENT);
    expect_where(p, "c5", 0);
    assert_clean(p);
    /* new room, existing connection */
    assert_rc(presence_join(p, "r-new", "c1", NULL), -ENOSPC);
    snap_same(p, &s, false);
    assert_false(room_listed(p, "r-new"));
    expect_where(p, "c1", 1, "r1");
    /* existing room, new connection */
    assert_rc(presence_join(p, "r1", "c5", "u5"), -ENOSPC);
    snap_same(p, &s, false);
    expect_where(p, "u5", 0);
    /* a refresh needs no space */
    assert_rc(presence_join(p, "r1", "c1", NULL), PRESENCE_REFRESHED);
    assert_clean(p);

    /* reclamation: leave, two maintenance passes, joins succeed again */
    assert_rc(presence_leave(p, "r1", "c4"), 1);
    maintain2(p);
    assert_int_equal(stats(p).limbo, 0);
    assert_rc(presence_join(p, "r-new", "c5", NULL), PRESENCE_JOINED);
    assert_rc(presence_occupancy(p, "r-new"), 1);
    assert_int_equal(stats(p).presences, 4);
    assert_clean(p);
    /* again and again: records are recycled */
    for (int i = 0; i < 20; i++) {
        assert_rc(presence_leave(p, "r-new", "c5"), 1);
        maintain2(p);
        assert_rc(presence_join(p, "r-new", "c5", NULL), PRESENCE_JOINED);
    }
    assert_true(stats(p).reclaimed > 0);
    assert_clean(p);
}

/* Fills a segment with room for two (rooms or connections): c1 in r1, c2 in @room2;
 * then snapshots it into @s. */
static void fill_two(presence_t *p, const char *room2, struct snap *s)
{
    assert_rc(presence_join(p, "r1", "c1", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, room2, "c2", NULL), PRESENCE_JOINED);
    snap_take(p, s);
}

static void test_full_rooms(void **state)
{
    presence_t *p = FX(state);
    struct snap s;
    fill_two(p, "r2", &s);
    assert_rc(presence_join(p, "r3", "c3", "u3"), -ENOSPC);
    snap_same(p, &s, false);
    assert_rc(presence_touch(p, "c3"), PRESENCE_NOT_PRESENT); /* no connection left */
    expect_where(p, "u3", 0);
    assert_false(room_listed(p, "r3"));
    assert_rc(presence_join(p, "r3", "c1", NULL), -ENOSPC);
    snap_same(p, &s, false);
    expect_where(p, "c1", 1, "r1");
    assert_clean(p);
    /* existing rooms still take joins */
    assert_rc(presence_join(p, "r1", "c3", "u3"), PRESENCE_JOINED);
    /* free a room: empty it, prune it, reclaim */
    assert_rc(presence_leave(p, "r2", "c2"), 1);
    assert_rc(presence_join(p, "r3", "c4", NULL), -ENOSPC); /* empty rooms still count */
    assert_rc(presence_prune_rooms(p), 1);
    maintain2(p);
    assert_rc(presence_join(p, "r3", "c4", NULL), PRESENCE_JOINED);
    assert_int_equal(stats(p).rooms, 2);
    assert_clean(p);
}

static void test_full_connections(void **state)
{
    presence_t *p = FX(state);
    struct snap s;
    fill_two(p, "r1", &s);
    assert_rc(presence_join(p, "r-new", "c3", NULL), -ENOSPC);
    snap_same(p, &s, false);
    assert_false(room_listed(p, "r-new"));
    assert_rc(presence_occupancy(p, "r-new"), 0);
    assert_rc(presence_join(p, "r1", "c3", NULL), -ENOSPC);
    snap_same(p, &s, false);
    assert_clean(p);
    /* existing connections still join new rooms */
    assert_rc(presence_join(p, "r2", "c1", NULL), PRESENCE_JOINED);
    assert_rc(presence_leave_all(p, "c2"), 1);
    maintain2(p);
    assert_rc(presence_join(p, "r-new", "c3", NULL), PRESENCE_JOINED);
    assert_int_equal(stats(p).connections, 2);
    assert_clean(p);
}

static void test_full_arena(void **state)
{
    presence_t *p = FX(state);
    /* One 64 KiB page: it takes the class of the first blob (64-byte cells for short
     * names), so any longer blob finds no room. */
    assert_rc(presence_join(p, "r", "c", "u"), PRESENCE_JOINED);
    const char *rooms[] = {"r"};
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", "{\"a\":1}"), 1);
    char longname[80];
    memset(longname, 'L', 79);
    longname[79] = '\0';
    struct snap s;
    snap_take(p, &s);
    assert_rc(presence_join(p, longname, "c2", NULL), -ENOSPC); /* room name */
    snap_same(p, &s, false);
    assert_rc(presence_join(p, "r", longname, NULL), -ENOSPC); /* connection name */
    snap_same(p, &s, false);
    assert_rc(presence_join(p, "r", "c3", longname), -ENOSPC); /* user name */
    snap_same(p, &s, false);
    assert_rc(presence_touch(p, "c2"), PRESENCE_NOT_PRESENT);
    assert_rc(presence_touch(p, "c3"), PRESENCE_NOT_PRESENT);
    assert_false(room_listed(p, longname));
    assert_clean(p);
    /* state too large for the arena: -ENOSPC, state unchanged */
    char doc[200];
    snprintf(doc, sizeof doc, "{\"k\":\"%0150d\"}", 0);
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c", doc), -ENOSPC);
    snap_same(p, &s, false);
    expect_state(p, "r", "u", "{\"a\":1}");
    /* group member names too */
    const char *gr[] = {"ok", longname};
    assert_rc(presence_group_add(p, "g", gr, 2), -ENOSPC);
    presence_strlist_t *l = NULL;
    assert_rc(presence_group_list(p, "g", &l), PRESENCE_ENOGROUP);
    snap_same(p, &s, false);
    assert_clean(p);
    /* short names still work */
    assert_rc(presence_join(p, "r", "c2", NULL), PRESENCE_JOINED);
    maintain2(p);
    assert_clean(p);
}

static void test_full_groups(void **state)
{
    presence_t *p = FX(state);
    const char *five[] = {"r1", "r2", "r3", "r4", "r5"};
    struct snap s;
    snap_take(p, &s);
    assert_rc(presence_group_add(p, "g", five, 5), -ENOSPC); /* 4 member records */
    presence_strlist_t *l = NULL;
    assert_rc(presence_group_list(p, "g", &l), PRESENCE_ENOGROUP); /* no group left */
    snap_same(p, &s, false);
    assert_clean(p);
    maintain2(p); /* the records the failed call took are reclaimed */
    assert_rc(presence_group_add(p, "g", five, 4), 4);
    snap_take(p, &s);
    assert_rc(presence_group_add(p, "g", five + 4, 1), -ENOSPC);
    assert_rc(presence_group_list(p, "g", &l), 0);
    assert_int_equal(l->count, 4);
    presence_strlist_free(l);
    l = NULL;
    /* one group record */
    assert_rc(presence_group_add(p, "h", five, 1), -ENOSPC);
    assert_rc(presence_group_list(p, "h", &l), PRESENCE_ENOGROUP);
    snap_same(p, &s, false);
    assert_clean(p);
    assert_rc(presence_group_delete(p, "g"), 1);
    maintain2(p);
    assert_rc(presence_group_add(p, "h", five, 4), 4);
    assert_clean(p);
}

/* ---- events, stats ------------------------------------------------------------------------ */

/* A name of @len bytes for event test @k: printable ASCII that shifts with k and
 * the position (a byte put in the wrong place shows), ending in a two-byte "é"
 * when @mb and there is room. */
static void event_name(char *out, size_t len, unsigned k, char tag, bool mb)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (char) ('a' + (i * 7 + k) % 26);
    out[0] = tag;
    if (mb && len >= 3)
        memcpy(out + len - 2, "\xc3\xa9", 2);
    out[len] = '\0';
}

static void expect_event(presence_sub_t *s, int type, const char *room, const char *conn,
                         const char *user, uint32_t occupancy)
{
    presence_event_t ev;
    assert_rc(presence_sub_next(s, &ev), 1);
    assert_int_equal(ev.type, type);
    assert_string_equal(ev.room, room);
    assert_string_equal(ev.conn, conn);
    assert_string_equal(ev.user, user);
    assert_int_equal(ev.occupancy, occupancy);
}

/* Events carry their names whole, whatever the lengths: a record's bytes cross
 * its 56-byte entries at every offset (room, connection and user lengths from 1
 * to 255, so records of 1 to 15 entries), and the fixture's ring of 64 entries
 * wraps every few calls, so records also split across its end. */
static void test_event_names_across_entries(void **state)
{
    presence_t *p = FX(state);
    static const size_t room_lens[] = {1, 23, 24, 55, 56, 57, 200, 255};
    char rooms[8][256], conn[256], user[256];
    for (unsigned r = 0; r < 8; r++)
        event_name(rooms[r], room_lens[r], r, (char) ('A' + r), r % 2 == 1);
    presence_sub_t *s = NULL;
    assert_rc(presence_subscribe(p, PRESENCE_SEQ_NOW, NULL, &s), 0);
    uint64_t first = presence_sub_position(s);
    for (unsigned k = 0; k < 600; k++) {
        const char *room = rooms[k % 8];
        event_name(conn, 1 + (k * 37) % 255, k, 'c', k % 3 == 0);
        bool anonymous = k % 5 == 0;
        event_name(user, 1 + (k * 53) % 255, k, 'u', k % 2 == 0);
        assert_rc(presence_join(p, room, conn, anonymous ? NULL : user), PRESENCE_JOINED);
        if (k < 8)
            expect_event(s, PRESENCE_EV_ROOM_CREATED, room, "", "", 0);
        expect_event(s, PRESENCE_EV_JOIN, room, conn, anonymous ? "" : user, 1);
        assert_rc(presence_leave(p, room, conn), 1);
        expect_event(s, PRESENCE_EV_LEAVE, room, conn, anonymous ? "" : user, 0);
        presence_event_t ev;
        assert_rc(presence_sub_next(s, &ev), 0);
    }
    assert_true(presence_sub_position(s) - first > 20 * 64); /* the ring wrapped, often */
    presence_sub_close(s);
    assert_clean(p);
}

static void test_events_counted(void **state)
{
    presence_t *p = FX(state);
    uint64_t t = stats(p).ring_tail;
#define EXPECT_EVENTS(n)                    \
    do {                                    \
        uint64_t now_ = stats(p).ring_tail; \
        assert_int_equal(now_ - t, (n));    \
        t = now_;                           \
    } while (0)
    assert_rc(presence_join(p, "r1", "c1", NULL), PRESENCE_JOINED);
    EXPECT_EVENTS(2); /* room_created, join */
    assert_rc(presence_join(p, "r1", "c1", NULL), PRESENCE_REFRESHED);
    EXPECT_EVENTS(0);
    assert_rc(presence_join(p, "r1", "c2", NULL), PRESENCE_JOINED);
    EXPECT_EVENTS(1);
    assert_rc(presence_join(p, "r2", "c1", NULL), PRESENCE_JOINED);
    EXPECT_EVENTS(2);
    const char *rooms[] = {"r1", "r2"};
    assert_rc(presence_set_state(p, rooms, 2, NULL, 0, "c1", "{}"), 2);
    EXPECT_EVENTS(2); /* state_change per presence */
    assert_rc(presence_touch(p, "c1"), 0);
    assert_rc(presence_on_message(p, "c1", "\"heartbeat\"", 11), PRESENCE_MSG_HEARTBEAT);
    EXPECT_EVENTS(0);
    assert_rc(presence_leave(p, "r1", "c2"), 1);
    EXPECT_EVENTS(1);
    assert_rc(presence_leave(p, "r1", "c2"), 0);
    EXPECT_EVENTS(0);
    assert_rc(presence_leave_all(p, "c1"), 2);
    EXPECT_EVENTS(2);
    assert_rc(presence_join_ex(p, "r1", "t", NULL, 1, 0, NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "t", NULL), PRESENCE_JOINED);
    EXPECT_EVENTS(2);
    msleep(60); /* > 1 ms plus last_seen's lead (four ticks) */
    assert_rc(presence_prune(p, 60000), 1);
    EXPECT_EVENTS(2); /* timeout per presence */
    assert_rc(presence_prune_rooms(p), 2);
    EXPECT_EVENTS(2); /* room_deleted */
    const char *g[] = {"r1"};
    assert_rc(presence_group_add(p, "g", g, 1), 1);
    assert_rc(presence_group_delete(p, "g"), 1);
    EXPECT_EVENTS(0); /* groups are not presence */
#undef EXPECT_EVENTS
    assert_clean(p);
}

static void test_stats(void **state)
{
    presence_t *p = FX(state);
    const presence_options_t *o = &((struct fx *) *state)->opts;
    presence_stats_t s = stats(p);
    assert_true(s.bytes_per_presence > 0 && s.bytes_per_presence <= 128);
    assert_int_equal(s.rooms_cap, o->rooms);
    assert_int_equal(s.connections_cap, o->connections);
    assert_int_equal(s.presences_cap, o->presences);
    assert_int_equal(s.groups_cap, o->groups);
    assert_int_equal(s.group_members_cap, o->group_members);
    assert_int_equal(s.state_max, o->state_max);
    assert_int_equal(s.max_age_ms, o->max_age_ms);
    assert_int_equal(s.ring_entries, o->ring_entries);
    assert_int_equal(s.rooms, 0);
    assert_int_equal(s.connections, 0);
    assert_int_equal(s.presences, 0);
    assert_int_equal(s.groups, 0);
    assert_int_equal(s.group_members, 0);
    assert_true(s.segment_bytes > 0);
    assert_true(s.procs_attached >= 1);

    assert_rc(presence_join(p, "r1", "c1", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c1", "u"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c2", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r3", "c3", NULL), PRESENCE_JOINED);
    const char *gr[] = {"r1", "r2", "x"};
    assert_rc(presence_group_add(p, "g1", gr, 3), 3);
    assert_rc(presence_group_add(p, "g2", gr, 1), 1);
    s = stats(p);
    assert_int_equal(s.rooms, 3);
    assert_int_equal(s.connections, 3);
    assert_int_equal(s.presences, 4);
    assert_int_equal(s.groups, 2);
    assert_int_equal(s.group_members, 4);
    assert_int_equal(s.joins, 4);
    assert_int_equal(s.leaves, 0);
    assert_true(s.arena_used > 0 && s.arena_used <= s.arena_cap);
    assert_rc(presence_leave(p, "r3", "c3"), 1);
    s = stats(p);
    assert_int_equal(s.rooms, 3);
    assert_int_equal(s.connections, 2);
    assert_int_equal(s.presences, 3);
    assert_int_equal(s.leaves, 1);
    assert_clean(p);
}

/* ---- check ---------------------------------------------------------------------------- */

static int check_count(presence_t *p, const char *expect_substr)
{
    presence_strlist_t *l = NULL;
    int n = presence_check(p, &l);
    assert_true(n >= 0);
    assert_non_null(l);
    assert_int_equal(l->count, (size_t) n);
    bool found = expect_substr == NULL;
    for (size_t i = 0; i < l->count; i++) {
        assert_non_null(l->items[i]);
        assert_true(strlen(l->items[i]) > 0);
        if (expect_substr && strstr(l->items[i], expect_substr))
            found = true;
    }
    if (!found) {
        print_error("no violation mentions '%s'; got %d:\n", expect_substr, n);
        for (size_t i = 0; i < l->count; i++)
            print_error("  %s\n", l->items[i]);
    }
    presence_strlist_free(l);
    assert_true(found);
    assert_int_equal(presence_check(p, NULL), n); /* same answer without the list */
    return n;
}

static void populate(presence_t *p)
{
    assert_rc(presence_join(p, "r1", "c1", "u1"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r1", "c2", NULL), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r1", "c3", "u3"), PRESENCE_JOINED);
    assert_rc(presence_join(p, "r2", "c1", "u1"), PRESENCE_JOINED);
    const char *rooms[] = {"r1"};
    assert_rc(presence_set_state(p, rooms, 1, NULL, 0, "c1", "{\"x\":1}"), 1);
    const char *gr[] = {"r1", "r2"};
    assert_rc(presence_group_add(p, "g", gr, 2), 2);
    assert_rc(presence_leave(p, "r2", "c1"), 1); /* something in limbo, an empty room */
}

static void test_check_healthy(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_check(p, NULL), 0); /* empty */
    populate(p);
    assert_rc(presence_check(p, NULL), 0);
    assert_clean(p);
    maintain2(p);
    assert_clean(p);
    assert_rc(presence_prune_rooms(p), 1);
    assert_rc(presence_leave_all(p, "c1"), 1);
    assert_clean(p);
}

static void test_check_detects_corruption(void **state)
{
    presence_t *p = FX(state);
    populate(p);
    assert_clean(p);
    int64_t ri = pr__room_find(p, "r1", 2, pr__hash(p, "r1", 2));
    int64_t ci = pr__conn_find(p, "c1", 2, pr__hash(p, "c1", 2));
    assert_true(ri >= 0 && ci >= 0);
    struct pr_room *r = pr__room(p, (uint32_t) ri);
    struct pr_conn *c = pr__conn(p, (uint32_t) ci);
    assert_non_null(r);
    assert_non_null(c);

    /* a room's occupancy counter */
    r->occupancy++;
    assert_true(check_count(p, "occupancy") > 0);
    r->occupancy--;
    assert_rc(presence_check(p, NULL), 0);

    /* its anonymous counter */
    r->anonymous += 5;
    assert_true(check_count(p, "anonymous") > 0);
    r->anonymous -= 5;
    assert_rc(presence_check(p, NULL), 0);

    /* a broken link in the room's member list */
    assert_int_not_equal(r->members, 0);
    struct pr_pres *first = pr__pres(p, r->members - 1);
    assert_non_null(first);
    uint32_t saved = first->room_next;
    assert_int_not_equal(saved, 0);
    first->room_next = 0;
    assert_true(check_count(p, NULL) > 0);
    first->room_next = saved;
    assert_rc(presence_check(p, NULL), 0);

    /* a wrong back link */
    struct pr_pres *second = pr__pres(p, saved - 1);
    uint32_t saved_prev = second->room_prev;
    second->room_prev = 0;
    assert_true(check_count(p, "back link") > 0);
    second->room_prev = saved_prev;
    assert_rc(presence_check(p, NULL), 0);

    /* an index out of bounds */
    uint32_t saved_members = r->members;
    r->members = p->h->cap_pres + 10;
    assert_true(check_count(p, "out of bounds") > 0);
    r->members = saved_members;
    assert_rc(presence_check(p, NULL), 0);

    /* a connection's presence counter */
    c->npres++;
    assert_true(check_count(p, "npres") > 0);
    c->npres--;
    assert_rc(presence_check(p, NULL), 0);

    /* a presence naming another room */
    uint32_t saved_room = first->room;
    first->room = saved_room == 0 ? 1 : 0;
    assert_true(check_count(p, "names room") > 0);
    first->room = saved_room;

    /* a leaked record: live, in no index */
    uint32_t saved_bucket = *pr__bucket(p, PR_T_CONN, c->name_hash);
    *pr__bucket(p, PR_T_CONN, c->name_hash) = 0;
    assert_true(check_count(p, "unreachable") > 0);
    *pr__bucket(p, PR_T_CONN, c->name_hash) = saved_bucket;
    assert_clean(p);
}

/* ---- read-only attachment, bad arguments ---------------------------------------------------- */

static void test_readonly(void **state)
{
    struct fx *f = *state;
    presence_t *p = f->p;
    presence_conn_t h;
    assert_rc(presence_join_ex(p, "r", "c", NULL, 0, 0, &h), PRESENCE_JOINED);
    const char *rooms[] = {"r"};
    assert_rc(presence_group_add(p, "g", rooms, 1), 1);
    presence_options_t o;
    presence_options_init(&o);
    o.flags = PRESENCE_RDONLY;
    presence_t *ro = NULL;
    assert_rc(presence_open(f->name, &o, &ro), 0);
    struct snap s;
    snap_take(p, &s);
    assert_rc(presence_join(ro, "r", "c2", NULL), -EROFS);
    assert_rc(presence_join(ro, "r", "c", NULL), -EROFS);
    assert_rc(presence_join_ex(ro, "r", "c2", NULL, 0, 0, NULL), -EROFS);
    assert_rc(presence_leave(ro, "r", "c"), -EROFS);
    assert_rc(presence_leave_all(ro, "c"), -EROFS);
    assert_rc(presence_touch(ro, "c"), -EROFS);
    assert_rc(presence_touch_handle(ro, h), -EROFS);
    assert_true(presence_on_message(ro, "c", "x", 1) < 0);
    assert_true(presence_prune(ro, 1) < 0);
    assert_true(presence_prune_rooms(ro) < 0);
    assert_rc(presence_set_state(ro, rooms, 1, NULL, 0, "c", "{}"), -EROFS);
    assert_true(presence_group_add(ro, "g", rooms, 1) < 0);
    assert_true(presence_group_remove(ro, "g", rooms, 1) < 0);
    assert_true(presence_group_delete(ro, "g") < 0);
    assert_true(presence_maintain(ro) < 0);
    snap_same(p, &s, true);
    /* queries work */
    assert_rc(presence_occupancy(ro, "r"), 1);
    presence_here_now_t *hn = NULL;
    assert_rc(presence_here_now(ro, rooms, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, 0, 0, &hn), 0);
    assert_int_equal(hn->rooms[0].noccupants, 1);
    presence_here_now_free(hn);
    presence_strlist_t *l = NULL;
    assert_rc(presence_where_now(ro, "c", &l), 0);
    expect_set(l, 1, "r");
    presence_strlist_free(l);
    assert_rc(presence_group_list(ro, "g", &l), 0);
    expect_set(l, 1, "r");
    presence_strlist_free(l);
    assert_rc(presence_check(ro, NULL), 0);
    presence_close(ro);
    assert_rc(presence_touch(p, "c"), 0);
    assert_clean(p);
}

static void test_bad_arguments(void **state)
{
    presence_t *p = FX(state);
    assert_rc(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    struct snap s;
    snap_take(p, &s);
    presence_here_now_t *h = NULL;
    presence_state_list_t *sl = NULL;
    /* NULL arrays with a count: an error, no crash, nothing changed */
    assert_true(presence_here_now(p, NULL, 1, NULL, 0, 0, 0, 0, &h) < 0);
    assert_true(presence_here_now(p, NULL, 0, NULL, 2, 0, 0, 0, &h) < 0);
    assert_null(h);
    assert_true(presence_set_state(p, NULL, 1, NULL, 0, "c", "{}") < 0);
    assert_true(presence_set_state(p, NULL, 0, NULL, 1, "c", "{}") < 0);
    assert_true(presence_get_state(p, NULL, 1, NULL, 0, "c", &sl) < 0);
    assert_null(sl);
    assert_true(presence_group_add(p, "g", NULL, 1) < 0);
    assert_true(presence_group_remove(p, "g", NULL, 1) < 0);
    presence_strlist_t *l = NULL;
    assert_rc(presence_group_list(p, "g", &l), PRESENCE_ENOGROUP);
    assert_rc(presence_on_message(p, "c", NULL, 11), 0);
    snap_same(p, &s, true);
    /* free functions accept NULL */
    presence_here_now_free(NULL);
    presence_strlist_free(NULL);
    presence_state_list_free(NULL);
    presence_room_list_free(NULL);
    assert_clean(p);
}

/* ---- main --------------------------------------------------------------------------------- */

#define T(f)       cmocka_unit_test_setup_teardown(f, setup, teardown)
#define TC(f, cfg) cmocka_unit_test_prestate_setup_teardown(f, setup, teardown, &(cfg))

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_join_then_refresh),
        T(test_join_user_conflict),
        T(test_join_conflict_does_not_refresh),
        T(test_join_anonymous),
        T(test_join_refreshes_last_seen),
        T(test_join_timeout_applies_on_create),
        T(test_join_bad_flags),
        T(test_leave),
        T(test_leave_all),
        T(test_last_leave_removes_connection),
        T(test_touch),
        T(test_touch_name_lengths),
        T(test_touch_handle),
        T(test_on_message),
        T(test_on_message_touches),
        T(test_prune_per_connection_timeout),
        TC(test_prune_default_max_age, cfg_maxage150),
        T(test_prune_counts_connections),
        T(test_prune_huge_max_age),
        T(test_prune_rooms),
        T(test_here_now),
        T(test_here_now_state),
        T(test_here_now_uuids_only),
        T(test_here_now_limit_offset),
        T(test_here_now_groups),
        T(test_where_now),
        T(test_users_anonymous_occupancy),
        T(test_rooms_listing),
        T(test_state_replace),
        T(test_state_groups),
        T(test_state_not_an_object),
        TC(test_state_too_big, cfg_state64),
        T(test_state_dropped_when_presence_ends),
        T(test_get_state_by_uuid),
        T(test_groups),
        T(test_groups_limit),
        T(test_name_lengths),
        T(test_names_valid_multibyte),
        T(test_names_rejected_everywhere),
        TC(test_full_presences, cfg_pres4),
        TC(test_full_rooms, cfg_rooms2),
        TC(test_full_connections, cfg_conns2),
        TC(test_full_arena, cfg_arena1),
        TC(test_member_array_chunks, cfg_members),
        TC(test_member_array_beyond_chunks, cfg_members),
        TC(test_member_array_no_space, cfg_arena1),
        TC(test_member_array_after_prune, cfg_members),
        TC(test_member_array_after_killed_prune, cfg_members),
        TC(test_full_groups, cfg_groups_small),
        T(test_events_counted),
        T(test_event_names_across_entries),
        T(test_stats),
        T(test_check_healthy),
        T(test_check_detects_corruption),
        T(test_readonly),
        T(test_bad_arguments),
    };
    return cmocka_run_group_tests_name("registry", tests, NULL, NULL);
}
