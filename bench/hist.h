/*
 * hist.h -- presence-bench: the log-linear latency histogram.
 *
 * The scheme of research/aesthetics.md section 5: values below 128 have a bucket each;
 * above, every power of two is split into 128 equal sub-buckets, so a bucket's width is
 * at most 1/128 of its values (0.78 % relative error) and 7424 counters cover all of
 * uint64_t. Histograms merge by adding their bucket arrays; percentiles are read from a
 * (merged) histogram, never averaged. A hist_t has no pointers, so it can live in a
 * MAP_SHARED mapping written by a worker process and read by the parent.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7 /* 2^7 sub-buckets per power of two */
#define HIST_BUCKETS  ((64 - HIST_SUB_BITS + 1) << HIST_SUB_BITS) /* 7424 */

typedef struct hist {
    uint64_t count; /* values recorded */
    uint64_t min;   /* exact smallest value (UINT64_MAX when empty) */
    uint64_t max;   /* exact largest value (0 when empty) */
    uint64_t buckets[HIST_BUCKETS];
} hist_t;

/** The bucket that holds @p v. */
static inline unsigned hist_index(uint64_t v)
{
    if (v < (1u << HIST_SUB_BITS))
        return (unsigned) v;
    unsigned e = 63u - (unsigned) __builtin_clzll(v);
    unsigned sh = e - HIST_SUB_BITS;
    return ((sh + 1) << HIST_SUB_BITS) + (unsigned) ((v >> sh) - (1u << HIST_SUB_BITS));
}

/** Records @p n occurrences of the value @p v. */
static inline void hist_add_n(hist_t *h, uint64_t v, uint64_t n)
{
    h->buckets[hist_index(v)] += n;
    h->count += n;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void hist_init(hist_t *h);
/** Adds every bucket of @p src to @p dst. */
void hist_merge(hist_t *dst, const hist_t *src);
/** Smallest value bucket @p i holds. */
uint64_t hist_lower(unsigned i);
/** Largest value bucket @p i holds. */
uint64_t hist_upper(unsigned i);
/**
 * The @p pct percentile (0 < pct <= 100): the upper edge of the bucket holding the
 * ceil(pct/100 * count)-th smallest value, clamped to the exact max, so that
 * p50 <= p99 <= p99.9 <= max always holds. 0 for an empty histogram.
 */
uint64_t hist_percentile(const hist_t *h, double pct);

#endif /* BENCH_HIST_H */
