/*
 * attach.c -- presencectl: attaching the segment (read-only for queries, so an
 * inspector can never write to a live registry; read-write for the commands that
 * change it) and turning library errors into messages on stderr that name the
 * segment, the command and the reason (from presence_strerror()). Also the
 * tool's own out-of-memory policy: report and exit 1.
 */
#include "ctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- memory -------------------------------------------------------------------------- */

_Noreturn void ctl_oom(void)
{
    fprintf(stderr, "%s: out of memory\n", CTL_PROG);
    exit(CTL_ERROR);
}

void *ctl_xmalloc(size_t n)
{
    void *m = malloc(n ? n : 1);
    if (!m)
        ctl_oom();
    return m;
}

void *ctl_xrealloc(void *ptr, size_t n)
{
    void *m = realloc(ptr, n ? n : 1);
    if (!m)
        ctl_oom();
    return m;
}

char *ctl_xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        ctl_oom();
    return d;
}

char *ctl_xvasprintf(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        ctl_oom();
    return s;
}

/* ---- attaching ----------------------------------------------------------------------- */

int ctl_open(struct ctl *c, bool write, presence_t **out)
{
    presence_options_t opts;
    presence_options_init(&opts);
    /* Inspecting another user's segment is fine when the file mode lets us read it;
     * changing it is not done behind its owner's back. */
    opts.flags = write ? 0 : (PRESENCE_RDONLY | PRESENCE_ANY_OWNER);
    int rc = presence_open(c->segment, &opts, out);
    if (rc == 0)
        return CTL_OK;
    if (rc == -ENOENT)
        fprintf(stderr, "%s: segment '%s' does not exist\n", CTL_PROG, c->segment);
    else
        fprintf(stderr, "%s: segment '%s': %s\n", CTL_PROG, c->segment, presence_strerror(rc));
    return CTL_ERROR;
}

int ctl_open_no_args(struct ctl *c, int argc, char **argv, presence_t **out)
{
    int status = ctl_no_options(c, argc, argv);
    if (status >= 0)
        return status;
    if (optind < argc)
        return ctl_usage_error(c, "unexpected argument '%s'", argv[optind]);
    return ctl_open(c, false, out) == CTL_OK ? -1 : CTL_ERROR;
}

int ctl_targets_open(struct ctl *c, int argc, char **argv, int skip, bool write,
                     struct ctl_targets *t)
{
    for (int i = optind + skip; i < argc; i++)
        ctl_strv_push(&t->rooms, argv[i]);
    int status = -1;
    if (!t->rooms.n && !t->groups.n)
        status = ctl_usage_error(c, "expected at least one ROOM or -g GROUP");
    else if (ctl_open(c, write, &t->p) != CTL_OK)
        status = CTL_ERROR;
    if (status >= 0)
        ctl_targets_close(t);
    return status;
}

void ctl_targets_close(struct ctl_targets *t)
{
    presence_close(t->p);
    t->p = NULL;
    ctl_strv_free(&t->rooms);
    ctl_strv_free(&t->groups);
}

/* ---- errors -------------------------------------------------------------------------- */

/* The message is formatted apart and written with the prefix in one call. (That no
 * vfprintf() and no va_arg() run on a va_list started here also keeps clang-tidy 14
 * quiet: checking several files in one run, it misses va_start() in all but the
 * first and calls the va_list uninitialized.) */
void ctl_verror(const struct ctl *c, const char *fmt, va_list ap)
{
    char *msg = ctl_xvasprintf(fmt, ap);
    fprintf(stderr, "%s: %s: %s\n", CTL_PROG, c->cmd_name, msg);
    free(msg);
}

int ctl_error(const struct ctl *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ctl_verror(c, fmt, ap);
    va_end(ap);
    return CTL_ERROR;
}

static bool is_name_error(int rc)
{
    return rc == PRESENCE_ENAMELEN || rc == PRESENCE_ENAMEUTF8 || rc == PRESENCE_ENAMECTRL;
}

/* The library's own verdict on one name (the rules every call applies). */
static int name_verdict(const char *name)
{
    return name ? presence_validate_name(name) : PRESENCE_ENAMELEN;
}

/* "room name is longer than 255 bytes (300)", built from presence_strerror(). */
static int name_message(const struct ctl *c, const char *label, const char *name, int rc)
{
    size_t len = name ? strlen(name) : 0;
    if (rc == PRESENCE_ENAMELEN && len == 0)
        return ctl_error(c, "%s name is empty", label);
    if (rc == PRESENCE_ENAMELEN)
        return ctl_error(c, "%s name is longer than %d bytes (%zu)", label, PRESENCE_NAME_MAX, len);
    const char *msg = presence_strerror(rc); /* "name is not valid UTF-8" */
    if (strncmp(msg, "name ", 5) == 0)
        return ctl_error(c, "%s %s", label, msg);
    return ctl_error(c, "%s name: %s", label, msg);
}

static int generic_failure(const struct ctl *c, int rc)
{
    if (rc == -EROFS)
        return ctl_error(c, "segment '%s' is attached read-only", c->segment);
    if (rc == PRESENCE_ECORRUPT)
        return ctl_error(c, "segment '%s': %s (run '%s -s %s check')", c->segment,
                         presence_strerror(rc), CTL_PROG, c->segment);
    if (rc == -ENOSPC)
        return ctl_error(c, "segment '%s' is full: %s (see '%s stat')", c->segment,
                         presence_strerror(rc), CTL_PROG);
    if (is_name_error(rc) || rc == PRESENCE_ESTATEJSON || rc == PRESENCE_ESTATESIZE ||
        rc == PRESENCE_EGROUPFULL || rc == PRESENCE_EUSERCONFLICT)
        return ctl_error(c, "%s", presence_strerror(rc));
    return ctl_error(c, "segment '%s': %s", c->segment, presence_strerror(rc));
}

/* Picks the rejected name among the (label, value) pairs of @names: the first one
 * failing the same way as the call, else the first one failing at all. */
static void pick_bad(int rc, const char *const *names, size_t n, const char **label,
                     const char **name, int *found)
{
    for (size_t i = 0; i + 1 < n && names[i]; i += 2) {
        int verdict = name_verdict(names[i + 1]);
        if (verdict && (!*label || (*found != rc && verdict == rc))) {
            *label = names[i];
            *name = names[i + 1];
            *found = verdict;
        }
    }
}

/* The first of @v (rooms or groups) that is not a valid name, reported; 0 if none. */
static int bad_in(const struct ctl *c, const char *label, const struct ctl_strv *v)
{
    for (size_t i = 0; v && i < v->n; i++) {
        int verdict = name_verdict(v->v[i]);
        if (verdict)
            return name_message(c, label, v->v[i], verdict);
    }
    return 0;
}

int ctl_fail_names(const struct ctl *c, presence_t *p, int rc, const struct ctl_strv *rooms,
                   const struct ctl_strv *groups, const char *const *names, size_t n)
{
    if (rc == PRESENCE_ENOGROUP) {
        for (size_t i = 0; groups && i < groups->n; i++) {
            presence_strlist_t *l = NULL;
            int r = presence_group_list(p, groups->v[i], &l);
            presence_strlist_free(l);
            if (r == PRESENCE_ENOGROUP)
                return ctl_error(c, "no such group '%s'", groups->v[i]);
        }
        return generic_failure(c, rc);
    }
    if (!is_name_error(rc))
        return generic_failure(c, rc);
    const char *label = NULL, *name = NULL;
    int found = 0;
    pick_bad(rc, names, n, &label, &name, &found);
    if (label)
        return name_message(c, label, name, found);
    if (bad_in(c, "room", rooms) || bad_in(c, "group", groups))
        return CTL_ERROR;
    return generic_failure(c, rc);
}
