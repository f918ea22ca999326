/*
 * test_util.h -- the small things every test program and helper needs: clocks,
 * sleeping, the tests' random numbers, the path of a binary a test execs, and
 * the table of children a test must not leave behind. One definition, so the
 * copies cannot drift.
 */
#ifndef PR_TEST_UTIL_H
#define PR_TEST_UTIL_H

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

#define TU_UNUSED __attribute__((unused))

static inline uint64_t tu_clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static inline uint64_t tu_mono_ms(void)
{
    return tu_clock_ns(CLOCK_MONOTONIC) / 1000000ull;
}

static inline uint64_t tu_realtime_ns(void)
{
    return tu_clock_ns(CLOCK_REALTIME);
}

/* Sleeps @ms milliseconds in all (restarted after a signal). */
static inline void tu_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t) (ms / 1000u), (long) (ms % 1000u) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The tests' xorshift64 generator: the next 32 bits of *@state (seeded, so a
 * printed seed reproduces a run). */
static inline uint32_t tu_rnd(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (uint32_t) (*state >> 16);
}

/* $@name, or @fallback (the path the build compiled in) when it is unset. */
static inline const char *tu_env_or(const char *name, const char *fallback)
{
    const char *e = getenv(name);
    return e ? e : fallback;
}

/* Every child a test started and has not reaped, so that none outlives it. */
static TU_UNUSED pid_t tu_children[256];
static TU_UNUSED int tu_nchildren;

static inline void tu_track(pid_t pid)
{
    if (pid > 0 && tu_nchildren < (int) (sizeof tu_children / sizeof tu_children[0]))
        tu_children[tu_nchildren++] = pid;
}

static inline void tu_untrack(pid_t pid)
{
    for (int i = 0; i < tu_nchildren; i++)
        if (tu_children[i] == pid) {
            tu_children[i] = tu_children[--tu_nchildren];
            return;
        }
}

/* Kills and reaps every tracked child. */
static inline void tu_kill_children(void)
{
    for (int i = 0; i < tu_nchildren; i++) {
        kill(tu_children[i], SIGKILL);
        waitpid(tu_children[i], NULL, 0);
    }
    tu_nchildren = 0;
}

#endif /* PR_TEST_UTIL_H */
