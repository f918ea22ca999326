/*
 * test_jl_floor.c -- ctest bench_jl_floor: the join_leave_floor row does the work it
 * claims. Two forked workers run join + leave pairs on one floor at once (each exits
 * with its status; the parent asserts on them), then the parent reads the ring back:
 * every record committed and whole, one join and one leave event per pair in each
 * worker's order, with its room, connection and user names, an occupancy that the
 * two workers' pairs allow, and a wall-clock stamp from the run. A floor that skipped
 * its events, or wrote them short, would be faster than what it stands for; this
 * fails then.
 */
#include "jl_floor.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 2u
#define PAIRS   5000u /* per worker: 4 entries a pair, 40,000 of the ring's 65,536 */
#define KEYS    16u
#define ROOMS   4u

static char names[WORKERS][KEYS][3][32];
static const char *const rooms[ROOMS] = {"room-a", "room-b", "room-c", "room-d"};

static bench_key_t key_of(unsigned w, unsigned i)
{
    unsigned k = i % KEYS;
    bench_key_t key = {rooms[k % ROOMS], names[w][k][1], names[w][k][2]};
    return key;
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static int fail(const char *what, unsigned long long at)
{
    fprintf(stderr, "test_jl_floor: %s (at %llu)\n", what, at);
    return 1;
}

int main(void)
{
    alarm(60); /* bounded: a hang fails the test */
    for (unsigned w = 0; w < WORKERS; w++)
        for (unsigned k = 0; k < KEYS; k++) {
            snprintf(names[w][k][1], sizeof names[w][k][1], "w%u-conn-%02u", w, k);
            snprintf(names[w][k][2], sizeof names[w][k][2], "w%u-user-%02u", w, k);
        }
    jl_floor_t *f = jl_floor_create(1000, ROOMS, WORKERS, 65536);
    if (f == NULL)
        return fail("jl_floor_create failed", 0);
    bench_key_t k0 = key_of(0, 0);
    if (jl_floor_pair(f, WORKERS, &k0) != -1)
        return fail("a worker number out of range was accepted", WORKERS);
    if (jl_floor_tail(f) != 0)
        return fail("a refused pair wrote events", jl_floor_tail(f));

    uint64_t t0 = realtime_ns();
    pid_t pids[WORKERS];
    for (unsigned w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        if (pids[w] < 0)
            return fail("fork failed", w);
        if (pids[w] == 0) {
            for (unsigned i = 0; i < PAIRS; i++) {
                bench_key_t k = key_of(w, i);
                if (jl_floor_pair(f, w, &k) != 0)
                    _exit(1);
            }
            _exit(0);
        }
    }
    int bad = 0;
    for (unsigned w = 0; w < WORKERS; w++) {
        int st = 0;
        if (waitpid(pids[w], &st, 0) != pids[w] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad |= fail("a worker's pair failed or the worker died", w);
    }
    if (bad)
        return 1;
    uint64_t t1 = realtime_ns();

    /* read the ring back: each worker's events in its order */
    unsigned seen[WORKERS] = {0};
    uint64_t tail = jl_floor_tail(f), pos = 0;
    while (pos < tail) {
        jl_floor_event_t ev;
        int n = jl_floor_event(f, pos, &ev);
        if (n < 1)
            return fail("no committed, whole record where one starts", pos);
        jl_floor_event_t probe;
        if (n > 1 && jl_floor_event(f, pos + 1, &probe) != -1)
            return fail("a record read from its second entry", pos + 1);
        unsigned w = ev.conn[1] == '0' ? 0 : 1;
        if (ev.conn[0] != 'w' || seen[w] >= 2 * PAIRS)
            return fail("an event of no worker's, or too many of one", pos);
        unsigned i = seen[w] / 2;
        bench_key_t k = key_of(w, i);
        unsigned want_type = seen[w] % 2 == 0 ? 1 : 2;
        if (ev.type != want_type || strcmp(ev.room, k.room) != 0 || strcmp(ev.conn, k.conn) != 0 ||
            strcmp(ev.user, k.user) != 0)
            return fail("an event out of its worker's order, or with wrong names", pos);
        /* the other worker's pair may share the room (a room per key % ROOMS) */
        if ((want_type == 1 && (ev.occupancy < 1 || ev.occupancy > WORKERS)) ||
            (want_type == 2 && ev.occupancy > WORKERS - 1))
            return fail("an occupancy the pairs cannot give", pos);
        if (ev.time_ns < t0 || ev.time_ns > t1)
            return fail("a time stamp outside the run", pos);
        seen[w]++;
        pos += (uint64_t) n;
    }
    for (unsigned w = 0; w < WORKERS; w++)
        if (seen[w] != 2 * PAIRS)
            return fail("a worker's events are missing", w);
    if (pos != tail)
        return fail("records end past the tail", pos);
    printf("test_jl_floor: %u pairs by %u workers, %llu ring entries, all events read back\n",
           WORKERS * PAIRS, WORKERS, (unsigned long long) tail);
    jl_floor_destroy(f);
    return 0;
}
