/*
 * clock.h -- presence-bench: the one clock every latency figure is taken with
 * (CLOCK_MONOTONIC, shared by all processes on the host), and the measurement of
 * what one reading costs, which is included in every per-operation latency.
 */
#ifndef BENCH_CLOCK_H
#define BENCH_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/** CLOCK_REALTIME in ns: what the library stamps its events with (time_ns). */
static inline uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/** A heartbeat stamp as the library takes one: CLOCK_MONOTONIC_COARSE rounded up by
 * its resolution (an upper bound of the true time, 4 ms granularity here), so that the
 * rwlock baseline pays for its heartbeats what shm does. */
static inline uint64_t stamp_ns(void)
{
    static uint64_t res;
    struct timespec ts;
    if (res == 0) {
        clock_getres(CLOCK_MONOTONIC_COARSE, &ts);
        res = (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
    }
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec + res;
}

/** Median cost of one clock_gettime(CLOCK_MONOTONIC) reading, in ns. */
uint64_t clock_overhead_ns(void);

/** Sleeps @p ns nanoseconds (restarted on EINTR). */
void sleep_ns(uint64_t ns);

#endif /* BENCH_CLOCK_H */
