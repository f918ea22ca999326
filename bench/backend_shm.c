/*
 * backend_shm.c -- presence-bench: our library, called through include/presence.h
 * exactly as a user would call it.
 *
 * Each run creates a fresh segment with a unique name (/presence-bench-<pid>-<n>),
 * sized for the workload (presence_options_t capacities, with headroom for records
 * retired but not yet reclaimed), and unlinks it at the end. Every process attaches by
 * name with presence_open(). touch is by connection name; the touch_handle row uses
 * presence_touch_handle() with handles from presence_join_ex(). here_now asks for the
 * uuids only (PRESENCE_UUIDS_ONLY), what the rwlock baseline lists and PubNub's here-now
 * answers (the connection ids too would be a second name per occupant). The parent runs
 * presence_maintain() every few milliseconds during a run, standing in for the reaper
 * daemon.
 *
 * Sizing: capacities are the workload's needs plus 1/8 and SHM_HEADROOM records (for
 * records retired but not yet reclaimed), so a 10M-presence run asks for ~11.3M
 * presence and connection records, not twice the population.
 *
 * The events workload needs the real daemon: setup() then starts presence-reaper
 * (spec->reaper) on the new segment with a private socket under /tmp, waits until it
 * has claimed the segment and accepts registrations, and teardown() stops it with
 * SIGTERM (by its pid) and waits for it. Its log goes to a file next to the socket,
 * quoted in the error when it fails to start.
 */
#include "backend.h"
#include "cleanup.h"

#include <presence.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SHM_HEADROOM    65536u       /* records that may sit retired between maintenance passes */
#define SHM_ARENA_MAX   (1ull << 30) /* the largest arena presence_open() accepts */
#define REAPER_WAIT_MS  5000         /* how long the reaper may take to claim the segment */
#define REAPER_SWEEP_MS "1000"       /* its sweep period: nothing expires in these workloads */

typedef struct shm_store {
    char name[64];
    pid_t reaper;   /* 0: none */
    char sock[108]; /* its registration socket */
    char log[128];  /* its stderr */
} shm_store_t;

static void ms_sleep(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The first line of the reaper's log, for an error message. */
static void log_line(const shm_store_t *st, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(st->log, "re");
    if (f == NULL)
        return;
    if (fgets(buf, (int) len, f) == NULL)
        buf[0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    fclose(f);
}

/* 1 once something accepts connections on the reaper's socket. */
static int socket_ready(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int ok = connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static void reaper_stop(shm_store_t *st)
{
    if (st->reaper <= 0)
        return;
    kill(st->reaper, SIGTERM);
    int status;
    for (int i = 0; i < 2000; i++) {
        pid_t r = waitpid(st->reaper, &status, WNOHANG);
        if (r == st->reaper || (r < 0 && errno == ECHILD))
            break;
        if (i == 1999) {
            kill(st->reaper, SIGKILL);
            waitpid(st->reaper, &status, 0);
        }
        ms_sleep(1);
    }
    cleanup_del_pid(st->reaper);
    st->reaper = 0;
    unlink(st->sock);
    cleanup_del_path(st->sock);
    unlink(st->log);
    cleanup_del_path(st->log);
}

/* Starts presence-reaper on the segment; waits until it is the segment's reaper and
 * its socket accepts. @return 0 or -1 with @p err. */
static int reaper_start(shm_store_t *st, presence_t *p, const char *exe, char *err, size_t errlen)
{
    snprintf(st->sock, sizeof st->sock, "/tmp/presence-bench-%d-%s.sock", (int) getpid(),
             strrchr(st->name, '-') + 1);
    snprintf(st->log, sizeof st->log, "/tmp/presence-bench-%d-%s.reaper.log", (int) getpid(),
             strrchr(st->name, '-') + 1);
    unlink(st->sock);
    cleanup_add_path(st->sock, 0);
    cleanup_add_path(st->log, 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "shm: starting the reaper: fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        cleanup_forget_all();
        int fd = open(st->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        execl(exe, exe, "-s", st->name, "--socket", st->sock, "--sweep-ms", REAPER_SWEEP_MS,
              (char *) NULL);
        fprintf(stderr, "exec %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    st->reaper = pid;
    cleanup_add_pid(pid);
    for (int i = 0; i < REAPER_WAIT_MS; i++) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            char line[200];
            cleanup_del_pid(pid);
            st->reaper = 0;
            log_line(st, line, sizeof line);
            snprintf(err, errlen, "shm: presence-reaper (%s) exited at start: %s", exe,
                     line[0] ? line : "no message");
            reaper_stop(st);
            return -1;
        }
        presence_stats_t s;
        if (presence_stats(p, &s) == 0 && s.reaper_pid == pid && socket_ready(st->sock))
            return 0;
        ms_sleep(1);
    }
    snprintf(err, errlen, "shm: presence-reaper (%s) did not claim the segment in %d ms", exe,
             REAPER_WAIT_MS);
    reaper_stop(st);
    return -1;
}

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
    o.rooms = cap32(spec->rooms + spec->rooms / 8 + 64);
    o.connections = cap32(spec->connections + spec->connections / 8 + SHM_HEADROOM);
    o.presences = cap32(spec->presences + spec->presences / 8 + SHM_HEADROOM);
    /* The arena's cells are powers of two from 64 B, each with a 24-byte header: a name
     * of up to 39 bytes (rooms, connections, users) takes 64 B, a state its class. */
    uint64_t names = (uint64_t) o.rooms + 2ull * o.connections, cell = 64;
    while (cell < (uint64_t) spec->state_len + 24)
        cell *= 2;
    o.arena_bytes = 16u * 1024 * 1024 + names * 64 + (spec->state_len ? o.presences * cell : 0);
    if (o.arena_bytes > SHM_ARENA_MAX) /* the library's limit: loading then fails with ENOSPC */
        o.arena_bytes = SHM_ARENA_MAX;
    if (o.procs < spec->procs + 8)
        o.procs = spec->procs + 8;
    if (o.readers < 4 * spec->procs + 16)
        o.readers = 4 * spec->procs + 16;
    o.flags = PRESENCE_CREATE | PRESENCE_EXCL | (spec->huge_pages ? PRESENCE_HUGE_PAGES : 0);

    presence_t *p = NULL;
    int rc = presence_open(st->name, &o, &p);
    if (rc != 0) {
        snprintf(err, errlen, "shm: creating %s: %s", st->name, presence_strerror(rc));
        if (rc != -EEXIST) /* created, then refused (the name is ours alone): remove it */
            presence_unlink(st->name);
        free(st);
        return -1;
    }
    presence_options_t got;
    presence_get_options(p, &got);
    if (spec->huge_pages && !(got.flags & PRESENCE_HUGE_PAGES))
        fprintf(stderr, "presence-bench: shm: the kernel did not give the segment 2 MiB pages; "
                        "running in 4 KiB pages\n");
    cleanup_add_shm(st->name);
    if (spec->reaper != NULL && reaper_start(st, p, spec->reaper, err, errlen) != 0) {
        presence_close(p);
        presence_unlink(st->name);
        cleanup_del_shm(st->name);
        free(st);
        return -1;
    }
    presence_close(p);
    *store = st;
    return 0;
}

static void shm_teardown(void *store)
{
    shm_store_t *st = store;
    if (st == NULL)
        return;
    reaper_stop(st);
    presence_unlink(st->name);
    cleanup_del_shm(st->name);
    free(st);
}

static int shm_open_(void *store, void **h, char *err, size_t errlen)
{
    shm_store_t *st = store;
    presence_t *p = NULL;
    presence_options_t o;
    presence_options_init(&o);
    o.flags = PRESENCE_POPULATE; /* a long-lived worker's steady state: no page faults */
    int rc = presence_open(st->name, &o, &p);
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
    int rc = presence_here_now(h, &room, 1, NULL, 0, PRESENCE_UUIDS_ONLY, 0, 0, &res);
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

static int shm_store_info(void *h, bench_store_info_t *out)
{
    presence_stats_t s;
    int rc = presence_stats(h, &s);
    if (rc < 0)
        return rc;
    memset(out, 0, sizeof *out);
    out->store_bytes = s.segment_bytes;
    out->presences = s.presences;
    out->presences_cap = s.presences_cap;
    out->connections = s.connections;
    out->connections_cap = s.connections_cap;
    out->rooms = s.rooms;
    out->rooms_cap = s.rooms_cap;
    out->names_bytes = s.arena_used;
    out->names_cap = s.arena_cap;
    out->bytes_per_presence = s.bytes_per_presence;
    return 0;
}

static int shm_ev_subscribe(void *h, const char *room, void **sub)
{
    presence_sub_t *s = NULL;
    int rc = presence_subscribe(h, PRESENCE_SEQ_NOW, room, &s);
    if (rc < 0)
        return rc;
    *sub = s;
    return 0;
}

static int shm_ev_fd(void *sub)
{
    return presence_sub_fd(sub);
}

static int shm_ev_next(void *sub, bench_event_t *ev)
{
    presence_event_t e;
    int rc = presence_sub_next(sub, &e);
    if (rc == PRESENCE_ELAPPED)
        return BENCH_EV_LAPPED;
    if (rc != 1)
        return rc;
    ev->type = e.type == PRESENCE_EV_JOIN    ? BENCH_EV_JOIN
               : e.type == PRESENCE_EV_LEAVE ? BENCH_EV_LEAVE
                                             : BENCH_EV_OTHER;
    ev->conn = e.conn;
    ev->time_ns = e.time_ns;
    return 1;
}

static void shm_ev_close(void *sub)
{
    presence_sub_close(sub);
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
    .store_info = shm_store_info,
    .ev_subscribe = shm_ev_subscribe,
    .ev_fd = shm_ev_fd,
    .ev_next = shm_ev_next,
    .ev_close = shm_ev_close,
    .errstr = shm_errstr,
};
