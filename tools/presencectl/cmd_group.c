/*
 * cmd_group.c -- presencectl: `group add|remove|list|delete`, named sets of rooms
 * (presence_group_*). `list` attaches read-only; the others read-write.
 */
#include "ctl.h"

#include <stdio.h>
#include <string.h>

enum { G_ADD, G_REMOVE, G_LIST, G_DELETE };

static const struct {
    const char *name, *msgname;
    int nmin, nmax; /* positionals after the subcommand: GROUP [ROOM...] */
} subs[] = {
    [G_ADD] = {"add", "group add", 2, -1},
    [G_REMOVE] = {"remove", "group remove", 2, -1},
    [G_LIST] = {"list", "group list", 1, 1},
    [G_DELETE] = {"delete", "group delete", 1, 1},
};

/* add / remove: "Added 2 rooms to 'g'." / "2" / {"group": g, "added": 2}. */
static int change_rooms(struct ctl *c, presence_t *p, int sub, const char *group, int nrooms,
                        char **rooms)
{
    struct ctl_strv rv = {0};
    for (int i = 0; i < nrooms; i++)
        ctl_strv_push(&rv, rooms[i]);
    int rc = sub == G_ADD ? presence_group_add(p, group, rv.v, rv.n)
                          : presence_group_remove(p, group, rv.v, rv.n);
    int status = CTL_OK;
    if (rc == PRESENCE_ENOGROUP)
        status = ctl_error(c, "no such group '%s'", group);
    else if (rc == PRESENCE_EGROUPFULL)
        status = ctl_error(c, "group '%s' would hold more than %d rooms; nothing added", group,
                           PRESENCE_GROUP_MAX_ROOMS);
    else if (rc < 0)
        status = ctl_fail_groups(c, p, rc, &rv, NULL, "group", group, NULL);
    ctl_strv_free(&rv);
    if (rc < 0)
        return status;
    const char *key = sub == G_ADD ? "added" : "removed";
    if (c->json) {
        json_t *doc = json_object();
        ctl_json_set(doc, "group", ctl_json_str(group));
        ctl_json_set(doc, key, json_integer(rc));
        return ctl_json_print(c, doc);
    }
    if (c->tty)
        printf(sub == G_ADD ? "Added %d room%s to '%s'.\n" : "Removed %d room%s from '%s'.\n", rc,
               rc == 1 ? "" : "s", group);
    else
        printf("%d\n", rc);
    return CTL_OK;
}

static int cmd_group(struct ctl *c, int argc, char **argv)
{
    int status = ctl_no_options(c, argc, argv);
    if (status >= 0)
        return status;
    if (optind >= argc)
        return ctl_usage_error(c, "expected add, remove, list or delete");
    int sub = -1;
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (strcmp(argv[optind], subs[i].name) == 0)
            sub = (int) i;
    if (sub < 0)
        return ctl_usage_error(c, "unknown subcommand '%s' (add, remove, list or delete)",
                               argv[optind]);
    c->cmd_name = subs[sub].msgname;
    int npos = argc - optind - 1;
    if (npos < subs[sub].nmin || (subs[sub].nmax >= 0 && npos > subs[sub].nmax))
        return ctl_usage_error(c, subs[sub].nmax < 0 ? "expected GROUP ROOM..." : "expected GROUP");
    const char *group = argv[optind + 1];
    presence_t *p = NULL;
    if (ctl_open(c, sub != G_LIST, &p) != CTL_OK)
        return CTL_ERROR;
    status = CTL_OK;
    if (sub == G_ADD || sub == G_REMOVE) {
        status = change_rooms(c, p, sub, group, npos - 1, argv + optind + 2);
    } else if (sub == G_LIST) {
        presence_strlist_t *l = NULL;
        int rc = presence_group_list(p, group, &l);
        if (rc == PRESENCE_ENOGROUP)
            status = ctl_error(c, "no such group '%s'", group);
        else if (rc < 0)
            status = ctl_fail(c, rc, "group", group, NULL);
        else
            status = ctl_print_strlist(c, l, "ROOM", "group", group, "rooms");
        presence_strlist_free(l);
    } else {
        int rc = presence_group_delete(p, group);
        if (rc < 0) {
            status = ctl_fail(c, rc, "group", group, NULL);
        } else if (c->json) {
            json_t *doc = json_object();
            ctl_json_set(doc, "group", ctl_json_str(group));
            ctl_json_set(doc, "deleted", json_boolean(rc == 1));
            status = ctl_json_print(c, doc);
        } else if (c->tty) {
            printf(rc == 1 ? "Deleted group '%s'.\n" : "Absent: no group '%s'.\n", group);
        } else {
            puts(rc == 1 ? "deleted" : "absent");
        }
    }
    presence_close(p);
    return status;
}

const struct ctl_cmd ctl_cmd_group = {
    "group",
    cmd_group,
    "(add GROUP ROOM... | remove GROUP ROOM... | list GROUP | delete GROUP)",
    "Manage groups (named sets of rooms)",
    "  add GROUP ROOM...      add rooms (creating the group); prints how many were new\n"
    "  remove GROUP ROOM...   remove rooms; prints how many were removed\n"
    "  list GROUP             the group's rooms\n"
    "  delete GROUP           delete the group; prints 'deleted' or 'absent'\n"
    "Rooms need not exist. A group holds at most 2000 rooms. Groups cannot be listed:\n"
    "the library has no call that enumerates them.\n",
};
