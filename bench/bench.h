/*
 * bench.h -- presence-bench: the run configuration and the operation list shared by
 * every part of the harness (CLI, workloads, runner, report).
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdbool.h>
#include <stdint.h>

/* Workloads, in the order they run and are reported. */
typedef enum bench_op {
    OP_TOUCH,
    OP_TOUCH_HANDLE, /* shm only: touch by connection handle; runs with "touch" */
    OP_TOUCH_FLOOR,  /* shm only: the memory system's floor under a touch; runs with "touch" */
    OP_JOIN_LEAVE,
    OP_JOIN_LEAVE_FLOOR, /* shm only: the contract's least work per pair; runs with "join_leave" */
    OP_HERE_NOW,
    OP_WHERE_NOW,
    OP_GET_STATE,
    OP_PRUNE,
    OP_MIXED,
    OP_EVENTS, /* cross-process wake-up latency vs raw eventfd, and a flood (shm only) */
    OP__COUNT
} bench_op_t;

#define BENCH_MAX_PROCS    256
#define BENCH_MAX_HERE_NOW 2
/* unpipelined touch, join_leave, where_now and get_state time one call in this many,
 * on average (workload.c: run_loop) */
#define WL_TIMED_STRIDE    16u

typedef struct bench_config {
    unsigned procs;     /* worker processes (-P) */
    unsigned ops;       /* bit (1u << bench_op_t) per selected workload */
    double duration_s;  /* measured seconds per run (-d); 0 in count mode */
    uint64_t count;     /* measured operations per row (-n); 0 in duration mode */
    double warmup_s;    /* unmeasured seconds before (--warmup) */
    uint64_t seed;      /* --seed */
    uint32_t rooms;     /* --rooms: rooms of the standard population */
    uint32_t room_size; /* --room-size: members per room (default 100) */
    bool room_size_set; /* --room-size given: here_now runs that size only */
    uint32_t here_now_sizes[BENCH_MAX_HERE_NOW];
    unsigned n_here_now_sizes;
    uint32_t prune_size;    /* expired presences the prune workload removes */
    uint64_t population;    /* --population: total presences (0: rooms x room_size) */
    uint32_t conn_rooms;    /* --conn-rooms: rooms per connection (1) */
    uint32_t event_samples; /* --event-samples: measured wake-ups of each kind (2000) */
    uint32_t event_pace_us; /* --event-pace: idle time before each wake-up sample (300) */
    const char *reaper;     /* presence-reaper to start for the events workload (NULL: none) */
    bool huge_pages;        /* --huge-pages: stores in 2 MiB pages (shm and rwlock) */
    uint32_t floor_bytes;   /* --floor-bytes: touch_floor's record size (128) */
    double timeout_s;       /* a run that takes this much longer than planned is killed */
    const char *json_path;  /* --json */
    bool quiet;             /* -q */
    uint64_t clock_ns;      /* measured cost of one clock reading */
} bench_config_t;

/** The workload's -t name ("touch", ...). */
const char *bench_op_name(bench_op_t op);

#endif /* BENCH_H */
