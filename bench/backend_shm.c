/*
 * backend_shm.c -- presence-bench: our library, called through include/presence.h
 * exactly as a user would call it.
 *
 * Each run creates a fresh segment with a unique name (/presence-bench-<pid>-<n>),
 * sized for the workload (presence_options_t capacities, with headroom for records
 * retired but not yet reclaimed), and unlinks it at the end. Every process attaches by
 * name with presence_open(). touch is by connection name; the touch_handle row uses
 * presence_touch_handle() with handles from presence_join_ex(). here_now asks for the
 * uuids (PRESENCE_INCLUDE_UUIDS), as the other backends list them. The parent runs
 * presence_maintain() every few milliseconds during a run, standing in for the reaper
 * daemon.
 */
#include "backend.h"
#include "cleanup.h"

#include <presence.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHM_HEADROOM 65536u /* records that may sit retired between maintenance passes */

typedef struct shm_store {
    char name[64];
} shm_store_t;

static uint32_t cap32(uint64_t v)
{
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t) v;
}

static int shm_setup(const bench_store_spec_t *spec, void **store, char *err, size_t errlen)
{
    static unsigned seq;
    shm_store_t *st = calloc(1, sizeof *st);
    if (st == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(st->name, sizeof st->name, "/presence-bench-%d-%u", (int) getpid(), seq++);

    presence_options_t o;
    presence_options_init(&o);
    o.rooms = cap32(spec->rooms + 64);
    o.connections = cap32(spec->connections * 2 + SHM_HEADROOM);
    o.presences = cap32(spec->presences * 2 + SHM_HEADROOM);
    uint64_t records = (uint64_t) o.rooms + o.connections + o.presences;
    o.arena_bytes = 16u * 1024 * 1024 + records * 64 + spec->presences * (spec->state_len + 16);
    if (o.procs < spec->procs + 8)
        o.procs = spec->procs + 8;
    if (o.readers < 4 * spec->procs + 16)
        o.readers = 4 * spec->procs + 16;
    o.flags = PRESENCE_CREATE | PRESENCE_EXCL;

    presence_t *p = NULL;
    int rc = presence_open(st->name, &o, &p);
    if (rc != 0) {
        snprintf(err, errlen, "shm: creating %s: %s", st->name, presence_strerror(rc));
        free(st);
        return -1;
    }
    cleanup_add_shm(st->name);
    presence_close(p);
    *store = st;
    return 0;
}

static void shm_teardown(void *store)
{
    shm_store_t *st = store;
    if (st == NULL)
        return;
    presence_unlink(st->name);
    cleanup_del_shm(st->name);
    free(st);
}

static int shm_open_(void *store, void **h, char *err, size_t errlen)
{
    shm_store_t *st = store;
    presence_t *p = NULL;
    int rc = presence_open(st->name, NULL, &p);
    if (rc != 0) {
        snprintf(err, errlen, "shm: attaching %s: %s", st->name, presence_strerror(rc));
        return -1;
    }
    *h = p;
    return 0;
}

static void shm_close(void *h)
{
    presence_close(h);
}

static int shm_join(void *h, const bench_key_t *k, uint64_t timeout_ms)
{
    return presence_join_ex(h, k->room, k->conn, k->user, timeout_ms, 0, NULL);
}

static int shm_leave(void *h, const bench_key_t *k)
{
    return presence_leave(h, k->room, k->conn);
}

static int shm_touch(void *h, const bench_key_t *k)
{
    return presence_touch(h, k->conn);
}

static int shm_touch_prepare(void *h, const bench_key_t *k, uint64_t *token)
{
    presence_conn_t c;
    int rc = presence_join_ex(h, k->room, k->conn, k->user, 0, 0, &c);
    if (rc < 0)
        return rc;
    *token = (uint64_t) c.index << 32 | c.generation;
    return 0;
}

static int shm_touch_token(void *h, uint64_t token)
{
    presence_conn_t c = {.index = (uint32_t) (token >> 32), .generation = (uint32_t) token};
    return presence_touch_handle(h, c);
}

static int shm_here_now(void *h, const char *room)
{
    presence_here_now_t *res = NULL;
    int rc = presence_here_now(h, &room, 1, NULL, 0, PRESENCE_INCLUDE_UUIDS, 0, 0, &res);
    if (rc < 0)
        return rc;
    int n = -EPROTO;
    if (res != NULL && res->nrooms == 1 && res->rooms[0].noccupants == res->rooms[0].occupancy)
        n = (int) res->rooms[0].occupancy;
    presence_here_now_free(res);
    return n;
}

static int shm_where_now(void *h, const char *uuid)
{
    presence_strlist_t *list = NULL;
    int rc = presence_where_now(h, uuid, &list);
    if (rc < 0)
        return rc;
    int n = list != NULL ? (int) list->count : 0;
    presence_strlist_free(list);
    return n;
}

static int shm_get_state(void *h, const bench_key_t *k)
{
    presence_state_list_t *list = NULL;
    const char *uuid = k->user ? k->user : k->conn;
    int rc = presence_get_state(h, &k->room, 1, NULL, 0, uuid, &list);
    if (rc < 0)
        return rc;
    int n = 0;
    for (size_t i = 0; list != NULL && i < list->count; i++)
        n += list->items[i].state != NULL;
    presence_state_list_free(list);
    return n;
}

static int shm_prune(void *h)
{
    return presence_prune(h, 0);
}

static int shm_populate(void *h, const bench_key_t *keys, size_t n, uint64_t timeout_ms,
                        const char *state)
{
    for (size_t i = 0; i < n; i++) {
        const bench_key_t *k = &keys[i];
        int rc = presence_join_ex(h, k->room, k->conn, k->user, timeout_ms, 0, NULL);
        if (rc < 0)
            return rc;
        if (state != NULL) {
            rc = presence_set_state(h, &k->room, 1, NULL, 0, k->conn, state);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static void shm_maintain(void *h)
{
    presence_maintain(h);
}

static const char *shm_errstr(void *h, int rc)
{
    (void) h;
    if (rc == -EPROTO)
        return "here_now: listed occupants differ from the occupancy";
    return rc < 0 ? presence_strerror(rc) : "unexpected result";
}

const char *bench_shm_version(void)
{
    return presence_version_string();
}

const bench_backend_t bench_backend_shm = {
    .name = "shm",
    .description = "libpresence: lock-free reads in one POSIX shm segment",
    .batch = 1,
    .setup = shm_setup,
    .teardown = shm_teardown,
    .open = shm_open_,
    .close = shm_close,
    .join = shm_join,
    .leave = shm_leave,
    .touch = shm_touch,
    .touch_prepare = shm_touch_prepare,
    .touch_token = shm_touch_token,
    .here_now = shm_here_now,
    .where_now = shm_where_now,
    .get_state = shm_get_state,
    .prune = shm_prune,
    .populate = shm_populate,
    .maintain = shm_maintain,
    .errstr = shm_errstr,
};
