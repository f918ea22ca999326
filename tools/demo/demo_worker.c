/*
 * demo_worker.c -- presence-demo-worker: one worker process of a pretend chat
 * server, for tools/demo.sh (built, not installed).
 *
 *   presence-demo-worker -s SEGMENT --id N [--conns N] [--bound] [--stall N]
 *                        [--stall-after MS] [--tick MS] [--duration MS] [--quiet]
 *
 * It holds --conns client connections ("w<ID>-c<J>", each with a user, every
 * fifth anonymous) and, every --tick (250 ms), does what a server does for them:
 *   - heartbeat: presence_touch_handle() for every connection whose client is
 *     still talking;
 *   - now and then: a state change ({"typing": ...}), a move to another room
 *     (leave, join), a disconnect (leave_all; the client reconnects a second or
 *     two later under a new connection id), or a client that goes silent: its
 *     connection is no longer touched and the reaper expires it (reason timeout);
 *   - the first --stall connections go silent after --stall-after ms for sure.
 * With --bound the connections are joined with PRESENCE_BOUND: when this
 * process dies (the demo kills one with SIGKILL) the reaper removes them at
 * once, reason owner_died. SIGTERM/SIGINT: every connection leaves, exit 0.
 */
#include "presence.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 64
#define PROG      "presence-demo-worker"

static const char *const rooms[] = {"lobby", "game.1", "game.2", "support", "random"};
#define NROOMS ((int) (sizeof rooms / sizeof rooms[0]))

static const char *const users[] = {"alice",   "bob",   "carol",  "dave",   "erin",
                                    "frank",   "grace", "heidi",  "ivan",   "judy",
                                    "mallory", "niaj",  "olivia", "peggy",  "rupert",
                                    "sybil",   "trent", "victor", "walter", "yolanda"};
#define NUSERS ((unsigned) (sizeof users / sizeof users[0]))

/* One client connection. */
struct conn {
    char id[40];
    const char *user; /* NULL: anonymous */
    presence_conn_t handle;
    int room[2]; /* indexes into rooms[] */
    int nrooms;
    bool live;           /* joined (as far as we know) */
    bool silent;         /* its client stopped talking: no more heartbeats */
    uint64_t silent_at;  /* when (monotonic ns) */
    uint64_t reconnect;  /* when a disconnected client comes back (monotonic ns) */
    unsigned generation; /* reconnections so far: part of the connection id */
};

static struct {
    presence_t *p;
    const char *segment;
    unsigned id, nconns, nstall;
    uint64_t stall_after_ms, tick_ms, duration_ms, max_age_ns;
    bool bound, quiet;
    uint64_t rng;
    struct conn conns[MAX_CONNS];
} W;

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void) sig;
    stopping = 1;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* xorshift64: a small deterministic generator (seeded by the worker id). */
static unsigned rnd(unsigned n)
{
    W.rng ^= W.rng << 13;
    W.rng ^= W.rng >> 7;
    W.rng ^= W.rng << 17;
    return (unsigned) (W.rng % n);
}

static void warn_rc(const char *what, const struct conn *c, int rc)
{
    fprintf(stderr, PROG " %u: %s %s: %s\n", W.id, what, c->id, presence_strerror(rc));
}

/* ---- what a server does for its connections ---------------------------------------------- */

static void join_room(struct conn *c, int room)
{
    unsigned flags = W.bound ? PRESENCE_BOUND : 0;
    int rc = presence_join_ex(W.p, rooms[room], c->id, c->user, 0, flags, &c->handle);
    if (rc < 0)
        warn_rc("join", c, rc);
}

static void connect_client(struct conn *c, unsigned j)
{
    c->generation++;
    if (c->generation == 1)
        snprintf(c->id, sizeof c->id, "w%u-c%u", W.id, j);
    else
        snprintf(c->id, sizeof c->id, "w%u-c%u.%u", W.id, j, c->generation);
    c->user = (W.id * 7 + j) % 5 == 4 ? NULL : users[(W.id * 7 + j) % NUSERS];
    c->nrooms = 1 + (rnd(3) == 0);
    c->room[0] = rnd(2) ? 0 : 1 + (int) rnd(NROOMS - 1); /* half of them in the lobby */
    c->room[1] = (c->room[0] + 1 + (int) rnd(NROOMS - 1)) % NROOMS;
    for (int k = 0; k < c->nrooms; k++)
        join_room(c, c->room[k]);
    c->live = true;
    c->silent = false;
}

static void set_typing(struct conn *c)
{
    const char *names[2];
    for (int k = 0; k < c->nrooms; k++)
        names[k] = rooms[c->room[k]];
    const char *state = rnd(2) ? "{\"typing\": true}" : "{\"typing\": false}";
    int rc = presence_set_state(W.p, names, (size_t) c->nrooms, NULL, 0, c->id, state);
    if (rc < 0)
        warn_rc("set_state", c, rc);
}

static void move_room(struct conn *c)
{
    int to = (int) rnd(NROOMS);
    for (int k = 0; k < c->nrooms; k++)
        if (c->room[k] == to)
            return;
    int rc = presence_leave(W.p, rooms[c->room[c->nrooms - 1]], c->id);
    if (rc < 0)
        warn_rc("leave", c, rc);
    c->room[c->nrooms - 1] = to;
    join_room(c, to);
}

static void disconnect_client(struct conn *c, uint64_t now)
{
    int rc = presence_leave_all(W.p, c->id);
    if (rc < 0)
        warn_rc("leave_all", c, rc);
    c->live = false;
    c->reconnect = now + (1000 + rnd(2000)) * 1000000ull;
}

static void tick(uint64_t start, uint64_t now)
{
    for (unsigned j = 0; j < W.nconns; j++) {
        struct conn *c = &W.conns[j];
        if (!c->live) {
            if (now >= c->reconnect)
                connect_client(c, j);
            continue;
        }
        if (!c->silent && j < W.nstall && now - start >= W.stall_after_ms * 1000000u) {
            c->silent = true;
            c->silent_at = now;
        }
        if (c->silent) {
            /* The reaper expires it after max_age; later its user comes back. */
            if (j >= W.nstall && now - c->silent_at > W.max_age_ns + 2000000000u)
                connect_client(c, j);
            continue;
        }
        int rc = presence_touch_handle(W.p, c->handle);
        if (rc == PRESENCE_NOT_PRESENT || rc == PRESENCE_ESTALE) {
            connect_client(c, j); /* removed behind our back: join again */
            continue;
        }
        /* per tick (250 ms): typing 1/80, a move 1/200, a disconnect 1/400, silence 1/400 */
        unsigned r = rnd(400);
        if (r < 5) {
            set_typing(c);
        } else if (r < 7) {
            move_room(c);
        } else if (r == 7) {
            disconnect_client(c, now);
        } else if (r == 8) {
            c->silent = true; /* the client went away without a word */
            c->silent_at = now;
        }
    }
}

/* ---- options and the loop ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " -s SEGMENT --id N [--conns N] [--bound] [--stall N]\n"
               "       [--stall-after MS] [--tick MS] [--duration MS] [--quiet]\n"
               "One worker of a pretend chat server (tools/demo.sh). See the source's header.\n");
}

static int parse_num(const char *opt, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > max) {
        fprintf(stderr, PROG ": %s: '%s' is not a number up to %llu\n", opt, s,
                (unsigned long long) max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    enum { O_ID = 256, O_CONNS, O_BOUND, O_STALL, O_STALL_AFTER, O_TICK, O_DURATION, O_QUIET };
    static const struct option longopts[] = {
        {"segment", required_argument, NULL, 's'},
        {"id", required_argument, NULL, O_ID},
        {"conns", required_argument, NULL, O_CONNS},
        {"bound", no_argument, NULL, O_BOUND},
        {"stall", required_argument, NULL, O_STALL},
        {"stall-after", required_argument, NULL, O_STALL_AFTER},
        {"tick", required_argument, NULL, O_TICK},
        {"duration", required_argument, NULL, O_DURATION},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    W.nconns = 6;
    W.tick_ms = 250;
    W.stall_after_ms = 1000;
    int o;
    uint64_t v = 0;
    while ((o = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (o) {
        case 's':
            W.segment = optarg;
            break;
        case O_ID:
            rc = parse_num("--id", optarg, 9999, &v);
            W.id = (unsigned) v;
            break;
        case O_CONNS:
            rc = parse_num("--conns", optarg, MAX_CONNS, &v);
            W.nconns = (unsigned) v;
            break;
        case O_BOUND:
            W.bound = true;
            break;
        case O_STALL:
            rc = parse_num("--stall", optarg, MAX_CONNS, &v);
            W.nstall = (unsigned) v;
            break;
        case O_STALL_AFTER:
            rc = parse_num("--stall-after", optarg, UINT32_MAX, &W.stall_after_ms);
            break;
        case O_TICK:
            rc = parse_num("--tick", optarg, 60000, &W.tick_ms);
            if (rc == 0 && W.tick_ms == 0) {
                fprintf(stderr, PROG ": --tick must be at least 1 ms\n");
                rc = -1;
            }
            break;
        case O_DURATION:
            rc = parse_num("--duration", optarg, UINT32_MAX, &W.duration_ms);
            break;
        case O_QUIET:
            W.quiet = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
        if (rc)
            return -1;
    }
    if (optind != argc || !W.segment) {
        usage(stderr);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0)
        return 2;
    W.rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t) W.id * 0x100000001b3ull) ^ (uint64_t) getpid();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int rc = presence_open(W.segment, NULL, &W.p);
    if (rc < 0) {
        fprintf(stderr, PROG " %u: segment '%s': %s\n", W.id, W.segment, presence_strerror(rc));
        return 1;
    }
    presence_options_t opts;
    presence_get_options(W.p, &opts);
    W.max_age_ns = opts.max_age_ms * 1000000u;
    if (!W.quiet) {
        char silent[64] = "";
        if (W.nstall)
            snprintf(silent, sizeof silent, ", %u going silent after %llu ms", W.nstall,
                     (unsigned long long) W.stall_after_ms);
        fprintf(stderr, PROG " %u (pid %d): %u connections%s%s\n", W.id, (int) getpid(), W.nconns,
                W.bound ? " bound to this process" : "", silent);
    }

    uint64_t start = mono_ns();
    for (unsigned j = 0; j < W.nconns; j++)
        connect_client(&W.conns[j], j);
    while (!stopping) {
        uint64_t now = mono_ns();
        if (W.duration_ms && now - start >= W.duration_ms * 1000000u)
            break;
        tick(start, now);
        struct timespec ts = {(time_t) (W.tick_ms / 1000), (long) (W.tick_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL); /* a signal ends it early */
    }
    /* Shutting down: every connection still ours leaves (one leave event per room). */
    unsigned left = 0;
    for (unsigned j = 0; j < W.nconns; j++)
        if (W.conns[j].live && presence_leave_all(W.p, W.conns[j].id) > 0)
            left++;
    if (!W.quiet)
        fprintf(stderr, PROG " %u (pid %d): stopping; %u connections left their rooms\n", W.id,
                (int) getpid(), left);
    presence_close(W.p);
    return 0;
}
