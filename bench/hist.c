/*
 * hist.c -- presence-bench: the log-linear latency histogram (see hist.h for the scheme).
 * Owns bucket edges, merging and percentile extraction; recording is inline in hist.h.
 */
#include "hist.h"

#include <math.h>
#include <string.h>

void hist_init(hist_t *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

void hist_merge(hist_t *dst, const hist_t *src)
{
    if (src->count == 0)
        return;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_lower(unsigned i)
{
    if (i < (1u << HIST_SUB_BITS))
        return i;
    unsigned b = i >> HIST_SUB_BITS;
    uint64_t mant = (uint64_t) ((i & ((1u << HIST_SUB_BITS) - 1)) + (1u << HIST_SUB_BITS));
    return mant << (b - 1);
}

uint64_t hist_upper(unsigned i)
{
    if (i + 1 >= HIST_BUCKETS)
        return UINT64_MAX;
    return hist_lower(i + 1) - 1;
}

uint64_t hist_percentile(const hist_t *h, double pct)
{
    if (h->count == 0)
        return 0;
    if (pct > 100.0)
        pct = 100.0;
    uint64_t rank = (uint64_t) ceil(pct / 100.0 * (double) h->count);
    if (rank == 0)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t up = hist_upper(i);
            return up < h->max ? up : h->max;
        }
    }
    return h->max;
}
