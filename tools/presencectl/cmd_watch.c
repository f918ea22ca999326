/*
 * cmd_watch.c -- presencectl: `watch`, the registry's events as they happen,
 * read from the event ring through a subscription on a read-only attachment.
 * Such a subscription writes nothing to the segment and gets no wake-ups, so
 * watch polls it every WATCH_POLL_MS while the ring is quiet. It starts at the
 * next event, or replays from --from SEQ; it ends on Ctrl-C / SIGTERM (exit 0)
 * or after --count events. Several rooms: one subscription for all events,
 * filtered here by name (the library filters one room itself).
 *
 * Output: on a terminal one aligned line per event (local time of day); piped,
 * tab-separated fields; with --json one compact object per line. A subscriber
 * that falls a whole ring behind loses events: a "lapped" line says so and the
 * watch continues from the oldest event still there.
 */
#include "ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define WATCH_POLL_MS 50 /* how often a quiet ring is looked at again */

enum { OPT_FROM = CTL_OPT_FIRST_FREE, OPT_COUNT };

struct watch {
    const struct ctl *c;
    const struct ctl_strv *rooms;         /* client-side filter when more than one */
    size_t w_seq, w_room, w_conn, w_user; /* terminal columns; they only grow */
};

static bool wanted(const struct watch *w, const char *room)
{
    if (w->rooms->n < 2)
        return true; /* none (all rooms), or one: the subscription filters */
    for (size_t i = 0; i < w->rooms->n; i++)
        if (strcmp(w->rooms->v[i], room) == 0)
            return true;
    return false;
}

/* ---- one line per event --------------------------------------------------------------- */

static void print_json(const presence_event_t *ev)
{
    char when[40];
    json_t *o = json_object();
    ctl_json_set(o, "seq", ctl_json_u64(ev->seq));
    ctl_json_set(o, "time", ctl_json_str(ctl_fmt_time(when, sizeof when, ev->time_ns)));
    ctl_json_set(o, "time_ns", ctl_json_u64(ev->time_ns));
    ctl_json_set(o, "type", ctl_json_str(presence_event_name(ev->type)));
    ctl_json_set(o, "room", ctl_json_str(ev->room));
    ctl_json_set(o, "conn", ctl_json_str(*ev->conn ? ev->conn : NULL));
    ctl_json_set(o, "user", ctl_json_str(*ev->user ? ev->user : NULL));
    ctl_json_set(o, "occupancy", json_integer(ev->occupancy));
    ctl_json_set(o, "reason", ctl_json_str(ev->reason ? presence_event_name(ev->reason) : NULL));
    if (json_dumpf(o, stdout, JSON_COMPACT) == 0)
        putchar('\n');
    json_decref(o);
}

/* A field of a tab-separated line: tabs and line breaks would split it. */
static void raw_field(const char *s, bool last)
{
    for (; *s; s++)
        putchar(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s);
    putchar(last ? '\n' : '\t');
}

static void print_raw(const presence_event_t *ev)
{
    char when[40];
    printf("%" PRIu64 "\t%s\t%s\t", ev->seq, ctl_fmt_time(when, sizeof when, ev->time_ns),
           presence_event_name(ev->type));
    raw_field(ev->room, false);
    raw_field(ev->conn, false);
    raw_field(ev->user, false);
    printf("%" PRIu32 "\t%s\n", ev->occupancy, ev->reason ? presence_event_name(ev->reason) : "");
}

/* "12:00:01.234", the local time of day. */
static const char *time_of_day(char *buf, size_t n, uint64_t realtime_ns)
{
    time_t secs = (time_t) (realtime_ns / 1000000000u);
    struct tm tm;
    char hms[16] = "??:??:??";
    if (localtime_r(&secs, &tm))
        strftime(hms, sizeof hms, "%H:%M:%S", &tm);
    snprintf(buf, n, "%s.%03u", hms, (unsigned) (realtime_ns % 1000000000u / 1000000u));
    return buf;
}

/* @s left-aligned in *width columns (which grows to fit), then two blanks. */
static void cell(const char *s, size_t *width)
{
    size_t w = ctl_display_width(s);
    if (w > *width)
        *width = w;
    printf("%s%*s  ", s, (int) (*width - w), "");
}

static void print_header(struct watch *w)
{
    if (w->c->color)
        fputs("\033[1m", stdout);
    printf("%-12s  %*s  %-12s  ", "TIME", (int) w->w_seq, "SEQ", "EVENT");
    cell("ROOM", &w->w_room);
    cell("CONNECTION", &w->w_conn);
    cell("USER", &w->w_user);
    fputs("OCC", stdout);
    if (w->c->color)
        fputs("\033[0m", stdout);
    putchar('\n');
}

static void print_tty(struct watch *w, const presence_event_t *ev)
{
    char when[32], seq[24];
    snprintf(seq, sizeof seq, "%" PRIu64, ev->seq);
    if (strlen(seq) > w->w_seq)
        w->w_seq = strlen(seq);
    printf("%s  %*s  %-12s  ", time_of_day(when, sizeof when, ev->time_ns), (int) w->w_seq, seq,
           presence_event_name(ev->type));
    cell(ev->room, &w->w_room);
    cell(*ev->conn ? ev->conn : "-", &w->w_conn);
    cell(*ev->user ? ev->user : "-", &w->w_user);
    printf("%3" PRIu32 "\n", ev->occupancy);
}

static void print_event(struct watch *w, const presence_event_t *ev)
{
    if (w->c->json)
        print_json(ev);
    else if (w->c->tty)
        print_tty(w, ev);
    else
        print_raw(ev);
}

/* Events were lost; @next is the seq the watch continues from. */
static void print_lapped(const struct watch *w, uint64_t next)
{
    char when[40];
    uint64_t now = ctl_now_ns();
    static const char msg[] = "events were lost: the ring was overwritten before they were read";
    if (w->c->json) {
        json_t *o = json_object();
        ctl_json_set(o, "type", ctl_json_str("lapped"));
        ctl_json_set(o, "time", ctl_json_str(ctl_fmt_time(when, sizeof when, now)));
        ctl_json_set(o, "time_ns", ctl_json_u64(now));
        ctl_json_set(o, "next_seq", ctl_json_u64(next));
        ctl_json_set(o, "message", ctl_json_str(msg));
        if (json_dumpf(o, stdout, JSON_COMPACT) == 0)
            putchar('\n');
        json_decref(o);
    } else if (w->c->tty) {
        printf("%s  -- lapped: %s; continuing at seq %" PRIu64 " --\n",
               time_of_day(when, sizeof when, now), msg, next);
    } else {
        printf("%" PRIu64 "\t%s\tlapped\t\t\t\t\t%s\n", next, ctl_fmt_time(when, sizeof when, now),
               msg);
    }
}

/* ---- subscribing and following ---------------------------------------------------------- */

static int subscribe(struct watch *w, presence_t *p, bool have_from, uint64_t from,
                     presence_sub_t **sub)
{
    const struct ctl *c = w->c;
    const char *filter = w->rooms->n == 1 ? w->rooms->v[0] : NULL;
    int rc = presence_subscribe(p, have_from ? from : PRESENCE_SEQ_NOW, filter, sub);
    if (rc == PRESENCE_ELAPPED) {
        rc = ctl_sub_oldest(p, filter, sub);
        if (rc == 0)
            print_lapped(w, presence_sub_position(*sub));
    }
    if (rc == -EINVAL) {
        presence_stats_t st;
        if (presence_stats(p, &st) == 0 && from > st.ring_tail)
            return ctl_error(c,
                             "seq %" PRIu64 " has not happened yet (the next event is %" PRIu64 ")",
                             from, st.ring_tail);
        return ctl_error(c, "seq %" PRIu64 " is not the seq of an event", from);
    }
    if (rc < 0)
        return ctl_fail(c, rc, "room", filter, NULL);
    return CTL_OK;
}

static int follow(struct watch *w, presence_sub_t *sub, size_t count)
{
    size_t seen = 0;
    presence_event_t ev;
    while (!ctl_live_stopped() && (count == 0 || seen < count)) {
        int rc = presence_sub_next(sub, &ev);
        if (rc == 1) {
            if (wanted(w, ev.room)) {
                print_event(w, &ev);
                seen++;
            }
            continue;
        }
        if (rc == PRESENCE_ELAPPED) {
            print_lapped(w, presence_sub_position(sub));
            continue;
        }
        if (rc < 0)
            return ctl_fail(w->c, rc, NULL);
        /* quiet: hand what we have to the reader, then wait (a signal ends the wait) */
        if (fflush(stdout) != 0 || ferror(stdout))
            return CTL_ERROR;
        ctl_live_sleep_ms(WATCH_POLL_MS);
    }
    return CTL_OK;
}

static int cmd_watch(struct ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"from", required_argument, NULL, OPT_FROM},
        {"count", required_argument, NULL, OPT_COUNT},
        CTL_COMMON_LONGOPTS,
    };
    uint64_t from = 0;
    bool have_from = false;
    size_t count = 0;
    int o;
    while ((o = ctl_getopt(c, argc, argv, "n:", longopts)) != -1) {
        int rc = CTL_OK;
        if (o == OPT_FROM) {
            rc = ctl_parse_u64(c, "--from", optarg, &from);
            have_from = true;
        } else if (o == OPT_COUNT || o == 'n') {
            rc = ctl_parse_count(c, "--count", optarg, &count);
            if (rc == CTL_OK && count == 0)
                rc = ctl_usage_error(c, "--count: must be at least 1");
        } else {
            return c->stop;
        }
        if (rc != CTL_OK)
            return rc;
    }
    struct ctl_strv rooms = {0};
    for (int i = optind; i < argc; i++) {
        int rc = presence_validate_name(argv[i]);
        if (rc != 0) {
            ctl_strv_free(&rooms);
            return ctl_fail(c, rc, "room", argv[i], NULL);
        }
        ctl_strv_push(&rooms, argv[i]);
    }
    struct watch w = {c, &rooms, 6, 12, 10, 8};
    presence_t *p = NULL;
    presence_sub_t *sub = NULL;
    int status = ctl_open(c, false, &p);
    if (status == CTL_OK)
        status = subscribe(&w, p, have_from, from, &sub);
    if (status == CTL_OK) {
        ctl_live_signals(false);
        if (c->tty && !c->json)
            print_header(&w);
        status = follow(&w, sub, count);
    }
    presence_sub_close(sub);
    presence_close(p);
    ctl_strv_free(&rooms);
    return status;
}

const struct ctl_cmd ctl_cmd_watch = {
    "watch",
    cmd_watch,
    "[ROOM...] [--from SEQ] [-n|--count N] [--json]",
    "Follow the events of the registry as they happen",
    "Prints every event (join, leave, timeout, owner_died, state_change,\n"
    "room_created, room_deleted) of the given rooms, or of all rooms, until Ctrl-C\n"
    "or SIGTERM (exit 0) or until N events were printed.\n"
    "\n"
    "  --from SEQ      replay from the event SEQ (a seq printed earlier) if it is\n"
    "                  still in the ring, then follow; default: from the next event\n"
    "  -n, --count N   stop after N events\n"
    "\n"
    "Output: on a terminal, aligned lines TIME (local) SEQ EVENT ROOM CONNECTION USER\n"
    "OCC; piped, tab-separated: seq, time (ISO-8601 UTC), event, room, connection,\n"
    "user, occupancy, reason; with --json one object per line:\n"
    "  {\"seq\":N,\"time\":\"2024-05-01T12:00:00.123Z\",\"time_ns\":N,\"type\":\"leave\",\n"
    "   \"room\":R,\"conn\":C,\"user\":U|null,\"occupancy\":N,\"reason\":\"leave\"|null}\n"
    "A watcher that falls a whole ring behind has lost events: it prints a 'lapped'\n"
    "line ({\"type\":\"lapped\",...}) and continues from the oldest event left.\n"
    "\n"
    "The segment is attached read-only: the watch writes nothing and is not woken\n"
    "by the reaper, so it polls the ring every 50 ms.\n",
};
