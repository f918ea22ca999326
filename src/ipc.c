/*
 * ipc.c -- the client side of the registration protocol (ipc.h): a process
 * registers with the running reaper (its pidfd, so the reaper learns of its
 * death at once) and receives the reaper's doorbell; a subscriber hands over
 * its eventfd. Registration is best effort: without a reaper everything works
 * except wake-ups.
 */
#include "internal.h"
#include "ipc.h"

#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

int pr__ipc_send(int sock, const struct pr_ipc_msg *m, int fd)
{
    struct iovec iov = {(void *) m, sizeof *m};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (fd >= 0) {
        memset(&u, 0, sizeof u);
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t) sizeof *m ? 0 : (n < 0 ? -errno : -EPROTO);
}

int pr__ipc_recv(int sock, struct pr_ipc_msg *m, int *fd)
{
    struct iovec iov = {m, sizeof *m};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    *fd = -1;
    ssize_t n;
    do
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(fd, CMSG_DATA(c), sizeof *fd);
    if (n != (ssize_t) sizeof *m || m->magic != PR_IPC_MAGIC || (msg.msg_flags & MSG_CTRUNC)) {
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        return -EPROTO;
    }
    return 0;
}

static void ipc_reset(struct presence *p)
{
    if (p->ipc_fd >= 0)
        close(p->ipc_fd);
    if (p->doorbell_fd >= 0)
        close(p->doorbell_fd);
    p->ipc_fd = p->doorbell_fd = -1;
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
    struct pr_ipc_msg m = {PR_IPC_MAGIC, PR_IPC_PROC, p->proc, p->proc_gen, 0, 0};
    int rc = pr__ipc_send(s, &m, pidfd);
    if (pidfd >= 0)
        close(pidfd);
    if (rc) {
        close(s);
        return rc;
    }
    return s;
}

/* Takes the reaper's answer to ipc_start() on @s: 0 with its doorbell in *bell,
 * -EAGAIN (not yet, non-blocking socket), or an error. */
static int ipc_finish(int s, int *bell)
{
    struct pr_ipc_msg m;
    int fd = -1;
    int rc = pr__ipc_recv(s, &m, &fd);
    if (rc == 0 && (m.type != PR_IPC_ACK || m.status != 0 || fd < 0))
        rc = m.status ? m.status : -EPROTO;
    if (rc) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    *bell = fd;
    return 0;
}

/* Registers with the current reaper if it changed since we last did. Returns 0
 * when registered, or a negative error (no reaper, refused...). A round trip
 * with the reaper: never call it holding a registry lock (see pr__doorbell). */
int pr__ipc_register(struct presence *p)
{
    if (p->rdonly)
        return -EROFS;
    uint64_t owner = pr_load(&p->h->reaper_owner);
    if (owner == p->ipc_reaper && p->doorbell_fd >= 0)
        return 0;
    pthread_mutex_lock(&p->ipc_lock);
    int rc = 0;
    if (owner == p->ipc_reaper && p->doorbell_fd >= 0)
        goto out;
    ipc_reset(p); /* also drops a registration the doorbell left half-done */
    p->ipc_reaper = owner;
    int s = ipc_start(p, owner, false);
    if (s < 0) {
        rc = s;
        goto out;
    }
    int bell = -1;
    rc = ipc_finish(s, &bell);
    if (rc) {
        close(s);
        goto out;
    }
    p->ipc_fd = s;
    p->doorbell_fd = bell;
out:
    pthread_mutex_unlock(&p->ipc_lock);
    return rc;
}

/* The doorbell's registration, which never waits: pr__doorbell runs inside
 * pr__emit, under the room's lock, and the reaper's sweep may be waiting for
 * that very lock, so a round trip there would stall this writer, the room and
 * the reaper for the socket timeout (1 s). Starts the registration, or picks up
 * the reaper's answer once it has come. Returns 0 when registered. */
static int ipc_register_nowait(struct presence *p, uint64_t owner)
{
    if (pthread_mutex_trylock(&p->ipc_lock) != 0)
        return -EBUSY; /* another thread of ours is at it */
    int rc = 0;
    if (owner != p->ipc_reaper) {
        ipc_reset(p);
        p->ipc_reaper = owner;
    }
    if (p->doorbell_fd >= 0)
        goto out;
    if (p->ipc_fd < 0) { /* start: connect and send, no answer awaited */
        int s = ipc_start(p, owner, true);
        if (s < 0) {
            rc = s;
            goto out;
        }
        p->ipc_fd = s;
    }
    int bell = -1;
    rc = ipc_finish(p->ipc_fd, &bell);
    if (rc == 0) {
        /* registered: round trips on this socket (subscriptions) block again */
        fcntl(p->ipc_fd, F_SETFL, fcntl(p->ipc_fd, F_GETFL) & ~O_NONBLOCK);
        p->doorbell_fd = bell;
    } else if (rc != -EAGAIN) {
        ipc_reset(p); /* refused or gone: start again next time */
    }
out:
    pthread_mutex_unlock(&p->ipc_lock);
    return rc;
}

/* Hands a subscriber's eventfd to the reaper. */
int pr__ipc_subscribe(struct presence *p, uint32_t slot, int efd)
{
    int rc = pr__ipc_register(p);
    if (rc)
        return rc;
    pthread_mutex_lock(&p->ipc_lock);
    struct pr_ipc_msg m = {PR_IPC_MAGIC, PR_IPC_SUB, p->proc, p->proc_gen, slot, 0};
    rc = p->ipc_fd >= 0 ? pr__ipc_send(p->ipc_fd, &m, efd) : -ENOTCONN;
    int none = -1;
    if (rc == 0)
        rc = pr__ipc_recv(p->ipc_fd, &m, &none);
    if (none >= 0)
        close(none);
    if (rc == 0 && (m.type != PR_IPC_ACK || m.status != 0))
        rc = m.status ? m.status : -EPROTO;
    if (rc)
        ipc_reset(p);
    pthread_mutex_unlock(&p->ipc_lock);
    return rc;
}

/* Rings the reaper's doorbell (a subscriber is armed). */
void pr__doorbell(struct presence *p)
{
    uint64_t owner = pr_load(&p->h->reaper_owner);
    if (owner == (((uint64_t) p->proc_gen << 32) | (p->proc + 1)))
        return; /* we are the reaper: it wakes subscribers after each of its own passes */
    if (owner != p->ipc_reaper || p->doorbell_fd < 0)
        if (ipc_register_nowait(p, owner) != 0)
            return; /* not registered yet: the reaper's next sweep wakes the subscribers */
    uint64_t one = 1;
    ssize_t n = write(p->doorbell_fd, &one, sizeof one);
    (void) n; /* EAGAIN: the counter is saturated, the reaper is awake anyway */
}

void pr__ipc_close(struct presence *p)
{
    ipc_reset(p);
}
