/*
 * ipc.h -- the registration protocol between processes and presence-reaper,
 * over an AF_UNIX SOCK_SEQPACKET socket (one message per packet, file
 * descriptors in SCM_RIGHTS: libuv's IPC cannot carry eventfds or pidfds).
 *
 *   process -> reaper  PR_IPC_PROC {proc, gen}            + [pidfd of the sender]
 *   reaper  -> process PR_IPC_ACK  {status}               + [reaper's doorbell eventfd]
 *   process -> reaper  PR_IPC_SUB  {proc, gen, sub_slot}  + [the subscriber's eventfd]
 *   reaper  -> process PR_IPC_ACK  {status}
 * The reaper checks the peer's credentials (SO_PEERCRED: same uid) and that the
 * pidfd names the peer. Producers write the doorbell when a subscriber is
 * armed; the reaper then writes the armed subscribers' eventfds.
 */
#ifndef PR_IPC_H
#define PR_IPC_H

#include <stdint.h>

#define PR_IPC_MAGIC 0x31475250u /* "PRG1" */
enum { PR_IPC_PROC = 1, PR_IPC_SUB = 2, PR_IPC_ACK = 3 };

struct pr_ipc_msg {
    uint32_t magic;
    uint32_t type;
    uint32_t proc;
    uint32_t proc_gen;
    uint32_t sub_slot;
    int32_t status; /* ACK: 0 or a negative error */
};

/* Sends @m with up to one descriptor (@fd < 0: none). Returns 0 or -errno. */
int pr__ipc_send(int sock, const struct pr_ipc_msg *m, int fd);
/* Receives one message and at most one descriptor (*fd = -1 if none). */
int pr__ipc_recv(int sock, struct pr_ipc_msg *m, int *fd);

#endif /* PR_IPC_H */
