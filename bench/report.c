/*
 * report.c -- presence-bench: result rows and their presentation (see report.h):
 * the configuration block, human tables, -q lines, the --json document (jansson) and
 * its validation. Percentiles are always read from merged histograms.
 */
#include "report.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifndef PRESENCE_BENCH_BUILD_TYPE
#    define PRESENCE_BENCH_BUILD_TYPE ""
#endif
#ifndef PRESENCE_BENCH_VERSION
#    define PRESENCE_BENCH_VERSION "0.1.0"
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#    define BENCH_SANITIZED 1
#elif defined(__has_feature)
#    if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
        __has_feature(memory_sanitizer)
#        define BENCH_SANITIZED 1
#    endif
#endif
#ifndef BENCH_SANITIZED
#    define BENCH_SANITIZED 0
#endif

#ifdef __OPTIMIZE__
#    define BENCH_OPTIMIZED 1
#else
#    define BENCH_OPTIMIZED 0
#endif

#if defined(__clang__)
#    define BENCH_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#    define BENCH_COMPILER "gcc " __VERSION__
#else
#    define BENCH_COMPILER "unknown compiler"
#endif

/* ---------------------------------------------------------------- results ---- */

bench_row_t *results_add(bench_results_t *r, const char *backend, const char *op)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 32;
        bench_row_t *nr = realloc(r->rows, cap * sizeof *nr);
        if (nr == NULL)
            return NULL;
        r->rows = nr;
        r->cap = cap;
    }
    bench_row_t *row = &r->rows[r->n];
    memset(row, 0, sizeof *row);
    row->hist = malloc(sizeof *row->hist);
    if (row->hist == NULL)
        return NULL;
    hist_init(row->hist);
    snprintf(row->backend, sizeof row->backend, "%s", backend);
    snprintf(row->op, sizeof row->op, "%s", op);
    r->n++;
    return row;
}

void results_add_failure(bench_results_t *r, const char *backend, const char *op, const char *err)
{
    if (r->nfail == r->capfail) {
        size_t cap = r->capfail ? r->capfail * 2 : 8;
        bench_failure_t *nf = realloc(r->failures, cap * sizeof *nf);
        if (nf == NULL)
            return;
        r->failures = nf;
        r->capfail = cap;
    }
    bench_failure_t *f = &r->failures[r->nfail++];
    snprintf(f->backend, sizeof f->backend, "%s", backend);
    snprintf(f->op, sizeof f->op, "%s", op);
    snprintf(f->err, sizeof f->err, "%s", err);
}

bench_store_note_t *results_add_note(bench_results_t *r, const char *backend, const char *workload)
{
    if (r->nnotes == r->capnotes) {
        size_t cap = r->capnotes ? r->capnotes * 2 : 16;
        bench_store_note_t *nn = realloc(r->notes, cap * sizeof *nn);
        if (nn == NULL)
            return NULL;
        r->notes = nn;
        r->capnotes = cap;
    }
    bench_store_note_t *n = &r->notes[r->nnotes++];
    memset(n, 0, sizeof *n);
    snprintf(n->backend, sizeof n->backend, "%s", backend);
    snprintf(n->workload, sizeof n->workload, "%s", workload);
    return n;
}

void results_free(bench_results_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->rows[i].hist);
    free(r->rows);
    free(r->failures);
    free(r->notes);
    memset(r, 0, sizeof *r);
}

static const bench_row_t *find_row(const bench_results_t *r, const char *backend, const char *op)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->rows[i].backend, backend) == 0 && strcmp(r->rows[i].op, op) == 0)
            return &r->rows[i];
    return NULL;
}

static double throughput(const bench_row_t *row)
{
    return row->seconds > 0 ? (double) row->ops / row->seconds : 0.0;
}

/* ------------------------------------------------------------------ build ---- */

const char *report_build_type(void)
{
    return PRESENCE_BENCH_BUILD_TYPE[0] ? PRESENCE_BENCH_BUILD_TYPE : "(none)";
}

int report_build_is_benchmarkable(void)
{
    return BENCH_OPTIMIZED && !BENCH_SANITIZED && strcasecmp(report_build_type(), "Debug") != 0;
}

void report_build_warning(FILE *out)
{
    if (report_build_is_benchmarkable())
        return;
    fprintf(out,
            "\n"
            "################################################################################\n"
            "WARNING: NOT AN OPTIMIZED BUILD (build type %s%s%s).\n"
            "         These figures say nothing about the library's real speed.\n"
            "         Rebuild with -DCMAKE_BUILD_TYPE=Release and no sanitizers.\n"
            "################################################################################\n"
            "\n",
            report_build_type(), BENCH_OPTIMIZED ? "" : ", compiled without optimization",
            BENCH_SANITIZED ? ", with sanitizers" : "");
}

/* ------------------------------------------------------------- formatting ---- */

static void fmt_scaled(char *buf, size_t len, double v, const char *unit)
{
    if (v < 10)
        snprintf(buf, len, "%.2f%s", v, unit);
    else if (v < 100)
        snprintf(buf, len, "%.1f%s", v, unit);
    else
        snprintf(buf, len, "%.0f%s", v, unit);
}

static void fmt_ns(char *buf, size_t len, uint64_t ns)
{
    if (ns < 1000)
        snprintf(buf, len, "%llu ns", (unsigned long long) ns);
    else if (ns < 1000000)
        fmt_scaled(buf, len, (double) ns / 1e3, " us");
    else if (ns < 1000000000)
        fmt_scaled(buf, len, (double) ns / 1e6, " ms");
    else
        fmt_scaled(buf, len, (double) ns / 1e9, " s");
}

static void fmt_count(char *buf, size_t len, double v)
{
    if (v < 10 && v != (double) (uint64_t) v)
        snprintf(buf, len, "%.2f", v);
    else if (v < 1e3)
        snprintf(buf, len, "%.0f", v);
    else if (v < 1e6)
        fmt_scaled(buf, len, v / 1e3, "k");
    else if (v < 1e9)
        fmt_scaled(buf, len, v / 1e6, "M");
    else
        fmt_scaled(buf, len, v / 1e9, "G");
}

static void fmt_ratio(char *buf, size_t len, double v, double ref, int show)
{
    if (!show) {
        buf[0] = '\0';
    } else if (ref <= 0 || v <= 0) {
        snprintf(buf, len, "-");
    } else {
        double x = v / ref;
        if (x < 10)
            snprintf(buf, len, "x%.2f", x);
        else if (x < 100)
            snprintf(buf, len, "x%.1f", x);
        else
            snprintf(buf, len, "x%.0f", x);
    }
}

/* ----------------------------------------------------------- human output ---- */

void report_header(FILE *out, const bench_config_t *cfg, const char *const *backends,
                   size_t nbackends, const char *libversion)
{
    struct utsname un;
    char kernel[3 * sizeof un.release] = "unknown";
    if (uname(&un) == 0)
        snprintf(kernel, sizeof kernel, "%s %s %s", un.sysname, un.release, un.machine);
    fprintf(out, "presence-bench %s%s%s\n", PRESENCE_BENCH_VERSION,
            libversion ? ", libpresence " : "", libversion ? libversion : "");
    fprintf(out, "build:      %s, %s%s\n", report_build_type(), BENCH_COMPILER,
            report_build_is_benchmarkable() ? "" : "  <-- NOT OPTIMIZED, see the warning");
    fprintf(out, "host:       %ld CPUs online, %s\n", sysconf(_SC_NPROCESSORS_ONLN), kernel);
    fprintf(out, "backends:  ");
    for (size_t i = 0; i < nbackends; i++)
        fprintf(out, " %s", backends[i]);
    fprintf(out, "\nworkers:    %u processes; ", cfg->procs);
    if (cfg->count)
        fprintf(out, "%llu measured operations per row", (unsigned long long) cfg->count);
    else
        fprintf(out, "%.2f s measured per run", cfg->duration_s);
    fprintf(out, " after %.2f s warm-up; seed %llu\n", cfg->warmup_s,
            (unsigned long long) cfg->seed);
    if (cfg->conn_rooms > 1)
        fprintf(out, "population: %u rooms x %u members (each connection in %u rooms)", cfg->rooms,
                cfg->room_size, cfg->conn_rooms);
    else
        fprintf(out, "population: %u rooms x %u members (one room per connection)", cfg->rooms,
                cfg->room_size);
    if (cfg->population)
        fprintf(out, " = --population %llu", (unsigned long long) cfg->population);
    if (cfg->ops & (1u << OP_HERE_NOW)) {
        fprintf(out, "; here_now rooms of");
        for (unsigned i = 0; i < cfg->n_here_now_sizes; i++)
            fprintf(out, "%s %u", i ? "," : "", cfg->here_now_sizes[i]);
    }
    if (cfg->ops & (1u << OP_PRUNE))
        fprintf(out, "; prune %u expired", cfg->prune_size);
    if (cfg->huge_pages)
        fprintf(out, "\npages:      2 MiB asked for the shm and rwlock stores (--huge-pages)");
    if (cfg->ops & (1u << OP_EVENTS))
        fprintf(out,
                "\nevents:     %u wake-up samples of each kind, %u us asleep before each; "
                "reaper %s",
                cfg->event_samples, cfg->event_pace_us, cfg->reaper ? cfg->reaper : "(not found)");
    fprintf(out,
            "\nclock:      CLOCK_MONOTONIC, %llu ns per reading; every latency below "
            "includes one reading;\n            unpipelined touch, join_leave, where_now and "
            "get_state time 1 call in %u\n            on average, at random (their ops/s leave "
            "the clock out); the others every call\n",
            (unsigned long long) cfg->clock_ns, WL_TIMED_STRIDE);
    report_build_warning(out);
}

static void print_table(FILE *out, const bench_results_t *r, const char *const *backends, size_t nb,
                        const char *ref)
{
    int cmp = nb > 1;
    const char *cols[] = {"ops/s", "p50", "p99", "p99.9", "max"};
    fprintf(out, "\n%-18s %-11s", "op", "backend");
    for (int c = 0; c < 5; c++)
        fprintf(out, cmp ? " %8s %-6s" : " %9s", cols[c], "");
    fprintf(out, " %9s %7s\n", "ops", "errors");
    for (size_t i = 0; i < r->n; i++) {
        const char *op = r->rows[i].op;
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(r->rows[j].op, op) == 0;
        if (seen)
            continue;
        const bench_row_t *rr = find_row(r, ref, op);
        int first = 1;
        for (size_t b = 0; b < nb; b++) {
            const bench_row_t *row = find_row(r, backends[b], op);
            if (row == NULL)
                continue;
            int ratio = cmp && rr != NULL && row != rr;
            const hist_t *h = row->hist;
            double v[5] = {throughput(row), (double) hist_percentile(h, 50),
                           (double) hist_percentile(h, 99), (double) hist_percentile(h, 99.9),
                           (double) h->max};
            double rv[5] = {0};
            if (rr != NULL) {
                rv[0] = throughput(rr);
                rv[1] = (double) hist_percentile(rr->hist, 50);
                rv[2] = (double) hist_percentile(rr->hist, 99);
                rv[3] = (double) hist_percentile(rr->hist, 99.9);
                rv[4] = (double) rr->hist->max;
            }
            fprintf(out, "%-18s %-11s", first ? op : "", row->backend);
            first = 0;
            for (int c = 0; c < 5; c++) {
                char val[24], rat[24];
                if (row->ops == 0)
                    snprintf(val, sizeof val, "-");
                else if (c == 0)
                    fmt_count(val, sizeof val, v[c]);
                else
                    fmt_ns(val, sizeof val, (uint64_t) v[c]);
                fmt_ratio(rat, sizeof rat, v[c], rv[c], ratio && row->ops > 0);
                if (cmp)
                    fprintf(out, " %8s %-6s", val, rat);
                else
                    fprintf(out, " %9s", val);
            }
            char ops[24];
            fmt_count(ops, sizeof ops, (double) row->ops);
            fprintf(out, " %9s %7llu\n", ops, (unsigned long long) row->errors);
        }
    }
}

static void print_quiet(FILE *out, const bench_results_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        const bench_row_t *row = &r->rows[i];
        char t[24], p50[24], p99[24], p999[24], mx[24];
        fmt_count(t, sizeof t, throughput(row));
        fmt_ns(p50, sizeof p50, hist_percentile(row->hist, 50));
        fmt_ns(p99, sizeof p99, hist_percentile(row->hist, 99));
        fmt_ns(p999, sizeof p999, hist_percentile(row->hist, 99.9));
        fmt_ns(mx, sizeof mx, row->hist->max);
        fprintf(out, "%s %s: %s ops/s, p50 %s, p99 %s, p99.9 %s, max %s%s\n", row->backend, row->op,
                t, p50, p99, p999, mx, row->errors ? " (ERRORS)" : "");
    }
}

/* The prune readers' p99 against the same readers' idle p99, from the same run. */
static void print_prune_readers(FILE *out, const bench_results_t *r, const char *be)
{
    const bench_row_t *busy = find_row(r, be, "prune_read");
    const bench_row_t *idle = find_row(r, be, "prune_idle_read");
    if (busy == NULL || idle == NULL || busy->ops == 0 || idle->ops == 0)
        return;
    char b[24], i[24];
    uint64_t pb = hist_percentile(busy->hist, 99), pi = hist_percentile(idle->hist, 99);
    fmt_ns(b, sizeof b, pb);
    fmt_ns(i, sizeof i, pi);
    fprintf(out,
            "prune (%s): readers' here_now p99 %s during it (%llu samples) vs %s idle "
            "just before (%llu samples): x%.2f\n",
            be, b, (unsigned long long) busy->ops, i, (unsigned long long) idle->ops,
            pi ? (double) pb / (double) pi : 0.0);
}

/* One "events" line: @row's p50 and p99 (if it ran), and their ratios to @base's. */
static void print_vs(FILE *out, const char *be, const char *what, const bench_row_t *row,
                     const char *vs, const bench_row_t *base)
{
    if (row == NULL || row->ops == 0)
        return;
    uint64_t a50 = hist_percentile(row->hist, 50), a99 = hist_percentile(row->hist, 99);
    uint64_t b50 = hist_percentile(base->hist, 50), b99 = hist_percentile(base->hist, 99);
    char a[24], b[24];
    fmt_ns(a, sizeof a, a50);
    fmt_ns(b, sizeof b, a99);
    fprintf(out, "events (%s): %s p50 %s, p99 %s: %s p50 x%.2f, p99 x%.2f\n", be, what, a, b, vs,
            b50 ? (double) a50 / (double) b50 : 0.0, b99 ? (double) a99 / (double) b99 : 0.0);
}

/* events: wake-up against the raw eventfd floor, and the flood's delivery. */
static void print_events(FILE *out, const bench_results_t *r)
{
    for (size_t k = 0; k < r->n; k++) {
        const bench_row_t *wk = &r->rows[k];
        if (strcmp(wk->op, "events_wakeup") != 0)
            continue;
        const char *be = wk->backend;
        const bench_row_t *raw = find_row(r, be, "eventfd_pingpong");
        const bench_row_t *rl = find_row(r, be, "eventfd_relay");
        const bench_row_t *rd = find_row(r, be, "events_flood_read");
        const bench_row_t *wr = find_row(r, be, "events_flood_write");
        if (raw != NULL && raw->ops > 0 && wk->ops > 0) {
            char c[24], d[24];
            fmt_ns(c, sizeof c, hist_percentile(raw->hist, 50));
            fmt_ns(d, sizeof d, hist_percentile(raw->hist, 99));
            fprintf(out,
                    "events (%s): raw eventfd ping-pong p50 %s, p99 %s (same run, interleaved)\n",
                    be, c, d);
            print_vs(out, be, "wake-up across processes, from before the producer's join", wk,
                     "/ raw eventfd", raw);
            print_vs(out, be,
                     "wake-up from the event's own stamp (after the join's work, before the ring "
                     "claim)",
                     find_row(r, be, "events_wakeup_from_event"), "/ raw eventfd", raw);
            if (rl != NULL && rl->ops > 0)
                print_vs(out, be,
                         "eventfd relayed by a third process (one forwarding hop, as through "
                         "presence-reaper)",
                         rl, "/ wake-up from before the join", wk);
            fprintf(out,
                    "events (%s): %llu + %llu + %llu samples; a sleeper was not yet asleep at "
                    "the first look in %llu + %llu + %llu of them (the sender waited)\n",
                    be, (unsigned long long) wk->ops, (unsigned long long) raw->ops,
                    (unsigned long long) (rl ? rl->ops : 0), (unsigned long long) wk->retries,
                    (unsigned long long) raw->retries, (unsigned long long) (rl ? rl->retries : 0));
        }
        if (rd != NULL && wr != NULL && wr->ops > 0) {
            char pr[24], prs[24], dl[24], dls[24];
            fmt_count(pr, sizeof pr, (double) wr->items);
            fmt_count(prs, sizeof prs, wr->seconds > 0 ? (double) wr->items / wr->seconds : 0);
            fmt_count(dl, sizeof dl, (double) rd->items);
            fmt_count(dls, sizeof dls, rd->seconds > 0 ? (double) rd->items / rd->seconds : 0);
            fprintf(out,
                    "events flood (%s): the producer wrote %s events (%s/s); one subscriber "
                    "read %s (%s/s), lapped %llu times, %llu events lost\n",
                    be, pr, prs, dl, dls, (unsigned long long) rd->lapped,
                    (unsigned long long) (wr->items > rd->items ? wr->items - rd->items : 0));
        }
        const bench_row_t *dr = find_row(r, be, "events_drain");
        if (dr != NULL && dr->ops > 0) {
            char n[24], rate[24], per[24];
            fmt_count(n, sizeof n, (double) dr->ops);
            fmt_count(rate, sizeof rate, dr->seconds > 0 ? (double) dr->ops / dr->seconds : 0);
            fmt_ns(per, sizeof per,
                   dr->seconds > 0 ? (uint64_t) (dr->seconds * 1e9 / (double) dr->ops) : 0);
            fprintf(out,
                    "events drain (%s): one subscriber consumed %s events written ahead of it "
                    "at %s/s (%s per event), lapped %llu times\n",
                    be, n, rate, per, (unsigned long long) dr->lapped);
        }
    }
}

static void fmt_bytes(char *buf, size_t len, double v)
{
    if (v < 1024)
        snprintf(buf, len, "%.0f B", v);
    else if (v < 1024 * 1024)
        fmt_scaled(buf, len, v / 1024, " KiB");
    else if (v < 1024.0 * 1024 * 1024)
        fmt_scaled(buf, len, v / (1024 * 1024), " MiB");
    else
        fmt_scaled(buf, len, v / (1024.0 * 1024 * 1024), " GiB");
}

/* Each run's population: loading time and, where the backend tells, memory. */
static void print_stores(FILE *out, const bench_results_t *r)
{
    if (r->nnotes == 0)
        return;
    fprintf(out, "\n%-16s %-11s %10s %8s %9s %8s %10s %10s %8s %8s\n", "population of", "backend",
            "presences", "load", "load/s", "settle", "store", "store/pres", "record", "names/p");
    for (size_t i = 0; i < r->nnotes; i++) {
        const bench_store_note_t *n = &r->notes[i];
        char pop[24], ld[24], rate[24], st[24], sb[24] = "-", per[24] = "-", rec[24] = "-",
                                                nm[24] = "-";
        fmt_count(pop, sizeof pop, (double) n->population);
        fmt_ns(ld, sizeof ld, (uint64_t) (n->populate_s * 1e9));
        fmt_ns(st, sizeof st, (uint64_t) (n->settle_s * 1e9));
        fmt_count(rate, sizeof rate,
                  n->populate_s > 0 ? (double) n->population / n->populate_s : 0);
        if (n->have_info && n->presences > 0) {
            fmt_bytes(sb, sizeof sb, (double) n->store_bytes);
            snprintf(per, sizeof per, "%.0f B", (double) n->store_bytes / (double) n->presences);
            snprintf(rec, sizeof rec, "%u B", n->bytes_per_presence);
            snprintf(nm, sizeof nm, "%.0f B", (double) n->names_bytes / (double) n->presences);
        }
        fprintf(out, "%-16s %-11s %10s %8s %9s %8s %10s %10s %8s %8s\n", n->workload, n->backend,
                pop, ld, rate, st, sb, per, rec, nm);
    }
    fprintf(out, "load: parallel loading processes; settle: the maintenance after it (shm: a full "
                 "sweep, as every detach\ntriggers); store/pres: the whole store (shm: the "
                 "segment, capacities with headroom) over the\npresences held; record: one "
                 "presence record, names excluded; names/p: arena bytes (names,\nstate) in use "
                 "per presence\n");
}

void report_results(FILE *out, const bench_config_t *cfg, const bench_results_t *r,
                    const char *const *backends, size_t nbackends)
{
    const char *ref = backends[0];
    for (size_t b = 0; b < nbackends; b++)
        if (strcmp(backends[b], "shm") == 0)
            ref = "shm";
    if (cfg->quiet) {
        print_quiet(out, r);
    } else {
        print_table(out, r, backends, nbackends, ref);
        fprintf(out, "\n");
        if (nbackends > 1)
            fprintf(out,
                    "ratios: backend / %s (latency above 1 = slower than %s; ops/s "
                    "below 1 = slower)\n",
                    ref, ref);
        for (size_t b = 0; b < nbackends; b++)
            if (strcmp(backends[b], "redis-pipe") == 0)
                fprintf(out, "redis-pipe: a latency is the round trip of its whole batch of "
                             "100 operations (here_now: of 100000 members at most)\n");
        for (size_t i = 0; i < r->n; i++) {
            const bench_row_t *row = &r->rows[i];
            if (strcmp(row->op, "prune") == 0 && row->ops > 0) {
                char d[24], rate[24], cpu[24];
                fmt_ns(d, sizeof d, row->hist->max);
                fmt_ns(cpu, sizeof cpu, row->cpu_ns);
                fmt_count(rate, sizeof rate,
                          row->seconds > 0 ? (double) row->items / row->seconds : 0);
                fprintf(out,
                        "prune (%s): removed %llu expired presences in one call of %s "
                        "(%s/s), %s of it on the CPU (the caller's; redis: the server's work "
                        "is not in it)\n",
                        row->backend, (unsigned long long) row->items, d, rate, cpu);
                print_prune_readers(out, r, row->backend);
            }
        }
        print_events(out, r);
        print_stores(out, r);
    }
    for (size_t i = 0; i < r->n; i++) {
        const bench_row_t *row = &r->rows[i];
        if (row->errors > 0)
            fprintf(stderr, "presence-bench: WARNING: %s %s: %llu failed operations; first: %s\n",
                    row->backend, row->op, (unsigned long long) row->errors, row->err);
    }
    report_build_warning(cfg->quiet ? stderr : out);
}

/* ------------------------------------------------------------------- JSON ---- */

static json_t *row_json(const bench_row_t *row)
{
    const hist_t *h = row->hist;
    json_t *buckets = json_array();
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        if (h->buckets[i] != 0)
            json_array_append_new(buckets,
                                  json_pack("[I,I,I]", (json_int_t) i, (json_int_t) hist_lower(i),
                                            (json_int_t) h->buckets[i]));
    json_t *o = json_pack("{s:I,s:I,s:f,s:f,s:I,s:I,s:I,s:I,s:I}", "ops", (json_int_t) row->ops,
                          "errors", (json_int_t) row->errors, "seconds", row->seconds, "throughput",
                          throughput(row), "min_ns", (json_int_t) (h->count ? h->min : 0), "p50_ns",
                          (json_int_t) hist_percentile(h, 50), "p99_ns",
                          (json_int_t) hist_percentile(h, 99), "p999_ns",
                          (json_int_t) hist_percentile(h, 99.9), "max_ns", (json_int_t) h->max);
    if (o == NULL) {
        json_decref(buckets);
        return NULL;
    }
    json_object_set_new(o, "samples", json_integer((json_int_t) h->count));
    if (strcmp(row->op, "prune") == 0) {
        json_object_set_new(o, "removed", json_integer((json_int_t) row->items));
        json_object_set_new(o, "cpu_ns", json_integer((json_int_t) row->cpu_ns));
    }
    if (strcmp(row->op, "events_flood_read") == 0) {
        json_object_set_new(o, "delivered", json_integer((json_int_t) row->items));
        json_object_set_new(o, "lapped", json_integer((json_int_t) row->lapped));
    }
    if (strcmp(row->op, "events_flood_write") == 0)
        json_object_set_new(o, "produced", json_integer((json_int_t) row->items));
    if (strcmp(row->op, "events_wakeup") == 0 || strcmp(row->op, "eventfd_pingpong") == 0 ||
        strcmp(row->op, "eventfd_relay") == 0)
        json_object_set_new(o, "not_asleep_at_first_look", json_integer((json_int_t) row->retries));
    if (row->errors > 0)
        json_object_set_new(o, "first_error", json_string(row->err));
    json_object_set_new(o, "buckets", buckets);
    return o;
}

int report_json(const char *path, const bench_config_t *cfg, const bench_results_t *r,
                const char *const *backends, size_t nbackends, const char *libversion, char *err,
                size_t errlen)
{
    json_t *ops = json_array(), *bes = json_array(), *sizes = json_array();
    for (unsigned op = 0; op < OP__COUNT; op++)
        if (cfg->ops & (1u << op))
            json_array_append_new(ops, json_string(bench_op_name((bench_op_t) op)));
    for (size_t b = 0; b < nbackends; b++)
        json_array_append_new(bes, json_string(backends[b]));
    for (unsigned i = 0; i < cfg->n_here_now_sizes; i++)
        json_array_append_new(sizes, json_integer(cfg->here_now_sizes[i]));
    json_t *config = json_pack(
        "{s:I,s:o,s:o,s:f,s:I,s:f,s:I,s:I,s:I,s:o,s:I,s:I,s:I,s:I,s:I}", "procs",
        (json_int_t) cfg->procs, "ops", ops, "backends", bes, "duration_s", cfg->duration_s,
        "count", (json_int_t) cfg->count, "warmup_s", cfg->warmup_s, "seed", (json_int_t) cfg->seed,
        "rooms", (json_int_t) cfg->rooms, "room_size", (json_int_t) cfg->room_size,
        "here_now_sizes", sizes, "prune_size", (json_int_t) cfg->prune_size, "population",
        (json_int_t) cfg->population, "conn_rooms", (json_int_t) cfg->conn_rooms, "event_samples",
        (json_int_t) cfg->event_samples, "event_pace_us", (json_int_t) cfg->event_pace_us);
    if (config != NULL) {
        json_object_set_new(config, "huge_pages", json_boolean(cfg->huge_pages));
        json_object_set_new(config, "floor_bytes", json_integer((json_int_t) cfg->floor_bytes));
    }
    struct utsname un;
    int have_un = uname(&un) == 0;
    json_t *root = json_pack(
        "{s:s,s:s,s:{s:s,s:s,s:b,s:b},s:{s:I,s:s,s:s},s:o,s:I,s:{s:s,s:i,s:i,s:s,s:s}}", "tool",
        "presence-bench", "version", PRESENCE_BENCH_VERSION, "build", "type", report_build_type(),
        "compiler", BENCH_COMPILER, "optimized", BENCH_OPTIMIZED, "sanitizers", BENCH_SANITIZED,
        "host", "cpus", (json_int_t) sysconf(_SC_NPROCESSORS_ONLN), "kernel",
        have_un ? un.release : "unknown", "machine", have_un ? un.machine : "unknown", "config",
        config, "clock_overhead_ns", (json_int_t) cfg->clock_ns, "histogram", "scheme",
        "log-linear", "sub_bucket_bits", HIST_SUB_BITS, "buckets", HIST_BUCKETS, "unit", "ns",
        "bucket_format", "[index, lower_ns, count]");
    if (root == NULL) {
        snprintf(err, errlen, "json: out of memory");
        return -1;
    }
    if (libversion != NULL)
        json_object_set_new(root, "libpresence", json_string(libversion));
    json_t *results = json_object();
    for (size_t b = 0; b < nbackends; b++) {
        json_t *bo = json_object();
        for (size_t i = 0; i < r->n; i++)
            if (strcmp(r->rows[i].backend, backends[b]) == 0)
                json_object_set_new(bo, r->rows[i].op, row_json(&r->rows[i]));
        if (json_object_size(bo) > 0)
            json_object_set_new(results, backends[b], bo);
        else
            json_decref(bo);
    }
    json_object_set_new(root, "results", results);
    json_t *stores = json_array();
    for (size_t i = 0; i < r->nnotes; i++) {
        const bench_store_note_t *n = &r->notes[i];
        json_t *so = json_pack("{s:s,s:s,s:I,s:f,s:f}", "backend", n->backend, "workload",
                               n->workload, "population", (json_int_t) n->population, "populate_s",
                               n->populate_s, "settle_s", n->settle_s);
        if (so != NULL && n->have_info) {
            json_object_set_new(so, "store_bytes", json_integer((json_int_t) n->store_bytes));
            json_object_set_new(so, "presences", json_integer((json_int_t) n->presences));
            json_object_set_new(so, "presences_cap", json_integer((json_int_t) n->presences_cap));
            json_object_set_new(so, "connections", json_integer((json_int_t) n->connections));
            json_object_set_new(so, "connections_cap",
                                json_integer((json_int_t) n->connections_cap));
            json_object_set_new(so, "rooms", json_integer((json_int_t) n->rooms));
            json_object_set_new(so, "names_bytes", json_integer((json_int_t) n->names_bytes));
            json_object_set_new(so, "names_cap", json_integer((json_int_t) n->names_cap));
            json_object_set_new(so, "bytes_per_presence",
                                json_integer((json_int_t) n->bytes_per_presence));
        }
        if (so != NULL)
            json_array_append_new(stores, so);
    }
    json_object_set_new(root, "stores", stores);
    json_t *fails = json_array();
    for (size_t i = 0; i < r->nfail; i++)
        json_array_append_new(fails,
                              json_pack("{s:s,s:s,s:s}", "backend", r->failures[i].backend, "op",
                                        r->failures[i].op, "error", r->failures[i].err));
    json_object_set_new(root, "failures", fails);

    int rc;
    if (strcmp(path, "-") == 0) {
        rc = json_dumpf(root, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
    } else {
        rc = json_dump_file(root, path, JSON_INDENT(2));
    }
    json_decref(root);
    if (rc != 0) {
        snprintf(err, errlen, "json: cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Reads a non-negative integer member; -1 when missing or not an integer >= 0. */
static long long get_uint(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    return json_integer_value(v);
}

static int validate_row(const char *be, const char *op, const json_t *o, FILE *out)
{
    int bad = 0;
    if (!json_is_object(o)) {
        fprintf(out, "%s %s: not an object\n", be, op);
        return 1;
    }
    long long ops = get_uint(o, "ops"), errors = get_uint(o, "errors");
    long long p50 = get_uint(o, "p50_ns"), p99 = get_uint(o, "p99_ns");
    long long p999 = get_uint(o, "p999_ns"), mx = get_uint(o, "max_ns");
    if (ops <= 0) {
        fprintf(out, "%s %s: ops is not a positive integer\n", be, op);
        bad = 1;
    }
    if (errors != 0) {
        fprintf(out, "%s %s: %lld failed operations\n", be, op, errors);
        bad = 1;
    }
    if (p50 < 0 || p99 < 0 || p999 < 0 || mx < 0) {
        fprintf(out, "%s %s: missing latency percentiles\n", be, op);
        bad = 1;
    } else if (!(p50 <= p99 && p99 <= p999 && p999 <= mx)) {
        fprintf(out, "%s %s: percentiles out of order: p50 %lld, p99 %lld, p99.9 %lld, max %lld\n",
                be, op, p50, p99, p999, mx);
        bad = 1;
    }
    const json_t *buckets = json_object_get(o, "buckets");
    long long sum = 0;
    size_t i;
    const json_t *bk;
    if (!json_is_array(buckets)) {
        fprintf(out, "%s %s: no buckets\n", be, op);
        return 1;
    }
    json_array_foreach(buckets, i, bk)
    {
        const json_t *cnt = json_array_get(bk, 2), *idx = json_array_get(bk, 0);
        if (!json_is_integer(cnt) || !json_is_integer(idx) || json_integer_value(idx) < 0 ||
            json_integer_value(idx) >= HIST_BUCKETS || json_integer_value(cnt) <= 0) {
            fprintf(out, "%s %s: bucket %zu malformed\n", be, op, i);
            return 1;
        }
        sum += json_integer_value(cnt);
    }
    /* every operation is a sample, unless the row says how many were timed */
    long long samples = json_object_get(o, "samples") ? get_uint(o, "samples") : ops;
    if (samples < 0 || samples > ops) {
        fprintf(out, "%s %s: samples is %lld, ops %lld\n", be, op, samples, ops);
        bad = 1;
    } else if (ops > 0 && sum != samples) {
        fprintf(out, "%s %s: buckets hold %lld samples, the row says %lld\n", be, op, sum, samples);
        bad = 1;
    }
    return bad;
}

int report_validate(const char *path, FILE *out)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL) {
        fprintf(out, "%s:%d: %s\n", path, jerr.line, jerr.text);
        return 1;
    }
    int bad = 0;
    size_t nbe = 0, nrows = 0;
    const json_t *results = json_object_get(root, "results");
    const json_t *fails = json_object_get(root, "failures");
    if (!json_is_object(results) || json_object_size(results) == 0) {
        fprintf(out, "%s: no results\n", path);
        bad = 1;
    } else {
        const char *be, *op;
        const json_t *bo, *ro;
        json_object_foreach((json_t *) results, be, bo)
        {
            nbe++;
            if (!json_is_object(bo) || json_object_size(bo) == 0) {
                fprintf(out, "%s: no rows\n", be);
                bad = 1;
                continue;
            }
            json_object_foreach((json_t *) bo, op, ro)
            {
                nrows++;
                bad |= validate_row(be, op, ro, out);
            }
        }
    }
    if (json_is_array(fails) && json_array_size(fails) > 0) {
        size_t i;
        const json_t *f;
        json_array_foreach(fails, i, f)
        {
            const json_t *e = json_object_get(f, "error");
            fprintf(out, "failure: %s %s: %s\n",
                    json_string_value(json_object_get(f, "backend"))
                        ? json_string_value(json_object_get(f, "backend"))
                        : "?",
                    json_string_value(json_object_get(f, "op"))
                        ? json_string_value(json_object_get(f, "op"))
                        : "?",
                    json_string_value(e) ? json_string_value(e) : "?");
        }
        bad = 1;
    }
    json_decref(root);
    if (!bad)
        fprintf(out, "%s: valid (%zu backends, %zu rows)\n", path, nbe, nrows);
    return bad;
}
