/*
 * reap.c -- what presence-reaper asks of the library: becoming the segment's
 * one reaper, and the maintenance sweep (expiry, dead owners, empty rooms,
 * dead subscribers, repair and reclamation) with its statistics in the header.
 * Any process may run a sweep; the reaper runs one per timer tick.
 *
 * Exactly one reaper: header.reaper_owner is {proc gen | proc + 1} of the
 * reaper's attachment, taken by CAS from 0 or from a dead process (its OFD
 * liveness lock is gone), so a reaper killed with -9 is replaced at once.
 *
 * The reaper also owns header.subs_gen (ipc.h): it bumps it after every change
 * of the set of subscriber eventfds it holds, and once when it takes over (it
 * holds none yet), so that producers' copies of that set go stale.
 */
#include "internal.h"
#include "ipc.h"

#include <string.h>
#include <unistd.h>

void presence_proc_id(const presence_t *p, uint32_t *slot, uint32_t *generation)
{
    if (slot)
        *slot = p->proc;
    if (generation)
        *generation = p->proc_gen;
}

int presence_reaper_claim(presence_t *p, const char *socket_path, pid_t *other_pid)
{
    struct pr_header *h = p->h;
    if (p->rdonly)
        return -EROFS;
    if (!socket_path || strlen(socket_path) >= sizeof h->reaper_socket)
        return -EINVAL;
    uint64_t me = ((uint64_t) p->proc_gen << 32) | (p->proc + 1);
    for (;;) {
        uint64_t cur = pr_load(&h->reaper_owner);
        if (cur != 0 && cur != me &&
            pr__proc_alive(p, (uint32_t) cur - 1, (uint32_t) (cur >> 32))) {
            if (other_pid) {
                struct pr_proc *pp = pr__proc(p, (uint32_t) cur - 1);
                *other_pid = pp ? (pid_t) (uint32_t) pr_load(&pp->owner) : 0;
            }
            return PRESENCE_EREAPER;
        }
        /* Publish the socket path before the owner word names us. */
        memset(h->reaper_socket, 0, sizeof h->reaper_socket);
        memcpy(h->reaper_socket, socket_path, strlen(socket_path));
        if (pr_cas(&h->reaper_owner, cur, me)) {
            pr_store(&h->reaper_pid, (int32_t) getpid());
            pr_store(&h->needs_sweep, 1u);  /* whatever the previous one left */
            pr_fetch_add(&h->subs_gen, 1u); /* we hold no subscriber eventfd yet */
            return 0;
        }
    }
}

uint32_t pr__reaper_subs_changed(presence_t *p)
{
    return pr_fetch_add(&p->h->subs_gen, 1u) + 1u;
}

uint32_t pr__reaper_subs_gen(presence_t *p)
{
    return pr_load(&p->h->subs_gen);
}

uint32_t pr__sub_tag(presence_t *p, uint32_t slot)
{
    return slot < PR_NSUBS ? pr_load(&p->h->subs[slot].tag) : 0;
}

void presence_reaper_release(presence_t *p)
{
    uint64_t me = ((uint64_t) p->proc_gen << 32) | (p->proc + 1);
    if (pr_cas(&p->h->reaper_owner, me, 0))
        pr_store(&p->h->reaper_pid, 0);
}

int presence_reaper_sweep(presence_t *p, presence_sweep_stats_t *st)
{
    presence_sweep_stats_t local;
    if (!st)
        st = &local;
    memset(st, 0, sizeof *st);
    if (p->rdonly)
        return -EROFS;
    uint64_t t0 = pr__now_ns();
    struct pr_header *h = p->h;
    int rc = presence_prune(p, 0);
    if (rc < 0)
        return rc;
    st->expired = rc;
    struct pr_tls *t = pr__enter(p);
    if (t) {
        st->owner_died = pr__remove_dead_owners(p);
        pr__exit(p, t);
    }
    rc = presence_prune_rooms(p);
    st->rooms_deleted = rc > 0 ? rc : 0;
    pr__subs_collect(p);
    rc = presence_maintain(p);
    pr__procs_collect(p); /* after maintain cleared their reader slots */
    st->reclaimed = rc > 0 ? rc : 0;
    st->duration_ns = pr__now_ns() - t0;
    pr_fetch_add(&h->reaper_expired, (uint64_t) st->expired);
    pr_fetch_add(&h->reaper_reclaimed, (uint64_t) st->reclaimed);
    pr_fetch_add(&h->reaper_sweeps, 1);
    pr_store(&h->reaper_last_sweep_ns, pr__realtime_ns());
    return 0;
}
