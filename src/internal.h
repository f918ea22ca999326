/*
 * internal.h -- declarations shared by the files of libpresence (pr__ prefix):
 * the process-local handle, bounds-checked accessors into the segment, and the
 * entry points of each module.
 */
#ifndef PR_INTERNAL_H
#define PR_INTERNAL_H

#include "atomic.h"
#include "layout.h"
#include "presence.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PR_UNUSED(x)   ((void) (x))
#define PR_LIKELY(x)   __builtin_expect(!!(x), 1)
#define PR_UNLIKELY(x) __builtin_expect(!!(x), 0)
/* The library's thread-local variables: in the static TLS block (a plain
 * %fs-relative load) rather than through __tls_get_addr, a call on every use
 * from a shared library otherwise (11 instructions, 5 per event in a prune).
 * They are 128 bytes in all, well inside the surplus glibc keeps for
 * libraries loaded with dlopen(). */
#define PR_TLS         __thread __attribute__((tls_model("initial-exec")))
/* A function that reads records outside a read section on purpose, racing
 * their reuse, and validates what it read by a state word read before and after
 * (a seqlock's reader): ThreadSanitizer is told not to instrument it. */
#define PR_OPTIMISTIC  __attribute__((no_sanitize("thread")))

/* Per-thread state for one handle: its reader slot and nesting depth. */
struct pr_tls {
    struct presence *p;
    uint32_t slot;    /* reader slot index */
    uint32_t depth;   /* read-section nesting */
    uint32_t retired; /* retirements: it reclaims at every 64th */
    /* Retired inside the current read section and not yet on the limbo stack:
     * a chain through the items' links, newest first, pushed whole (one CAS)
     * when the section ends or it reaches PR_PENDING_MAX (epoch.c). */
    uint32_t pending_first, pending_last, npending;
};

/* The process-local handle. Never placed in shared memory. */
struct presence {
    struct pr_header *h;
    unsigned char *base;
    size_t size;
    int fd;
    bool rdonly;
    char name[256];
    uint32_t proc;     /* our process slot */
    uint32_t proc_gen; /* its generation while we hold it */
    pthread_key_t tls_key;
    uint64_t id; /* unique among the handles this process ever opened (the TLS cache's key) */
    pthread_mutex_t local;           /* guards reader-slot claims and the lease in this process */
    uint32_t shard;                  /* free stacks this process takes from first and returns to */
    uint32_t blob_page[PR_NCLASSES]; /* page+1 it allocates blobs of a class from first */
    uint32_t blob_word[PR_NCLASSES]; /* and the bitmap word of that page to look from */
    uint32_t blob_seq;               /* its blob allocations (blob seq, with the slot) */
    /* Other processes proven alive (their OFD lock held) and until when the
     * proof is trusted: the reclaim that runs every 64 retirements would
     * otherwise make a syscall for each reader slot that pins the epoch. */
    struct pr_alive_seen {
        uint64_t owner; /* {gen:32 | proc+1:32} */
        uint64_t until_ns;
    } alive_seen[8];
    /* maintenance sweep, phase 1 -> phase 2 (see check.c) */
    uint32_t *sweep_items;  /* item ids of suspected orphans */
    uint64_t *sweep_states; /* their state words when suspected */
    size_t nsweep;
    uint64_t sweep_epoch; /* global epoch when they were suspected */
    /* registration with the reaper (ipc.c) */
    pthread_mutex_t ipc_lock; /* guards ipc_fd, doorbell_fd, ipc_reaper and *wake */
    int ipc_fd;               /* connection to the reaper, -1 if none */
    int doorbell_fd;          /* the reaper's doorbell eventfd, -1 if none */
    uint64_t ipc_reaper;      /* header.reaper_owner when we registered */
    struct pr_wake *wake;     /* one-hop wake-ups (ipc.c); NULL until first needed */
};

/* A producer's copy of the reaper's subscriber eventfds (ipc.c): dups received
 * in PR_IPC_SUBS, closed when replaced, when the reaper changes and on
 * presence_close. Used only while reaper == header.reaper_owner and gen ==
 * header.subs_gen, and an entry only while its slot's tag is still @tag. */
struct pr_wake {
    bool valid;      /* e[0..n) is the reaper's set at @gen */
    bool pending;    /* a PR_IPC_SUBS_GET was sent, its answer not yet taken */
    uint32_t gen;    /* header.subs_gen of the set */
    uint64_t reaper; /* header.reaper_owner it came from */
    uint32_t n;
    struct {
        uint32_t slot, tag;
        int fd;
    } e[PR_NSUBS];
    /* what it did (tests, figures) */
    uint64_t direct; /* subscriber eventfds written by this process */
    uint64_t bells;  /* doorbells rung instead (no current copy, or an unknown subscriber) */
    uint64_t fills;  /* sets installed */
};

/* ---- bounds-checked access -------------------------------------------- */
/* Index-taking accessors return NULL for an out-of-range index so that a
 * corrupted segment yields an error, never a wild access. Callers must check. */
#define PR_REGION(p, off, type) ((type *) (void *) ((p)->base + (p)->h->off))

static inline struct pr_room *pr__room(const struct presence *p, uint32_t i)
{
    return i < p->h->cap_rooms ? PR_REGION(p, off_rooms, struct pr_room) + i : NULL;
}
static inline struct pr_conn *pr__conn(const struct presence *p, uint32_t i)
{
    return i < p->h->cap_conns ? PR_REGION(p, off_conns, struct pr_conn) + i : NULL;
}
static inline struct pr_pres *pr__pres(const struct presence *p, uint32_t i)
{
    return i < p->h->cap_pres ? PR_REGION(p, off_pres, struct pr_pres) + i : NULL;
}
static inline struct pr_group *pr__group(const struct presence *p, uint32_t i)
{
    return i < p->h->cap_groups ? PR_REGION(p, off_groups, struct pr_group) + i : NULL;
}
static inline struct pr_gmember *pr__gmember(const struct presence *p, uint32_t i)
{
    return i < p->h->cap_gmembers ? PR_REGION(p, off_gmembers, struct pr_gmember) + i : NULL;
}
static inline struct pr_reader *pr__reader(const struct presence *p, uint32_t i)
{
    return i < p->h->cap_readers ? PR_REGION(p, off_readers, struct pr_reader) + i : NULL;
}
static inline struct pr_proc *pr__proc(const struct presence *p, uint32_t i)
{
    return i < p->h->cap_procs ? PR_REGION(p, off_procs, struct pr_proc) + i : NULL;
}
/* The record head of any kind, or NULL. */
struct pr_rec *pr__rec(const struct presence *p, unsigned kind, uint32_t idx);
uint32_t pr__kind_cap(const struct presence *p, unsigned kind);

/* ---- blobs (alloc.c) ----------------------------------------------------- */
/* The arena as a caller sees it: its first unit and its size. The segment's
 * words are volatile to the compiler, so a loop over many blobs reads them
 * once into a view (query.c) instead of once per blob. */
struct pr_arena_view {
    const char *base;
    uint64_t bytes;
};

static inline struct pr_arena_view pr__arena_view(const struct presence *p)
{
    struct pr_arena_view a = {(const char *) p->base + p->h->off_arena,
                              (uint64_t) p->h->arena_pages * PR_PAGE_SIZE};
    return a;
}

/* Payload of blob @ref in view @a, with its length (@len may be NULL), or
 * NULL when the ref is out of bounds or its header is inconsistent: the
 * header inside the arena (ref 0 wraps around and fails; so does any ref of
 * an arena smaller than a header), the data inside the arena and the page.
 * Lock-free; call inside a read section. No page metadata read: a corrupted
 * header can only yield bytes inside the arena. */
static inline const char *pr__view_blob(const struct pr_arena_view *a, uint32_t ref, uint32_t *len)
{
    uint64_t off = ((uint64_t) ref - 1) * PR_UNIT;
    if (off >= a->bytes || a->bytes - off < PR_BLOB_HDR)
        return NULL;
    const struct pr_blob *b = (const struct pr_blob *) (const void *) (a->base + off);
    uint32_t n = pr_load(&b->len);
    if (n > PR_PAGE_SIZE - PR_BLOB_HDR || n > a->bytes - off - PR_BLOB_HDR)
        return NULL;
    if (len)
        *len = n;
    return (const char *) (b + 1);
}

/* pr__view_blob on the whole arena: the hot path of every single read. */
static inline const char *pr__blob_get(const struct presence *p, uint32_t ref, uint32_t *len)
{
    struct pr_arena_view a = pr__arena_view(p);
    return pr__view_blob(&a, ref, len);
}

/* A hint that blob @ref of view @a will be read soon (a ref outside: none). */
static inline void pr__view_prefetch(const struct pr_arena_view *a, uint32_t ref)
{
    uint64_t off = ((uint64_t) ref - 1) * PR_UNIT; /* ref 0 wraps around */
    if (off < a->bytes)
        __builtin_prefetch(a->base + off);
}

static inline void pr__blob_prefetch(const struct presence *p, uint32_t ref)
{
    struct pr_arena_view a = pr__arena_view(p);
    pr__view_prefetch(&a, ref);
}

/* Allocates a blob of @len bytes holding @data (left as they are when @data
 * is NULL), owned by item @owner. Returns the ref (> 0), or -ENOSPC. Recorded
 * in the caller's reader slot until pr__blob_attached(). */
int64_t pr__blob_new(struct presence *p, const void *data, uint32_t len, uint32_t owner);
void pr__blob_attached(struct presence *p);
void pr__blob_free(struct presence *p, uint32_t ref);
bool pr__blob_eq(const struct presence *p, uint32_t ref, uint32_t rlen, const char *s, size_t n);

/* ---- records (alloc.c) --------------------------------------------------- */
/* Claims a free record of @kind for the calling thread's reader slot: returns
 * its index (state CLAIMED) or -ENOSPC. Lock-free. Call inside a read section. */
int64_t pr__rec_claim(struct presence *p, unsigned kind);
/* Returns a record to its free stack. Only the lease holder pushes. */
void pr__rec_push_free(struct presence *p, unsigned kind, uint32_t idx);
void pr__alloc_format(struct presence *p); /* creator: fill the stacks */
/* Completes every claim pending in a free-stack head (what any pop does on the
 * way). The sweep does it before it marks: a claim a dead process left after
 * its first step is then a CLAIMED record the sweep finds, instead of being
 * completed by a later pop, after the sweep, into a record no one owns. */
void pr__claims_complete(struct presence *p);

/* ---- epochs (epoch.c) ---------------------------------------------------- */
struct pr_tls *pr__enter(struct presence *p); /* NULL: no reader slot free */
void pr__exit(struct presence *p, struct pr_tls *t);
void pr__retire(struct presence *p, uint32_t item);
int pr__lease_take(struct presence *p);
void pr__lease_drop(struct presence *p);
int pr__reclaim(struct presence *p);                 /* lease held */
uint32_t pr__readers_used(const struct presence *p); /* slots a scan must look at */
/* Out of space: waits briefly for the lease and reclaims. Call outside a read section. */
int pr__reclaim_for_space(struct presence *p);
void pr__readers_release(struct presence *p);
bool pr__proc_alive(struct presence *p, uint32_t proc, uint32_t gen);
uint32_t pr__my_slot(struct presence *p);
void pr__tls_forget(const struct pr_tls *t); /* before @t is freed: out of the thread's cache */

/* ---- locks that survive their holder (lock.c) ------------------------------ */
typedef void (*pr_repair_fn)(struct presence *p, uint32_t idx);
/* Takes @l (may sleep while a live process holds it); when its holder died,
 * takes it over and runs @repair(p, idx) first. 0, or an error. */
int pr__lock(struct presence *p, pr_lock_t *l, pr_repair_fn repair, uint32_t idx);
void pr__unlock(pr_lock_t *l);
/* Registers this process for membarrier (see lock.c); at each read-write open. */
void pr__lock_setup(void);
/* If @l is held by a dead process: take it over, repair, release; true then. */
bool pr__lock_recover(struct presence *p, pr_lock_t *l, pr_repair_fn repair, uint32_t idx);

/* ---- names and hashing (index.c) ---------------------------------------- */
int pr__validate_name(const char *s, size_t *len);
uint32_t pr__hash(const struct presence *p, const char *s, size_t n);
pr_lock_t *pr__stripe(const struct presence *p, unsigned table, uint32_t hash);
uint32_t *pr__bucket(const struct presence *p, unsigned table, uint32_t hash);
enum { PR_T_ROOM = 0, PR_T_CONN = 1, PR_T_USER = 2, PR_T_GROUP = 3 };
int64_t pr__room_find(struct presence *p, const char *name, size_t n, uint32_t hash);
int64_t pr__conn_find(struct presence *p, const char *name, size_t n, uint32_t hash);
/* pr__conn_find outside a read section, for names kept inline: the index, with
 * *state the record's state word read before its name matched, or -EAGAIN
 * (look again inside one). See index.c. */
int64_t pr__conn_find_unpinned(struct presence *p, const char *name, size_t n, uint32_t hash,
                               uint64_t *state);
int64_t pr__group_find(struct presence *p, const char *name, size_t n, uint32_t hash);
void pr__chain_unlink(struct presence *p, unsigned table, uint32_t hash, uint32_t idx);
void pr__chain_insert(struct presence *p, unsigned table, uint32_t hash, uint32_t idx);
int pr__stripe_lock(struct presence *p, unsigned table, uint32_t hash); /* unlock: pr__stripe() */

/* ---- registry (registry.c) ----------------------------------------------- */
void pr__room_repair(struct presence *p, uint32_t ri);
void pr__conn_repair(struct presence *p, uint32_t ci);
void pr__group_repair(struct presence *p, uint32_t gi);
void pr__stripe_repair(struct presence *p, uint32_t stripe);
void pr__free_item(struct presence *p, uint32_t item); /* reclaim: item's grace is over */
int pr__remove_dead_owners(struct presence *p);
int pr__finish_removals(struct presence *p);
bool pr__blob_allocated(const struct presence *p, uint32_t ref);

/* ---- room member arrays (members.c) -------------------------------------- */
/* All under the room lock. reserve: before the join's write section, makes
 * room for one more entry (may allocate; an error means the caller sets
 * marray to 0). add / remove: inside the write section, before the occupancy
 * changes. rebuild: from the repaired list (crash repair). free: the room's
 * grace period is over. */
int pr__members_reserve(struct presence *p, uint32_t ri);
void pr__members_add(struct presence *p, struct pr_room *r, uint32_t pi, struct pr_pres *q);
void pr__members_remove(struct presence *p, struct pr_room *r, uint32_t pi, struct pr_pres *q);
void pr__members_rebuild(struct presence *p, uint32_t ri);
/* Makes room for occupancy entries, before a rebuild outside crash repair
 * (allocates; 0 or an error, and then the array stays off). */
int pr__members_fit(struct presence *p, uint32_t ri);
/* Turns the member array of every live room whose array is off (a prune that
 * died before its end, a chunk that could not be allocated) back on where it
 * now fits; takes each such room's lock. Inside a read section. */
void pr__members_restore_all(struct presence *p);
void pr__members_free(struct presence *p, struct pr_room *r);

/* ---- events (ring.c) ----------------------------------------------------- */
enum pr_event_type {
    PR_EV_JOIN = 1,
    PR_EV_LEAVE,
    PR_EV_TIMEOUT,
    PR_EV_OWNER_DIED,
    PR_EV_STATE_CHANGE,
    PR_EV_ROOM_CREATED,
    PR_EV_ROOM_DELETED,
};
/* Every change goes through here (the event ring completes it). */
void pr__emit(struct presence *p, enum pr_event_type type, uint32_t room, uint32_t conn,
              uint32_t occupancy);
/* Bulk mode, for a removal of many (prune): between begin and end, this
 * thread's events on @p share one CLOCK_REALTIME reading per PR_BULK_SHARE
 * events, and armed subscribers are looked for (a fence, a load) once per
 * PR_BULK_SHARE events and at the end, instead of once per event. A bulk's
 * events are then at most a few microseconds older than their commit, and a
 * sleeping subscriber is woken at most that much later. Not nested. */
#define PR_BULK_SHARE 32u
void pr__emit_bulk_begin(struct presence *p);
void pr__emit_bulk_end(void);
/* Subscribers of processes that died: free their slots (reaper sweep). */
void pr__subs_collect(struct presence *p);

/* ---- reaper registration and wake-ups (ipc.c) ------------------------------- */
int pr__ipc_register(struct presence *p);
int pr__ipc_subscribe(struct presence *p, uint32_t slot, uint32_t tag, int efd);
/* A subscriber is armed (pr__emit, after its fence): writes the eventfds of the
 * armed subscribers directly, or rings the reaper's doorbell. Never waits. */
void pr__wake(struct presence *p);
void pr__ipc_close(struct presence *p);

/* ---- statistics (check.c) ------------------------------------------------- */
/* Adds @delta to this thread's share of counter @c: its reader slot's, where
 * only this thread writes (a plain load and store: no locked instruction), or
 * its process slot's (atomically) when it has no reader slot. No-op when
 * read-only. */
static inline void pr__count(struct presence *p, enum pr_ctr c, int64_t delta)
{
    if (PR_UNLIKELY(p->rdonly))
        return;
    struct pr_reader *r = pr__reader(p, pr__my_slot(p));
    if (PR_LIKELY(r != NULL))
        pr_store(&r->ctr[c], pr_load(&r->ctr[c]) + delta);
    else
        pr_fetch_add(&pr__proc(p, p->proc)->ctr[c], delta);
}
/* The counter's total over every process and reader slot. */
int64_t pr__counter(const struct presence *p, enum pr_ctr c);
/* The first item of limbo list @i (0: empty), for walks over all of them:
 * the reader slots' stacks, the header's stack, then the batches; *@more is
 * false once @i is past the last list. */
uint32_t pr__limbo_list(const struct presence *p, uint32_t i, bool *more);
bool pr__limbo_empty(const struct presence *p);
uint64_t pr__limbo_count(const struct presence *p); /* walks the limbo */
void pr__procs_collect(struct presence *p);

/* ---- misc ------------------------------------------------------------------ */
uint64_t pr__now_ns(void);      /* CLOCK_MONOTONIC */
uint64_t pr__realtime_ns(void); /* CLOCK_REALTIME */
uint64_t pr__stamp_ns(void);    /* heartbeat stamp: CLOCK_MONOTONIC_COARSE + 4 resolutions */

/* Test-only fault injection: PRESENCE_TEST_NO_TAGS disables free-stack tags (the
 * ABA test must then fail); PRESENCE_TEST_EAGER_FREE frees retired records at
 * once (the reclamation test must then see poisoned records). */
extern int pr__test_no_tags;
extern int pr__test_eager_free;
/* PRESENCE_TEST_LATE_TAIL: a limbo push publishes the stack before its tail, and
 * waits a little in between (the order the stress test must catch). */
extern int pr__test_late_tail;
extern int pr__test_poison; /* PRESENCE_TEST_POISON: overwrite what is freed */
/* PRESENCE_TEST_TRUST_MISS: touch by name believes a miss of its lookup outside a
 * read section instead of asking again inside one (the stress test must catch it). */
extern int pr__test_trust_miss;

/* Test-only crash injection (the crash suite): PRESENCE_TEST_KILL_AT=NAME[:N]
 * makes the process SIGKILL itself the N-th time (default 1) it passes the
 * kill point NAME. Unset, a kill point costs one predictable branch. */
extern int pr__kill_armed;
void pr__kill_point_hit(const char *name);
#define PR_KILL_POINT(name)              \
    do {                                 \
        if (PR_UNLIKELY(pr__kill_armed)) \
            pr__kill_point_hit(name);    \
    } while (0)
void pr__kill_point_init(void);

#endif /* PR_INTERNAL_H */
