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

/* Registers with the current reaper if it changed since we last did. Returns 0
 * when registered, or a negative error (no reaper, refused...). */
int pr__ipc_register(struct presence *p)
{
    if (p->rdonly)
        return -EROFS;
    uint64_t owner = pr_load(&p->h->reaper_owner);
    if (owner == p->ipc_reaper && p->ipc_fd >= 0)
        return 0;
    pthread_mutex_lock(&p->ipc_lock);
    int rc = 0;
    if (owner == p->ipc_reaper && p->ipc_fd >= 0)
        goto out;
    ipc_reset(p);
    p->ipc_reaper = owner;
    if (owner == 0 || !pr__proc_alive(p, (uint32_t) owner - 1, (uint32_t) (owner >> 32))) {
        rc = -ENOTCONN;
        goto out;
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, p->h->reaper_socket, sizeof sa.sun_path - 1);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0) {
        rc = -errno;
        goto out;
    }
    /* A reaper that stopped answering must not hang us: bounded round trips. */
    struct timeval tv = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (owner == (((uint64_t) p->proc_gen << 32) | (p->proc + 1))) {
        rc = -EDEADLK; /* never register with ourselves */
        close(s);
        goto out;
    }
    if (connect(s, (struct sockaddr *) &sa, sizeof sa) != 0) {
        rc = -errno;
        close(s);
        goto out;
    }
    int pidfd = (int) syscall(SYS_pidfd_open, getpid(), 0);
    struct pr_ipc_msg m = {PR_IPC_MAGIC, PR_IPC_PROC, p->proc, p->proc_gen, 0, 0};
    rc = pr__ipc_send(s, &m, pidfd);
    if (pidfd >= 0)
        close(pidfd);
    int bell = -1;
    if (rc == 0)
        rc = pr__ipc_recv(s, &m, &bell);
    if (rc == 0 && (m.type != PR_IPC_ACK || m.status != 0))
        rc = m.status ? m.status : -EPROTO;
    if (rc) {
        if (bell >= 0)
            close(bell);
        close(s);
        goto out;
    }
    p->ipc_fd = s;
    p->doorbell_fd = bell;
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
        if (pr__ipc_register(p) != 0)
            return;
    uint64_t one = 1;
    ssize_t n = write(p->doorbell_fd, &one, sizeof one);
    (void) n; /* EAGAIN: the counter is saturated, the reaper is awake anyway */
}

void pr__ipc_close(struct presence *p)
{
    ipc_reset(p);
}
