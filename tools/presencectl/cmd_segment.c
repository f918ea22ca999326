/*
 * cmd_segment.c -- presencectl: the segment as a whole. `create` and `destroy`
 * (its lifecycle), `stat` (capacities, counts, processes, reaper, event ring, and
 * who created the segment when, from presence_stats()) and `check`
 * (presence_check(): exit 0 when consistent, 1 with one line per violation).
 */
#include "ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- create -------------------------------------------------------------------------- */

enum {
    OPT_ROOMS = CTL_OPT_FIRST_FREE,
    OPT_CONNS,
    OPT_PRES,
    OPT_GROUPS,
    OPT_GMEMBERS,
    OPT_ARENA,
    OPT_RING,
    OPT_PROCS,
    OPT_READERS,
    OPT_STATE_MAX,
    OPT_MAX_AGE,
    OPT_MODE,
    OPT_HUGE,
    OPT_FORCE,
};

/* The counts `create` takes, each parsed into a uint32_t of presence_options_t. */
static const struct {
    int opt;
    const char *name; /* in messages */
    size_t offset;    /* of the uint32_t in presence_options_t */
} create_counts[] = {
    {OPT_ROOMS, "--rooms", offsetof(presence_options_t, rooms)},
    {OPT_CONNS, "--connections", offsetof(presence_options_t, connections)},
    {OPT_PRES, "--presences", offsetof(presence_options_t, presences)},
    {OPT_GROUPS, "--groups", offsetof(presence_options_t, groups)},
    {OPT_GMEMBERS, "--group-members", offsetof(presence_options_t, group_members)},
    {OPT_RING, "--ring", offsetof(presence_options_t, ring_entries)},
    {OPT_PROCS, "--procs", offsetof(presence_options_t, procs)},
    {OPT_READERS, "--readers", offsetof(presence_options_t, readers)},
};

static int create_option(struct ctl *c, int o, presence_options_t *opts)
{
    for (size_t i = 0; i < sizeof create_counts / sizeof create_counts[0]; i++)
        if (o == create_counts[i].opt)
            return ctl_parse_u32(c, create_counts[i].name, optarg,
                                 (uint32_t *) ((char *) opts + create_counts[i].offset));
    uint64_t v = 0;
    int rc = 0;
    switch (o) {
    case OPT_ARENA:
        return ctl_parse_size(c, "--arena", optarg, &opts->arena_bytes);
    case OPT_STATE_MAX:
        rc = ctl_parse_size(c, "--state-max", optarg, &v);
        if (rc == 0 && v > UINT32_MAX)
            rc = ctl_usage_error(c, "--state-max: '%s' is too large", optarg);
        opts->state_max = (uint32_t) v;
        return rc;
    case OPT_MAX_AGE:
        return ctl_parse_duration_ms(c, "--max-age", optarg, &opts->max_age_ms);
    case OPT_MODE:
        return ctl_parse_mode(c, "--mode", optarg, &opts->mode);
    case OPT_HUGE:
        opts->flags |= PRESENCE_HUGE_PAGES;
        return 0;
    default:
        return c->stop;
    }
}

/* What create and destroy print under --json: {"segment": S, DONE: true, KEY: N}
 * (create adds "huge_pages"). */
static json_t *done_doc(const struct ctl *c, const char *done, const char *key, uint64_t n)
{
    json_t *doc = json_object();
    ctl_json_set(doc, "segment", ctl_json_str(c->segment));
    ctl_json_set(doc, done, json_true());
    ctl_json_set(doc, key, ctl_json_u64(n));
    return doc;
}

static int cmd_create(struct ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"rooms", required_argument, NULL, OPT_ROOMS},
        {"connections", required_argument, NULL, OPT_CONNS},
        {"presences", required_argument, NULL, OPT_PRES},
        {"groups", required_argument, NULL, OPT_GROUPS},
        {"group-members", required_argument, NULL, OPT_GMEMBERS},
        {"arena", required_argument, NULL, OPT_ARENA},
        {"ring", required_argument, NULL, OPT_RING},
        {"procs", required_argument, NULL, OPT_PROCS},
        {"readers", required_argument, NULL, OPT_READERS},
        {"state-max", required_argument, NULL, OPT_STATE_MAX},
        {"max-age", required_argument, NULL, OPT_MAX_AGE},
        {"mode", required_argument, NULL, OPT_MODE},
        {"huge-pages", no_argument, NULL, OPT_HUGE},
        CTL_COMMON_LONGOPTS,
    };
    presence_options_t opts;
    presence_options_init(&opts);
    int o;
    while ((o = ctl_getopt(c, argc, argv, "", longopts)) != -1) {
        int rc = create_option(c, o, &opts);
        if (rc != 0 || o == CTL_STOP)
            return o == CTL_STOP ? c->stop : rc;
    }
    if (optind < argc)
        return ctl_usage_error(c, "unexpected argument '%s' (the segment is named by -s)",
                               argv[optind]);
    opts.flags |= PRESENCE_CREATE | PRESENCE_EXCL;
    presence_t *p = NULL;
    int rc = presence_open(c->segment, &opts, &p);
    if (rc == -EEXIST)
        return ctl_error(c, "segment '%s' already exists", c->segment);
    if (rc < 0)
        return ctl_error(c, "segment '%s': %s", c->segment, presence_strerror(rc));
    presence_stats_t st;
    rc = presence_stats(p, &st);
    presence_options_t got;
    presence_get_options(p, &got);
    presence_close(p);
    if (rc < 0)
        return ctl_error(c, "segment '%s': %s", c->segment, presence_strerror(rc));
    bool huge = (got.flags & PRESENCE_HUGE_PAGES) != 0;
    if ((opts.flags & PRESENCE_HUGE_PAGES) && !huge)
        fprintf(stderr, "%s: %s: warning: the kernel did not give segment '%s' 2 MiB pages\n",
                CTL_PROG, c->cmd_name, c->segment);
    if (c->json) {
        json_t *doc = done_doc(c, "created", "segment_bytes", st.segment_bytes);
        ctl_json_set(doc, "huge_pages", json_boolean(huge));
        return ctl_json_print(c, doc);
    }
    if (c->tty) {
        char size[32];
        printf("Created segment '%s' (%s%s): %" PRIu32 " rooms, %" PRIu32 " connections, %" PRIu32
               " presences.\n",
               c->segment, ctl_fmt_bytes(size, sizeof size, st.segment_bytes),
               huge ? ", 2 MiB pages" : "", st.rooms_cap, st.connections_cap, st.presences_cap);
    }
    return CTL_OK;
}

const struct ctl_cmd ctl_cmd_create = {
    "create",
    cmd_create,
    "[--rooms N] [--connections N] [--presences N] [--groups N] [--arena BYTES] [--ring N]\n"
    "       [--max-age S] [--mode OCTAL] [--group-members N] [--procs N] [--readers N]\n"
    "       [--state-max BYTES] [--huge-pages]",
    "Create the segment (fails if it exists)",
    "Capacities are fixed at creation. Counts and sizes accept K, M, G suffixes\n"
    "(powers of 1024); durations are seconds, or take ms, s, m, h.\n"
    "\n"
    "  --rooms N           room records (default 4096)\n"
    "  --connections N     connection records (default 16384)\n"
    "  --presences N       presence records (default 65536)\n"
    "  --groups N          group records (default 256)\n"
    "  --group-members N   rooms in all groups together (default 16384)\n"
    "  --arena BYTES       bytes for names and state (default 16M)\n"
    "  --ring N            event ring entries, a power of two (default 65536)\n"
    "  --procs N           attached-process slots (default 128)\n"
    "  --readers N         reader (thread) slots (default 512)\n"
    "  --state-max BYTES   largest state document (default 32K)\n"
    "  --max-age S         default connection timeout (default 60)\n"
    "  --mode OCTAL        file mode of the segment (default 0600; umask ignored)\n"
    "  --huge-pages        back it with 2 MiB pages (Linux 6.1+; about 1.2 s per GiB\n"
    "                      more at creation here; a warning if the kernel declines)\n"
    "\n"
    "Example: presencectl -s chat create --rooms 64K --presences 1M --arena 256M\n",
};

/* ---- destroy ------------------------------------------------------------------------- */

/* Attached processes that are alive: a dead process keeps its slot (and counts in
 * procs_attached) until another process reuses it. */
static uint32_t procs_alive(presence_t *p)
{
    presence_proc_list_t *l = NULL;
    uint32_t n = 0;
    if (presence_procs(p, &l) < 0)
        return 0;
    for (size_t i = 0; i < l->count; i++)
        n += l->items[i].alive != 0;
    presence_proc_list_free(l);
    return n;
}

static int cmd_destroy(struct ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"force", no_argument, NULL, OPT_FORCE},
        CTL_COMMON_LONGOPTS,
    };
    bool force = false;
    int o;
    while ((o = ctl_getopt(c, argc, argv, "f", longopts)) != -1) {
        if (o == OPT_FORCE || o == 'f')
            force = true;
        else
            return c->stop;
    }
    if (optind < argc)
        return ctl_usage_error(c, "unexpected argument '%s' (the segment is named by -s)",
                               argv[optind]);
    /* Look before removing: never unlink an object that is not a presence segment. A
     * presence segment that cannot be used (old layout, unfinished, corrupt) is exactly
     * what destroy is for, so only a bad magic stops it. */
    presence_options_t opts;
    presence_options_init(&opts);
    opts.flags = PRESENCE_RDONLY | PRESENCE_ANY_OWNER;
    opts.attach_timeout_ms = 0;
    presence_t *p = NULL;
    uint32_t attached = 0;
    int rc = presence_open(c->segment, &opts, &p);
    if (rc == -ENOENT)
        return ctl_error(c, "segment '%s' does not exist", c->segment);
    if (rc == PRESENCE_EBADMAGIC && !force)
        return ctl_error(c, "'%s' is not a presence segment (bad magic); --force removes it anyway",
                         c->segment);
    if (rc == 0) {
        attached = procs_alive(p);
        presence_close(p);
    }
    rc = presence_unlink(c->segment);
    if (rc == -ENOENT)
        return ctl_error(c, "segment '%s' does not exist", c->segment);
    if (rc < 0)
        return ctl_error(c, "segment '%s': %s", c->segment, presence_strerror(rc));
    if (c->json) /* procs_attached: the alive ones */
        return ctl_json_print(c, done_doc(c, "destroyed", "procs_attached", attached));
    if (c->tty) {
        printf("Destroyed segment '%s'.\n", c->segment);
        if (attached)
            printf("%" PRIu32 " attached process(es) keep their mapping until they detach.\n",
                   attached);
    }
    return CTL_OK;
}

const struct ctl_cmd ctl_cmd_destroy = {
    "destroy",
    cmd_destroy,
    "[--force]",
    "Remove the segment's name (attached processes keep their mapping)",
    "Refuses an object that is not a presence segment unless --force is given.\n",
};

/* ---- stat ---------------------------------------------------------------------------- */

/* "3 / 4096 (0.1%)" on a terminal; raw mode and JSON get KEY and CAPKEY (the names
 * of presence_stats_t). */
static void usage_pair(const struct ctl *c, struct ctl_kv *kv, json_t *doc, const char *key,
                       const char *capkey, const char *label, uint64_t used, uint64_t cap,
                       bool bytes)
{
    if (doc) {
        ctl_json_set(doc, key, ctl_json_u64(used));
        ctl_json_set(doc, capkey, ctl_json_u64(cap));
        return;
    }
    if (!c->tty) {
        ctl_kv_add(kv, key, label, "%" PRIu64, used);
        ctl_kv_add(kv, capkey, label, "%" PRIu64, cap);
        return;
    }
    double pct = cap ? 100.0 * (double) used / (double) cap : 0.0;
    if (bytes) {
        char a[32], b[32];
        ctl_kv_add(kv, key, label, "%s / %s (%.1f%%)", ctl_fmt_bytes(a, sizeof a, used),
                   ctl_fmt_bytes(b, sizeof b, cap), pct);
    } else {
        ctl_kv_add(kv, key, label, "%" PRIu64 " / %" PRIu64 " (%.1f%%)", used, cap, pct);
    }
}

/* "running", "not running" (the recorded pid is gone) or "none". */
static const char *reaper_status(int32_t pid)
{
    if (pid <= 0)
        return "none";
    if (kill(pid, 0) == 0 || errno == EPERM)
        return "running";
    return "not running";
}

static void one(const struct ctl *c, struct ctl_kv *kv, json_t *doc, const char *key,
                const char *label, uint64_t v)
{
    if (doc)
        ctl_json_set(doc, key, ctl_json_u64(v));
    else
        ctl_kv_add(kv, key, label, "%" PRIu64, v);
    (void) c;
}

/* A CLOCK_REALTIME time: ISO-8601 and, on a terminal, how long ago; JSON gets KEY
 * (the time, null when 0) and KEY_ns. */
static void one_time(const struct ctl *c, struct ctl_kv *kv, json_t *doc, const char *key,
                     const char *label, uint64_t ns)
{
    char when[40], ago[32], key_ns[64];
    snprintf(key_ns, sizeof key_ns, "%s_ns", key);
    if (doc) {
        ctl_json_set(doc, key, ctl_json_str(ns ? ctl_fmt_time(when, sizeof when, ns) : NULL));
        ctl_json_set(doc, key_ns, ctl_json_u64(ns));
    } else if (!c->tty) {
        ctl_kv_add(kv, key_ns, label, "%" PRIu64, ns);
    } else if (ns == 0) {
        ctl_kv_add(kv, key, label, "never");
    } else {
        ctl_kv_add(kv, key, label, "%s (%s)", ctl_fmt_time(when, sizeof when, ns),
                   ctl_fmt_ago(ago, sizeof ago, ns));
    }
}

/* The reaper: pid and status, its sweeps and what they did. */
static void stat_reaper(const struct ctl *c, struct ctl_kv *kv, json_t *doc,
                        const presence_stats_t *st)
{
    const char *reaper = reaper_status(st->reaper_pid);
    if (doc) {
        ctl_json_set(doc, "reaper_pid", json_integer(st->reaper_pid));
        ctl_json_set(doc, "reaper", ctl_json_str(reaper));
    } else if (c->tty) {
        if (st->reaper_pid > 0)
            ctl_kv_add(kv, "reaper", "Reaper", "%s (pid %" PRId32 ")", reaper, st->reaper_pid);
        else
            ctl_kv_add(kv, "reaper", "Reaper", "%s", reaper);
    } else {
        ctl_kv_add(kv, "reaper_pid", "Reaper pid", "%" PRId32, st->reaper_pid);
        ctl_kv_add(kv, "reaper", "Reaper", "%s", reaper);
    }
    one_time(c, kv, doc, "reaper_last_sweep", "Reaper last sweep", st->reaper_last_sweep_ns);
    one(c, kv, doc, "reaper_sweeps", "Reaper sweeps", st->reaper_sweeps);
    one(c, kv, doc, "reaper_expired", "Reaper expired", st->reaper_expired);
    one(c, kv, doc, "reaper_reclaimed", "Reaper reclaimed", st->reaper_reclaimed);
}

/* The event ring and its subscribers. */
static void stat_ring(const struct ctl *c, struct ctl_kv *kv, json_t *doc,
                      const presence_stats_t *st)
{
    one(c, kv, doc, "ring_tail", "Ring tail (next event)", st->ring_tail);
    one(c, kv, doc, "ring_oldest", "Ring oldest (may be there)", st->ring_oldest);
    one(c, kv, doc, "ring_entries", "Ring entries", st->ring_entries);
    one(c, kv, doc, "subscribers", "Subscribers", st->subscribers);
    one(c, kv, doc, "ring_waiters", "Subscribers waiting", st->ring_waiters);
    one(c, kv, doc, "lapped", "Subscribers lapped", st->lapped);
}

/* Who made the segment, when, for whom, with which layout. */
static void stat_identity(const struct ctl *c, struct ctl_kv *kv, json_t *doc,
                          const presence_stats_t *st)
{
    char mode[16];
    snprintf(mode, sizeof mode, "%04" PRIo32, st->mode);
    if (doc)
        ctl_json_set(doc, "mode", ctl_json_str(mode));
    else
        ctl_kv_add(kv, "mode", "Mode", "%s", mode);
    struct passwd *pw = c->tty && !doc ? getpwuid((uid_t) st->owner_uid) : NULL;
    if (pw)
        ctl_kv_add(kv, "owner_uid", "Owner", "%" PRIu32 " (%s)", st->owner_uid, pw->pw_name);
    else
        one(c, kv, doc, "owner_uid", "Owner", st->owner_uid);
    if (doc)
        ctl_json_set(doc, "creator_pid", json_integer(st->creator_pid));
    else
        ctl_kv_add(kv, "creator_pid", "Creator pid", "%" PRId32, st->creator_pid);
    one_time(c, kv, doc, "created", "Created", st->created_ns);
    one(c, kv, doc, "layout_version", "Layout version", st->layout_version);
}

static int cmd_stat(struct ctl *c, int argc, char **argv)
{
    presence_t *p = NULL;
    int status = ctl_open_no_args(c, argc, argv, &p);
    if (status >= 0)
        return status;
    presence_stats_t st;
    int rc = presence_stats(p, &st);
    uint32_t alive = procs_alive(p);
    presence_options_t opts;
    presence_get_options(p, &opts);
    presence_close(p);
    if (rc < 0)
        return ctl_fail(c, rc, NULL);
    bool huge = (opts.flags & PRESENCE_HUGE_PAGES) != 0;

    json_t *doc = c->json ? json_object() : NULL;
    struct ctl_kv *kv = doc ? NULL : ctl_kv_new();
    char buf[64], buf2[32];
    if (doc) {
        ctl_json_set(doc, "segment", ctl_json_str(c->segment));
        ctl_json_set(doc, "segment_bytes", ctl_json_u64(st.segment_bytes));
        ctl_json_set(doc, "huge_pages", json_boolean(huge));
    } else {
        ctl_kv_add(kv, "segment", "Segment", "%s", c->segment);
        if (c->tty)
            ctl_kv_add(kv, "segment_bytes", "Size", "%s (%" PRIu64 " bytes)",
                       ctl_fmt_bytes(buf, sizeof buf, st.segment_bytes), st.segment_bytes);
        else
            ctl_kv_add(kv, "segment_bytes", "Size", "%" PRIu64, st.segment_bytes);
        if (c->tty)
            ctl_kv_add(kv, "huge_pages", "Pages", "%s", huge ? "2 MiB" : "4 KiB");
        else
            ctl_kv_add(kv, "huge_pages", "Pages", "%s", huge ? "true" : "false");
    }
    usage_pair(c, kv, doc, "rooms", "rooms_cap", "Rooms", st.rooms, st.rooms_cap, false);
    usage_pair(c, kv, doc, "connections", "connections_cap", "Connections", st.connections,
               st.connections_cap, false);
    usage_pair(c, kv, doc, "presences", "presences_cap", "Presences", st.presences,
               st.presences_cap, false);
    usage_pair(c, kv, doc, "groups", "groups_cap", "Groups", st.groups, st.groups_cap, false);
    usage_pair(c, kv, doc, "group_members", "group_members_cap", "Group members", st.group_members,
               st.group_members_cap, false);
    usage_pair(c, kv, doc, "arena_used", "arena_cap", "Arena (names, state)", st.arena_used,
               st.arena_cap, true);
    one(c, kv, doc, "bytes_per_presence", "Bytes per presence", st.bytes_per_presence);
    if (st.presences && !doc && c->tty)
        ctl_kv_add(kv, "arena_per_presence", "Arena bytes per presence", "%.1f (average)",
                   (double) st.arena_used / (double) st.presences);
    usage_pair(c, kv, doc, "procs_attached", "procs_cap", "Processes attached", st.procs_attached,
               st.procs_cap, false);
    one(c, kv, doc, "procs_alive", "Processes alive", alive);
    usage_pair(c, kv, doc, "readers_active", "readers_cap", "Reader slots in use",
               st.readers_active, st.readers_cap, false);
    if (doc || !c->tty) {
        one(c, kv, doc, "state_max", "State max", st.state_max);
        one(c, kv, doc, "max_age_ms", "Max age", st.max_age_ms);
    } else {
        ctl_kv_add(kv, "state_max", "State max", "%s",
                   ctl_fmt_bytes(buf, sizeof buf, st.state_max));
        ctl_kv_add(kv, "max_age_ms", "Max age", "%s", ctl_fmt_ms(buf2, sizeof buf2, st.max_age_ms));
    }
    one(c, kv, doc, "epoch", "Epoch", st.epoch);
    one(c, kv, doc, "limbo", "Limbo (to reclaim)", st.limbo);
    one(c, kv, doc, "joins", "Joins", st.joins);
    one(c, kv, doc, "leaves", "Leaves", st.leaves);
    one(c, kv, doc, "expired", "Expired", st.expired);
    one(c, kv, doc, "reclaimed", "Reclaimed", st.reclaimed);
    stat_reaper(c, kv, doc, &st);
    stat_ring(c, kv, doc, &st);
    stat_identity(c, kv, doc, &st);
    if (doc)
        return ctl_json_print(c, doc);
    ctl_kv_print(c, kv);
    ctl_kv_free(kv);
    return CTL_OK;
}

const struct ctl_cmd ctl_cmd_stat = {
    "stat",
    cmd_stat,
    "",
    "Show capacities, counts, bytes used, processes, reaper, ring and origin",
    "Terminal: 'Label: used / capacity (percent)' lines, times in UTC with how long\n"
    "ago. Piped: 'key<TAB>value' lines with the keys of the JSON document (the names\n"
    "of presence_stats_t; times as *_ns, CLOCK_REALTIME nanoseconds, 0 = never).\n",
};

/* ---- check --------------------------------------------------------------------------- */

static int cmd_check(struct ctl *c, int argc, char **argv)
{
    presence_t *p = NULL;
    int status = ctl_open_no_args(c, argc, argv, &p);
    if (status >= 0)
        return status;
    presence_strlist_t *list = NULL;
    int n = presence_check(p, &list);
    presence_close(p);
    if (n < 0)
        return ctl_fail(c, n, NULL);
    if (c->json) {
        json_t *doc = json_object(), *arr = json_array();
        for (size_t i = 0; list && i < list->count; i++)
            if (json_array_append_new(arr, ctl_json_str(list->items[i])) != 0)
                ctl_oom();
        ctl_json_set(doc, "segment", ctl_json_str(c->segment));
        ctl_json_set(doc, "clean", json_boolean(n == 0));
        ctl_json_set(doc, "count", json_integer(n));
        ctl_json_set(doc, "violations", arr);
        ctl_json_print(c, doc);
    } else {
        for (size_t i = 0; list && i < list->count; i++)
            puts(list->items[i]);
        if (n == 0 && c->tty)
            printf("Segment '%s' is consistent.\n", c->segment);
    }
    presence_strlist_free(list);
    if (n > 0) {
        fflush(stdout);
        return ctl_error(c, "segment '%s': %d violation%s", c->segment, n, n == 1 ? "" : "s");
    }
    return CTL_OK;
}

const struct ctl_cmd ctl_cmd_check = {
    "check",
    cmd_check,
    "",
    "Verify every invariant of the segment (exit 1 and one line per violation)",
    "Meaningful on a quiet registry: writers running meanwhile can cause transient\n"
    "reports, so run it again before concluding.\n",
};
