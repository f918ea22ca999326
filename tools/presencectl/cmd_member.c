/*
 * cmd_member.c -- presencectl: the membership operations, on a read-write
 * attachment: `join` (presence_join_ex), `leave`, `touch`, `leave-all`, and the
 * expiry passes `prune` and `prune-rooms`. Each prints its result: a sentence on
 * a terminal, one word or number when piped, an object with --json. An absent
 * presence or connection is a result, not an error (exit 0).
 */
#include "ctl.h"

#include <inttypes.h>
#include <stdio.h>

enum { OPT_USER = CTL_OPT_FIRST_FREE, OPT_TIMEOUT, OPT_MAX_AGE };

/* Room for a result sentence that quotes a room and a connection name. */
enum { SENTENCE_MAX = 128 + 2 * PRESENCE_NAME_MAX };

/* Commands with no options of their own and exactly @n positionals, [ROOM] CONN or
 * none (@what in the usage error): attaches read-write and makes the one call.
 * Returns -1 with the call's result (>= 0) in *result, else the exit status. */
static int member_call(struct ctl *c, int argc, char **argv, int n, const char *what,
                       int (*call)(presence_t *p, char **args), int *result)
{
    int status = ctl_no_options(c, argc, argv);
    if (status >= 0)
        return status;
    if (argc - optind != n)
        return ctl_usage_error(c, "expected %s", what);
    char **args = argv + optind;
    presence_t *p = NULL;
    if (ctl_open(c, true, &p) != CTL_OK)
        return CTL_ERROR;
    int rc = call(p, args);
    presence_close(p);
    if (rc < 0 && n == 2)
        return ctl_fail(c, rc, "room", args[0], "connection", args[1], NULL);
    if (rc < 0 && n == 1)
        return ctl_fail(c, rc, "connection", args[0], NULL);
    if (rc < 0)
        return ctl_fail(c, rc, NULL);
    *result = rc;
    return -1;
}

/* {"room": R, "conn": C}, "room" left out when NULL: what a result is about. */
static json_t *about(const char *room, const char *conn)
{
    json_t *doc = json_object();
    if (room)
        ctl_json_set(doc, "room", ctl_json_str(room));
    ctl_json_set(doc, "conn", ctl_json_str(conn));
    return doc;
}

/* A result: @doc with KEY: @value under --json, else @sentence on a terminal and
 * @word when piped. Takes the references @doc and @value. */
static int print_result(const struct ctl *c, json_t *doc, const char *key, json_t *value,
                        const char *sentence, const char *word)
{
    if (c->json) {
        ctl_json_set(doc, key, value);
        return ctl_json_print(c, doc);
    }
    json_decref(doc);
    json_decref(value);
    ctl_say(c, sentence, word);
    return CTL_OK;
}

/* A count result: "Removed 3 presences of 'c'." / "3" / {"...": 3}. */
static int print_count(const struct ctl *c, json_t *doc, const char *key, int n,
                       const char *sentence)
{
    char word[16];
    snprintf(word, sizeof word, "%d", n);
    return print_result(c, doc, key, json_integer(n), sentence, word);
}

/* ---- join ---------------------------------------------------------------------------- */

static int cmd_join(struct ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"user", required_argument, NULL, OPT_USER},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        CTL_COMMON_LONGOPTS,
    };
    const char *user = NULL;
    uint64_t timeout_ms = 0;
    int o;
    while ((o = ctl_getopt(c, argc, argv, "u:t:", longopts)) != -1) {
        if (o == OPT_USER || o == 'u') {
            user = optarg;
        } else if (o == OPT_TIMEOUT || o == 't') {
            if (ctl_parse_duration_ms(c, "--timeout", optarg, &timeout_ms) != 0)
                return CTL_USAGE;
        } else {
            return c->stop;
        }
    }
    if (argc - optind != 2)
        return ctl_usage_error(c, "expected ROOM CONN");
    const char *room = argv[optind], *conn = argv[optind + 1];
    presence_t *p = NULL;
    if (ctl_open(c, true, &p) != CTL_OK)
        return CTL_ERROR;
    int rc = presence_join_ex(p, room, conn, user, timeout_ms, 0, NULL);
    int status = CTL_OK;
    if (rc == PRESENCE_EUSERCONFLICT)
        status = ctl_error(c, "connection '%s' is already joined with a different user", conn);
    else if (rc < 0)
        status = ctl_fail(c, rc, "room", room, "connection", conn, "user", user, NULL);
    presence_close(p);
    if (status != CTL_OK)
        return status;
    const char *word = rc == PRESENCE_REFRESHED ? "refreshed" : "joined";
    char sentence[SENTENCE_MAX];
    snprintf(sentence, sizeof sentence,
             rc == PRESENCE_REFRESHED ? "Refreshed: '%s' was already in '%s'."
                                      : "Joined: '%s' is in '%s'.",
             conn, room);
    return print_result(c, about(room, conn), "result", ctl_json_str(word), sentence, word);
}

const struct ctl_cmd ctl_cmd_join = {
    "join",
    cmd_join,
    "ROOM CONN [--user U] [--timeout S]",
    "Add a presence (the room and the connection are created on first use)",
    "  -u, --user U      the connection's user (default: anonymous)\n"
    "  -t, --timeout S   the connection's own timeout when this join creates it\n"
    "                    (default: the segment's max age; ms/s/m/h suffixes)\n"
    "Prints 'joined', or 'refreshed' when it was already present (last seen updated).\n"
    "The connection is not bound to this short-lived process: it expires unless\n"
    "touched.\n",
};

/* ---- leave --------------------------------------------------------------------------- */

static int call_leave(presence_t *p, char **args)
{
    return presence_leave(p, args[0], args[1]);
}

static int cmd_leave(struct ctl *c, int argc, char **argv)
{
    int rc = 0;
    int status = member_call(c, argc, argv, 2, "ROOM CONN", call_leave, &rc);
    if (status >= 0)
        return status;
    const char *room = argv[optind], *conn = argv[optind + 1];
    char sentence[SENTENCE_MAX];
    snprintf(sentence, sizeof sentence,
             rc == 1 ? "Removed: '%s' left '%s'." : "Absent: '%s' was not in '%s'.", conn, room);
    return print_result(c, about(room, conn), "removed", json_boolean(rc == 1), sentence,
                        rc == 1 ? "removed" : "absent");
}

const struct ctl_cmd ctl_cmd_leave = {
    "leave",
    cmd_leave,
    "ROOM CONN",
    "Remove a presence",
    "Prints 'removed', or 'absent' when it was not there (not an error).\n",
};

/* ---- touch --------------------------------------------------------------------------- */

static int call_touch(presence_t *p, char **args)
{
    return presence_touch(p, args[0]);
}

static int cmd_touch(struct ctl *c, int argc, char **argv)
{
    int rc = 0;
    int status = member_call(c, argc, argv, 1, "CONN", call_touch, &rc);
    if (status >= 0)
        return status;
    const char *conn = argv[optind];
    bool touched = rc != PRESENCE_NOT_PRESENT;
    char sentence[SENTENCE_MAX];
    snprintf(sentence, sizeof sentence,
             touched ? "Touched '%s'." : "Not present: no connection '%s' (join it again).", conn);
    return print_result(c, about(NULL, conn), "touched", json_boolean(touched), sentence,
                        touched ? "touched" : "not-present");
}

const struct ctl_cmd ctl_cmd_touch = {
    "touch",
    cmd_touch,
    "CONN",
    "Refresh a connection's last-seen time (a heartbeat)",
    "Prints 'touched', or 'not-present' when the connection is unknown (exit 0).\n",
};

/* ---- leave-all ----------------------------------------------------------------------- */

static int call_leave_all(presence_t *p, char **args)
{
    return presence_leave_all(p, args[0]);
}

static int cmd_leave_all(struct ctl *c, int argc, char **argv)
{
    int rc = 0;
    int status = member_call(c, argc, argv, 1, "CONN", call_leave_all, &rc);
    if (status >= 0)
        return status;
    const char *conn = argv[optind];
    char sentence[SENTENCE_MAX];
    snprintf(sentence, sizeof sentence, "Removed %d presence%s of '%s'.", rc, rc == 1 ? "" : "s",
             conn);
    return print_count(c, about(NULL, conn), "removed", rc, sentence);
}

const struct ctl_cmd ctl_cmd_leave_all = {
    "leave-all",
    cmd_leave_all,
    "CONN",
    "Remove every presence of a connection",
    "Prints the number of presences removed (0 for an unknown connection).\n",
};

/* ---- prune, prune-rooms -------------------------------------------------------------- */

static int cmd_prune(struct ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"max-age", required_argument, NULL, OPT_MAX_AGE},
        CTL_COMMON_LONGOPTS,
    };
    uint64_t max_age_ms = 0;
    int o;
    while ((o = ctl_getopt(c, argc, argv, "", longopts)) != -1) {
        if (o != OPT_MAX_AGE)
            return c->stop;
        if (ctl_parse_duration_ms(c, "--max-age", optarg, &max_age_ms) != 0)
            return CTL_USAGE;
        if (max_age_ms == 0)
            return ctl_usage_error(c, "--max-age: must be more than 0 ms");
    }
    if (optind < argc)
        return ctl_usage_error(c, "unexpected argument '%s'", argv[optind]);
    presence_t *p = NULL;
    if (ctl_open(c, true, &p) != CTL_OK)
        return CTL_ERROR;
    int rc = presence_prune(p, max_age_ms);
    presence_close(p);
    if (rc < 0)
        return ctl_fail(c, rc, NULL);
    json_t *doc = json_object();
    ctl_json_set(doc, "max_age_ms", ctl_json_u64(max_age_ms));
    char sentence[SENTENCE_MAX];
    snprintf(sentence, sizeof sentence, "Removed %d expired connection%s.", rc, rc == 1 ? "" : "s");
    return print_count(c, doc, "removed", rc, sentence);
}

const struct ctl_cmd ctl_cmd_prune = {
    "prune",
    cmd_prune,
    "[--max-age S]",
    "Remove the connections not seen for longer than their timeout",
    "  --max-age S   timeout of connections that have none of their own\n"
    "                (default: the segment's max age; ms/s/m/h suffixes)\n"
    "Prints the number of connections removed (each leave is a timeout event).\n",
};

static int call_prune_rooms(presence_t *p, char **args)
{
    (void) args;
    return presence_prune_rooms(p);
}

static int cmd_prune_rooms(struct ctl *c, int argc, char **argv)
{
    int rc = 0;
    int status = member_call(c, argc, argv, 0, "no arguments", call_prune_rooms, &rc);
    if (status >= 0)
        return status;
    char sentence[SENTENCE_MAX];
    snprintf(sentence, sizeof sentence, "Removed %d empty room%s.", rc, rc == 1 ? "" : "s");
    return print_count(c, json_object(), "removed", rc, sentence);
}

const struct ctl_cmd ctl_cmd_prune_rooms = {
    "prune-rooms",
    cmd_prune_rooms,
    "",
    "Remove every empty room",
    "Prints the number of rooms removed.\n",
};
