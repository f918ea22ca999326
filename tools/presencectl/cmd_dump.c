/*
 * cmd_dump.c -- presencectl: `dump`, the whole registry as one JSON document, on
 * a read-only attachment: every room from presence_rooms() with its counters, and
 * its occupants (uuid, connection, state) from presence_here_now(), asked in
 * batches so that the library's per-call de-duplication stays cheap, and every
 * group (presence_groups()) with its rooms (presence_group_list()).
 */
#include "ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DUMP_BATCH 256 /* rooms per here_now call */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Adds the rooms items[0..n) with their occupants to @channels; sums @total. */
static int dump_batch(const struct ctl *c, presence_t *p, const presence_room_info_t *items,
                      size_t n, json_t *channels, uint64_t *total)
{
    const char **names = ctl_xmalloc(n * sizeof *names);
    for (size_t i = 0; i < n; i++)
        names[i] = items[i].name;
    presence_here_now_t *hn = NULL;
    int rc = presence_here_now(p, names, n, NULL, 0,
                               PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE, 0, 0, &hn);
    free(names);
    if (rc < 0)
        return ctl_fail(c, rc, NULL);
    json_t *part = ctl_here_now_json(hn, true, true, true);
    json_t *pch = json_object_get(part, "channels");
    for (size_t i = 0; i < hn->nrooms; i++) {
        json_t *room = json_object_get(pch, hn->rooms[i].name);
        /* here_now answers in request order: items[i] is the same room. */
        if (!room || i >= n)
            continue;
        ctl_json_set(room, "users", json_integer(items[i].users));
        ctl_json_set(room, "anonymous", json_integer(items[i].anonymous));
        if (json_object_set(channels, hn->rooms[i].name, room) != 0)
            ctl_oom();
        *total += hn->rooms[i].occupancy;
    }
    json_decref(part);
    presence_here_now_free(hn);
    return CTL_OK;
}

/* {GROUP: [ROOM, ...]} for every group, rooms sorted; NULL after an error (reported). */
static json_t *dump_groups(const struct ctl *c, presence_t *p)
{
    presence_strlist_t *names = NULL;
    int rc = presence_groups(p, &names);
    if (rc < 0) {
        ctl_fail(c, rc, NULL);
        return NULL;
    }
    json_t *groups = json_object();
    for (size_t i = 0; i < names->count; i++) {
        presence_strlist_t *rooms = NULL;
        rc = presence_group_list(p, names->items[i], &rooms);
        if (rc == PRESENCE_ENOGROUP)
            continue; /* deleted meanwhile */
        if (rc < 0) {
            ctl_fail(c, rc, NULL);
            json_decref(groups);
            groups = NULL;
            break;
        }
        qsort(rooms->items, rooms->count, sizeof *rooms->items, cmp_str);
        json_t *arr = json_array();
        for (size_t k = 0; k < rooms->count; k++)
            if (json_array_append_new(arr, ctl_json_str(rooms->items[k])) != 0)
                ctl_oom();
        ctl_json_set(groups, names->items[i], arr);
        presence_strlist_free(rooms);
    }
    presence_strlist_free(names);
    return groups;
}

static int cmd_dump(struct ctl *c, int argc, char **argv)
{
    presence_t *p = NULL;
    int status = ctl_open_no_args(c, argc, argv, &p);
    if (status >= 0)
        return status;
    presence_room_list_t *rooms = NULL;
    int rc = presence_rooms(p, NULL, &rooms);
    if (rc < 0) {
        presence_close(p);
        return ctl_fail(c, rc, NULL);
    }
    json_t *doc = json_object(), *channels = json_object();
    uint64_t total = 0;
    status = CTL_OK;
    for (size_t i = 0; i < rooms->count && status == CTL_OK; i += DUMP_BATCH) {
        size_t n = rooms->count - i < DUMP_BATCH ? rooms->count - i : DUMP_BATCH;
        status = dump_batch(c, p, rooms->items + i, n, channels, &total);
    }
    json_t *groups = status == CTL_OK ? dump_groups(c, p) : NULL;
    presence_close(p);
    if (!groups)
        status = CTL_ERROR;
    if (status != CTL_OK) {
        json_decref(channels);
        json_decref(doc);
        presence_room_list_free(rooms);
        return status;
    }
    ctl_json_set(doc, "segment", ctl_json_str(c->segment));
    ctl_json_set(doc, "total_channels", ctl_json_u64(json_object_size(channels)));
    ctl_json_set(doc, "total_occupancy", ctl_json_u64(total));
    ctl_json_set(doc, "channels", channels);
    ctl_json_set(doc, "groups", groups);
    presence_room_list_free(rooms);
    return ctl_json_print(c, doc);
}

const struct ctl_cmd ctl_cmd_dump = {
    "dump",
    cmd_dump,
    "",
    "Print the whole registry as JSON (rooms, occupants, state, groups)",
    "Always JSON (indented on a terminal):\n"
    "  {\"segment\": S, \"total_channels\": N, \"total_occupancy\": N,\n"
    "   \"channels\": {\"ROOM\": {\"occupancy\": N, \"users\": N, \"anonymous\": N,\n"
    "                \"occupants\": [{\"uuid\": U, \"conn\": C, \"state\": {...}}]}},\n"
    "   \"groups\": {\"GROUP\": [\"ROOM\", ...]}}\n"
    "Each room is a consistent snapshot; the document as a whole is not, while\n"
    "writers run.\n",
};
