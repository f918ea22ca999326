/*
 * jl_floor.h -- presence-bench: the join_leave_floor row. What a join + leave pair
 * has to do at least under the library's contract, written without the library, so
 * that a run shows how far any implementation of that contract could go on this
 * machine, beside the library's join_leave and the rwlock baseline's.
 */
#ifndef BENCH_JL_FLOOR_H
#define BENCH_JL_FLOOR_H

#include "backend.h"

#include <stddef.h>
#include <stdint.h>

typedef struct jl_floor jl_floor_t;

/** Maps the floor's shared region (MAP_SHARED, anonymous: call before forking the
 *  workers, which then share it as they share a segment): an index of @p conns
 *  connections, @p rooms rooms, @p workers workers' own records, and an event ring
 *  of @p ring_entries 64-byte entries (a power of two). @return NULL on failure
 *  (errno set). */
jl_floor_t *jl_floor_create(size_t conns, uint32_t rooms, unsigned workers, uint32_t ring_entries);

/** One join then leave of @p k by worker @p worker (each worker calls it with its own
 *  worker number, below jl_floor_create's @p workers, for connections of its own).
 *  @return 0, or -1 for a worker number out of range or when the leave
 *  did not find what the join added (a bug: the row is then reported as failing). */
int jl_floor_pair(jl_floor_t *f, unsigned worker, const bench_key_t *k);

/** An event of the floor's ring as jl_floor_event() reads it back. */
typedef struct jl_floor_event {
    uint64_t time_ns;
    uint32_t occupancy;
    unsigned type; /* 1 join, 2 leave */
    char room[256], conn[256], user[256];
} jl_floor_event_t;

/** The floor's ring tail: the position after the last claimed entry. */
uint64_t jl_floor_tail(const jl_floor_t *f);

/** Reads back the event whose record starts at @p pos (for tests, once the writers are
 *  done). @return its entries' count (the next record's position is @p pos plus it),
 *  or -1 if no committed record starts there. */
int jl_floor_event(const jl_floor_t *f, uint64_t pos, jl_floor_event_t *out);

void jl_floor_destroy(jl_floor_t *f);

#endif
