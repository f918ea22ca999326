/*
 * report.h -- presence-bench: the result rows, and everything printed or written from
 * them: the configuration block (with the loud non-optimized-build warning), the
 * latency tables (one backend, or several side by side with ratios), -q lines, the
 * --json document, and --validate-json.
 */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include "bench.h"
#include "hist.h"

#include <stddef.h>
#include <stdio.h>

typedef struct bench_row {
    char backend[24];
    char op[32];
    uint64_t ops;     /* measured operations */
    uint64_t errors;  /* failed operations (warm-up included) */
    uint64_t items;   /* prune: presences removed; events: delivered / produced */
    uint64_t lapped;  /* events_flood_read: times lapped */
    uint64_t cpu_ns;  /* prune: the call's CPU time (its wall time is the latency) */
    uint64_t retries; /* events latency rows: samples whose peer was not asleep at once */
    double seconds;   /* measured window: first start to last end */
    hist_t *hist;     /* merged over workers */
    char err[256];    /* first error, when errors > 0 */
} bench_row_t;

typedef struct bench_failure {
    char backend[24];
    char op[32];
    char err[320];
} bench_failure_t;

/** One run's store after its population: how long loading took, what it costs. */
typedef struct bench_store_note {
    char backend[24];
    char workload[32]; /* the run's first row */
    double populate_s;
    double settle_s;     /* the maintenance passes after loading (shm: a full sweep) */
    uint64_t population; /* presences loaded */
    int have_info;       /* the fields below are set (the backend reports them) */
    uint64_t store_bytes, presences, presences_cap, connections, connections_cap, rooms;
    uint64_t names_bytes, names_cap;
    uint32_t bytes_per_presence;
} bench_store_note_t;

typedef struct bench_results {
    bench_row_t *rows;
    size_t n, cap;
    bench_failure_t *failures;
    size_t nfail, capfail;
    bench_store_note_t *notes;
    size_t nnotes, capnotes;
} bench_results_t;

/** Appends an empty row (with an empty histogram). NULL when out of memory. */
bench_row_t *results_add(bench_results_t *r, const char *backend, const char *op);
/** Appends a zeroed store note. NULL when out of memory. */
bench_store_note_t *results_add_note(bench_results_t *r, const char *backend, const char *workload);
void results_add_failure(bench_results_t *r, const char *backend, const char *op, const char *err);
void results_free(bench_results_t *r);

/** The build: CMAKE_BUILD_TYPE, and whether it is optimized and sanitizer-free. */
const char *report_build_type(void);
int report_build_is_benchmarkable(void);

/** The configuration block. @p libversion may be NULL (shm not built in). */
void report_header(FILE *out, const bench_config_t *cfg, const char *const *backends,
                   size_t nbackends, const char *libversion);
/** The loud warning for Debug and sanitizer builds (nothing otherwise). */
void report_build_warning(FILE *out);

/** The results: one table, several backends side by side with ratios to the
 *  reference (shm if present, else the first), or (-q) one line per row. */
void report_results(FILE *out, const bench_config_t *cfg, const bench_results_t *r,
                    const char *const *backends, size_t nbackends);

/** Writes the --json document ("-" = stdout). @return 0 or -1 with @p err. */
int report_json(const char *path, const bench_config_t *cfg, const bench_results_t *r,
                const char *const *backends, size_t nbackends, const char *libversion, char *err,
                size_t errlen);

/** Checks a --json document: parses, every row has ops > 0, no errors,
 *  p50 <= p99 <= p99.9 <= max, buckets summing to ops. @return 0 valid, 1 not. */
int report_validate(const char *path, FILE *out);

#endif /* BENCH_REPORT_H */
