/*
 * helper_crash.c -- the worker that test_crash execs and kills. Never uses
 * cmocka: it checks plainly, prints what went wrong (with its seed) on stderr
 * and exits non-zero; the parent asserts on exit statuses (and expects
 * SIGKILL from the ones it kills, or from PRESENCE_TEST_KILL_AT).
 *
 *   helper_crash work SEG INC SEED MAXOPS MAINT LOG TIMEOUT_MS STRICT
 *       Random join / leave / leave_all / touch / on_message / set_state (by
 *       room and by group) / group add, remove, delete, list / where_now on its
 *       own connections "i<INC>-c<k>" (k < NCONN) over the shared rooms
 *       "r0".."r31", and its own groups "g<INC>-<j>". Connection k is bound to
 *       the process when k is even, has user "u<INC>-<k%3>" unless k%3 == 0.
 *       Runs MAXOPS operations or until SIGUSR1, then closes and exits 0.
 *       In loose mode it works on a window of 4 connections that moves on
 *       every 100 ms, so that the others expire while it runs.
 *       MAINT > 0: presence_maintain() every MAINT operations (so that the
 *       reclaim kill point is reached). TIMEOUT_MS: connection timeout (0 = the
 *       segment's; otherwise each connection gets one in [T/2, T]).
 *       STRICT 1: every result is checked against the worker's own model (no
 *       one else touches its connections or groups); STRICT 0: results are
 *       only checked for being plausible (the reaper expires connections).
 *       LOG ("-" for none): membership changes, written with write(2) so that
 *       a SIGKILL loses nothing written before it:
 *         "S INC PID"        start
 *         "B J|L CONN ROOM"  before a join / leave, "B A CONN" before leave_all
 *         "E"                the operation before it completed
 *         "X"                clean exit
 *       A killed worker's last "B" without "E" is the one uncertain operation.
 *
 *   helper_crash mark SEG CONN
 *       Joins room "mk" as CONN and leaves it: events from a new process, which
 *       a subscriber that saw a producer die must still deliver.
 *
 * Exit codes: 0 ok, 1 a check failed, 2 usage or setup error.
 */
#include "internal.h"
#include "test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NCONN  12 /* connections per worker */
#define NROOM  32 /* shared rooms r0..r31 */
#define NGROUP 4  /* groups per worker */
#define MAXIN  8  /* rooms a connection is in at most (keeps the segment small) */

static volatile sig_atomic_t stop_flag;
static void on_usr1(int sig)
{
    (void) sig;
    stop_flag = 1;
}

static uint64_t rng;
static int logfd = -1;
static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logline(const char *fmt, ...)
{
    if (logfd < 0)
        return;
    char buf[160];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0 && write(logfd, buf, (size_t) n) != n) {
        /* the parent notices a short log */
    }
}

static uint64_t g_seed;
static int g_inc;
static unsigned long g_op;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "helper_crash i%d seed %llu op %lu: ", g_inc,                              \
                (unsigned long long) g_seed, g_op);                                                \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        return 1;                                                                                  \
    } while (0)

static int popcount32(uint32_t x)
{
    return __builtin_popcount(x);
}

/* Plausible outcomes in loose mode: a result, or a documented "no". */
static bool plausible(int rc)
{
    return rc >= 0 || rc == PRESENCE_ENOGROUP || rc == PRESENCE_EUSERCONFLICT || rc == -ENOSPC;
}

static int do_work(presence_t *p, int inc, uint64_t seed, unsigned long maxops, unsigned maint,
                   const char *logpath, uint64_t timeout_ms, bool strict)
{
    g_seed = seed;
    g_inc = inc;
    rng = seed * 0x9E3779B97F4A7C15ull + 1;
    if (rng == 0)
        rng = 1;
    if (strcmp(logpath, "-") != 0) {
        logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (logfd < 0)
            return 2;
    }
    logline("S %d %d\n", inc, (int) getpid());
    char conns[NCONN][32], users[NCONN][32], rooms[NROOM][8], groups[NGROUP][32];
    uint64_t tmo[NCONN];
    for (int k = 0; k < NCONN; k++) {
        snprintf(conns[k], sizeof conns[k], "i%d-c%d", inc, k);
        snprintf(users[k], sizeof users[k], "u%d-%d", inc, k % 3);
        tmo[k] = timeout_ms ? timeout_ms / 2 + tu_rnd(&rng) % (timeout_ms / 2 + 1) : 0;
    }
    for (int r = 0; r < NROOM; r++)
        snprintf(rooms[r], sizeof rooms[r], "r%d", r);
    for (int g = 0; g < NGROUP; g++)
        snprintf(groups[g], sizeof groups[g], "g%d-%d", inc, g);
    uint32_t in[NCONN] = {0};   /* model: rooms of each connection */
    uint32_t gm[NGROUP] = {0};  /* model: rooms of each group */
    bool gex[NGROUP] = {false}; /* model: the group exists */
    char json[600];

    for (g_op = 0; g_op < maxops && !stop_flag; g_op++) {
        int k = (int) (tu_rnd(&rng) % NCONN);
        if (!strict) {
            /* Loose (reaper) mode: work on a window of 4 connections that moves
             * on every 100 ms, so that the others stop heartbeating and the
             * reaper's sweeps expire them while we run. */
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            uint64_t ms = (uint64_t) now.tv_sec * 1000u + (uint64_t) now.tv_nsec / 1000000u;
            k = (int) ((ms / 100 + tu_rnd(&rng) % 4) % NCONN);
        }
        int r = (int) (tu_rnd(&rng) % NROOM);
        int g = (int) (tu_rnd(&rng) % NGROUP);
        const char *c = conns[k];
        const char *u = k % 3 ? users[k] : NULL;
        unsigned flags = k % 2 == 0 ? PRESENCE_BOUND : 0;
        unsigned op = tu_rnd(&rng) % 100;
        int rc;
        if (op < 35 && popcount32(in[k]) >= MAXIN && !(in[k] >> r & 1u))
            op = 40; /* full: leave instead */
        if (op < 35) {
            logline("B J %s %s\n", c, rooms[r]);
            rc = presence_join_ex(p, rooms[r], c, u, tmo[k], flags, NULL);
            if (strict && rc != ((in[k] >> r & 1u) ? PRESENCE_REFRESHED : PRESENCE_JOINED))
                FAIL("join %s %s -> %d (%s), model %u", rooms[r], c, rc, presence_strerror(rc),
                     in[k] >> r & 1u);
            if (!strict && !plausible(rc))
                FAIL("join %s %s -> %d (%s)", rooms[r], c, rc, presence_strerror(rc));
            logline("E\n");
            if (rc >= 0)
                in[k] |= 1u << r;
        } else if (op < 55) {
            if (in[k] && (tu_rnd(&rng) & 1)) /* mostly leave a room it is in */
                for (r = (int) (tu_rnd(&rng) % NROOM); !(in[k] >> r & 1u); r = (r + 1) % NROOM) {
                }
            logline("B L %s %s\n", c, rooms[r]);
            rc = presence_leave(p, rooms[r], c);
            if (strict && rc != (int) (in[k] >> r & 1u))
                FAIL("leave %s %s -> %d (%s), model %u", rooms[r], c, rc, presence_strerror(rc),
                     in[k] >> r & 1u);
            if (!strict && rc != 0 && rc != 1)
                FAIL("leave %s %s -> %d (%s)", rooms[r], c, rc, presence_strerror(rc));
            logline("E\n");
            in[k] &= ~(1u << r);
        } else if (op < 60) {
            logline("B A %s\n", c);
            rc = presence_leave_all(p, c);
            if (strict && rc != popcount32(in[k]))
                FAIL("leave_all %s -> %d (%s), model %d", c, rc, presence_strerror(rc),
                     popcount32(in[k]));
            if (!strict && (rc < 0 || rc > NROOM))
                FAIL("leave_all %s -> %d (%s)", c, rc, presence_strerror(rc));
            logline("E\n");
            in[k] = 0;
        } else if (op < 66) {
            rc = presence_touch(p, c);
            if (strict && rc != (in[k] ? 0 : PRESENCE_NOT_PRESENT))
                FAIL("touch %s -> %d (%s), model %u", c, rc, presence_strerror(rc), in[k]);
            if (!strict && rc != 0 && rc != PRESENCE_NOT_PRESENT)
                FAIL("touch %s -> %d (%s)", c, rc, presence_strerror(rc));
        } else if (op < 70) {
            rc = presence_on_message(p, c, "\"heartbeat\"", 11);
            int want = PRESENCE_MSG_HEARTBEAT | (in[k] ? 0 : PRESENCE_MSG_NOT_PRESENT);
            if (strict && rc != want)
                FAIL("on_message %s -> %d, want %d", c, rc, want);
            if (!strict && (rc & ~3) != 0)
                FAIL("on_message %s -> %d", c, rc);
        } else if (op < 80) {
            /* state by room; now and then a big one (another size class) */
            int pad = tu_rnd(&rng) % 16 == 0 ? 300 : (int) (tu_rnd(&rng) % 40);
            snprintf(json, sizeof json, "{\"c\":\"%s\",\"n\":%lu,\"p\":\"%0*d\"}", c, g_op, pad, 0);
            const char *rl[] = {rooms[r]};
            rc = presence_set_state(p, rl, 1, NULL, 0, c, json);
            if (strict && rc != (int) (in[k] >> r & 1u))
                FAIL("set_state %s %s -> %d (%s)", rooms[r], c, rc, presence_strerror(rc));
            if (!strict && rc != 0 && rc != 1)
                FAIL("set_state %s %s -> %d (%s)", rooms[r], c, rc, presence_strerror(rc));
        } else if (op < 84) {
            snprintf(json, sizeof json, "{\"c\":\"%s\",\"g\":%d}", c, g);
            const char *gl[] = {groups[g]};
            rc = presence_set_state(p, NULL, 0, gl, 1, c, json);
            int want = gex[g] ? popcount32(gm[g] & in[k]) : PRESENCE_ENOGROUP;
            if (strict && rc != want)
                FAIL("set_state group %s %s -> %d (%s), want %d", groups[g], c, rc,
                     presence_strerror(rc), want);
            if (!strict && !plausible(rc))
                FAIL("set_state group %s %s -> %d (%s)", groups[g], c, rc, presence_strerror(rc));
        } else if (op < 89) {
            int r2 = (int) (tu_rnd(&rng) % NROOM), r3 = (int) (tu_rnd(&rng) % NROOM);
            const char *rl[] = {rooms[r], rooms[r2], rooms[r3]};
            size_t n = 1 + tu_rnd(&rng) % 3;
            uint32_t add = 0;
            for (size_t i = 0; i < n; i++)
                add |= 1u << (i == 0 ? r : i == 1 ? r2 : r3);
            rc = presence_group_add(p, groups[g], rl, n);
            int want = popcount32(add & ~gm[g]);
            if (strict && rc != want)
                FAIL("group_add %s -> %d (%s), want %d", groups[g], rc, presence_strerror(rc), want);
            if (!strict && !plausible(rc))
                FAIL("group_add %s -> %d (%s)", groups[g], rc, presence_strerror(rc));
            if (rc >= 0) {
                gm[g] |= add;
                gex[g] = true;
            }
        } else if (op < 92) {
            const char *rl[] = {rooms[r]};
            rc = presence_group_remove(p, groups[g], rl, 1);
            int want = gex[g] ? (int) (gm[g] >> r & 1u) : PRESENCE_ENOGROUP;
            if (strict && rc != want)
                FAIL("group_remove %s %s -> %d (%s), want %d", groups[g], rooms[r], rc,
                     presence_strerror(rc), want);
            if (!strict && !plausible(rc))
                FAIL("group_remove %s -> %d (%s)", groups[g], rc, presence_strerror(rc));
            gm[g] &= ~(1u << r);
        } else if (op < 94) {
            rc = presence_group_delete(p, groups[g]);
            if (strict && rc != (gex[g] ? 1 : 0))
                FAIL("group_delete %s -> %d (%s)", groups[g], rc, presence_strerror(rc));
            if (!strict && rc != 0 && rc != 1)
                FAIL("group_delete %s -> %d (%s)", groups[g], rc, presence_strerror(rc));
            gex[g] = false;
            gm[g] = 0;
        } else if (op < 97) {
            presence_strlist_t *l = NULL;
            rc = presence_group_list(p, groups[g], &l);
            if (strict && rc != (gex[g] ? 0 : PRESENCE_ENOGROUP))
                FAIL("group_list %s -> %d (%s)", groups[g], rc, presence_strerror(rc));
            if (rc == 0) {
                uint32_t seen = 0;
                for (size_t i = 0; i < l->count; i++) {
                    int rr = -1;
                    if (sscanf(l->items[i], "r%d", &rr) == 1 && rr >= 0 && rr < NROOM)
                        seen |= 1u << rr;
                    else
                        FAIL("group_list %s: stray room '%s'", groups[g], l->items[i]);
                }
                if (strict && (seen != gm[g] || l->count != (size_t) popcount32(gm[g]))) {
                    presence_strlist_free(l);
                    FAIL("group_list %s: rooms %#x, model %#x", groups[g], seen, gm[g]);
                }
                presence_strlist_free(l);
            }
        } else {
            presence_strlist_t *l = NULL;
            rc = presence_where_now(p, c, &l);
            if (rc != 0)
                FAIL("where_now %s -> %d (%s)", c, rc, presence_strerror(rc));
            uint32_t seen = 0;
            for (size_t i = 0; i < l->count; i++) {
                int rr = -1;
                if (sscanf(l->items[i], "r%d", &rr) == 1 && rr >= 0 && rr < NROOM)
                    seen |= 1u << rr;
            }
            size_t cnt = l->count;
            presence_strlist_free(l);
            if (strict && (seen != in[k] || cnt != (size_t) popcount32(in[k])))
                FAIL("where_now %s: rooms %#x, model %#x", c, seen, in[k]);
        }
        if (maint && g_op % maint == maint - 1) {
            rc = presence_maintain(p);
            if (rc < 0)
                FAIL("maintain -> %d (%s)", rc, presence_strerror(rc));
        }
        if ((g_op & 63) == 63) {
            struct timespec ts = {0, 20000}; /* let the others run (2 CPUs are common) */
            nanosleep(&ts, NULL);
        }
    }
    logline("X\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    /* Never outlive a parent that died without killing us. */
    alarm(60);
    presence_t *p;
    int rc = presence_open(argv[2], NULL, &p);
    if (rc) {
        fprintf(stderr, "helper_crash: open %s: %s\n", argv[2], presence_strerror(rc));
        return 2;
    }
    if (strcmp(argv[1], "work") == 0 && argc == 10) {
        rc = do_work(p, atoi(argv[3]), strtoull(argv[4], NULL, 10), strtoul(argv[5], NULL, 10),
                     (unsigned) atoi(argv[6]), argv[7], strtoull(argv[8], NULL, 10),
                     atoi(argv[9]) != 0);
    } else if (strcmp(argv[1], "mark") == 0 && argc == 4) {
        rc = presence_join(p, "mk", argv[3], NULL);
        if (rc != PRESENCE_JOINED) {
            fprintf(stderr, "helper_crash mark: join -> %d (%s)\n", rc, presence_strerror(rc));
            rc = 1;
        } else {
            rc = presence_leave(p, "mk", argv[3]) == 1 ? 0 : 1;
        }
    } else {
        rc = 2;
    }
    presence_close(p);
    return rc;
}
