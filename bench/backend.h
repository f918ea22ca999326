/*
 * backend.h -- presence-bench: the small vtable every compared presence store implements
 * (shm: our library; rwlock: the obvious baseline; redis, redis-pipe: a real redis-server).
 *
 * Life cycle of one measured run (one backend, one workload), driven by runner.c:
 *   parent:  setup() a fresh, empty store sized by the spec -> open() its own handle ->
 *            populate() -> fork the workers -> maintain() every few ms while they run ->
 *            close() -> teardown() (the store is destroyed: segment unlinked, db flushed).
 *   worker:  open() its own handle (as an unrelated process would) -> operations ->
 *            close() -> _exit().
 * finish() is called once at program exit (redis: stops the server).
 *
 * Return values of the operations: >= 0 the documented result, < 0 an error that
 * errstr() describes; BENCH_FATAL means the handle is unusable (connection lost) and
 * the worker stops. A backend with batch > 1 (pipelined) only queues in the operation
 * calls (returning 0, results unchecked) and completes everything queued in flush().
 */
#ifndef BENCH_BACKEND_H
#define BENCH_BACKEND_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_FATAL INT_MIN

/** One presence as the harness names it. user may be NULL (anonymous). */
typedef struct bench_key {
    const char *room;
    const char *conn;
    const char *user;
} bench_key_t;

/** What a fresh store must hold at once (the backend adds its own headroom). */
typedef struct bench_store_spec {
    uint64_t rooms;
    uint64_t connections;
    uint64_t presences;
    uint32_t procs;     /* worker processes that will attach, plus the parent */
    uint32_t state_len; /* longest state document the workload stores */
    /* events workload: the event-announcing daemon to run for the store's lifetime
     * (shm: presence-reaper, started by setup() with a private socket, stopped by
     * teardown()); NULL: none. */
    const char *reaper;
    /* --huge-pages: back the store with 2 MiB pages (shm: PRESENCE_HUGE_PAGES; rwlock:
     * the same madvise(MADV_COLLAPSE) on its segment); a store that cannot get them
     * says so on stderr and runs in 4 KiB pages. */
    bool huge_pages;
} bench_store_spec_t;

/** What a store holds and costs, read after its population (store_info()). */
typedef struct bench_store_info {
    uint64_t store_bytes; /* shm: the segment's size */
    uint64_t presences, presences_cap;
    uint64_t connections, connections_cap;
    uint64_t rooms, rooms_cap;
    uint64_t names_bytes, names_cap; /* shm: arena (names and state) used / capacity */
    uint32_t bytes_per_presence;     /* shm: the presence record, names excluded */
} bench_store_info_t;

/** One event as the events workload sees it. */
typedef struct bench_event {
    int type; /* BENCH_EV_* */
    const char *conn;
    uint64_t time_ns; /* CLOCK_REALTIME when the event was produced (0: unknown) */
} bench_event_t;

enum { BENCH_EV_JOIN = 1, BENCH_EV_LEAVE = 2, BENCH_EV_OTHER = 3 };

/** ev_next(): the subscriber fell a whole ring behind; events were lost. */
#define BENCH_EV_LAPPED 2

typedef struct bench_backend {
    const char *name;
    const char *description;
    unsigned batch; /* operations per round trip: 1, or the pipeline depth */

    /** 1 if usable on this host, else 0 with the reason in @p why. NULL: always. */
    int (*available)(char *why, size_t whylen);
    /** Parent: creates a fresh empty store. @return 0 or -1 with @p err set. */
    int (*setup)(const bench_store_spec_t *spec, void **store, char *err, size_t errlen);
    void (*teardown)(void *store);
    /** Any process: attaches to the store. @return 0 or -1 with @p err set. */
    int (*open)(void *store, void **h, char *err, size_t errlen);
    void (*close)(void *h);
    /** Optional: called once when the program ends. */
    void (*finish)(void);

    /** @return 0 joined, 1 already present. timeout_ms 0 = the default (60 s). */
    int (*join)(void *h, const bench_key_t *k, uint64_t timeout_ms);
    /** @return 1 removed, 0 absent. */
    int (*leave)(void *h, const bench_key_t *k);
    /** Refreshes last_seen of k->conn. @return 0, or 1 when not present. */
    int (*touch)(void *h, const bench_key_t *k);
    /** Optional: obtains a token for touch_token() (shm: a connection handle). */
    int (*touch_prepare)(void *h, const bench_key_t *k, uint64_t *token);
    int (*touch_token)(void *h, uint64_t token);
    /** Occupants of @p room with their uuids. @return the occupancy. */
    int (*here_now)(void *h, const char *room);
    /** Rooms where @p uuid (a user id) is present. @return their number. */
    int (*where_now)(void *h, const char *uuid);
    /** State of k's user in k->room. @return the number of (room, uuid) items found. */
    int (*get_state)(void *h, const bench_key_t *k);
    /** Removes every connection older than its timeout. @return presences removed. */
    int (*prune)(void *h);
    /** Bulk load: joins every key with @p timeout_ms and, if @p state, sets that state. */
    int (*populate)(void *h, const bench_key_t *keys, size_t n, uint64_t timeout_ms,
                    const char *state);
    /** Pipelined backends: completes what was queued. @return failed ops or BENCH_FATAL. */
    int (*flush)(void *h);
    /** Optional: the maintenance the reaper daemon would do; the parent calls it. */
    void (*maintain)(void *h);
    /** Optional: sizes and counts of the store (parent, after populating). */
    int (*store_info)(void *h, bench_store_info_t *out);

    /* Optional, the events workload: a subscription from "now" to @p room's events
     * (NULL: every room). ev_fd() becomes readable when events may be waiting (it is
     * re-armed by an ev_next() that answers 0). ev_next() @return 1 (an event in
     * @p ev, valid until the next call), 0 (none yet), BENCH_EV_LAPPED, or < 0. */
    int (*ev_subscribe)(void *h, const char *room, void **sub);
    int (*ev_fd)(void *sub);
    int (*ev_next)(void *sub, bench_event_t *ev);
    void (*ev_close)(void *sub);

    /** Describes an error this backend returned. Never NULL. */
    const char *(*errstr)(void *h, int rc);
} bench_backend_t;

#ifdef PRESENCE_BENCH_HAVE_SHM
extern const bench_backend_t bench_backend_shm;
/** presence_version_string() of the linked library. */
const char *bench_shm_version(void);
#endif
extern const bench_backend_t bench_backend_rwlock;
#ifdef PRESENCE_BENCH_HAVE_REDIS
extern const bench_backend_t bench_backend_redis;
extern const bench_backend_t bench_backend_redis_pipe;
#endif

#endif /* BENCH_BACKEND_H */
