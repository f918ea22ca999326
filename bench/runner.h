/*
 * runner.h -- presence-bench: one measured run (one backend, one workload): a fresh
 * store, its population, forked worker processes, and the merge of their histograms
 * into result rows.
 */
#ifndef BENCH_RUNNER_H
#define BENCH_RUNNER_H

#include "backend.h"
#include "bench.h"
#include "report.h"
#include "workload.h"

/**
 * Runs @p wl on @p be with cfg->procs workers and appends one row per workload row
 * to @p res. @return 0, or -1 with @p err set (rows are not added then).
 */
int runner_run(const bench_config_t *cfg, const bench_backend_t *be, const workload_t *wl,
               bench_results_t *res, char *err, size_t errlen);

#endif /* BENCH_RUNNER_H */
