/*
 * ctl.h -- presencectl: what the files of the inspector share. The run context
 * (struct ctl), the command table entry (struct ctl_cmd) and the commands each
 * file defines, option and value parsing (args.c), attaching a segment and
 * reporting errors (attach.c), output: tables, key/value lists and JSON (out.c),
 * and what the live views share: signals, clocks, replaying the event ring
 * (live.c) and the terminal of `top` (term.c).
 *
 * Conventions: a command is `int run(struct ctl *c, int argc, char **argv)`
 * with argv[0] the command's name; it returns the exit status (CTL_OK,
 * CTL_ERROR with a message on stderr, CTL_USAGE with the usage on stderr).
 */
#ifndef PRESENCECTL_CTL_H
#define PRESENCECTL_CTL_H

#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "presence.h"

#define CTL_PROG "presencectl"

/* Exit statuses. */
enum { CTL_OK = 0, CTL_ERROR = 1, CTL_USAGE = 2 };

/* ctl_getopt(): the command must return c->stop (help printed, or a usage error). */
#define CTL_STOP (-2)

/* Option values of the long-only options every command accepts. */
enum { CTL_OPT_JSON = 0x100, CTL_OPT_FIRST_FREE = 0x110 };

/* The entries every command's long-option table ends with, terminator included. */
/* clang-format off */
#define CTL_COMMON_LONGOPTS \
    {"help", no_argument, NULL, 'h'}, {"json", no_argument, NULL, CTL_OPT_JSON}, {NULL, 0, NULL, 0}
/* clang-format on */

struct ctl;

/* One command: its name, entry point and help (synopsis, one-line summary, body). */
struct ctl_cmd {
    const char *name;
    int (*run)(struct ctl *c, int argc, char **argv);
    const char *synopsis; /* arguments after the name, e.g. "ROOM CONN [--user U]" */
    const char *summary;  /* one line for `presencectl --help` */
    const char *help;     /* the rest of `presencectl COMMAND --help` (may be "") */
};

/* The run context. */
struct ctl {
    const char *segment;       /* -s, else $PRESENCE_SEGMENT, else "default" */
    const struct ctl_cmd *cmd; /* the command being run (help, messages) */
    const char *cmd_name;      /* its name in messages ("group add") */
    bool json;                 /* --json */
    bool tty;                  /* table mode: stdout is a terminal, or PRESENCE_FORCE_TTY=1 */
    bool color;                /* stdout really is a terminal and colours are welcome */
    int stop;                  /* exit status when ctl_getopt() answered CTL_STOP */
};

/* ---- commands (cmd_*.c) -------------------------------------------------------------- */
extern const struct ctl_cmd ctl_cmd_create, ctl_cmd_destroy, ctl_cmd_stat, ctl_cmd_check;
extern const struct ctl_cmd ctl_cmd_rooms, ctl_cmd_here_now, ctl_cmd_where_now, ctl_cmd_users;
extern const struct ctl_cmd ctl_cmd_get_state, ctl_cmd_set_state;
extern const struct ctl_cmd ctl_cmd_join, ctl_cmd_leave, ctl_cmd_touch, ctl_cmd_leave_all;
extern const struct ctl_cmd ctl_cmd_prune, ctl_cmd_prune_rooms;
extern const struct ctl_cmd ctl_cmd_group, ctl_cmd_dump;
extern const struct ctl_cmd ctl_cmd_watch, ctl_cmd_top, ctl_cmd_procs;

/* ---- shared by commands (cmd_query.c) ------------------------------------------------ */

/* The PubNub-shaped here-now document: {"total_channels", "total_occupancy",
 * "channels": {ROOM: {"occupancy", "occupants": [{"uuid"[, "conn"][, "state"]}]}}}.
 * Occupants are listed when @uuids; "state" (an object) when @state and set;
 * "conn" (the connection id) when @conns. */
json_t *ctl_here_now_json(const presence_here_now_t *hn, bool uuids, bool state, bool conns);
/* A one-column list: a table with @header, raw lines, or JSON {key: arg, listkey: [...]}
 * (key NULL: no such member). */
int ctl_print_strlist(const struct ctl *c, const presence_strlist_t *l, const char *header,
                      const char *key, const char *arg, const char *listkey);

/* ---- options and values (args.c) ----------------------------------------------------- */

/* getopt_long() over a command's argv (argv[0] = its name), GNU order (options may
 * follow positionals). Handles -h/--help (prints the help on stdout) and --json
 * itself, and reports bad options; then answers CTL_STOP with c->stop set. */
int ctl_getopt(struct ctl *c, int argc, char **argv, const char *shortopts,
               const struct option *longopts);
/* For a command with no options of its own: ctl_getopt() with the common ones only.
 * Returns -1 to go on, else the exit status (help printed, or a usage error). */
int ctl_no_options(struct ctl *c, int argc, char **argv);
/* Prints "presencectl: CMD: <message>" and the usage line on stderr; returns CTL_USAGE. */
int ctl_usage_error(struct ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The command's help (stdout) or usage (stderr, with a pointer to --help). */
void ctl_print_help(const struct ctl *c, const struct ctl_cmd *cmd);
void ctl_print_usage(const struct ctl *c, const struct ctl_cmd *cmd);

/* Value parsers: 0, or a usage error already reported (they return CTL_USAGE). */
int ctl_parse_u32(struct ctl *c, const char *opt, const char *s, uint32_t *out);
int ctl_parse_size(struct ctl *c, const char *opt, const char *s, uint64_t *out);
int ctl_parse_count(struct ctl *c, const char *opt, const char *s, size_t *out);
int ctl_parse_duration_ms(struct ctl *c, const char *opt, const char *s, uint64_t *out);
int ctl_parse_mode(struct ctl *c, const char *opt, const char *s, uint32_t *out);
int ctl_parse_u64(struct ctl *c, const char *opt, const char *s, uint64_t *out); /* decimal */

/* A growing array of borrowed strings (repeated -g options, room lists). */
struct ctl_strv {
    const char **v;
    size_t n, cap;
};
void ctl_strv_push(struct ctl_strv *sv, const char *s);
void ctl_strv_free(struct ctl_strv *sv);

/* ---- attaching and errors (attach.c) ------------------------------------------------- */

/* Attaches c->segment: read-only (PRESENCE_RDONLY, never writes) or read-write.
 * On failure prints "presencectl: segment 'x' ..." and returns CTL_ERROR. */
int ctl_open(struct ctl *c, bool write, presence_t **out);
/* For a command with no options of its own and no arguments: ctl_no_options(), a
 * usage error for an argument, then ctl_open() read-only. Returns -1 when attached
 * (*out set), else the exit status. */
int ctl_open_no_args(struct ctl *c, int argc, char **argv, presence_t **out);
/* What here-now, get-state and set-state work on: rooms named on the command line,
 * groups from -g options, and the attachment. */
struct ctl_targets {
    struct ctl_strv rooms, groups;
    presence_t *p;
};
/* After the options (the caller pushed the -g ones to t->groups): the positionals from
 * argv[optind + @skip] on are rooms, and at least one room or group is needed; then
 * ctl_open(). Returns -1 to go on, else the exit status (all freed). */
int ctl_targets_open(struct ctl *c, int argc, char **argv, int skip, bool write,
                     struct ctl_targets *t);
/* Detaches and frees the lists. */
void ctl_targets_close(struct ctl_targets *t);
/* "presencectl: CMD: <message>" on stderr. Returns CTL_ERROR. */
int ctl_error(const struct ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* ctl_error() without the status: the message line of ctl_error() and ctl_usage_error(). */
void ctl_verror(const struct ctl *c, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* The variable arguments of ctl_fail() and ctl_table_new() as an array and its length
 * (no va_arg: the compiler sizes the list). */
#define CTL_STRS(...)                   \
    (const char *const[]){__VA_ARGS__}, \
        sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)

/* Reports a failed call (rc < 0) of the command. When rc is a name error, the
 * name arguments (label, value pairs ended by NULL, e.g. "room", room, NULL) are
 * checked one by one (presence_validate_name()) so the message names the bad one.
 * Returns CTL_ERROR. */
#define ctl_fail(c, rc, ...) ctl_fail_names((c), NULL, (rc), NULL, NULL, CTL_STRS(__VA_ARGS__))
/* ctl_fail() for a call that took rooms and groups (and the name pairs after them):
 * PRESENCE_ENOGROUP names the missing group, a name error the bad name. */
#define ctl_fail_groups(c, p, rc, rooms, groups, ...) \
    ctl_fail_names((c), (p), (rc), (rooms), (groups), CTL_STRS(__VA_ARGS__))
/* What both expand to: @names holds @n strings, (label, value) pairs up to a NULL
 * label; @p, @rooms and @groups may be NULL. */
int ctl_fail_names(const struct ctl *c, presence_t *p, int rc, const struct ctl_strv *rooms,
                   const struct ctl_strv *groups, const char *const *names, size_t n);
/* Out of memory in the tool itself: message and exit(1). */
_Noreturn void ctl_oom(void);
void *ctl_xmalloc(size_t n);
void *ctl_xrealloc(void *ptr, size_t n);
char *ctl_xstrdup(const char *s);
char *ctl_xvasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* ---- output (out.c) ------------------------------------------------------------------ */

/* Decides table/raw mode and colours from stdout and the environment. */
void ctl_out_init(struct ctl *c);

/* A table: aligned columns with a header on a terminal, tab-separated lines with no
 * header otherwise. align: one char per column, 'l' or 'r'. */
struct ctl_table;
/* ctl_table_new(align, "HEADER", ..., NULL): one header per column. */
#define ctl_table_new(align, ...) ctl_table_new_array((align), CTL_STRS(__VA_ARGS__))
struct ctl_table *ctl_table_new_array(const char *align, const char *const *headers, size_t n);
void ctl_table_cell(struct ctl_table *t, const char *s); /* NULL = empty */
void ctl_table_cellf(struct ctl_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ctl_table_print(const struct ctl *c, const struct ctl_table *t);
size_t ctl_table_rows(const struct ctl_table *t);
void ctl_table_free(struct ctl_table *t);

/* A key/value list: "Label:  value" aligned on a terminal, "key<TAB>value" otherwise. */
struct ctl_kv;
struct ctl_kv *ctl_kv_new(void);
void ctl_kv_add(struct ctl_kv *kv, const char *key, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void ctl_kv_print(const struct ctl *c, const struct ctl_kv *kv);
void ctl_kv_free(struct ctl_kv *kv);

/* Prints a JSON document (reference stolen): indented on a terminal, compact
 * otherwise, one trailing newline. Returns CTL_OK or CTL_ERROR. */
int ctl_json_print(const struct ctl *c, json_t *doc);
/* json_object_set_new() that dies on out of memory. */
void ctl_json_set(json_t *obj, const char *key, json_t *value);
json_t *ctl_json_str(const char *s); /* a JSON string, or null when s is NULL / not UTF-8 */
json_t *ctl_json_u64(uint64_t v);
/* The stored state text as a JSON value (an object), or NULL when absent/unparsable. */
json_t *ctl_json_state(const char *text);
/* The state re-encoded compact, on one line (caller frees), or NULL when absent. */
char *ctl_state_line(const char *text);

/* A plain message line on stdout for a terminal ("joined"), or the raw form. */
void ctl_say(const struct ctl *c, const char *human, const char *raw);

/* Columns a UTF-8 string takes on a terminal (wide characters count 2). */
size_t ctl_display_width(const char *s);

/* Human formatting into a caller buffer (returns buf). */
const char *ctl_fmt_bytes(char *buf, size_t n, uint64_t bytes);
const char *ctl_fmt_ms(char *buf, size_t n, uint64_t ms);
/* A CLOCK_REALTIME time in ns as ISO-8601 UTC with milliseconds:
 * "2024-05-01T12:00:00.123Z" (needs 25 bytes). */
const char *ctl_fmt_time(char *buf, size_t n, uint64_t realtime_ns);
/* How long ago a CLOCK_REALTIME time was: "0.25 s ago", "3 min ago", "never" (0). */
const char *ctl_fmt_ago(char *buf, size_t n, uint64_t realtime_ns);

/* ---- live views (live.c, term.c) ---------------------------------------------------- */

/* SIGINT and SIGTERM (and SIGWINCH when @winch) set flags instead of killing us;
 * system calls they interrupt fail with EINTR, so waits end at once. */
void ctl_live_signals(bool winch);
bool ctl_live_stopped(void);         /* SIGINT or SIGTERM arrived */
bool ctl_live_resized(void);         /* SIGWINCH arrived since the last call (clears it) */
void ctl_live_sleep_ms(unsigned ms); /* returns early on a signal */
uint64_t ctl_now_ns(void);           /* CLOCK_REALTIME */
uint64_t ctl_mono_ns(void);          /* CLOCK_MONOTONIC */
/* Subscribes (on any attachment) from the oldest event still in the ring, or
 * from now when the ring is empty. Returns 0 or the library's error. */
int ctl_sub_oldest(presence_t *p, const char *room, presence_sub_t **out);

/* The terminal of an interactive view: raw input (no echo, no line buffering;
 * Ctrl-C still signals), the alternate screen, the cursor hidden. Restored by
 * ctl_term_leave() and, should the process exit first, by an atexit handler. */
bool ctl_term_enter(void); /* false when stdin or stdout is not a terminal */
void ctl_term_leave(void);
/* Waits up to @ms for a key; returns it (0..255), or -1 (timeout, a signal, no input). */
int ctl_term_key(unsigned ms);
/* The terminal's size (24x80 when unknown). */
void ctl_term_size(unsigned *rows, unsigned *cols);

/* Flushes stdout; a write error (EPIPE, ENOSPC) is reported and gives CTL_ERROR. */
int ctl_out_finish(int status);

#endif /* PRESENCECTL_CTL_H */
