/*
 * helper_corrupt.c -- breaks one invariant of a live segment on purpose, so that
 * test_presencectl.sh can see `presencectl check` report it (never a test by itself).
 *
 *   helper_corrupt SEGMENT ROOM [DELTA]
 *
 * Attaches SEGMENT with the public API, finds the LIVE room named ROOM by walking
 * the rooms region (internal.h / layout.h: p->h->off_rooms, pr__room()), and adds
 * DELTA (default 5) to its occupancy counter without touching its member list, so
 * that the counter no longer equals the presences listed.
 * Exit status: 0 done, 1 room not found, 2 usage, 3 presence_open failed.
 * No cmocka here: the test checks the exit status.
 */
#include "internal.h"
#include "presence.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: helper_corrupt SEGMENT ROOM [DELTA]\n");
        return 2;
    }
    const char *room = argv[2];
    long delta = argc == 4 ? strtol(argv[3], NULL, 10) : 5;
    presence_t *p = NULL;
    int rc = presence_open(argv[1], NULL, &p);
    if (rc < 0) {
        fprintf(stderr, "helper_corrupt: open %s: %s\n", argv[1], presence_strerror(rc));
        return 3;
    }
    int status = 1;
    for (uint32_t i = 0; i < p->h->cap_rooms; i++) {
        struct pr_room *r = pr__room(p, i);
        if (PR_ST_STATE(pr_load(&r->h.state)) != PR_LIVE ||
            !pr__blob_eq(p, r->name_blob, r->name_len, room, strlen(room)))
            continue;
        uint32_t occ = pr_load(&r->occupancy);
        pr_store(&r->occupancy, (uint32_t) ((long) occ + delta));
        printf("room %u '%s': occupancy %u -> %u\n", i, room, occ, pr_load(&r->occupancy));
        status = 0;
        break;
    }
    if (status)
        fprintf(stderr, "helper_corrupt: no live room '%s'\n", room);
    presence_close(p);
    return status;
}
