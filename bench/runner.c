/*
 * runner.c -- presence-bench: drives one measured run (see runner.h).
 *
 * The parent creates the store and populates it through its own handle, maps the
 * control block (workload.h: run_ctl_t, one histogram per worker per row) MAP_SHARED,
 * and forks the workers. Each worker attaches its own handle, prepares, reports ready
 * and waits; the parent then writes the start, warm-up end and deadline and sets go.
 * While they run, the parent polls each worker with waitpid(WNOHANG) (never waiting
 * on other children such as the redis server), calls the backend's maintain() every
 * few milliseconds as the reaper daemon would, and kills everything past the safety
 * deadline. A worker that exits non-zero or by a signal fails the run. Results are
 * merged by adding bucket arrays, never by combining percentiles.
 */
#include "runner.h"

#include "cleanup.h"
#include "clock.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAINTAIN_EVERY_NS 5000000ull /* the reaper's sweep, roughly */
#define READY_TIMEOUT_NS  120000000000ull

/* The body of a forked worker. Never returns. */
static void worker_main(const bench_config_t *cfg, const bench_backend_t *be, void *store,
                        const workload_t *wl, unsigned id, run_ctl_t *ctl)
{
    cleanup_forget_all();
    void *h = NULL;
    char err[256];
    run_worker_t *me = &ctl->w[id];
    if (be->open(store, &h, err, sizeof err) != 0) {
        snprintf(me->err, sizeof me->err, "%s", err);
        me->failed = 1;
        atomic_fetch_add(&ctl->ready, 1);
        _exit(1);
    }
    int rc = workload_worker(wl, be, h, id, cfg->seed, ctl);
    be->close(h);
    if (rc != 0)
        me->failed = 1;
    _exit(rc != 0 ? 1 : 0);
}

/* Reaps worker @p i if it has exited; records a failure. @return 1 if reaped. */
static int reap(pid_t *pids, unsigned i, run_ctl_t *ctl, int flags)
{
    int st;
    if (pids[i] <= 0)
        return 0;
    pid_t r = waitpid(pids[i], &st, flags);
    if (r != pids[i])
        return 0;
    cleanup_del_pid(pids[i]);
    pids[i] = 0;
    run_worker_t *me = &ctl->w[i];
    if (WIFSIGNALED(st)) {
        me->failed = 1;
        if (me->err[0] == '\0' || strncmp(me->err, "killed", 6) != 0) {
            char prev[sizeof me->err];
            snprintf(prev, sizeof prev, "%s", me->err);
            snprintf(me->err, sizeof me->err, "killed by signal %d (%s)%s%.180s", WTERMSIG(st),
                     strsignal(WTERMSIG(st)), prev[0] ? "; " : "", prev);
        }
    } else if (WIFEXITED(st) && WEXITSTATUS(st) != 0) {
        me->failed = 1;
        if (me->err[0] == '\0')
            snprintf(me->err, sizeof me->err, "exited with status %d", WEXITSTATUS(st));
    }
    if (me->failed)
        atomic_store(&ctl->abort, 1);
    return 1;
}

static void kill_all(pid_t *pids, unsigned n, run_ctl_t *ctl)
{
    for (unsigned i = 0; i < n; i++)
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            reap(pids, i, ctl, 0);
        }
}

static void merge(const workload_t *wl, const bench_backend_t *be, run_ctl_t *ctl,
                  bench_results_t *res)
{
    for (unsigned r = 0; r < wl->nrows; r++) {
        bench_row_t *row = results_add(res, be->name, wl->row[r]);
        if (row == NULL)
            return;
        uint64_t first = UINT64_MAX, last = 0;
        for (unsigned i = 0; i < ctl->nworkers; i++) {
            const run_row_t *wr = &ctl->w[i].row[r];
            hist_merge(row->hist, &wr->hist);
            row->ops += wr->ops;
            row->errors += wr->errors;
            row->items += wr->items;
            row->lapped += wr->lapped;
            row->cpu_ns += wr->cpu_ns;
            row->retries += wr->retries;
            if (wr->ops > 0) {
                if (wr->t_first < first)
                    first = wr->t_first;
                if (wr->t_last > last)
                    last = wr->t_last;
            }
            if (row->err[0] == '\0' && wr->errors > 0)
                snprintf(row->err, sizeof row->err, "%s", ctl->w[i].err);
        }
        row->seconds = last > first ? (double) (last - first) / 1e9 : 0.0;
    }
}

int runner_run(const bench_config_t *cfg, const bench_backend_t *be, const workload_t *wl,
               bench_results_t *res, char *err, size_t errlen)
{
    bench_store_spec_t spec;
    void *store = NULL, *h = NULL;
    unsigned n = cfg->procs;
    workload_spec(wl, &spec);
    if (be->setup(&spec, &store, err, errlen) != 0)
        return -1;
    int ret = -1;
    pid_t *pids = calloc(n, sizeof *pids);
    size_t ctl_size = sizeof(run_ctl_t) + n * sizeof(run_worker_t);
    run_ctl_t *ctl =
        mmap(NULL, ctl_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (pids == NULL || ctl == MAP_FAILED) {
        snprintf(err, errlen, "out of memory");
        ctl = MAP_FAILED;
        goto out;
    }
    if (be->open(store, &h, err, errlen) != 0) {
        h = NULL;
        goto out;
    }
    uint64_t tp = now_ns();
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (workload_populate(wl, be, store, h, ncpu > 1 ? (unsigned) ncpu : 1, err, errlen) != 0)
        goto out;
    uint64_t tpe = now_ns();
    /* Settle before measuring, as a store that has been up for a while is: the loading
     * processes' detach makes the next maintenance pass a full sweep (shm), which would
     * otherwise run in the parent during the measured window. */
    if (be->maintain != NULL) {
        be->maintain(h);
        sleep_ns(1000000);
        be->maintain(h);
    }
    /* (a workload that loads nothing, touch_floor, has no population to describe) */
    bench_store_note_t *note =
        wl->live.n + wl->old.n > 0 ? results_add_note(res, be->name, wl->row[0]) : NULL;
    if (note != NULL) {
        note->populate_s = (double) (tpe - tp) / 1e9;
        note->settle_s = (double) (now_ns() - tpe) / 1e9;
        note->population = wl->live.n + wl->old.n;
        bench_store_info_t info;
        if (be->store_info != NULL && be->store_info(h, &info) == 0) {
            note->have_info = 1;
            note->store_bytes = info.store_bytes;
            note->presences = info.presences;
            note->presences_cap = info.presences_cap;
            note->connections = info.connections;
            note->connections_cap = info.connections_cap;
            note->rooms = info.rooms;
            note->names_bytes = info.names_bytes;
            note->names_cap = info.names_cap;
            note->bytes_per_presence = info.bytes_per_presence;
        }
    }

    ctl->nworkers = n;
    ctl->count = cfg->count;
    for (unsigned i = 0; i < n; i++)
        for (unsigned r = 0; r < WL_MAX_ROWS; r++)
            hist_init(&ctl->w[i].row[r].hist);

    unsigned forked = 0;
    fflush(NULL);
    for (; forked < n; forked++) {
        pid_t pid = fork();
        if (pid < 0) {
            snprintf(err, errlen, "fork: %s", strerror(errno));
            atomic_store(&ctl->abort, 1);
            atomic_store(&ctl->go, 1);
            break;
        }
        if (pid == 0)
            worker_main(cfg, be, store, wl, forked, ctl);
        pids[forked] = pid;
        cleanup_add_pid(pid);
    }

    /* Wait until every worker is attached and prepared (or one died trying). */
    uint64_t deadline = now_ns() + READY_TIMEOUT_NS;
    while (forked == n && atomic_load(&ctl->ready) < n && !atomic_load(&ctl->abort)) {
        for (unsigned i = 0; i < n; i++)
            if (reap(pids, i, ctl, WNOHANG) && !ctl->w[i].failed && atomic_load(&ctl->ready) < n) {
                ctl->w[i].failed = 1;
                snprintf(ctl->w[i].err, sizeof ctl->w[i].err, "exited before it was ready");
                atomic_store(&ctl->abort, 1);
            }
        if (now_ns() > deadline) {
            snprintf(err, errlen, "workers not ready after %llu s",
                     (unsigned long long) (READY_TIMEOUT_NS / 1000000000ull));
            atomic_store(&ctl->abort, 1);
        }
        sleep_ns(200000);
    }

    for (unsigned i = 0; i < n; i++)
        if (ctl->w[i].failed)
            atomic_store(&ctl->abort, 1); /* e.g. could not attach: do not run the others */

    uint64_t t = now_ns();
    ctl->t_go = t;
    ctl->t_measure = t + (uint64_t) (cfg->warmup_s * 1e9);
    ctl->t_end = cfg->count ? 0 : ctl->t_measure + (uint64_t) (cfg->duration_s * 1e9);
    atomic_store_explicit(&ctl->go, 1, memory_order_release);

    uint64_t planned = cfg->count ? 0 : (uint64_t) ((cfg->warmup_s + cfg->duration_s) * 1e9);
    deadline = t + planned + (uint64_t) (cfg->timeout_s * 1e9);
    uint64_t next_maint = t + MAINTAIN_EVERY_NS;
    int timed_out = 0;
    for (;;) {
        unsigned alive = 0;
        for (unsigned i = 0; i < n; i++) {
            reap(pids, i, ctl, WNOHANG);
            alive += pids[i] > 0;
        }
        if (alive == 0)
            break;
        uint64_t now = now_ns();
        if (now > deadline) {
            timed_out = 1;
            kill_all(pids, n, ctl);
            break;
        }
        if (be->maintain != NULL && now >= next_maint) {
            be->maintain(h);
            next_maint = now + MAINTAIN_EVERY_NS;
        }
        sleep_ns(1000000);
    }

    if (timed_out) {
        snprintf(err, errlen, "workers still running %.0f s past the planned end; killed",
                 cfg->timeout_s);
        goto out;
    }
    if (err[0] != '\0' && forked < n)
        goto out;
    for (unsigned i = 0; i < n; i++) {
        if (ctl->w[i].failed) {
            snprintf(err, errlen, "worker %u: %s", i, ctl->w[i].err[0] ? ctl->w[i].err : "failed");
            goto out;
        }
    }
    if (atomic_load(&ctl->abort)) {
        if (err[0] == '\0')
            snprintf(err, errlen, "run aborted");
        goto out;
    }
    merge(wl, be, ctl, res);
    ret = 0;
out:
    if (ctl != MAP_FAILED && pids != NULL)
        kill_all(pids, n, ctl);
    if (h != NULL)
        be->close(h);
    be->teardown(store);
    if (ctl != MAP_FAILED)
        munmap(ctl, ctl_size);
    free(pids);
    return ret;
}
