/*
 * test_threads.c -- many threads of one process sharing one presence_t:
 * writers join/leave/touch/set_state their own connections in shared rooms,
 * readers take here_now snapshots, one thread runs maintenance. Built and run
 * under ThreadSanitizer in CI (TSan sees only one process, which is why the
 * cross-process tests exist separately); under a normal build it is a quick
 * functional check. Threads report failures through counters, never cmocka
 * asserts; the main thread asserts.
 */
#include "presence.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

enum { WRITERS = 3, READERS = 2, CONNS = 16, ROOMS = 4, MS = 1500 };

static presence_t *P;
static volatile int stop_flag;
static int failures[WRITERS + READERS + 1];
static unsigned long ops[WRITERS + READERS + 1];
static unsigned long joined[WRITERS], left[WRITERS]; /* JOINED answers, leaves that removed */
static bool present[WRITERS][CONNS][ROOMS];

static void *writer(void *arg)
{
    int id = (int) (intptr_t) arg;
    unsigned seed = (unsigned) id * 7919u + 1u;
    char conn[32], room[16], user[16], json[64];
    while (!__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)) {
        int c = rand_r(&seed) % CONNS, r = rand_r(&seed) % ROOMS;
        snprintf(conn, sizeof conn, "t%d-c%d", id, c);
        snprintf(room, sizeof room, "room%d", r);
        snprintf(user, sizeof user, "u%d", c % 3);
        int op = rand_r(&seed) % 4, rc;
        if (op == 0 || op == 1) {
            rc = presence_join(P, room, conn, user);
            if (rc != (present[id][c][r] ? PRESENCE_REFRESHED : PRESENCE_JOINED))
                failures[id]++;
            joined[id] += rc == PRESENCE_JOINED;
            present[id][c][r] = true;
        } else if (op == 2) {
            rc = presence_leave(P, room, conn);
            if (rc != (present[id][c][r] ? 1 : 0))
                failures[id]++;
            left[id] += rc == 1;
            present[id][c][r] = false;
        } else {
            const char *rooms[] = {room};
            snprintf(json, sizeof json, "{\"c\":\"%s\"}", conn);
            rc = presence_set_state(P, rooms, 1, NULL, 0, conn, json);
            if (rc != (present[id][c][r] ? 1 : 0))
                failures[id]++;
        }
        ops[id]++;
    }
    return NULL;
}

static void *reader(void *arg)
{
    int id = (int) (intptr_t) arg;
    const char *rooms[ROOMS] = {"room0", "room1", "room2", "room3"};
    while (!__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)) {
        presence_here_now_t *hn;
        if (presence_here_now(P, rooms, ROOMS, NULL, 0,
                              PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE, 0, 0, &hn) != 0) {
            failures[id]++;
            continue;
        }
        for (size_t i = 0; i < hn->nrooms; i++)
            if (hn->rooms[i].occupancy != hn->rooms[i].noccupants)
                failures[id]++;
        presence_here_now_free(hn);
        if (presence_occupancy(P, "room0") < 0 || presence_anonymous_count(P, "room1") < 0)
            failures[id]++;
        presence_strlist_t *l;
        if (presence_where_now(P, "u1", &l) == 0)
            presence_strlist_free(l);
        else
            failures[id]++;
        ops[id]++;
    }
    return NULL;
}

static void *maintainer(void *arg)
{
    int id = (int) (intptr_t) arg;
    while (!__atomic_load_n(&stop_flag, __ATOMIC_RELAXED)) {
        if (presence_maintain(P) < 0)
            failures[id]++;
        ops[id]++;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void test_threads_share_a_handle(void **state)
{
    (void) state;
    char name[64];
    snprintf(name, sizeof name, "pr-test-%d-threads", (int) getpid());
    presence_unlink(name);
    presence_options_t o;
    presence_options_init(&o);
    o.flags = PRESENCE_CREATE | PRESENCE_EXCL;
    o.rooms = 64;
    o.connections = 1024;
    o.presences = 4096;
    assert_int_equal(presence_open(name, &o, &P), 0);
    presence_stats_t s0;
    assert_int_equal(presence_stats(P, &s0), 0);
    pthread_t th[WRITERS + READERS + 1];
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, writer, (void *) (intptr_t) i);
    for (int i = WRITERS; i < WRITERS + READERS; i++)
        pthread_create(&th[i], NULL, reader, (void *) (intptr_t) i);
    pthread_create(&th[WRITERS + READERS], NULL, maintainer,
                   (void *) (intptr_t) (WRITERS + READERS));
    struct timespec ts = {MS / 1000, (MS % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < WRITERS + READERS + 1; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < WRITERS + READERS + 1; i++) {
        printf("# thread %d: %lu ops, %d failures\n", i, ops[i], failures[i]);
        assert_int_equal(failures[i], 0);
        assert_true(ops[i] > 0);
    }
    /* the registry equals the writers' models */
    for (int r = 0; r < ROOMS; r++) {
        char room[16];
        snprintf(room, sizeof room, "room%d", r);
        int want = 0;
        for (int w = 0; w < WRITERS; w++)
            for (int c = 0; c < CONNS; c++)
                want += present[w][c][r];
        assert_int_equal(presence_occupancy(P, room), want);
    }
    /* each thread counts into its own reader slot: the totals add up */
    presence_stats_t s1;
    assert_int_equal(presence_stats(P, &s1), 0);
    unsigned long joins = 0, leaves = 0;
    for (int w = 0; w < WRITERS; w++) {
        joins += joined[w];
        leaves += left[w];
    }
    assert_int_equal(s1.joins - s0.joins, joins);
    assert_int_equal(s1.leaves - s0.leaves, leaves);
    for (int i = 0; i < 3; i++)
        presence_maintain(P);
    presence_strlist_t *v = NULL;
    int n = presence_check(P, &v);
    for (size_t i = 0; v && i < v->count && i < 10; i++)
        printf("# violation: %s\n", v->items[i]);
    presence_strlist_free(v);
    assert_int_equal(n, 0);
    presence_close(P);
    presence_unlink(name);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_threads_share_a_handle)};
    return cmocka_run_group_tests_name("threads", tests, NULL, NULL);
}
