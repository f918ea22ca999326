/*
 * segment.c -- the segment's lifecycle: create, attach, validate, close, unlink,
 * and the process slots that make an attachment visible to others.
 *
 * Invariants
 *   - A segment name never points at a half-built object: the creator builds
 *     the whole segment in an unnamed tmpfs file (O_TMPFILE in /dev/shm), sets
 *     `ready` last, and only then gives it its name with linkat(). Of several
 *     concurrent creators exactly one linkat() succeeds; the others discard
 *     their copy and attach the winner's (or report -EEXIST with EXCL).
 *   - Attaching validates, in order: owner uid, size >= header, magic, layout
 *     version and hash, ready (waiting a bounded time), boot id, size against
 *     the header, and every region against the size. Each failure has its own
 *     code; nothing is dereferenced before it has been checked.
 *   - The mode is applied with fchmod, so the umask does not change it.
 *   - An attachment owns one process slot, proven by an OFD write lock on byte
 *     PR_LOCK_BASE + slot of the segment file: the kernel releases it when the
 *     process dies, whatever its pid becomes later.
 */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define SHM_DIR "/dev/shm"

static const char *version_string = "0.1.0";

const char *presence_version_string(void)
{
    return version_string;
}

uint64_t pr__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

/* CLOCK_MONOTONIC_COARSE reads a value the kernel updates on its ticks (no TSC
 * read: ~5 ns against ~30 here). It lags CLOCK_MONOTONIC by up to two ticks
 * here (8.04 ms measured at HZ=250, idle and with both CPUs busy), not one:
 * one resolution added made expiries up to 2 ms early (test_expiry under
 * load). PR_STAMP_TICKS resolutions added make the stamp an upper bound of the
 * precise time for any lag below that, so that an expiry judged against
 * CLOCK_MONOTONIC is never early, and at most that many ticks late. */
#define PR_STAMP_TICKS 4u

uint64_t pr__stamp_ns(void)
{
    static uint64_t res;
    struct timespec ts;
    uint64_t r = pr_load(&res);
    if (PR_UNLIKELY(r == 0)) {
        r = 1;
        if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) == 0)
            r = (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
        pr_store(&res, r);
    }
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec + PR_STAMP_TICKS * r;
}

uint64_t pr__realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

void presence_options_init(presence_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->rooms = 4096;
    o->connections = 16384;
    o->presences = 65536;
    o->groups = 256;
    o->group_members = 16384;
    o->arena_bytes = 16u << 20;
    o->ring_entries = 65536;
    o->procs = 128;
    o->readers = 512;
    o->state_max = 32768;
    o->max_age_ms = 60000;
    o->mode = 0600;
    o->attach_timeout_ms = 1000;
}

/* ---- layout ------------------------------------------------------------ */

static uint64_t layout_hash(void)
{
    const uint64_t d[] = {
        PR_LAYOUT_VERSION,
        sizeof(struct pr_header),
        offsetof(struct pr_header, free_head),
        offsetof(struct pr_header, global_epoch),
        offsetof(struct pr_header, lease),
        offsetof(struct pr_header, ring_tail),
        sizeof(struct pr_rec),
        sizeof(struct pr_pres),
        offsetof(struct pr_pres, state_blob),
        sizeof(struct pr_room),
        offsetof(struct pr_room, lock),
        sizeof(struct pr_conn),
        offsetof(struct pr_conn, lock),
        offsetof(struct pr_conn, name_inline),
        sizeof(struct pr_group),
        sizeof(struct pr_gmember),
        sizeof(struct pr_proc),
        sizeof(struct pr_reader),
        offsetof(struct pr_reader, limbo_head),
        sizeof(struct pr_page),
        sizeof(struct pr_blob),
        sizeof(pr_lock_t),
        sizeof(struct pr_stripe),
        PR_CACHELINE,
        PR_PAGE_SIZE,
        1, /* little-endian x86-64 / LP64 */
    };
    return XXH3_64bits(d, sizeof d);
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t v = 1;
    while (v < n && v < (1u << 30))
        v <<= 1;
    return v;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

/* Fills capacities and region offsets of @h from @o. Returns 0 or EOPTION. */
static int compute_layout(struct pr_header *h, const presence_options_t *o)
{
    if (o->rooms == 0 || o->connections == 0 || o->presences == 0 || o->groups == 0 ||
        o->group_members == 0 || o->procs == 0 || o->readers == 0 || o->ring_entries < 64 ||
        (o->ring_entries & (o->ring_entries - 1)) != 0 || o->state_max == 0 ||
        o->state_max > PR_PAGE_SIZE - PR_BLOB_HDR || o->max_age_ms == 0 ||
        o->arena_bytes < PR_PAGE_SIZE ||
        o->arena_bytes > (uint64_t) PR_MAX_ARENA_PAGES * PR_PAGE_SIZE ||
        o->rooms > PR_MAX_RECORDS || o->connections > PR_MAX_RECORDS ||
        o->presences > PR_MAX_RECORDS || o->groups > PR_MAX_RECORDS ||
        o->group_members > PR_MAX_RECORDS || o->readers > PR_MAX_READERS || o->procs > 65535 ||
        o->ring_entries > (1u << 26) || (o->mode & ~07777u) != 0)
        return PRESENCE_EOPTION;

    h->cap_rooms = o->rooms;
    h->cap_conns = o->connections;
    h->cap_pres = o->presences;
    h->cap_groups = o->groups;
    h->cap_gmembers = o->group_members;
    h->cap_procs = o->procs;
    h->cap_readers = o->readers;
    h->ring_entries = o->ring_entries;
    h->state_max = o->state_max;
    /* The arena also holds the rooms' member arrays (members.c): on top of
     * what the caller asked for, 32 bytes per presence (an entry of 16 in a
     * chunk at least half full) and a smallest cell per room, within the
     * arena's limit; the arrays keep within what was added (members_budget),
     * so names and states keep what was asked for (pages are shared by size
     * class, as between names and states). Without room for an array a join
     * still succeeds: the room is then listed through its list. */
    uint64_t arrays = 32ull * o->presences + (uint64_t) PR_UNIT * o->rooms;
    uint64_t pages = (o->arena_bytes + arrays) / PR_PAGE_SIZE;
    h->arena_pages = (uint32_t) (pages < PR_MAX_ARENA_PAGES ? pages : PR_MAX_ARENA_PAGES);
    uint64_t added =
        (uint64_t) h->arena_pages * PR_PAGE_SIZE - o->arena_bytes / PR_PAGE_SIZE * PR_PAGE_SIZE;
    h->members_budget = added < arrays ? added : arrays; /* names keep what was asked */
    h->max_age_ms = o->max_age_ms;
    h->nb_rooms = pow2_at_least(o->rooms);
    /* Connection and user buckets: at least twice the records (chains of at
     * most 0.5 records on average, not 0.5-1). With one bucket per record a
     * touch by name took ~1.2x as long at 10k connections in a one-process
     * loop (bench/RESULTS.md, twelfth round). Costs 8-16 bytes per connection. */
    h->nb_conns = pow2_at_least(2 * (uint64_t) o->connections);
    h->nb_users = h->nb_conns;
    h->nb_groups = pow2_at_least(o->groups);
    h->nstripes = 256;

    uint64_t off = align_up(sizeof(struct pr_header), PR_CACHELINE);
#define PLACE(field, bytes)                                     \
    do {                                                        \
        h->field = off;                                         \
        off = align_up(off + (uint64_t) (bytes), PR_CACHELINE); \
    } while (0)
    PLACE(off_procs, (uint64_t) h->cap_procs * sizeof(struct pr_proc));
    PLACE(off_readers, (uint64_t) h->cap_readers * sizeof(struct pr_reader));
    PLACE(off_rooms, (uint64_t) h->cap_rooms * sizeof(struct pr_room));
    PLACE(off_conns, (uint64_t) h->cap_conns * sizeof(struct pr_conn));
    PLACE(off_pres, (uint64_t) h->cap_pres * sizeof(struct pr_pres));
    PLACE(off_groups, (uint64_t) h->cap_groups * sizeof(struct pr_group));
    PLACE(off_gmembers, (uint64_t) h->cap_gmembers * sizeof(struct pr_gmember));
    PLACE(off_rb, (uint64_t) h->nb_rooms * 4);
    PLACE(off_cb, (uint64_t) h->nb_conns * 4);
    PLACE(off_ub, (uint64_t) h->nb_users * 4);
    PLACE(off_gb, (uint64_t) h->nb_groups * 4);
    PLACE(off_stripes, (uint64_t) 4 * h->nstripes * sizeof(struct pr_stripe));
    PLACE(off_pages, (uint64_t) h->arena_pages * sizeof(struct pr_page));
    off = align_up(off, PR_PAGE_SIZE);
    PLACE(off_arena, (uint64_t) h->arena_pages * PR_PAGE_SIZE);
    PLACE(off_ring, (uint64_t) h->ring_entries * 64);
#undef PLACE
    h->segment_size = align_up(off, 4096);
    return 0;
}

/* Every region must lie inside the segment, aligned as compute_layout() places it. */
static int check_regions(const struct pr_header *h, uint64_t size)
{
    const struct {
        uint64_t off, bytes;
    } r[] = {
        {h->off_procs, (uint64_t) h->cap_procs * sizeof(struct pr_proc)},
        {h->off_readers, (uint64_t) h->cap_readers * sizeof(struct pr_reader)},
        {h->off_rooms, (uint64_t) h->cap_rooms * sizeof(struct pr_room)},
        {h->off_conns, (uint64_t) h->cap_conns * sizeof(struct pr_conn)},
        {h->off_pres, (uint64_t) h->cap_pres * sizeof(struct pr_pres)},
        {h->off_groups, (uint64_t) h->cap_groups * sizeof(struct pr_group)},
        {h->off_gmembers, (uint64_t) h->cap_gmembers * sizeof(struct pr_gmember)},
        {h->off_rb, (uint64_t) h->nb_rooms * 4},
        {h->off_cb, (uint64_t) h->nb_conns * 4},
        {h->off_ub, (uint64_t) h->nb_users * 4},
        {h->off_gb, (uint64_t) h->nb_groups * 4},
        {h->off_stripes, (uint64_t) 4 * h->nstripes * sizeof(struct pr_stripe)},
        {h->off_pages, (uint64_t) h->arena_pages * sizeof(struct pr_page)},
        {h->off_arena, (uint64_t) h->arena_pages * PR_PAGE_SIZE},
        {h->off_ring, (uint64_t) h->ring_entries * 64},
    };
    const uint32_t pow2[] = {h->nb_rooms,  h->nb_conns, h->nb_users,
                             h->nb_groups, h->nstripes, h->ring_entries};
    for (size_t i = 0; i < sizeof pow2 / sizeof pow2[0]; i++)
        if (pow2[i] == 0 || (pow2[i] & (pow2[i] - 1)) != 0)
            return PRESENCE_ECORRUPT;
    if (h->cap_readers > PR_MAX_READERS || h->cap_rooms > PR_MAX_RECORDS ||
        h->cap_conns > PR_MAX_RECORDS || h->cap_pres > PR_MAX_RECORDS ||
        h->cap_groups > PR_MAX_RECORDS || h->cap_gmembers > PR_MAX_RECORDS ||
        h->nb_users < h->nb_conns || h->arena_pages > PR_MAX_ARENA_PAGES)
        return PRESENCE_ECORRUPT;
    /* compute_layout() aligns every region to PR_CACHELINE: a misaligned one
     * would make every record access (and atomic) misaligned. */
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (r[i].off < sizeof(struct pr_header) || r[i].off > size ||
            r[i].bytes > size - r[i].off || r[i].off % PR_CACHELINE != 0)
            return PRESENCE_ECORRUPT;
    return 0;
}

static void read_boot_id(char out[40])
{
    memset(out, 0, 40);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (!f)
        return;
    if (fgets(out, 40, f))
        out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

/* "/x" or "x" -> "x"; rejects empty names, '/' inside and over-long names. */
static int shm_basename(const char *name, char out[256])
{
    if (!name)
        return -EINVAL;
    if (name[0] == '/')
        name++;
    size_t n = strlen(name);
    if (n == 0 || n > 200 || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return -EINVAL;
    memcpy(out, name, n + 1);
    return 0;
}

/* ---- building a new segment -------------------------------------------- */

static void format_segment(struct presence *p, const presence_options_t *o)
{
    struct pr_header *h = p->h;
    PR_UNUSED(o);
    /* Locks need nothing: the file is zero-filled and a zero lock is free. */
    pr__alloc_format(p);
    h->global_epoch = 1;
}

#define PR_HUGE_PAGE (2ull << 20)
#ifndef MADV_COLLAPSE
#    define MADV_COLLAPSE 25 /* Linux 6.1 */
#endif

/* Maps the segment at a 2 MiB boundary (a reservation, the file over it, the
 * slack given back), so that a segment in 2 MiB pages is mapped by them. */
static int map_fd(struct presence *p, int fd, size_t size, bool rdonly)
{
    size_t span = size + PR_HUGE_PAGE;
    char *r = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED)
        return -errno;
    char *at = r + (align_up((uintptr_t) r, PR_HUGE_PAGE) - (uintptr_t) r);
    void *m =
        mmap(at, size, rdonly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    if (m == MAP_FAILED) {
        int rc = -errno;
        munmap(r, span);
        return rc;
    }
    char *end = at + align_up(size, (uint64_t) sysconf(_SC_PAGESIZE));
    if (at > r)
        munmap(r, (size_t) (at - r));
    if (r + span > end)
        munmap(end, (size_t) (r + span - end));
    p->base = m;
    p->size = size;
    p->h = m;
    return 0;
}

#ifndef MADV_POPULATE_READ
#    define MADV_POPULATE_READ  22 /* Linux 5.14 */
#    define MADV_POPULATE_WRITE 23
#endif

/* PRESENCE_POPULATE: maps every page of the segment into this process now (they
 * all exist: the file is fallocated at creation), so that later operations take
 * no page faults. Best effort: before Linux 5.14, one read per page instead. */
static void populate(const struct presence *p, bool rdonly)
{
    const volatile unsigned char *base = p->base;
    if (!base || madvise(p->base, p->size, rdonly ? MADV_POPULATE_READ : MADV_POPULATE_WRITE) == 0)
        return;
    size_t page = (size_t) sysconf(_SC_PAGESIZE);
    for (size_t off = 0; off < p->size; off += page)
        (void) base[off];
}

/* Asks the kernel to move the whole 2 MiB stretches of a new segment into
 * 2 MiB pages (copying them: the segment is still empty). Whether it did. */
static bool collapse_huge(const struct presence *p)
{
    size_t whole = p->size & ~(size_t) (PR_HUGE_PAGE - 1);
    return whole > 0 && madvise(p->base, whole, MADV_COLLAPSE) == 0;
}

/* Builds a complete segment in an unnamed file and publishes it under @name.
 * Returns 0 (fd of the published segment in *fdp), -EEXIST, or an error. */
static int create_segment(const char *base, const presence_options_t *o, int *fdp)
{
    struct pr_header tmp;
    memset(&tmp, 0, sizeof tmp);
    int rc = compute_layout(&tmp, o);
    if (rc)
        return rc;
    int fd = open(SHM_DIR, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t) tmp.segment_size) != 0 || fchmod(fd, o->mode) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    /* Reserve the memory now so a full /dev/shm is -ENOSPC here, not SIGBUS later. */
    rc = posix_fallocate(fd, 0, (off_t) tmp.segment_size);
    if (rc != 0) {
        close(fd);
        return -rc;
    }
    struct presence p;
    memset(&p, 0, sizeof p);
    rc = map_fd(&p, fd, tmp.segment_size, false);
    if (rc) {
        close(fd);
        return rc;
    }
    struct pr_header *h = p.h;
    if (!h) { /* cannot happen: map_fd succeeded */
        close(fd);
        return -EFAULT;
    }
    memcpy(h, &tmp, sizeof tmp);
    h->magic = PR_MAGIC;
    h->layout_version = PR_LAYOUT_VERSION;
    h->header_size = sizeof(struct pr_header);
    h->layout_hash = layout_hash();
    h->creator_pid = (uint32_t) getpid();
    h->created_realtime_ns = pr__realtime_ns();
    h->uid = (uint32_t) geteuid();
    h->mode = o->mode;
    h->hash_seed = pr__realtime_ns() ^ ((uint64_t) getpid() << 32);
    read_boot_id(h->boot_id);
    h->huge_pages = (o->flags & PRESENCE_HUGE_PAGES) && collapse_huge(&p);
    format_segment(&p, o);
    pr_store(&h->ready, 1u); /* written last */
    munmap(p.base, p.size);

    char from[64], to[300];
    snprintf(from, sizeof from, "/proc/self/fd/%d", fd);
    snprintf(to, sizeof to, SHM_DIR "/%s", base);
    if (linkat(AT_FDCWD, from, AT_FDCWD, to, AT_SYMLINK_FOLLOW) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    *fdp = fd;
    return 0;
}

/* ---- attaching ----------------------------------------------------------- */

static int validate(struct presence *p, const struct stat *st, uint32_t timeout_ms)
{
    const struct pr_header *h = p->h;
    if (h->magic != PR_MAGIC)
        return PRESENCE_EBADMAGIC;
    if ((uint64_t) st->st_size < sizeof(struct pr_header))
        return PRESENCE_ETRUNCATED;
    if (h->layout_version != PR_LAYOUT_VERSION || h->header_size != sizeof(struct pr_header) ||
        h->layout_hash != layout_hash())
        return PRESENCE_EVERSION;
    /* Our creators publish complete segments; a header that is not ready was
     * written some other way (or its writer died): wait a bounded time. */
    uint64_t deadline = pr__now_ns() + (uint64_t) timeout_ms * 1000000ull;
    while (pr_load(&((struct pr_header *) h)->ready) != 1u) {
        if (pr__now_ns() >= deadline)
            return PRESENCE_ENOTREADY;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (h->segment_size > (uint64_t) st->st_size)
        return PRESENCE_ETRUNCATED;
    char boot[40];
    read_boot_id(boot);
    if (boot[0] && h->boot_id[0] && strncmp(boot, h->boot_id, sizeof boot) != 0)
        return PRESENCE_EBOOT;
    return check_regions(h, h->segment_size);
}

static int ofd_lock(int fd, short type, uint64_t byte, bool test_only)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t) byte;
    fl.l_len = 1;
    if (test_only) {
        if (fcntl(fd, F_OFD_GETLK, &fl) != 0)
            return -errno;
        return fl.l_type == F_UNLCK ? 0 : 1; /* 1: someone holds it */
    }
    return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : -errno;
}

bool pr__proc_alive(struct presence *p, uint32_t proc, uint32_t gen)
{
    struct pr_proc *pp = pr__proc(p, proc);
    if (!pp)
        return false;
    uint64_t owner = pr_load(&pp->owner);
    if ((uint32_t) (owner >> 32) != gen || (uint32_t) owner == 0)
        return false;
    if (proc == p->proc && gen == p->proc_gen)
        return true; /* ourselves: our own OFD lock never conflicts with us */
    return ofd_lock(p->fd, F_WRLCK, PR_LOCK_BASE + proc, true) != 0;
}

/* Claims a process slot: the OFD lock first (the kernel arbitrates), then the
 * owner word, bumping its generation. */
static int claim_proc(struct presence *p)
{
    struct pr_header *h = p->h;
    for (uint32_t i = 0; i < h->cap_procs; i++) {
        if (ofd_lock(p->fd, F_WRLCK, PR_LOCK_BASE + i, false) != 0)
            continue;
        struct pr_proc *pp = pr__proc(p, i);
        uint64_t old = pr_load(&pp->owner);
        uint32_t gen = (uint32_t) (old >> 32) + 1;
        pr_store(&pp->owner, ((uint64_t) gen << 32) | (uint32_t) getpid());
        pr_store(&pp->attached_ns, pr__realtime_ns());
        p->proc = i;
        p->proc_gen = gen;
        p->shard = i % PR_NSHARD;
        return 0;
    }
    return -EUSERS;
}

static void tls_destroy(void *v)
{
    struct pr_tls *t = v;
    if (!t)
        return;
    pr__tls_forget(t);
    struct pr_reader *r = pr__reader(t->p, t->slot);
    if (r && !t->p->rdonly) {
        pr_store(&r->epoch, 0);
        pr_store(&r->owner, 0);
    }
    free(t);
}

int presence_open(const char *name, const presence_options_t *opts, presence_t **out)
{
    presence_options_t defaults;
    if (!opts) {
        presence_options_init(&defaults);
        opts = &defaults;
    }
    if (!out)
        return -EINVAL;
    char base[256];
    int rc = shm_basename(name, base);
    if (rc)
        return rc;
    if (opts->flags & ~(unsigned) (PRESENCE_CREATE | PRESENCE_EXCL | PRESENCE_RDONLY |
                                   PRESENCE_ANY_OWNER | PRESENCE_HUGE_PAGES | PRESENCE_POPULATE))
        return PRESENCE_EOPTION;
    bool rdonly = (opts->flags & PRESENCE_RDONLY) != 0;
    int fd = -1;
    /* Test-only switches (see internal.h); never set in production. */
    pr__test_no_tags = getenv("PRESENCE_TEST_NO_TAGS") != NULL;
    pr__test_eager_free = getenv("PRESENCE_TEST_EAGER_FREE") != NULL;
    pr__test_late_tail = getenv("PRESENCE_TEST_LATE_TAIL") != NULL;
    pr__test_poison = getenv("PRESENCE_TEST_POISON") != NULL;
    pr__test_trust_miss = getenv("PRESENCE_TEST_TRUST_MISS") != NULL;
    pr__kill_point_init();
    if (!rdonly)
        pr__lock_setup();

    if (opts->flags & PRESENCE_CREATE) {
        if (rdonly)
            return PRESENCE_EOPTION;
        rc = create_segment(base, opts, &fd);
        if (rc == -EEXIST && (opts->flags & PRESENCE_EXCL))
            return -EEXIST;
        if (rc && rc != -EEXIST)
            return rc;
    }
    if (fd < 0) {
        char path[300];
        snprintf(path, sizeof path, "/%s", base);
        fd = shm_open(path, (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (st.st_uid != geteuid() && !(opts->flags & PRESENCE_ANY_OWNER)) {
        close(fd);
        return PRESENCE_EOWNER;
    }
    if ((uint64_t) st.st_size < sizeof(uint64_t)) {
        close(fd);
        return st.st_size == 0 ? PRESENCE_EBADMAGIC : PRESENCE_ETRUNCATED;
    }
    struct presence *p = calloc(1, sizeof *p);
    if (!p) {
        close(fd);
        return -ENOMEM;
    }
    p->fd = fd;
    p->rdonly = rdonly;
    snprintf(p->name, sizeof p->name, "%s", base);
    /* Map the header first (or all of a small object), validate, then map it all. */
    size_t first = (size_t) st.st_size;
    rc = map_fd(p, fd, first, rdonly);
    if (rc)
        goto fail;
    rc = validate(p, &st, opts->attach_timeout_ms);
    if (rc)
        goto fail;
    if (p->h->segment_size != first) {
        size_t size = p->h->segment_size;
        munmap(p->base, first);
        p->base = NULL;
        rc = map_fd(p, fd, size, rdonly);
        if (rc)
            goto fail;
    }
    if (opts->flags & PRESENCE_POPULATE)
        populate(p, rdonly);
    static uint64_t handles;
    p->id = __atomic_add_fetch(&handles, 1, __ATOMIC_RELAXED);
    if (pthread_key_create(&p->tls_key, tls_destroy) != 0) {
        rc = -EAGAIN;
        goto fail;
    }
    pthread_mutex_init(&p->local, NULL);
    pthread_mutex_init(&p->ipc_lock, NULL);
    p->ipc_fd = p->doorbell_fd = -1;
    if (!rdonly) {
        rc = claim_proc(p);
        if (rc) {
            pthread_key_delete(p->tls_key);
            pthread_mutex_destroy(&p->local);
            pthread_mutex_destroy(&p->ipc_lock);
            goto fail;
        }
        /* Best effort: a running reaper learns of our death through our pidfd. */
        (void) pr__ipc_register(p);
    }
    *out = p;
    return 0;
fail:
    if (p->base)
        munmap(p->base, p->size);
    close(fd);
    free(p);
    return rc;
}

void presence_close(presence_t *p)
{
    if (!p)
        return;
    pr__ipc_close(p);
    if (!p->rdonly) {
        presence_reaper_release(p);
        pr__readers_release(p);
        struct pr_proc *pp = pr__proc(p, p->proc);
        if (pp)
            pr_store(&pp->owner, (uint64_t) p->proc_gen << 32);
        pr_store(&p->h->owners_changed, 1u); /* its bound connections go at the next sweep */
        /* A sweep this handle began (phase 1: its suspects live here) ends with
         * it: ask for another, or what it suspected (records a dead process
         * left, e.g. the rest of a batch it was freeing) stays until the next
         * death. */
        if (p->nsweep)
            pr_store(&p->h->needs_sweep, 1u);
    }
    struct pr_tls *t = pthread_getspecific(p->tls_key);
    if (t) {
        pr__tls_forget(t);
        pthread_setspecific(p->tls_key, NULL);
        free(t);
    }
    pthread_key_delete(p->tls_key);
    pthread_mutex_destroy(&p->local);
    pthread_mutex_destroy(&p->ipc_lock);
    free(p->sweep_items);
    free(p->sweep_states);
    munmap(p->base, p->size);
    close(p->fd); /* drops our OFD locks */
    free(p);
}

int presence_unlink(const char *name)
{
    char base[256], path[300];
    int rc = shm_basename(name, base);
    if (rc)
        return rc;
    snprintf(path, sizeof path, "/%s", base);
    return shm_unlink(path) == 0 ? 0 : -errno;
}

void presence_get_options(const presence_t *p, presence_options_t *o)
{
    const struct pr_header *h = p->h;
    memset(o, 0, sizeof *o);
    o->rooms = h->cap_rooms;
    o->connections = h->cap_conns;
    o->presences = h->cap_pres;
    o->groups = h->cap_groups;
    o->group_members = h->cap_gmembers;
    uint64_t arena = (uint64_t) h->arena_pages * PR_PAGE_SIZE; /* less the arrays' share */
    o->arena_bytes = arena - (h->members_budget < arena ? h->members_budget : arena);
    o->ring_entries = h->ring_entries;
    o->procs = h->cap_procs;
    o->readers = h->cap_readers;
    o->state_max = h->state_max;
    o->max_age_ms = h->max_age_ms;
    o->mode = h->mode;
    o->flags = h->huge_pages ? PRESENCE_HUGE_PAGES : 0;
}
