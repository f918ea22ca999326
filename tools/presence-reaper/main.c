/*
 * presence-reaper -- the one maintenance daemon of a segment (libuv).
 *
 * It owns nothing in the segment that the library does not already define; it
 * only drives it:
 *   - a timer runs presence_reaper_sweep() every --sweep-ms (expiry, dead
 *     owners, empty rooms, repair, reclamation) and wakes armed subscribers;
 *   - a SOCK_SEQPACKET socket accepts registrations (src/ipc.h): a process sends
 *     its pidfd, which the loop watches (readable when it exits: its bound
 *     connections go at once, reason owner_died) and gets the doorbell eventfd
 *     back; a subscriber sends its eventfd (with its slot's tag);
 *   - the set of subscriber eventfds it holds (sub_fd/sub_tag) is handed, dup'd
 *     by SCM_RIGHTS, to any registered process that asks (PR_IPC_SUBS_GET), so
 *     that producers write armed subscribers' eventfds themselves (one hop).
 *     Every change of that set (a subscriber's eventfd received, a dead or
 *     closed subscription's eventfd dropped at a sweep) bumps header.subs_gen
 *     before anyone is told, which makes producers' copies stale;
 *   - the doorbell, the fallback: a producer with no current copy (or no
 *     registration) rings it when a subscriber is armed; the reaper then writes
 *     the eventfd of each armed subscriber that is behind, as it also does
 *     after every sweep.
 * Peers must have our uid (SO_PEERCRED) and send a pidfd naming themselves.
 * SIGTERM/SIGINT end it cleanly; the segment and its presences stay, and a new
 * reaper (after a crash too) takes over where this one stopped.
 */
#include "ipc.h"
#include "presence.h"

#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#define NSUBS 64 /* PR_NSUBS */

struct client {
    uv_poll_t poll;
    int fd;
    pid_t pid;
    bool registered; /* sent PR_IPC_PROC with a pidfd naming itself */
};

struct watch {
    uv_poll_t poll;
    int pidfd;
    pid_t pid;
};

static struct {
    presence_t *p;
    const char *seg;
    char sock_path[108];
    int listen_fd, doorbell_fd;
    int sub_fd[NSUBS];
    uint32_t sub_tag[NSUBS]; /* the tag of the subscription sub_fd[i] belongs to */
    uint64_t sweep_ms;
    int verbose;
    uv_loop_t *loop;
    uv_timer_t timer;
    uv_poll_t listen_poll, bell_poll;
    uv_signal_t sigint, sigterm;
} R;

static void logf_(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(int level, const char *fmt, ...)
{
    if (level > R.verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "presence-reaper[%d]: ", (int) getpid());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void wake_one(void *ctx, uint32_t slot)
{
    (void) ctx;
    if (slot < NSUBS && R.sub_fd[slot] >= 0 && R.sub_tag[slot] == pr__sub_tag(R.p, slot)) {
        uint64_t one = 1;
        if (write(R.sub_fd[slot], &one, sizeof one) < 0 && errno != EAGAIN)
            logf_(1, "wake subscriber %u: %s", slot, strerror(errno));
    }
}

/* Drops the eventfds of subscriptions that ended (closed, or their process
 * died: the sweep has freed the slot) or whose slot another subscription took;
 * subs_gen moves if any went. */
static void subs_collect(void)
{
    bool changed = false;
    for (uint32_t i = 0; i < NSUBS; i++)
        if (R.sub_fd[i] >= 0 &&
            (!presence_reaper_sub_alive(R.p, i) || R.sub_tag[i] != pr__sub_tag(R.p, i))) {
            close(R.sub_fd[i]);
            R.sub_fd[i] = -1;
            changed = true;
            logf_(2, "subscriber slot %u gone", i);
        }
    if (changed)
        pr__reaper_subs_changed(R.p);
}

/* Sends the set of subscriber eventfds we hold, with its subs_gen, to @fd. */
static int subs_send(int fd)
{
    subs_collect(); /* nothing that is known to be gone */
    struct pr_ipc_subs m;
    int fds[NSUBS];
    memset(&m, 0, sizeof m);
    m.magic = PR_IPC_MAGIC;
    m.type = PR_IPC_SUBS;
    m.gen = pr__reaper_subs_gen(R.p);
    for (uint32_t i = 0; i < NSUBS; i++)
        if (R.sub_fd[i] >= 0) {
            m.e[m.n].slot = i;
            m.e[m.n].tag = R.sub_tag[i];
            fds[m.n++] = R.sub_fd[i];
        }
    return pr__ipc_send_fds(fd, &m, offsetof(struct pr_ipc_subs, e) + m.n * sizeof m.e[0], fds,
                            (int) m.n, 0);
}

static void sweep(const char *why)
{
    presence_sweep_stats_t st;
    int rc = presence_reaper_sweep(R.p, &st);
    if (rc < 0) {
        logf_(0, "sweep: %s", presence_strerror(rc));
        return;
    }
    presence_reaper_wake(R.p, wake_one, NULL);
    subs_collect();
    if (st.expired || st.owner_died || st.rooms_deleted || st.reclaimed)
        logf_(1, "sweep (%s): expired %d, owner_died %d, rooms deleted %d, reclaimed %d in %.3f ms",
              why, st.expired, st.owner_died, st.rooms_deleted, st.reclaimed,
              (double) st.duration_ns / 1e6);
}

static void on_timer(uv_timer_t *t)
{
    (void) t;
    sweep("timer");
}

static void on_bell(uv_poll_t *h, int status, int events)
{
    (void) h;
    (void) status;
    (void) events;
    uint64_t n;
    while (read(R.doorbell_fd, &n, sizeof n) > 0) {
    }
    presence_reaper_wake(R.p, wake_one, NULL);
}

static void on_close_free(uv_handle_t *h)
{
    free(h->data);
}

static void on_pidfd(uv_poll_t *h, int status, int events)
{
    (void) status;
    (void) events;
    struct watch *w = h->data;
    logf_(1, "process %d exited", (int) w->pid);
    uv_poll_stop(h);
    close(w->pidfd);
    uv_close((uv_handle_t *) h, on_close_free);
    sweep("process exit"); /* its bound connections go now */
}

/* The pid a pidfd refers to (from /proc/self/fdinfo), or -1. */
static pid_t pidfd_pid(int pidfd)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pidfd);
    FILE *f = fopen(path, "re");
    pid_t pid = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Pid: %d", &pid) == 1)
            break;
    fclose(f);
    return pid;
}

static void client_drop(struct client *c)
{
    uv_poll_stop(&c->poll);
    close(c->fd);
    uv_close((uv_handle_t *) &c->poll, on_close_free);
}

static void on_client(uv_poll_t *h, int status, int events)
{
    (void) events;
    struct client *c = h->data;
    struct pr_ipc_msg m;
    int fd = -1;
    int rc = status < 0 ? status : pr__ipc_recv(c->fd, &m, &fd);
    if (rc < 0 || (m.type != PR_IPC_PROC && m.type != PR_IPC_SUB && m.type != PR_IPC_SUBS_GET)) {
        if (fd >= 0)
            close(fd);
        client_drop(c);
        return;
    }
    if (m.type == PR_IPC_SUBS_GET) { /* answered by the set itself, no ACK */
        if (fd >= 0)
            close(fd);
        if (!c->registered) { /* only for processes we watch */
            client_drop(c);
            return;
        }
        rc = subs_send(c->fd);
        if (rc != 0) {
            logf_(1, "subscriber set to process %d: %s", (int) c->pid, strerror(-rc));
            client_drop(c);
        } else {
            logf_(3, "subscriber set to process %d", (int) c->pid);
        }
        return;
    }
    struct pr_ipc_msg ack = {PR_IPC_MAGIC, PR_IPC_ACK, 0, 0, 0, 0, 0, 0};
    int send_fd = -1;
    if (m.type == PR_IPC_PROC) {
        if (fd < 0 || pidfd_pid(fd) != c->pid) {
            ack.status = -EPERM; /* the pidfd must name the peer itself */
            if (fd >= 0)
                close(fd);
        } else {
            c->registered = true;
            struct watch *w = calloc(1, sizeof *w);
            if (w && uv_poll_init(R.loop, &w->poll, fd) == 0) {
                w->pidfd = fd;
                w->pid = c->pid;
                w->poll.data = w;
                uv_poll_start(&w->poll, UV_READABLE, on_pidfd);
                logf_(2, "registered process %d (slot %u)", (int) c->pid, m.proc);
            } else {
                free(w);
                close(fd);
            }
            send_fd = R.doorbell_fd;
        }
    } else {
        if (fd < 0 || m.sub_slot >= NSUBS) {
            ack.status = -EINVAL;
            if (fd >= 0)
                close(fd);
        } else {
            if (R.sub_fd[m.sub_slot] >= 0)
                close(R.sub_fd[m.sub_slot]);
            R.sub_fd[m.sub_slot] = fd;
            R.sub_tag[m.sub_slot] = m.tag;
            /* Before the ACK: the subscriber arms only after it, and by then
             * every producer's copy without this eventfd is stale. */
            pr__reaper_subs_changed(R.p);
            logf_(2, "subscriber slot %u (tag %u) of process %d", m.sub_slot, m.tag, (int) c->pid);
        }
    }
    if (pr__ipc_send(c->fd, &ack, send_fd) != 0)
        client_drop(c);
    else if (m.type == PR_IPC_SUB && ack.status == 0)
        presence_reaper_wake(R.p, wake_one, NULL);
}

static void on_listen(uv_poll_t *h, int status, int events)
{
    (void) h;
    (void) status;
    (void) events;
    for (;;) {
        int fd = accept4(R.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        struct ucred cred;
        socklen_t len = sizeof cred;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != geteuid()) {
            logf_(0, "refused a connection from uid %d", (int) cred.uid);
            close(fd);
            continue;
        }
        struct client *c = calloc(1, sizeof *c);
        if (!c || uv_poll_init(R.loop, &c->poll, fd) != 0) {
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->pid = cred.pid;
        c->poll.data = c;
        uv_poll_start(&c->poll, UV_READABLE, on_client);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    logf_(1, "signal %d: stopping", signum);
    uv_stop(s->loop);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: presence-reaper [-s SEGMENT] [--create [CAPACITIES]] [--max-age S]\n"
            "                       [--sweep-ms MS] [--socket PATH] [-v]...\n"
            "\n"
            "The maintenance daemon of a presence segment: expires connections that\n"
            "stopped heartbeating, removes those of dead processes (reason owner_died)\n"
            "at once, deletes empty rooms, reclaims memory, and wakes event subscribers.\n"
            "Runs in the foreground and logs to stderr; SIGTERM/SIGINT stop it cleanly.\n"
            "\n"
            "  -s, --segment NAME     segment (default $PRESENCE_SEGMENT, else 'default')\n"
            "      --create           create the segment if it does not exist\n"
            "      --rooms N  --connections N  --presences N  --groups N  --arena BYTES\n"
            "      --ring N           capacities for --create\n"
            "      --max-age S        default connection timeout for --create (60)\n"
            "      --huge-pages       with --create: back the segment with 2 MiB pages\n"
            "      --sweep-ms MS      sweep period (default 1000)\n"
            "      --socket PATH      registration socket (default\n"
            "                         $XDG_RUNTIME_DIR/presence-SEGMENT.sock, else /tmp/...)\n"
            "  -v, --verbose          more logging (repeat for more)\n"
            "  -h, --help             this text\n"
            "\n"
            "Exit status: 0 stopped by a signal, 1 error (e.g. a reaper already runs), 2 usage.\n"
            "\n"
            "Example:\n"
            "  presence-reaper -s chat --create --presences 1000000 --sweep-ms 250 -v\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    presence_options_t o;
    presence_options_init(&o);
    R.seg = getenv("PRESENCE_SEGMENT") ? getenv("PRESENCE_SEGMENT") : "default";
    R.sweep_ms = 1000;
    const char *sock = NULL;
    bool create = false, huge = false;
    enum {
        O_CREATE = 256,
        O_ROOMS,
        O_CONNS,
        O_PRES,
        O_GROUPS,
        O_ARENA,
        O_RING,
        O_MAXAGE,
        O_SWEEP,
        O_SOCKET,
        O_HUGE
    };
    static const struct option longopts[] = {{"segment", required_argument, NULL, 's'},
                                             {"create", no_argument, NULL, O_CREATE},
                                             {"rooms", required_argument, NULL, O_ROOMS},
                                             {"connections", required_argument, NULL, O_CONNS},
                                             {"presences", required_argument, NULL, O_PRES},
                                             {"groups", required_argument, NULL, O_GROUPS},
                                             {"arena", required_argument, NULL, O_ARENA},
                                             {"ring", required_argument, NULL, O_RING},
                                             {"max-age", required_argument, NULL, O_MAXAGE},
                                             {"sweep-ms", required_argument, NULL, O_SWEEP},
                                             {"socket", required_argument, NULL, O_SOCKET},
                                             {"huge-pages", no_argument, NULL, O_HUGE},
                                             {"verbose", no_argument, NULL, 'v'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "s:vh", longopts, NULL)) != -1) {
        uint64_t v = 0;
        if (c >= O_ROOMS && c <= O_SWEEP && parse_u64(optarg, &v) != 0) {
            fprintf(stderr, "presence-reaper: invalid number '%s'\n", optarg);
            return 2;
        }
        switch (c) {
        case 's':
            R.seg = optarg;
            break;
        case O_CREATE:
            create = true;
            break;
        case O_ROOMS:
            o.rooms = (uint32_t) v;
            break;
        case O_CONNS:
            o.connections = (uint32_t) v;
            break;
        case O_PRES:
            o.presences = (uint32_t) v;
            break;
        case O_GROUPS:
            o.groups = (uint32_t) v;
            break;
        case O_ARENA:
            o.arena_bytes = v;
            break;
        case O_RING:
            o.ring_entries = (uint32_t) v;
            break;
        case O_MAXAGE:
            o.max_age_ms = v * 1000;
            break;
        case O_SWEEP:
            if (v == 0) {
                fprintf(stderr, "presence-reaper: --sweep-ms must be > 0\n");
                return 2;
            }
            R.sweep_ms = v;
            break;
        case O_SOCKET:
            sock = optarg;
            break;
        case O_HUGE:
            huge = true;
            break;
        case 'v':
            R.verbose++;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (huge && !create) {
        fprintf(stderr, "presence-reaper: --huge-pages only applies with --create\n");
        return 2;
    }
    if (sock)
        snprintf(R.sock_path, sizeof R.sock_path, "%s", sock);
    else if (getenv("XDG_RUNTIME_DIR"))
        snprintf(R.sock_path, sizeof R.sock_path, "%s/presence-%s.sock", getenv("XDG_RUNTIME_DIR"),
                 R.seg);
    else
        snprintf(R.sock_path, sizeof R.sock_path, "/tmp/presence-%s-%d.sock", R.seg,
                 (int) geteuid());

    /* SIGTERM and SIGINT are caught from here on, before the segment is made or
     * claimed: one that arrives while we start is acted on as the loop begins,
     * and we stop as cleanly as later (its default action would kill us with
     * the claim held). */
    R.loop = uv_default_loop();
    uv_signal_init(R.loop, &R.sigint);
    uv_signal_start(&R.sigint, on_signal, SIGINT);
    uv_signal_init(R.loop, &R.sigterm);
    uv_signal_start(&R.sigterm, on_signal, SIGTERM);

    /* POPULATE: the sweeps walk the whole segment; map it all now, not page by
     * page inside the first prunes */
    o.flags = (create ? PRESENCE_CREATE : 0) | (huge ? PRESENCE_HUGE_PAGES : 0) | PRESENCE_POPULATE;
    int rc = presence_open(R.seg, &o, &R.p);
    if (rc) {
        fprintf(stderr, "presence-reaper: segment '%s': %s\n", R.seg,
                rc == -ENOENT ? "does not exist (use --create)" : presence_strerror(rc));
        return 1;
    }
    pid_t other = 0;
    rc = presence_reaper_claim(R.p, R.sock_path, &other);
    if (rc) {
        if (rc == PRESENCE_EREAPER)
            fprintf(stderr, "presence-reaper: segment '%s' already has a reaper (pid %d)\n", R.seg,
                    (int) other);
        else
            fprintf(stderr, "presence-reaper: %s\n", presence_strerror(rc));
        presence_close(R.p);
        return 1;
    }
    for (int i = 0; i < NSUBS; i++)
        R.sub_fd[i] = -1;
    /* We are the reaper now: a socket file left by a dead one is stale. */
    unlink(R.sock_path);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, R.sock_path, strlen(R.sock_path));
    R.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    mode_t old = umask(0077);
    if (R.listen_fd < 0 || bind(R.listen_fd, (struct sockaddr *) &sa, sizeof sa) != 0 ||
        listen(R.listen_fd, 64) != 0) {
        umask(old);
        fprintf(stderr, "presence-reaper: socket %s: %s\n", R.sock_path, strerror(errno));
        presence_reaper_release(R.p);
        presence_close(R.p);
        return 1;
    }
    umask(old);
    R.doorbell_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    uv_timer_init(R.loop, &R.timer);
    uv_timer_start(&R.timer, on_timer, 0, R.sweep_ms);
    uv_poll_init(R.loop, &R.listen_poll, R.listen_fd);
    uv_poll_start(&R.listen_poll, UV_READABLE, on_listen);
    uv_poll_init(R.loop, &R.bell_poll, R.doorbell_fd);
    uv_poll_start(&R.bell_poll, UV_READABLE, on_bell);
    presence_options_t got;
    presence_get_options(R.p, &got);
    logf_(0, "segment '%s' (%s pages), socket %s, sweep every %llu ms", R.seg,
          (got.flags & PRESENCE_HUGE_PAGES) ? "2 MiB" : "4 KiB", R.sock_path,
          (unsigned long long) R.sweep_ms);
    if (huge && !(got.flags & PRESENCE_HUGE_PAGES))
        logf_(0, "warning: the segment is not in 2 MiB pages (it existed already, or the "
                 "kernel declined)");

    uv_run(R.loop, UV_RUN_DEFAULT);

    presence_reaper_release(R.p);
    unlink(R.sock_path);
    close(R.listen_fd);
    close(R.doorbell_fd);
    for (int i = 0; i < NSUBS; i++)
        if (R.sub_fd[i] >= 0)
            close(R.sub_fd[i]);
    presence_close(R.p);
    logf_(0, "stopped");
    return 0;
}
