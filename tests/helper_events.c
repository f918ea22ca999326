/*
 * helper_events.c -- the event-side processes that test_reaper execs. Never uses
 * cmocka: it checks plainly, prints what went wrong on stderr and exits
 * non-zero; the parent test asserts on exit statuses. Every mode is bounded in
 * time (a deadline, or it is killed by the parent).
 *
 *   produce SEG SEED N PAUSE_US      a known sequence of N joins/leaves (see seq_next:
 *                                    rooms "s<SEED>-r<k>", conns "s<SEED>-c<k>"), each
 *                                    result checked; prints "done N"
 *   expect  SEG SEED N TIMEOUT_MS    a libuv subscriber (uv_poll on presence_sub_fd, then
 *                                    presence_sub_next until 0; no timer fallback):
 *                                    prints "ready", then checks that the join/leave
 *                                    events it receives are exactly the sequence of
 *                                    `produce SEED N`, in order, with the right occupancy,
 *                                    and that seqs increase; exit 0 once all N are seen
 *   watch   SEG POLL_MS TIMEOUT_S    a libuv subscriber over the whole segment (with a
 *                                    POLL_MS timer as well, 0 = none: needed across a
 *                                    reaper restart, see test_reaper): seqs strictly increase,
 *                                    every event is well formed, and each event's
 *                                    occupancy equals a model rebuilt from the events;
 *                                    prints "ready"; on a line on stdin it drains up to
 *                                    the ring's tail and prints "events N lapped N" and
 *                                    "occ ROOM N" for every room of its model
 *   load    SEG ID NOPS PAUSE_US     NOPS random joins/leaves on its own connections
 *                                    ("L<ID>-c<k>", rooms "L-r<k>"), checked against its
 *                                    own model; prints "ops N ns T rate R"
 *   stall   SEG                      subscribes, arms its wake-up (one presence_sub_next),
 *                                    prints "ready", then reads nothing until a line
 *                                    arrives on stdin; then drains: exit 0 if told
 *                                    PRESENCE_ELAPPED ("lapped N events N"), 1 if not
 *   bound   SEG NB NU                joins "b<i>" (PRESENCE_BOUND) and "u<i>" (unbound) in
 *                                    room "w", prints "ready", touches them every 100 ms
 *                                    until killed
 *   heartbeat SEG NU SECONDS         re-joins "u<i>" in room "w" (must be REFRESHED),
 *                                    prints "ready", touches them every 100 ms for SECONDS
 *   latency SEG N                    figures, not a check: producer-to-subscriber wake-up
 *                                    latency (a forked subscriber blocked in poll(), N
 *                                    samples; the producer writes its eventfd directly once
 *                                    it holds the reaper's set), then a raw eventfd
 *                                    ping-pong between two processes (N samples); prints
 *                                    "# figure: ..." lines
 *   wake    SEG TIMEOUT_MS           a subscriber (all rooms) asleep in poll() on
 *                                    presence_sub_fd and stdin, no timer of its own: prints
 *                                    "ready", then "join CONN US" for every join event
 *                                    (US: microseconds from the event's commit to its
 *                                    reading); exit 0 at end of stdin or a line, 3 at the
 *                                    deadline
 *   stress-sub SEG TIMEOUT_S         a subscriber (all rooms) asleep in poll(): counts the
 *                                    join/leave/timeout events of rooms "x-*", seqs strictly
 *                                    increasing, never lapped; prints "ready"; on a line on
 *                                    stdin drains and prints "events N wakeups W"
 *   stress-prod SEG ID               for each line "go" on stdin, a burst of 1..4 joins or
 *                                    leaves of its own connections ("x<ID>-c<k>", rooms
 *                                    "x-r<k>"), a few random microseconds apart (busy-wait),
 *                                    each result checked; prints "done N" (N: its events so
 *                                    far); on "end" prints "total N" and exits 0
 *   stress-prune SEG ID              the same protocol; each round joins 1..70 new
 *                                    connections with a 1 ms timeout, waits until they
 *                                    expire and prunes (the bulk path: armed subscribers
 *                                    looked for once per 32 events and at the end); N
 *                                    counts its joins and the timeouts its prunes made
 *
 * Exit codes: 0 ok, 1 a check failed, 2 usage or setup error, 3 deadline passed.
 */
#include "internal.h"
#include "test_util.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

static void sleep_us(unsigned us)
{
    struct timespec ts = {(time_t) (us / 1000000u), (long) (us % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t rng_state;
/* ---- the known sequence (produce / expect) ---------------------------------- */

#define SEQ_ROOMS 8
#define SEQ_CONNS 16

struct seqgen {
    uint64_t rng;
    unsigned long seed;
    bool present[SEQ_CONNS][SEQ_ROOMS];
    int occ[SEQ_ROOMS];
};

struct seqop {
    int type; /* PRESENCE_EV_JOIN or PRESENCE_EV_LEAVE */
    int room, conn;
    int occupancy; /* the room's occupancy after it */
    char rname[48], cname[48], uname[16];
};

static void seq_init(struct seqgen *g, unsigned long seed)
{
    memset(g, 0, sizeof *g);
    g->seed = seed;
    g->rng = seed * 0x9E3779B97F4A7C15ull + 7;
}

static void seq_next(struct seqgen *g, struct seqop *op)
{
    g->rng ^= g->rng << 13;
    g->rng ^= g->rng >> 7;
    g->rng ^= g->rng << 17;
    uint32_t x = (uint32_t) (g->rng >> 20);
    op->room = (int) (x % SEQ_ROOMS);
    op->conn = (int) ((x / SEQ_ROOMS) % SEQ_CONNS);
    bool *pr = &g->present[op->conn][op->room];
    op->type = *pr ? PRESENCE_EV_LEAVE : PRESENCE_EV_JOIN;
    *pr = !*pr;
    g->occ[op->room] += *pr ? 1 : -1;
    op->occupancy = g->occ[op->room];
    snprintf(op->rname, sizeof op->rname, "s%lu-r%d", g->seed, op->room);
    snprintf(op->cname, sizeof op->cname, "s%lu-c%d", g->seed, op->conn);
    snprintf(op->uname, sizeof op->uname, "u%d", op->conn % 4);
}

static int do_produce(presence_t *p, unsigned long seed, long n, unsigned pause_us)
{
    struct seqgen g;
    seq_init(&g, seed);
    for (long i = 0; i < n; i++) {
        struct seqop op;
        seq_next(&g, &op);
        int rc;
        if (op.type == PRESENCE_EV_JOIN) {
            rc = presence_join(p, op.rname, op.cname, op.uname);
            if (rc != PRESENCE_JOINED) {
                fprintf(stderr, "produce: op %ld join %s %s -> %d (%s)\n", i, op.rname, op.cname,
                        rc, presence_strerror(rc));
                return 1;
            }
        } else {
            rc = presence_leave(p, op.rname, op.cname);
            if (rc != 1) {
                fprintf(stderr, "produce: op %ld leave %s %s -> %d (%s)\n", i, op.rname, op.cname,
                        rc, presence_strerror(rc));
                return 1;
            }
        }
        if (pause_us)
            sleep_us(pause_us);
    }
    printf("done %ld\n", n);
    return 0;
}

/* ---- libuv subscribers (expect / watch) -------------------------------------- */

struct model_room {
    char name[64];
    char conns[64][64];
    int n;
    bool used;
};

static struct {
    presence_t *p;
    presence_sub_t *sub;
    uv_loop_t *loop;
    uv_poll_t poll, in_poll;
    uv_timer_t deadline, tick;
    int rc; /* exit code */
    bool finished;
    uint64_t last_seq; /* UINT64_MAX: none yet */
    unsigned long events, lapped, wakeups;
    /* expect */
    struct seqgen g;
    long want, got;
    /* watch */
    struct model_room rooms[64];
    bool stopping;
} S;

static void finish(int rc)
{
    if (S.finished)
        return;
    S.finished = true;
    S.rc = rc;
    uv_stop(S.loop);
}

static struct model_room *model_room(const char *name, bool create)
{
    for (int i = 0; i < 64; i++)
        if (S.rooms[i].used && strcmp(S.rooms[i].name, name) == 0)
            return &S.rooms[i];
    if (!create)
        return NULL;
    for (int i = 0; i < 64; i++)
        if (!S.rooms[i].used) {
            S.rooms[i].used = true;
            snprintf(S.rooms[i].name, sizeof S.rooms[i].name, "%s", name);
            S.rooms[i].n = 0;
            return &S.rooms[i];
        }
    return NULL;
}

/* Applies one event to the model: returns 0 or prints why not and returns 1. */
static int model_apply(const presence_event_t *ev)
{
    if (ev->type < PRESENCE_EV_JOIN || ev->type > PRESENCE_EV_ROOM_DELETED || !ev->room ||
        !ev->conn || !ev->user || ev->room[0] == '\0') {
        fprintf(stderr, "watch: malformed event seq %llu type %d\n", (unsigned long long) ev->seq,
                ev->type);
        return 1;
    }
    struct model_room *r = model_room(ev->room, true);
    if (!r) {
        fprintf(stderr, "watch: too many rooms\n");
        return 1;
    }
    int at = -1;
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->conns[i], ev->conn) == 0)
            at = i;
    switch (ev->type) {
    case PRESENCE_EV_JOIN:
        if (at >= 0 || r->n >= 64) {
            fprintf(stderr, "watch: seq %llu join %s %s: already present\n",
                    (unsigned long long) ev->seq, ev->room, ev->conn);
            return 1;
        }
        snprintf(r->conns[r->n++], sizeof r->conns[0], "%s", ev->conn);
        break;
    case PRESENCE_EV_LEAVE:
    case PRESENCE_EV_TIMEOUT:
    case PRESENCE_EV_OWNER_DIED:
        if (at < 0 || ev->reason != ev->type) {
            fprintf(stderr, "watch: seq %llu %s %s %s: not present (reason %d)\n",
                    (unsigned long long) ev->seq, presence_event_name(ev->type), ev->room, ev->conn,
                    ev->reason);
            return 1;
        }
        memcpy(r->conns[at], r->conns[r->n - 1], sizeof r->conns[0]);
        r->n--;
        break;
    case PRESENCE_EV_ROOM_DELETED:
        if (r->n != 0 || ev->occupancy != 0) {
            fprintf(stderr, "watch: seq %llu room_deleted %s with %d members\n",
                    (unsigned long long) ev->seq, ev->room, r->n);
            return 1;
        }
        return 0;
    default: /* room_created, state_change */
        return 0;
    }
    if ((int) ev->occupancy != r->n) {
        fprintf(stderr, "watch: seq %llu %s %s %s: occupancy %u, model %d\n",
                (unsigned long long) ev->seq, presence_event_name(ev->type), ev->room, ev->conn,
                ev->occupancy, r->n);
        return 1;
    }
    return 0;
}

static int check_seq(const presence_event_t *ev)
{
    if (S.last_seq != UINT64_MAX && ev->seq <= S.last_seq) {
        fprintf(stderr, "seq went from %llu to %llu\n", (unsigned long long) S.last_seq,
                (unsigned long long) ev->seq);
        return 1;
    }
    S.last_seq = ev->seq;
    return 0;
}

static int expect_one(const presence_event_t *ev)
{
    if (ev->type != PRESENCE_EV_JOIN && ev->type != PRESENCE_EV_LEAVE)
        return 0; /* room_created / room_deleted interleave with the reaper's sweeps */
    char prefix[32];
    snprintf(prefix, sizeof prefix, "s%lu-", S.g.seed);
    if (strncmp(ev->room, prefix, strlen(prefix)) != 0)
        return 0; /* another producer's */
    if (S.got >= S.want) {
        fprintf(stderr, "expect: unexpected extra event %s %s %s\n", presence_event_name(ev->type),
                ev->room, ev->conn);
        return 1;
    }
    struct seqop op;
    seq_next(&S.g, &op);
    if (ev->type != op.type || strcmp(ev->room, op.rname) != 0 || strcmp(ev->conn, op.cname) != 0 ||
        strcmp(ev->user, op.uname) != 0 || (int) ev->occupancy != op.occupancy ||
        ev->reason != (op.type == PRESENCE_EV_LEAVE ? PRESENCE_EV_LEAVE : 0)) {
        fprintf(stderr,
                "expect: event %ld (seq %llu): got %s %s %s/%s occ %u reason %d, "
                "want %s %s %s/%s occ %d\n",
                S.got, (unsigned long long) ev->seq, presence_event_name(ev->type), ev->room,
                ev->conn, ev->user, ev->occupancy, ev->reason, presence_event_name(op.type),
                op.rname, op.cname, op.uname, op.occupancy);
        return 1;
    }
    S.got++;
    return 0;
}

/* presence_sub_next until 0 (which re-arms the wake-up). */
static void drain(bool expect_mode)
{
    presence_event_t ev;
    for (;;) {
        int rc = presence_sub_next(S.sub, &ev);
        if (rc == 0)
            break;
        if (rc == PRESENCE_ELAPPED) {
            S.lapped++;
            fprintf(stderr, "subscriber lapped at position %llu\n",
                    (unsigned long long) presence_sub_position(S.sub));
            finish(1);
            return;
        }
        if (rc != 1) {
            fprintf(stderr, "presence_sub_next -> %d (%s)\n", rc, presence_strerror(rc));
            finish(1);
            return;
        }
        S.events++;
        if (check_seq(&ev) || (expect_mode ? expect_one(&ev) : model_apply(&ev))) {
            finish(1);
            return;
        }
    }
    if (expect_mode && S.got == S.want) {
        printf("got %ld events %lu wakeups %lu\n", S.got, S.events, S.wakeups);
        finish(0);
    }
}

static void on_expect_readable(uv_poll_t *h, int status, int events)
{
    (void) h;
    (void) events;
    if (status < 0) {
        fprintf(stderr, "uv_poll: %s\n", uv_strerror(status));
        finish(1);
        return;
    }
    S.wakeups++;
    drain(true);
}

static void on_expect_deadline(uv_timer_t *t)
{
    (void) t;
    fprintf(stderr, "expect: deadline: %ld of %ld events (position %llu, ring tail %llu)\n", S.got,
            S.want, (unsigned long long) presence_sub_position(S.sub),
            (unsigned long long) pr_load(&S.p->h->ring_tail));
    finish(3);
}

static int open_sub(presence_t *p)
{
    S.p = p;
    S.last_seq = UINT64_MAX;
    int rc = presence_subscribe(p, PRESENCE_SEQ_NOW, NULL, &S.sub);
    if (rc) {
        fprintf(stderr, "subscribe: %s\n", presence_strerror(rc));
        return 2;
    }
    S.loop = uv_default_loop();
    if (uv_poll_init(S.loop, &S.poll, presence_sub_fd(S.sub)) != 0)
        return 2;
    return 0;
}

static int do_expect(presence_t *p, unsigned long seed, long n, uint64_t timeout_ms)
{
    int rc = open_sub(p);
    if (rc)
        return rc;
    seq_init(&S.g, seed);
    S.want = n;
    uv_poll_start(&S.poll, UV_READABLE, on_expect_readable);
    uv_timer_init(S.loop, &S.deadline);
    uv_timer_start(&S.deadline, on_expect_deadline, timeout_ms, 0);
    /* As documented: poll the descriptor, then presence_sub_next until 0. No call
     * before the first wake-up: a new subscription is armed already. */
    printf("ready\n");
    if (!S.finished)
        uv_run(S.loop, UV_RUN_DEFAULT);
    presence_sub_close(S.sub);
    return S.rc;
}

static void on_watch_readable(uv_poll_t *h, int status, int events)
{
    (void) h;
    (void) events;
    if (status < 0) {
        finish(1);
        return;
    }
    S.wakeups++;
    drain(false);
}

static void on_watch_tick(uv_timer_t *t)
{
    (void) t;
    drain(false);
}

static void on_watch_deadline(uv_timer_t *t)
{
    (void) t;
    fprintf(stderr, "watch: deadline (never told to stop)\n");
    finish(3);
}

static void on_watch_stdin(uv_poll_t *h, int status, int events)
{
    (void) h;
    (void) status;
    (void) events;
    char buf[64];
    ssize_t n = read(0, buf, sizeof buf);
    (void) n;
    /* The writers have stopped: read up to the tail as it is now. */
    uint64_t tail = pr_load(&S.p->h->ring_tail);
    uint64_t end = tu_mono_ms() + 3000;
    while (!S.finished && presence_sub_position(S.sub) < tail && tu_mono_ms() < end) {
        drain(false);
        if (presence_sub_position(S.sub) < tail)
            sleep_us(1000);
    }
    if (S.finished)
        return;
    if (presence_sub_position(S.sub) < tail) {
        fprintf(stderr, "watch: stuck at %llu, tail %llu\n",
                (unsigned long long) presence_sub_position(S.sub), (unsigned long long) tail);
        finish(1);
        return;
    }
    printf("events %lu lapped %lu wakeups %lu\n", S.events, S.lapped, S.wakeups);
    for (int i = 0; i < 64; i++)
        if (S.rooms[i].used)
            printf("occ %s %d\n", S.rooms[i].name, S.rooms[i].n);
    printf("end\n");
    finish(0);
}

static int do_watch(presence_t *p, uint64_t poll_ms, uint64_t timeout_s)
{
    int rc = open_sub(p);
    if (rc)
        return rc;
    uv_poll_start(&S.poll, UV_READABLE, on_watch_readable);
    uv_poll_init(S.loop, &S.in_poll, 0);
    uv_poll_start(&S.in_poll, UV_READABLE, on_watch_stdin);
    if (poll_ms) {
        uv_timer_init(S.loop, &S.tick);
        uv_timer_start(&S.tick, on_watch_tick, poll_ms, poll_ms);
    }
    uv_timer_init(S.loop, &S.deadline);
    uv_timer_start(&S.deadline, on_watch_deadline, timeout_s * 1000, 0);
    drain(false);
    printf("ready\n");
    if (!S.finished)
        uv_run(S.loop, UV_RUN_DEFAULT);
    presence_sub_close(S.sub);
    return S.rc;
}

/* ---- load -------------------------------------------------------------------- */

static int do_load(presence_t *p, int id, long nops, unsigned pause_us)
{
    enum { R = 8, C = 16 };
    bool model[C][R];
    memset(model, 0, sizeof model);
    rng_state = (uint64_t) id * 2654435761u + 12345;
    char room[32], conn[32];
    uint64_t t0 = pr__now_ns();
    for (long i = 0; i < nops; i++) {
        int c = (int) (tu_rnd(&rng_state) % C), r = (int) (tu_rnd(&rng_state) % R);
        snprintf(room, sizeof room, "L-r%d", r);
        snprintf(conn, sizeof conn, "L%d-c%d", id, c);
        int rc;
        if (!model[c][r]) {
            rc = presence_join(p, room, conn, NULL);
            if (rc != PRESENCE_JOINED) {
                fprintf(stderr, "load %d: join %s %s -> %d (%s)\n", id, room, conn, rc,
                        presence_strerror(rc));
                return 1;
            }
        } else {
            rc = presence_leave(p, room, conn);
            if (rc != 1) {
                fprintf(stderr, "load %d: leave %s %s -> %d (%s)\n", id, room, conn, rc,
                        presence_strerror(rc));
                return 1;
            }
        }
        model[c][r] = !model[c][r];
        if (pause_us)
            sleep_us(pause_us);
    }
    uint64_t ns = pr__now_ns() - t0;
    printf("ops %ld ns %llu rate %.0f\n", nops, (unsigned long long) ns,
           (double) nops * 1e9 / (double) (ns ? ns : 1));
    return 0;
}

/* ---- stall --------------------------------------------------------------------- */

static int do_stall(presence_t *p)
{
    presence_sub_t *s;
    int rc = presence_subscribe(p, PRESENCE_SEQ_NOW, NULL, &s);
    if (rc) {
        fprintf(stderr, "stall: subscribe: %s\n", presence_strerror(rc));
        return 2;
    }
    presence_event_t ev;
    rc = presence_sub_next(s, &ev); /* nothing yet: (re-)arms the wake-up */
    if (rc != 0) {
        fprintf(stderr, "stall: first sub_next -> %d\n", rc);
        return 2;
    }
    printf("ready\n");
    char buf[64];
    if (read(0, buf, sizeof buf) <= 0) { /* the producers run meanwhile */
    }
    unsigned long lapped = 0, events = 0;
    for (long i = 0; i < 100000000; i++) {
        rc = presence_sub_next(s, &ev);
        if (rc == 0)
            break;
        if (rc == PRESENCE_ELAPPED)
            lapped++;
        else if (rc == 1)
            events++;
        else {
            fprintf(stderr, "stall: sub_next -> %d\n", rc);
            return 1;
        }
    }
    printf("lapped %lu events %lu\n", lapped, events);
    presence_sub_close(s);
    return lapped ? 0 : 1;
}

/* ---- bound / heartbeat ------------------------------------------------------------ */

static int do_bound(presence_t *p, int nb, int nu)
{
    char conn[32];
    for (int i = 0; i < nb; i++) {
        snprintf(conn, sizeof conn, "b%d", i);
        int rc = presence_join_ex(p, "w", conn, NULL, 0, PRESENCE_BOUND, NULL);
        if (rc != PRESENCE_JOINED) {
            fprintf(stderr, "bound: join %s -> %d\n", conn, rc);
            return 1;
        }
    }
    for (int i = 0; i < nu; i++) {
        snprintf(conn, sizeof conn, "u%d", i);
        int rc = presence_join_ex(p, "w", conn, NULL, 0, 0, NULL);
        if (rc != PRESENCE_JOINED) {
            fprintf(stderr, "bound: join %s -> %d\n", conn, rc);
            return 1;
        }
    }
    printf("ready\n");
    for (;;) {
        sleep_us(100000);
        for (int i = 0; i < nb + nu; i++) {
            snprintf(conn, sizeof conn, "%c%d", i < nb ? 'b' : 'u', i < nb ? i : i - nb);
            presence_touch(p, conn);
        }
    }
}

static int do_heartbeat(presence_t *p, int nu, int secs)
{
    char conn[32];
    for (int i = 0; i < nu; i++) {
        snprintf(conn, sizeof conn, "u%d", i);
        int rc = presence_join(p, "w", conn, NULL);
        if (rc != PRESENCE_REFRESHED) {
            fprintf(stderr, "heartbeat: join %s -> %d (want REFRESHED)\n", conn, rc);
            return 1;
        }
    }
    printf("ready\n");
    uint64_t end = tu_mono_ms() + (uint64_t) secs * 1000;
    while (tu_mono_ms() < end) {
        sleep_us(100000);
        for (int i = 0; i < nu; i++) {
            snprintf(conn, sizeof conn, "u%d", i);
            int rc = presence_touch(p, conn);
            if (rc != 0) {
                fprintf(stderr, "heartbeat: touch %s -> %d\n", conn, rc);
                return 1;
            }
        }
    }
    return 0;
}

/* ---- latency figures ----------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

static void print_figure(const char *what, uint64_t *v, int n)
{
    qsort(v, (size_t) n, sizeof *v, cmp_u64);
    printf("# figure: %s: n %d p50 %.1f us p99 %.1f us max %.1f us\n", what, n,
           (double) v[n / 2] / 1e3, (double) v[(n * 99) / 100] / 1e3, (double) v[n - 1] / 1e3);
}

static bool wait_byte(int fd, int timeout_ms)
{
    struct pollfd pf = {fd, POLLIN, 0};
    char c;
    return poll(&pf, 1, timeout_ms) == 1 && read(fd, &c, 1) == 1;
}

/* Child: subscriber blocked in poll(), one sample per wake-up. */
static int latency_sub(const char *seg, int n, int ack)
{
    presence_t *p;
    if (presence_open(seg, NULL, &p) != 0)
        return 2;
    presence_sub_t *s;
    if (presence_subscribe(p, PRESENCE_SEQ_NOW, "lat", &s) != 0)
        return 2;
    presence_event_t ev;
    while (presence_sub_next(s, &ev) == 1) {
    }
    uint64_t *v = calloc((size_t) n, sizeof *v);
    if (!v || write(ack, "r", 1) != 1)
        return 2;
    int got = 0;
    while (got < n) {
        struct pollfd pf = {presence_sub_fd(s), POLLIN, 0};
        if (poll(&pf, 1, 5000) != 1) {
            fprintf(stderr, "latency: no wake-up after %d samples\n", got);
            return 3;
        }
        bool sample = false;
        int rc;
        while ((rc = presence_sub_next(s, &ev)) == 1) {
            uint64_t now = pr__realtime_ns();
            if (!sample && (ev.type == PRESENCE_EV_JOIN || ev.type == PRESENCE_EV_LEAVE)) {
                v[got++] = now > ev.time_ns ? now - ev.time_ns : 0;
                sample = true;
            }
        }
        if (rc < 0)
            return 1;
        if (sample && write(ack, "a", 1) != 1)
            return 2;
    }
    print_figure("event wake-up latency, producer -> subscriber eventfd (one hop)", v, n);
    presence_sub_close(s);
    presence_close(p);
    return 0;
}

/* Child: raw eventfd ping-pong; the value written is the sender's timestamp. */
static int pingpong_child(int in, int out, int n)
{
    uint64_t *v = calloc((size_t) n, sizeof *v);
    if (!v)
        return 2;
    for (int i = 0; i < n; i++) {
        struct pollfd pf = {in, POLLIN, 0};
        uint64_t t;
        if (poll(&pf, 1, 5000) != 1 || read(in, &t, sizeof t) != sizeof t)
            return 3;
        uint64_t now = pr__now_ns();
        v[i] = now > t ? now - t : 0;
        uint64_t one = 1;
        if (write(out, &one, sizeof one) != sizeof one)
            return 2;
    }
    print_figure("raw eventfd ping-pong between two processes (one way)", v, n);
    return 0;
}

static int child_status(pid_t pid)
{
    int st;
    for (int i = 0; i < 20000; i++) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        sleep_us(1000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return 3;
}

static int do_latency(presence_t *p, const char *seg, int n)
{
    rng_state = 88172645463325252ull;
    /* An anchor keeps room "lat" alive between samples (the reaper deletes empty rooms). */
    if (presence_join(p, "lat", "anchor", NULL) < 0)
        return 2;
    int ack[2];
    if (pipe(ack) != 0)
        return 2;
    pid_t child = fork();
    if (child == 0) {
        close(ack[0]);
        _exit(latency_sub(seg, n, ack[1]));
    }
    close(ack[1]);
    if (!wait_byte(ack[0], 5000)) {
        fprintf(stderr, "latency: subscriber not ready\n");
        kill(child, SIGKILL);
        child_status(child);
        return 2;
    }
    for (int i = 0; i < n; i++) {
        sleep_us(200 + tu_rnd(&rng_state) % 300); /* let the subscriber block in poll() */
        int rc = (i & 1) ? presence_leave(p, "lat", "c") : presence_join(p, "lat", "c", NULL);
        if (rc < 0 || !wait_byte(ack[0], 5000)) {
            fprintf(stderr, "latency: sample %d: rc %d or no ack\n", i, rc);
            kill(child, SIGKILL);
            child_status(child);
            return 3;
        }
    }
    close(ack[0]);
    int rc = child_status(child);
    if (rc)
        return rc;

    int e1 = eventfd(0, 0), e2 = eventfd(0, 0);
    if (e1 < 0 || e2 < 0)
        return 2;
    child = fork();
    if (child == 0)
        _exit(pingpong_child(e1, e2, n));
    for (int i = 0; i < n; i++) {
        sleep_us(200 + tu_rnd(&rng_state) % 300);
        uint64_t t = pr__now_ns();
        struct pollfd pf = {e2, POLLIN, 0};
        uint64_t one;
        if (write(e1, &t, sizeof t) != sizeof t || poll(&pf, 1, 5000) != 1 ||
            read(e2, &one, sizeof one) != sizeof one) {
            kill(child, SIGKILL);
            child_status(child);
            return 3;
        }
    }
    return child_status(child);
}

/* ---- wake / stress ------------------------------------------------------------------- */

/* 1 if a line (or end of file) is waiting on stdin; the line is consumed. */
static int stdin_line(char *buf, size_t n)
{
    ssize_t r = read(0, buf, n - 1);
    if (r <= 0)
        return -1; /* end of file */
    buf[r] = '\0';
    return 1;
}

/* Subscribes to every room from now; NULL (reported) on failure. */
static presence_sub_t *subscribe_now(presence_t *p, const char *who)
{
    presence_sub_t *s;
    int rc = presence_subscribe(p, PRESENCE_SEQ_NOW, NULL, &s);
    if (rc) {
        fprintf(stderr, "%s: subscribe: %s\n", who, presence_strerror(rc));
        return NULL;
    }
    return s;
}

/* Sleeps in poll() on subscription @s and on stdin until @end (ms). Returns 1
 * when a line came on stdin (consumed), 0 otherwise, or an exit code: 2 poll
 * failed, 3 the deadline passed. *@woken: the subscription is readable. */
static int sleep_on(presence_sub_t *s, uint64_t end, const char *who, bool *woken)
{
    *woken = false;
    uint64_t now = tu_mono_ms();
    if (now >= end) {
        fprintf(stderr, "%s: deadline\n", who);
        return 3;
    }
    struct pollfd pf[2] = {{presence_sub_fd(s), POLLIN, 0}, {0, POLLIN, 0}};
    if (poll(pf, 2, (int) (end - now)) < 0 && errno != EINTR)
        return 2;
    *woken = pf[0].revents != 0;
    if (!pf[1].revents)
        return 0;
    char buf[64];
    stdin_line(buf, sizeof buf);
    return 1;
}

static int do_wake(presence_t *p, uint64_t timeout_ms)
{
    presence_sub_t *s = subscribe_now(p, "wake");
    if (!s)
        return 2;
    presence_event_t ev;
    int rc;
    while ((rc = presence_sub_next(s, &ev)) == 1) {
    }
    printf("ready\n");
    uint64_t end = tu_mono_ms() + timeout_ms;
    for (;;) {
        bool woken;
        int slept = sleep_on(s, end, "wake", &woken);
        if (slept > 1)
            return slept;
        if (slept == 1)
            break;
        if (!woken)
            continue;
        while ((rc = presence_sub_next(s, &ev)) == 1) {
            if (ev.type == PRESENCE_EV_JOIN) {
                uint64_t t = pr__realtime_ns();
                printf("join %s %.1f\n", ev.conn,
                       t > ev.time_ns ? (double) (t - ev.time_ns) / 1e3 : 0.0);
            }
        }
        if (rc < 0) {
            fprintf(stderr, "wake: sub_next -> %d (%s)\n", rc, presence_strerror(rc));
            return 1;
        }
    }
    presence_sub_close(s);
    return 0;
}

static int do_stress_sub(presence_t *p, uint64_t timeout_s)
{
    presence_sub_t *s = subscribe_now(p, "stress-sub");
    if (!s)
        return 2;
    presence_event_t ev;
    uint64_t last = UINT64_MAX, end = tu_mono_ms() + timeout_s * 1000;
    unsigned long events = 0, wakeups = 0;
    bool stop = false;
    int rc;
    printf("ready\n");
    for (;;) {
        while ((rc = presence_sub_next(s, &ev)) == 1) {
            if (last != UINT64_MAX && ev.seq <= last) {
                fprintf(stderr, "stress-sub: seq went from %llu to %llu\n",
                        (unsigned long long) last, (unsigned long long) ev.seq);
                return 1;
            }
            last = ev.seq;
            if ((ev.type == PRESENCE_EV_JOIN || ev.type == PRESENCE_EV_LEAVE ||
                 ev.type == PRESENCE_EV_TIMEOUT) &&
                strncmp(ev.room, "x-", 2) == 0)
                events++;
        }
        if (rc != 0) {
            fprintf(stderr, "stress-sub: sub_next -> %d (%s)\n", rc, presence_strerror(rc));
            return 1;
        }
        if (stop)
            break;
        bool woken;
        int slept = sleep_on(s, end, "stress-sub", &woken);
        if (slept > 1)
            return slept;
        wakeups += woken;
        stop = slept == 1; /* drain once more, then report */
    }
    printf("events %lu wakeups %lu\n", events, wakeups);
    presence_sub_close(s);
    return 0;
}

static void spin_us(unsigned us)
{
    uint64_t end = pr__now_ns() + (uint64_t) us * 1000u;
    while (pr__now_ns() < end) {
    }
}

/* The producers' protocol: for each line "go" on stdin one round (0, or an
 * exit code), then "done N" (N: the events so far); on "end" "total N". */
static int producer_rounds(presence_t *p, int id, void *ctx,
                           int (*round)(presence_t *, int, void *, long *))
{
    long events = 0;
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "end", 3) == 0)
            break;
        int rc = round(p, id, ctx, &events);
        if (rc)
            return rc;
        printf("done %ld\n", events);
    }
    printf("total %ld\n", events);
    return 0;
}

enum { PROD_ROOMS = 4, PROD_CONNS = 8 };

/* A burst of 1..4 joins or leaves of its own connections; @ctx: who is where. */
static int prod_round(presence_t *p, int id, void *ctx, long *events)
{
    bool(*model)[PROD_ROOMS] = ctx;
    char room[32], conn[32];
    unsigned n = 1 + tu_rnd(&rng_state) % 4;
    for (unsigned i = 0; i < n; i++) {
        int c = (int) (tu_rnd(&rng_state) % PROD_CONNS),
            r = (int) (tu_rnd(&rng_state) % PROD_ROOMS);
        snprintf(room, sizeof room, "x-r%d", r);
        snprintf(conn, sizeof conn, "x%d-c%d", id, c);
        int rc = model[c][r] ? presence_leave(p, room, conn) : presence_join(p, room, conn, NULL);
        if (rc != (model[c][r] ? 1 : PRESENCE_JOINED)) {
            fprintf(stderr, "stress-prod %d: %s %s %s -> %d (%s)\n", id,
                    model[c][r] ? "leave" : "join", room, conn, rc, presence_strerror(rc));
            return 1;
        }
        model[c][r] = !model[c][r];
        ++*events;
        if (i + 1 < n)
            spin_us(tu_rnd(&rng_state) % 40);
    }
    return 0;
}

static int do_stress_prod(presence_t *p, int id)
{
    bool model[PROD_CONNS][PROD_ROOMS];
    memset(model, 0, sizeof model);
    rng_state = (uint64_t) id * 0x9E3779B97F4A7C15ull + 99;
    return producer_rounds(p, id, model, prod_round);
}

/* 1..70 new connections that expire 1 ms later, then a prune; @ctx: the round. */
static int prune_round(presence_t *p, int id, void *ctx, long *events)
{
    long *round = ctx;
    char room[32], conn[48];
    unsigned n = 1 + tu_rnd(&rng_state) % 70;
    for (unsigned i = 0; i < n; i++) {
        snprintf(room, sizeof room, "x-r%u", i % 4);
        snprintf(conn, sizeof conn, "x%d-p%ld-%u", id, *round, i);
        int rc = presence_join_ex(p, room, conn, NULL, 1, 0, NULL);
        if (rc != PRESENCE_JOINED) {
            fprintf(stderr, "stress-prune %d: join %s -> %d (%s)\n", id, conn, rc,
                    presence_strerror(rc));
            return 1;
        }
    }
    *events += n;
    /* 1 ms timeout, last_seen up to four coarse ticks (16 ms) ahead */
    sleep_us(20000);
    int removed = presence_prune(p, 0);
    if (removed < 0) {
        fprintf(stderr, "stress-prune %d: prune -> %d (%s)\n", id, removed,
                presence_strerror(removed));
        return 1;
    }
    *events += removed; /* the other producer's prune may have taken some of ours */
    ++*round;
    return 0;
}

static int do_stress_prune(presence_t *p, int id)
{
    long round = 0;
    rng_state = (uint64_t) id * 0x9E3779B97F4A7C15ull + 7;
    return producer_rounds(p, id, &round, prune_round);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: helper_events MODE SEG ...\n");
        return 2;
    }
    const char *mode = argv[1];
    setvbuf(stdout, NULL, _IONBF, 0);
    presence_t *p;
    int rc = presence_open(argv[2], NULL, &p);
    if (rc) {
        fprintf(stderr, "helper_events: open %s: %s\n", argv[2], presence_strerror(rc));
        return 2;
    }
    if (strcmp(mode, "produce") == 0 && argc == 6)
        rc = do_produce(p, strtoul(argv[3], NULL, 10), atol(argv[4]),
                        (unsigned) strtoul(argv[5], NULL, 10));
    else if (strcmp(mode, "expect") == 0 && argc == 6)
        rc = do_expect(p, strtoul(argv[3], NULL, 10), atol(argv[4]), strtoull(argv[5], NULL, 10));
    else if (strcmp(mode, "watch") == 0 && argc == 5)
        rc = do_watch(p, strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    else if (strcmp(mode, "load") == 0 && argc == 6)
        rc = do_load(p, atoi(argv[3]), atol(argv[4]), (unsigned) strtoul(argv[5], NULL, 10));
    else if (strcmp(mode, "stall") == 0 && argc == 3)
        rc = do_stall(p);
    else if (strcmp(mode, "bound") == 0 && argc == 5)
        rc = do_bound(p, atoi(argv[3]), atoi(argv[4]));
    else if (strcmp(mode, "heartbeat") == 0 && argc == 5)
        rc = do_heartbeat(p, atoi(argv[3]), atoi(argv[4]));
    else if (strcmp(mode, "latency") == 0 && argc == 4)
        rc = do_latency(p, argv[2], atoi(argv[3]));
    else if (strcmp(mode, "wake") == 0 && argc == 4)
        rc = do_wake(p, strtoull(argv[3], NULL, 10));
    else if (strcmp(mode, "stress-sub") == 0 && argc == 4)
        rc = do_stress_sub(p, strtoull(argv[3], NULL, 10));
    else if (strcmp(mode, "stress-prod") == 0 && argc == 4)
        rc = do_stress_prod(p, atoi(argv[3]));
    else if (strcmp(mode, "stress-prune") == 0 && argc == 4)
        rc = do_stress_prune(p, atoi(argv[3]));
    else {
        fprintf(stderr, "helper_events: bad mode or arguments\n");
        rc = 2;
    }
    presence_close(p);
    return rc;
}
