/*
 * workload.h -- presence-bench: what each workload loads into a store and what its
 * worker processes do, and the shared-memory block through which the workers report.
 *
 * Every workload starts from a fresh store holding a standard population: `rooms`
 * rooms of `room_size` members; connection i is "conn-i" of user "user-i", in one
 * room, with a one-hour timeout (nothing expires during a run unless meant to).
 * The rows a workload reports:
 *   touch        touch(conn) of a random member                      all workers
 *   touch_handle the same through a connection handle (shm only)     all workers
 *   touch_floor  no library: what a touch by handle does to its record (load the
 *                state word, read the coarse clock, CAS last_seen when newer),
 *                on a random one of as many 128-byte records (--floor-bytes) of
 *                the worker's own (its share of the population's connections, in
 *                pages of the run's size; nothing else loaded): the memory
 *                system's floor under a touch at that population (shm only) all workers
 *   join_leave   join then leave of a worker-owned connection, one op all workers
 *   join_leave_floor  the same pair without the library, with the least DESIGN.md's
 *                architecture asks (jl_floor.c: name hashes, writer locks on index
 *                stripes and the room, chained indexes, the room's list, two
 *                events in the one ring with their fence), in one region all
 *                workers share: the floor of that architecture (shm only) all workers
 *   here_now_N   here_now(room) of rooms of N members, uuids listed  all workers
 *   where_now    where_now(user) of a random member                  all workers
 *   get_state    get_state(room, user) of a random member (state set) all workers
 *   prune        one prune() call removing prune_size expired
 *                presences (one sample: the call's duration)         worker 0
 *   prune_read   here_now latency of the others while it runs        workers 1..
 *   prune_idle_read  the same readers' here_now latency in the same run,
 *                for the measured duration just before the prune     workers 1..
 *   mixed_read   here_now under write load: the headline figure      workers 1..
 *   mixed_write  join / touch / leave, rotating, on the same rooms   worker 0
 *   events_wakeup     cross-process wake-up: from before the producer's join to
 *                     after the subscriber's sub_next returned that join event; the
 *                     subscriber sleeps in poll() on its subscription fd   worker 1
 *   eventfd_pingpong  the floor, interleaved with the above sample by sample: from
 *                     before write(eventfd) to after the sleeping peer's poll()
 *                     woke and read() returned                             worker 1
 *   eventfd_relay     the same through a third process that polls, reads and writes
 *                     a second eventfd: the floor of a wake-up forwarded by a
 *                     daemon (presence-reaper's doorbell), interleaved too  worker 1
 *   events_flood_read one subscriber (all rooms) draining while a producer floods:
 *                     events delivered, times lapped                       worker 1
 *   events_flood_write the producer's join + leave pairs (two events each)  worker 0
 *   events_drain      what one subscriber can consume: bursts of 10,000 events
 *                     written while it waits, then drained; the cost per event, and
 *                     ops/s = events over the time spent draining only        worker 1
 * With --population N the standard population is N presences (N / room_size rooms
 * of room_size members), here_now included. With --conn-rooms K each connection is
 * in K rooms (N / K connections), so where_now answers K rooms.
 */
#ifndef BENCH_WORKLOAD_H
#define BENCH_WORKLOAD_H

#include "backend.h"
#include "bench.h"
#include "hist.h"

#include <stdatomic.h>
#include <stddef.h>

#define WL_MAX_ROWS   7
#define WL_EXTRA_KEYS 1024   /* worker-owned connections per worker */
#define WL_FLOOR_RING 65536u /* join_leave_floor's ring: the library's default size */

typedef struct jl_floor jl_floor_t;

typedef struct bench_keys {
    size_t n;
    bench_key_t *keys;
} bench_keys_t;

typedef struct workload {
    bench_op_t op;
    char name[32];
    unsigned nrows;
    char row[WL_MAX_ROWS][32];
    unsigned procs;
    uint32_t rooms, room_size; /* the standard population */
    bool with_state;
    uint32_t prune_size;
    uint32_t event_samples, event_pace_us; /* events */
    double idle_s;                         /* prune: the idle readers' window */
    int efd_ping, efd_pong;                /* events: the raw eventfd pair (-1: none) */
    int efd_relay_in, efd_relay_out;       /* events: through the relay process */
    const char *reaper;                    /* events: the daemon the store needs */
    bool huge_pages;                       /* the stores in 2 MiB pages (--huge-pages) */
    uint32_t floor_bytes;                  /* touch_floor's record size (--floor-bytes) */
    bench_keys_t live;    /* rooms * room_size presences; room r is live.keys[r * room_size].room */
    uint32_t conn_rooms;  /* rooms per connection in it (--conn-rooms, or 1) */
    size_t live_conns;    /* its connections: live.keys[0 .. live_conns - 1] name each once */
    bench_keys_t old;     /* prune: expired presences */
    bench_keys_t extra;   /* procs * WL_EXTRA_KEYS worker-owned connections, random live rooms */
    char *names;          /* storage of every name above */
    jl_floor_t *jl_floor; /* join_leave_floor: its shared region (mapped before the fork) */
} workload_t;

/* One worker's figures for one row. */
typedef struct run_row {
    uint64_t ops;     /* measured operations */
    uint64_t errors;  /* failed operations, warm-up included */
    uint64_t items;   /* prune: presences removed; events: events delivered / produced */
    uint64_t lapped;  /* events_flood_read: times the subscriber was lapped */
    uint64_t cpu_ns;  /* prune: CPU time of the calling thread during the call */
    uint64_t retries; /* events latency rows: samples whose peer was not yet asleep at
                         the first look (the producer waited more before sending) */
    uint64_t t_first; /* start of the first measured operation */
    uint64_t t_last;  /* end of the last one */
    hist_t hist;
} run_row_t;

typedef struct run_worker {
    int32_t failed;
    char err[256]; /* the first error */
    run_row_t row[WL_MAX_ROWS];
} run_worker_t;

/* The control block of one run, in a MAP_SHARED anonymous mapping. */
typedef struct run_ctl {
    _Atomic uint32_t ready;        /* workers attached and prepared */
    _Atomic uint32_t go;           /* set by the parent once all are ready */
    _Atomic uint32_t abort;        /* set by the parent when a worker failed */
    _Atomic uint32_t started;      /* readers past their first operation */
    _Atomic uint32_t readers_done; /* count mode: readers that finished their quota */
    _Atomic uint64_t prune_start, prune_end;
    /* events: the sample's send time, the sample number the subscriber is armed
     * for (k + 1), its pid, and the flood's phase (1 subscribed, 2 producer done) */
    _Atomic uint64_t ev_t0;
    _Atomic uint32_t ev_armed;
    _Atomic int32_t ev_sub_pid, ev_relay_pid;
    _Atomic uint32_t ev_phase;
    _Atomic uint32_t ev_burst_ready, ev_burst_done; /* events_drain: burst b + 1 */
    uint64_t t_go, t_measure, t_end;                /* written before go; t_end 0 = count mode */
    uint64_t count; /* count mode: measured ops per row, all workers */
    unsigned nworkers;
    run_worker_t w[];
} run_ctl_t;

/** Builds the workload @p op (@p size: here_now's room size). @return 0 or -1 (ENOMEM). */
int workload_init(workload_t *wl, bench_op_t op, uint32_t size, const bench_config_t *cfg);
void workload_free(workload_t *wl);
/** 1 if @p be implements what the workload calls. */
int workload_supported(const workload_t *wl, const bench_backend_t *be);
/** What a fresh store must hold for it. */
void workload_spec(const workload_t *wl, bench_store_spec_t *spec);
/**
 * Parent: loads the population through @p h; a large one is loaded by @p nproc forked
 * processes in parallel (each with its own handle from @p store), the rest by @p h.
 * @return 0 or -1 with @p err.
 */
int workload_populate(const workload_t *wl, const bench_backend_t *be, void *store, void *h,
                      unsigned nproc, char *err, size_t errlen);
/**
 * Worker @p id: prepares (before reporting ready), waits for go, runs, records into
 * ctl->w[id]. @return 0, or -1 with ctl->w[id].err set.
 */
int workload_worker(const workload_t *wl, const bench_backend_t *be, void *h, unsigned id,
                    uint64_t seed, run_ctl_t *ctl);

#endif /* BENCH_WORKLOAD_H */
