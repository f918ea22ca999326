/*
 * ipc.c -- the client side of the reaper protocol (ipc.h), and the producer's
 * half of event wake-ups.
 *
 * Registration: a process registers with the running reaper (its pidfd, so
 * the reaper learns of its death at once) and receives the reaper's doorbell; a
 * subscriber hands over its eventfd. Registration is best effort: without a
 * reaper everything works except wake-ups.
 *
 * Wake-ups (pr__wake, from pr__emit after its fence, when ring_waiters != 0):
 * one hop. The process keeps a copy of the reaper's subscriber eventfds (struct
 * pr_wake: dups received by SCM_RIGHTS, tagged with header.subs_gen and the
 * reaper) and, while that copy is current, swaps each listed armed slot's
 * waiting word 1 -> 0 and writes its eventfd itself. Otherwise it rings the
 * reaper's doorbell (the reaper relays) and asks for a new copy without waiting
 * for it (PR_IPC_SUBS_GET; the answer is taken by a later call). Why a current
 * copy suffices: the reaper bumps subs_gen after every change of its set and
 * before it acknowledges a subscriber, who arms only after that; so a
 * subscriber armed before our fence whose eventfd the reaper holds is in a copy
 * whose gen we still read after the fence. One armed in a listed slot under
 * another tag (a later subscription, which the reaper does not hold) is left to
 * the doorbell. pr__emit may run under registry locks, with the reaper's sweep
 * waiting for them: nothing here ever waits for the reaper (trylock, non-blocking
 * sockets and eventfds).
 *
 * Invariants: p->ipc_lock guards ipc_fd, doorbell_fd, ipc_reaper and *p->wake;
 * the copy's descriptors are closed whenever the connection is reset (another
 * reaper, an error) and on presence_close; a copy is used only while its reaper
 * is header.reaper_owner and its gen is header.subs_gen.
 */
#include "internal.h"
#include "ipc.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

_Static_assert(PR_IPC_MAXSUBS == PR_NSUBS, "one PR_IPC_SUBS message holds every subscription");

int pr__ipc_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags)
{
    struct iovec iov = {(void *) buf, len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * PR_IPC_MAXSUBS)];
        struct cmsghdr align;
    } u;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds < 0 || nfds > PR_IPC_MAXSUBS)
        return -EINVAL;
    if (nfds > 0) {
        memset(&u, 0, sizeof u);
        msg.msg_control = u.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t) nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t) nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t) nfds);
    }
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t) len ? 0 : (n < 0 ? -errno : -EPROTO);
}

int pr__ipc_send(int sock, const struct pr_ipc_msg *m, int fd)
{
    return pr__ipc_send_fds(sock, m, sizeof *m, &fd, fd >= 0 ? 1 : 0, 0);
}

/* Receives one message of at most @size bytes into @buf with up to @maxfds
 * descriptors (*nfds of them, in @fds). Returns its length, or -errno
 * (-ECONNRESET at end of file), -EPROTO (bad magic, truncated); on an error no
 * descriptor is left open. */
static ssize_t recv_msg(int sock, void *buf, size_t size, int flags, int *fds, int maxfds,
                        int *nfds)
{
    struct iovec iov = {buf, size};
    union {
        char buf[CMSG_SPACE(sizeof(int) * PR_IPC_MAXSUBS)];
        struct cmsghdr align;
    } u;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    *nfds = 0;
    ssize_t n;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | flags);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    bool bad = n == 0 || (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (*nfds < maxfds)
                fds[(*nfds)++] = fd;
            else {
                close(fd);
                bad = true;
            }
        }
    }
    uint32_t magic = 0;
    if (n >= (ssize_t) sizeof magic)
        memcpy(&magic, buf, sizeof magic);
    if (bad || magic != PR_IPC_MAGIC) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        return n == 0 ? -ECONNRESET : -EPROTO;
    }
    return n;
}

int pr__ipc_recv(int sock, struct pr_ipc_msg *m, int *fd)
{
    int fds[1], nfds = 0;
    *fd = -1;
    ssize_t n = recv_msg(sock, m, sizeof *m, 0, fds, 1, &nfds);
    if (n < 0)
        return (int) n;
    if (n != (ssize_t) sizeof *m) {
        if (nfds)
            close(fds[0]);
        return -EPROTO;
    }
    if (nfds)
        *fd = fds[0];
    return 0;
}

/* ---- the copy of the reaper's subscriber eventfds ---------------------------- */

static void wake_drop(struct presence *p)
{
    struct pr_wake *w = p->wake;
    if (!w)
        return;
    for (uint32_t i = 0; i < w->n; i++)
        close(w->e[i].fd);
    w->n = 0;
    w->valid = false;
    w->pending = false;
}

/* Installs the set @s received with its descriptors (owned by us from here). */
static int wake_install(struct presence *p, const struct pr_ipc_subs *s, const int *fds, int nfds)
{
    int rc = s->n <= PR_NSUBS && (uint32_t) nfds == s->n ? 0 : -EPROTO;
    for (uint32_t i = 0; rc == 0 && i < s->n; i++)
        rc = s->e[i].slot < PR_NSUBS ? 0 : -EPROTO;
    if (rc == 0 && !p->wake && !(p->wake = calloc(1, sizeof *p->wake)))
        rc = -ENOMEM;
    if (rc) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return rc;
    }
    struct pr_wake *w = p->wake;
    for (uint32_t i = 0; i < w->n; i++)
        close(w->e[i].fd);
    for (uint32_t i = 0; i < s->n; i++) {
        w->e[i].slot = s->e[i].slot;
        w->e[i].tag = s->e[i].tag;
        w->e[i].fd = fds[i];
    }
    w->n = s->n;
    w->gen = s->gen;
    w->reaper = p->ipc_reaper;
    w->valid = true;
    w->pending = false;
    w->fills++;
    return 0;
}

/* Takes one message from the reaper (@flags: MSG_DONTWAIT or 0): a set is
 * installed (PR_IPC_SUBS returned); an ACK's status goes to *status (PR_IPC_ACK
 * returned). Or -EAGAIN, -errno, -EPROTO. ipc_lock held. */
static int ipc_take(struct presence *p, int flags, int32_t *status, int *fd)
{
    union {
        struct pr_ipc_msg m;
        struct pr_ipc_subs s;
    } u;
    int fds[PR_IPC_MAXSUBS], nfds = 0;
    if (fd)
        *fd = -1;
    ssize_t n = recv_msg(p->ipc_fd, &u, sizeof u, flags, fds, PR_IPC_MAXSUBS, &nfds);
    if (n < 0)
        return (int) n;
    if (n >= (ssize_t) offsetof(struct pr_ipc_subs, e) && u.s.type == PR_IPC_SUBS &&
        u.s.n <= PR_IPC_MAXSUBS &&
        (size_t) n == offsetof(struct pr_ipc_subs, e) + u.s.n * sizeof u.s.e[0]) {
        int rc = wake_install(p, &u.s, fds, nfds);
        return rc ? rc : PR_IPC_SUBS;
    }
    if (n == (ssize_t) sizeof u.m && u.m.type == PR_IPC_ACK && nfds <= (fd ? 1 : 0)) {
        *status = u.m.status;
        if (nfds > 0 && fd)
            *fd = fds[0];
        return PR_IPC_ACK;
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    return -EPROTO;
}

/* ---- registration --------------------------------------------------------------- */

static void ipc_reset(struct presence *p)
{
    wake_drop(p);
    if (p->ipc_fd >= 0)
        close(p->ipc_fd);
    if (p->doorbell_fd >= 0)
        close(p->doorbell_fd);
    p->ipc_fd = -1;
    pr_store(&p->doorbell_fd, -1);
}

/* Connects to the reaper @owner and sends our registration (PR_IPC_PROC with
 * our pidfd). Returns the socket (non-blocking if @nowait) or -errno. */
static int ipc_start(struct presence *p, uint64_t owner, bool nowait)
{
    if (owner == 0 || !pr__proc_alive(p, (uint32_t) owner - 1, (uint32_t) (owner >> 32)))
        return -ENOTCONN;
    if (owner == (((uint64_t) p->proc_gen << 32) | (p->proc + 1)))
        return -EDEADLK; /* never register with ourselves */
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, p->h->reaper_socket, sizeof sa.sun_path - 1);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | (nowait ? SOCK_NONBLOCK : 0), 0);
    if (s < 0)
        return -errno;
    /* A reaper that stopped answering must not hang us: bounded round trips. */
    struct timeval tv = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(s, (struct sockaddr *) &sa, sizeof sa) != 0) {
        int rc = -errno;
        close(s);
        return rc;
    }
    int pidfd = (int) syscall(SYS_pidfd_open, getpid(), 0);
    struct pr_ipc_msg m = {PR_IPC_MAGIC, PR_IPC_PROC, p->proc, p->proc_gen, 0, 0, 0, 0};
    int rc = pr__ipc_send(s, &m, pidfd);
    if (pidfd >= 0)
        close(pidfd);
    if (rc) {
        close(s);
        return rc;
    }
    return s;
}

/* Takes the reaper's answer to ipc_start() (ipc_fd set): 0 with its doorbell
 * installed, -EAGAIN (not yet, non-blocking socket), or an error. */
static int ipc_finish(struct presence *p, int flags)
{
    int32_t status = 0;
    int fd = -1;
    int rc = ipc_take(p, flags, &status, &fd);
    if (rc == PR_IPC_ACK)
        rc = status ? status : fd < 0 ? -EPROTO : 0;
    else if (rc >= 0)
        rc = -EPROTO; /* nothing else can come before the answer to PR_IPC_PROC */
    if (rc) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    pr_store(&p->doorbell_fd, fd);
    return 0;
}

/* Registers with the current reaper if it changed since we last did. Returns 0
 * when registered, or a negative error (no reaper, refused...). A round trip
 * with the reaper: never call it holding a registry lock (see pr__wake). */
int pr__ipc_register(struct presence *p)
{
    if (p->rdonly)
        return -EROFS;
    uint64_t owner = pr_load(&p->h->reaper_owner);
    pthread_mutex_lock(&p->ipc_lock);
    int rc = 0;
    if (owner == p->ipc_reaper && p->doorbell_fd >= 0)
        goto out;
    ipc_reset(p); /* also drops a registration pr__wake left half-done */
    p->ipc_reaper = owner;
    int s = ipc_start(p, owner, false);
    if (s < 0) {
        rc = s;
        goto out;
    }
    p->ipc_fd = s;
    rc = ipc_finish(p, 0);
    if (rc)
        ipc_reset(p);
out:
    pthread_mutex_unlock(&p->ipc_lock);
    return rc;
}

/* The registration pr__wake does, which never waits: it runs inside pr__emit,
 * under the room's lock, and the reaper's sweep may be waiting for that very
 * lock, so a round trip there would stall this writer, the room and the reaper
 * for the socket timeout (1 s). Starts the registration, or picks up the
 * reaper's answer once it has come. Returns 0 when registered. ipc_lock held. */
static int ipc_register_nowait(struct presence *p, uint64_t owner)
{
    if (owner != p->ipc_reaper) {
        ipc_reset(p);
        p->ipc_reaper = owner;
    }
    if (p->doorbell_fd >= 0)
        return 0;
    if (p->ipc_fd < 0) { /* start: connect and send, no answer awaited */
        int s = ipc_start(p, owner, true);
        if (s < 0)
            return s;
        p->ipc_fd = s;
    }
    int rc = ipc_finish(p, MSG_DONTWAIT);
    if (rc == 0) /* registered: round trips on this socket (subscriptions) block again */
        fcntl(p->ipc_fd, F_SETFL, fcntl(p->ipc_fd, F_GETFL) & ~O_NONBLOCK);
    else if (rc != -EAGAIN)
        ipc_reset(p); /* refused or gone: start again next time */
    return rc;
}

/* Hands a subscriber's eventfd to the reaper (slot @slot, its tag @tag). The
 * reaper bumps subs_gen before it answers, so the caller arms only after every
 * producer's copy that lacks this eventfd has become stale. */
int pr__ipc_subscribe(struct presence *p, uint32_t slot, uint32_t tag, int efd)
{
    int rc = pr__ipc_register(p);
    if (rc)
        return rc;
    pthread_mutex_lock(&p->ipc_lock);
    struct pr_ipc_msg m = {PR_IPC_MAGIC, PR_IPC_SUB, p->proc, p->proc_gen, slot, 0, tag, 0};
    rc = p->ipc_fd >= 0 ? pr__ipc_send(p->ipc_fd, &m, efd) : -ENOTCONN;
    while (rc == 0) { /* a set we asked for may come first */
        int32_t status = 0;
        int t = ipc_take(p, 0, &status, NULL);
        if (t == PR_IPC_ACK) {
            rc = status;
            break;
        }
        if (t < 0)
            rc = t;
    }
    if (rc)
        ipc_reset(p);
    pthread_mutex_unlock(&p->ipc_lock);
    return rc;
}

/* ---- wake-ups --------------------------------------------------------------------- */

static void ring(int fd)
{
    if (fd >= 0) {
        uint64_t one = 1;
        ssize_t n = write(fd, &one, sizeof one);
        (void) n; /* EAGAIN: the counter is saturated, the reader is awake anyway */
    }
}

void pr__wake(struct presence *p)
{
    struct pr_header *h = p->h;
    uint64_t owner = pr_load(&h->reaper_owner);
    if (owner == (((uint64_t) p->proc_gen << 32) | (p->proc + 1)))
        return; /* we are the reaper: it wakes subscribers after each of its own passes */
    if (pthread_mutex_trylock(&p->ipc_lock) != 0) {
        /* Another thread of ours is at it (perhaps a round trip): the reaper relays. */
        ring(pr_load(&p->doorbell_fd));
        return;
    }
    if ((owner != p->ipc_reaper || p->doorbell_fd < 0) && ipc_register_nowait(p, owner) != 0)
        goto out; /* not registered yet: the reaper's next sweep wakes the subscribers */
    struct pr_wake *w = p->wake;
    if (!w && !(w = p->wake = calloc(1, sizeof *w))) {
        ring(p->doorbell_fd);
        goto out;
    }
    while (w->pending) { /* the answer to our request, if it has come */
        int rc = ipc_take(p, MSG_DONTWAIT, &(int32_t){0}, NULL);
        if (rc == -EAGAIN)
            break;
        if (rc < 0 || rc == PR_IPC_ACK) { /* gone or confused: ring, then start again */
            ring(p->doorbell_fd);
            ipc_reset(p);
            goto out;
        }
    }
    bool bell = true;
    uint32_t gen = pr_load(&h->subs_gen); /* after pr__emit's fence */
    if (w->valid && w->reaper == owner && w->gen == gen) {
        bell = false;
        for (uint32_t i = 0; i < w->n; i++) {
            struct pr_sub *ss = &h->subs[w->e[i].slot];
            if (pr_load(&ss->waiting) == 0)
                continue;
            if (pr_load(&ss->tag) != w->e[i].tag) {
                bell = true; /* a later subscription in that slot: not ours to wake */
                continue;
            }
            if (pr_xchg(&ss->waiting, 0u) == 1u) {
                ring(w->e[i].fd); /* first: the count is only the producers' filter */
                pr_fetch_add(&h->ring_waiters, (uint32_t) -1);
                w->direct++;
            }
        }
    } else if (!w->pending) {
        struct pr_ipc_msg m = {PR_IPC_MAGIC, PR_IPC_SUBS_GET, p->proc, p->proc_gen, 0, 0, 0, 0};
        if (pr__ipc_send_fds(p->ipc_fd, &m, sizeof m, NULL, 0, MSG_DONTWAIT) == 0)
            w->pending = true; /* else (socket full, or gone): asked again next time */
    }
    if (bell) {
        ring(p->doorbell_fd);
        w->bells++;
    }
out:
    pthread_mutex_unlock(&p->ipc_lock);
}

void pr__ipc_close(struct presence *p)
{
    ipc_reset(p);
    free(p->wake);
    p->wake = NULL;
}
