/*
 * cmd_state.c -- presencectl: presence state. `get-state` reads it (read-only
 * attachment, presence_get_state) and `set-state` replaces it (presence_set_state)
 * in rooms given by name and through groups. A state the library rejects is
 * explained with jansson's parse error, so the operator sees where the JSON breaks.
 */
#include "ctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parses "NAME... -g GROUP..." after @nfixed leading positionals and attaches
 * (@write). Returns -1 to go on, else the exit status. */
static int open_targets(struct ctl *c, int argc, char **argv, int nfixed, const char *what,
                        bool write, struct ctl_targets *t)
{
    static const struct option longopts[] = {
        {"group", required_argument, NULL, 'g'},
        CTL_COMMON_LONGOPTS,
    };
    int o;
    while ((o = ctl_getopt(c, argc, argv, "g:", longopts)) != -1) {
        if (o != 'g') {
            ctl_targets_close(t);
            return c->stop;
        }
        ctl_strv_push(&t->groups, optarg);
    }
    if (argc - optind < nfixed) {
        ctl_targets_close(t);
        return ctl_usage_error(c, "expected %s", what);
    }
    return ctl_targets_open(c, argc, argv, nfixed, write, t);
}

/* ---- get-state ----------------------------------------------------------------------- */

static int cmd_get_state(struct ctl *c, int argc, char **argv)
{
    struct ctl_targets t = {0};
    int status = open_targets(c, argc, argv, 1, "UUID (ROOM | -g GROUP)...", false, &t);
    if (status >= 0)
        return status;
    const char *uuid = argv[optind];
    presence_state_list_t *l = NULL;
    int rc = presence_get_state(t.p, t.rooms.v, t.rooms.n, t.groups.v, t.groups.n, uuid, &l);
    status = CTL_OK;
    if (rc < 0) {
        status = ctl_fail_groups(c, t.p, rc, &t.rooms, &t.groups, "uuid", uuid, NULL);
    } else if (c->json) {
        json_t *doc = json_object(), *channels = json_object();
        ctl_json_set(doc, "uuid", ctl_json_str(uuid));
        for (size_t i = 0; i < l->count; i++) {
            json_t *sv = ctl_json_state(l->items[i].state);
            ctl_json_set(channels, l->items[i].room, sv ? sv : json_null());
        }
        ctl_json_set(doc, "channels", channels);
        status = ctl_json_print(c, doc);
    } else {
        struct ctl_table *tab = ctl_table_new("ll", "ROOM", "STATE", NULL);
        for (size_t i = 0; i < l->count; i++) {
            char *line = ctl_state_line(l->items[i].state);
            ctl_table_cell(tab, l->items[i].room);
            ctl_table_cell(tab, line);
            free(line);
        }
        ctl_table_print(c, tab);
        ctl_table_free(tab);
    }
    presence_state_list_free(l);
    ctl_targets_close(&t);
    return status;
}

const struct ctl_cmd ctl_cmd_get_state = {
    "get-state",
    cmd_get_state,
    "UUID (ROOM | -g GROUP)...",
    "Show the state of a user (or connection id) in rooms and groups",
    "  -g, --group G   include the rooms of group G (repeatable)\n"
    "Lists the rooms where UUID is present, with its state (empty when none is set).\n"
    "JSON: {\"uuid\": U, \"channels\": {\"ROOM\": {...} or null}}\n",
};

/* ---- set-state ----------------------------------------------------------------------- */

/* Why @json is not acceptable state, from jansson's point of view. */
static int explain_bad_state(const struct ctl *c, const char *json)
{
    json_error_t err;
    json_t *doc = json_loads(json, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!doc)
        return ctl_error(c, "%s: %s (line %d, column %d)", presence_strerror(PRESENCE_ESTATEJSON),
                         err.text, err.line, err.column);
    static const char *const kinds[] = {"an object", "an array", "a string", "an integer",
                                        "a real",    "true",     "false",    "null"};
    json_type type = json_typeof(doc);
    json_decref(doc);
    if ((size_t) type < sizeof kinds / sizeof kinds[0])
        return ctl_error(c, "%s (got %s)", presence_strerror(PRESENCE_ESTATEJSON), kinds[type]);
    return ctl_error(c, "%s", presence_strerror(PRESENCE_ESTATEJSON));
}

static int cmd_set_state(struct ctl *c, int argc, char **argv)
{
    struct ctl_targets t = {0};
    int status = open_targets(c, argc, argv, 2, "CONN JSON (ROOM | -g GROUP)...", true, &t);
    if (status >= 0)
        return status;
    const char *conn = argv[optind], *json = argv[optind + 1];
    int rc = presence_set_state(t.p, t.rooms.v, t.rooms.n, t.groups.v, t.groups.n, conn, json);
    status = CTL_OK;
    if (rc == PRESENCE_ESTATEJSON) {
        status = explain_bad_state(c, json);
    } else if (rc == PRESENCE_ESTATESIZE) {
        presence_options_t opts;
        presence_get_options(t.p, &opts);
        status = ctl_error(c, "%s (%zu > %u bytes)", presence_strerror(rc), strlen(json),
                           (unsigned) opts.state_max);
    } else if (rc < 0) {
        status = ctl_fail_groups(c, t.p, rc, &t.rooms, &t.groups, "connection", conn, NULL);
    } else if (c->json) {
        json_t *doc = json_object();
        ctl_json_set(doc, "conn", ctl_json_str(conn));
        ctl_json_set(doc, "updated", json_integer(rc));
        status = ctl_json_print(c, doc);
    } else if (c->tty) {
        printf("Updated %d presence%s of '%s'.\n", rc, rc == 1 ? "" : "s", conn);
    } else {
        printf("%d\n", rc);
    }
    ctl_targets_close(&t);
    return status;
}

const struct ctl_cmd ctl_cmd_set_state = {
    "set-state",
    cmd_set_state,
    "CONN JSON (ROOM | -g GROUP)...",
    "Replace a connection's state in rooms and groups",
    "  -g, --group G   include the rooms of group G (repeatable)\n"
    "JSON must be an object; it replaces the whole state. Rooms where CONN is not\n"
    "present are skipped. Prints the number of presences updated.\n"
    "\n"
    "Example: presencectl set-state conn-1 '{\"mood\":\"busy\"}' lobby -g public\n",
};
