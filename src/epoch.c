/*
 * epoch.c -- reclamation that spans processes: read sections, retirement, the
 * grace period, the maintenance lease, and dead-reader recovery.
 *
 * liburcu's grace periods cover the threads of one process only (its reader
 * registry is process-local), so shared objects are reclaimed by this scheme,
 * which lives in the segment:
 *   - header.global_epoch (starts at 1) and one reader slot per thread;
 *   - enter: e = load(global); xchg(slot.epoch, e)  -- a store plus a full
 *     fence, so the reclaimer cannot miss the slot while we read links;
 *   - exit:  store(slot.epoch, 0);
 *   - retire(x) after x is unlinked: stamp x with load(global), push on the
 *     thread's limbo stack (inside a read section: chained in the thread's
 *     pr_tls and pushed whole, one CAS, when the section ends);
 *   - reclaim (lease holder only): advance global (a full fence), take
 *     min = the smallest epoch announced by a live slot (or global), and free
 *     every limbo item stamped strictly below min.
 * A reader that entered before x was unlinked announced an epoch <= x's stamp,
 * so x outlives it; one that entered later cannot reach x. Dekker argument:
 * reader (store slot; fence; load link) vs reclaimer (store unlink; fence; load
 * slot) -- at least one sees the other.
 *
 * A reader slot belongs to a process slot; when that process is dead (its OFD
 * lock is gone), reclaim clears the reader slot so it no longer pins the epoch.
 * A live process stuck inside a read section only delays reclamation.
 *
 * The limbo is one stack per thread, in its reader slot: only that thread
 * pushes (CAS on {item, tag}, since a take may race it), so retiring writes
 * no line another CPU wrote. A push onto an empty stack records its last item
 * as the stack's tail before the CAS that publishes it; a stack cannot be
 * emptied but by a take, so the tail stays right until then. Only the lease
 * holder removes: it takes every stack whole (one CAS each, the tail read
 * after seeing the head), joins them through their tails into one batch
 * stamped with the global epoch read after the takes, no older than any
 * item's own stamp (header.batch[], a FIFO; no item is walked until it is
 * freed), and frees whole batches once that stamp is older than every reader.
 * A slot freed with items on its stack keeps them until the next take.
 * A batch taken off the stack is unlinked from nothing else, so if the holder
 * dies mid-free the next holder finds the rest in the batch list (the batch is
 * dropped from the list before it is freed: what a crash then strands is
 * RETIRED in no limbo, which the sweep puts back).
 * The maintenance lease is {proc generation : 32 | proc + 1 : 32} in the header,
 * taken by CAS, and stolen from a holder whose process is dead.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <unistd.h>

int pr__test_eager_free;
int pr__test_late_tail;
int pr__test_poison;

static int reclaim(struct presence *p, bool trust_recent);
static void pending_flush(struct presence *p, struct pr_tls *t);

/* The thread's last handle and its state, in front of pthread_getspecific()
 * (a call on every read section and counted change). Keyed by the handle's id
 * (unique among the handles the process ever opened, never 0), not its
 * address: a handle closed and another opened at the same address misses. */
static PR_TLS struct {
    uint64_t id;
    struct pr_tls *t;
} tls_last;

void pr__tls_forget(const struct pr_tls *t)
{
    if (tls_last.t == t)
        tls_last.id = 0, tls_last.t = NULL;
}

/* A new per-thread state for @p, with a reader slot of its own (none when
 * read-only); NULL when every slot is taken or memory is short. */
static struct pr_tls *tls_make(struct presence *p)
{
    struct pr_tls *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->p = p;
    t->slot = UINT32_MAX;
    if (!p->rdonly) {
        uint64_t me = ((uint64_t) p->proc_gen << 32) | (p->proc + 1);
        pthread_mutex_lock(&p->local);
        for (uint32_t i = 0; i < p->h->cap_readers; i++) {
            struct pr_reader *r = pr__reader(p, i);
            if (pr_load(&r->owner) != 0)
                continue;
            /* Raise the scan limit before owning the slot, so that no owned
             * slot ever lies beyond it, even if we die in between. */
            for (uint32_t hw = pr_load(&p->h->readers_hwm); hw < i + 1;
                 hw = pr_load(&p->h->readers_hwm))
                if (pr_cas(&p->h->readers_hwm, hw, i + 1))
                    break;
            if (pr_cas(&r->owner, 0, me)) {
                pr_store(&r->epoch, 0);
                pr_store(&r->inflight_blob, 0u);
                r->tid = (uint32_t) gettid();
                t->slot = i;
                break;
            }
        }
        pthread_mutex_unlock(&p->local);
        if (t->slot == UINT32_MAX) {
            free(t);
            return NULL;
        }
    }
    pthread_setspecific(p->tls_key, t);
    return t;
}

static struct pr_tls *tls_get(struct presence *p)
{
    if (PR_LIKELY(tls_last.id == p->id))
        return tls_last.t;
    struct pr_tls *t = pthread_getspecific(p->tls_key);
    if (!t && !(t = tls_make(p)))
        return NULL;
    tls_last.id = p->id, tls_last.t = t;
    return t;
}

uint32_t pr__my_slot(struct presence *p)
{
    struct pr_tls *t = tls_get(p);
    return t ? t->slot : UINT32_MAX;
}

struct pr_tls *pr__enter(struct presence *p)
{
    struct pr_tls *t = tls_get(p);
    if (PR_UNLIKELY(!t))
        return NULL;
    if (t->depth++ == 0 && t->slot != UINT32_MAX) {
        struct pr_reader *r = pr__reader(p, t->slot);
        uint64_t e = pr_load(&p->h->global_epoch);
        pr_xchg(&r->epoch, e); /* store + full fence */
    }
    return t;
}

void pr__exit(struct presence *p, struct pr_tls *t)
{
    if (t->depth == 1 && t->npending) /* still inside: a reclaim it starts sees us */
        pending_flush(p, t);
    if (--t->depth == 0 && t->slot != UINT32_MAX) {
        struct pr_reader *r = pr__reader(p, t->slot);
        pr_barrier();
        pr_store(&r->epoch, 0);
    }
}

void pr__readers_release(struct presence *p)
{
    uint64_t me = ((uint64_t) p->proc_gen << 32) | (p->proc + 1);
    uint32_t nslots = pr__readers_used(p);
    for (uint32_t i = 0; i < nslots; i++) {
        struct pr_reader *r = pr__reader(p, i);
        if (pr_load(&r->owner) == me) {
            pr_store(&r->epoch, 0);
            pr_cas(&r->owner, me, 0);
        }
    }
}

/* ---- retire --------------------------------------------------------------- */

static uint32_t *item_link(struct presence *p, uint32_t item, uint64_t **epoch)
{
    unsigned kind = PR_ITEM_KIND(item);
    uint32_t idx = PR_ITEM_IDX(item);
    if (kind == PR_K_BLOB) {
        uint32_t len;
        const char *d = pr__blob_get(p, idx + 1, &len);
        if (!d)
            return NULL;
        struct pr_blob *b = (struct pr_blob *) (void *) (d - PR_BLOB_HDR);
        *epoch = &b->retire_epoch;
        return &b->link;
    }
    struct pr_rec *r = pr__rec(p, kind, idx);
    if (!r)
        return NULL;
    *epoch = &r->retire_epoch;
    return &r->link;
}

#define PR_PENDING_MAX 64u

/* Pushes the chain @first .. @last (linked through their links, @last_link
 * the last one's) of @n items on this thread's limbo stack (its reader slot's,
 * else the header's) with one CAS, then reclaims at every 64th retirement of
 * the thread. Only this thread pushes there, so a stack seen empty stays empty
 * until our CAS: its tail is written before the CAS publishes it, and the
 * lease holder reads it after seeing the head. */
static void limbo_push(struct presence *p, struct pr_tls *t, uint32_t first, uint32_t last,
                       // NOLINTNEXTLINE(readability-non-const-parameter): written by pr_store
                       uint32_t *last_link, uint32_t n)
{
    struct pr_reader *r = t ? pr__reader(p, t->slot) : NULL;
    uint64_t *head = r ? &r->limbo_head : &p->h->limbo_head;
    for (;;) {
        uint64_t hw = pr_load(head);
        bool onto_empty = r && (uint32_t) (hw >> 32) == 0;
        if (onto_empty && !pr__test_late_tail)
            pr_store(&r->limbo_tail, last);
        pr_store(last_link, (uint32_t) (hw >> 32));
        uint64_t nw = ((uint64_t) first << 32) | (uint32_t) ((uint32_t) hw + 1);
        if (pr_cas(head, hw, nw)) {
            if (onto_empty && pr__test_late_tail) { /* the wrong order, on purpose */
                for (uint64_t until = pr__now_ns() + 2000; pr__now_ns() < until;)
                    pr_cpu_relax();
                pr_store(&r->limbo_tail, last);
            }
            break;
        }
    }
    if (!t)
        return;
    uint32_t before = t->retired;
    t->retired += n;
    if (before / 64 != t->retired / 64 && pr__lease_take(p) == 0) {
        reclaim(p, true);
        pr__lease_drop(p);
    }
}

/* Pushes what this thread retired in its read section (see pr_tls). */
static void pending_flush(struct presence *p, struct pr_tls *t)
{
    uint64_t *ep;
    uint32_t *last_link = item_link(p, t->pending_last, &ep);
    uint32_t first = t->pending_first, last = t->pending_last, n = t->npending;
    t->npending = 0;
    if (last_link) /* (a corrupted segment can fail it: the sweep retires them again) */
        limbo_push(p, t, first, last, last_link, n);
}

void pr__retire(struct presence *p, uint32_t item)
{
    struct pr_header *h = p->h;
    uint64_t *ep;
    uint32_t *link = item_link(p, item, &ep);
    if (!link)
        return;
    if (pr__test_eager_free) { /* test switch: no grace period at all */
        pr__free_item(p, item);
        return;
    }
    pr_store(ep, pr_load(&h->global_epoch));
    /* Inside a read section the item waits in the thread's chain, pushed whole
     * at the section's end: until then the grace period cannot pass the
     * section, so a sweep that suspects the item meanwhile finds it in limbo by
     * its second phase; a process killed before the push leaves it RETIRED out
     * of limbo, which the sweep retires again. */
    struct pr_tls *t = tls_get(p);
    if (t && t->depth > 0 && t->slot != UINT32_MAX) {
        pr_store(link, t->npending ? t->pending_first : 0u);
        if (t->npending++ == 0)
            t->pending_last = item;
        t->pending_first = item;
        if (t->npending >= PR_PENDING_MAX)
            pending_flush(p, t);
        return;
    }
    limbo_push(p, t, item, item, link, 1);
}

/* ---- lease ----------------------------------------------------------------- */

int pr__lease_take(struct presence *p)
{
    if (p->rdonly)
        return -EROFS;
    struct pr_header *h = p->h;
    uint64_t me = ((uint64_t) p->proc_gen << 32) | (p->proc + 1);
    if (pthread_mutex_trylock(&p->local) != 0)
        return -EBUSY;
    for (;;) {
        uint64_t cur = pr_load(&h->lease);
        if (cur == 0) {
            if (pr_cas(&h->lease, 0, me))
                return 0;
            continue;
        }
        if (cur == me) /* leftover from an earlier holder in this attachment */
            return 0;
        uint32_t proc1 = (uint32_t) cur;
        if (proc1 == 0 || !pr__proc_alive(p, proc1 - 1, (uint32_t) (cur >> 32))) {
            if (pr_cas(&h->lease, cur, me)) {
                pr_store(&h->needs_sweep, 1u);
                return 0;
            }
            continue;
        }
        pthread_mutex_unlock(&p->local);
        return -EBUSY;
    }
}

int pr__reclaim_for_space(struct presence *p)
{
    for (int tries = 0; tries < 10000; tries++) {
        int rc = pr__lease_take(p);
        if (rc == 0) {
            int n = pr__reclaim(p);
            n += pr__reclaim(p); /* a second advance frees what the first one stamped */
            pr__lease_drop(p);
            return n;
        }
        if (rc != -EBUSY)
            return rc;
        sched_yield(); /* another process is reclaiming right now */
    }
    return 0;
}

void pr__lease_drop(struct presence *p)
{
    uint64_t me = ((uint64_t) p->proc_gen << 32) | (p->proc + 1);
    pr_cas(&p->h->lease, me, 0);
    pthread_mutex_unlock(&p->local);
}

/* ---- reclaim ---------------------------------------------------------------- */

/* Number of reader slots a scan must look at (bounded by the capacity). */
uint32_t pr__readers_used(const struct presence *p)
{
    uint32_t n = pr_load(&p->h->readers_hwm);
    return n < p->h->cap_readers ? n : p->h->cap_readers;
}

/* Whether the process of reader-slot owner word @owner is alive. With
 * @trust_recent, a proof younger than 2 ms (one per process, kept in the
 * handle; the caller holds the lease) is taken instead of asking the kernel. */
static bool owner_alive(struct presence *p, uint64_t owner, bool trust_recent)
{
    uint32_t proc1 = (uint32_t) owner;
    if (proc1 == 0)
        return false;
    struct pr_alive_seen *seen = &p->alive_seen[proc1 % 8];
    uint64_t now = trust_recent ? pr__stamp_ns() : 0;
    if (trust_recent && seen->owner == owner && now < seen->until_ns)
        return true;
    if (!pr__proc_alive(p, proc1 - 1, (uint32_t) (owner >> 32)))
        return false;
    if (trust_recent) {
        seen->owner = owner;
        seen->until_ns = now + 2000000u;
    }
    return true;
}

/* The smallest epoch announced by a live reader; clears slots of dead processes. */
static uint64_t min_active_epoch(struct presence *p, uint64_t global, bool trust_recent)
{
    uint64_t min = global;
    uint32_t nslots = pr__readers_used(p);
    for (uint32_t i = 0; i < nslots; i++) {
        struct pr_reader *r = pr__reader(p, i);
        uint64_t owner = pr_load(&r->owner);
        if (owner == 0)
            continue;
        if (!owner_alive(p, owner, trust_recent)) {
            /* Dead process: its slot no longer pins anything. */
            pr_store(&r->epoch, 0);
            if (pr_cas(&r->owner, owner, 0))
                pr_store(&p->h->needs_sweep, 1u);
            continue;
        }
        uint64_t e = pr_load(&r->epoch);
        if (e != 0 && e < min)
            min = e;
    }
    return min;
}

/* The last item of the chain from @head (0 if it cannot be walked). */
static uint32_t chain_tail(struct presence *p, uint32_t head, uint64_t budget)
{
    uint32_t tail = 0;
    for (uint32_t cur = head; cur != 0 && budget-- > 0;) {
        uint64_t *ep;
        uint32_t *link = item_link(p, cur, &ep);
        if (!link)
            return 0;
        tail = cur;
        cur = pr_load(link);
    }
    return tail;
}

/* Frees the chain from @head (items linked through their link field). */
static int free_chain(struct presence *p, uint32_t head, uint64_t budget)
{
    int freed = 0;
    uint32_t cur = head;
    while (cur != 0 && budget-- > 0) {
        uint64_t *ep;
        uint32_t *link = item_link(p, cur, &ep);
        if (!link)
            break; /* corrupted: stop; check reports what is left */
        uint32_t next = pr_load(link);
        pr__free_item(p, cur);
        freed++;
        cur = next;
    }
    return freed;
}

/* Empties the stack at @head (the lease holder's take: CAS to {0, tag+1}).
 * Returns its first item (0: it was empty). */
static uint32_t take_stack(uint64_t *head)
{
    uint64_t hw;
    do {
        hw = pr_load(head);
    } while ((uint32_t) (hw >> 32) != 0 &&
             !pr_cas(head, hw, (uint64_t) (uint32_t) ((uint32_t) hw + 1)));
    return (uint32_t) (hw >> 32);
}

/* Takes every limbo stack (the reader slots', whoever owns them now, and the
 * header's) and joins them into one chain through the known tails: no item
 * is walked, except on the header's stack, which keeps no tail. Returns the
 * chain's first item (0: nothing), its last in *@tail_out. A stack whose tail
 * cannot be followed (a corrupted segment) is left out (check reports it). */
static uint32_t take_stacks(struct presence *p, uint64_t budget, uint32_t *tail_out)
{
    uint32_t chain = 0, chain_last = 0;
    uint32_t nslots = pr__readers_used(p);
    for (uint32_t i = 0; i <= nslots; i++) {
        uint32_t first, last;
        if (i < nslots) {
            struct pr_reader *r = pr__reader(p, i);
            /* the tail of this stack: written before the head that we take */
            if ((uint32_t) (pr_load(&r->limbo_head) >> 32) == 0)
                continue;
            last = pr_load(&r->limbo_tail);
            first = take_stack(&r->limbo_head);
        } else {
            first = take_stack(&p->h->limbo_head);
            last = first ? chain_tail(p, first, budget) : 0;
        }
        uint64_t *ep;
        uint32_t *last_link = first && last ? item_link(p, last, &ep) : NULL;
        if (!last_link)
            continue;
        pr_store(last_link, chain);
        if (!chain)
            chain_last = last;
        chain = first;
    }
    *tail_out = chain_last;
    return chain;
}

static int reclaim(struct presence *p, bool trust_recent)
{
    struct pr_header *h = p->h;
    uint64_t global = pr_fetch_add(&h->global_epoch, 1) + 1; /* full fence */
    uint64_t min = min_active_epoch(p, global, trust_recent);
    uint64_t budget = (uint64_t) h->cap_rooms + h->cap_conns + h->cap_pres + h->cap_groups +
                      h->cap_gmembers + (uint64_t) h->arena_pages * PR_UNITS_PAGE + 16;
    int freed = 0;

    /* Take what was pushed since last time, from every stack, as one batch.
     * Its stamp is the global epoch read after the takes: every item in it
     * was stamped with the global epoch of its push, which is no newer, so no
     * item is walked until it is freed. */
    uint32_t tail = 0;
    uint32_t head = take_stacks(p, budget, &tail);
    if (head != 0) {
        uint64_t stamp = pr_load(&h->global_epoch);
        if (h->nbatch == PR_NBATCH) {
            /* Full: put the new items in front of the newest batch. The stamp
             * first: linked items must never sit under an older one. */
            struct pr_batch *b = &h->batch[(h->batch_first + h->nbatch - 1) % PR_NBATCH];
            uint64_t *e2;
            uint32_t *tail_link = tail ? item_link(p, tail, &e2) : NULL;
            if (tail_link) {
                pr_store(&b->max_stamp, stamp > b->max_stamp ? stamp : b->max_stamp);
                pr_store(tail_link, b->head);
                pr_store(&b->head, head);
            }
        } else {
            struct pr_batch *b = &h->batch[(h->batch_first + h->nbatch) % PR_NBATCH];
            b->head = head;
            b->max_stamp = stamp;
            pr_store(&h->nbatch, h->nbatch + 1);
        }
    }
    /* Free whole batches, oldest first, while they are older than every reader. */
    while (h->nbatch > 0) {
        struct pr_batch *b = &h->batch[h->batch_first % PR_NBATCH];
        if (b->max_stamp >= min)
            break;
        uint32_t first = b->head;
        /* Shrink first, then advance: a crash in between hides the newest batch
         * (its items are RETIRED in no limbo: the sweep requeues them), never
         * exposes a stale one that would be freed twice. */
        pr_store(&h->nbatch, h->nbatch - 1);
        pr_store(&h->batch_first, (h->batch_first + 1) % PR_NBATCH);
        PR_KILL_POINT("reclaim");
        freed += free_chain(p, first, budget);
    }
    pr__count(p, PR_C_RECLAIMED, freed);
    return freed;
}

int pr__reclaim(struct presence *p)
{
    return reclaim(p, false);
}

/* ---- limbo size (derived, never counted: a crash cannot make it drift) ----- */

uint32_t pr__limbo_list(const struct presence *p, uint32_t i, bool *more)
{
    uint32_t nslots = pr__readers_used(p), nb = pr_load(&p->h->nbatch);
    *more = true;
    if (i < nslots)
        return (uint32_t) (pr_load(&pr__reader(p, i)->limbo_head) >> 32);
    if (i == nslots)
        return (uint32_t) (pr_load(&p->h->limbo_head) >> 32);
    i -= nslots + 1;
    if (i < nb && i < PR_NBATCH)
        return p->h->batch[(p->h->batch_first + i) % PR_NBATCH].head;
    *more = false;
    return 0;
}

bool pr__limbo_empty(const struct presence *p)
{
    bool more = true;
    for (uint32_t i = 0; more; i++)
        if (pr__limbo_list(p, i, &more) != 0)
            return false;
    return true;
}

uint64_t pr__limbo_count(const struct presence *p)
{
    const struct pr_header *h = p->h;
    uint64_t budget = (uint64_t) h->cap_rooms + h->cap_conns + h->cap_pres + h->cap_groups +
                      h->cap_gmembers + (uint64_t) h->arena_pages * PR_UNITS_PAGE + 16;
    uint64_t n = 0;
    bool more = true;
    for (uint32_t i = 0; more; i++) {
        uint32_t it = pr__limbo_list(p, i, &more);
        while (it != 0 && n < budget) {
            uint64_t *ep;
            uint32_t *link = item_link((struct presence *) p, it, &ep);
            if (!link)
                break;
            n++;
            it = pr_load(link);
        }
    }
    return n;
}
