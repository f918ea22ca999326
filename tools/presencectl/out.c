/*
 * out.c -- presencectl: everything that reaches stdout. Two modes, decided once
 * from stdout (redis-cli's rule): on a terminal, aligned tables with a header and
 * "Label: value" lists, JSON indented by 2; otherwise (a pipe, a file) plain
 * tab-separated lines without header or colour and compact JSON, for scripts.
 * PRESENCE_FORCE_TTY=1 forces table mode (tests), =0 forces raw mode. Colours only
 * on a real terminal, never with NO_COLOR or TERM=dumb. JSON is produced by
 * jansson, so it is always valid UTF-8 JSON.
 */
#include "ctl.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

/* ---- mode ---------------------------------------------------------------------------- */

void ctl_out_init(struct ctl *c)
{
    const char *force = getenv("PRESENCE_FORCE_TTY");
    const char *term = getenv("TERM");
    bool real = isatty(STDOUT_FILENO) != 0;
    c->tty = real;
    if (force && strcmp(force, "1") == 0)
        c->tty = true;
    else if (force && strcmp(force, "0") == 0)
        c->tty = false;
    c->color = real && c->tty && !getenv("NO_COLOR") && !(term && strcmp(term, "dumb") == 0);
}

size_t ctl_display_width(const char *s)
{
    size_t w = 0;
    const unsigned char *u = (const unsigned char *) s;
    while (*u) {
        uint32_t cp = *u;
        size_t k = cp >= 0xf0 ? 3 : cp >= 0xe0 ? 2 : cp >= 0xc0 ? 1 : 0;
        if (k)
            cp &= 0x3fu >> k; /* payload bits of a lead byte */
        u++;
        for (; k && (*u & 0xc0) == 0x80; k--, u++)
            cp = (cp << 6) | (*u & 0x3f);
        int cw = wcwidth((wchar_t) cp);
        w += cw < 0 ? 1 : (size_t) cw;
    }
    return w;
}

/* Writes a cell for raw mode: tabs and line breaks would split fields or lines. */
static void put_raw(const char *s)
{
    for (; *s; s++)
        putchar(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s);
}

/* Aligned output of one table line. Blanks are held back until something visible
 * follows them, so that no line ends in blanks (empty trailing cells, padding). */
struct line {
    size_t pending; /* blanks owed before the next visible text */
};

static void line_text(struct line *ln, const char *s)
{
    if (!*s)
        return;
    printf("%*s%s", (int) ln->pending, "", s);
    ln->pending = 0;
}

static void line_cell(struct line *ln, bool first, const char *s, size_t width, char align)
{
    size_t w = ctl_display_width(s);
    size_t pad = width > w ? width - w : 0;
    if (!first)
        ln->pending += 2;
    if (align == 'r')
        ln->pending += pad;
    line_text(ln, s);
    if (align != 'r')
        ln->pending += pad;
}

/* ---- tables -------------------------------------------------------------------------- */

struct ctl_table {
    size_t ncols;
    char *align; /* 'l' / 'r' per column */
    char **headers;
    char **cells; /* row-major; NULL = empty */
    size_t ncells, cap;
};

struct ctl_table *ctl_table_new_array(const char *align, const char *const *headers, size_t n)
{
    struct ctl_table *t = calloc(1, sizeof *t);
    if (!t)
        ctl_oom();
    t->ncols = strlen(align);
    t->align = ctl_xstrdup(align);
    t->headers = ctl_xmalloc(t->ncols * sizeof *t->headers);
    for (size_t i = 0; i < t->ncols; i++)
        t->headers[i] = ctl_xstrdup(i < n && headers[i] ? headers[i] : "");
    return t;
}

static void table_push(struct ctl_table *t, char *s)
{
    if (t->ncells == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->cells = ctl_xrealloc(t->cells, t->cap * sizeof *t->cells);
    }
    t->cells[t->ncells++] = s;
}

void ctl_table_cell(struct ctl_table *t, const char *s)
{
    table_push(t, s ? ctl_xstrdup(s) : NULL);
}

void ctl_table_cellf(struct ctl_table *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    table_push(t, ctl_xvasprintf(fmt, ap));
    va_end(ap);
}

size_t ctl_table_rows(const struct ctl_table *t)
{
    return (t->ncells + t->ncols - 1) / t->ncols;
}

void ctl_table_print(const struct ctl *c, const struct ctl_table *t)
{
    size_t rows = ctl_table_rows(t);
    if (!c->tty) {
        for (size_t r = 0; r < rows; r++) {
            for (size_t col = 0; col < t->ncols; col++) {
                size_t i = r * t->ncols + col;
                if (col)
                    putchar('\t');
                if (i < t->ncells && t->cells[i])
                    put_raw(t->cells[i]);
            }
            putchar('\n');
        }
        return;
    }
    size_t *width = ctl_xmalloc(t->ncols * sizeof *width);
    for (size_t col = 0; col < t->ncols; col++)
        width[col] = ctl_display_width(t->headers[col]);
    for (size_t i = 0; i < t->ncells; i++) {
        size_t w = t->cells[i] ? ctl_display_width(t->cells[i]) : 0;
        if (w > width[i % t->ncols])
            width[i % t->ncols] = w;
    }
    /* header, bold on a real terminal */
    struct line ln = {0};
    if (c->color)
        fputs("\033[1m", stdout);
    for (size_t col = 0; col < t->ncols; col++)
        line_cell(&ln, col == 0, t->headers[col], width[col], t->align[col]);
    if (c->color)
        fputs("\033[0m", stdout);
    putchar('\n');
    for (size_t r = 0; r < rows; r++) {
        ln.pending = 0;
        for (size_t col = 0; col < t->ncols; col++) {
            size_t i = r * t->ncols + col;
            const char *s = i < t->ncells && t->cells[i] ? t->cells[i] : "";
            line_cell(&ln, col == 0, s, width[col], t->align[col]);
        }
        putchar('\n');
    }
    free(width);
}

void ctl_table_free(struct ctl_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->ncols; i++)
        free(t->headers[i]);
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    free(t->headers);
    free(t->cells);
    free(t->align);
    free(t);
}

/* ---- key/value lists ----------------------------------------------------------------- */

struct ctl_kv {
    struct ctl_table *t; /* key, label, value */
};

struct ctl_kv *ctl_kv_new(void)
{
    struct ctl_kv *kv = ctl_xmalloc(sizeof *kv);
    kv->t = ctl_table_new("lll", "KEY", "LABEL", "VALUE", NULL);
    return kv;
}

void ctl_kv_add(struct ctl_kv *kv, const char *key, const char *label, const char *fmt, ...)
{
    ctl_table_cell(kv->t, key);
    ctl_table_cell(kv->t, label);
    va_list ap;
    va_start(ap, fmt);
    table_push(kv->t, ctl_xvasprintf(fmt, ap));
    va_end(ap);
}

void ctl_kv_print(const struct ctl *c, const struct ctl_kv *kv)
{
    const struct ctl_table *t = kv->t;
    size_t rows = ctl_table_rows(t), width = 0;
    for (size_t r = 0; r < rows; r++) {
        size_t w = ctl_display_width(t->cells[r * 3 + 1]);
        width = w > width ? w : width;
    }
    for (size_t r = 0; r < rows; r++) {
        if (c->tty) {
            const char *label = t->cells[r * 3 + 1];
            printf("%s:%*s %s\n", label, (int) (width - ctl_display_width(label)), "",
                   t->cells[r * 3 + 2]);
        } else {
            put_raw(t->cells[r * 3]);
            putchar('\t');
            put_raw(t->cells[r * 3 + 2]);
            putchar('\n');
        }
    }
}

void ctl_kv_free(struct ctl_kv *kv)
{
    if (!kv)
        return;
    ctl_table_free(kv->t);
    free(kv);
}

/* ---- JSON ---------------------------------------------------------------------------- */

int ctl_json_print(const struct ctl *c, json_t *doc)
{
    if (!doc)
        ctl_oom();
    size_t flags = c->tty ? JSON_INDENT(2) : JSON_COMPACT;
    int rc = json_dumpf(doc, stdout, flags);
    json_decref(doc);
    if (rc != 0)
        return ctl_error(c, "cannot write JSON output");
    putchar('\n');
    return CTL_OK;
}

void ctl_json_set(json_t *obj, const char *key, json_t *value)
{
    if (!value || json_object_set_new(obj, key, value) != 0)
        ctl_oom();
}

json_t *ctl_json_str(const char *s)
{
    json_t *v = s ? json_string(s) : NULL;
    return v ? v : json_null();
}

json_t *ctl_json_u64(uint64_t v)
{
    /* json_int_t is long long; counters beyond 2^63 do not occur. */
    return json_integer(v > (uint64_t) INT64_MAX ? INT64_MAX : (json_int_t) v);
}

json_t *ctl_json_state(const char *text)
{
    if (!text)
        return NULL;
    json_error_t err;
    json_t *v = json_loads(text, JSON_ALLOW_NUL, &err);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

char *ctl_state_line(const char *text)
{
    if (!text)
        return NULL;
    json_t *v = ctl_json_state(text);
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!s)
        s = ctl_xstrdup(text);
    return s;
}

/* ---- small things -------------------------------------------------------------------- */

void ctl_say(const struct ctl *c, const char *human, const char *raw)
{
    puts(c->tty ? human : raw);
}

const char *ctl_fmt_bytes(char *buf, size_t n, uint64_t bytes)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double) bytes;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof unit / sizeof unit[0]) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%" PRIu64 " B", bytes);
    else
        snprintf(buf, n, "%.1f %s", v, unit[u]);
    return buf;
}

const char *ctl_fmt_ms(char *buf, size_t n, uint64_t ms)
{
    if (ms < 1000)
        snprintf(buf, n, "%" PRIu64 " ms", ms);
    else if (ms % 1000 == 0)
        snprintf(buf, n, "%" PRIu64 " s", ms / 1000);
    else
        snprintf(buf, n, "%.3f s", (double) ms / 1000.0);
    return buf;
}

const char *ctl_fmt_time(char *buf, size_t n, uint64_t realtime_ns)
{
    time_t secs = (time_t) (realtime_ns / 1000000000u);
    unsigned ms = (unsigned) (realtime_ns % 1000000000u / 1000000u);
    struct tm tm;
    char day[32];
    if (!gmtime_r(&secs, &tm) || strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        snprintf(day, sizeof day, "@%lld", (long long) secs);
    snprintf(buf, n, "%s.%03uZ", day, ms);
    return buf;
}

const char *ctl_fmt_ago(char *buf, size_t n, uint64_t realtime_ns)
{
    if (realtime_ns == 0) {
        snprintf(buf, n, "never");
        return buf;
    }
    uint64_t now = ctl_now_ns();
    double s = now > realtime_ns ? (double) (now - realtime_ns) / 1e9 : 0.0;
    if (s < 10.0)
        snprintf(buf, n, "%.2f s ago", s);
    else if (s < 120.0)
        snprintf(buf, n, "%.0f s ago", s);
    else if (s < 7200.0)
        snprintf(buf, n, "%.0f min ago", s / 60.0);
    else if (s < 172800.0)
        snprintf(buf, n, "%.0f h ago", s / 3600.0);
    else
        snprintf(buf, n, "%.0f days ago", s / 86400.0);
    return buf;
}

int ctl_out_finish(int status)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "%s: cannot write to standard output\n", CTL_PROG);
        return CTL_ERROR;
    }
    return status;
}
