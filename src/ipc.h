/*
 * ipc.h -- the protocol between processes and presence-reaper, over an
 * AF_UNIX SOCK_SEQPACKET socket (one message per packet, file descriptors in
 * SCM_RIGHTS: libuv's IPC cannot carry eventfds or pidfds, and pidfd_getfd is
 * refused under Yama or across uids, so SCM_RIGHTS through the reaper is the
 * one way a subscriber's eventfd reaches other processes).
 *
 *   process -> reaper  PR_IPC_PROC     {proc, gen}            + [pidfd of the sender]
 *   reaper  -> process PR_IPC_ACK      {status}               + [reaper's doorbell eventfd]
 *   process -> reaper  PR_IPC_SUB      {proc, gen, sub_slot, tag} + [the subscriber's eventfd]
 *   reaper  -> process PR_IPC_ACK      {status}
 *   process -> reaper  PR_IPC_SUBS_GET {proc, gen}            (no descriptor, no ACK)
 *   reaper  -> process PR_IPC_SUBS     {subs_gen, n, {slot, tag}[n]} + [n eventfds, same order]
 *
 * The reaper checks the peer's credentials (SO_PEERCRED: same uid) and that the
 * pidfd names the peer. The reaper answers each request on a connection in
 * order, so a process that has a PR_IPC_SUBS_GET outstanding takes its
 * PR_IPC_SUBS before the ACK of a later request.
 *
 * Wake-ups (one hop): a producer holds dups of the subscribers' eventfds that
 * the reaper holds (PR_IPC_SUBS, asked for without waiting whenever its copy is
 * older than header.subs_gen) and writes the eventfd of each armed subscriber
 * itself. The reaper's doorbell remains the fallback: a producer whose copy is
 * not current, or that finds armed a subscription its copy does not name, rings
 * it, and the reaper then writes the armed subscribers' eventfds.
 */
#ifndef PR_IPC_H
#define PR_IPC_H

#include "presence.h"

#include <stddef.h>
#include <stdint.h>

#define PR_IPC_MAGIC   0x32475250u /* "PRG2" */
#define PR_IPC_MAXSUBS 64          /* PR_NSUBS: every subscription in one message */
enum { PR_IPC_PROC = 1, PR_IPC_SUB = 2, PR_IPC_ACK = 3, PR_IPC_SUBS_GET = 4, PR_IPC_SUBS = 5 };

struct pr_ipc_msg {
    uint32_t magic;
    uint32_t type;
    uint32_t proc;
    uint32_t proc_gen;
    uint32_t sub_slot;
    int32_t status; /* ACK: 0 or a negative error */
    uint32_t tag;   /* SUB: the slot's tag (layout.h, struct pr_sub) */
    uint32_t pad;
};

/* The reaper's set of subscriber eventfds: entry i names descriptor i. */
struct pr_ipc_subs {
    uint32_t magic;
    uint32_t type; /* PR_IPC_SUBS */
    uint32_t gen;  /* header.subs_gen this set is current for */
    uint32_t n;
    struct {
        uint32_t slot, tag;
    } e[PR_IPC_MAXSUBS];
};

/* Sends @m with up to one descriptor (@fd < 0: none). Returns 0 or -errno. */
int pr__ipc_send(int sock, const struct pr_ipc_msg *m, int fd);
/* Sends the @len bytes at @buf with the @nfds descriptors @fds; @flags for
 * sendmsg (MSG_DONTWAIT). Returns 0 or -errno. */
int pr__ipc_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds, int flags);
/* Receives one request (struct pr_ipc_msg) and at most one descriptor (*fd = -1 if none). */
int pr__ipc_recv(int sock, struct pr_ipc_msg *m, int *fd);

/* The reaper's side of the wake-up set (reap.c). */
/* Bumps header.subs_gen (a full barrier): call after every change of the set
 * of subscriber eventfds the reaper holds, before answering anyone about it. */
uint32_t pr__reaper_subs_changed(presence_t *p);
uint32_t pr__reaper_subs_gen(presence_t *p);
/* The tag of subscription slot @slot (0 for an invalid slot). */
uint32_t pr__sub_tag(presence_t *p, uint32_t slot);

#endif /* PR_IPC_H */
