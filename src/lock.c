/*
 * lock.c -- the only locks in the segment: one per room, per connection, per
 * group, and per bucket stripe. There is no global lock. Readers never take
 * any of them.
 *
 * A lock is one 32-bit word (layout.h): 0 when free, else the holder's token
 * {process-slot generation & 0x3fff : 14 | process slot + 1 : 16}, plus
 * PR_LOCK_WAITERS while someone sleeps on it. Taking it is one CAS 0 -> token;
 * releasing it is one exchange to 0, and a futex wake only if the waiters bit
 * was set. A locker that finds it held watches the word for a while (reading
 * only: no cache-line traffic; a holder keeps a room or connection lock for
 * about a microsecond, a futex sleep and wake-up costs 10-20 us here), then
 * asks whether the holder's process is alive -- its OFD lock, as for reader
 * slots -- and sleeps on the futex (with a timeout, since a holder that dies
 * while we sleep wakes no one) only if it is.
 *
 * When the holder is dead, the locker takes the lock over by CAS and runs the
 * object's repair function (which makes the object's lists and counters agree
 * again; every mutation is ordered so that a repair can tell what a half-done
 * one meant), then flags the segment for a maintenance sweep, which reclaims
 * records the dead process left unreachable. pr__lock_recover() does the same
 * for a lock nobody is waiting for (the sweep scans every lock word).
 *
 * The token is per process, not per thread: threads of one process exclude
 * each other like any two lockers; a process only dies as a whole.
 */
#include "internal.h"

#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PR_LOCK_SPINS    256       /* pause-loop reads of the word before sleeping, ~5 us here */
#define PR_LOCK_SLEEP_NS 20000000L /* a sleeper re-checks its holder this often */

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
        if (!holder_alive(p, w & ~PR_LOCK_WAITERS)) {
            /* keep the waiters bit: others may sleep on the word */
            if (pr_cas(&l->word, w, me | (w & PR_LOCK_WAITERS))) {
                took_over(p, repair, idx);
                return 0;
            }
            continue;
        }
        if (!(w & PR_LOCK_WAITERS) && !pr_cas(&l->word, w, w | PR_LOCK_WAITERS))
            continue;
        struct timespec ts = {0, PR_LOCK_SLEEP_NS};
        syscall(SYS_futex, &l->word, FUTEX_WAIT, w | PR_LOCK_WAITERS, &ts, NULL, 0);
        spins = PR_LOCK_SPINS / 2;
    }
}

void pr__unlock(pr_lock_t *l)
{
    uint32_t old = pr_xchg(&l->word, 0u);
    if (PR_UNLIKELY(old & PR_LOCK_WAITERS))
        syscall(SYS_futex, &l->word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

bool pr__lock_recover(struct presence *p, pr_lock_t *l, pr_repair_fn repair, uint32_t idx)
{
    uint32_t w = pr_load(&l->word);
    if (w == 0 || holder_alive(p, w & ~PR_LOCK_WAITERS) ||
        !pr_cas(&l->word, w, lock_token(p) | (w & PR_LOCK_WAITERS)))
        return false;
    took_over(p, repair, idx);
    pr__unlock(l);
    return true;
}

/* ---- test-only crash injection ----------------------------------------- */

#include <signal.h>
#include <stdlib.h>
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
