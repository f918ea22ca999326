/*
 * cmd_top.c -- presencectl: `top`, the busiest rooms (by occupancy) and the
 * event rate, refreshed every --interval on a full screen until 'q' or Ctrl-C.
 *
 * Each sample reads, on a read-only attachment: presence_stats() (counts,
 * reaper), presence_rooms() (occupancy, users), and the events produced since
 * the previous sample, drained from a read-only subscription: their number
 * gives the event rate, their rooms each room's rate. The first sample replays
 * the ring's recent history, so even a single frame (--once) shows the rate over
 * the last interval. (The ring tail counts 64-byte entries, and an event takes
 * one or more, so counting events is exact where tail deltas are not.) When the
 * ring laps the subscription between two samples, the rate is a lower bound and
 * shown as ">= N/s".
 *
 * --once, or stdout not a terminal: one frame, no terminal control. --json
 * (implies --once): the frame as one JSON document. The terminal handling (raw
 * input, alternate screen) is in term.c.
 */
#include "ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOP_DEFAULT_LIMIT 20

enum { OPT_ONCE = CTL_OPT_FIRST_FREE, OPT_INTERVAL, OPT_LIMIT };

/* Events of one room in the sample's window. */
struct room_count {
    char *name;
    size_t events;
};

struct sample {
    uint64_t now_ns, window_ns;
    presence_stats_t st;
    presence_room_list_t *rooms;
    size_t *order;            /* indexes into rooms->items, busiest first */
    struct room_count *count; /* sorted by name */
    size_t ncount;
    size_t events; /* in the window, all rooms */
    bool lapped;   /* events were lost: the counts are lower bounds */
};

struct top {
    struct ctl *c;
    presence_t *p;
    presence_sub_t *sub;
    uint64_t interval_ms;
    size_t limit;
    uint64_t prev_ns; /* end of the previous window (CLOCK_REALTIME) */
};

static void sample_free(struct sample *s)
{
    for (size_t i = 0; i < s->ncount; i++)
        free(s->count[i].name);
    free(s->count);
    free(s->order);
    presence_room_list_free(s->rooms);
    memset(s, 0, sizeof *s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

static int cmp_count_name(const void *key, const void *elem)
{
    return strcmp(key, ((const struct room_count *) elem)->name);
}

static size_t room_events(const struct sample *s, const char *room)
{
    const struct room_count *rc =
        s->ncount ? bsearch(room, s->count, s->ncount, sizeof *s->count, cmp_count_name) : NULL;
    return rc ? rc->events : 0;
}

/* Drains the subscription: the rooms of the events produced after @since, sorted,
 * counted into s->count. */
static int drain(struct top *t, struct sample *s, uint64_t since)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    presence_event_t ev;
    /* A bound, so that producers faster than us cannot keep us here. */
    for (uint64_t budget = (uint64_t) s->st.ring_entries * 2 + 1024; budget > 0; budget--) {
        int rc = presence_sub_next(t->sub, &ev);
        if (rc == 0)
            break;
        if (rc == PRESENCE_ELAPPED) {
            s->lapped = true;
            continue;
        }
        if (rc < 0) {
            for (size_t i = 0; i < n; i++)
                free(names[i]);
            free(names);
            return ctl_fail(t->c, rc, NULL);
        }
        if (ev.time_ns <= since)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            names = ctl_xrealloc(names, cap * sizeof *names);
        }
        names[n++] = ctl_xstrdup(ev.room);
    }
    s->events = n;
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    s->count = ctl_xmalloc((n ? n : 1) * sizeof *s->count);
    for (size_t i = 0; i < n; i++) {
        if (s->ncount && strcmp(s->count[s->ncount - 1].name, names[i]) == 0) {
            s->count[s->ncount - 1].events++;
            free(names[i]);
        } else {
            s->count[s->ncount++] = (struct room_count){names[i], 1};
        }
    }
    free(names);
    return CTL_OK;
}

/* Busiest first: occupancy, then events, then name (qsort_r, @ctx the sample). */
static int cmp_busy(const void *a, const void *b, void *ctx)
{
    const struct sample *s = ctx;
    const presence_room_info_t *x = &s->rooms->items[*(const size_t *) a];
    const presence_room_info_t *y = &s->rooms->items[*(const size_t *) b];
    if (x->occupancy != y->occupancy)
        return x->occupancy > y->occupancy ? -1 : 1;
    size_t ex = room_events(s, x->name), ey = room_events(s, y->name);
    if (ex != ey)
        return ex > ey ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int take_sample(struct top *t, struct sample *s)
{
    memset(s, 0, sizeof *s);
    int rc = presence_stats(t->p, &s->st);
    if (rc < 0) {
        ctl_fail(t->c, rc, NULL);
        return CTL_ERROR;
    }
    uint64_t since = t->prev_ns;
    if (drain(t, s, since) != CTL_OK)
        return CTL_ERROR;
    s->now_ns = ctl_now_ns();
    s->window_ns = s->now_ns > since ? s->now_ns - since : 1;
    t->prev_ns = s->now_ns;
    rc = presence_stats(t->p, &s->st); /* again: counts as of now */
    if (rc >= 0)
        rc = presence_rooms(t->p, NULL, &s->rooms);
    if (rc < 0 || !s->rooms) {
        sample_free(s);
        ctl_fail(t->c, rc < 0 ? rc : -ENOMEM, NULL);
        return CTL_ERROR;
    }
    s->order = ctl_xmalloc((s->rooms->count ? s->rooms->count : 1) * sizeof *s->order);
    for (size_t i = 0; i < s->rooms->count; i++)
        s->order[i] = i;
    qsort_r(s->order, s->rooms->count, sizeof *s->order, cmp_busy, s);
    return CTL_OK;
}

static double per_sec(size_t events, uint64_t window_ns)
{
    return (double) events * 1e9 / (double) window_ns;
}

/* A rate for JSON, rounded to 0.01. */
static json_t *json_rate(size_t events, uint64_t window_ns)
{
    return json_real((double) (uint64_t) (per_sec(events, window_ns) * 100.0 + 0.5) / 100.0);
}

/* ---- rendering -------------------------------------------------------------------------- */

static void render_text(const struct top *t, const struct sample *s, size_t limit, bool interactive)
{
    const presence_stats_t *st = &s->st;
    char when[40], ago[32], rate[48];
    const char *ge = s->lapped ? ">= " : "";
    snprintf(rate, sizeof rate, "%s%.1f/s", ge, per_sec(s->events, s->window_ns));
    printf("presencectl top: segment '%s' at %s, every %.1f s\n", t->c->segment,
           ctl_fmt_time(when, sizeof when, s->now_ns), (double) t->interval_ms / 1000.0);
    printf("Rooms %" PRIu32 "/%" PRIu32 "   Connections %" PRIu32 "/%" PRIu32
           "   Presences %" PRIu32 "/%" PRIu32 "   Processes %" PRIu32 "   Subscribers %" PRIu32
           "\n",
           st->rooms, st->rooms_cap, st->connections, st->connections_cap, st->presences,
           st->presences_cap, st->procs_attached, st->subscribers);
    printf("Events %s%s   Joins %" PRIu64 "   Leaves %" PRIu64 "   Expired %" PRIu64
           "   Next seq %" PRIu64 "\n",
           rate, s->lapped ? " (lapped: some were not counted)" : "", st->joins, st->leaves,
           st->expired, st->ring_tail);
    if (st->reaper_pid > 0)
        printf("Reaper pid %" PRId32 ": last sweep %s, %" PRIu64 " sweeps\n", st->reaper_pid,
               ctl_fmt_ago(ago, sizeof ago, st->reaper_last_sweep_ns), st->reaper_sweeps);
    else
        printf("Reaper: none (connections expire only when some process prunes)\n");
    putchar('\n');

    struct ctl view = *t->c;
    view.tty = true; /* a frame is for people: aligned, with a header, also when piped */
    struct ctl_table *tab =
        ctl_table_new("lrrrr", "ROOM", "OCCUPANCY", "USERS", "ANONYMOUS", "EVENTS/S", NULL);
    size_t shown = s->rooms->count < limit ? s->rooms->count : limit;
    for (size_t i = 0; i < shown; i++) {
        const presence_room_info_t *r = &s->rooms->items[s->order[i]];
        ctl_table_cell(tab, r->name);
        ctl_table_cellf(tab, "%" PRIu32, r->occupancy);
        ctl_table_cellf(tab, "%" PRIu32, r->users);
        ctl_table_cellf(tab, "%" PRIu32, r->anonymous);
        ctl_table_cellf(tab, "%s%.1f", ge, per_sec(room_events(s, r->name), s->window_ns));
    }
    ctl_table_print(&view, tab);
    ctl_table_free(tab);
    if (s->rooms->count == 0)
        printf("(no rooms)\n");
    else if (shown < s->rooms->count)
        printf("(%zu more room%s)\n", s->rooms->count - shown,
               s->rooms->count - shown == 1 ? "" : "s");
    if (interactive)
        printf("\nq or Ctrl-C: quit   space: refresh now\n");
}

static int render_json(const struct top *t, const struct sample *s, size_t limit)
{
    const presence_stats_t *st = &s->st;
    char when[40];
    json_t *doc = json_object(), *arr = json_array();
    ctl_json_set(doc, "segment", ctl_json_str(t->c->segment));
    ctl_json_set(doc, "time", ctl_json_str(ctl_fmt_time(when, sizeof when, s->now_ns)));
    ctl_json_set(doc, "time_ns", ctl_json_u64(s->now_ns));
    ctl_json_set(doc, "window_ms", ctl_json_u64(s->window_ns / 1000000u));
    ctl_json_set(doc, "rooms", ctl_json_u64(st->rooms));
    ctl_json_set(doc, "connections", ctl_json_u64(st->connections));
    ctl_json_set(doc, "presences", ctl_json_u64(st->presences));
    ctl_json_set(doc, "procs_attached", ctl_json_u64(st->procs_attached));
    ctl_json_set(doc, "subscribers", ctl_json_u64(st->subscribers));
    ctl_json_set(doc, "events", ctl_json_u64(s->events));
    ctl_json_set(doc, "events_per_sec", json_rate(s->events, s->window_ns));
    ctl_json_set(doc, "lapped", json_boolean(s->lapped));
    ctl_json_set(doc, "ring_tail", ctl_json_u64(st->ring_tail));
    ctl_json_set(doc, "reaper_pid", json_integer(st->reaper_pid));
    size_t shown = s->rooms->count < limit ? s->rooms->count : limit;
    for (size_t i = 0; i < shown; i++) {
        const presence_room_info_t *r = &s->rooms->items[s->order[i]];
        size_t ev = room_events(s, r->name);
        json_t *row = json_object();
        ctl_json_set(row, "room", ctl_json_str(r->name));
        ctl_json_set(row, "occupancy", json_integer(r->occupancy));
        ctl_json_set(row, "users", json_integer(r->users));
        ctl_json_set(row, "anonymous", json_integer(r->anonymous));
        ctl_json_set(row, "events", ctl_json_u64(ev));
        ctl_json_set(row, "events_per_sec", json_rate(ev, s->window_ns));
        if (json_array_append_new(arr, row) != 0)
            ctl_oom();
    }
    ctl_json_set(doc, "busiest", arr);
    return ctl_json_print(t->c, doc);
}

/* ---- the loop ---------------------------------------------------------------------------- */

static int run_once(struct top *t)
{
    struct sample s;
    int status = take_sample(t, &s);
    if (status != CTL_OK)
        return status;
    if (t->c->json)
        status = render_json(t, &s, t->limit);
    else
        render_text(t, &s, t->limit, false);
    sample_free(&s);
    return status;
}

/* Waits for the next refresh; false when the user quits. */
static bool wait_refresh(const struct top *t, bool keys)
{
    uint64_t deadline = ctl_mono_ns() + t->interval_ms * 1000000u;
    for (;;) {
        uint64_t now = ctl_mono_ns();
        if (ctl_live_stopped())
            return false;
        if (ctl_live_resized() || now >= deadline)
            return true;
        unsigned left = (unsigned) ((deadline - now + 999999u) / 1000000u);
        if (!keys) {
            ctl_live_sleep_ms(left);
            continue;
        }
        int key = ctl_term_key(left);
        if (key == 'q' || key == 'Q')
            return false;
        if (key == ' ')
            return true;
    }
}

static int run_live(struct top *t)
{
    static char frame_buf[1 << 16];
    setvbuf(stdout, frame_buf, _IOFBF, sizeof frame_buf); /* one write per frame */
    ctl_live_signals(true);
    bool keys = ctl_term_enter(); /* false when stdin is not a terminal: Ctrl-C only */
    int status = CTL_OK;
    do {
        struct sample s;
        status = take_sample(t, &s);
        if (status != CTL_OK)
            break;
        unsigned rows, cols;
        ctl_term_size(&rows, &cols);
        size_t fit = rows > 10 ? rows - 10 : 1;
        fputs("\033[H\033[2J", stdout); /* home, clear */
        render_text(t, &s, t->limit < fit ? t->limit : fit, true);
        sample_free(&s);
        if (fflush(stdout) != 0) {
            status = CTL_ERROR;
            break;
        }
    } while (wait_refresh(t, keys));
    ctl_term_leave();
    if (!keys)
        putchar('\n');
    return status;
}

/* "--interval 500" is milliseconds; "0.5s", "2s", "250ms" are accepted too. */
static int parse_interval(struct ctl *c, const char *s, uint64_t *ms)
{
    int rc = s[0] && s[strspn(s, "0123456789")] == '\0'
                 ? ctl_parse_u64(c, "--interval", s, ms)
                 : ctl_parse_duration_ms(c, "--interval", s, ms);
    if (rc == CTL_OK && (*ms < 10 || *ms > 3600000))
        rc = ctl_usage_error(c, "--interval: '%s' is not between 10 ms and 1 h", s);
    return rc;
}

static int cmd_top(struct ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"once", no_argument, NULL, OPT_ONCE},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"limit", required_argument, NULL, OPT_LIMIT},
        CTL_COMMON_LONGOPTS,
    };
    struct top t = {c, NULL, NULL, 1000, TOP_DEFAULT_LIMIT, 0};
    bool once = false;
    int o;
    while ((o = ctl_getopt(c, argc, argv, "1i:", longopts)) != -1) {
        int rc = CTL_OK;
        if (o == OPT_ONCE || o == '1')
            once = true;
        else if (o == OPT_INTERVAL || o == 'i')
            rc = parse_interval(c, optarg, &t.interval_ms);
        else if (o == OPT_LIMIT)
            rc = ctl_parse_count(c, "--limit", optarg, &t.limit);
        else
            return c->stop;
        if (rc != CTL_OK)
            return rc;
    }
    if (optind < argc)
        return ctl_usage_error(c, "unexpected argument '%s'", argv[optind]);
    if (t.limit == 0)
        t.limit = SIZE_MAX;
    int status = ctl_open(c, false, &t.p);
    if (status != CTL_OK)
        return status;
    int rc = ctl_sub_oldest(t.p, NULL, &t.sub);
    if (rc < 0) {
        presence_close(t.p);
        return ctl_fail(c, rc, NULL);
    }
    uint64_t now = ctl_now_ns();
    t.prev_ns = now - t.interval_ms * 1000000u; /* the first window: the last interval */
    if (once || c->json || !isatty(STDOUT_FILENO))
        status = run_once(&t);
    else
        status = run_live(&t);
    presence_sub_close(t.sub);
    presence_close(t.p);
    return status;
}

const struct ctl_cmd ctl_cmd_top = {
    "top",
    cmd_top,
    "[--once] [-i|--interval MS] [--limit N] [--json]",
    "The busiest rooms and the event rate, refreshed",
    "A full-screen view, refreshed every interval (default 1000 ms; '500', '2s' and\n"
    "'250ms' are accepted): totals, the event rate, the reaper, and the rooms with\n"
    "the most presences (then the most events) with their events per second.\n"
    "q or Ctrl-C quits, space refreshes at once.\n"
    "\n"
    "  -1, --once          print one frame and exit (no terminal control); the\n"
    "                      default when stdout is not a terminal\n"
    "  -i, --interval MS   refresh period, and the window of the first rate\n"
    "      --limit N       rooms shown (default 20; 0 = all; a screen shows what fits)\n"
    "      --json          one frame as JSON (implies --once)\n"
    "\n"
    "Rates count the events in the ring: the first frame those of the last interval,\n"
    "each later one those since the previous frame. The segment is attached\n"
    "read-only and the ring polled; a rate shown as '>= N' lost events to a lap.\n",
};
