/*
 * clock.c -- presence-bench: measures the cost of a clock reading (reported with every
 * run, since each latency sample includes one), and a sleep helper.
 */
#include "clock.h"

#include <errno.h>
#include <stdlib.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return (x > y) - (x < y);
}

uint64_t clock_overhead_ns(void)
{
    enum { ROUNDS = 101, READS = 1000 };
    uint64_t per[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t t0 = now_ns(), t = t0;
        for (int i = 0; i < READS; i++)
            t = now_ns();
        per[r] = (t - t0) / READS;
    }
    qsort(per, ROUNDS, sizeof per[0], cmp_u64);
    return per[ROUNDS / 2];
}

void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t) (ns / 1000000000u),
                          .tv_nsec = (long) (ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}
