/*
 * segment_info.c -- presence-segment-info: creates a segment, prints its
 * capacities and counters in "Key: value" lines, and removes it again.
 *
 *   presence-segment-info NAME
 *
 * The segment is created with the default options and PRESENCE_EXCL, so an
 * existing segment is never touched (nor removed). Exit status: 0 ok, 1 error
 * (message on stderr), 2 usage.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "presence.h"

static const char progname[] = "presence-segment-info";

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: %s NAME\n"
            "Creates the shared-memory segment NAME with the default options, prints its\n"
            "capacities and counters, then removes it. Fails if NAME already exists.\n",
            progname);
}

static void print_stats(const char *name, const presence_stats_t *st)
{
    printf("Segment: %s\n", name);
    printf("Segment bytes: %" PRIu64 "\n", st->segment_bytes);
    printf("Rooms: %" PRIu32 "\n", st->rooms);
    printf("Rooms capacity: %" PRIu32 "\n", st->rooms_cap);
    printf("Connections: %" PRIu32 "\n", st->connections);
    printf("Connections capacity: %" PRIu32 "\n", st->connections_cap);
    printf("Presences: %" PRIu32 "\n", st->presences);
    printf("Presences capacity: %" PRIu32 "\n", st->presences_cap);
    printf("Groups: %" PRIu32 "\n", st->groups);
    printf("Groups capacity: %" PRIu32 "\n", st->groups_cap);
    printf("Group members: %" PRIu32 "\n", st->group_members);
    printf("Group members capacity: %" PRIu32 "\n", st->group_members_cap);
    printf("Arena bytes used: %" PRIu64 "\n", st->arena_used);
    printf("Arena bytes capacity: %" PRIu64 "\n", st->arena_cap);
    printf("Processes attached: %" PRIu32 "\n", st->procs_attached);
    printf("Process slots: %" PRIu32 "\n", st->procs_cap);
    printf("Readers active: %" PRIu32 "\n", st->readers_active);
    printf("Reader slots: %" PRIu32 "\n", st->readers_cap);
    printf("Ring entries: %" PRIu32 "\n", st->ring_entries);
    printf("Ring tail: %" PRIu64 "\n", st->ring_tail);
    printf("Epoch: %" PRIu64 "\n", st->epoch);
    printf("Limbo: %" PRIu64 "\n", st->limbo);
    printf("Max age ms: %" PRIu64 "\n", st->max_age_ms);
    printf("State max bytes: %" PRIu32 "\n", st->state_max);
    printf("Bytes per presence: %" PRIu32 "\n", st->bytes_per_presence);
    printf("Reaper pid: %" PRId32 "\n", st->reaper_pid);
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];

    presence_options_t opts;
    presence_options_init(&opts);
    opts.flags = PRESENCE_CREATE | PRESENCE_EXCL;

    presence_t *p = NULL;
    int rc = presence_open(name, &opts, &p);
    if (rc < 0) {
        fprintf(stderr, "%s: create %s: %s\n", progname, name, presence_strerror(rc));
        return 1;
    }

    int status = 0;
    presence_stats_t st;
    rc = presence_stats(p, &st);
    if (rc < 0) {
        fprintf(stderr, "%s: stats %s: %s\n", progname, name, presence_strerror(rc));
        status = 1;
    } else {
        print_stats(name, &st);
    }

    presence_close(p);
    rc = presence_unlink(name);
    if (rc < 0) {
        fprintf(stderr, "%s: unlink %s: %s\n", progname, name, presence_strerror(rc));
        status = 1;
    }
    return status;
}
