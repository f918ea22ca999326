/*
 * fuzz_segment.c -- libFuzzer target: a corrupted segment must never crash,
 * hang or misbehave (ASan/UBSan) a reader, presence_check or presence_open.
 *
 * Set-up (once per process): a small segment is created in /dev/shm under a
 * name unique to the process, with a fixed hash seed so that an input means
 * the same thing in every run, and populated: rooms (one of them empty),
 * connections with and without users, state documents, groups (one empty),
 * retired records both in the limbo stack and in a limbo batch (a read section
 * is held open across a maintenance pass so that the batch cannot be freed).
 * The populating attachment stays open (a live process slot for presence_procs).
 * Its bytes are kept as the pristine image.
 *
 * Each input is a list of mutations applied to the segment file, then
 * presence_open(PRESENCE_RDONLY) attaches it (a corrupted header must give an
 * error) and every reader runs on the read-only mapping (a write would fault),
 * then presence_check. Any outcome is fine except a crash, a hang, a sanitizer
 * report, or an error code without a name. The touched bytes are restored
 * from the pristine image afterwards.
 *
 * Input format (little-endian):
 *   byte 0        flags: bit 0 = also truncate the file (3 bytes follow: the new
 *                 length, modulo the segment size)
 *   then records  [sel:1][off:3][value...]
 *     sel & 15    region: 0 header, 1 procs, 2 readers, 3 rooms, 4 connections,
 *                 5 presences, 6 groups, 7 group members, 8 bucket arrays,
 *                 9 arena page metadata, 10 allocated blob cells (first 64 bytes
 *                 of each), 11 header up to the free-stack heads (magic, sizes,
 *                 capacities, offsets), 12..15 the whole segment
 *     sel >> 4 & 7 operation: 0 set byte = v8, 1 set u32 = v8 (small indexes),
 *                 2 set u32 = v32, 3 set u64 = v64, 4 xor byte ^= v8,
 *                 5 u32 += (int8) v8, 6 set u32 = a boundary value (table[v8]),
 *                 7 set u16 = v16
 *     off         offset in the region (modulo its size; aligned to the width)
 */
#include "fuzz_common.h"
#include "internal.h"
#include "layout.h"
#include "presence.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define SEG_PREFIX "pr-fuzz-seg-"

static char seg_name[64];
static int seg_fd = -1;
static unsigned char *seg_map; /* read-write mapping of the segment file */
static size_t seg_size;
static unsigned char *pristine;
static presence_t *writer; /* the populating attachment (kept open) */

struct region {
    uint64_t off, len;
};
static struct region regions[16];
static uint64_t *cells; /* byte offsets of allocated blob cells */
static size_t ncells;

/* Names of the populated objects (and some that do not exist). */
static const char *const rooms_known[] = {"lobby", "room/1", "ünïcödé",
                                          "r3",    "empty",  "big",
                                          "nowhere"};
static const char *const conns_known[] = {"c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "zz"};
static const char *const users_known[] = {"alice", "bob", "日本", "nobody"};
static const char *const groups_known[] = {"g1", "g2", "g3", "gx"};
#define N(a) (sizeof(a) / sizeof((a)[0]))

static void cleanup(void)
{
    if (seg_name[0])
        presence_unlink(seg_name);
}

static void must(int rc, const char *what)
{
    if (rc < 0)
        FUZZ_FAIL("set-up: %s: %d %s", what, rc, presence_strerror(rc));
}

static void populate(presence_t *p)
{
    const char *lobby = rooms_known[0], *room1 = rooms_known[1], *uni = rooms_known[2];
    must(presence_join(p, lobby, "c1", "alice"), "join");
    must(presence_join(p, lobby, "c2", "bob"), "join");
    must(presence_join(p, lobby, "c3", NULL), "join");
    must(presence_join(p, room1, "c1", "alice"), "join");
    must(presence_join(p, room1, "c4", users_known[2]), "join");
    must(presence_join(p, uni, "c5", NULL), "join");
    must(presence_join(p, "r3", "c6", "alice"), "join");
    must(presence_join(p, "empty", "c7", "bob"), "join");
    must(presence_leave(p, "empty", "c7"), "leave"); /* an empty room; c7 retired */
    const char *one[1];
    one[0] = lobby;
    must(presence_set_state(p, one, 1, NULL, 0, "c1", "{\"mood\":\"ok\",\"n\":[1,2,3]}"), "state");
    one[0] = room1;
    must(presence_set_state(p, one, 1, NULL, 0, "c4", "{\"x\":\"\\u00e9\",\"z\":null}"), "state");
    one[0] = "r3";
    must(presence_set_state(p, one, 1, NULL, 0, "c6", "{}"), "state");
    const char *g1[] = {lobby, "r3", "nowhere"};
    const char *g2[] = {room1, uni};
    must(presence_group_add(p, "g1", g1, 3), "group_add");
    must(presence_group_add(p, "g2", g2, 2), "group_add");
    must(presence_group_add(p, "g3", NULL, 0), "group_add"); /* an empty group */

    /* Hold a read section across a maintenance pass: what was retired so far
     * becomes a limbo batch that cannot be freed; what is retired after stays
     * on the limbo stack. */
    struct pr_tls *t = pr__enter(p);
    if (!t)
        FUZZ_FAIL("set-up: no reader slot");
    must(presence_leave(p, lobby, "c3"), "leave");
    one[0] = lobby;
    must(presence_set_state(p, one, 1, NULL, 0, "c1", "{\"mood\":\"better\"}"), "state");
    const char *gone[] = {"nowhere"};
    must(presence_group_remove(p, "g1", gone, 1), "group_remove");
    must(presence_maintain(p), "maintain");
    must(presence_join(p, "big", "c8", "bob"), "join");
    must(presence_leave(p, "big", "c8"), "leave");
    must(presence_join(p, "big", "c8", NULL), "join");
    one[0] = "big";
    must(presence_set_state(p, one, 1, NULL, 0, "c8", "{\"k\":\"v\"}"), "state");
    pr__exit(p, t);
    must(presence_group_add(p, "g1", gone, 1), "group_add");

    presence_strlist_t *msgs = NULL;
    int n = presence_check(p, &msgs);
    if (n != 0) {
        for (size_t i = 0; msgs && i < msgs->count; i++)
            fprintf(stderr, "  %s\n", msgs->items[i]);
        FUZZ_FAIL("set-up: the populated segment is not clean (%d)", n);
    }
    presence_strlist_free(msgs);
    bool stack = false; /* a thread's limbo stack, in its reader slot */
    for (uint32_t i = 0; i < pr__readers_used(p); i++)
        stack |= (pr__reader(p, i)->limbo_head >> 32) != 0;
    if (p->h->nbatch == 0 || !stack)
        FUZZ_FAIL("set-up: expected a limbo batch and a limbo stack (%u, %d)", p->h->nbatch,
                  (int) stack);
}

static void compute_regions(void)
{
    const struct pr_header *h = (const struct pr_header *) (const void *) pristine;
    regions[0] = (struct region){0, sizeof(struct pr_header)};
    regions[1] = (struct region){h->off_procs, (uint64_t) h->cap_procs * sizeof(struct pr_proc)};
    regions[2] =
        (struct region){h->off_readers, (uint64_t) h->cap_readers * sizeof(struct pr_reader)};
    regions[3] = (struct region){h->off_rooms, (uint64_t) h->cap_rooms * sizeof(struct pr_room)};
    regions[4] = (struct region){h->off_conns, (uint64_t) h->cap_conns * sizeof(struct pr_conn)};
    regions[5] = (struct region){h->off_pres, (uint64_t) h->cap_pres * sizeof(struct pr_pres)};
    regions[6] = (struct region){h->off_groups, (uint64_t) h->cap_groups * sizeof(struct pr_group)};
    regions[7] = (struct region){h->off_gmembers,
                                 (uint64_t) h->cap_gmembers * sizeof(struct pr_gmember)};
    regions[8] = (struct region){h->off_rb, h->off_stripes - h->off_rb};
    regions[9] = (struct region){h->off_pages, (uint64_t) h->arena_pages * sizeof(struct pr_page)};
    regions[10] = (struct region){0, 0}; /* virtual: the blob cells */
    regions[11] = (struct region){0, offsetof(struct pr_header, free_head)};
    for (int i = 12; i < 16; i++)
        regions[i] = (struct region){0, seg_size};

    /* Allocated blob cells, from the page bitmaps. */
    const struct pr_page *pages = (const struct pr_page *) (const void *) (pristine + h->off_pages);
    for (uint32_t pg = 0; pg < h->arena_pages; pg++) {
        uint32_t c1 = pages[pg].cls;
        if (c1 == 0 || c1 > PR_NCLASSES)
            continue;
        uint32_t ncell = PR_UNITS_PAGE >> (c1 - 1);
        for (uint32_t c = 0; c < ncell; c++) {
            if (!((pages[pg].bits[c / 64] >> (c % 64)) & 1u))
                continue;
            uint64_t *nc = realloc(cells, (ncells + 1) * sizeof *cells);
            if (!nc)
                abort();
            cells = nc;
            cells[ncells++] = h->off_arena + (uint64_t) pg * PR_PAGE_SIZE +
                              ((uint64_t) c << (c1 - 1)) * PR_UNIT;
        }
    }
    regions[10].len = ncells * PR_UNIT;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    fuzz_remove_stale(SEG_PREFIX);
    snprintf(seg_name, sizeof seg_name, SEG_PREFIX "%d", (int) getpid());
    presence_unlink(seg_name);
    presence_options_t o;
    presence_options_init(&o);
    o.rooms = 16;
    o.connections = 16;
    o.presences = 32;
    o.groups = 4;
    o.group_members = 16;
    o.arena_bytes = 4 * PR_PAGE_SIZE;
    o.ring_entries = 64;
    o.procs = 4;
    o.readers = 8;
    o.state_max = 1024;
    o.flags = PRESENCE_CREATE | PRESENCE_EXCL;
    must(presence_open(seg_name, &o, &writer), "presence_open(create)");
    atexit(cleanup);
    writer->h->hash_seed = 0x5eedf00dcafe1234ull; /* nothing is hashed yet: reproducible */
    populate(writer);

    char path[128];
    snprintf(path, sizeof path, "/dev/shm/%s", seg_name);
    seg_fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (seg_fd < 0 || fstat(seg_fd, &st) != 0)
        FUZZ_FAIL("set-up: open %s: %s", path, strerror(errno));
    seg_size = (size_t) st.st_size;
    seg_map = mmap(NULL, seg_size, PROT_READ | PROT_WRITE, MAP_SHARED, seg_fd, 0);
    if (seg_map == MAP_FAILED)
        FUZZ_FAIL("set-up: mmap: %s", strerror(errno));
    pristine = malloc(seg_size);
    if (!pristine)
        abort();
    memcpy(pristine, seg_map, seg_size);
    compute_regions();
    return 0;
}

/* ---- the readers ------------------------------------------------------------------ */

static volatile size_t sink; /* makes the sanitizers read every returned byte */

static void touch_str(const char *s)
{
    if (s)
        sink += strlen(s);
}

static void touch_strlist(presence_strlist_t *l)
{
    for (size_t i = 0; i < l->count; i++)
        touch_str(l->items[i]);
    presence_strlist_free(l);
}

static void touch_here_now(presence_here_now_t *r)
{
    sink += r->total_channels + r->total_occupancy;
    for (size_t i = 0; i < r->nrooms; i++) {
        touch_str(r->rooms[i].name);
        for (size_t k = 0; k < r->rooms[i].noccupants; k++) {
            touch_str(r->rooms[i].occupants[k].uuid);
            touch_str(r->rooms[i].occupants[k].conn);
            touch_str(r->rooms[i].occupants[k].state);
        }
    }
    presence_here_now_free(r);
}

static void run_readers(presence_t *p)
{
    int rc;
    /* Room names: the known ones plus whatever the (corrupted) segment lists. */
    const char *names[64];
    size_t nn = 0;
    for (size_t i = 0; i < N(rooms_known); i++)
        names[nn++] = rooms_known[i];
    presence_room_list_t *rl = NULL;
    rc = presence_rooms(p, NULL, &rl);
    fuzz_check_err(rc, "rooms");
    for (size_t i = 0; rc == 0 && i < rl->count; i++) {
        touch_str(rl->items[i].name);
        sink += rl->items[i].occupancy + rl->items[i].users + rl->items[i].anonymous;
        if (nn < N(names))
            names[nn++] = rl->items[i].name;
    }

    presence_here_now_t *hn = NULL;
    rc = presence_here_now(p, names, nn, NULL, 0, PRESENCE_INCLUDE_UUIDS | PRESENCE_INCLUDE_STATE,
                           0, 0, &hn);
    fuzz_check_err(rc, "here_now");
    if (rc == 0)
        touch_here_now(hn);
    rc = presence_here_now(p, names, nn, groups_known, 3, PRESENCE_INCLUDE_UUIDS, 2, 1, &hn);
    fuzz_check_err(rc, "here_now(groups)");
    if (rc == 0)
        touch_here_now(hn);
    rc = presence_here_now(p, NULL, 0, groups_known + 1, 1, 0, 0, 0, &hn);
    fuzz_check_err(rc, "here_now(group)");
    if (rc == 0)
        touch_here_now(hn);

    for (size_t i = 0; i < nn; i++) {
        presence_strlist_t *l = NULL;
        rc = presence_users(p, names[i], &l);
        fuzz_check_err(rc, "users");
        if (rc == 0)
            touch_strlist(l);
        fuzz_check_err(presence_occupancy(p, names[i]), "occupancy");
        fuzz_check_err(presence_anonymous_count(p, names[i]), "anonymous_count");
    }
    presence_room_list_free(rl); /* names[] pointed into it */
    nn = N(rooms_known);

    const char *uuids[N(conns_known) + N(users_known)];
    size_t nu = 0;
    for (size_t i = 0; i < N(conns_known); i++)
        uuids[nu++] = conns_known[i];
    for (size_t i = 0; i < N(users_known); i++)
        uuids[nu++] = users_known[i];
    for (size_t i = 0; i < nu; i++) {
        presence_strlist_t *l = NULL;
        rc = presence_where_now(p, uuids[i], &l);
        fuzz_check_err(rc, "where_now");
        if (rc == 0)
            touch_strlist(l);
        presence_state_list_t *sl = NULL;
        rc = presence_get_state(p, names, nn, i % 2 ? groups_known : NULL, i % 2 ? 2 : 0,
                                uuids[i], &sl);
        fuzz_check_err(rc, "get_state");
        if (rc == 0) {
            for (size_t k = 0; k < sl->count; k++) {
                touch_str(sl->items[k].room);
                touch_str(sl->items[k].uuid);
                touch_str(sl->items[k].state);
            }
            presence_state_list_free(sl);
        }
    }

    presence_strlist_t *gl = NULL;
    rc = presence_groups(p, &gl);
    fuzz_check_err(rc, "groups");
    for (size_t i = 0; rc == 0 && i < gl->count + N(groups_known); i++) {
        const char *g = i < gl->count ? gl->items[i] : groups_known[i - gl->count];
        presence_strlist_t *l = NULL;
        int r2 = presence_group_list(p, g, &l);
        fuzz_check_err(r2, "group_list");
        if (r2 == 0)
            touch_strlist(l);
    }
    if (rc == 0)
        touch_strlist(gl);

    presence_stats_t st;
    fuzz_check_err(presence_stats(p, &st), "stats");
    sink += st.rooms + st.connections + st.presences + st.group_members;
    presence_proc_list_t *pl = NULL;
    rc = presence_procs(p, &pl);
    fuzz_check_err(rc, "procs");
    if (rc == 0) {
        sink += pl->count;
        presence_proc_list_free(pl);
    }
    presence_options_t o;
    presence_get_options(p, &o);

    presence_strlist_t *msgs = NULL;
    rc = presence_check(p, &msgs);
    fuzz_check_err(rc, "check");
    if (rc >= 0) {
        FUZZ_ASSERT(msgs != NULL, "check returned %d without a list", rc);
        FUZZ_ASSERT(msgs->count <= (size_t) rc, "%zu messages for %d violations", msgs->count, rc);
        touch_strlist(msgs);
    }
}

/* ---- mutations ------------------------------------------------------------------- */

struct touched {
    uint64_t off;
    uint32_t len;
};
#define MAX_MUT 512

static const uint32_t boundary[] = {0,          1,          2,          0x7f,       0x80,
                                    0xff,       0x100,      0xffff,     0x10000,    0xfffffe,
                                    0xffffff,   0x1000000,  0x7fffffff, 0x80000000, 0xfffffffe,
                                    0xffffffff, 15,         16,         17,         31,
                                    32,         33,         3,          4,          5,
                                    1024,       1025,       65536 - 24, 65536 - 23, 0x02000000,
                                    0x03000000, 0x04000001};

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    static struct touched tch[MAX_MUT];
    size_t nt = 0, i = 0;
    uint8_t flags = n ? d[i++] : 0;
    size_t trunc = seg_size;
    if ((flags & 1) && i + 3 <= n) {
        trunc = ((size_t) d[i] | (size_t) d[i + 1] << 8 | (size_t) d[i + 2] << 16) % seg_size;
        i += 3;
    }
    while (i + 4 <= n && nt < MAX_MUT) {
        uint8_t sel = d[i];
        uint32_t off = (uint32_t) d[i + 1] | (uint32_t) d[i + 2] << 8 | (uint32_t) d[i + 3] << 16;
        i += 4;
        unsigned op = (sel >> 4) & 7;
        const struct region *r = &regions[sel & 15];
        if (r->len == 0)
            continue;
        uint32_t width = op == 2 || op == 1 || op == 5 || op == 6 ? 4 : op == 3 ? 8 : op == 7 ? 2 : 1;
        uint32_t vbytes = op == 2 ? 4 : op == 3 ? 8 : op == 7 ? 2 : 1;
        if (i + vbytes > n)
            break;
        uint64_t v = 0;
        for (uint32_t k = 0; k < vbytes; k++)
            v |= (uint64_t) d[i + k] << (8 * k);
        i += vbytes;
        uint64_t pos;
        if ((sel & 15) == 10) {
            uint64_t o = off % r->len;
            pos = cells[o / PR_UNIT] + (o % PR_UNIT);
        } else {
            pos = r->off + off % r->len;
        }
        pos &= ~(uint64_t) (width - 1);
        if (pos + width > seg_size)
            continue;
        unsigned char *a = seg_map + pos;
        tch[nt++] = (struct touched){pos, width};
        switch (op) {
        case 0: *a = (uint8_t) v; break;
        case 1: { uint32_t w = (uint32_t) v; memcpy(a, &w, 4); break; }
        case 2: { uint32_t w = (uint32_t) v; memcpy(a, &w, 4); break; }
        case 3: memcpy(a, &v, 8); break;
        case 4: *a ^= (uint8_t) v; break;
        case 5: { uint32_t w; memcpy(&w, a, 4); w += (uint32_t) (int32_t) (int8_t) v; memcpy(a, &w, 4); break; }
        case 6: { uint32_t w = boundary[v % N(boundary)]; memcpy(a, &w, 4); break; }
        default: { uint16_t w = (uint16_t) v; memcpy(a, &w, 2); break; }
        }
    }
    if (trunc != seg_size && ftruncate(seg_fd, (off_t) trunc) != 0)
        FUZZ_FAIL("ftruncate: %s", strerror(errno));

    presence_options_t o;
    presence_options_init(&o);
    o.flags = PRESENCE_RDONLY;
    o.attach_timeout_ms = 0; /* a header that is not ready: answer at once */
    presence_t *p = NULL;
    int rc = presence_open(seg_name, &o, &p);
    fuzz_check_err(rc, "presence_open");
    if (rc == 0) {
        FUZZ_ASSERT(p != NULL, "presence_open succeeded without a handle");
        run_readers(p);
        presence_close(p);
    } else {
        FUZZ_ASSERT(rc < 0, "presence_open returned %d", rc);
    }

    if (trunc != seg_size) {
        if (ftruncate(seg_fd, (off_t) seg_size) != 0)
            FUZZ_FAIL("ftruncate: %s", strerror(errno));
        memcpy(seg_map, pristine, seg_size);
    } else {
        for (size_t k = nt; k-- > 0;)
            memcpy(seg_map + tch[k].off, pristine + tch[k].off, tch[k].len);
    }
    return 0;
}
