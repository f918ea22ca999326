/*
 * cmd_query.c -- presencectl: the queries, all on a read-only attachment:
 * `rooms` (presence_rooms), `here-now` (presence_here_now, PubNub-shaped JSON),
 * `where-now` (presence_where_now) and `users` (presence_users). The PubNub
 * here-now document is built by ctl_here_now_json(), which `dump` shares.
 */
#include "ctl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- rooms --------------------------------------------------------------------------- */

enum { OPT_PREFIX = CTL_OPT_FIRST_FREE, OPT_STATE, OPT_NO_UUIDS, OPT_LIMIT, OPT_OFFSET };

static int cmd_rooms(struct ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"prefix", required_argument, NULL, OPT_PREFIX},
        CTL_COMMON_LONGOPTS,
    };
    const char *prefix = NULL;
    int o;
    while ((o = ctl_getopt(c, argc, argv, "p:", longopts)) != -1) {
        if (o == OPT_PREFIX || o == 'p')
            prefix = optarg;
        else
            return c->stop;
    }
    if (optind < argc)
        return ctl_usage_error(c, "unexpected argument '%s' (use --prefix P)", argv[optind]);
    presence_t *p = NULL;
    if (ctl_open(c, false, &p) != CTL_OK)
        return CTL_ERROR;
    presence_room_list_t *l = NULL;
    int rc = presence_rooms(p, prefix, &l);
    presence_close(p);
    if (rc < 0)
        return ctl_fail(c, rc, NULL);
    int status = CTL_OK;
    if (c->json) {
        json_t *doc = json_object(), *arr = json_array();
        for (size_t i = 0; i < l->count; i++) {
            const presence_room_info_t *r = &l->items[i];
            json_t *row = json_object();
            ctl_json_set(row, "name", ctl_json_str(r->name));
            ctl_json_set(row, "occupancy", json_integer(r->occupancy));
            ctl_json_set(row, "users", json_integer(r->users));
            ctl_json_set(row, "anonymous", json_integer(r->anonymous));
            if (json_array_append_new(arr, row) != 0)
                ctl_oom();
        }
        ctl_json_set(doc, "count", ctl_json_u64(l->count));
        ctl_json_set(doc, "rooms", arr);
        status = ctl_json_print(c, doc);
    } else {
        struct ctl_table *t =
            ctl_table_new("lrrr", "ROOM", "OCCUPANCY", "USERS", "ANONYMOUS", NULL);
        for (size_t i = 0; i < l->count; i++) {
            const presence_room_info_t *r = &l->items[i];
            ctl_table_cell(t, r->name);
            ctl_table_cellf(t, "%" PRIu32, r->occupancy);
            ctl_table_cellf(t, "%" PRIu32, r->users);
            ctl_table_cellf(t, "%" PRIu32, r->anonymous);
        }
        ctl_table_print(c, t);
        ctl_table_free(t);
    }
    presence_room_list_free(l);
    return status;
}

const struct ctl_cmd ctl_cmd_rooms = {
    "rooms",
    cmd_rooms,
    "[--prefix P]",
    "List rooms (name, occupancy, unique users, anonymous presences)",
    "  -p, --prefix P   only rooms whose name starts with P\n"
    "Rooms are sorted by name. Empty rooms are listed until 'prune-rooms'.\n",
};

/* ---- here-now ------------------------------------------------------------------------ */

json_t *ctl_here_now_json(const presence_here_now_t *hn, bool uuids, bool state, bool conns)
{
    json_t *doc = json_object(), *channels = json_object();
    ctl_json_set(doc, "total_channels", ctl_json_u64(hn->total_channels));
    ctl_json_set(doc, "total_occupancy", ctl_json_u64(hn->total_occupancy));
    for (size_t i = 0; i < hn->nrooms; i++) {
        const presence_room_result_t *r = &hn->rooms[i];
        json_t *room = json_object(), *occ = json_array();
        ctl_json_set(room, "occupancy", json_integer(r->occupancy));
        for (size_t j = 0; uuids && j < r->noccupants; j++) {
            const presence_occupant_t *o = &r->occupants[j];
            json_t *row = json_object();
            ctl_json_set(row, "uuid", ctl_json_str(o->uuid));
            if (conns)
                ctl_json_set(row, "conn", ctl_json_str(o->conn));
            json_t *sv = state ? ctl_json_state(o->state) : NULL;
            if (sv)
                ctl_json_set(row, "state", sv);
            if (json_array_append_new(occ, row) != 0)
                ctl_oom();
        }
        ctl_json_set(room, "occupants", occ);
        ctl_json_set(channels, r->name, room);
    }
    ctl_json_set(doc, "channels", channels);
    return doc;
}

static void here_now_table(const struct ctl *c, const presence_here_now_t *hn, bool uuids,
                           bool state)
{
    struct ctl_table *t =
        uuids ? (state ? ctl_table_new("lrlll", "ROOM", "OCCUPANCY", "UUID", "CONNECTION", "STATE",
                                       NULL)
                       : ctl_table_new("lrll", "ROOM", "OCCUPANCY", "UUID", "CONNECTION", NULL))
              : ctl_table_new("lr", "ROOM", "OCCUPANCY", NULL);
    size_t cols = uuids ? (state ? 5 : 4) : 2;
    for (size_t i = 0; i < hn->nrooms; i++) {
        const presence_room_result_t *r = &hn->rooms[i];
        size_t rows = uuids && r->noccupants ? r->noccupants : 1;
        for (size_t j = 0; j < rows; j++) {
            /* On a terminal the room and its occupancy head its first row only; raw
             * lines repeat them so that every line stands alone. */
            bool head = j == 0 || !c->tty;
            ctl_table_cell(t, head ? r->name : NULL);
            if (head)
                ctl_table_cellf(t, "%" PRIu32, r->occupancy);
            else
                ctl_table_cell(t, NULL);
            if (cols == 2)
                continue;
            const presence_occupant_t *o = j < r->noccupants ? &r->occupants[j] : NULL;
            ctl_table_cell(t, o ? o->uuid : NULL);
            ctl_table_cell(t, o ? o->conn : NULL);
            if (cols == 5) {
                char *line = o ? ctl_state_line(o->state) : NULL;
                ctl_table_cell(t, line);
                free(line);
            }
        }
    }
    ctl_table_print(c, t);
    ctl_table_free(t);
    if (c->tty)
        printf("%zu room%s, %" PRIu64 " presence%s\n", hn->total_channels,
               hn->total_channels == 1 ? "" : "s", hn->total_occupancy,
               hn->total_occupancy == 1 ? "" : "s");
}

static int cmd_here_now(struct ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"group", required_argument, NULL, 'g'},
        {"state", no_argument, NULL, OPT_STATE},
        {"no-uuids", no_argument, NULL, OPT_NO_UUIDS},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"offset", required_argument, NULL, OPT_OFFSET},
        CTL_COMMON_LONGOPTS,
    };
    struct ctl_targets t = {0};
    bool state = false, uuids = true;
    size_t limit = 0, offset = 0;
    int o, status = CTL_OK;
    bool stop = false;
    while (!stop && (o = ctl_getopt(c, argc, argv, "g:", longopts)) != -1) {
        switch (o) {
        case 'g':
            ctl_strv_push(&t.groups, optarg);
            break;
        case OPT_STATE:
            state = true;
            break;
        case OPT_NO_UUIDS:
            uuids = false;
            break;
        case OPT_LIMIT:
            status = ctl_parse_count(c, "--limit", optarg, &limit);
            stop = status != CTL_OK;
            break;
        case OPT_OFFSET:
            status = ctl_parse_count(c, "--offset", optarg, &offset);
            stop = status != CTL_OK;
            break;
        default: /* CTL_STOP: help, or a bad option */
            status = c->stop;
            stop = true;
            break;
        }
    }
    if (stop) {
        ctl_targets_close(&t);
        return status;
    }
    status = ctl_targets_open(c, argc, argv, 0, false, &t);
    if (status >= 0)
        return status;
    presence_here_now_t *hn = NULL;
    unsigned flags = (uuids ? PRESENCE_INCLUDE_UUIDS : 0u) | (state ? PRESENCE_INCLUDE_STATE : 0u);
    if (uuids && c->json) /* the PubNub-shaped document has no connection ids */
        flags |= PRESENCE_UUIDS_ONLY;
    int rc = presence_here_now(t.p, t.rooms.v, t.rooms.n, t.groups.v, t.groups.n, flags, limit,
                               offset, &hn);
    status = CTL_OK;
    if (rc < 0)
        status = ctl_fail_groups(c, t.p, rc, &t.rooms, &t.groups, NULL);
    else if (c->json)
        status = ctl_json_print(c, ctl_here_now_json(hn, uuids, state, false));
    else
        here_now_table(c, hn, uuids, state);
    presence_here_now_free(hn);
    ctl_targets_close(&t);
    return status;
}

const struct ctl_cmd ctl_cmd_here_now = {
    "here-now",
    cmd_here_now,
    "ROOM... [-g GROUP]... [--state] [--no-uuids] [--limit N] [--offset N]",
    "Show who is in the rooms (and in the rooms of the groups)",
    "  -g, --group G   include the rooms of group G (repeatable)\n"
    "      --state     include each presence's state\n"
    "      --no-uuids  occupancy only\n"
    "      --limit N   list at most N occupants per room (0 = all)\n"
    "      --offset N  skip the first N occupants of each room\n"
    "A room that does not exist has occupancy 0. --json prints PubNub's shape:\n"
    "  {\"total_channels\": N, \"total_occupancy\": N,\n"
    "   \"channels\": {\"ROOM\": {\"occupancy\": N, \"occupants\": [{\"uuid\": U, \"state\": "
    "{}}]}}}\n"
    "A uuid is the connection's user, or the connection id when it has none.\n",
};

/* ---- where-now, users ---------------------------------------------------------------- */

int ctl_print_strlist(const struct ctl *c, const presence_strlist_t *l, const char *header,
                      const char *key, const char *arg, const char *listkey)
{
    if (c->json) {
        json_t *doc = json_object(), *arr = json_array();
        for (size_t i = 0; i < l->count; i++)
            if (json_array_append_new(arr, ctl_json_str(l->items[i])) != 0)
                ctl_oom();
        if (key)
            ctl_json_set(doc, key, ctl_json_str(arg));
        ctl_json_set(doc, listkey, arr);
        return ctl_json_print(c, doc);
    }
    struct ctl_table *t = ctl_table_new("l", header, NULL);
    for (size_t i = 0; i < l->count; i++)
        ctl_table_cell(t, l->items[i]);
    ctl_table_print(c, t);
    ctl_table_free(t);
    return CTL_OK;
}

/* Commands taking exactly one name: where-now UUID, users ROOM. */
static int one_name_query(struct ctl *c, int argc, char **argv, const char *what, bool users)
{
    int status = ctl_no_options(c, argc, argv);
    if (status >= 0)
        return status;
    if (argc - optind != 1)
        return ctl_usage_error(c, argc == optind ? "expected %s" : "expected only %s", what);
    const char *name = argv[optind];
    presence_t *p = NULL;
    if (ctl_open(c, false, &p) != CTL_OK)
        return CTL_ERROR;
    presence_strlist_t *l = NULL;
    int rc = users ? presence_users(p, name, &l) : presence_where_now(p, name, &l);
    if (rc < 0)
        status = ctl_fail(c, rc, users ? "room" : "uuid", name, NULL);
    else if (users)
        status = ctl_print_strlist(c, l, "USER", "room", name, "users");
    else
        status = ctl_print_strlist(c, l, "ROOM", "uuid", name, "channels");
    presence_strlist_free(l);
    presence_close(p);
    return status;
}

static int cmd_where_now(struct ctl *c, int argc, char **argv)
{
    return one_name_query(c, argc, argv, "UUID", false);
}

static int cmd_users(struct ctl *c, int argc, char **argv)
{
    return one_name_query(c, argc, argv, "ROOM", true);
}

const struct ctl_cmd ctl_cmd_where_now = {
    "where-now",
    cmd_where_now,
    "UUID",
    "List the rooms where a user (or else a connection id) is present",
    "JSON: {\"uuid\": U, \"channels\": [ROOM...]}\n",
};

const struct ctl_cmd ctl_cmd_users = {
    "users",
    cmd_users,
    "ROOM",
    "List the unique users present in a room (anonymous presences excluded)",
    "JSON: {\"room\": R, \"users\": [USER...]}\n",
};
