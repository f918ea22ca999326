/*
 * map.c -- presence-bench: mappings at a 2 MiB boundary (see map.h). A reservation one
 * huge page larger is made, the mapping placed inside it at the boundary, and the
 * rest of the reservation unmapped.
 */
#include "map.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

void *bench_map_aligned(int fd, size_t size)
{
    size_t span = size + BENCH_HUGE_PAGE;
    char *r = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED)
        return MAP_FAILED;
    char *at = r + ((BENCH_HUGE_PAGE - (uintptr_t) r % BENCH_HUGE_PAGE) % BENCH_HUGE_PAGE);
    int flags = MAP_FIXED | (fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_SHARED | MAP_POPULATE);
    void *m = mmap(at, size, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        munmap(r, span);
        errno = e;
        return MAP_FAILED;
    }
    size_t page = (size_t) sysconf(_SC_PAGESIZE);
    char *end = at + (size + page - 1) / page * page;
    if (at > r)
        munmap(r, (size_t) (at - r));
    if (r + span > end)
        munmap(end, (size_t) (r + span - end));
    return m;
}
