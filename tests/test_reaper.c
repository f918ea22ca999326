/*
 * test_reaper.c -- presence-reaper and the event ring across processes: expiry
 * (segment max_age and per-connection timeouts), owner_died for a killed worker's
 * bound connections (< 1 s) while its unbound ones survive a restart, the reaper
 * killed and restarted under load, a second reaper refused, a libuv subscriber in
 * another process receiving every event in order, a stalled subscriber lapped
 * without slowing producers, producers killed between claim and commit, one-hop
 * wake-ups (a producer writes the subscriber's eventfd itself: they arrive with
 * the reaper SIGSTOPped), no lost wake-up under bursts from several producers to
 * several sleeping subscribers, a killed subscriber's eventfd written no more,
 * and the wake-up latency figures.
 *
 * Children are exec'd: presence-reaper itself and helper_events (never cmocka in a
 * child); the parent asserts on their exit statuses and output. Every wait is
 * bounded; every process started is tracked by pid and killed by pid in teardown.
 * Names: segment pr-test-<pid>-<test>, socket /tmp/pr-test-<pid>-<test>.sock.
 */
#include "internal.h"
#include "test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#ifndef PRESENCE_REAPER
#    define PRESENCE_REAPER "presence-reaper"
#endif

static char seg[64], sock_path[108], err_path[128];
static presence_t *P;       /* the parent's attachment */
static presence_sub_t *SUB; /* the parent's subscription */
static uint64_t last_seq;   /* the last seq it returned (UINT64_MAX: none) */

/* ---- processes ------------------------------------------------------------ */

static const char *helper_path(void)
{
    return tu_env_or("PRESENCE_HELPER_EVENTS", PRESENCE_HELPER_EVENTS);
}

static const char *reaper_path(void)
{
    return tu_env_or("PRESENCE_REAPER", PRESENCE_REAPER);
}

struct child {
    pid_t pid;
    int in;  /* its stdin (write end), -1 if not piped */
    int out; /* its stdout (read end), -1 if not piped */
};

enum { PIPE_IN = 1, PIPE_OUT = 2 };

/* Starts @exe with the NULL-terminated @args (argv[1..]), extra environment
 * entries @env ("K=V", NULL-terminated, may be NULL); stderr appended to @errf
 * when not NULL. */
static struct child spawn_v(const char *exe, const char *const *env, unsigned pipes,
                            const char *errf, const char *const *args)
{
    struct child c = {-1, -1, -1};
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    if ((pipes & PIPE_IN) && pipe2(in, O_CLOEXEC) != 0)
        return c;
    if ((pipes & PIPE_OUT) && pipe2(out, O_CLOEXEC) != 0)
        return c;
    const char *argv[24];
    int n = 0;
    argv[n++] = exe;
    for (int i = 0; args[i] && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        for (int i = 0; env && env[i]; i++)
            putenv((char *) env[i]);
        if (in[0] >= 0)
            dup2(in[0], 0);
        if (out[1] >= 0)
            dup2(out[1], 1);
        if (errf) {
            int fd = open(errf, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (fd >= 0)
                dup2(fd, 2);
        }
        execv(exe, (char *const *) argv);
        _exit(127);
    }
    if (in[0] >= 0)
        close(in[0]);
    if (out[1] >= 0)
        close(out[1]);
    c.pid = pid;
    c.in = in[1];
    c.out = out[0];
    tu_track(pid);
    return c;
}

#define SPAWN(exe, env, pipes, errf, ...) \
    spawn_v((exe), (env), (pipes), (errf), (const char *const[]){__VA_ARGS__, NULL})
#define HELPER(env, pipes, ...) SPAWN(helper_path(), (env), (pipes), NULL, __VA_ARGS__)

/* Exit code of @pid (128 + signal when killed), or -1 when it did not end within
 * @timeout_ms (it is then killed). */
static int wait_code(pid_t pid, unsigned timeout_ms)
{
    uint64_t end = tu_mono_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            tu_untrack(pid);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (r < 0) {
            tu_untrack(pid);
            return -2;
        }
        if (tu_mono_ms() >= end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            tu_untrack(pid);
            printf("# pid %d did not finish in %u ms: killed\n", (int) pid, timeout_ms);
            return -1;
        }
        tu_sleep_ms(2);
    }
}

/* One line of @fd (without the newline) within @timeout_ms; 0 or -1. */
static int read_line(int fd, char *buf, size_t n, unsigned timeout_ms)
{
    uint64_t end = tu_mono_ms() + timeout_ms;
    size_t len = 0;
    for (;;) {
        uint64_t now = tu_mono_ms();
        if (now >= end)
            return -1;
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, (int) (end - now)) != 1)
            continue;
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r <= 0)
            return -1;
        if (ch == '\n') {
            buf[len] = '\0';
            return 0;
        }
        if (len + 1 < n)
            buf[len++] = ch;
    }
}

/* Reads lines until one starts with @prefix; 0 or -1. */
static int expect_line(int fd, const char *prefix, char *buf, size_t n, unsigned timeout_ms)
{
    uint64_t end = tu_mono_ms() + timeout_ms;
    while (tu_mono_ms() < end) {
        if (read_line(fd, buf, n, (unsigned) (end - tu_mono_ms() + 1)) != 0)
            return -1;
        if (strncmp(buf, prefix, strlen(prefix)) == 0)
            return 0;
        printf("# child: %s\n", buf);
    }
    return -1;
}

/* ---- the reaper ------------------------------------------------------------ */

static bool socket_answers(void)
{
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, sock_path, strlen(sock_path));
    bool ok = s >= 0 && connect(s, (struct sockaddr *) &sa, sizeof sa) == 0;
    if (s >= 0)
        close(s);
    return ok;
}

static int32_t reaper_pid_now(void)
{
    presence_stats_t st;
    return presence_stats(P, &st) == 0 ? st.reaper_pid : -1;
}

/* Starts presence-reaper on the test segment (a sweep every @sweep_ms); returns
 * once it has claimed the segment and answers on its socket; *claim_ms (if not
 * NULL) receives how long that took. */
static pid_t start_reaper_every(uint64_t *claim_ms, const char *sweep_ms)
{
    uint64_t t0 = tu_mono_ms();
    struct child c = SPAWN(reaper_path(), NULL, 0, err_path, "-s", seg, "--sweep-ms", sweep_ms,
                           "--socket", sock_path, "-v");
    assert_true(c.pid > 0);
    uint64_t end = t0 + 3000;
    while (tu_mono_ms() < end) {
        if (reaper_pid_now() == c.pid && socket_answers()) {
            if (claim_ms)
                *claim_ms = tu_mono_ms() - t0;
            return c.pid;
        }
        int st;
        if (waitpid(c.pid, &st, WNOHANG) == c.pid) {
            tu_untrack(c.pid);
            fail_msg("presence-reaper exited at start (status %d)", st);
        }
        tu_sleep_ms(2);
    }
    fail_msg("presence-reaper %d did not claim the segment within 3 s", (int) c.pid);
    return -1;
}

/* The start of file @path (a reaper's stderr) as a string; "" when it cannot be read. */
static void read_text(const char *path, char *buf, size_t size)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        buf[fread(buf, 1, size - 1, f)] = '\0';
        fclose(f);
    }
}

/* Starts presence-reaper --create --huge-pages on the (absent) test segment and
 * waits for its start line, which it logs once it has created and claimed the
 * segment and handles SIGTERM (a SIGTERM before that kills it outright). */
static pid_t spawn_reaper_create(const char *name, const char *sock, const char *errf)
{
    struct child c = SPAWN(reaper_path(), NULL, 0, errf, "-s", name, "--create", "--huge-pages",
                           "--rooms", "256", "--presences", "4096", "--socket", sock);
    assert_true(c.pid > 0);
    for (uint64_t end = tu_mono_ms() + 5000; tu_mono_ms() < end; tu_sleep_ms(5)) {
        char text[1024];
        read_text(errf, text, sizeof text);
        if (strstr(text, "sweep every"))
            return c.pid;
    }
    fail_msg("presence-reaper --create did not start on %s within 5 s", name);
    return -1;
}

/* The same, sweeping every 50 ms. */
static pid_t start_reaper(uint64_t *claim_ms)
{
    return start_reaper_every(claim_ms, "50");
}

static void stop_reaper(pid_t pid)
{
    kill(pid, SIGTERM);
    assert_int_equal(wait_code(pid, 5000), 0);
}

/* ---- fixtures ---------------------------------------------------------------- */

static void names(const char *tag)
{
    snprintf(seg, sizeof seg, "pr-test-%d-%s", (int) getpid(), tag);
    snprintf(sock_path, sizeof sock_path, "/tmp/pr-test-%d-%s.sock", (int) getpid(), tag);
    snprintf(err_path, sizeof err_path, "/tmp/pr-test-%d-%s.err", (int) getpid(), tag);
}

/* Creates the test segment and attaches the parent to it. */
static void make_segment(const char *tag, uint32_t ring, uint64_t max_age_ms)
{
    names(tag);
    presence_unlink(seg);
    unlink(sock_path);
    unlink(err_path);
    presence_options_t o;
    presence_options_init(&o);
    o.flags = PRESENCE_CREATE | PRESENCE_EXCL;
    o.rooms = 1024;
    o.connections = 4096;
    o.presences = 16384;
    o.arena_bytes = 4u << 20;
    if (ring)
        o.ring_entries = ring;
    if (max_age_ms)
        o.max_age_ms = max_age_ms;
    assert_int_equal(presence_open(seg, &o, &P), 0);
}

static int teardown(void **state)
{
    (void) state;
    tu_kill_children();
    if (SUB) {
        presence_sub_close(SUB);
        SUB = NULL;
    }
    if (P) {
        presence_close(P);
        P = NULL;
    }
    if (seg[0])
        presence_unlink(seg);
    if (sock_path[0])
        unlink(sock_path);
    if (err_path[0]) { /* the reapers' last words (-v: exits, sweeps that did something) */
        static char last[24][256];
        unsigned long n = 0;
        FILE *f = fopen(err_path, "r");
        while (f && fgets(last[n % 24], sizeof last[0], f))
            n++;
        if (f)
            fclose(f);
        for (unsigned long i = n > 24 ? n - 24 : 0; i < n; i++)
            printf("# reaper: %s", last[i % 24]);
        unlink(err_path);
    }
    seg[0] = sock_path[0] = err_path[0] = '\0';
    return 0;
}

static void assert_check_clean(void)
{
    for (int i = 0; i < 4; i++)
        presence_maintain(P);
    presence_strlist_t *v = NULL;
    int n = presence_check(P, &v);
    for (size_t i = 0; v && i < v->count && i < 20; i++)
        printf("# violation: %s\n", v->items[i]);
    presence_strlist_free(v);
    assert_int_equal(n, 0);
}

/* ---- the parent's subscription ------------------------------------------------- */

typedef bool (*event_fn)(const presence_event_t *ev, void *ctx); /* true: done */

/* Subscribes from now and arms the wake-up. */
static void subscribe_now(void)
{
    assert_int_equal(presence_subscribe(P, PRESENCE_SEQ_NOW, NULL, &SUB), 0);
    last_seq = UINT64_MAX;
    presence_event_t ev;
    assert_int_equal(presence_sub_next(SUB, &ev), 0);
}

/* Feeds events to @fn, waking only through the subscription's eventfd, until @fn
 * says done (1) or @deadline_ms (mono) passes (0). Fails on a lap or an error. */
static int collect(uint64_t deadline_ms, event_fn fn, void *ctx)
{
    for (;;) {
        presence_event_t ev;
        int rc;
        while ((rc = presence_sub_next(SUB, &ev)) == 1) {
            if (last_seq != UINT64_MAX && ev.seq <= last_seq)
                fail_msg("seq went from %llu to %llu", (unsigned long long) last_seq,
                         (unsigned long long) ev.seq);
            last_seq = ev.seq;
            if (fn(&ev, ctx))
                return 1;
        }
        if (rc != 0)
            fail_msg("presence_sub_next -> %d (%s)", rc, presence_strerror(rc));
        uint64_t now = tu_mono_ms();
        if (now >= deadline_ms)
            return 0;
        struct pollfd pf = {presence_sub_fd(SUB), POLLIN, 0};
        poll(&pf, 1, (int) (deadline_ms - now));
    }
}

/* A model of rooms' members rebuilt from events: checks each occupancy. */
struct model {
    struct {
        char room[32], conn[32];
    } m[64];
    int n;
};

static int model_occ(const struct model *md, const char *room)
{
    int k = 0;
    for (int i = 0; i < md->n; i++)
        k += strcmp(md->m[i].room, room) == 0;
    return k;
}

static void model_apply(struct model *md, const presence_event_t *ev)
{
    int at = -1;
    for (int i = 0; i < md->n; i++)
        if (strcmp(md->m[i].room, ev->room) == 0 && strcmp(md->m[i].conn, ev->conn) == 0)
            at = i;
    if (ev->type == PRESENCE_EV_JOIN) {
        assert_true(at < 0);
        assert_true(md->n < 64);
        snprintf(md->m[md->n].room, sizeof md->m[0].room, "%s", ev->room);
        snprintf(md->m[md->n].conn, sizeof md->m[0].conn, "%s", ev->conn);
        md->n++;
    } else if (ev->type == PRESENCE_EV_LEAVE || ev->type == PRESENCE_EV_TIMEOUT ||
               ev->type == PRESENCE_EV_OWNER_DIED) {
        if (at < 0)
            fail_msg("%s %s %s: not a member", presence_event_name(ev->type), ev->room, ev->conn);
        assert_int_equal(ev->reason, ev->type);
        md->m[at] = md->m[--md->n];
    } else {
        return;
    }
    assert_int_equal(ev->occupancy, model_occ(md, ev->room));
}

/* ==== expiry ===================================================================== */

struct expiry_ctx {
    struct model md;
    uint64_t t_join_ns; /* CLOCK_REALTIME just before the joins */
    int timeouts, want;
    char seen[16][64];
};

static uint64_t conn_timeout_ms(const char *conn)
{
    return conn[0] == 't' ? 1000 : conn[0] == 's' ? 150 : 300;
}

static bool on_expiry_event(const presence_event_t *ev, void *v)
{
    struct expiry_ctx *x = v;
    model_apply(&x->md, ev);
    if (ev->type != PRESENCE_EV_TIMEOUT) {
        if (ev->type == PRESENCE_EV_LEAVE || ev->type == PRESENCE_EV_OWNER_DIED)
            fail_msg("unexpected %s %s %s", presence_event_name(ev->type), ev->room, ev->conn);
        return false;
    }
    char key[64];
    snprintf(key, sizeof key, "%s/%s", ev->room, ev->conn);
    for (int i = 0; i < x->timeouts; i++)
        if (strcmp(x->seen[i], key) == 0)
            fail_msg("second timeout event for %s", key);
    assert_true(x->timeouts < 16);
    snprintf(x->seen[x->timeouts++], sizeof x->seen[0], "%s", key);
    /* never before its timeout (1 ms of slack for the two clocks) */
    uint64_t after_ms = (ev->time_ns - x->t_join_ns) / 1000000ull;
    uint64_t t = conn_timeout_ms(ev->conn);
    printf("# timeout %-8s %-3s after %4llu ms (timeout %llu ms), occupancy %u\n", ev->room,
           ev->conn, (unsigned long long) after_ms, (unsigned long long) t, ev->occupancy);
    assert_true(ev->time_ns + 1000000ull >= x->t_join_ns + t * 1000000ull);
    return x->timeouts == x->want;
}

static void test_expiry(void **state)
{
    (void) state;
    make_segment("expiry", 0, 300); /* segment max_age 300 ms */
    pid_t r = start_reaper(NULL);
    subscribe_now();
    static struct expiry_ctx x;
    memset(&x, 0, sizeof x);
    x.t_join_ns = pr__realtime_ns();
    /* d*: the segment's max_age (300 ms); s0: its own 150 ms; t*: their own 1000 ms */
    static const struct {
        const char *room, *conn;
        uint64_t timeout_ms;
    } joins[] = {
        {"e0", "d0", 0},    {"e0", "d1", 0},   {"e0", "d2", 0},   {"e0", "t0", 1000},
        {"e1", "d3", 0},    {"e1", "d4", 0},   {"e1", "d5", 0},   {"e1", "d0", 0},
        {"e1", "t1", 1000}, {"e0", "s0", 150}, {"e1", "s0", 150},
    };
    for (size_t i = 0; i < sizeof joins / sizeof joins[0]; i++)
        assert_int_equal(
            presence_join_ex(P, joins[i].room, joins[i].conn, NULL, joins[i].timeout_ms, 0, NULL),
            PRESENCE_JOINED);
    x.want = (int) (sizeof joins / sizeof joins[0]);
    assert_int_equal(collect(tu_mono_ms() + 4000, on_expiry_event, &x), 1);
    assert_int_equal(x.timeouts, x.want);
    assert_int_equal(presence_occupancy(P, "e0"), 0);
    assert_int_equal(presence_occupancy(P, "e1"), 0);
    assert_int_equal(presence_touch(P, "t0"), PRESENCE_NOT_PRESENT);
    stop_reaper(r);
    assert_check_clean();
}

/* ==== owner_died, and unbound connections surviving a restart ======================= */

struct died_ctx {
    struct model md;
    int joins, died;
    uint64_t t_kill_ms, t_done_ms;
};

static bool on_join_event(const presence_event_t *ev, void *v)
{
    struct died_ctx *d = v;
    model_apply(&d->md, ev);
    if (ev->type == PRESENCE_EV_JOIN)
        d->joins++;
    return d->joins == 10;
}

static bool on_died_event(const presence_event_t *ev, void *v)
{
    struct died_ctx *d = v;
    model_apply(&d->md, ev);
    if (ev->type == PRESENCE_EV_ROOM_DELETED || ev->type == PRESENCE_EV_ROOM_CREATED)
        return false;
    if (ev->type != PRESENCE_EV_OWNER_DIED || ev->conn[0] != 'b')
        fail_msg("unexpected %s %s %s", presence_event_name(ev->type), ev->room, ev->conn);
    if (++d->died == 5) {
        d->t_done_ms = tu_mono_ms();
        return true;
    }
    return false;
}

static bool on_no_event(const presence_event_t *ev, void *v)
{
    struct died_ctx *d = v;
    model_apply(&d->md, ev);
    fail_msg("unexpected event after the restart: %s %s %s", presence_event_name(ev->type),
             ev->room, ev->conn);
    return true;
}

static void test_owner_died_and_restart(void **state)
{
    (void) state;
    make_segment("died", 0, 2000); /* unbound connections expire 2 s after their last touch */
    pid_t r = start_reaper(NULL);
    subscribe_now();
    static struct died_ctx d;
    memset(&d, 0, sizeof d);
    char line[256];
    struct child w = HELPER(NULL, PIPE_OUT, "bound", seg, "5", "5");
    assert_int_equal(expect_line(w.out, "ready", line, sizeof line, 5000), 0);
    assert_int_equal(collect(tu_mono_ms() + 2000, on_join_event, &d), 1);
    assert_int_equal(presence_occupancy(P, "w"), 10);
    tu_sleep_ms(150); /* it has touched them once more */

    d.t_kill_ms = tu_mono_ms();
    assert_int_equal(kill(w.pid, SIGKILL), 0);
    int got = collect(d.t_kill_ms + 3000, on_died_event, &d);
    assert_int_equal(got, 1);
    uint64_t ms = d.t_done_ms - d.t_kill_ms;
    printf("# figure: SIGKILL to the subscriber holding all 5 owner_died events: %llu ms\n",
           (unsigned long long) ms);
    assert_true(ms < 1000); /* the bound */
    assert_int_equal(wait_code(w.pid, 2000), 128 + SIGKILL);
    close(w.out);
    assert_int_equal(presence_occupancy(P, "w"), 5);

    /* The restarted worker takes its unbound connections back within max_age. */
    struct child w2 = HELPER(NULL, PIPE_OUT, "heartbeat", seg, "5", "4");
    assert_int_equal(expect_line(w2.out, "ready", line, sizeof line, 5000), 0);
    printf("# restart re-joined after %llu ms\n",
           (unsigned long long) (tu_mono_ms() - d.t_kill_ms));
    /* Past the moment they would have expired without it: no event at all. */
    assert_int_equal(collect(d.t_kill_ms + 2800, on_no_event, &d), 0);
    assert_int_equal(presence_occupancy(P, "w"), 5);
    for (int i = 0; i < 5; i++) {
        char c[8];
        snprintf(c, sizeof c, "b%d", i);
        assert_int_equal(presence_touch(P, c), PRESENCE_NOT_PRESENT);
        snprintf(c, sizeof c, "u%d", i);
        assert_int_equal(presence_touch(P, c), 0);
    }
    assert_int_equal(wait_code(w2.pid, 10000), 0);
    close(w2.out);
    stop_reaper(r);
    assert_check_clean();
    assert_int_equal(presence_occupancy(P, "w"), 5);
}

/* ==== the reaper killed and restarted under load ===================================== */

static void test_reaper_restart_under_load(void **state)
{
    (void) state;
    make_segment("restart", 0, 0);
    pid_t r = start_reaper(NULL);
    char line[256];
    /* The subscriber also polls every 100 ms, and must: a new reaper does not hold
     * the eventfds given to the old one, so a subscriber armed before the restart is
     * woken by nobody until it calls presence_sub_next again (which re-registers
     * it). As documented: "with no reaper running, poll with a timeout". */
    struct child watch = HELPER(NULL, PIPE_IN | PIPE_OUT, "watch", seg, "100", "120");
    assert_int_equal(expect_line(watch.out, "ready", line, sizeof line, 5000), 0);
    enum { W = 2 };
    struct child wr[W];
    for (int i = 0; i < W; i++) {
        char id[8];
        snprintf(id, sizeof id, "%d", i);
        wr[i] = HELPER(NULL, PIPE_OUT, "load", seg, id, "15000", "100");
    }
    for (int round = 0; round < 3; round++) {
        tu_sleep_ms(400);
        uint64_t sweeps_before;
        presence_stats_t st;
        assert_int_equal(presence_stats(P, &st), 0);
        sweeps_before = st.reaper_sweeps;
        assert_int_equal(kill(r, SIGKILL), 0);
        assert_int_equal(wait_code(r, 2000), 128 + SIGKILL);
        uint64_t claim_ms = 0;
        r = start_reaper(&claim_ms);
        printf("# round %d: the new reaper %d claimed and answered in %llu ms\n", round, (int) r,
               (unsigned long long) claim_ms);
        assert_true(claim_ms < 1000); /* at once: the dead one's claim is not honoured */
        /* and it sweeps (its timer fires at once, then every 50 ms) */
        uint64_t t0 = tu_mono_ms();
        do {
            tu_sleep_ms(5);
            assert_int_equal(presence_stats(P, &st), 0);
        } while (st.reaper_sweeps <= sweeps_before && tu_mono_ms() - t0 < 3000);
        printf("# round %d: its first sweep completed within %llu ms\n", round,
               (unsigned long long) (tu_mono_ms() - t0));
        assert_true(st.reaper_sweeps > sweeps_before);
        /* Not held up by a writer that registers with it while holding a room lock
         * its sweep needs (that took the socket timeout, 1 s, once). */
        assert_true(tu_mono_ms() - t0 < 900);
    }
    for (int i = 0; i < W; i++) {
        assert_int_equal(wait_code(wr[i].pid, 60000), 0);
        assert_int_equal(expect_line(wr[i].out, "ops 15000", line, sizeof line, 1000), 0);
        close(wr[i].out);
    }
    /* The writers stopped: the subscriber drains and reports its model. */
    assert_int_equal(write(watch.in, "stop\n", 5), 5);
    assert_int_equal(expect_line(watch.out, "events", line, sizeof line, 10000), 0);
    printf("# subscriber: %s\n", line);
    unsigned long events = 0, lapped = 0;
    assert_int_equal(sscanf(line, "events %lu lapped %lu", &events, &lapped), 2);
    assert_true(events >= 2 * 15000);
    assert_int_equal(lapped, 0);
    /* The ring told the same story as the registry: the subscriber's model, rebuilt
     * from the events alone, has every room with the registry's occupancy. */
    static char mroom[64][64];
    int mocc[64], rooms = 0;
    for (;;) {
        assert_int_equal(read_line(watch.out, line, sizeof line, 5000), 0);
        if (strcmp(line, "end") == 0)
            break;
        assert_true(rooms < 64);
        assert_int_equal(sscanf(line, "occ %63s %d", mroom[rooms], &mocc[rooms]), 2);
        assert_int_equal(presence_occupancy(P, mroom[rooms]), mocc[rooms]);
        rooms++;
    }
    assert_int_equal(wait_code(watch.pid, 5000), 0);
    close(watch.in);
    close(watch.out);
    presence_room_list_t *rl = NULL;
    assert_int_equal(presence_rooms(P, NULL, &rl), 0);
    for (size_t i = 0; i < rl->count; i++) {
        int k = 0;
        while (k < rooms && strcmp(mroom[k], rl->items[i].name) != 0)
            k++;
        if (k == rooms)
            fail_msg("room %s (occupancy %u) never appeared in the events", rl->items[i].name,
                     rl->items[i].occupancy);
        assert_int_equal(rl->items[i].occupancy, mocc[k]);
    }
    presence_room_list_free(rl);
    stop_reaper(r);
    assert_check_clean();
}

/* ==== a second reaper is refused ======================================================= */

static void test_second_reaper_refused(void **state)
{
    (void) state;
    make_segment("second", 0, 0);
    pid_t r = start_reaper(NULL);
    char second_err[160];
    snprintf(second_err, sizeof second_err, "/tmp/pr-test-%d-second2.err", (int) getpid());
    unlink(second_err);
    struct child c = SPAWN(reaper_path(), NULL, 0, second_err, "-s", seg, "--sweep-ms", "50",
                           "--socket", sock_path);
    int code = wait_code(c.pid, 5000);
    char text[512];
    read_text(second_err, text, sizeof text);
    unlink(second_err);
    printf("# second reaper said: %s", text);
    assert_int_equal(code, 1);
    char want[32];
    snprintf(want, sizeof want, "pid %d", (int) r);
    assert_non_null(strstr(text, want));
    /* the first one is untouched: still the reaper, still answering */
    assert_int_equal(waitpid(r, NULL, WNOHANG), 0);
    assert_int_equal(reaper_pid_now(), r);
    assert_true(socket_answers());
    stop_reaper(r);
    assert_int_equal(reaper_pid_now(), 0);
}

/* Whether process @pid catches signal @sig (its SigCgt in /proc). */
static bool catches(pid_t pid, int sig)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *f = fopen(path, "r");
    unsigned long long mask = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "SigCgt: %llx", &mask) == 1)
            break;
    if (f)
        fclose(f);
    return (mask >> (sig - 1)) & 1u;
}

/* SIGTERM is caught before the segment is even made: a stop while a reaper
 * creates a large segment (512 MiB arena, in 2 MiB pages: a copy) ends as
 * cleanly as later, exit 0 and no claim left (its default action killed it
 * with the claim held). */
static void test_reaper_term_while_creating(void **state)
{
    (void) state;
    names("termcreate");
    presence_unlink(seg);
    unlink(err_path);
    struct child c = SPAWN(reaper_path(), NULL, 0, err_path, "-s", seg, "--create", "--huge-pages",
                           "--arena", "536870912", "--socket", sock_path);
    assert_true(c.pid > 0);
    bool caught = false;
    for (uint64_t end = tu_mono_ms() + 5000; !caught && tu_mono_ms() < end; tu_sleep_ms(1))
        caught = catches(c.pid, SIGTERM);
    presence_t *q = NULL;
    bool creating = presence_open(seg, NULL, &q) == -ENOENT; /* not published yet */
    presence_close(q);
    kill(c.pid, SIGTERM);
    assert_int_equal(wait_code(c.pid, 10000), 0);
    assert_true(caught);
    assert_true(creating);
    assert_int_equal(presence_open(seg, NULL, &P), 0);
    assert_int_equal(reaper_pid_now(), 0);
}

/* --huge-pages: a usage error without --create (nothing created); with it, the
 * reaper creates the segment, and its start line names the pages the segment got. */
static void test_reaper_huge_pages(void **state)
{
    (void) state;
    names("huge");
    presence_unlink(seg);
    unlink(err_path);
    struct child c = SPAWN(reaper_path(), NULL, 0, err_path, "-s", seg, "--huge-pages");
    assert_int_equal(wait_code(c.pid, 5000), 2);
    presence_t *q = NULL;
    assert_int_equal(presence_open(seg, NULL, &q), -ENOENT);

    pid_t r = spawn_reaper_create(seg, sock_path, err_path);
    assert_int_equal(presence_open(seg, NULL, &P), 0);
    presence_options_t got;
    presence_get_options(P, &got);
    stop_reaper(r);
    char text[1024];
    read_text(err_path, text, sizeof text);
    printf("# reaper --create --huge-pages said: %s", text);
    bool huge = (got.flags & PRESENCE_HUGE_PAGES) != 0;
    assert_non_null(strstr(text, huge ? "(2 MiB pages)" : "(4 KiB pages)"));
    assert_true(huge == (strstr(text, "warning: the segment is not in 2 MiB pages") == NULL));
}

/* ==== a libuv subscriber in another process gets every event, in order ================= */

static void run_in_order(unsigned long seed, const char *n, const char *pause_us)
{
    char sd[24], line[256];
    snprintf(sd, sizeof sd, "%lu", seed);
    struct child sub = HELPER(NULL, PIPE_OUT, "expect", seg, sd, n, "30000");
    assert_int_equal(expect_line(sub.out, "ready", line, sizeof line, 5000), 0);
    uint64_t t0 = tu_mono_ms();
    struct child prod = HELPER(NULL, PIPE_OUT, "produce", seg, sd, n, pause_us);
    assert_int_equal(wait_code(prod.pid, 30000), 0);
    uint64_t t1 = tu_mono_ms();
    assert_int_equal(wait_code(sub.pid, 30000), 0);
    assert_int_equal(expect_line(sub.out, "got", line, sizeof line, 1000), 0);
    printf("# %s events, pause %s us: producer %llu ms, subscriber done %llu ms after; %s\n", n,
           pause_us, (unsigned long long) (t1 - t0), (unsigned long long) (tu_mono_ms() - t1),
           line);
    close(sub.out);
    close(prod.out);
}

static void test_libuv_subscriber_in_order(void **state)
{
    (void) state;
    make_segment("order", 0, 0);
    pid_t r = start_reaper(NULL);
    run_in_order(1001, "2000", "0");  /* a burst */
    run_in_order(1002, "2000", "20"); /* spaced: mostly one wake-up per event */
    stop_reaper(r);
    assert_check_clean();
}

/* ==== a stalled subscriber is lapped, producers keep their pace ========================== */

/* Runs two load writers of @nops each (ids @id0, @id0+1); returns their total ops/s. */
static double load_round(int id0, const char *nops)
{
    struct child w[2];
    for (int i = 0; i < 2; i++) {
        char id[8];
        snprintf(id, sizeof id, "%d", id0 + i);
        w[i] = HELPER(NULL, PIPE_OUT, "load", seg, id, nops, "0");
    }
    double total = 0;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(wait_code(w[i].pid, 60000), 0);
        char line[256], want[32];
        snprintf(want, sizeof want, "ops %s ", nops);
        assert_int_equal(expect_line(w[i].out, want, line, sizeof line, 1000), 0);
        double rate = 0;
        assert_non_null(strstr(line, "rate "));
        rate = atof(strstr(line, "rate ") + 5);
        total += rate;
        close(w[i].out);
    }
    return total;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static void test_slow_subscriber_lapped(void **state)
{
    (void) state;
    make_segment("lapped", 4096, 0); /* a small ring: 4096 entries */
    pid_t r = start_reaper(NULL);
    const char *nops = "100000";
    enum { ROUNDS = 3 };
    double alone[ROUNDS], stalled[ROUNDS];
    for (int round = 0; round < ROUNDS; round++) {
        /* Alternate the order so that neither side always runs warm. */
        if (round % 2 == 0)
            alone[round] = load_round(10 * round + 100, nops);
        struct child s = HELPER(NULL, PIPE_IN | PIPE_OUT, "stall", seg);
        char line[256];
        assert_int_equal(expect_line(s.out, "ready", line, sizeof line, 5000), 0);
        stalled[round] = load_round(10 * round + 200, nops);
        assert_int_equal(write(s.in, "go\n", 3), 3);
        assert_int_equal(wait_code(s.pid, 20000), 0); /* 0: it was told PRESENCE_ELAPPED */
        assert_int_equal(expect_line(s.out, "lapped", line, sizeof line, 1000), 0);
        printf("# round %d: stalled subscriber: %s\n", round, line);
        close(s.in);
        close(s.out);
        if (round % 2 == 1)
            alone[round] = load_round(10 * round + 100, nops);
        printf("# round %d: producers (2 x %s join/leave) %.0f ops/s with no subscriber, "
               "%.0f ops/s with a stalled subscriber\n",
               round, nops, alone[round], stalled[round]);
    }
    qsort(alone, ROUNDS, sizeof alone[0], cmp_double);
    qsort(stalled, ROUNDS, sizeof stalled[0], cmp_double);
    printf("# figure: producer throughput (2 processes, median of %d rounds): %.0f ops/s with no "
           "subscriber, %.0f ops/s with a stalled subscriber lapped by them: ratio %.3f\n",
           ROUNDS, alone[ROUNDS / 2], stalled[ROUNDS / 2], stalled[ROUNDS / 2] / alone[ROUNDS / 2]);
    presence_stats_t st;
    assert_int_equal(presence_stats(P, &st), 0);
    assert_true(st.lapped >= ROUNDS);
    stop_reaper(r);
    assert_check_clean();
}

/* ==== a producer killed between claim and commit ===================================== */

struct dead_ctx {
    const char *prefix;
    int want, got;
};

static bool on_survivor_event(const presence_event_t *ev, void *v)
{
    struct dead_ctx *d = v;
    if ((ev->type == PRESENCE_EV_JOIN || ev->type == PRESENCE_EV_LEAVE) &&
        strncmp(ev->room, d->prefix, strlen(d->prefix)) == 0)
        d->got++;
    return d->got == d->want;
}

static void dead_producer(const char *tag, const char *kill_at)
{
    make_segment(tag, 0, 0);
    pid_t r = start_reaper(NULL);
    subscribe_now();
    char line[256];
    /* A libuv subscriber in another process, which must get the survivor's events too. */
    struct child sub = HELPER(NULL, PIPE_OUT, "expect", seg, "222", "100", "20000");
    assert_int_equal(expect_line(sub.out, "ready", line, sizeof line, 5000), 0);
    char env_kill[64];
    snprintf(env_kill, sizeof env_kill, "PRESENCE_TEST_KILL_AT=%s", kill_at);
    const char *env[] = {env_kill, NULL};
    struct child victim = HELPER(env, PIPE_OUT, "produce", seg, "111", "50", "0");
    assert_int_equal(wait_code(victim.pid, 10000), 128 + SIGKILL);
    close(victim.out);
    uint64_t t_kill = tu_mono_ms();
    /* Another producer's events get through, to both subscribers, within 2 s. */
    struct child prod = HELPER(NULL, PIPE_OUT, "produce", seg, "222", "100", "0");
    struct dead_ctx d = {"s222-", 100, 0};
    int got = collect(t_kill + 2000, on_survivor_event, &d);
    uint64_t t_parent = tu_mono_ms() - t_kill;
    printf("# %s: parent subscriber had %d of 100 events %llu ms after the kill\n", kill_at, d.got,
           (unsigned long long) t_parent);
    assert_int_equal(got, 1);
    assert_int_equal(wait_code(prod.pid, 2000), 0); /* the producer was never blocked */
    uint64_t left = tu_mono_ms() - t_kill < 2000 ? 2000 - (tu_mono_ms() - t_kill) : 1;
    int code = wait_code(sub.pid, (unsigned) left);
    printf("# %s: libuv subscriber done %llu ms after the kill (code %d)\n", kill_at,
           (unsigned long long) (tu_mono_ms() - t_kill), code);
    assert_int_equal(code, 0);
    close(sub.out);
    close(prod.out);
    stop_reaper(r);
    assert_check_clean();
}

static void test_dead_producer_at_claim(void **state)
{
    (void) state;
    dead_producer("claim", "ring_claim:3");
}

static void test_dead_producer_at_commit(void **state)
{
    (void) state;
    dead_producer("commit", "ring_commit:3");
}

/* ==== one hop: producers write armed subscribers' eventfds themselves ================== */

/* The one subscription slot in use (a helper's), or UINT32_MAX. */
static uint32_t the_sub_slot(void)
{
    uint32_t found = UINT32_MAX;
    for (uint32_t i = 0; i < PR_NSUBS; i++)
        if (pr_load(&P->h->subs[i].owner) != 0) {
            assert_int_equal(found, UINT32_MAX);
            found = i;
        }
    return found;
}

/* Whether the parent's copy of the reaper's subscriber eventfds is current and
 * names subscription @slot under @tag. */
static bool wake_knows(uint32_t slot, uint32_t tag)
{
    const struct pr_wake *w = P->wake;
    if (!w || !w->valid || w->gen != pr_load(&P->h->subs_gen))
        return false;
    for (uint32_t i = 0; i < w->n; i++)
        if (w->e[i].slot == slot && w->e[i].tag == tag)
            return true;
    return false;
}

/* Joins @conn into room "hop"; 0 once the `wake` helper @c reports it within
 * @ms (its commit-to-read latency in *us), -1 if it does not. */
static int join_seen(const struct child *c, const char *conn, unsigned ms, double *us)
{
    assert_int_equal(presence_join(P, "hop", conn, NULL), PRESENCE_JOINED);
    char line[256], want[64];
    snprintf(want, sizeof want, "join %s ", conn);
    if (expect_line(c->out, want, line, sizeof line, ms) != 0)
        return -1;
    if (us)
        *us = atof(line + strlen(want));
    return 0;
}

/* Until subscription @slot is armed again (the helper re-arms after each read). */
static void wait_armed(uint32_t slot)
{
    uint64_t end = tu_mono_ms() + 3000;
    while (pr_load(&P->h->subs[slot].waiting) == 0 && tu_mono_ms() < end)
        tu_sleep_ms(1);
    assert_int_equal(pr_load(&P->h->subs[slot].waiting), 1);
}

/* Events, each to the subscription @slot asleep, until the parent's copy names
 * it under @tag (the first go through the reaper's doorbell, and ask for the
 * copy); each must arrive. */
static void warm_up(const struct child *c, const char *prefix, uint32_t slot, uint32_t tag)
{
    int i;
    for (i = 0; i < 50 && !wake_knows(slot, tag); i++) {
        char conn[32];
        snprintf(conn, sizeof conn, "%s%d", prefix, i);
        wait_armed(slot);
        assert_int_equal(join_seen(c, conn, 3000, NULL), 0);
    }
    printf("# the parent holds the reaper's subscriber set after %d events\n", i);
    assert_true(wake_knows(slot, tag));
}

/* A "wake" subscriber in another process (helper_events), ready, with the slot
 * and tag of its subscription, warmed up (the parent's copy holds its eventfd;
 * @prefix names the warm-up connections). */
struct waker {
    struct child c;
    uint32_t slot, tag;
};

static struct waker start_waker(const char *prefix)
{
    char line[256];
    struct waker w = {HELPER(NULL, PIPE_IN | PIPE_OUT, "wake", seg, "60000"), 0, 0};
    assert_int_equal(expect_line(w.c.out, "ready", line, sizeof line, 5000), 0);
    w.slot = the_sub_slot();
    assert_true(w.slot < PR_NSUBS);
    w.tag = pr_load(&P->h->subs[w.slot].tag);
    warm_up(&w.c, prefix, w.slot, w.tag);
    return w;
}

static void stop_waker(const struct waker *w)
{
    assert_int_equal(write(w->c.in, "quit\n", 5), 5);
    assert_int_equal(wait_code(w->c.pid, 5000), 0);
    close(w->c.in);
    close(w->c.out);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

/* A subscriber in another process is woken by the producer's own write: with the
 * reaper SIGSTOPped (the relay of the two-hop design cannot run), every event
 * still wakes it at once, and no doorbell is rung. Control: a producer that holds
 * no copy (a fresh process) cannot wake it while the reaper is stopped; its event
 * arrives through the reaper once it runs again. */
static void test_one_hop_wakeup(void **state)
{
    (void) state;
    make_segment("onehop", 0, 0);
    pid_t r = start_reaper(NULL);
    char line[256];
    struct waker w = start_waker("warm");
    const struct child sub = w.c;
    const uint32_t slot = w.slot;
    wait_armed(slot);
    uint64_t direct0 = P->wake->direct, bells0 = P->wake->bells;

    assert_int_equal(kill(r, SIGSTOP), 0);
    enum { N = 20 };
    double us[N];
    for (int i = 0; i < N; i++) {
        char conn[32];
        snprintf(conn, sizeof conn, "stopped%d", i);
        if (join_seen(&sub, conn, 2000, &us[i]) != 0)
            fail_msg("event %d: no wake-up within 2 s with the reaper stopped", i);
        wait_armed(slot);
    }
    qsort(us, N, sizeof us[0], cmp_dbl);
    printf("# figure: reaper SIGSTOPped: %d of %d wake-ups arrived, written by the producer "
           "(%llu direct, %llu doorbells); commit-to-read p50 %.1f us, max %.1f us\n",
           N, N, (unsigned long long) (P->wake->direct - direct0),
           (unsigned long long) (P->wake->bells - bells0), us[N / 2], us[N - 1]);
    assert_true(P->wake->direct - direct0 >= N);
    assert_int_equal(P->wake->bells, bells0);

    /* The control: no copy, no wake-up while the reaper is stopped (its open
     * blocks a second trying to register, its wake-up only starts a registration). */
    struct child prod = HELPER(NULL, PIPE_OUT, "produce", seg, "333", "1", "0");
    assert_int_equal(wait_code(prod.pid, 10000), 0);
    close(prod.out);
    assert_int_equal(expect_line(sub.out, "join s333-", line, sizeof line, 500), -1);
    assert_int_equal(kill(r, SIGCONT), 0);
    assert_int_equal(expect_line(sub.out, "join s333-", line, sizeof line, 3000), 0);
    printf("# control: a producer without the set woke the subscriber only once the reaper ran "
           "again\n");

    stop_waker(&w);
    stop_reaper(r);
    assert_check_clean();
}

/* Whether every live subscription has read up to @tail. */
static bool subs_caught_up(uint64_t tail, uint32_t *behind)
{
    for (uint32_t i = 0; i < PR_NSUBS; i++)
        if (pr_load(&P->h->subs[i].owner) != 0 && pr_load(&P->h->subs[i].pos) < tail) {
            *behind = i;
            return false;
        }
    return true;
}

/* What the subscriptions and the ring say, for a failure's diagnosis. */
static void dump_subs(uint32_t behind, uint64_t tail)
{
    struct pr_header *h = P->h;
    for (uint32_t k = 0; k < PR_NSUBS; k++)
        if (pr_load(&h->subs[k].owner) != 0)
            printf("# slot %u: waiting %u pos %llu tag %u\n", k, pr_load(&h->subs[k].waiting),
                   (unsigned long long) pr_load(&h->subs[k].pos), pr_load(&h->subs[k].tag));
    printf("# ring_waiters %u subs_gen %u\n", pr_load(&h->ring_waiters), pr_load(&h->subs_gen));
    struct pr_ring_entry *ring = PR_REGION(P, off_ring, struct pr_ring_entry);
    for (uint64_t q = pr_load(&h->subs[behind].pos); q < tail; q++)
        printf("# entry %llu stamp %llx\n", (unsigned long long) q,
               (unsigned long long) pr_load(&ring[q & (h->ring_entries - 1)].stamp));
}

/* No lost wake-up: producers in two processes emit bursts (1..4 events, a few
 * microseconds apart) while three subscribers in other processes sleep in poll()
 * on presence_sub_fd and read. After each round every subscriber must have read
 * up to the ring's tail within 2 s; the reaper sweeps once a minute, so nothing
 * but the producers' wake-ups (and its doorbell relay) wakes them. Rounds:
 * $PRESENCE_STRESS_ROUNDS (default 20000, ~3 s), at most 30 s.
 * What it has caught, on 2 vCPUs, 100,000 rounds a run: subscribers counted in
 * ring_waiters after their armed word was set (see ring.c, arm_slot) lost a
 * wake-up in 9 runs of 15; pr__emit without its fence, in 4 of 15; the shipped
 * code, in none of 15. Run it longer for such checks:
 * PRESENCE_STRESS_ROUNDS=100000 PRESENCE_TEST_FILTER=test_no_lost_wakeup. */
static void no_lost_wakeup(const char *name, uint32_t ring, const char *prod_mode,
                           long default_rounds, uint64_t max_ms)
{
    make_segment(name, ring, 0);
    pid_t r = start_reaper_every(NULL, "60000");
    enum { NSUB = 3, NPROD = 2 };
    char line[256];
    struct child sub[NSUB], prod[NPROD];
    for (int i = 0; i < NSUB; i++) {
        sub[i] = HELPER(NULL, PIPE_IN | PIPE_OUT, "stress-sub", seg, "120");
        assert_int_equal(expect_line(sub[i].out, "ready", line, sizeof line, 5000), 0);
    }
    for (int i = 0; i < NPROD; i++) {
        char id[8];
        snprintf(id, sizeof id, "%d", i);
        prod[i] = HELPER(NULL, PIPE_IN | PIPE_OUT, prod_mode, seg, id);
    }
    long rounds =
        getenv("PRESENCE_STRESS_ROUNDS") ? atol(getenv("PRESENCE_STRESS_ROUNDS")) : default_rounds;
    uint64_t t0 = tu_mono_ms(), slowest = 0;
    long done = 0;
    for (; done < rounds && tu_mono_ms() - t0 < max_ms; done++) {
        for (int i = 0; i < NPROD; i++)
            assert_int_equal(write(prod[i].in, "go\n", 3), 3);
        for (int i = 0; i < NPROD; i++)
            assert_int_equal(expect_line(prod[i].out, "done", line, sizeof line, 5000), 0);
        uint64_t tail = pr_load(&P->h->ring_tail), t1 = pr__now_ns();
        uint32_t behind = 0;
        while (!subs_caught_up(tail, &behind) && pr__now_ns() - t1 < 2000000000ull) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
        if (!subs_caught_up(tail, &behind)) {
            dump_subs(behind, tail);
            fail_msg("round %ld: lost wake-up: subscription %u asleep at position %llu, ring tail "
                     "%llu, for 2 s",
                     done, behind, (unsigned long long) pr_load(&P->h->subs[behind].pos),
                     (unsigned long long) tail);
        }
        uint64_t dt = pr__now_ns() - t1;
        if (dt > slowest)
            slowest = dt;
    }
    long total = 0;
    for (int i = 0; i < NPROD; i++) {
        assert_int_equal(write(prod[i].in, "end\n", 4), 4);
        assert_int_equal(expect_line(prod[i].out, "total", line, sizeof line, 5000), 0);
        total += atol(line + 6);
        assert_int_equal(wait_code(prod[i].pid, 5000), 0);
        close(prod[i].in);
        close(prod[i].out);
    }
    for (int i = 0; i < NSUB; i++) {
        assert_int_equal(write(sub[i].in, "end\n", 4), 4);
        assert_int_equal(expect_line(sub[i].out, "events", line, sizeof line, 5000), 0);
        printf("# subscriber %d: %s\n", i, line);
        assert_int_equal(atol(line + 7), total);
        assert_int_equal(wait_code(sub[i].pid, 5000), 0);
        close(sub[i].in);
        close(sub[i].out);
    }
    printf("# figure: %s: %ld rounds, %ld events from %d producers, each read by %d "
           "subscribers asleep in poll(): no wake-up lost; slowest catch-up %.2f ms, %llu ms in "
           "all\n",
           prod_mode, done, total, NPROD, NSUB, (double) slowest / 1e6,
           (unsigned long long) (tu_mono_ms() - t0));
    assert_true(done >= 100);
    stop_reaper(r);
    assert_check_clean();
}

static void test_no_lost_wakeup(void **state)
{
    (void) state;
    /* a small ring: its lines are shared with the readers */
    no_lost_wakeup("nolost", 64, "stress-prod", 20000, 30000);
}

/* The same for prune's bulk path, which looks for armed subscribers once per 32
 * events and once at its end: each round, each producer joins 1..70 connections
 * that expire 1 ms later and prunes them (up to 280 events a round; the ring
 * holds 4096). Without the check at the end of the bulk, the subscribers sleep
 * through a round's last timeouts. Rounds: $PRESENCE_STRESS_ROUNDS (default 400,
 * ~9 s), at most 20 s. */
static void test_no_lost_wakeup_prune(void **state)
{
    (void) state;
    no_lost_wakeup("nolostp", 4096, "stress-prune", 400, 20000);
}

/* A killed subscriber: producers stop writing its eventfd. Its armed word is
 * cleared (by the producer that wakes it once more, or by the sweep), the reaper's
 * sweep frees its slot, drops the eventfd and bumps subs_gen; from then on no
 * event makes a producer write anything (nobody is armed), and a new subscriber,
 * even in the same slot (another tag), is woken directly once the producer's
 * copy is renewed, which holds the new eventfd and not the dead one's. */
static void test_dead_subscriber(void **state)
{
    (void) state;
    make_segment("deadsub", 0, 0);
    pid_t r = start_reaper(NULL);
    struct waker a = start_waker("a");
    const uint32_t slot_a = a.slot, tag_a = a.tag;
    wait_armed(slot_a);
    uint32_t gen0 = pr_load(&P->h->subs_gen);

    assert_int_equal(kill(a.c.pid, SIGKILL), 0);
    assert_int_equal(wait_code(a.c.pid, 2000), 128 + SIGKILL);
    close(a.c.in);
    close(a.c.out);
    uint64_t d0 = P->wake->direct;
    assert_int_equal(presence_join(P, "hop", "after-kill", NULL), PRESENCE_JOINED);
    assert_true(P->wake->direct - d0 <= 1); /* at most once, and it disarms */
    assert_int_equal(pr_load(&P->h->subs[slot_a].waiting), 0);

    uint64_t end = tu_mono_ms() + 3000;
    while ((pr_load(&P->h->subs[slot_a].owner) != 0 || pr_load(&P->h->subs_gen) == gen0) &&
           tu_mono_ms() < end)
        tu_sleep_ms(5);
    assert_int_equal(pr_load(&P->h->subs[slot_a].owner), 0);
    assert_int_not_equal(pr_load(&P->h->subs_gen), gen0);
    printf("# the sweep freed slot %u and moved subs_gen %u -> %u\n", slot_a, gen0,
           pr_load(&P->h->subs_gen));
    uint64_t d1 = P->wake->direct, b1 = P->wake->bells;
    for (int i = 0; i < 50; i++) {
        char conn[32];
        snprintf(conn, sizeof conn, "nobody%d", i);
        assert_int_equal(presence_join(P, "hop", conn, NULL), PRESENCE_JOINED);
        assert_int_equal(pr_load(&P->h->subs[slot_a].waiting), 0);
        assert_int_equal(pr_load(&P->h->ring_waiters), 0);
    }
    assert_int_equal(P->wake->direct, d1); /* nothing written into the dead one's eventfd */
    assert_int_equal(P->wake->bells, b1);

    struct waker b = start_waker("b");
    if (b.slot == slot_a)
        assert_int_not_equal(b.tag, tag_a);
    assert_false(wake_knows(slot_a, tag_a));
    assert_int_equal(P->wake->n, 1);
    wait_armed(b.slot);
    assert_int_equal(kill(r, SIGSTOP), 0);
    int seen = join_seen(&b.c, "b-stopped", 2000, NULL);
    assert_int_equal(kill(r, SIGCONT), 0);
    assert_int_equal(seen, 0);

    stop_waker(&b);
    stop_reaper(r);
    assert_check_clean();
}

/* ==== figures: wake-up latency ============================================================== */

static void test_latency_figures(void **state)
{
    (void) state;
    make_segment("latency", 0, 0);
    pid_t r = start_reaper(NULL);
    struct child c = HELPER(NULL, 0, "latency", seg, "2000");
    assert_int_equal(wait_code(c.pid, 60000), 0);
    stop_reaper(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_expiry, teardown),
        cmocka_unit_test_teardown(test_owner_died_and_restart, teardown),
        cmocka_unit_test_teardown(test_reaper_restart_under_load, teardown),
        cmocka_unit_test_teardown(test_second_reaper_refused, teardown),
        cmocka_unit_test_teardown(test_reaper_huge_pages, teardown),
        cmocka_unit_test_teardown(test_reaper_term_while_creating, teardown),
        cmocka_unit_test_teardown(test_libuv_subscriber_in_order, teardown),
        cmocka_unit_test_teardown(test_slow_subscriber_lapped, teardown),
        cmocka_unit_test_teardown(test_dead_producer_at_claim, teardown),
        cmocka_unit_test_teardown(test_dead_producer_at_commit, teardown),
        cmocka_unit_test_teardown(test_one_hop_wakeup, teardown),
        cmocka_unit_test_teardown(test_no_lost_wakeup, teardown),
        cmocka_unit_test_teardown(test_no_lost_wakeup_prune, teardown),
        cmocka_unit_test_teardown(test_dead_subscriber, teardown),
        cmocka_unit_test_teardown(test_latency_figures, teardown),
    };
    signal(SIGPIPE, SIG_IGN);
    if (getenv("PRESENCE_TEST_FILTER")) /* e.g. test_no_lost_wakeup */
        cmocka_set_test_filter(getenv("PRESENCE_TEST_FILTER"));
    return cmocka_run_group_tests_name("reaper", tests, NULL, NULL);
}
