/*
 * workload.c -- presence-bench: the workloads (see workload.h for the list): their
 * populations, and the timed loops their worker processes run.
 *
 * Timing: every operation (or every pipelined batch) is timed on its own with two
 * CLOCK_MONOTONIC readings, so each latency sample includes one clock reading's cost
 * (printed with every run). A batch of n pipelined operations records its round trip
 * n times. Samples started before the warm-up ends are not recorded.
 */
#include "workload.h"

#include "clock.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WL_NAME_CAP      24
#define WL_LIVE_TIMEOUT  3600000u   /* ms: nothing of the population expires during a run */
#define WL_OLD_TIMEOUT   1u         /* ms: the prune workload's expired presences */
#define WL_HERE_NOW_CAP  200000u    /* most presences a here_now population holds */
#define WL_PIPE_ELEMENTS 100000u    /* pipelined here_now: at most this many members per batch */
#define WL_EWRONG        (-1000000) /* an operation answered something unexpected */

static const char *const g_state = "{\"mood\":\"ok\",\"device\":\"web\",\"typing\":false}";

static const char *const g_op_names[OP__COUNT] = {
    [OP_TOUCH] = "touch",           [OP_TOUCH_HANDLE] = "touch_handle",
    [OP_JOIN_LEAVE] = "join_leave", [OP_HERE_NOW] = "here_now",
    [OP_WHERE_NOW] = "where_now",   [OP_GET_STATE] = "get_state",
    [OP_PRUNE] = "prune",           [OP_MIXED] = "mixed",
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
    snprintf(wl->name, sizeof wl->name, "%s", bench_op_name(op));
    snprintf(wl->row[0], sizeof wl->row[0], "%s", bench_op_name(op));
    wl->nrows = 1;
    size_t nold = 0, nextra = 0;
    switch (op) {
    case OP_HERE_NOW: {
        wl->room_size = size;
        uint32_t fit = WL_HERE_NOW_CAP / size;
        wl->rooms = cfg->rooms < fit ? cfg->rooms : fit ? fit : 1;
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
            wl->nrows = 2;
        }
        break;
    case OP_MIXED:
        snprintf(wl->row[0], sizeof wl->row[0], "mixed_read");
        snprintf(wl->row[1], sizeof wl->row[1], "mixed_write");
        wl->nrows = 2;
        nextra = WL_EXTRA_KEYS;
        break;
    case OP_JOIN_LEAVE:
        nextra = (size_t) cfg->procs * WL_EXTRA_KEYS;
        break;
    default:
        break;
    }
    size_t nlive = (size_t) wl->rooms * wl->room_size;
    uint32_t old_rooms = nold ? (uint32_t) ((nold + wl->room_size - 1) / wl->room_size) : 0;
    size_t nnames = wl->rooms + old_rooms + 2 * (nlive + nold + nextra);
    wl->names = malloc(nnames * WL_NAME_CAP);
    wl->live.keys = calloc(nlive, sizeof(bench_key_t));
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
        k->conn = put_name(&cur, "conn-%07u", (unsigned) i);
        k->user = put_name(&cur, "user-%07u", (unsigned) i);
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
    return 0;
}

void workload_free(workload_t *wl)
{
    free(wl->names);
    free(wl->live.keys);
    free(wl->old.keys);
    free(wl->extra.keys);
    memset(wl, 0, sizeof *wl);
}

int workload_supported(const workload_t *wl, const bench_backend_t *be)
{
    switch (wl->op) {
    case OP_TOUCH:
        return be->touch != NULL;
    case OP_TOUCH_HANDLE:
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
    default:
        return 0;
    }
}

void workload_spec(const workload_t *wl, bench_store_spec_t *spec)
{
    uint64_t old_rooms = wl->old.n ? (wl->old.n + wl->room_size - 1) / wl->room_size : 0;
    spec->rooms = wl->rooms + old_rooms;
    spec->connections = wl->live.n + wl->old.n + wl->extra.n;
    spec->presences = spec->connections;
    spec->procs = wl->procs + 1;
    spec->state_len = (uint32_t) strlen(g_state);
}

int workload_populate(const workload_t *wl, const bench_backend_t *be, void *h, char *err,
                      size_t errlen)
{
    int rc = be->populate(h, wl->live.keys, wl->live.n, WL_LIVE_TIMEOUT,
                          wl->with_state ? g_state : NULL);
    if (rc == 0 && wl->old.n > 0) {
        rc = be->populate(h, wl->old.keys, wl->old.n, WL_OLD_TIMEOUT, NULL);
        sleep_ns(2 * WL_OLD_TIMEOUT * 1000000u); /* let them expire */
    }
    if (rc != 0) {
        snprintf(err, errlen, "populate: %s", be->errstr(h, rc));
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- workers ---- */

typedef struct wl_worker {
    const workload_t *wl;
    const bench_backend_t *be;
    void *h;
    unsigned id;
    run_ctl_t *ctl;
    run_worker_t *me;
    uint64_t rng;
    uint64_t *tokens; /* touch_handle */
    size_t ntokens;
    char wrong[160]; /* the last unexpected answer */
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
    return (x * 0x2545f4914f6cdd1dull) % n;
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

static const char *live_room(wl_worker_t *w)
{
    return w->wl->live.keys[rnd(w, w->wl->rooms) * w->wl->room_size].room;
}

static int op_touch(wl_worker_t *w, uint64_t seq)
{
    (void) seq;
    const bench_key_t *k = &w->wl->live.keys[rnd(w, w->wl->live.n)];
    return check(w, "touch", w->be->touch(w->h, k), 0);
}

static int op_touch_handle(wl_worker_t *w, uint64_t seq)
{
    (void) seq;
    return check(w, "touch_handle", w->be->touch_token(w->h, w->tokens[rnd(w, w->ntokens)]), 0);
}

static int op_join_leave(wl_worker_t *w, uint64_t seq)
{
    const bench_key_t *k = &w->wl->extra.keys[(size_t) w->id * WL_EXTRA_KEYS + seq % WL_EXTRA_KEYS];
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
    const bench_key_t *k = &w->wl->live.keys[rnd(w, w->wl->live.n)];
    return check(w, "where_now", w->be->where_now(w->h, k->user), 1);
}

static int op_get_state(wl_worker_t *w, uint64_t seq)
{
    (void) seq;
    const bench_key_t *k = &w->wl->live.keys[rnd(w, w->wl->live.n)];
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

/* The timed loop: runs @p fn, @p batch calls per timed sample, into row @p row. */
static int run_loop(wl_worker_t *w, wl_op_fn fn, unsigned row, unsigned batch, uint64_t quota,
                    enum wl_stop stop)
{
    run_ctl_t *c = w->ctl;
    run_row_t *r = &w->me->row[row];
    uint64_t seq = 0, measured = 0;
    int first = 1;
    for (;;) {
        uint64_t t0 = now_ns();
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
        uint64_t bad = 0;
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
        int measure = t0 >= c->t_measure;
        if (stop == STOP_PRUNE) {
            uint64_t ps = atomic_load_explicit(&c->prune_start, memory_order_acquire);
            uint64_t pe = atomic_load_explicit(&c->prune_end, memory_order_acquire);
            measure = ps != 0 && t1 >= ps && (pe == 0 || t0 <= pe);
            if (first) {
                atomic_fetch_add(&c->started, 1);
                first = 0;
            }
        }
        if (measure) {
            hist_add_n(&r->hist, t1 - t0, batch);
            if (r->ops == 0)
                r->t_first = t0;
            r->t_last = t1;
            r->ops += batch;
            measured += batch;
        }
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
    while (now_ns() < c->t_measure ||
           atomic_load_explicit(&c->started, memory_order_acquire) + 1 < c->nworkers) {
        if (atomic_load_explicit(&c->abort, memory_order_relaxed))
            return 0;
        sleep_ns(100000);
    }
    uint64_t t0 = now_ns();
    atomic_store_explicit(&c->prune_start, t0, memory_order_release);
    int rc = w->be->prune(w->h);
    uint64_t t1 = now_ns();
    atomic_store_explicit(&c->prune_end, t1, memory_order_release);
    run_row_t *r = &w->me->row[0];
    if (rc == BENCH_FATAL)
        return fatal(w, rc);
    if (check(w, "prune", rc, (int) w->wl->prune_size) != 0)
        r->errors++;
    hist_add_n(&r->hist, t1 - t0, 1);
    r->ops = 1;
    r->items = rc > 0 ? (uint64_t) rc : 0;
    r->t_first = t0;
    r->t_last = t1;
    return 0;
}

/*
 * The events workload: the hook for when the library has its event ring.
 * Plan: worker 0 joins and leaves (the producer, as mixed_write does); the others
 * subscribe (from "now"), poll the eventfd and read; rows "events_read" (latency of one
 * read call) and "events_lag" (producer timestamp to the moment a subscriber holds the
 * event). It needs two vtable entries, subscribe() and read_events(), that redis would
 * implement with PUBLISH/SUBSCRIBE (or a stream) and rwlock not at all. Until then the
 * command line refuses -t events, so this is never reached.
 */
static int run_events(wl_worker_t *w)
{
    snprintf(w->me->err, sizeof w->me->err, "events: not implemented yet (needs the event ring)");
    return -1;
}

static int prepare(wl_worker_t *w)
{
    if (w->wl->op != OP_TOUCH_HANDLE)
        return 0;
    w->ntokens = w->wl->live.n;
    w->tokens = calloc(w->ntokens, sizeof *w->tokens);
    if (w->tokens == NULL) {
        snprintf(w->me->err, sizeof w->me->err, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < w->ntokens; i++) {
        int rc = w->be->touch_prepare(w->h, &w->wl->live.keys[i], &w->tokens[i]);
        if (rc < 0) {
            note_error(w, "touch_handle: join for a handle", rc);
            return -1;
        }
    }
    return 0;
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
        free(w.tokens);
        return rc;
    }

    unsigned n = ctl->nworkers, batch = be->batch ? be->batch : 1;
    unsigned hn_batch = batch;
    if (hn_batch > 1) {
        uint32_t fit = WL_PIPE_ELEMENTS / wl->room_size;
        hn_batch = fit == 0 ? 1 : fit < batch ? fit : batch;
    }
    switch (wl->op) {
    case OP_TOUCH:
        rc = run_loop(&w, op_touch, 0, batch, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_TOUCH_HANDLE:
        rc = run_loop(&w, op_touch_handle, 0, batch, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_JOIN_LEAVE:
        rc = run_loop(&w, op_join_leave, 0, batch, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_HERE_NOW:
        rc = run_loop(&w, op_here_now, 0, hn_batch, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_WHERE_NOW:
        rc = run_loop(&w, op_where_now, 0, batch, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_GET_STATE:
        rc = run_loop(&w, op_get_state, 0, batch, share(ctl->count, n, id), STOP_NORMAL);
        break;
    case OP_PRUNE:
        rc = id == 0 ? run_prune(&w) : run_loop(&w, op_here_now, 1, hn_batch, 0, STOP_PRUNE);
        break;
    case OP_MIXED:
        if (id == 0) {
            rc = run_loop(&w, op_mixed_write, 1, batch, 0, STOP_READERS);
        } else {
            rc = run_loop(&w, op_here_now_any, 0, hn_batch, share(ctl->count, n - 1, id - 1),
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
    free(w.tokens);
    return rc;
}
