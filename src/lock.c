/*
 * lock.c -- the only locks in the segment: one per room, per connection, per
 * group, and per bucket stripe. There is no global lock. Readers never take
 * any of them.
 *
 * A lock (layout.h) is a word, 0 when free, else the holder's token
 * {process-slot generation & 0x3fff : 14 | process slot + 1 : 16}, and a count
 * of the lockers asleep on it. Taking it is one CAS 0 -> token. A locker that
 * finds it held watches the word for a while (reading only: no cache-line
 * traffic; a holder keeps a room or connection lock for about a microsecond, a
 * futex sleep and wake-up costs 10-20 us here), then asks whether the
 * holder's process is alive -- its OFD lock, as for reader slots -- and sleeps
 * on the futex (with a timeout, since a holder that dies while we sleep wakes
 * no one) only if it is.
 *
 * Releasing it is a plain store of 0, then a read of the sleepers count, and a
 * futex wake only if it is not 0: no locked instruction, which is what a
 * release cost most (the exchange waited for every earlier store to reach its
 * cache line; a prune of 100k connections takes four locks each). Store then
 * load may be reordered, so the two sides meet with an asymmetric fence
 * (liburcu's urcu-membarrier idea, across processes): a sleeper counts itself,
 * then calls membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which puts a full
 * barrier into every running thread of every process registered for it, then
 * reads the word again and sleeps only if it is unchanged. Either the holder's
 * store came before that barrier, and the sleeper sees the lock free, or its
 * read of the count comes after it, and the holder sees the sleeper. Every
 * process that opens a segment read-write registers (pr__lock_setup); one
 * that cannot (a kernel without it, a seccomp filter) releases with an
 * exchange instead, a full barrier of its own. A locker whose membarrier call
 * fails sleeps 1 ms at a time instead of waiting to be woken.
 *
 * When the holder is dead, the locker takes the lock over by CAS and runs the
 * object's repair function (which makes the object's lists and counters agree
 * again; every mutation is ordered so that a repair can tell what a half-done
 * one meant), then flags the segment for a maintenance sweep, which reclaims
 * records the dead process left unreachable. pr__lock_recover() does the same
 * for a lock nobody is waiting for (the sweep scans every lock word), and
 * forgets the count of a free lock (a sleeper killed in its sleep leaves it
 * counted: every release would then make a system call).
 *
 * The token is per process, not per thread: threads of one process exclude
 * each other like any two lockers; a process only dies as a whole.
 */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PR_LOCK_SPINS    256       /* pause-loop reads of the word before sleeping, ~5 us here */
#define PR_LOCK_SLEEP_NS 20000000L /* a sleeper re-checks its holder this often */
#define PR_LOCK_POLL_NS  1000000L  /* ... and this often when membarrier is unavailable */

/* Whether this process is registered for MEMBARRIER_CMD_GLOBAL_EXPEDITED (its
 * releases then skip the fence), and the pid that registered: a child after
 * fork() registers again when it opens a segment. */
static int release_by_store;
static pid_t registered_pid;
static long lock_sleep_ns = PR_LOCK_SLEEP_NS;

void pr__lock_setup(void)
{
    const char *e = getenv("PRESENCE_TEST_LOCK_SLEEP_MS"); /* test-only: see test_mp */
    long ms = e ? strtol(e, NULL, 10) : 0;
    if (ms > 0 && ms < 60000)
        lock_sleep_ns = ms * 1000000L;
    pid_t me = getpid();
    if (__atomic_load_n(&registered_pid, __ATOMIC_ACQUIRE) == me)
        return;
    int ok = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
    __atomic_store_n(&release_by_store, ok, __ATOMIC_RELAXED);
    __atomic_store_n(&registered_pid, me, __ATOMIC_RELEASE);
}

static uint32_t lock_token(const struct presence *p)
{
    return ((p->proc_gen & 0x3fffu) << 16) | ((p->proc + 1) & 0xffffu);
}

/* Whether the process that holds @word is alive (its slot still has the
 * generation the token names, and its OFD lock is held). */
static bool holder_alive(struct presence *p, uint32_t word)
{
    uint32_t proc1 = word & 0xffffu, gen14 = (word >> 16) & 0x3fffu;
    if (proc1 == 0)
        return false;
    struct pr_proc *pp = pr__proc(p, proc1 - 1);
    if (!pp)
        return false;
    uint64_t owner = pr_load(&pp->owner);
    uint32_t gen = (uint32_t) (owner >> 32);
    if ((uint32_t) owner == 0 || (gen & 0x3fffu) != gen14)
        return false; /* the slot was freed or taken by another process since */
    return pr__proc_alive(p, proc1 - 1, gen);
}

/* We hold @l, taken from a dead holder: repair what it guarded. */
static void took_over(struct presence *p, pr_repair_fn repair, uint32_t idx)
{
    if (repair)
        repair(p, idx);
    pr__count(p, PR_C_REPAIRS, 1);
    pr_store(&p->h->needs_sweep, 1u);
}

/* Sleeps on @l while its word is @w (held by a live process), until a release
 * wakes us or the timeout passes. */
static void sleep_on(pr_lock_t *l, uint32_t w)
{
    pr_fetch_add(&l->sleepers, 1u);
    long ns = lock_sleep_ns;
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0)
        ns = PR_LOCK_POLL_NS; /* a release may not see us: poll */
    if (pr_load(&l->word) == w) {
        struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
        syscall(SYS_futex, &l->word, FUTEX_WAIT, w, &ts, NULL, 0);
    }
    /* never below 0: the sweep may have forgotten us meanwhile (pr__lock_recover) */
    for (uint32_t c = pr_load(&l->sleepers); c != 0 && !pr_cas(&l->sleepers, c, c - 1);)
        c = pr_load(&l->sleepers);
}

int pr__lock(struct presence *p, pr_lock_t *l, pr_repair_fn repair, uint32_t idx)
{
    uint32_t me = lock_token(p);
    unsigned spins = 0;
    for (;;) {
        uint32_t w = pr_load(&l->word);
        if (w == 0) {
            if (pr_cas(&l->word, 0u, me))
                return 0;
            continue;
        }
        if (spins++ < PR_LOCK_SPINS) {
            pr_cpu_relax();
            continue;
        }
        if (!holder_alive(p, w)) {
            if (pr_cas(&l->word, w, me)) {
                took_over(p, repair, idx);
                return 0;
            }
            continue;
        }
        sleep_on(l, w);
        spins = PR_LOCK_SPINS / 2;
    }
}

void pr__unlock(pr_lock_t *l)
{
    if (PR_LIKELY(release_by_store))
        pr_store(&l->word, 0u); /* then the load below: see the top of the file */
    else
        pr_xchg(&l->word, 0u);
    if (PR_UNLIKELY(pr_load(&l->sleepers) != 0))
        syscall(SYS_futex, &l->word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

bool pr__lock_recover(struct presence *p, pr_lock_t *l, pr_repair_fn repair, uint32_t idx)
{
    uint32_t w = pr_load(&l->word);
    if (w == 0) {
        /* A count with nobody asleep is what a sleeper killed in its sleep
         * leaves; a live one that loses its count here wakes by its timeout. */
        if (PR_UNLIKELY(pr_load(&l->sleepers) != 0))
            pr_store(&l->sleepers, 0u);
        return false;
    }
    if (holder_alive(p, w) || !pr_cas(&l->word, w, lock_token(p)))
        return false;
    took_over(p, repair, idx);
    pr__unlock(l);
    return true;
}

/* ---- test-only crash injection ----------------------------------------- */

#include <signal.h>
#include <string.h>

int pr__kill_armed;
static char kill_name[64];
static long kill_countdown;

void pr__kill_point_init(void)
{
    const char *e = getenv("PRESENCE_TEST_KILL_AT");
    if (!e || !*e)
        return;
    const char *colon = strchr(e, ':');
    size_t n = colon ? (size_t) (colon - e) : strlen(e);
    if (n >= sizeof kill_name)
        return;
    memcpy(kill_name, e, n);
    kill_name[n] = '\0';
    kill_countdown = colon ? strtol(colon + 1, NULL, 10) : 1;
    if (kill_countdown < 1)
        kill_countdown = 1;
    pr__kill_armed = 1;
}

void pr__kill_point_hit(const char *name)
{
    if (strcmp(name, kill_name) == 0 &&
        __atomic_sub_fetch(&kill_countdown, 1, __ATOMIC_SEQ_CST) == 0)
        raise(SIGKILL);
}
