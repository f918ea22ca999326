/*
 * cmd_live.c -- presencectl: the live views `watch` (follow events), `top`
 * (rooms by activity) and `procs` (attached processes). They need the event ring's
 * subscriber API and a process-list call, which libpresence does not have yet, so
 * for now each says so and exits 1.
 *
 * TODO(event ring): watch -- subscribe from "now" or --from SEQ, print one line per
 *   event (seq, time, type, room, conn, user, occupancy; NDJSON with --json), report
 *   a lapped subscriber (resync) and continue.
 * TODO(event ring): top -- refresh a table of rooms by events per second every
 *   interval (-i), header reprinted every 20 rows, -n COUNT samples.
 * TODO(process list API): procs -- table SLOT PID ATTACHED READERS ALIVE.
 */
#include "ctl.h"

#include <string.h>

#define NOT_YET_HELP "Not available yet: libpresence has no event-ring subscriber API yet.\n"

static int not_yet(struct ctl *c, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            ctl_print_help(c, c->cmd);
            return CTL_OK;
        }
    }
    return ctl_error(c, "not available yet (needs the event ring)");
}

const struct ctl_cmd ctl_cmd_watch = {
    "watch",        not_yet,
    "[--from SEQ]", "Follow the events of the registry as they happen (not available yet)",
    NOT_YET_HELP,
};

const struct ctl_cmd ctl_cmd_top = {
    "top",
    not_yet,
    "[-i SECONDS] [-n COUNT]",
    "Rooms by activity, refreshed (not available yet)",
    NOT_YET_HELP,
};

const struct ctl_cmd ctl_cmd_procs = {
    "procs",
    not_yet,
    "",
    "List attached processes (not available yet)",
    "Not available yet: libpresence has no call that lists attached processes.\n",
};
