/*
 * test_crash.c -- crash injection: worker processes doing random operations are
 * SIGKILLed at random moments and at every kill point of the library
 * (PRESENCE_TEST_KILL_AT=NAME:N, several N per name so the kill lands in
 * different states), and so is presence-reaper, mid-sweep and mid-reclamation.
 * After the kills of a round: recovery (presence_maintain a few times), then
 *   - presence_check: no invariant violated, no leaked record, counters equal
 *     what is listed;
 *   - the registry equals what the workers' logs say (a killed worker's last
 *     operation is the only uncertain one; its bound connections are gone);
 *   - connections that kept heartbeating with a long timeout are all present;
 *   - a subscriber made before the kills delivers the events of a process
 *     started after them (past lapping and a dead producer's gap).
 *
 * Children are exec'd (helper_crash, presence-reaper; never cmocka in a child);
 * the parent asserts on exit statuses. Every wait is bounded; every process
 * started is tracked by pid and killed by pid at the end.
 *
 * Environment:
 *   PRESENCE_CRASH_KILLS=N     kills to do (default 240, in well under 2 minutes)
 *   PRESENCE_TEST_SEED=N       reproduces the random choices (timing still varies)
 *   PRESENCE_CRASH_VERBOSE=1   one line per kill
 *   PRESENCE_CRASH_MODE=M      reaper: reaper rounds only; workers: worker rounds only;
 *                              random: worker rounds with random kills only
 * Names: segment pr-test-<pid>-crash, socket and logs /tmp/pr-test-<pid>-crash*.
 */
#include "internal.h"
#include "test_util.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#ifndef PRESENCE_REAPER
#    define PRESENCE_REAPER "presence-reaper"
#endif

/* ---- configuration ---------------------------------------------------------- */

#define NCONN        12 /* as in helper_crash.c */
#define NROOM        32
#define NGROUP       4
#define NKEEP        8    /* heartbeating connections that must survive everything */
#define KEEP_TMO_MS  5000 /* their timeout; touched every few ms */
#define GAP_ALLOW_MS 1500 /* a subscriber gets past a dead producer within this */
#define MAXINC       64   /* incarnations per round, at most */

static const char *const points[] = {"alloc",       "create_conn", "link",   "counter",
                                     "unlink",      "state_swap",  "retire", "ring_claim",
                                     "ring_commit", "reclaim",     "claim_pending", "members"};
#define NPOINTS 12
enum { P_RETIRE = 6, P_UNLINK = 4, P_RING_CLAIM = 7, P_RING_COMMIT = 8, P_RECLAIM = 9 };
static const int point_ns[] = {1, 2, 3, 5, 9, 17, 40, 100};
#define NNS ((int) (sizeof point_ns / sizeof point_ns[0]))

static char seg[64], sock_path[108], reaper_log[128], logdir[128];
static presence_t *P;
static bool verbose;
static const char *phase = "start"; /* what the parent is doing (for a long heartbeat gap) */

/* ---- small things ------------------------------------------------------------- */

static uint64_t rng;

static const char *helper_path(void)
{
    return tu_env_or("PRESENCE_HELPER_CRASH", PRESENCE_HELPER_CRASH);
}
static const char *reaper_path(void)
{
    return tu_env_or("PRESENCE_REAPER", PRESENCE_REAPER);
}
/* Starts @exe with @args (NULL-terminated, argv[1..]); PRESENCE_TEST_KILL_AT set
 * to @kill_at (or unset); stderr appended to @errf when not NULL. */
static pid_t spawn(const char *exe, const char *kill_at, const char *errf, const char *const *args)
{
    const char *argv[16];
    int n = 0;
    argv[n++] = exe;
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    const char *was = phase;
    phase = "starting a process";
    pid_t pid = fork();
    phase = was;
    if (pid == 0) {
        if (kill_at)
            setenv("PRESENCE_TEST_KILL_AT", kill_at, 1);
        else
            unsetenv("PRESENCE_TEST_KILL_AT");
        if (errf) {
            int fd = open(errf, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (fd >= 0)
                dup2(fd, 2);
        }
        execv(exe, (char *const *) argv);
        _exit(127);
    }
    if (pid > 0)
        tu_track(pid);
    return pid;
}
#define SPAWN(exe, kill_at, errf, ...) \
    spawn((exe), (kill_at), (errf), (const char *const[]){__VA_ARGS__, NULL})

static int decode(int st)
{
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The exit code (128 + signal) of @pid, -1 if it is still running. */
static int poll_code(pid_t pid)
{
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
        tu_untrack(pid);
        return decode(st);
    }
    if (r < 0) {
        tu_untrack(pid);
        return -2;
    }
    return -1;
}

static void keepers_touch(void);

/* The exit code of @pid within @ms, or -1 (it is then killed). */
static int wait_code(pid_t pid, unsigned ms)
{
    uint64_t end = tu_mono_ms() + ms;
    for (;;) {
        int c = poll_code(pid);
        if (c != -1)
            return c;
        if (tu_mono_ms() >= end) {
            int st;
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            tu_untrack(pid);
            return -1;
        }
        keepers_touch();
        tu_sleep_ms(1);
    }
}

/* ---- statistics ---------------------------------------------------------------- */

static struct {
    unsigned kills, w_point[NPOINTS], w_missed[NPOINTS], w_random;
    unsigned r_point[NPOINTS], r_missed[NPOINTS], r_random;
    unsigned rounds_w, rounds_r, segments, checks;
    unsigned violations, model_errors, ring_errors, keepers_lost, child_failures;
    unsigned failed_rounds;
    unsigned long events, lapped, slow_markers;
    uint64_t keep_max_gap, arena_max, limbo_max;
    uint32_t pres_max, conns_max;
} S;

static unsigned failures_total(void)
{
    return S.violations + S.model_errors + S.ring_errors + S.keepers_lost + S.child_failures;
}

/* What happened in the current round, printed when it fails. */
static char round_log[4096];
static void round_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void round_note(const char *fmt, ...)
{
    size_t n = strlen(round_log);
    if (n + 8 >= sizeof round_log)
        return;
    if (n) {
        strcpy(round_log + n, "; ");
        n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(round_log + n, sizeof round_log - n, fmt, ap);
    va_end(ap);
    if (verbose) {
        printf("#   %s\n", round_log + n);
        fflush(stdout);
    }
}

/* ---- the segment, keepers, subscription ---------------------------------------- */

static presence_conn_t keep_h[NKEEP];
static uint64_t keep_last;
static bool keepers_on;

static void keeper_rooms(int k, char *a, char *b)
{
    sprintf(a, "kr%d", k % 2);
    sprintf(b, "r%d", (k * 4) % NROOM);
}

static void keepers_join(void)
{
    for (int k = 0; k < NKEEP; k++) {
        char c[16], a[8], b[8];
        snprintf(c, sizeof c, "keep-%d", k);
        keeper_rooms(k, a, b);
        assert_true(presence_join_ex(P, a, c, NULL, KEEP_TMO_MS, 0, &keep_h[k]) >= 0);
        assert_true(presence_join_ex(P, b, c, NULL, KEEP_TMO_MS, 0, NULL) >= 0);
    }
    keep_last = tu_mono_ms();
    keepers_on = true;
}

/* Heartbeats (every 5 ms at most); a keeper found gone is a lost presence
 * unless the heartbeat gap exceeded its timeout. */
static void keepers_touch(void)
{
    if (!keepers_on)
        return;
    uint64_t now = tu_mono_ms();
    if (now - keep_last < 5)
        return;
    uint64_t gap = now - keep_last;
    if (gap > S.keep_max_gap)
        S.keep_max_gap = gap;
    if (gap > 400)
        printf("# (the parent did not heartbeat for %llu ms: %s)\n", (unsigned long long) gap,
               phase);
    for (int k = 0; k < NKEEP; k++) {
        int rc = presence_touch_handle(P, keep_h[k]);
        if (rc != 0) {
            printf("# keeper keep-%d lost (touch -> %d %s), heartbeat gap %llu ms (timeout %d)\n",
                   k, rc, presence_strerror(rc), (unsigned long long) gap, KEEP_TMO_MS);
            if (gap + 100 < KEEP_TMO_MS)
                S.keepers_lost++;
            keepers_on = false; /* re-joined with the next segment */
            return;
        }
    }
    keep_last = now;
}

static void sleep_touch(unsigned ms)
{
    uint64_t end = tu_mono_ms() + ms;
    while (tu_mono_ms() < end) {
        keepers_touch();
        tu_sleep_ms(1);
    }
}

static presence_sub_t *SUB;

/* Reads what is there (bounded), counting events and laps. */
static void drain(void)
{
    const char *was = phase;
    phase = "reading events";
    presence_event_t ev;
    for (int i = 0; i < 20000; i++) {
        int rc = presence_sub_next(SUB, &ev);
        if (rc == 1)
            S.events++;
        else if (rc == PRESENCE_ELAPPED)
            S.lapped++;
        else
            break;
    }
    phase = was;
}

static void segment_new(void)
{
    if (SUB)
        presence_sub_close(SUB);
    SUB = NULL;
    if (P)
        presence_close(P);
    P = NULL;
    presence_unlink(seg);
    presence_options_t o;
    presence_options_init(&o);
    o.flags = PRESENCE_CREATE | PRESENCE_EXCL;
    o.rooms = 64;
    o.connections = 512;
    o.presences = 2048;
    o.groups = 256;         /* group_add does not wait for reclamation as join does: */
    o.group_members = 4096; /* room for what the churn keeps in limbo */
    o.arena_bytes = 1u << 20;
    o.ring_entries = 4096; /* small: subscribers get lapped */
    o.readers = 128;
    o.procs = 64;
    assert_int_equal(presence_open(seg, &o, &P), 0);
    keepers_join();
    S.segments++;
}

/* ---- checks ---------------------------------------------------------------- */

/* White-box diagnostics for a violation message: who holds the blob. */
static void diag(const char *msg)
{
    unsigned long long ref;
    static const char *st_names[] = {"FREE", "CLAIMED", "LIVE", "DEAD", "RETIRED"};
    if (sscanf(msg, "blob %llu is referenced but not allocated", &ref) == 1) {
        const struct pr_header *h = P->h;
        for (unsigned kind = PR_K_ROOM; kind <= PR_K_GMEMBER; kind++)
            for (uint32_t i = 0; i < pr__kind_cap(P, kind); i++) {
                struct pr_rec *r = pr__rec(P, kind, i);
                uint32_t refs[2] = {0, 0};
                switch (kind) {
                case PR_K_ROOM:
                    refs[0] = pr__room(P, i)->name_blob;
                    break;
                case PR_K_CONN:
                    refs[0] = pr__conn(P, i)->name_blob;
                    refs[1] = pr__conn(P, i)->user_blob;
                    break;
                case PR_K_PRES:
                    refs[0] = pr__pres(P, i)->state_blob;
                    break;
                case PR_K_GROUP:
                    refs[0] = pr__group(P, i)->name_blob;
                    break;
                default:
                    refs[0] = pr__gmember(P, i)->name_blob;
                    break;
                }
                for (int j = 0; j < 2; j++)
                    if (refs[j] == ref) {
                        uint64_t w = r->state;
                        printf("#     held by kind %u index %u, state %s gen %u slot %u\n", kind, i,
                               PR_ST_STATE(w) < 5 ? st_names[PR_ST_STATE(w)] : "?", PR_ST_GEN(w),
                               PR_ST_SLOT(w));
                    }
            }
        for (uint32_t i = 0; i < h->cap_readers; i++)
            if (pr__reader(P, i)->owner && pr__reader(P, i)->inflight_blob == ref)
                printf("#     held in flight by reader slot %u\n", i);
    }
}

static bool recover_and_check(const char *when)
{
    for (int i = 0; i < 3; i++) {
        int rc = presence_maintain(P);
        if (rc < 0)
            printf("# maintain -> %d (%s)\n", rc, presence_strerror(rc));
        keepers_touch();
        tu_sleep_ms(1);
    }
    presence_strlist_t *v = NULL;
    int n = presence_check(P, &v);
    S.checks++;
    if (n != 0) {
        printf("# %d violation(s) %s:\n", n, when);
        for (size_t i = 0; v && i < v->count && i < 25; i++) {
            printf("#   %s\n", v->items[i]);
            diag(v->items[i]);
        }
        S.violations += n > 0 ? (unsigned) n : 1;
        /* Diagnostics: the reclamation state, then does more maintenance converge? */
        const struct pr_header *h = P->h;
        printf("#   needs_sweep %u, our suspects %zu (since epoch %llu), global epoch %llu, lease "
               "%llx, "
               "batches %u from %u\n",
               h->needs_sweep, P->nsweep, (unsigned long long) P->sweep_epoch,
               (unsigned long long) h->global_epoch, (unsigned long long) h->lease, h->nbatch,
               h->batch_first);
        for (uint32_t i = 0; i < h->cap_readers; i++)
            if (pr__reader(P, i)->owner)
                printf("#   reader slot %u: owner %llx epoch %llu\n", i,
                       (unsigned long long) pr__reader(P, i)->owner,
                       (unsigned long long) pr__reader(P, i)->epoch);
        for (int i = 0; i < 6; i++) {
            presence_maintain(P);
            tu_sleep_ms(2);
        }
        int n2 = presence_check(P, NULL);
        printf("#   after 6 more maintenance passes: %d violation(s)\n", n2);
    }
    presence_strlist_free(v);
    return n == 0;
}

/* One incarnation of helper_crash in the current round. */
struct inc {
    int inc;
    pid_t pid;
    bool alive, killed, strict;
    int code;
    char log[160];
};
static struct inc incs[MAXINC];
static int nincs;
static int next_inc;

/* Replays @in's log: rooms of each connection, and the rooms whose membership
 * the uncertain last operation may or may not have changed. */
static bool replay(const struct inc *in, uint32_t rooms[NCONN], uint32_t unsure[NCONN])
{
    memset(rooms, 0, NCONN * sizeof *rooms);
    memset(unsure, 0, NCONN * sizeof *unsure);
    FILE *f = fopen(in->log, "r");
    if (!f)
        return in->killed; /* killed before it opened its log: it did nothing */
    char line[200], op = 0;
    int pk = -1, pr = -1;
    bool pending = false;
    while (fgets(line, sizeof line, f)) {
        if (!strchr(line, '\n'))
            break; /* torn last line: the operation had not started */
        int a, k, r;
        char o;
        if (line[0] == 'B' && sscanf(line, "B %c i%d-c%d r%d", &o, &a, &k, &r) >= 3) {
            if (a != in->inc || k < 0 || k >= NCONN)
                continue;
            op = o;
            pk = k;
            pr = (o == 'A') ? -1 : r;
            pending = true;
        } else if (line[0] == 'E' && pending) {
            if (op == 'J' && pr >= 0 && pr < NROOM)
                rooms[pk] |= 1u << pr;
            else if (op == 'L' && pr >= 0 && pr < NROOM)
                rooms[pk] &= ~(1u << pr);
            else if (op == 'A')
                rooms[pk] = 0;
            pending = false;
        }
    }
    fclose(f);
    if (pending) {
        if ((op == 'J' || op == 'L') && pr >= 0 && pr < NROOM)
            unsure[pk] |= 1u << pr;
        else if (op == 'A')
            unsure[pk] |= rooms[pk];
    }
    return true;
}

/* The registry against the logs (strict rounds) and the keepers. Returns the
 * number of mismatches. */
static int verify_model(bool strict)
{
    const char *rooms[NROOM + 3];
    char names[NROOM][8];
    int n = 0;
    for (int r = 0; r < NROOM; r++) {
        snprintf(names[r], sizeof names[r], "r%d", r);
        rooms[n++] = names[r];
    }
    rooms[n++] = "kr0";
    rooms[n++] = "kr1";
    rooms[n++] = "mk";
    presence_here_now_t *hn = NULL;
    int rc = presence_here_now(P, rooms, (size_t) n, NULL, 0,
                               PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE, 0, 0, &hn);
    if (rc != 0) {
        printf("# here_now -> %d (%s)\n", rc, presence_strerror(rc));
        return 1;
    }
    /* actual[inc slot][conn] = rooms */
    static uint32_t actual[MAXINC][NCONN];
    memset(actual, 0, sizeof actual);
    uint32_t keep_seen[NKEEP] = {0};
    int bad = 0;
    for (size_t i = 0; i < hn->nrooms; i++) {
        const presence_room_result_t *rr = &hn->rooms[i];
        int r = -1;
        bool kroom = strncmp(rr->name, "kr", 2) == 0;
        if (rr->name[0] == 'r')
            sscanf(rr->name, "r%d", &r);
        if (rr->occupancy != rr->noccupants) {
            printf("# room %s: occupancy %u, %zu listed\n", rr->name, rr->occupancy,
                   rr->noccupants);
            bad++;
        }
        for (size_t j = 0; j < rr->noccupants; j++) {
            const char *c = rr->occupants[j].conn;
            int a, k;
            if (sscanf(c, "keep-%d", &k) == 1 && k >= 0 && k < NKEEP) {
                keep_seen[k] |= kroom ? 1u : (r >= 0 ? 2u : 4u);
                continue;
            }
            if (sscanf(c, "i%d-c%d", &a, &k) != 2 || k < 0 || k >= NCONN || r < 0) {
                printf("# room %s: stray occupant %s\n", rr->name, c);
                bad++;
                continue;
            }
            int slot = -1;
            for (int s = 0; s < nincs; s++)
                if (incs[s].inc == a)
                    slot = s;
            if (slot < 0) {
                printf("# room %s: occupant %s of no incarnation of this round\n", rr->name, c);
                bad++;
                continue;
            }
            actual[slot][k] |= 1u << r;
            const char *st = rr->occupants[j].state;
            if (st) {
                char want[48];
                snprintf(want, sizeof want, "{\"c\":\"%s\"", c);
                if (strncmp(st, want, strlen(want)) != 0) {
                    printf("# room %s: %s has state %s\n", rr->name, c, st);
                    bad++;
                }
            }
        }
    }
    presence_here_now_free(hn);
    if (keepers_on)
        for (int k = 0; k < NKEEP; k++)
            if (keep_seen[k] != 3u) {
                printf("# keeper keep-%d: rooms seen %#x (want both)\n", k, keep_seen[k]);
                S.keepers_lost++;
            }
    for (int s = 0; s < nincs; s++) {
        uint32_t want[NCONN], unsure[NCONN];
        if (!strict) {
            /* loose rounds: everything of theirs expired or died with them */
            for (int k = 0; k < NCONN; k++)
                if (actual[s][k]) {
                    printf("# i%d-c%d still in rooms %#x after expiry\n", incs[s].inc, k,
                           actual[s][k]);
                    bad++;
                }
            continue;
        }
        if (!replay(&incs[s], want, unsure)) {
            printf("# no log for i%d\n", incs[s].inc);
            bad++;
            continue;
        }
        for (int k = 0; k < NCONN; k++) {
            uint32_t w = k % 2 == 0 ? 0 : want[k]; /* bound: gone with their process */
            uint32_t m = k % 2 == 0 ? ~0u : ~unsure[k];
            if ((actual[s][k] & m) != (w & m)) {
                printf("# i%d-c%d (%s, %s): rooms %#x, log says %#x (uncertain %#x)\n", incs[s].inc,
                       k, k % 2 == 0 ? "bound" : "unbound", incs[s].killed ? "killed" : "exited",
                       actual[s][k], w, unsure[k]);
                bad++;
            }
        }
    }
    return bad;
}

/* A process started now produces events; the subscription made before the
 * kills must deliver them (after a lap or a dead producer's gap). */
static bool ring_marker(int round)
{
    char conn[32];
    snprintf(conn, sizeof conn, "mk-%d", round);
    pid_t pid = SPAWN(helper_path(), NULL, NULL, "mark", seg, conn);
    int code = wait_code(pid, 5000);
    if (code != 0) {
        printf("# marker process -> %d\n", code);
        S.child_failures++;
        return false;
    }
    uint64_t t0 = tu_mono_ms(), end = t0 + GAP_ALLOW_MS;
    presence_event_t ev;
    unsigned long ev0 = S.events, lap0 = S.lapped;
    while (tu_mono_ms() < end) {
        int rc = presence_sub_next(SUB, &ev);
        if (rc == 1) {
            S.events++;
            if (ev.type == PRESENCE_EV_JOIN && strcmp(ev.conn, conn) == 0 &&
                strcmp(ev.room, "mk") == 0) {
                if (tu_mono_ms() - t0 > 400)
                    S.slow_markers++;
                return true;
            }
        } else if (rc == PRESENCE_ELAPPED) {
            S.lapped++;
        } else if (rc == 0) {
            keepers_touch();
            tu_sleep_ms(2);
        } else {
            printf("# sub_next -> %d (%s)\n", rc, presence_strerror(rc));
            break;
        }
    }
    presence_stats_t st;
    presence_stats(P, &st);
    printf("# subscriber did not deliver %s's join within %d ms (position %llu, tail %llu, "
           "%lu events and %lu laps meanwhile)\n",
           conn, GAP_ALLOW_MS, (unsigned long long) presence_sub_position(SUB),
           (unsigned long long) st.ring_tail, S.events - ev0, S.lapped - lap0);
    S.ring_errors++;
    return false;
}

/* Leaves what the round's workers left and deletes their groups. */
static void round_cleanup(void)
{
    for (int s = 0; s < nincs; s++) {
        for (int k = 0; k < NCONN; k++) {
            char c[32];
            snprintf(c, sizeof c, "i%d-c%d", incs[s].inc, k);
            presence_leave_all(P, c);
        }
        for (int g = 0; g < NGROUP; g++) {
            char gn[32];
            snprintf(gn, sizeof gn, "g%d-%d", incs[s].inc, g);
            presence_group_delete(P, gn);
        }
        unlink(incs[s].log);
    }
    presence_prune_rooms(P);
}

/* ---- workers -------------------------------------------------------------------- */

enum fate { F_SURVIVE, F_POINT, F_RANDOM };
struct plan {
    enum fate fate;
    int point, n;
    unsigned delay_ms; /* F_RANDOM: kill this long after the start */
};
static unsigned det_counter;

/* The next victim's fate: kill points in turn (each with several N), one kill
 * in three at a random moment. */
static int mode_random_only; /* PRESENCE_CRASH_MODE=random: no kill points */

static struct plan next_plan(void)
{
    struct plan pl = {F_RANDOM, -1, 0, 0};
    if (mode_random_only || tu_rnd(&rng) % 3 == 0) {
        pl.delay_ms = tu_rnd(&rng) % 40;
        return pl;
    }
    unsigned d = det_counter++;
    pl.fate = F_POINT;
    pl.point = (int) (d % NPOINTS);
    pl.n = point_ns[(d / NPOINTS + tu_rnd(&rng) % 2) % NNS];
    return pl;
}

struct running {
    int slot; /* in incs[] */
    struct plan pl;
    uint64_t t_start;
};

static int start_worker(const struct plan *pl, bool strict, unsigned timeout_ms)
{
    if (nincs >= MAXINC)
        return -1;
    struct inc *in = &incs[nincs];
    memset(in, 0, sizeof *in);
    in->inc = next_inc++;
    in->strict = strict;
    snprintf(in->log, sizeof in->log, "%s-i%d.log", logdir, in->inc);
    unlink(in->log);
    char a_inc[16], a_seed[24], a_maint[16], a_tmo[16], ka[48];
    snprintf(a_inc, sizeof a_inc, "%d", in->inc);
    snprintf(a_seed, sizeof a_seed, "%u", tu_rnd(&rng));
    unsigned maint =
        strict ? (unsigned[]){16, 64, 256}[tu_rnd(&rng) % 3] : (tu_rnd(&rng) % 2 ? 0 : 512);
    if (pl->fate == F_POINT && pl->point == P_RECLAIM)
        maint = 8; /* reach the reclaim kill point soon */
    snprintf(a_maint, sizeof a_maint, "%u", maint);
    snprintf(a_tmo, sizeof a_tmo, "%u", timeout_ms);
    const char *kill_at = NULL;
    if (pl->fate == F_POINT) {
        snprintf(ka, sizeof ka, "%s:%d", points[pl->point], pl->n);
        kill_at = ka;
    }
    in->pid = SPAWN(helper_path(), kill_at, NULL, "work", seg, a_inc, a_seed, "100000000", a_maint,
                    in->log, a_tmo, strict ? "1" : "0");
    in->alive = in->pid > 0;
    nincs++;
    return nincs - 1;
}

static void note_kill_worker(struct inc *in, const struct plan *pl, bool by_point, unsigned ms)
{
    in->killed = true;
    S.kills++;
    if (by_point) {
        S.w_point[pl->point]++;
        round_note("i%d killed at %s:%d after %u ms", in->inc, points[pl->point], pl->n, ms);
    } else {
        S.w_random++;
        if (pl->fate == F_POINT) {
            S.w_missed[pl->point]++;
            round_note("i%d did not reach %s:%d in %u ms: killed at random", in->inc,
                       points[pl->point], pl->n, ms);
        } else {
            round_note("i%d killed at random after %u ms", in->inc, ms);
        }
    }
}

/* Stops the live workers (SIGUSR1: they finish the operation at hand). */
static void stop_workers(void)
{
    for (int s = 0; s < nincs; s++)
        if (incs[s].alive)
            kill(incs[s].pid, SIGUSR1);
    for (int s = 0; s < nincs; s++) {
        if (!incs[s].alive)
            continue;
        int code = -1;
        uint64_t end = tu_mono_ms() + 5000;
        while ((code = poll_code(incs[s].pid)) == -1 && tu_mono_ms() < end)
            sleep_touch(1);
        if (code == -1) {
            printf("# i%d did not stop within 5 s (a deadlock?): killed\n", incs[s].inc);
            kill(incs[s].pid, SIGKILL);
            waitpid(incs[s].pid, NULL, 0);
            tu_untrack(incs[s].pid);
            S.child_failures++;
            incs[s].killed = true;
        } else if (code != 0 && code != 128 + SIGUSR1) {
            printf("# i%d exited with %d\n", incs[s].inc, code);
            S.child_failures++;
            incs[s].killed = code >= 128;
        } else if (code == 128 + SIGUSR1) {
            incs[s].killed = true; /* stopped before it set its handler: like a kill */
        }
        incs[s].alive = false;
        incs[s].code = code;
    }
}

static unsigned round_failures0; /* failures_total() when the round began */

/* Checks a round; returns whether it was clean. */
static bool round_end(int round, bool strict)
{
    unsigned before = round_failures0;
    phase = "recovery and check";
    recover_and_check("after the kills and recovery");
    presence_stats_t st;
    presence_stats(P, &st);
    S.arena_max = st.arena_used > S.arena_max ? st.arena_used : S.arena_max;
    S.limbo_max = st.limbo > S.limbo_max ? st.limbo : S.limbo_max;
    S.pres_max = st.presences > S.pres_max ? st.presences : S.pres_max;
    S.conns_max = st.connections > S.conns_max ? st.connections : S.conns_max;
    int bad = verify_model(strict);
    if (bad) {
        printf("# %d model mismatch(es)\n", bad);
        S.model_errors += (unsigned) bad;
    }
    phase = "ring marker";
    ring_marker(round);
    phase = "cleanup";
    round_cleanup();
    recover_and_check("after the round's cleanup");
    phase = "between rounds";
    bool ok = failures_total() == before;
    if (!ok) {
        S.failed_rounds++;
        printf("# round %d FAILED (%s); what happened:\n#   %s\n", round,
               strict ? "workers" : "reaper", round_log);
    }
    return ok;
}

static bool worker_round(int round)
{
    round_log[0] = '\0';
    nincs = 0;
    S.rounds_w++;
    round_failures0 = failures_total();
    phase = "worker round";
    assert_int_equal(presence_subscribe(P, PRESENCE_SEQ_NOW, NULL, &SUB), 0);
    int nw = 2 + (int) (tu_rnd(&rng) % 2), kills_wanted = 2 + (int) (tu_rnd(&rng) % 3), kills = 0;
    struct running victim = {-1, {F_SURVIVE, -1, 0, 0}, 0};
    for (int i = 0; i < nw - 1; i++) {
        struct plan sv = {F_SURVIVE, -1, 0, 0};
        start_worker(&sv, true, 0);
    }
    victim.pl = next_plan();
    victim.slot = start_worker(&victim.pl, true, 0);
    victim.t_start = tu_mono_ms();
    while (kills < kills_wanted && victim.slot >= 0) {
        drain();
        keepers_touch();
        struct inc *v = &incs[victim.slot];
        unsigned ms = (unsigned) (tu_mono_ms() - victim.t_start);
        int code = poll_code(v->pid);
        bool dead = false;
        if (code == 128 + SIGKILL) {
            note_kill_worker(v, &victim.pl, victim.pl.fate == F_POINT, ms);
            dead = true;
        } else if (code >= 0) {
            printf("# i%d (victim) exited with %d\n", v->inc, code);
            S.child_failures++;
            dead = true;
        } else if ((victim.pl.fate == F_RANDOM && ms >= victim.pl.delay_ms) ||
                   (victim.pl.fate == F_POINT && ms >= 2000)) {
            kill(v->pid, SIGKILL);
            waitpid(v->pid, NULL, 0);
            tu_untrack(v->pid);
            note_kill_worker(v, &victim.pl, false, ms);
            dead = true;
        }
        for (int s = 0; s < nincs; s++) /* survivors must not die */
            if (s != victim.slot && incs[s].alive && (code = poll_code(incs[s].pid)) != -1) {
                printf("# i%d (survivor) exited with %d\n", incs[s].inc, code);
                S.child_failures++;
                incs[s].alive = false;
                incs[s].killed = code >= 128;
            }
        if (dead) {
            v->alive = false;
            kills++;
            if (kills < kills_wanted) {
                victim.pl = next_plan();
                victim.slot = start_worker(&victim.pl, true, 0);
                victim.t_start = tu_mono_ms();
            }
            continue;
        }
        tu_sleep_ms(1);
    }
    sleep_touch(2 + tu_rnd(&rng) % 20); /* the survivors run on (and maintain) after the kill */
    phase = "stopping workers";
    stop_workers();
    bool ok = round_end(round, true);
    presence_sub_close(SUB);
    SUB = NULL;
    return ok;
}

/* ---- the reaper --------------------------------------------------------------------- */

static pid_t start_reaper(const char *kill_at)
{
    return SPAWN(reaper_path(), kill_at, reaper_log, "-s", seg, "--sweep-ms", "20", "--socket",
                 sock_path);
}

static bool reaper_round(int round)
{
    round_log[0] = '\0';
    nincs = 0;
    S.rounds_r++;
    round_failures0 = failures_total();
    phase = "reaper round";
    assert_int_equal(presence_subscribe(P, PRESENCE_SEQ_NOW, NULL, &SUB), 0);
    int nw = 2 + (int) (tu_rnd(&rng) % 2), kills_wanted = 2 + (int) (tu_rnd(&rng) % 3);
    for (int i = 0; i < nw; i++) {
        struct plan sv = {F_SURVIVE, -1, 0, 0};
        start_worker(&sv, false, 300); /* short timeouts: the reaper expires them */
    }
    for (int kill_no = 0; kill_no < kills_wanted; kill_no++) {
        int point = -1, n = 0;
        unsigned delay = 0;
        unsigned x = tu_rnd(&rng) % 10;
        if (x < 5) {
            point = P_RECLAIM;
            n = 1 + (int) (tu_rnd(&rng) % 12);
        } else if (x < 7) {
            static const int mid[] = {P_RETIRE, P_UNLINK, P_RING_CLAIM, P_RING_COMMIT};
            point = mid[tu_rnd(&rng) % 4];
            n = 1 + (int) (tu_rnd(&rng) % 8);
        } else {
            delay = 5 + tu_rnd(&rng) % 300;
        }
        char ka[48];
        if (point >= 0)
            snprintf(ka, sizeof ka, "%s:%d", points[point], n);
        uint64_t t0 = tu_mono_ms();
        pid_t rp = start_reaper(point >= 0 ? ka : NULL);
        int code = -1;
        for (;;) {
            drain();
            keepers_touch();
            unsigned ms = (unsigned) (tu_mono_ms() - t0);
            if ((code = poll_code(rp)) != -1)
                break;
            if ((point < 0 && ms >= delay) || (point >= 0 && ms >= 3000)) {
                kill(rp, SIGKILL);
                waitpid(rp, NULL, 0);
                tu_untrack(rp);
                code = 128 + SIGKILL;
                if (point >= 0) {
                    S.r_missed[point]++;
                    round_note("reaper did not reach %s:%d in %u ms: killed", points[point], n, ms);
                    point = -2;
                }
                break;
            }
            tu_sleep_ms(1);
        }
        unsigned ms = (unsigned) (tu_mono_ms() - t0);
        if (code != 128 + SIGKILL) {
            printf("# reaper exited with %d (log %s)\n", code, reaper_log);
            S.child_failures++;
            continue;
        }
        S.kills++;
        if (point >= 0) {
            S.r_point[point]++;
            round_note("reaper killed at %s:%d after %u ms", points[point], n, ms);
        } else {
            S.r_random++;
            if (point == -1)
                round_note("reaper killed at random after %u ms", ms);
        }
        for (int s = 0; s < nincs; s++) {
            int c;
            if (incs[s].alive && (c = poll_code(incs[s].pid)) != -1) {
                printf("# i%d (loose worker) exited with %d\n", incs[s].inc, c);
                S.child_failures++;
                incs[s].alive = false;
            }
        }
    }
    /* A reaper that stays: it takes over, the workers stop, it expires what they
     * left; then it is stopped cleanly and the segment checked. */
    phase = "final reaper";
    pid_t rp = start_reaper(NULL);
    sleep_touch(50 + tu_rnd(&rng) % 100);
    drain();
    stop_workers();
    uint64_t end = tu_mono_ms() + 4000;
    presence_stats_t st;
    for (;;) {
        drain();
        sleep_touch(10);
        presence_stats(P, &st);
        if (st.presences == 2 * NKEEP || tu_mono_ms() > end)
            break;
    }
    if (st.presences != 2 * NKEEP)
        printf("# the restarted reaper left %u presences (want the %d of the keepers)\n",
               st.presences, 2 * NKEEP);
    phase = "stopping the reaper";
    kill(rp, SIGTERM);
    int code = wait_code(rp, 5000);
    if (code != 0) {
        printf("# reaper stopped with %d (log %s)\n", code, reaper_log);
        S.child_failures++;
    }
    bool ok = round_end(round, false);
    presence_sub_close(SUB);
    SUB = NULL;
    return ok;
}

/* ---- tests ------------------------------------------------------------------------ */

static uint64_t test_seed(void)
{
    const char *e = getenv("PRESENCE_TEST_SEED");
    uint64_t s = e ? strtoull(e, NULL, 10) : (uint64_t) time(NULL) ^ ((uint64_t) getpid() << 20);
    printf("# seed %llu (PRESENCE_TEST_SEED to reproduce)\n", (unsigned long long) s);
    return s;
}

static int setup(void **state)
{
    (void) state;
    unsetenv("PRESENCE_TEST_KILL_AT"); /* never for this process */
    snprintf(seg, sizeof seg, "pr-test-%d-crash", (int) getpid());
    snprintf(sock_path, sizeof sock_path, "/tmp/pr-test-%d-crash.sock", (int) getpid());
    snprintf(reaper_log, sizeof reaper_log, "/tmp/pr-test-%d-crash-reaper.log", (int) getpid());
    snprintf(logdir, sizeof logdir, "/tmp/pr-test-%d-crash", (int) getpid());
    verbose = getenv("PRESENCE_CRASH_VERBOSE") != NULL;
    memset(&S, 0, sizeof S);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int teardown(void **state)
{
    (void) state;
    tu_kill_children();
    if (SUB)
        presence_sub_close(SUB);
    SUB = NULL;
    if (P)
        presence_close(P);
    P = NULL;
    presence_unlink(seg);
    unlink(sock_path);
    for (int s = 0; s < nincs; s++)
        unlink(incs[s].log);
    if (failures_total() == 0)
        unlink(reaper_log);
    return 0;
}

static void print_summary(double secs, uint64_t seed)
{
    printf("# crash: %u kills in %.1f s (seed %llu)\n", S.kills, secs, (unsigned long long) seed);
    printf("#   worker kill points:");
    for (int i = 0; i < NPOINTS; i++)
        printf(" %s %u%s", points[i], S.w_point[i], S.w_missed[i] ? "" : "");
    printf("; at random %u\n", S.w_random);
    printf("#   kill points not reached in time (then killed at random):");
    unsigned miss = 0;
    for (int i = 0; i < NPOINTS; i++)
        if (S.w_missed[i]) {
            printf(" %s %u", points[i], S.w_missed[i]);
            miss++;
        }
    printf("%s\n", miss ? "" : " none");
    printf("#   reaper kill points:");
    for (int i = 0; i < NPOINTS; i++)
        if (S.r_point[i] || S.r_missed[i])
            printf(" %s %u (missed %u)", points[i], S.r_point[i], S.r_missed[i]);
    printf("; at random %u\n", S.r_random);
    printf("#   rounds %u (workers %u, reaper %u), segments %u, checks %u\n",
           S.rounds_w + S.rounds_r, S.rounds_w, S.rounds_r, S.segments, S.checks);
    printf("#   events read %lu, laps %lu, markers delivered after > 400 ms %lu, "
           "longest heartbeat gap %llu ms\n",
           S.events, S.lapped, S.slow_markers, (unsigned long long) S.keep_max_gap);
    printf("#   after recovery at most: %u presences, %u connections, %llu arena bytes, "
           "%llu in limbo\n",
           S.pres_max, S.conns_max, (unsigned long long) S.arena_max,
           (unsigned long long) S.limbo_max);
    printf("#   violations %u, model mismatches %u, ring failures %u, keepers lost %u, "
           "child failures %u (failed rounds %u)\n",
           S.violations, S.model_errors, S.ring_errors, S.keepers_lost, S.child_failures,
           S.failed_rounds);
    fflush(stdout);
}

/* The harness: worker rounds and reaper rounds until the kill count is reached. */
static void test_crash_harness(void **state)
{
    (void) state;
    uint64_t seed = test_seed();
    rng = seed * 0x9E3779B97F4A7C15ull + 0x1234567;
    if (rng == 0)
        rng = 1;
    const char *e = getenv("PRESENCE_CRASH_KILLS");
    unsigned target = e ? (unsigned) strtoul(e, NULL, 10) : 240;
    /* Bounded in time under ctest; an explicit count runs as long as it takes. */
    uint64_t budget_ms = e ? UINT64_MAX : 140000;
    /* PRESENCE_CRASH_MODE=reaper|workers|random: only reaper rounds, only
     * worker rounds, or worker rounds with random kills only (to chase a bug). */
    const char *mode = getenv("PRESENCE_CRASH_MODE");
    mode_random_only = mode && strcmp(mode, "random") == 0;
    printf("# %u kills wanted%s%s\n", target, mode ? ", mode " : "", mode ? mode : "");
    uint64_t t0 = tu_mono_ms();
    int round = 0, on_segment = 0;
    bool fresh = true;
    while (S.kills < target && tu_mono_ms() - t0 < budget_ms && S.failed_rounds < 10) {
        if (fresh || on_segment >= 12 || !keepers_on) {
            segment_new();
            on_segment = 0;
        }
        unsigned reaper_kills = S.r_random;
        for (int i = 0; i < NPOINTS; i++)
            reaper_kills += S.r_point[i];
        /* about one kill in five is the reaper's */
        bool reaper = reaper_kills * 5 < S.kills;
        if (mode && strcmp(mode, "reaper") == 0)
            reaper = true;
        else if (mode && (strcmp(mode, "workers") == 0 || strcmp(mode, "random") == 0))
            reaper = false;
        bool ok = reaper ? reaper_round(round) : worker_round(round);
        fresh = !ok; /* a broken segment is not worth continuing */
        round++;
        on_segment++;
        if (round % 20 == 0 && !verbose) {
            printf("# ... %u kills, %.1f s\n", S.kills, (double) (tu_mono_ms() - t0) / 1000.0);
            fflush(stdout);
        }
    }
    double secs = (double) (tu_mono_ms() - t0) / 1000.0;
    print_summary(secs, seed);
    assert_int_equal(failures_total(), 0);
    assert_true(S.kills >= target);
}

/* A producer killed between claim and commit while nobody else produces: the
 * next process's events still arrive (the gap is skipped after its timeout). */
static void test_ring_dead_producer_quiet(void **state)
{
    (void) state;
    uint64_t seed = test_seed();
    rng = seed | 1;
    segment_new();
    static const int pts[] = {P_RING_CLAIM, P_RING_COMMIT};
    static const int ns[] = {1, 4, 25};
    int round = 1000;
    for (size_t i = 0; i < 2; i++) {
        for (size_t j = 0; j < 3; j++, round++) {
            round_log[0] = '\0';
            nincs = 0;
            assert_int_equal(presence_subscribe(P, PRESENCE_SEQ_NOW, NULL, &SUB), 0);
            struct plan pl = {F_POINT, pts[i], ns[j], 0};
            int slot = start_worker(&pl, true, 0);
            assert_true(slot >= 0);
            int code = wait_code(incs[slot].pid, 5000);
            incs[slot].alive = false;
            incs[slot].killed = true;
            printf("# %s:%d -> exit %d\n", points[pts[i]], ns[j], code);
            assert_int_equal(code, 128 + SIGKILL);
            S.kills++;
            S.w_point[pts[i]]++;
            uint64_t t0 = tu_mono_ms();
            bool ok = ring_marker(round);
            printf("#   marker %s after %llu ms\n", ok ? "delivered" : "NOT delivered",
                   (unsigned long long) (tu_mono_ms() - t0));
            recover_and_check("after a dead producer");
            verify_model(true);
            round_cleanup();
            presence_sub_close(SUB);
            SUB = NULL;
        }
    }
    assert_int_equal(failures_total(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ring_dead_producer_quiet, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_harness, setup, teardown),
    };
    return cmocka_run_group_tests_name("crash", tests, NULL, NULL);
}
