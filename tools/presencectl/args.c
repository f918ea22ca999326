/*
 * args.c -- presencectl: command-line parsing shared by every command: the
 * getopt_long() loop wrapper (help, --json, bad options), usage and help text,
 * and the value parsers (counts, sizes with K/M/G suffixes, durations, octal
 * modes). A bad value is a usage error: message and usage on stderr, status 2.
 */
#include "ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- help and usage ------------------------------------------------------------------ */

void ctl_print_usage(const struct ctl *c, const struct ctl_cmd *cmd)
{
    (void) c;
    fprintf(stderr, "Usage: %s [-s SEGMENT] %s %s\n", CTL_PROG, cmd->name, cmd->synopsis);
    fprintf(stderr, "Try '%s %s --help' for more information.\n", CTL_PROG, cmd->name);
}

void ctl_print_help(const struct ctl *c, const struct ctl_cmd *cmd)
{
    (void) c;
    printf("Usage: %s [-s SEGMENT] %s %s\n", CTL_PROG, cmd->name, cmd->synopsis);
    printf("%s.\n", cmd->summary);
    if (cmd->help[0])
        printf("\n%s", cmd->help);
    printf("\nCommon options:\n"
           "  -h, --help   this help\n"
           "      --json   print JSON (indented on a terminal, compact otherwise)\n");
}

int ctl_usage_error(struct ctl *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ctl_verror(c, fmt, ap);
    va_end(ap);
    ctl_print_usage(c, c->cmd);
    c->stop = CTL_USAGE;
    return CTL_USAGE;
}

/* ---- getopt -------------------------------------------------------------------------- */

int ctl_getopt(struct ctl *c, int argc, char **argv, const char *shortopts,
               const struct option *longopts)
{
    /* ':' first: a missing argument answers ':' instead of printing. */
    char optstring[64];
    int n = snprintf(optstring, sizeof optstring, ":%sh", shortopts);
    if (n < 0 || (size_t) n >= sizeof optstring)
        abort(); /* a programming error: the command's short options are too many */
    opterr = 0;
    for (;;) {
        int o = getopt_long(argc, argv, optstring, longopts, NULL);
        switch (o) {
        case 'h':
            ctl_print_help(c, c->cmd);
            c->stop = CTL_OK;
            return CTL_STOP;
        case CTL_OPT_JSON:
            c->json = true;
            continue;
        case ':':
            ctl_usage_error(c, "option '%s' requires an argument", argv[optind - 1]);
            return CTL_STOP;
        case '?':
            if (optopt > ' ' && optopt < 0x7f)
                ctl_usage_error(c, "invalid option -- '%c'", optopt);
            else
                ctl_usage_error(c, "unrecognized option '%s'", argv[optind - 1]);
            return CTL_STOP;
        default:
            return o;
        }
    }
}

int ctl_no_options(struct ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        CTL_COMMON_LONGOPTS,
    };
    return ctl_getopt(c, argc, argv, "", longopts) == -1 ? -1 : c->stop;
}

/* ---- value parsers ------------------------------------------------------------------- */

/* Unsigned integer with an optional binary suffix (K, M, G, T; optional "iB"/"B"). */
static int parse_scaled(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    case 't':
    case 'T':
        shift = 40;
        break;
    case '\0':
        break;
    default:
        return -1;
    }
    if (shift) {
        end++;
        if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)
            end += strlen(end);
    }
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -1;
    *out = (uint64_t) v << shift;
    return 0;
}

int ctl_parse_size(struct ctl *c, const char *opt, const char *s, uint64_t *out)
{
    if (parse_scaled(s, out) != 0)
        return ctl_usage_error(c, "%s: '%s' is not a size (a number, optionally with K, M or G)",
                               opt, s);
    return 0;
}

int ctl_parse_u32(struct ctl *c, const char *opt, const char *s, uint32_t *out)
{
    uint64_t v;
    if (parse_scaled(s, &v) != 0 || v > UINT32_MAX)
        return ctl_usage_error(c, "%s: '%s' is not a count (0..4G, K/M/G suffixes allowed)", opt,
                               s);
    *out = (uint32_t) v;
    return 0;
}

int ctl_parse_count(struct ctl *c, const char *opt, const char *s, size_t *out)
{
    uint64_t v;
    if (parse_scaled(s, &v) != 0 || v > SIZE_MAX)
        return ctl_usage_error(c, "%s: '%s' is not a count", opt, s);
    *out = (size_t) v;
    return 0;
}

/* Seconds by default; "ms", "s", "m", "h" suffixes; fractions allowed ("0.5"). */
int ctl_parse_duration_ms(struct ctl *c, const char *opt, const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        goto bad;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0))
        goto bad;
    double scale = 1000.0;
    if (strcmp(end, "ms") == 0)
        scale = 1.0;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        scale = 1000.0;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        scale = 60000.0;
    else if (strcmp(end, "h") == 0)
        scale = 3600000.0;
    else
        goto bad;
    double ms = v * scale;
    if (!(ms < 1.8e19))
        goto bad;
    *out = (uint64_t) (ms + 0.5);
    return 0;
bad:
    return ctl_usage_error(c, "%s: '%s' is not a duration (seconds, or with ms/s/m/h)", opt,
                           s ? s : "");
}

int ctl_parse_u64(struct ctl *c, const char *opt, const char *s, uint64_t *out)
{
    errno = 0;
    char *end = NULL;
    unsigned long long v = (s && *s >= '0' && *s <= '9') ? strtoull(s, &end, 10) : 0;
    if (!s || *s < '0' || *s > '9' || errno || *end)
        return ctl_usage_error(c, "%s: '%s' is not a number", opt, s ? s : "");
    *out = (uint64_t) v;
    return 0;
}

int ctl_parse_mode(struct ctl *c, const char *opt, const char *s, uint32_t *out)
{
    errno = 0;
    char *end;
    unsigned long v = (s && *s && *s != '-' && *s != '+') ? strtoul(s, &end, 8) : 0;
    if (!s || !*s || *s == '-' || *s == '+' || errno || *end || v > 07777)
        return ctl_usage_error(c, "%s: '%s' is not an octal file mode (e.g. 0600)", opt,
                               s ? s : "");
    *out = (uint32_t) v;
    return 0;
}

/* ---- string vectors ------------------------------------------------------------------ */

void ctl_strv_push(struct ctl_strv *sv, const char *s)
{
    if (sv->n == sv->cap) {
        sv->cap = sv->cap ? sv->cap * 2 : 8;
        sv->v = ctl_xrealloc(sv->v, sv->cap * sizeof *sv->v);
    }
    sv->v[sv->n++] = s;
}

void ctl_strv_free(struct ctl_strv *sv)
{
    free(sv->v);
    sv->v = NULL;
    sv->n = sv->cap = 0;
}
