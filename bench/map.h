/*
 * map.h -- presence-bench: memory mapped at a 2 MiB boundary, as the library maps its
 * segment, so that what is asked for in 2 MiB pages is mapped by them (the rwlock
 * baseline's store; the touch_floor workload's records).
 */
#ifndef BENCH_MAP_H
#define BENCH_MAP_H

#include <stddef.h>

#define BENCH_HUGE_PAGE (2ull << 20)

/** Maps @p size bytes of @p fd (shared, every page mapped now: MAP_POPULATE, as the
 *  shm backend's workers attach with PRESENCE_POPULATE), or with @p fd < 0 private
 *  anonymous memory, at a 2 MiB boundary; nothing else of the reservation stays
 *  mapped, so munmap(m, size) undoes it. @return the mapping, or MAP_FAILED with
 *  errno set. */
void *bench_map_aligned(int fd, size_t size);

#endif
