/*
 * workload.c -- presence-bench: the workloads (see workload.h for the list): their
 * populations, and the timed loops their worker processes run.
 *
 * Timing: an operation (or a pipelined batch) is timed on its own between two
 * CLOCK_MONOTONIC readings, so each sample includes one clock reading's cost (printed
 * with every run) and the loop's own bookkeeping (a few ns). here_now, prune's readers
 * and the mixed scenario time every call (one sample's end is the next one's start);
 * the short unpipelined operations (touch, join_leave, where_now, get_state) time one
 * call in WL_TIMED_STRIDE on average, at random intervals (a fixed one fell in step
 * with the library's reclaim, every 64 retirements: 16 join_leave pairs), and run the
 * others untimed, so that their throughput is the operations' and not the clock's (a
 * reading costs 28 ns here, as much as a touch by handle); their percentiles come from
 * the timed calls. A batch of n pipelined operations records its round trip n times.
 * Samples started before the warm-up ends are not recorded.
 */
#include "workload.h"

#include "clock.h"

#include "cleanup.h"
#include "jl_floor.h"
#include "map.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define WL_NAME_CAP      24
#define WL_LIVE_TIMEOUT  3600000u   /* ms: nothing of the population expires during a run */
#define WL_OLD_TIMEOUT   1u         /* ms: the prune workload's expired presences */
#define WL_HERE_NOW_CAP  200000u    /* most presences a here_now population holds */
#define WL_PIPE_ELEMENTS 100000u    /* pipelined here_now: at most this many members per batch */
#define WL_EWRONG        (-1000000) /* an operation answered something unexpected */
#define WL_PAR_POPULATE  100000u    /* populations this large are loaded in parallel */
#define WL_EV_POLL_MS    200        /* events: poll() slices, to notice an abort */
#define WL_EV_BURSTS     20         /* events_drain: bursts */
#define WL_EV_BURST                                             \
    5000u /* join + leave pairs per burst (10,000 events, which \
             fit the default ring of 65,536 64-byte entries) */

static const char *const g_state = "{\"mood\":\"ok\",\"device\":\"web\",\"typing\":false}";

static const char *const g_op_names[OP__COUNT] = {
    [OP_TOUCH] = "touch",
    [OP_TOUCH_HANDLE] = "touch_handle",
    [OP_TOUCH_FLOOR] = "touch_floor",
    [OP_JOIN_LEAVE] = "join_leave",
    [OP_JOIN_LEAVE_FLOOR] = "join_leave_floor",
    [OP_HERE_NOW] = "here_now",
    [OP_WHERE_NOW] = "where_now",
    [OP_GET_STATE] = "get_state",
    [OP_PRUNE] = "prune",
    [OP_MIXED] = "mixed",
    [OP_EVENTS] = "events",
};

const char *bench_op_name(bench_op_t op)
{
    return (unsigned) op < OP__COUNT ? g_op_names[op] : "?";
}

/* ------------------------------------------------------------ populations ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__attribute__((format(printf, 2, 3))) static char *put_name(char **cursor, const char *fmt, ...)
{
    char *s = *cursor;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, WL_NAME_CAP, fmt, ap);
    va_end(ap);
    *cursor += WL_NAME_CAP;
    return s;
}

int workload_init(workload_t *wl, bench_op_t op, uint32_t size, const bench_config_t *cfg)
{
    memset(wl, 0, sizeof *wl);
    wl->op = op;
    wl->procs = cfg->procs;
    wl->rooms = cfg->rooms;
    wl->room_size = cfg->room_size;
    wl->huge_pages = cfg->huge_pages;
    wl->floor_bytes = cfg->floor_bytes;
    wl->efd_ping = wl->efd_pong = wl->efd_relay_in = wl->efd_relay_out = -1;
    snprintf(wl->name, sizeof wl->name, "%s", bench_op_name(op));
    snprintf(wl->row[0], sizeof wl->row[0], "%s", bench_op_name(op));
    wl->nrows = 1;
    size_t nold = 0, nextra = 0;
    switch (op) {
    case OP_HERE_NOW: {
        wl->room_size = size;
        if (cfg->population != 0) { /* the scale runs: all of it, in rooms of this size */
            uint64_t r = cfg->population / size;
            wl->rooms = r == 0 ? 1 : r > UINT32_MAX ? UINT32_MAX : (uint32_t) r;
        } else {
            uint32_t fit = WL_HERE_NOW_CAP / size;
            wl->rooms = cfg->rooms < fit ? cfg->rooms : fit ? fit : 1;
        }
        snprintf(wl->row[0], sizeof wl->row[0], "here_now_%u", (unsigned) size);
        break;
    }
    case OP_GET_STATE:
        wl->with_state = true;
        break;
    case OP_PRUNE:
        wl->prune_size = cfg->prune_size;
        nold = cfg->prune_size;
        if (cfg->procs > 1) {
            snprintf(wl->row[1], sizeof wl->row[1], "prune_read");
            snprintf(wl->row[2], sizeof wl->row[2], "prune_idle_read");
            wl->nrows = 3;
            wl->idle_s = cfg->duration_s > 0 ? cfg->duration_s : 0.5;
        }
        break;
    case OP_EVENTS:
        snprintf(wl->row[0], sizeof wl->row[0], "events_wakeup");
        snprintf(wl->row[1], sizeof wl->row[1], "eventfd_pingpong");
        snprintf(wl->row[2], sizeof wl->row[2], "eventfd_relay");
        snprintf(wl->row[3], sizeof wl->row[3], "events_flood_read");
        snprintf(wl->row[4], sizeof wl->row[4], "events_flood_write");
        snprintf(wl->row[5], sizeof wl->row[5], "events_drain");
        snprintf(wl->row[6], sizeof wl->row[6], "events_wakeup_from_event");
        wl->nrows = 7;
        wl->event_samples = cfg->event_samples;
        wl->event_pace_us = cfg->event_pace_us;
        wl->reaper = cfg->reaper;
        nextra = (size_t) cfg->procs * WL_EXTRA_KEYS;
        wl->efd_ping = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        wl->efd_pong = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        wl->efd_relay_in = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        wl->efd_relay_out = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (wl->efd_ping < 0 || wl->efd_pong < 0 || wl->efd_relay_in < 0 || wl->efd_relay_out < 0) {
            workload_free(wl);
            return -1;
        }
        break;
    case OP_MIXED:
        snprintf(wl->row[0], sizeof wl->row[0], "mixed_read");
        snprintf(wl->row[1], sizeof wl->row[1], "mixed_write");
        wl->nrows = 2;
        nextra = WL_EXTRA_KEYS;
        break;
    case OP_JOIN_LEAVE:
    case OP_JOIN_LEAVE_FLOOR:
        nextra = (size_t) cfg->procs * WL_EXTRA_KEYS;
        break;
    default:
        break;
    }
    size_t nlive = (size_t) wl->rooms * wl->room_size;
    /* --conn-rooms K: connection c holds presences c, c + n/K, c + 2n/K, ... (K rooms,
     * all different as long as n/K >= room_size); otherwise one room each */
    uint32_t per = cfg->conn_rooms ? cfg->conn_rooms : 1;
    if (per > 1 && (nlive % per != 0 || nlive / per < wl->room_size))
        per = 1;
    wl->conn_rooms = per;
    wl->live_conns = nlive / per;
    if (op == OP_TOUCH_FLOOR)
        nlive = 0; /* its records are its own (prepare), the store stays empty */
    uint32_t old_rooms = nold ? (uint32_t) ((nold + wl->room_size - 1) / wl->room_size) : 0;
    size_t nnames = wl->rooms + old_rooms + 2 * ((nlive ? wl->live_conns : 0) + nold + nextra);
    wl->names = malloc(nnames * WL_NAME_CAP);
    wl->live.keys = calloc(nlive ? nlive : 1, sizeof(bench_key_t));
    wl->old.keys = calloc(nold ? nold : 1, sizeof(bench_key_t));
    wl->extra.keys = calloc(nextra ? nextra : 1, sizeof(bench_key_t));
    if (wl->names == NULL || wl->live.keys == NULL || wl->old.keys == NULL ||
        wl->extra.keys == NULL) {
        workload_free(wl);
        return -1;
    }
    char *cur = wl->names;
    const char *room = NULL;
    for (size_t i = 0; i < nlive; i++) {
        if (i % wl->room_size == 0)
            room = put_name(&cur, "room-%05u", (unsigned) (i / wl->room_size));
        bench_key_t *k = &wl->live.keys[i];
        k->room = room;
        if (op == OP_JOIN_LEAVE_FLOOR)
            continue; /* only its rooms' names are used (below) */
        if (i < wl->live_conns) {
            k->conn = put_name(&cur, "conn-%07u", (unsigned) i);
            k->user = put_name(&cur, "user-%07u", (unsigned) i);
        } else {
            k->conn = wl->live.keys[i % wl->live_conns].conn;
            k->user = wl->live.keys[i % wl->live_conns].user;
        }
    }
    wl->live.n = nlive;
    for (size_t i = 0; i < nold; i++) {
        if (i % wl->room_size == 0)
            room = put_name(&cur, "old-room-%05u", (unsigned) (i / wl->room_size));
        bench_key_t *k = &wl->old.keys[i];
        k->room = room;
        k->conn = put_name(&cur, "old-conn-%07u", (unsigned) i);
        k->user = put_name(&cur, "old-user-%07u", (unsigned) i);
    }
    wl->old.n = nold;
    uint64_t rs = cfg->seed ^ 0x5eedull;
    for (size_t i = 0; i < nextra; i++) {
        bench_key_t *k = &wl->extra.keys[i];
        unsigned w = (unsigned) (i / WL_EXTRA_KEYS), j = (unsigned) (i % WL_EXTRA_KEYS);
        k->room = wl->live.keys[(splitmix64(&rs) % wl->rooms) * wl->room_size].room;
        k->conn = put_name(&cur, "w%03u-conn-%05u", w, j);
        k->user = put_name(&cur, "w%03u-user-%05u", w, j);
    }
    wl->extra.n = nextra;
    if (op == OP_JOIN_LEAVE_FLOOR) {
        /* no store population: the live keys only named the pairs' rooms; the floor's
         * index sized as the library's for the population and the pairs */
        wl->live.n = 0;
        wl->jl_floor =
            jl_floor_create(wl->live_conns + nextra, wl->rooms, cfg->procs, WL_FLOOR_RING);
        if (wl->jl_floor == NULL) {
            workload_free(wl);
            return -1;
        }
    }
    return 0;
}

void workload_free(workload_t *wl)
{
    if (wl->efd_ping >= 0)
        close(wl->efd_ping);
    if (wl->efd_pong >= 0)
        close(wl->efd_pong);
    if (wl->efd_relay_in >= 0)
        close(wl->efd_relay_in);
    if (wl->efd_relay_out >= 0)
        close(wl->efd_relay_out);
    free(wl->names);
    free(wl->live.keys);
    free(wl->old.keys);
    free(wl->extra.keys);
    jl_floor_destroy(wl->jl_floor);
    memset(wl, 0, sizeof *wl);
}

int workload_supported(const workload_t *wl, const bench_backend_t *be)
{
    switch (wl->op) {
    case OP_TOUCH:
        return be->touch != NULL;
    case OP_TOUCH_HANDLE:
    case OP_TOUCH_FLOOR: /* no backend call; shown once, beside the library's rows */
    case OP_JOIN_LEAVE_FLOOR:
        return be->touch_prepare != NULL && be->touch_token != NULL;
    case OP_JOIN_LEAVE:
        return be->join != NULL && be->leave != NULL;
    case OP_HERE_NOW:
        return be->here_now != NULL;
    case OP_WHERE_NOW:
        return be->where_now != NULL;
    case OP_GET_STATE:
        return be->get_state != NULL;
    case OP_PRUNE:
        return be->prune != NULL && be->here_now != NULL;
    case OP_MIXED:
        return be->join && be->leave && be->touch && be->here_now;
    case OP_EVENTS:
        return be->join && be->leave && be->ev_subscribe && be->ev_fd && be->ev_next &&
               be->ev_close;
    default:
        return 0;
    }
}

void workload_spec(const workload_t *wl, bench_store_spec_t *spec)
{
    uint64_t old_rooms = wl->old.n ? (wl->old.n + wl->room_size - 1) / wl->room_size : 0;
    spec->rooms = wl->rooms + old_rooms;
    spec->connections = (wl->live.n ? wl->live_conns : 0) + wl->old.n + wl->extra.n;
    spec->presences = wl->live.n + wl->old.n + wl->extra.n;
    spec->procs = wl->procs + 1 + BENCH_MAX_PROCS / 32; /* + parallel populators */
    spec->state_len = wl->with_state ? (uint32_t) strlen(g_state) : 0;
    spec->reaper = wl->op == OP_EVENTS ? wl->reaper : NULL;
    spec->huge_pages = wl->huge_pages;
}

/* Loads @p n keys: through @p h, or with @p nproc forked processes, each attached on
 * its own, loading one contiguous slice. @return 0 or -1 with @p err. */
static int populate_keys(const bench_backend_t *be, void *store, void *h, unsigned nproc,
                         const bench_key_t *keys, size_t n, uint64_t timeout_ms, const char *state,
                         char *err, size_t errlen)
{
    if (nproc <= 1 || n < WL_PAR_POPULATE) {
        int rc = be->populate(h, keys, n, timeout_ms, state);
        if (rc != 0)
            snprintf(err, errlen, "populate: %s", be->errstr(h, rc));
        return rc != 0 ? -1 : 0;
    }
    enum { ERRLEN = 256 };
    char *errs = mmap(NULL, (size_t) nproc * ERRLEN, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pids[BENCH_MAX_PROCS];
    if (errs == MAP_FAILED) {
        snprintf(err, errlen, "populate: mmap: %s", strerror(errno));
        return -1;
    }
    int ret = 0;
    unsigned forked = 0;
    fflush(NULL);
    for (; forked < nproc; forked++) {
        pid_t pid = fork();
        if (pid < 0) {
            snprintf(err, errlen, "populate: fork: %s", strerror(errno));
            ret = -1;
            break;
        }
        if (pid == 0) {
            cleanup_forget_all();
            char *e = errs + (size_t) forked * ERRLEN;
            void *ch = NULL;
            size_t from = n * forked / nproc, to = n * (forked + 1) / nproc;
            if (be->open(store, &ch, e, ERRLEN) != 0)
                _exit(1);
            int rc = be->populate(ch, keys + from, to - from, timeout_ms, state);
            if (rc != 0)
                snprintf(e, ERRLEN, "populate: %s", be->errstr(ch, rc));
            be->close(ch);
            _exit(rc != 0 ? 1 : 0);
        }
        pids[forked] = pid;
        cleanup_add_pid(pid);
    }
    for (unsigned i = 0; i < forked; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        cleanup_del_pid(pids[i]);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0) && ret == 0) {
            const char *e = errs + (size_t) i * ERRLEN;
            snprintf(err, errlen, "%s", e[0] ? e : "populate: a loading process failed");
            ret = -1;
        }
    }
    munmap(errs, (size_t) nproc * ERRLEN);
    return ret;
}

int workload_populate(const workload_t *wl, const bench_backend_t *be, void *store, void *h,
                      unsigned nproc, char *err, size_t errlen)
{
    if (nproc > BENCH_MAX_PROCS / 32)
        nproc = BENCH_MAX_PROCS / 32;
    if (populate_keys(be, store, h, nproc, wl->live.keys, wl->live.n, WL_LIVE_TIMEOUT,
                      wl->with_state ? g_state : NULL, err, errlen) != 0)
        return -1;
    if (wl->old.n > 0) {
        if (populate_keys(be, store, h, nproc, wl->old.keys, wl->old.n, WL_OLD_TIMEOUT, NULL, err,
                          errlen) != 0)
            return -1;
        /* let them expire: their timeout, plus the lead of shm's heartbeat
         * stamps (four coarse ticks: 16 ms at HZ=250, 40 ms at HZ=100) */
        sleep_ns((WL_OLD_TIMEOUT + 60) * 1000000u);
    }
    return 0;
}

/* ---------------------------------------------------------------- workers ---- */

/* A connection of a worker's own as op_touch reads it: its key and, in the same
 * cache line, the name the key points to (a server has the name of the socket it
 * heartbeats at hand; two arrays cost each touch two dependent misses from 1M up). */
struct wl_own {
    _Alignas(64) bench_key_t key;
    char conn[WL_NAME_CAP];
};

typedef struct wl_worker {
    const workload_t *wl;
    const bench_backend_t *be;
    void *h;
    unsigned id;
    run_ctl_t *ctl;
    run_worker_t *me;
    uint64_t rng;
    size_t nown;          /* connections of its own: id, id + n, ... */
    size_t next_own;      /* touch, touch_handle: the one after this call's (next_own) */
    size_t keys_ahead[2]; /* here_now, where_now, get_state: the next two keys (key_ahead) */
    uint64_t *tokens;     /* touch_handle: theirs */
    size_t ntokens;
    char *floor;        /* touch_floor: nown records of its own, */
    size_t floor_len;   /* mapped whole */
    struct wl_own *own; /* touch: their keys, each with its connection's name */
    char wrong[160];    /* the last unexpected answer */
} wl_worker_t;

typedef int (*wl_op_fn)(wl_worker_t *w, uint64_t seq);

enum wl_stop {
    STOP_NORMAL,  /* deadline, or the worker's quota in count mode */
    STOP_READERS, /* mixed writer: deadline, or every reader done in count mode */
    STOP_PRUNE,   /* prune reader: the prune call has ended */
};

static uint64_t rnd(wl_worker_t *w, uint64_t n)
{
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    /* into [0, n) by a multiply, not a division (tens of cycles, in every call) */
    return (uint64_t) (((unsigned __int128) (x * 0x2545f4914f6cdd1dull) * n) >> 64);
}

static void note_error(wl_worker_t *w, const char *what, int rc)
{
    if (w->me->err[0] != '\0')
        return;
    snprintf(w->me->err, sizeof w->me->err, "%s: %s", what,
             rc == WL_EWRONG ? w->wrong : w->be->errstr(w->h, rc));
}

/* Checks an answer: < 0 is an error; otherwise, unpipelined, it must equal @p want
 * (want < 0: anything goes). @return 0 or the error code. */
static int check(wl_worker_t *w, const char *what, int rc, int want)
{
    if (rc < 0) {
        note_error(w, what, rc);
        return rc;
    }
    if (want >= 0 && rc != want && w->be->batch <= 1) {
        snprintf(w->wrong, sizeof w->wrong, "answered %d, expected %d", rc, want);
        note_error(w, what, WL_EWRONG);
        return WL_EWRONG;
    }
    return 0;
}

/* What key_ahead asks for early besides the key: its names. */
enum { KA_ROOM = 1, KA_USER = 2 };

/* A random live key, index rnd(n) * stride, picked two calls ahead: the key's line
 * is asked for two calls before its use, its names (@p names) one call before, once
 * the key holding their addresses is in. As a server has the room or user a request
 * names at hand, what is timed is the backend's work, not the harness's key table
 * and names (from 1M presences up, hundreds of MB: two dependent misses a call). */
static const bench_key_t *key_ahead(wl_worker_t *w, size_t n, size_t stride, unsigned names)
{
    const bench_key_t *keys = w->wl->live.keys;
    size_t use = w->keys_ahead[0];
    w->keys_ahead[0] = w->keys_ahead[1];
    w->keys_ahead[1] = rnd(w, n) * stride;
    __builtin_prefetch(&keys[w->keys_ahead[1]]);
    const bench_key_t *next = &keys[w->keys_ahead[0]];
    if (names & KA_ROOM)
        __builtin_prefetch(next->room);
    if ((names & KA_USER) && next->user != NULL)
        __builtin_prefetch(next->user);
    return &keys[use];
}

static const char *live_room(wl_worker_t *w)
{
    return key_ahead(w, w->wl->rooms, w->wl->room_size, KA_ROOM)->room;
}

/* The index of the worker's own connection to touch now, picked one call ahead:
 * its key and name (touch), its handle (touch_handle) are asked for a call before
 * they are read, as a server holds the connection a heartbeat arrives on in its
 * cache: what is timed is the backend's work, not the harness's own arrays (from
 * 1M presences up those miss the caches as well). */
static size_t next_own(wl_worker_t *w)
{
    size_t i = w->next_own;
    w->next_own = rnd(w, w->nown);
    if (w->own != NULL)
        __builtin_prefetch(&w->own[w->next_own]);
    else if (w->tokens != NULL)
        __builtin_prefetch(&w->tokens[w->next_own]);
    return i;
}

/* A random connection of this worker's own, by name. Worker id of n holds
 * connections id, id + n, id + 2n, ... (a worker heartbeats the sockets it holds;
 * no connection is touched from two processes; the first live_conns keys name every
 * connection), whose keys and names prepare() copies into an array of the worker's
 * (struct wl_own, one line each), as it keeps their handles for touch_handle. (Read
 * through the shared key table, each touch also missed on a key the workers'
 * interleaving left half foreign and on a name 72 bytes from the next: two cache
 * lines no backend reads.) */
static int op_touch(wl_worker_t *w, uint64_t seq)
{
    (void) seq;
    if (w->nown == 0)
        return check(w, "touch", w->be->touch(w->h, &w->wl->live.keys[0]), 0);
    const bench_key_t *k = &w->own[next_own(w)].key;
    return check(w, "touch", w->be->touch(w->h, k), 0);
}

static int op_touch_handle(wl_worker_t *w, uint64_t seq)
{
    (void) seq;
    if (w->ntokens == 0)
        return 0; /* more workers than connections: nothing of its own */
    return check(w, "touch_handle", w->be->touch_token(w->h, w->tokens[next_own(w)]), 0);
}

/* touch_floor's records (--floor-bytes, 128 by default): the state word first,
 * then last_seen at byte 24 as in the library's connection record (layout.h), or
 * at byte 8 in a 16-byte one (the two hot words alone). */
#define WL_FLOOR_LIVE 1u

/* Record @i of the worker's own: its state word. */
static uint64_t *floor_rec(const wl_worker_t *w, size_t i)
{
    return (uint64_t *) (void *) (w->floor + i * w->wl->floor_bytes);
}

static uint64_t *floor_last_seen(const wl_worker_t *w, uint64_t *state)
{
    return state + (w->wl->floor_bytes >= 32 ? 3 : 1);
}

/* touch_conn's work on a random record of the worker's own, without the library:
 * the state word, the coarse clock, last_seen replaced when older. */
static int op_touch_floor(wl_worker_t *w, uint64_t seq)
{
    (void) seq;
    if (w->nown == 0)
        return 0;
    uint64_t *c = floor_rec(w, rnd(w, w->nown));
    if (__atomic_load_n(c, __ATOMIC_ACQUIRE) != WL_FLOOR_LIVE)
        return check(w, "touch_floor", 1, 0);
    uint64_t *last_seen = floor_last_seen(w, c);
    uint64_t ls = __atomic_load_n(last_seen, __ATOMIC_RELAXED), now = stamp_ns();
    if (now > ls)
        __atomic_compare_exchange_n(last_seen, &ls, now, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED);
    return 0;
}

/* The connection of the worker's own that join + leave pair @p seq uses (its extra keys
 * in turn: never one another worker joins). */
static const bench_key_t *pair_key(const wl_worker_t *w, uint64_t seq)
{
    return &w->wl->extra.keys[(size_t) w->id * WL_EXTRA_KEYS + seq % WL_EXTRA_KEYS];
}

static int op_join_leave(wl_worker_t *w, uint64_t seq)
{
    const bench_key_t *k = pair_key(w, seq);
    int rc = w->be->join(w->h, k, 0);
    if (rc == BENCH_FATAL)
        return rc;
    int a = check(w, "join", rc, 0);
    rc = w->be->leave(w->h, k);
    if (rc == BENCH_FATAL)
        return rc;
    int b = check(w, "leave", rc, 1);
    return a ? a : b;
}

/* op_join_leave's pair on the same keys, done by jl_floor.c without the library. */
static int op_join_leave_floor(wl_worker_t *w, uint64_t seq)
{
    const bench_key_t *k = pair_key(w, seq);
    if (jl_floor_pair(w->wl->jl_floor, w->id, k) == 0)
        return 0;
    snprintf(w->wrong, sizeof w->wrong, "the leave did not find what the join added");
    note_error(w, "join_leave_floor", WL_EWRONG);
    return WL_EWRONG;
}

static int op_here_now(wl_worker_t *w, uint64_t seq)
{
    (void) seq;
    return check(w, "here_now", w->be->here_now(w->h, live_room(w)), (int) w->wl->room_size);
}

static int op_here_now_any(wl_worker_t *w, uint64_t seq)
{
    (void) seq;
    return check(w, "here_now", w->be->here_now(w->h, live_room(w)), -1);
}

static int op_where_now(wl_worker_t *w, uint64_t seq)
{
    (void) seq;
    const bench_key_t *k = key_ahead(w, w->wl->live.n, 1, KA_USER);
    return check(w, "where_now", w->be->where_now(w->h, k->user), (int) w->wl->conn_rooms);
}

static int op_get_state(wl_worker_t *w, uint64_t seq)
{
    (void) seq;
    const bench_key_t *k = key_ahead(w, w->wl->live.n, 1, KA_ROOM | KA_USER);
    return check(w, "get_state", w->be->get_state(w->h, k), 1);
}

/* The mixed writer: join, touch, leave of its own connections, in turn. */
static int op_mixed_write(wl_worker_t *w, uint64_t seq)
{
    const bench_key_t *k = &w->wl->extra.keys[(seq / 3) % WL_EXTRA_KEYS];
    switch (seq % 3) {
    case 0:
        return check(w, "join", w->be->join(w->h, k, 0), 0);
    case 1:
        return check(w, "touch", w->be->touch(w->h, k), 0);
    default:
        return check(w, "leave", w->be->leave(w->h, k), 1);
    }
}

static int fatal(wl_worker_t *w, int rc)
{
    w->me->err[0] = '\0';
    note_error(w, "fatal", rc);
    return -1;
}

/* The timed loop: runs @p fn into row @p row, @p batch calls per timed sample; with
 * @p stride > 1, each sample follows untimed calls, stride - 1 on average (counted as
 * operations, not as samples), so that the clock's cost stays out of the throughput. */
static int run_loop(wl_worker_t *w, wl_op_fn fn, unsigned row, unsigned batch, unsigned stride,
                    uint64_t quota, enum wl_stop stop)
{
    run_ctl_t *c = w->ctl;
    run_row_t *r = &w->me->row[row];
    uint64_t seq = 0, measured = 0;
    int first = 1;
    uint64_t t0 = now_ns();
    for (;;) {
        uint64_t ts = t0; /* this round's start: before its untimed calls */
        if (atomic_load_explicit(&c->abort, memory_order_relaxed))
            return 0;
        if (stop == STOP_PRUNE) {
            uint64_t pe = atomic_load_explicit(&c->prune_end, memory_order_acquire);
            if (pe != 0 && t0 > pe)
                break;
        } else if (c->t_end != 0) {
            if (t0 >= c->t_end)
                break;
        } else if (stop == STOP_READERS) {
            if (atomic_load_explicit(&c->readers_done, memory_order_acquire) + 1 >= c->nworkers)
                break;
        } else if (measured >= quota) {
            break;
        }
        /* a random count (mean stride - 1), so that the timed calls do not fall in
         * step with anything periodic in the store (reclaim every 64 retirements) */
        uint64_t bad = 0, untimed = stride > 1 ? rnd(w, 2 * (uint64_t) stride - 1) : 0;
        if (c->t_end == 0 && stop == STOP_NORMAL && quota - measured <= untimed)
            untimed = quota - measured - 1; /* count mode: end on the quota */
        for (uint64_t i = 0; i < untimed; i++) {
            int rc = fn(w, seq++);
            if (rc == BENCH_FATAL)
                return fatal(w, rc);
            bad += rc < 0;
        }
        if (untimed > 0)
            t0 = now_ns();
        for (unsigned i = 0; i < batch; i++) {
            int rc = fn(w, seq++);
            if (rc == BENCH_FATAL)
                return fatal(w, rc);
            bad += rc < 0;
        }
        if (w->be->flush != NULL) {
            int rc = w->be->flush(w->h);
            if (rc == BENCH_FATAL)
                return fatal(w, rc);
            if (rc > 0)
                note_error(w, "pipelined operation", -1);
            bad += rc > 0 ? (uint64_t) rc : 0;
        }
        uint64_t t1 = now_ns();
        r->errors += bad;
        int measure = ts >= c->t_measure;
        if (stop == STOP_PRUNE) {
            uint64_t ps = atomic_load_explicit(&c->prune_start, memory_order_acquire);
            uint64_t pe = atomic_load_explicit(&c->prune_end, memory_order_acquire);
            measure = ps != 0 && t1 >= ps && (pe == 0 || t0 <= pe);
            if (first) {
                atomic_fetch_add(&c->started, 1);
                first = 0;
            }
            if (!measure && ps == 0 && t0 >= c->t_measure && row + 1 < WL_MAX_ROWS) {
                /* before the prune: the same readers idle, for the ratio */
                run_row_t *ir = &w->me->row[row + 1];
                hist_add_n(&ir->hist, t1 - t0, batch);
                if (ir->ops == 0)
                    ir->t_first = t0;
                ir->t_last = t1;
                ir->ops += batch;
            }
        }
        if (measure) {
            hist_add_n(&r->hist, t1 - t0, batch);
            if (r->ops == 0)
                r->t_first = ts;
            r->t_last = t1;
            r->ops += batch + untimed;
            measured += batch + untimed;
        }
        t0 = t1;
    }
    return 0;
}

/* Worker @p id's share of @p total when @p n workers split it. */
static uint64_t share(uint64_t total, unsigned n, unsigned id)
{
    return total / n + (id < total % n ? 1 : 0);
}

static int run_prune(wl_worker_t *w)
{
    run_ctl_t *c = w->ctl;
    uint64_t at = c->t_measure + (uint64_t) (w->wl->idle_s * 1e9); /* after the idle window */
    while (now_ns() < at ||
           atomic_load_explicit(&c->started, memory_order_acquire) + 1 < c->nworkers) {
        if (atomic_load_explicit(&c->abort, memory_order_relaxed))
            return 0;
        sleep_ns(100000);
    }
    struct timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    uint64_t t0 = now_ns();
    atomic_store_explicit(&c->prune_start, t0, memory_order_release);
    int rc = w->be->prune(w->h);
    uint64_t t1 = now_ns();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);

    atomic_store_explicit(&c->prune_end, t1, memory_order_release);
    run_row_t *r = &w->me->row[0];
    if (rc == BENCH_FATAL)
        return fatal(w, rc);
    if (check(w, "prune", rc, (int) w->wl->prune_size) != 0)
        r->errors++;
    hist_add_n(&r->hist, t1 - t0, 1);
    r->ops = 1;
    r->items = rc > 0 ? (uint64_t) rc : 0;
    r->cpu_ns = (uint64_t) ((c1.tv_sec - c0.tv_sec) * 1000000000ll + (c1.tv_nsec - c0.tv_nsec));
    r->t_first = t0;
    r->t_last = t1;
    return 0;
}

/* ------------------------------------------------------------------ events ---- */

/* Latency samples rotate through three kinds, k % 3: a raw eventfd ping from the
 * producer to the subscriber; the same through a relay process (poll, read, write:
 * the floor of any design where a daemon forwards the wake-up, as presence-reaper
 * does); a join the subscriber must be woken for. Sample k's connection (worker 0's
 * own) joins the first live room, which the latency subscription filters on, and
 * leaves once the sample is over. */
enum { EV_RAW, EV_RELAY, EV_PRESENCE, EV_KINDS };
enum {
    EV_ROW_WAKEUP,
    EV_ROW_RAW,
    EV_ROW_RELAY,
    EV_ROW_FLOOD_READ,
    EV_ROW_FLOOD_WRITE,
    EV_ROW_DRAIN,
    EV_ROW_FROM_EVENT
};
static const unsigned ev_row_of[EV_KINDS] = {EV_ROW_RAW, EV_ROW_RELAY, EV_ROW_WAKEUP};

static int ev_enough(const workload_t *wl, const uint64_t *n)
{
    return n[EV_RAW] >= wl->event_samples && n[EV_RELAY] >= wl->event_samples &&
           n[EV_PRESENCE] >= wl->event_samples;
}

/* The relay: a child of the subscriber that forwards efd_relay_in to efd_relay_out
 * (dies with its parent). @return its pid, or -1. */
static pid_t ev_relay_start(const workload_t *wl)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct pollfd pfd = {.fd = wl->efd_relay_in, .events = POLLIN};
    for (;;) {
        uint64_t v;
        if (poll(&pfd, 1, -1) > 0 && read(wl->efd_relay_in, &v, sizeof v) == (ssize_t) sizeof v &&
            write(wl->efd_relay_out, &v, sizeof v) < 0)
            _exit(1);
    }
}
static bench_key_t ev_key(const workload_t *wl, uint32_t k)
{
    const bench_key_t *x = &wl->extra.keys[(k / 2) % WL_EXTRA_KEYS];
    bench_key_t key = {.room = wl->live.keys[0].room, .conn = x->conn, .user = x->user};
    return key;
}

/* 1 if @p pid is asleep (state S in /proc/PID/stat), or when that cannot be read. */
static int proc_sleeping(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 1;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p == NULL || p[1] != ' ' || p[2] == 'S';
}

/* Sleeps in poll() until @p fd is readable (@p timeout_ms < 0: however long it takes).
 * @return 1 readable, 0 timed out, -1 aborted or failed. */
static int ev_wait(wl_worker_t *w, int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    for (;;) {
        int slice = timeout_ms < 0 || timeout_ms > WL_EV_POLL_MS ? WL_EV_POLL_MS : timeout_ms;
        int rc = poll(&pfd, 1, slice);
        if (rc > 0)
            return 1;
        if (rc < 0 && errno != EINTR) {
            snprintf(w->me->err, sizeof w->me->err, "events: poll: %s", strerror(errno));
            return -1;
        }
        if (atomic_load_explicit(&w->ctl->abort, memory_order_relaxed))
            return -1;
        if (timeout_ms >= 0 && rc == 0) {
            timeout_ms -= slice;
            if (timeout_ms <= 0)
                return 0;
        }
    }
}

/* Reads events until none is waiting (which re-arms the wake-up), or until the event
 * @p type of @p conn (conn NULL: none is looked for); *t_found is the time right after
 * the call that returned it, *since_event how long after the event's own stamp (its
 * CLOCK_REALTIME time_ns) that was. Lapping is not expected here and only counted.
 * @return 1 found, 0 drained, -1 error. */
static int ev_read(wl_worker_t *w, void *sub, int type, const char *conn, uint64_t *t_found,
                   uint64_t *since_event)
{
    for (;;) {
        bench_event_t ev;
        int rc = w->be->ev_next(sub, &ev);
        uint64_t t_real = realtime_ns(), t = now_ns();
        if (rc == 1) {
            if (conn != NULL && ev.type == type && strcmp(ev.conn, conn) == 0) {
                if (t_found != NULL)
                    *t_found = t;
                if (since_event != NULL)
                    *since_event = t_real > ev.time_ns ? t_real - ev.time_ns : 0;
                return 1;
            }
        } else if (rc == BENCH_EV_LAPPED) {
            w->me->row[EV_ROW_FLOOD_READ].lapped++;
        } else if (rc == 0) {
            return 0;
        } else {
            note_error(w, "events: next", rc);
            return -1;
        }
    }
}

static void ev_record(run_row_t *r, uint64_t t0, uint64_t t1)
{
    hist_add_n(&r->hist, t1 - t0, 1);
    if (r->ops == 0)
        r->t_first = t0;
    r->t_last = t1;
    r->ops++;
}

/* Worker 0: sends the latency samples, one at a time, each once the subscriber has
 * been asleep for the pace; then floods join + leave pairs. */
static int events_producer(wl_worker_t *w)
{
    run_ctl_t *c = w->ctl;
    const workload_t *wl = w->wl;
    uint64_t pace = (uint64_t) wl->event_pace_us * 1000u, n[EV_KINDS] = {0, 0, 0};
    for (uint32_t k = 0; !ev_enough(wl, n); k++) {
        unsigned kind = k % EV_KINDS;
        int presence = kind == EV_PRESENCE;
        while (atomic_load_explicit(&c->ev_armed, memory_order_acquire) != k + 1) {
            if (atomic_load_explicit(&c->abort, memory_order_relaxed))
                return 0;
            sleep_ns(20000);
        }
        sleep_ns(pace);
        pid_t sp = atomic_load_explicit(&c->ev_sub_pid, memory_order_relaxed);
        pid_t rp = atomic_load_explicit(&c->ev_relay_pid, memory_order_relaxed);
        unsigned tries = 0;
        while ((!proc_sleeping(sp) || (kind == EV_RELAY && !proc_sleeping(rp))) && tries < 1000) {
            sleep_ns(20000);
            tries++;
        }
        bench_key_t key = ev_key(wl, k);
        uint64_t t0 = now_ns();
        atomic_store_explicit(&c->ev_t0, t0, memory_order_release);
        if (presence) {
            if (check(w, "events: join", w->be->join(w->h, &key, 0), 0) != 0)
                return -1;
        } else {
            uint64_t one = 1;
            int efd = kind == EV_RAW ? wl->efd_ping : wl->efd_relay_in;
            if (write(efd, &one, sizeof one) != (ssize_t) sizeof one) {
                snprintf(w->me->err, sizeof w->me->err, "events: write: %s", strerror(errno));
                return -1;
            }
        }
        int rc = ev_wait(w, wl->efd_pong, -1);
        if (rc < 0)
            return atomic_load(&c->abort) ? 0 : -1;
        uint64_t v;
        if (read(wl->efd_pong, &v, sizeof v) < 0) {
            /* EAGAIN cannot happen: it was readable and only we read it */
        }
        if (presence && check(w, "events: leave", w->be->leave(w->h, &key), 1) != 0)
            return -1;
        if (t0 >= c->t_measure) {
            n[kind]++;
            w->me->row[ev_row_of[kind]].retries += tries > 0;
        }
    }

    /* the flood */
    while (atomic_load_explicit(&c->ev_phase, memory_order_acquire) != 1) {
        if (atomic_load_explicit(&c->abort, memory_order_relaxed))
            return 0;
        sleep_ns(20000);
    }
    run_row_t *r = &w->me->row[EV_ROW_FLOOD_WRITE];
    uint64_t end = c->t_end ? now_ns() + (c->t_end - c->t_measure) : 0;
    for (uint64_t seq = 0;; seq++) {
        uint64_t t0 = now_ns();
        if (end ? t0 >= end : r->ops >= c->count)
            break;
        if (atomic_load_explicit(&c->abort, memory_order_relaxed))
            return 0;
        int rc = op_join_leave(w, seq);
        if (rc == BENCH_FATAL)
            return fatal(w, rc);
        r->errors += rc < 0;
        ev_record(r, t0, now_ns());
    }
    r->items = 2 * r->ops; /* a join and a leave event each */
    atomic_store_explicit(&c->ev_phase, 2, memory_order_release);

    /* the bursts for events_drain */
    for (uint32_t b = 0; b < WL_EV_BURSTS; b++) {
        while (atomic_load_explicit(&c->ev_burst_ready, memory_order_acquire) != b + 1) {
            if (atomic_load_explicit(&c->abort, memory_order_relaxed))
                return 0;
            sleep_ns(20000);
        }
        for (uint32_t i = 0; i < WL_EV_BURST; i++) {
            int rc = op_join_leave(w, r->ops + (uint64_t) b * WL_EV_BURST + i);
            if (rc == BENCH_FATAL)
                return fatal(w, rc);
            if (rc < 0)
                return -1;
        }
        atomic_store_explicit(&c->ev_burst_done, b + 1, memory_order_release);
    }
    return 0;
}

static void ev_relay_stop(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    *pid = 0;
}

/* Worker 1: sleeps in poll() for each latency sample, then drains the flood. */
static int events_subscriber(wl_worker_t *w)
{
    run_ctl_t *c = w->ctl;
    const workload_t *wl = w->wl;
    void *sub = NULL;
    pid_t relay = 0;
    atomic_store_explicit(&c->ev_sub_pid, (int32_t) getpid(), memory_order_relaxed);
    int rc = w->be->ev_subscribe(w->h, wl->live.keys[0].room, &sub);
    if (rc < 0) {
        note_error(w, "events: subscribe", rc);
        return -1;
    }
    int fd = w->be->ev_fd(sub);
    relay = ev_relay_start(wl);
    if (relay < 0) {
        snprintf(w->me->err, sizeof w->me->err, "events: fork: %s", strerror(errno));
        goto fail;
    }
    atomic_store_explicit(&c->ev_relay_pid, (int32_t) relay, memory_order_relaxed);
    uint64_t n[EV_KINDS] = {0, 0, 0};
    for (uint32_t k = 0; !ev_enough(wl, n); k++) {
        unsigned kind = k % EV_KINDS;
        int presence = kind == EV_PRESENCE;
        bench_key_t key = ev_key(wl, k);
        uint64_t t1 = 0, since_event = 0, v;
        if (ev_read(w, sub, 0, NULL, NULL, NULL) < 0)
            goto fail;
        atomic_store_explicit(&c->ev_armed, k + 1, memory_order_release);
        if (!presence) {
            int efd = kind == EV_RAW ? wl->efd_ping : wl->efd_relay_out;
            if (ev_wait(w, efd, -1) < 0)
                goto fail;
            if (read(efd, &v, sizeof v) != (ssize_t) sizeof v) {
                snprintf(w->me->err, sizeof w->me->err, "events: read: %s", strerror(errno));
                goto fail;
            }
            t1 = now_ns();
        } else {
            for (;;) {
                if (ev_wait(w, fd, -1) < 0)
                    goto fail;
                rc = ev_read(w, sub, BENCH_EV_JOIN, key.conn, &t1, &since_event);
                if (rc < 0)
                    goto fail;
                if (rc == 1)
                    break;
            }
        }
        uint64_t t0 = atomic_load_explicit(&c->ev_t0, memory_order_acquire);
        uint64_t one = 1;
        if (write(wl->efd_pong, &one, sizeof one) != (ssize_t) sizeof one) {
            snprintf(w->me->err, sizeof w->me->err, "events: write: %s", strerror(errno));
            goto fail;
        }
        while (presence) { /* the sample ends with its leave */
            rc = ev_read(w, sub, BENCH_EV_LEAVE, key.conn, NULL, NULL);
            if (rc < 0)
                goto fail;
            if (rc == 1)
                break;
            if (ev_wait(w, fd, -1) < 0)
                goto fail;
        }
        if (t0 >= c->t_measure) {
            ev_record(&w->me->row[ev_row_of[kind]], t0, t1);
            if (presence && since_event > 0)
                ev_record(&w->me->row[EV_ROW_FROM_EVENT], t1 - since_event, t1);
            n[kind]++;
        }
    }
    ev_relay_stop(&relay);
    w->be->ev_close(sub);

    /* the flood: every room, as fast as one subscriber drains */
    rc = w->be->ev_subscribe(w->h, NULL, &sub);
    if (rc < 0) {
        note_error(w, "events: subscribe", rc);
        return -1;
    }
    fd = w->be->ev_fd(sub);
    run_row_t *r = &w->me->row[EV_ROW_FLOOD_READ];
    atomic_store_explicit(&c->ev_phase, 1, memory_order_release);
    for (;;) {
        int done = atomic_load_explicit(&c->ev_phase, memory_order_acquire) == 2;
        for (;;) {
            bench_event_t ev;
            uint64_t t0 = now_ns();
            rc = w->be->ev_next(sub, &ev);
            uint64_t t1 = now_ns();
            if (rc == 1)
                ev_record(r, t0, t1);
            else if (rc == BENCH_EV_LAPPED)
                r->lapped++;
            else if (rc == 0)
                break;
            else {
                note_error(w, "events: next", rc);
                goto fail;
            }
        }
        if (done)
            break;
        if (ev_wait(w, fd, WL_EV_POLL_MS) < 0)
            goto fail;
    }
    r->items = r->ops;

    /* events_drain: each burst is written while we wait, then drained against the clock.
     * The row's t_first/t_last are set so that its ops/s is events over draining time. */
    run_row_t *d = &w->me->row[EV_ROW_DRAIN];
    uint64_t busy = 0;
    for (uint32_t b = 0; b < WL_EV_BURSTS; b++) {
        if (ev_read(w, sub, 0, NULL, NULL, NULL) < 0)
            goto fail;
        atomic_store_explicit(&c->ev_burst_ready, b + 1, memory_order_release);
        while (atomic_load_explicit(&c->ev_burst_done, memory_order_acquire) != b + 1) {
            if (atomic_load_explicit(&c->abort, memory_order_relaxed))
                goto fail;
            sleep_ns(20000);
        }
        uint64_t got = 0, t0 = now_ns();
        for (;;) {
            bench_event_t ev;
            rc = w->be->ev_next(sub, &ev);
            if (rc == 1)
                got++;
            else if (rc == BENCH_EV_LAPPED)
                d->lapped++;
            else if (rc == 0)
                break;
            else {
                note_error(w, "events: next", rc);
                goto fail;
            }
        }
        uint64_t t1 = now_ns();
        if (got > 0) {
            hist_add_n(&d->hist, (t1 - t0) / got, got);
            d->ops += got;
            busy += t1 - t0;
        }
    }
    d->items = d->ops;
    d->t_first = 1;
    d->t_last = 1 + busy;
    w->be->ev_close(sub);
    return 0;
fail:
    ev_relay_stop(&relay);
    w->be->ev_close(sub);
    return atomic_load(&c->abort) && w->me->err[0] == '\0' ? 0 : -1;
}

static int run_events(wl_worker_t *w)
{
    if (w->ctl->nworkers < 2) {
        snprintf(w->me->err, sizeof w->me->err, "events: needs two processes (-P 2)");
        return -1;
    }
    return w->id == 0 ? events_producer(w) : w->id == 1 ? events_subscriber(w) : 0;
}

static int prepare(wl_worker_t *w)
{
    size_t n = w->ctl->nworkers;
    w->nown = w->wl->live_conns > w->id ? (w->wl->live_conns - w->id + n - 1) / n : 0;
    if (w->wl->op == OP_TOUCH && w->nown > 0) {
        w->own = aligned_alloc(_Alignof(struct wl_own), w->nown * sizeof *w->own);
        if (w->own == NULL) {
            snprintf(w->me->err, sizeof w->me->err, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < w->nown; i++) {
            w->own[i].key = w->wl->live.keys[i * n + w->id];
            w->own[i].key.conn = memcpy(w->own[i].conn, w->own[i].key.conn, WL_NAME_CAP);
        }
    }
    if (w->wl->op == OP_TOUCH_FLOOR && w->nown > 0) {
        /* in 2 MiB pages with --huge-pages (transparent huge pages of a private
         * mapping, aligned so that whole pages can be used) */
        size_t bytes =
            (w->nown * w->wl->floor_bytes + BENCH_HUGE_PAGE - 1) & ~(BENCH_HUGE_PAGE - 1);
        void *m = bench_map_aligned(-1, bytes);
        if (m == MAP_FAILED) {
            snprintf(w->me->err, sizeof w->me->err, "touch_floor: mmap: %s", strerror(errno));
            return -1;
        }
        w->floor = m;
        w->floor_len = bytes;
        if (w->wl->huge_pages)
            (void) madvise(w->floor, bytes, MADV_HUGEPAGE);
        for (size_t i = 0; i < w->nown; i++)
            *floor_rec(w, i) = WL_FLOOR_LIVE;
        return 0;
    }
    if (w->wl->op != OP_TOUCH_HANDLE)
        return 0;
    /* this worker's own connections, as op_touch picks them */
    w->ntokens = w->nown;
    w->tokens = calloc(w->ntokens, sizeof *w->tokens);
    if (w->tokens == NULL) {
        snprintf(w->me->err, sizeof w->me->err, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < w->ntokens; i++) {
        int rc = w->be->touch_prepare(w->h, &w->wl->live.keys[i * n + w->id], &w->tokens[i]);
        if (rc < 0) {
            note_error(w, "touch_handle: join for a handle", rc);
            return -1;
        }
    }
    return 0;
}

static void worker_free(wl_worker_t *w)
{
    free(w->tokens);
    free(w->own);
    if (w->floor != NULL)
        munmap(w->floor, w->floor_len);
}

int workload_worker(const workload_t *wl, const bench_backend_t *be, void *h, unsigned id,
                    uint64_t seed, run_ctl_t *ctl)
{
    wl_worker_t w = {.wl = wl, .be = be, .h = h, .id = id, .ctl = ctl, .me = &ctl->w[id]};
    uint64_t s = seed + id * 0x100000001b3ull;
    w.rng = splitmix64(&s) | 1;
    int rc = prepare(&w);
    atomic_fetch_add_explicit(&ctl->ready, 1, memory_order_release);
    while (rc == 0 && !atomic_load_explicit(&ctl->go, memory_order_acquire))
        sleep_ns(50000);
    if (rc != 0 || atomic_load_explicit(&ctl->abort, memory_order_relaxed)) {
        worker_free(&w);
        return rc;
    }

    unsigned n = ctl->nworkers, batch = be->batch ? be->batch : 1;
    unsigned hn_batch = batch, stride = batch == 1 ? WL_TIMED_STRIDE : 1;
    if (hn_batch > 1) {
        uint32_t fit = WL_PIPE_ELEMENTS / wl->room_size;
        hn_batch = fit == 0 ? 1 : fit < batch ? fit : batch;
    }
    switch (wl->op) {
    case OP_TOUCH:
        rc = run_loop(&w, op_touch, 0, batch, stride, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_TOUCH_HANDLE:
        rc = run_loop(&w, op_touch_handle, 0, batch, stride, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_TOUCH_FLOOR:
        rc = run_loop(&w, op_touch_floor, 0, batch, stride, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_JOIN_LEAVE:
        rc = run_loop(&w, op_join_leave, 0, batch, stride, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_JOIN_LEAVE_FLOOR:
        rc = run_loop(&w, op_join_leave_floor, 0, batch, stride, share(ctl->count, n, id),
                      STOP_NORMAL);
        break;
    case OP_HERE_NOW:
        rc = run_loop(&w, op_here_now, 0, hn_batch, 1, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_WHERE_NOW:
        rc = run_loop(&w, op_where_now, 0, batch, stride, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_GET_STATE:
        rc = run_loop(&w, op_get_state, 0, batch, stride, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_PRUNE:
        rc = id == 0 ? run_prune(&w) : run_loop(&w, op_here_now, 1, hn_batch, 1, 0, STOP_PRUNE);
        break;
    case OP_MIXED:
        if (id == 0) {
            rc = run_loop(&w, op_mixed_write, 1, batch, 1, 0, STOP_READERS);
        } else {
            rc = run_loop(&w, op_here_now_any, 0, hn_batch, 1, share(ctl->count, n - 1, id - 1),
                          STOP_NORMAL);
            atomic_fetch_add_explicit(&ctl->readers_done, 1, memory_order_release);
        }
        break;
    case OP_EVENTS:
        rc = run_events(&w);
        break;
    default:
        snprintf(w.me->err, sizeof w.me->err, "%s: unknown workload", wl->name);
        rc = -1;
        break;
    }
    worker_free(&w);
    return rc;
}
