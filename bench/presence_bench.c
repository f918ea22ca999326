/*
 * presence_bench.c -- presence-bench: the command line. Parses the options, picks the
 * backends and workloads, runs every workload on every backend in turn (alternating,
 * so that the backends share the machine's noise), then prints and writes the results.
 * The work itself is in workload.c (what a worker does), runner.c (processes and
 * merging), report.c (output) and the backend_*.c files.
 */
#include "backend.h"
#include "bench.h"
#include "cleanup.h"
#include "clock.h"
#include "report.h"
#include "runner.h"
#include "workload.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_BACKENDS 8

static const char *g_prog = "presence-bench";

/* Every backend this binary may know, built in or not. */
static const struct {
    const char *name;
    const bench_backend_t *be; /* NULL: not built into this binary */
    const char *why;
} g_backends[] = {
#ifdef PRESENCE_BENCH_HAVE_SHM
    {"shm", &bench_backend_shm, NULL},
#else
    {"shm", NULL, "built without the library (PRESENCE_BENCH_NO_SHM)"},
#endif
    {"rwlock", &bench_backend_rwlock, NULL},
#ifdef PRESENCE_BENCH_HAVE_REDIS
    {"redis", &bench_backend_redis, NULL},
    {"redis-pipe", &bench_backend_redis_pipe, NULL},
#else
    {"redis", NULL, "built without hiredis"},
    {"redis-pipe", NULL, "built without hiredis"},
#endif
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: %s [-P PROCS] [-t OPS] [-d SECONDS | -n COUNT] [--warmup S] [--seed N]\n"
            "       [--rooms N | --population N] [--room-size N] [--backend shm|rwlock|redis]\n"
            "       [--compare BACKENDS] [--huge-pages] [--json FILE] [-q]\n"
            "       %s --validate-json FILE\n"
            "\n"
            "Measures presence operations from worker processes: throughput and latency\n"
            "p50, p99, p99.9 and max per operation, for the shared-memory library (shm) and,\n"
            "side by side, a process-shared rwlock baseline and a real redis-server.\n"
            "\n"
            "Options:\n"
            "  -P, --procs N        worker processes (default: CPUs online, at least 2)\n"
            "  -t, --tests OPS      workloads, comma-separated (default: all but events):\n"
            "                         touch       touch by name (on shm also by handle:\n"
            "                                     the touch_handle row; and touch_floor,\n"
            "                                     a touch's record work without the\n"
            "                                     library on as many records of the\n"
            "                                     worker's own: the memory's floor)\n"
            "                         join_leave  one join + leave pair per operation (on shm\n"
            "                                     also join_leave_floor: the least a pair\n"
            "                                     does under the library's contract, one\n"
            "                                     global event order and writer locks,\n"
            "                                     without the library; see jl_floor.c)\n"
            "                         here_now    rooms of 100 and of 10,000 members\n"
            "                         where_now   the rooms of a user\n"
            "                         get_state   the state of a user in a room\n"
            "                         prune       one prune() of 100,000 expired presences,\n"
            "                                     and here_now latency in the others meanwhile\n"
            "                         mixed       one process joins, touches and leaves while\n"
            "                                     the others run here_now (the headline: the\n"
            "                                     readers' latency under write load)\n"
            "                         events      (shm; not in the default list) wake-up latency\n"
            "                                     across processes: from before a producer's\n"
            "                                     join (events_wakeup), and from the event's\n"
            "                                     own time stamp (events_wakeup_from_event),\n"
            "                                     to the moment a subscriber asleep in poll()\n"
            "                                     holds it, interleaved with a raw eventfd\n"
            "                                     ping-pong between the same two processes\n"
            "                                     (the floor); then one subscriber draining a\n"
            "                                     producer's flood (events/s, lapped, lost).\n"
            "                                     Starts presence-reaper for the run. Needs -P 2\n"
            "                         all         every workload above, events included\n"
            "  -d, --duration S     measured seconds per run (default 2; '500ms' works)\n"
            "  -n, --count N        measured operations per row, instead of a duration\n"
            "      --warmup S       unmeasured seconds before each run (default 0.5)\n"
            "      --seed N         random seed (default 1)\n"
            "      --rooms N        rooms of the population (default 100)\n"
            "      --room-size N    members per room (default 100); here_now then runs\n"
            "                       rooms of N members only\n"
            "      --population N   total presences (up to 10,000,000): N / room-size rooms,\n"
            "                       one room per connection, here_now rooms included (the\n"
            "                       scale runs); loaded by several processes in parallel\n"
            "      --conn-rooms K   each connection of the population in K rooms (default 1;\n"
            "                       needs rooms x room-size divisible by K and at least\n"
            "                       K rooms; where_now then answers K rooms)\n"
            "      --prune-size N   expired presences the prune workload removes (100000)\n"
            "      --event-samples N  events: measured wake-ups of each kind (default 2000)\n"
            "      --event-pace US  events: how long the subscriber sleeps before each\n"
            "                       sample, in microseconds (default 300)\n"
            "      --reaper PATH    events: the presence-reaper to start (default:\n"
            "                       $PRESENCE_REAPER, else next to this program or in\n"
            "                       ../tools/ of its build tree, else on $PATH)\n"
            "      --huge-pages     the shm and rwlock stores in 2 MiB pages (madvise\n"
            "                       MADV_COLLAPSE, Linux 6.1+: PRESENCE_HUGE_PAGES for shm);\n"
            "                       a store the kernel declines runs in 4 KiB pages, with a\n"
            "                       warning. redis-server's memory is its own affair\n"
            "      --floor-bytes N  touch_floor's record size, a multiple of 16 from 16 to\n"
            "                       4096 (default 128, a connection record's; 16: the state\n"
            "                       word and last_seen alone, a dense array of hot words)\n"
            "      --backend NAME   shm (default), rwlock, redis (runs redis and redis-pipe,\n"
            "                       its pipelined variant), redis-pipe\n"
            "      --compare LIST   several backends, run alternately on the same workload,\n"
            "                       shown in one table with each figure's ratio to shm\n"
            "      --json FILE      write config, figures and histogram buckets ('-': stdout)\n"
            "      --validate-json FILE\n"
            "                       check a --json file (ops > 0, no errors, p50 <= p99 <=\n"
            "                       p99.9 <= max) and exit: 0 valid, 1 not\n"
            "      --timeout S      kill a run still going S seconds after its planned end\n"
            "                       (default 60)\n"
            "  -q, --quiet          one line per result\n"
            "  -h, --help           this text\n"
            "      --version        the version\n"
            "\n"
            "Every latency includes one clock reading (its cost is printed). Unpipelined\n"
            "touch, join_leave, where_now and get_state (and their floors) time one call in\n"
            "16 on average (at random), so that their ops/s leave the clock out; the others\n"
            "time every call.\n"
            "redis-server is started by the harness on a unix socket in a temporary\n"
            "directory and stopped at the end; without it the redis backends are skipped.\n"
            "\n"
            "Examples:\n"
            "  %s                                 every workload on shm, 2 s each\n"
            "  %s --compare shm,rwlock,redis      the three side by side\n"
            "  %s -t mixed -P 4 -d 10             the headline figure, longer\n"
            "  %s -t touch -n 1000000 -q          a fixed number of touches, one line\n"
            "  %s -t here_now --room-size 1000 --json out.json\n"
            "  %s -t events -P 2                   wake-up latency vs raw eventfd\n"
            "  %s -t touch,where_now --room-size 100 --population 10000000 --conn-rooms 10\n"
            "\n"
            "Exit status: 0 ok, 1 a run failed or nothing could run, 2 usage error.\n",
            g_prog, g_prog, g_prog, g_prog, g_prog, g_prog, g_prog, g_prog, g_prog);
}

__attribute__((format(printf, 1, 2), noreturn)) static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", g_prog);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help'.\n", g_prog);
    exit(2);
}

static uint64_t parse_uint(const char *s, uint64_t min, uint64_t max, const char *what)
{
    char *end;
    errno = 0;
    if (s[0] == '-' || s[0] == '\0')
        usage_error("%s: expects a positive integer", what);
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "%s: %s: expects an integer from %llu to %llu, not '%s'\n", g_prog, what,
                (unsigned long long) min, (unsigned long long) max, s);
        fprintf(stderr, "Try '%s --help'.\n", g_prog);
        exit(2);
    }
    return v;
}

/* Seconds, with an optional "s" or "ms" suffix. */
static double parse_secs(const char *s, double min, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end != s && strcmp(end, "ms") == 0)
        v /= 1000.0;
    else if (end != s && (*end == '\0' || strcmp(end, "s") == 0))
        ;
    else
        v = NAN;
    if (errno != 0 || !isfinite(v) || v < min || v > 86400.0) {
        fprintf(stderr,
                "%s: %s: expects seconds from %g to 86400 (e.g. 2, 1.5s, 300ms), not "
                "'%s'\n",
                g_prog, what, min, s);
        fprintf(stderr, "Try '%s --help'.\n", g_prog);
        exit(2);
    }
    return v;
}

static unsigned parse_ops(const char *list)
{
    unsigned mask = 0;
    char *copy = strdup(list), *save = NULL;
    if (copy == NULL) {
        fprintf(stderr, "%s: out of memory\n", g_prog);
        exit(1);
    }
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        int found = 0;
        if (strcmp(t, "all") == 0) {
            mask |= (1u << OP__COUNT) - 1;
            continue;
        }
        for (unsigned op = 0; op < OP__COUNT; op++) {
            if (strcmp(t, bench_op_name((bench_op_t) op)) == 0) {
                mask |= 1u << op;
                if (op == OP_TOUCH)
                    mask |= 1u << OP_TOUCH_HANDLE | 1u << OP_TOUCH_FLOOR;
                if (op == OP_JOIN_LEAVE)
                    mask |= 1u << OP_JOIN_LEAVE_FLOOR;
                found = 1;
            }
        }
        if (!found) {
            fprintf(stderr,
                    "%s: unknown workload '%s' (touch, touch_handle, touch_floor, join_leave, "
                    "join_leave_floor, "
                    "here_now, where_now, get_state, prune, mixed, events, all)\n",
                    g_prog, t);
            fprintf(stderr, "Try '%s --help'.\n", g_prog);
            free(copy);
            exit(2);
        }
    }
    free(copy);
    if (mask == 0)
        usage_error("%s: no workload given", "-t");
    return mask;
}

/* Resolves a backend list; "redis" means redis and redis-pipe. Unknown names are usage
 * errors; backends not built in or unusable here are skipped with a message. */
static size_t parse_backends(const char *list, const bench_backend_t **out, const char **names)
{
    size_t n = 0;
    char *copy = strdup(list), *save = NULL;
    if (copy == NULL) {
        fprintf(stderr, "%s: out of memory\n", g_prog);
        exit(1);
    }
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (size_t i = 0; i < sizeof g_backends / sizeof g_backends[0]; i++) {
            const char *nm = g_backends[i].name;
            int match =
                strcmp(t, nm) == 0 || (strcmp(t, "redis") == 0 && strcmp(nm, "redis-pipe") == 0);
            if (!match)
                continue;
            found = 1;
            int dup = 0;
            for (size_t j = 0; j < n; j++)
                dup |= strcmp(names[j], nm) == 0;
            if (dup || n == MAX_BACKENDS)
                continue;
            if (g_backends[i].be == NULL) {
                fprintf(stderr, "%s: %s: skipped: %s\n", g_prog, nm, g_backends[i].why);
                continue;
            }
            char why[256] = "";
            if (g_backends[i].be->available != NULL &&
                !g_backends[i].be->available(why, sizeof why)) {
                fprintf(stderr, "%s: %s: skipped: %s\n", g_prog, nm, why);
                continue;
            }
            out[n] = g_backends[i].be;
            names[n] = nm;
            n++;
        }
        if (!found) {
            fprintf(stderr, "%s: unknown backend '%s' (shm, rwlock, redis, redis-pipe)\n", g_prog,
                    t);
            fprintf(stderr, "Try '%s --help'.\n", g_prog);
            free(copy);
            exit(2);
        }
    }
    free(copy);
    return n;
}

/* An executable file at @p dir/@p rel, into @p out. */
static int try_exe(char *out, size_t len, const char *dir, const char *rel)
{
    if (snprintf(out, len, "%s/%s", dir, rel) >= (int) len)
        return 0;
    return access(out, X_OK) == 0;
}

/* presence-reaper: $PRESENCE_REAPER, next to us, ../tools/ of a build tree, $PATH. */
static const char *find_reaper(void)
{
    static char path[PATH_MAX];
    const char *env = getenv("PRESENCE_REAPER");
    if (env != NULL && env[0] != '\0')
        return env;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash != NULL) {
            *slash = '\0';
            if (try_exe(path, sizeof path, self, "presence-reaper") ||
                try_exe(path, sizeof path, self, "../tools/presence-reaper"))
                return path;
        }
    }
    const char *pathenv = getenv("PATH");
    char *copy = pathenv ? strdup(pathenv) : NULL, *save = NULL;
    for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save))
        if (d[0] != '\0' && try_exe(path, sizeof path, d, "presence-reaper")) {
            free(copy);
            return path;
        }
    free(copy);
    return NULL;
}

static const char *lib_version(void)
{
#ifdef PRESENCE_BENCH_HAVE_SHM
    return bench_shm_version();
#else
    return NULL;
#endif
}

enum {
    OPT_WARMUP = 256,
    OPT_SEED,
    OPT_ROOMS,
    OPT_ROOM_SIZE,
    OPT_PRUNE_SIZE,
    OPT_POPULATION,
    OPT_CONN_ROOMS,
    OPT_EVENT_SAMPLES,
    OPT_EVENT_PACE,
    OPT_REAPER,
    OPT_HUGE_PAGES,
    OPT_FLOOR_BYTES,
    OPT_BACKEND,
    OPT_COMPARE,
    OPT_JSON,
    OPT_VALIDATE,
    OPT_TIMEOUT,
    OPT_VERSION,
};

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"procs", required_argument, NULL, 'P'},
        {"tests", required_argument, NULL, 't'},
        {"duration", required_argument, NULL, 'd'},
        {"count", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"seed", required_argument, NULL, OPT_SEED},
        {"rooms", required_argument, NULL, OPT_ROOMS},
        {"room-size", required_argument, NULL, OPT_ROOM_SIZE},
        {"prune-size", required_argument, NULL, OPT_PRUNE_SIZE},
        {"population", required_argument, NULL, OPT_POPULATION},
        {"conn-rooms", required_argument, NULL, OPT_CONN_ROOMS},
        {"event-samples", required_argument, NULL, OPT_EVENT_SAMPLES},
        {"event-pace", required_argument, NULL, OPT_EVENT_PACE},
        {"reaper", required_argument, NULL, OPT_REAPER},
        {"huge-pages", no_argument, NULL, OPT_HUGE_PAGES},
        {"floor-bytes", required_argument, NULL, OPT_FLOOR_BYTES},
        {"backend", required_argument, NULL, OPT_BACKEND},
        {"compare", required_argument, NULL, OPT_COMPARE},
        {"json", required_argument, NULL, OPT_JSON},
        {"validate-json", required_argument, NULL, OPT_VALIDATE},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    bench_config_t cfg = {
        .procs = ncpu < 2                 ? 2
                 : ncpu > BENCH_MAX_PROCS ? BENCH_MAX_PROCS
                                          : (unsigned) ncpu,
        .ops = ((1u << OP__COUNT) - 1) & ~(1u << OP_EVENTS),
        .duration_s = 2.0,
        .warmup_s = 0.5,
        .seed = 1,
        .rooms = 100,
        .room_size = 100,
        .here_now_sizes = {100, 10000},
        .n_here_now_sizes = 2,
        .prune_size = 100000,
        .floor_bytes = 128,
        .conn_rooms = 1,
        .event_samples = 2000,
        .event_pace_us = 300,
        .timeout_s = 60.0,
    };
    const char *reaper = NULL;
    int have_rooms = 0;
    const char *backend = NULL, *compare = NULL, *validate = NULL;
    int have_d = 0, have_n = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":P:t:d:n:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'P':
            cfg.procs = (unsigned) parse_uint(optarg, 1, BENCH_MAX_PROCS, "-P");
            break;
        case 't':
            cfg.ops = parse_ops(optarg);
            break;
        case 'd':
            cfg.duration_s = parse_secs(optarg, 0.001, "-d");
            have_d = 1;
            break;
        case 'n':
            cfg.count = parse_uint(optarg, 1, UINT64_MAX / 2, "-n");
            have_n = 1;
            break;
        case OPT_WARMUP:
            cfg.warmup_s = parse_secs(optarg, 0, "--warmup");
            break;
        case OPT_SEED:
            cfg.seed = parse_uint(optarg, 0, UINT64_MAX, "--seed");
            break;
        case OPT_ROOMS:
            cfg.rooms = (uint32_t) parse_uint(optarg, 1, 1000000, "--rooms");
            have_rooms = 1;
            break;
        case OPT_ROOM_SIZE:
            cfg.room_size = (uint32_t) parse_uint(optarg, 1, 1000000, "--room-size");
            cfg.room_size_set = true;
            break;
        case OPT_PRUNE_SIZE:
            cfg.prune_size = (uint32_t) parse_uint(optarg, 1, 10000000, "--prune-size");
            break;
        case OPT_POPULATION:
            cfg.population = parse_uint(optarg, 1, 10000000, "--population");
            break;
        case OPT_CONN_ROOMS:
            cfg.conn_rooms = (uint32_t) parse_uint(optarg, 1, 1000, "--conn-rooms");
            break;
        case OPT_EVENT_SAMPLES:
            cfg.event_samples = (uint32_t) parse_uint(optarg, 1, 10000000, "--event-samples");
            break;
        case OPT_EVENT_PACE:
            cfg.event_pace_us = (uint32_t) parse_uint(optarg, 0, 1000000, "--event-pace");
            break;
        case OPT_REAPER:
            if (optarg[0] == '\0')
                usage_error("%s: expects a file name", "--reaper");
            reaper = optarg;
            break;
        case OPT_HUGE_PAGES:
            cfg.huge_pages = true;
            break;
        case OPT_FLOOR_BYTES:
            cfg.floor_bytes = (uint32_t) parse_uint(optarg, 16, 4096, "--floor-bytes");
            if (cfg.floor_bytes % 16 != 0)
                usage_error("%s: expects a multiple of 16, not %s", "--floor-bytes", optarg);
            break;
        case OPT_BACKEND:
            backend = optarg;
            break;
        case OPT_COMPARE:
            compare = optarg;
            break;
        case OPT_JSON:
            if (optarg[0] == '\0')
                usage_error("%s: expects a file name", "--json");
            cfg.json_path = optarg;
            break;
        case OPT_VALIDATE:
            validate = optarg;
            break;
        case OPT_TIMEOUT:
            cfg.timeout_s = parse_secs(optarg, 1, "--timeout");
            break;
        case 'q':
            cfg.quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("presence-bench %s\n", lib_version() ? lib_version() : "0.1.0");
            return 0;
        case ':':
        default: {
            char opt[3] = {'-', (char) optopt, '\0'};
            const char *name = optopt > 0 && optopt < 256 ? opt : argv[optind - 1];
            usage_error(c == ':' ? "%s: missing argument" : "%s: unknown option", name);
            break;
        }
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    if (validate != NULL)
        return report_validate(validate, stdout) ? 1 : 0;
    if (have_d && have_n)
        usage_error("%s: give a duration or a count, not both", "-d/-n");
    if (have_n)
        cfg.duration_s = 0;
    if (backend && compare)
        usage_error("%s: give one or the other", "--backend/--compare");
    if (cfg.population != 0) {
        if (have_rooms)
            usage_error("%s: give one or the other", "--rooms/--population");
        if (cfg.population < cfg.room_size)
            usage_error("%s: fewer presences than one room holds (--room-size %u)", "--population",
                        cfg.room_size);
        cfg.rooms = (uint32_t) (cfg.population / cfg.room_size);
        if (cfg.population % cfg.room_size != 0)
            fprintf(stderr, "%s: --population: rounded down to %llu (%u rooms of %u)\n", g_prog,
                    (unsigned long long) cfg.rooms * cfg.room_size, cfg.rooms, cfg.room_size);
        cfg.population = (uint64_t) cfg.rooms * cfg.room_size;
    }
    if (cfg.conn_rooms > 1 && (((uint64_t) cfg.rooms * cfg.room_size) % cfg.conn_rooms != 0 ||
                               cfg.rooms < cfg.conn_rooms))
        usage_error("%s: rooms x room-size must be divisible by K, with at least K rooms",
                    "--conn-rooms");
    if ((uint64_t) cfg.rooms * cfg.room_size > 10000000u)
        usage_error("%s: at most 10,000,000 presences in the population", "--rooms x --room-size");
    if (cfg.room_size_set) {
        cfg.here_now_sizes[0] = cfg.room_size;
        cfg.n_here_now_sizes = 1;
    }

    const bench_backend_t *bes[MAX_BACKENDS];
    const char *names[MAX_BACKENDS];
#ifdef PRESENCE_BENCH_HAVE_SHM
    const char *dflt = "shm";
#else
    const char *dflt = "rwlock";
#endif
    size_t nb = parse_backends(compare ? compare : backend ? backend : dflt, bes, names);
    if (nb == 0) {
        fprintf(stderr, "%s: no backend can run\n", g_prog);
        return 1;
    }

    if (cfg.ops & (1u << OP_EVENTS)) {
        cfg.reaper = reaper ? reaper : find_reaper();
        if (reaper != NULL && access(reaper, X_OK) != 0) {
            fprintf(stderr, "%s: --reaper %s: %s\n", g_prog, reaper, strerror(errno));
            return 2;
        }
    }

    cleanup_install();
    cfg.clock_ns = clock_overhead_ns();
    if (!cfg.quiet)
        report_header(stdout, &cfg, names, nb, lib_version());
    else
        report_build_warning(stderr);
    fflush(stdout);

    bench_results_t res = {0};
    int failed = 0, tty = isatty(STDERR_FILENO);
    for (unsigned op = 0; op < OP__COUNT; op++) {
        if (!(cfg.ops & (1u << op)))
            continue;
        if ((op == OP_MIXED || op == OP_EVENTS) && cfg.procs < 2) {
            fprintf(stderr, "%s: %s: needs two processes or more (-P 2); skipped\n", g_prog,
                    bench_op_name((bench_op_t) op));
            continue;
        }
        if (op == OP_EVENTS && cfg.reaper == NULL) {
            fprintf(stderr,
                    "%s: events: skipped: presence-reaper not found (give --reaper PATH or "
                    "set PRESENCE_REAPER)\n",
                    g_prog);
            continue;
        }
        unsigned nsizes = op == OP_HERE_NOW ? cfg.n_here_now_sizes : 1;
        for (unsigned s = 0; s < nsizes; s++) {
            workload_t wl;
            if (workload_init(&wl, (bench_op_t) op, cfg.here_now_sizes[s], &cfg) != 0) {
                fprintf(stderr, "%s: out of memory building the workload %s\n", g_prog,
                        bench_op_name((bench_op_t) op));
                failed = 1;
                continue;
            }
            for (size_t b = 0; b < nb; b++) {
                if (!workload_supported(&wl, bes[b]))
                    continue;
                if (tty) {
                    fprintf(stderr, "\r  running %s %s ...%20s\r", names[b], wl.row[0], "");
                    fflush(stderr);
                }
                char err[512] = "";
                if (runner_run(&cfg, bes[b], &wl, &res, err, sizeof err) != 0) {
                    if (tty)
                        fprintf(stderr, "\r%60s\r", "");
                    fprintf(stderr, "%s: %s %s: %s\n", g_prog, names[b], wl.row[0], err);
                    results_add_failure(&res, names[b], wl.row[0], err);
                    failed = 1;
                }
            }
            workload_free(&wl);
        }
    }
    if (tty)
        fprintf(stderr, "\r%60s\r", "");

    if (res.n > 0)
        report_results(stdout, &cfg, &res, names, nb);
    else
        fprintf(stderr, "%s: no results\n", g_prog);
    if (cfg.json_path != NULL) {
        char err[512];
        if (report_json(cfg.json_path, &cfg, &res, names, nb, lib_version(), err, sizeof err)) {
            fprintf(stderr, "%s: %s\n", g_prog, err);
            failed = 1;
        }
    }
    for (size_t b = 0; b < nb; b++)
        if (bes[b]->finish != NULL)
            bes[b]->finish();
    int status = failed || res.n == 0 ? 1 : 0;
    results_free(&res);
    return status;
}
