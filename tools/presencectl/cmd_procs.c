/*
 * cmd_procs.c -- presencectl: `procs`, the processes attached to the segment
 * (presence_procs(), on a read-only attachment): process slot, pid, liveness
 * (the slot's liveness lock is held), whether it is the reaper, when it
 * attached, its reader (thread) slots with the oldest epoch they announce (what
 * holds back reclamation: the global epoch minus it is the lag), its event
 * subscriptions, and its program name from /proc when it is alive. A read-only
 * attachment, like this command's own, takes no slot and is not listed.
 */
#include "ctl.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* The program of a live process: the base name of its argv[0] (/proc/PID/cmdline),
 * else its 15-byte comm; NULL when unknown. */
static const char *proc_comm(pid_t pid, int alive, char *buf, size_t n)
{
    if (!alive || pid <= 0 || n < 2)
        return NULL;
    char path[64];
    const char *kinds[] = {"cmdline", "comm"};
    for (size_t k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "/proc/%d/%s", (int) pid, kinds[k]);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        size_t len = fread(buf, 1, n - 1, f);
        fclose(f);
        buf[len] = '\0'; /* cmdline: argv[0] ends at its NUL */
        buf[strcspn(buf, "\n")] = '\0';
        const char *base = strrchr(buf, '/');
        base = base ? base + 1 : buf;
        if (*base)
            return base;
    }
    return NULL;
}

static json_t *procs_json(const struct ctl *c, const presence_proc_list_t *l)
{
    json_t *doc = json_object(), *arr = json_array();
    char when[40], comm[64];
    for (size_t i = 0; i < l->count; i++) {
        const presence_proc_info_t *it = &l->items[i];
        json_t *o = json_object();
        ctl_json_set(o, "slot", ctl_json_u64(it->slot));
        ctl_json_set(o, "pid", json_integer(it->pid));
        ctl_json_set(o, "alive", json_boolean(it->alive));
        ctl_json_set(o, "is_reaper", json_boolean(it->is_reaper));
        ctl_json_set(o, "attached",
                     ctl_json_str(it->attached_ns ? ctl_fmt_time(when, sizeof when, it->attached_ns)
                                                  : NULL));
        ctl_json_set(o, "attached_ns", ctl_json_u64(it->attached_ns));
        ctl_json_set(o, "readers", ctl_json_u64(it->readers));
        ctl_json_set(o, "oldest_epoch",
                     it->oldest_epoch ? ctl_json_u64(it->oldest_epoch) : json_null());
        ctl_json_set(o, "epoch_lag",
                     it->oldest_epoch && l->global_epoch >= it->oldest_epoch
                         ? ctl_json_u64(l->global_epoch - it->oldest_epoch)
                         : json_null());
        ctl_json_set(o, "subscribers", ctl_json_u64(it->subscribers));
        ctl_json_set(o, "command", ctl_json_str(proc_comm(it->pid, it->alive, comm, sizeof comm)));
        if (json_array_append_new(arr, o) != 0)
            ctl_oom();
    }
    ctl_json_set(doc, "segment", ctl_json_str(c->segment));
    ctl_json_set(doc, "global_epoch", ctl_json_u64(l->global_epoch));
    ctl_json_set(doc, "count", ctl_json_u64(l->count));
    ctl_json_set(doc, "procs", arr);
    return doc;
}

static void procs_table(const struct ctl *c, const presence_proc_list_t *l)
{
    struct ctl_table *t = ctl_table_new("rrllllrrrl", "SLOT", "PID", "ALIVE", "REAPER", "ATTACHED",
                                        "SINCE", "READERS", "EPOCH", "SUBS", "COMMAND", NULL);
    char when[40], ago[32], comm[64];
    for (size_t i = 0; i < l->count; i++) {
        const presence_proc_info_t *it = &l->items[i];
        ctl_table_cellf(t, "%" PRIu32, it->slot);
        ctl_table_cellf(t, "%d", (int) it->pid);
        ctl_table_cell(t, it->alive ? "yes" : "no");
        ctl_table_cell(t, it->is_reaper ? "yes" : "no");
        ctl_table_cell(t, it->attached_ns ? ctl_fmt_time(when, sizeof when, it->attached_ns) : "");
        ctl_table_cell(t, c->tty ? ctl_fmt_ago(ago, sizeof ago, it->attached_ns) : NULL);
        ctl_table_cellf(t, "%" PRIu32, it->readers);
        if (it->oldest_epoch)
            ctl_table_cellf(t, "%" PRIu64, it->oldest_epoch);
        else
            ctl_table_cell(t, c->tty ? "-" : "");
        ctl_table_cellf(t, "%" PRIu32, it->subscribers);
        ctl_table_cell(t, proc_comm(it->pid, it->alive, comm, sizeof comm));
    }
    ctl_table_print(c, t);
    ctl_table_free(t);
    if (c->tty)
        printf("%zu process%s attached; global epoch %" PRIu64
               " (EPOCH: the oldest a reader of the process is inside; '-': none)\n",
               l->count, l->count == 1 ? "" : "es", l->global_epoch);
}

static int cmd_procs(struct ctl *c, int argc, char **argv)
{
    presence_t *p = NULL;
    int status = ctl_open_no_args(c, argc, argv, &p);
    if (status >= 0)
        return status;
    presence_proc_list_t *l = NULL;
    int rc = presence_procs(p, &l);
    presence_close(p);
    if (rc < 0)
        return ctl_fail(c, rc, NULL);
    status = CTL_OK;
    if (c->json)
        status = ctl_json_print(c, procs_json(c, l));
    else
        procs_table(c, l);
    presence_proc_list_free(l);
    return status;
}

const struct ctl_cmd ctl_cmd_procs = {
    "procs",
    cmd_procs,
    "[--json]",
    "List the attached processes, their reader slots and the epochs they hold",
    "One row per process slot in use: SLOT, PID, ALIVE (its liveness lock is held;\n"
    "'no': it died, and its slot stays listed until a new process reuses it),\n"
    "REAPER, ATTACHED (UTC) and SINCE, READERS (reader slots: threads that read),\n"
    "EPOCH (the oldest epoch one of its readers is inside: memory retired since\n"
    "cannot be reclaimed before it leaves; '-' when none is reading), SUBS (event\n"
    "subscriptions) and COMMAND. Piped: tab-separated, no header, SINCE empty.\n"
    "--json adds epoch_lag.\n"
    "Read-only attachments (inspectors such as this one) take no slot: not listed.\n",
};
