/*
 * lock.c -- the only locks in the segment: robust, process-shared mutexes, one
 * per room, per connection, per group, and per bucket stripe. There is no
 * global lock. Readers never take any of them.
 *
 * When a holder dies, the kernel's robust-futex list hands the next locker
 * EOWNERDEAD. That locker runs the object's repair function (which makes the
 * object's lists and counters agree again; every mutation is ordered so that a
 * repair can tell what a half-done one meant), marks the mutex consistent, and
 * flags the segment for a maintenance sweep, which reclaims records the dead
 * process left unreachable.
 *
 * Robust mutexes do not spin (glibc's adaptive kind excludes robustness), and
 * a futex sleep and wake-up costs 10-20 us here while a holder keeps a room or
 * connection lock for about a microsecond. So a locker first watches the lock
 * word for a while (reading only: no cache-line traffic) and tries again when
 * it reads free, and sleeps in the kernel only after that.
 */
#include "internal.h"

int pr__mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return -rc;
}

#define PR_LOCK_SPINS 256 /* pause-loop reads of the lock word, ~2-5 us */

int pr__lock(struct presence *p, pthread_mutex_t *m, pr_repair_fn repair, uint32_t idx)
{
    int rc = pthread_mutex_trylock(m);
    for (unsigned spin = 0; rc == EBUSY && spin < PR_LOCK_SPINS; spin++) {
        pr_cpu_relax();
        if (pr_load(&m->__data.__lock) == 0) /* glibc: the owner's tid, 0 when free */
            rc = pthread_mutex_trylock(m);
    }
    if (rc == EBUSY)
        rc = pthread_mutex_lock(m);
    if (PR_LIKELY(rc == 0))
        return 0;
    if (rc == EOWNERDEAD) {
        if (repair)
            repair(p, idx);
        pthread_mutex_consistent(m);
        pr__count(p, PR_C_REPAIRS, 1);
        pr_store(&p->h->needs_sweep, 1u);
        return 0;
    }
    return rc == ENOTRECOVERABLE ? PRESENCE_ECORRUPT : -rc;
}

void pr__unlock(pthread_mutex_t *m)
{
    pthread_mutex_unlock(m);
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
