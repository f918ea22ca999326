/*
 * test_segment.c -- the segment's lifecycle (src/segment.c): create, attach,
 * close, unlink; options and mode persistence; EXCL; bad options and names;
 * concurrent creators (helper_create); attaching damaged or foreign objects;
 * another owner; error texts; read-only attachments.
 *
 * Every test works on its own segment "pr-test-<pid>-<test>", unlinked before and
 * after the test. Attaches that might crash on a damaged object run in a forked
 * child, so that a crash is reported as a failure of that test. Children never use
 * cmocka asserts: the parent asserts on what they report and on their exit status.
 */
#include "internal.h" /* the handle's mapping, for the huge-pages test */
#include "presence.h"
#include "test_util.h"
#include "test_opts.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <cmocka.h>

#define SHM_DIR  "/dev/shm"
#define SENTINEL ((presence_t *) (uintptr_t) 0x5a5a5a5a)

/* ---- fixture ------------------------------------------------------------- */

struct seg {
    char name[128]; /* pr-test-<pid>-<test> */
    char path[192]; /* /dev/shm/<name> */
};

static int seg_setup(void **state)
{
    const char *test = *state; /* the prestate: the test's short name */
    struct seg *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    snprintf(s->name, sizeof s->name, "pr-test-%d-%s", (int) getpid(), test);
    snprintf(s->path, sizeof s->path, SHM_DIR "/%s", s->name);
    unlink(s->path); /* a leftover of an earlier crashed run with our pid */
    *state = s;
    return 0;
}

static int seg_teardown(void **state)
{
    struct seg *s = *state;
    if (s) {
        presence_unlink(s->name);
        unlink(s->path); /* objects the test made by hand */
        free(s);
    }
    return 0;
}

static bool shm_exists(const struct seg *s)
{
    struct stat st;
    return stat(s->path, &st) == 0;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

/* Creates a valid segment with test_small_opts(), detaches, returns its size in bytes. */
static off_t create_valid(const struct seg *s)
{
    presence_options_t o;
    test_small_opts(&o, PRESENCE_CREATE | PRESENCE_EXCL);
    presence_t *p = NULL;
    assert_int_equal(presence_open(s->name, &o, &p), 0);
    assert_non_null(p);
    presence_close(p);
    struct stat st;
    assert_int_equal(stat(s->path, &st), 0);
    assert_true(st.st_size >= (off_t) sizeof(struct pr_header));
    return st.st_size;
}

/* Creates a valid segment (create_valid()) and maps the whole object /dev/shm/<name>
 * read-write, for patching its header by hand. */
static struct pr_header *create_mapped(const struct seg *s, size_t *size)
{
    create_valid(s);
    int fd = open(s->path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_true(st.st_size >= (off_t) sizeof(struct pr_header));
    void *m = mmap(NULL, (size_t) st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(m != MAP_FAILED);
    close(fd);
    *size = (size_t) st.st_size;
    return m;
}

/* Bounded wait for @n children. Kills (SIGKILL) whatever is still running at the
 * deadline and returns false; stores each wait status in @status. */
static bool wait_children(const pid_t *pids, int n, int *status, unsigned timeout_ms)
{
    bool done[64] = {false};
    int left = n;
    uint64_t deadline = mono_ns() + (uint64_t) timeout_ms * 1000000ull;
    while (left > 0 && mono_ns() < deadline) {
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            pid_t r = waitpid(pids[i], &status[i], WNOHANG);
            if (r == pids[i] || (r < 0 && errno != EINTR)) {
                done[i] = true;
                left--;
            }
        }
        if (left > 0)
            tu_sleep_ms(2);
    }
    if (left == 0)
        return true;
    for (int i = 0; i < n; i++) {
        if (!done[i]) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], &status[i], 0);
        }
    }
    return false;
}

/* What an isolated attach reports. */
struct attach_result {
    int rc;
    int out_untouched; /* on error: *out kept its value */
    uint64_t elapsed_ns;
};

/* presence_open(name, opts) in a forked child (at most 10 s), so that a crash on a
 * damaged object is a clean test failure. Asserts the child exited normally. */
static struct attach_result attach_isolated(const char *name, const presence_options_t *opts)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        alarm(10);
        struct attach_result r = {0, 0, 0};
        presence_t *p = SENTINEL;
        uint64_t t0 = mono_ns();
        r.rc = presence_open(name, opts, &p);
        r.elapsed_ns = mono_ns() - t0;
        r.out_untouched = p == SENTINEL;
        if (r.rc == 0)
            presence_close(p);
        _exit(write(fds[1], &r, sizeof r) == (ssize_t) sizeof r ? 0 : 1);
    }
    close(fds[1]);
    int status = 0;
    bool finished = wait_children(&pid, 1, &status, 15000);
    struct attach_result r = {INT32_MIN, 0, 0};
    ssize_t n = read(fds[0], &r, sizeof r);
    close(fds[0]);
    if (!finished)
        fail_msg("attach of %s did not return within 15 s", name);
    if (WIFSIGNALED(status))
        fail_msg("attach of %s crashed with signal %d", name, WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(n, (ssize_t) sizeof r);
    return r;
}

/* Attach in a child must fail with exactly @want and leave *out untouched. */
static void expect_attach_error(const struct seg *s, const presence_options_t *opts, int want)
{
    struct attach_result r = attach_isolated(s->name, opts);
    if (r.rc != want)
        fail_msg("attach %s: got %s (%d), want %s (%d)", s->name, presence_err_name(r.rc), r.rc,
                 presence_err_name(want), want);
    assert_true(r.out_untouched);
}

/* ---- create / attach / close / unlink ------------------------------------ */

static void test_create_attach_close_unlink(void **state)
{
    struct seg *s = *state;
    presence_options_t o;
    test_small_opts(&o, PRESENCE_CREATE);

    /* No segment yet: a plain attach fails, nothing is created by it. */
    presence_t *p = SENTINEL;
    assert_int_equal(presence_open(s->name, NULL, &p), -ENOENT);
    assert_ptr_equal(p, SENTINEL);
    assert_false(shm_exists(s));

    presence_t *p1 = NULL, *p2 = NULL;
    assert_int_equal(presence_open(s->name, &o, &p1), 0);
    assert_non_null(p1);
    assert_true(shm_exists(s));

    /* A second attachment sees what the first one writes: the same segment. */
    assert_int_equal(presence_open(s->name, NULL, &p2), 0);
    assert_non_null(p2);
    assert_ptr_not_equal(p1, p2);
    assert_int_equal(presence_occupancy(p2, "lobby"), 0);
    assert_int_equal(presence_join(p1, "lobby", "c1", "alice"), PRESENCE_JOINED);
    assert_int_equal(presence_occupancy(p2, "lobby"), 1);
    presence_close(p2);
    presence_close(p1);
    presence_close(NULL); /* a no-op */

    /* Closing detaches only: the segment and its contents stay. The leading '/'
     * form names the same segment. */
    presence_t *p3 = NULL;
    assert_true(shm_exists(s));
    char slashed[160];
    snprintf(slashed, sizeof slashed, "/%s", s->name);
    assert_int_equal(presence_open(slashed, NULL, &p3), 0);
    assert_int_equal(presence_occupancy(p3, "lobby"), 1);

    /* Unlink removes the name; an attachment made before keeps working. */
    assert_int_equal(presence_unlink(s->name), 0);
    assert_false(shm_exists(s));
    assert_int_equal(presence_occupancy(p3, "lobby"), 1);
    assert_int_equal(presence_join(p3, "lobby", "c2", NULL), PRESENCE_JOINED);
    assert_int_equal(presence_occupancy(p3, "lobby"), 2);
    presence_close(p3);

    p = SENTINEL;
    assert_int_equal(presence_open(s->name, NULL, &p), -ENOENT);
    assert_ptr_equal(p, SENTINEL);
    assert_int_equal(presence_unlink(s->name), -ENOENT);
}

static void test_options_persist(void **state)
{
    struct seg *s = *state;
    presence_options_t o;
    presence_options_init(&o);
    /* Distinct, non-default values, so that a swapped or dropped field shows. */
    o.rooms = 100;
    o.connections = 200;
    o.presences = 300;
    o.groups = 10;
    o.group_members = 50;
    o.arena_bytes = 5u * 65536u;
    o.ring_entries = 256;
    o.procs = 7;
    o.readers = 33;
    o.state_max = 1000;
    o.max_age_ms = 12345;
    o.mode = 0640;
    o.flags = PRESENCE_CREATE | PRESENCE_EXCL;

    presence_t *p = NULL;
    assert_int_equal(presence_open(s->name, &o, &p), 0);
    presence_options_t got;
    memset(&got, 0xff, sizeof got);
    presence_get_options(p, &got);
    assert_int_equal(got.rooms, 100);
    presence_close(p);

    /* Re-attach with defaults (which differ in every field): the created values win. */
    presence_options_t dflt;
    presence_options_init(&dflt);
    p = NULL;
    assert_int_equal(presence_open(s->name, &dflt, &p), 0);
    memset(&got, 0xff, sizeof got);
    presence_get_options(p, &got);
    assert_int_equal(got.rooms, o.rooms);
    assert_int_equal(got.connections, o.connections);
    assert_int_equal(got.presences, o.presences);
    assert_int_equal(got.groups, o.groups);
    assert_int_equal(got.group_members, o.group_members);
    assert_int_equal(got.arena_bytes, o.arena_bytes);
    assert_int_equal(got.ring_entries, o.ring_entries);
    assert_int_equal(got.procs, o.procs);
    assert_int_equal(got.readers, o.readers);
    assert_int_equal(got.state_max, o.state_max);
    assert_int_equal(got.max_age_ms, o.max_age_ms);
    assert_int_equal(got.mode, 0640);
    assert_int_equal(got.flags, 0); /* documented: flags 0 */

    /* The stats agree with the options. */
    presence_stats_t st;
    assert_int_equal(presence_stats(p, &st), 0);
    assert_int_equal(st.rooms_cap, o.rooms);
    assert_int_equal(st.connections_cap, o.connections);
    assert_int_equal(st.presences_cap, o.presences);
    assert_int_equal(st.procs_cap, o.procs);
    assert_int_equal(st.ring_entries, o.ring_entries);
    presence_close(p);
}

static void test_mode_ignores_umask(void **state)
{
    struct seg *s = *state;
    presence_options_t o;
    test_small_opts(&o, PRESENCE_CREATE | PRESENCE_EXCL);
    o.mode = 0660;
    mode_t old = umask(0077);
    presence_t *p = NULL;
    int rc = presence_open(s->name, &o, &p);
    umask(old);
    assert_int_equal(rc, 0);

    int fd = open(s->path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    close(fd);
    assert_int_equal(st.st_mode & 07777, 0660);
    presence_options_t got;
    presence_get_options(p, &got);
    assert_int_equal(got.mode, 0660);
    presence_close(p);

    /* ... and it persists for later attachments. */
    p = NULL;
    assert_int_equal(presence_open(s->name, NULL, &p), 0);
    presence_get_options(p, &got);
    assert_int_equal(got.mode, 0660);
    presence_close(p);
    assert_int_equal(stat(s->path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0660);
}

static void test_default_mode(void **state)
{
    struct seg *s = *state;
    presence_options_t o;
    test_small_opts(&o, PRESENCE_CREATE | PRESENCE_EXCL); /* mode left at its default */
    assert_int_equal(o.mode, 0600);
    mode_t old = umask(0); /* a umask-based create would give 0666 or so */
    presence_t *p = NULL;
    int rc = presence_open(s->name, &o, &p);
    umask(old);
    assert_int_equal(rc, 0);
    struct stat st;
    assert_int_equal(stat(s->path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_uid, geteuid());
    presence_options_t got;
    presence_get_options(p, &got);
    assert_int_equal(got.mode, 0600);
    presence_close(p);
}

static void test_excl_existing(void **state)
{
    struct seg *s = *state;
    presence_options_t o;
    test_small_opts(&o, PRESENCE_CREATE | PRESENCE_EXCL);
    presence_t *p1 = NULL;
    assert_int_equal(presence_open(s->name, &o, &p1), 0);
    assert_int_equal(presence_join(p1, "r", "c", NULL), PRESENCE_JOINED);
    struct stat before;
    assert_int_equal(stat(s->path, &before), 0);

    presence_t *p2 = SENTINEL;
    assert_int_equal(presence_open(s->name, &o, &p2), -EEXIST);
    assert_ptr_equal(p2, SENTINEL);

    /* Same object, contents intact: nothing was replaced. */
    struct stat after;
    assert_int_equal(stat(s->path, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino);
    assert_int_equal(presence_occupancy(p1, "r"), 1);

    /* Without EXCL, CREATE on an existing segment attaches it. */
    o.flags = PRESENCE_CREATE;
    o.rooms = 999; /* ignored: the segment exists */
    p2 = NULL;
    assert_int_equal(presence_open(s->name, &o, &p2), 0);
    assert_int_equal(presence_occupancy(p2, "r"), 1);
    presence_options_t got;
    presence_get_options(p2, &got);
    assert_int_equal(got.rooms, 64);
    assert_int_equal(stat(s->path, &after), 0);
    assert_int_equal(after.st_ino, before.st_ino);
    presence_close(p2);
    presence_close(p1);
}

static void test_bad_options(void **state)
{
    struct seg *s = *state;
    struct {
        const char *what;
        presence_options_t o;
    } cases[20];
    size_t n = 0;
#define BAD(desc, stmt)                                \
    do {                                               \
        cases[n].what = desc;                          \
        test_small_opts(&cases[n].o, PRESENCE_CREATE); \
        presence_options_t *o = &cases[n].o;           \
        stmt;                                          \
        n++;                                           \
    } while (0)
    BAD("rooms 0", o->rooms = 0);
    BAD("connections 0", o->connections = 0);
    BAD("presences 0", o->presences = 0);
    BAD("groups 0", o->groups = 0);
    BAD("group_members 0", o->group_members = 0);
    BAD("procs 0", o->procs = 0);
    BAD("readers 0", o->readers = 0);
    BAD("ring not a power of two", o->ring_entries = 1000);
    BAD("ring too small", o->ring_entries = 32);
    BAD("state_max 0", o->state_max = 0);
    BAD("state_max above a page", o->state_max = 70000);
    BAD("max_age 0", o->max_age_ms = 0);
    BAD("arena below a page", o->arena_bytes = 1000);
    BAD("mode with non-permission bits", o->mode = 0170600);
    BAD("too many readers", o->readers = PR_MAX_READERS + 1);
    BAD("too many rooms", o->rooms = PR_MAX_RECORDS + 1);
    BAD("CREATE with RDONLY", o->flags = PRESENCE_CREATE | PRESENCE_RDONLY);
    BAD("CREATE|EXCL with RDONLY", o->flags = PRESENCE_CREATE | PRESENCE_EXCL | PRESENCE_RDONLY);
    BAD("unknown flag", o->flags = PRESENCE_CREATE | (1u << 20));
#undef BAD
    assert_true(n <= sizeof cases / sizeof cases[0]);

    for (size_t i = 0; i < n; i++) {
        presence_t *p = SENTINEL;
        int rc = presence_open(s->name, &cases[i].o, &p);
        if (rc != PRESENCE_EOPTION)
            fail_msg("%s: got %s (%d), want PRESENCE_EOPTION", cases[i].what, presence_err_name(rc),
                     rc);
        assert_ptr_equal(p, SENTINEL);
        if (shm_exists(s))
            fail_msg("%s: a segment was left behind", cases[i].what);
    }
    presence_t *p = SENTINEL;
    assert_int_equal(presence_open(s->name, NULL, &p), -ENOENT);

    /* The good options right next to the bad ones do create (so the above failed
     * for the option, not for the name). */
    presence_options_t good;
    test_small_opts(&good, PRESENCE_CREATE | PRESENCE_EXCL);
    p = NULL;
    assert_int_equal(presence_open(s->name, &good, &p), 0);
    presence_close(p);
}

static void test_bad_names(void **state)
{
    struct seg *s = *state;
    presence_options_t o;
    test_small_opts(&o, PRESENCE_CREATE);
    const char *bad[] = {NULL, "", "/", "a/b", "/a/b", ".", ".."};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        presence_t *p = SENTINEL;
        int rc = presence_open(bad[i], &o, &p);
        if (rc != -EINVAL)
            fail_msg("presence_open(\"%s\", CREATE): got %s (%d), want -EINVAL",
                     bad[i] ? bad[i] : "(null)", presence_err_name(rc), rc);
        assert_ptr_equal(p, SENTINEL);
        rc = presence_open(bad[i], NULL, &p);
        if (rc != -EINVAL)
            fail_msg("presence_open(\"%s\"): got %s (%d), want -EINVAL", bad[i] ? bad[i] : "(null)",
                     presence_err_name(rc), rc);
        rc = presence_unlink(bad[i]);
        if (rc != -EINVAL)
            fail_msg("presence_unlink(\"%s\"): got %s (%d), want -EINVAL",
                     bad[i] ? bad[i] : "(null)", presence_err_name(rc), rc);
    }
    /* A NULL out-pointer is bad input too, and creates nothing. */
    assert_int_equal(presence_open(s->name, &o, NULL), -EINVAL);
    assert_false(shm_exists(s));
}

/* ---- concurrent creators ----------------------------------------------------- */

#define NCREATORS 6
#define ROUNDS    3

static const char *helper_path(void)
{
    const char *h = getenv("PRESENCE_HELPER_CREATE");
#ifdef PRESENCE_HELPER_CREATE
    if (!h || !*h)
        h = PRESENCE_HELPER_CREATE;
#endif
    return h;
}

/* Runs NCREATORS helper_create instances against @name, all starting at the same
 * instant. Fills their exit codes (asserting each exited normally) and the inode
 * each one reported (0 when it reported none). */
static void run_creators(const char *name, const char *mode, int codes[NCREATORS],
                         uint64_t inodes[NCREATORS])
{
    const char *helper = helper_path();
    if (!helper || access(helper, X_OK) != 0)
        fail_msg("helper_create not found (set PRESENCE_HELPER_CREATE): %s",
                 helper ? helper : "(none)");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char deadline[32];
    snprintf(deadline, sizeof deadline, "%" PRIu64, (uint64_t) (tu_realtime_ns() + 300000000u));
    pid_t pids[NCREATORS];
    for (int i = 0; i < NCREATORS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            dup2(fds[1], STDOUT_FILENO);
            close(fds[0]);
            close(fds[1]);
            char *argv[] = {(char *) helper, (char *) name, deadline, (char *) mode, NULL};
            execv(helper, argv);
            _exit(127);
        }
    }
    close(fds[1]);
    int status[NCREATORS] = {0};
    bool finished = wait_children(pids, NCREATORS, status, 20000);

    char buf[1024];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t) r;
    buf[len] = '\0';
    close(fds[0]);

    if (!finished)
        fail_msg("helper_create instances did not finish within 20 s");
    for (int i = 0; i < NCREATORS; i++) {
        if (WIFSIGNALED(status[i]))
            fail_msg("helper_create %d died of signal %d", i, WTERMSIG(status[i]));
        assert_true(WIFEXITED(status[i]));
        codes[i] = WEXITSTATUS(status[i]);
        inodes[i] = 0;
    }
    /* One line per successful helper; order does not matter, only the values. */
    int k = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, "\n", &save); tok && k < NCREATORS;
         tok = strtok_r(NULL, "\n", &save))
        inodes[k++] = strtoull(tok, NULL, 10);
}

/* Entries of /dev/shm whose name starts with @prefix. */
static int count_shm_entries(const char *prefix)
{
    DIR *d = opendir(SHM_DIR);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    size_t plen = strlen(prefix);
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, plen) == 0)
            n++;
    closedir(d);
    return n;
}

static void check_final_segment(const struct seg *s, const uint64_t inodes[NCREATORS])
{
    struct stat st;
    assert_int_equal(stat(s->path, &st), 0);
    for (int i = 0; i < NCREATORS; i++)
        if (inodes[i] != (uint64_t) st.st_ino)
            fail_msg("helper %d attached inode %" PRIu64 ", the name is inode %" PRIu64, i,
                     inodes[i], (uint64_t) st.st_ino);
    presence_t *p = NULL;
    assert_int_equal(presence_open(s->name, NULL, &p), 0);
    presence_strlist_t *msgs = NULL;
    int v = presence_check(p, &msgs);
    if (v != 0 && msgs && msgs->count > 0)
        print_error("presence_check: %s\n", msgs->items[0]);
    presence_strlist_free(msgs);
    assert_int_equal(v, 0);
    presence_options_t got;
    presence_get_options(p, &got);
    assert_int_equal(got.rooms, 64);
    assert_int_equal(got.procs, 16);
    /* The segment is usable, and every helper's process slot was released. */
    assert_int_equal(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    presence_stats_t stats;
    assert_int_equal(presence_stats(p, &stats), 0);
    assert_int_equal(stats.procs_attached, 1);
    presence_close(p);
}

static void test_concurrent_create_excl(void **state)
{
    struct seg *s = *state;
    for (int round = 0; round < ROUNDS; round++) {
        int codes[NCREATORS];
        uint64_t inodes[NCREATORS];
        run_creators(s->name, "excl", codes, inodes);
        int created = 0, existed = 0;
        for (int i = 0; i < NCREATORS; i++) {
            if (codes[i] == 0)
                created++;
            else if (codes[i] == 3)
                existed++;
            else
                fail_msg("round %d: helper %d exited %d (4: attach after -EEXIST failed, "
                         "5: presence_open failed, see stderr)",
                         round, i, codes[i]);
        }
        if (created != 1 || existed != NCREATORS - 1)
            fail_msg("round %d: %d created, %d got -EEXIST; want 1 and %d", round, created, existed,
                     NCREATORS - 1);
        check_final_segment(s, inodes);
        assert_int_equal(presence_unlink(s->name), 0);
    }
}

static void test_concurrent_create_plain(void **state)
{
    struct seg *s = *state;
    for (int round = 0; round < ROUNDS; round++) {
        int codes[NCREATORS];
        uint64_t inodes[NCREATORS];
        run_creators(s->name, "plain", codes, inodes);
        for (int i = 0; i < NCREATORS; i++)
            if (codes[i] != 0)
                fail_msg("round %d: helper %d exited %d, want 0", round, i, codes[i]);
        /* One object under the name (all attached that one), and nothing else of
         * ours in /dev/shm. */
        assert_int_equal(count_shm_entries(s->name), 1);
        check_final_segment(s, inodes);
        assert_int_equal(presence_unlink(s->name), 0);
        assert_int_equal(count_shm_entries(s->name), 0);
    }
}

/* ---- damaged objects ------------------------------------------------------------ */

/* Creates /dev/shm/<name> by hand with @len bytes of @data. */
static void make_object(const struct seg *s, const void *data, size_t len)
{
    int fd = open(s->path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    const unsigned char *d = data;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, d + done, len - done);
        assert_true(w > 0);
        done += (size_t) w;
    }
    close(fd);
}

static void test_attach_garbage(void **state)
{
    struct seg *s = *state;
    size_t len = 64 * 1024;
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    size_t got = 0;
    while (got < len) {
        ssize_t r = getrandom(buf + got, len - got, 0);
        assert_true(r > 0);
        got += (size_t) r;
    }
    uint64_t magic;
    memcpy(&magic, buf, sizeof magic);
    if (magic == PR_MAGIC) /* astronomically unlikely, but then it would not be garbage */
        buf[0] ^= 0xff;
    make_object(s, buf, len);
    free(buf);

    expect_attach_error(s, NULL, PRESENCE_EBADMAGIC);
    presence_options_t o;
    test_small_opts(&o, PRESENCE_RDONLY);
    expect_attach_error(s, &o, PRESENCE_EBADMAGIC);
    /* CREATE on a name taken by garbage does not overwrite it: it attaches it. */
    test_small_opts(&o, PRESENCE_CREATE);
    expect_attach_error(s, &o, PRESENCE_EBADMAGIC);
    struct stat st;
    assert_int_equal(stat(s->path, &st), 0);
    assert_int_equal(st.st_size, (off_t) len);
}

static void test_attach_empty(void **state)
{
    struct seg *s = *state;
    make_object(s, "", 0);
    expect_attach_error(s, NULL, PRESENCE_EBADMAGIC);
}

static void test_attach_truncated(void **state)
{
    struct seg *s = *state;
    off_t size = create_valid(s);
    assert_int_equal(truncate(s->path, size / 2), 0);
    expect_attach_error(s, NULL, PRESENCE_ETRUNCATED);
    presence_options_t o;
    test_small_opts(&o, PRESENCE_RDONLY);
    expect_attach_error(s, &o, PRESENCE_ETRUNCATED);

    /* Shorter than the header but with the magic intact: still truncated. */
    assert_int_equal(truncate(s->path, 64), 0);
    expect_attach_error(s, NULL, PRESENCE_ETRUNCATED);
}

static void test_attach_wrong_version(void **state)
{
    struct seg *s = *state;
    size_t size;
    struct pr_header *h = create_mapped(s, &size);
    assert_int_equal(h->layout_version, PR_LAYOUT_VERSION);
    h->layout_version = PR_LAYOUT_VERSION + 1;
    munmap(h, size);
    expect_attach_error(s, NULL, PRESENCE_EVERSION);
}

static void test_attach_not_ready(void **state)
{
    struct seg *s = *state;
    size_t size;
    struct pr_header *h = create_mapped(s, &size);
    assert_int_equal(h->ready, 1);
    h->ready = 0;
    munmap(h, size);

    presence_options_t o;
    presence_options_init(&o);
    o.attach_timeout_ms = 100;
    struct attach_result r = attach_isolated(s->name, &o);
    if (r.rc != PRESENCE_ENOTREADY)
        fail_msg("got %s (%d), want PRESENCE_ENOTREADY", presence_err_name(r.rc), r.rc);
    assert_true(r.out_untouched);
    /* It waited about attach_timeout_ms: at least ~90 ms, and well under 2 s. */
    if (r.elapsed_ns < 90000000ull || r.elapsed_ns >= 2000000000ull)
        fail_msg("ENOTREADY after %" PRIu64 " ms, want about 100 ms",
                 (uint64_t) (r.elapsed_ns / 1000000ull));
}

static void test_attach_corrupt_offset(void **state)
{
    struct seg *s = *state;
    size_t size;
    struct pr_header *h = create_mapped(s, &size);
    assert_int_equal(h->segment_size, size);
    h->off_ring = h->segment_size + 4096;
    munmap(h, size);
    expect_attach_error(s, NULL, PRESENCE_ECORRUPT);
}

static void test_attach_wrong_boot(void **state)
{
    struct seg *s = *state;
    char boot[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f) {
        if (!fgets(boot, sizeof boot, f))
            boot[0] = '\0';
        fclose(f);
    }
    if (boot[0] == '\0') {
        print_message("[  SKIPPED ] no /proc/sys/kernel/random/boot_id: no boot check\n");
        skip();
    }
    size_t size;
    struct pr_header *h = create_mapped(s, &size);
    assert_true(h->boot_id[0] != '\0');
    assert_int_equal(strncmp(h->boot_id, boot, 36), 0); /* the creator recorded this boot */
    /* Another boot: same shape, different id. */
    h->boot_id[0] = h->boot_id[0] == '0' ? '1' : '0';
    munmap(h, size);
    expect_attach_error(s, NULL, PRESENCE_EBOOT);
}

/* The damage codes are distinct values with distinct texts. */
static void test_damage_codes_distinct(void **state)
{
    (void) state;
    const int codes[] = {PRESENCE_EBADMAGIC,
                         PRESENCE_ETRUNCATED,
                         PRESENCE_EVERSION,
                         PRESENCE_ENOTREADY,
                         PRESENCE_ECORRUPT,
                         PRESENCE_EBOOT,
                         PRESENCE_EOWNER,
                         -ENOENT,
                         -EEXIST};
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) {
            assert_int_not_equal(codes[i], codes[j]);
            assert_string_not_equal(presence_err_name(codes[i]), presence_err_name(codes[j]));
        }
}

/* ---- another owner ------------------------------------------------------------ */

static void test_other_owner(void **state)
{
    struct seg *s = *state;
    if (geteuid() != 0) {
        print_message("[  SKIPPED ] not root: cannot give a segment to another uid\n");
        skip();
    }
    create_valid(s);
    assert_int_equal(chown(s->path, 65534, 65534), 0);

    expect_attach_error(s, NULL, PRESENCE_EOWNER);
    presence_options_t o;
    test_small_opts(&o, PRESENCE_RDONLY);
    expect_attach_error(s, &o, PRESENCE_EOWNER);
    test_small_opts(&o, PRESENCE_CREATE); /* exists: CREATE attaches, and is refused too */
    expect_attach_error(s, &o, PRESENCE_EOWNER);

    presence_options_init(&o);
    o.flags = PRESENCE_ANY_OWNER;
    presence_t *p = NULL;
    assert_int_equal(presence_open(s->name, &o, &p), 0);
    assert_non_null(p);
    assert_int_equal(presence_join(p, "r", "c", NULL), PRESENCE_JOINED);
    assert_int_equal(presence_occupancy(p, "r"), 1);
    presence_close(p);
    struct stat st;
    assert_int_equal(stat(s->path, &st), 0);
    assert_int_equal(st.st_uid, 65534); /* attaching did not take it over */
}

/* ---- error texts ------------------------------------------------------------------ */

static void test_strerror_names(void **state)
{
    (void) state;
    static const struct {
        int code;
        const char *name;
    } all[] = {
#define XX(name, val, msg) {PRESENCE_##name, "PRESENCE_" #name},
        PRESENCE_ERRNO_MAP(XX)
#undef XX
    };
    size_t n = sizeof all / sizeof all[0];
    assert_true(n >= 17);
    const char *enospc_msg = presence_strerror(-ENOSPC);
    const char *enospc_name = presence_err_name(-ENOSPC);
    assert_non_null(enospc_msg);
    assert_true(enospc_msg[0] != '\0');
    assert_string_equal(enospc_name, "ENOSPC");
    assert_string_equal(enospc_msg, strerror(ENOSPC));

    for (size_t i = 0; i < n; i++) {
        const char *msg = presence_strerror(all[i].code);
        const char *name = presence_err_name(all[i].code);
        assert_non_null(msg);
        assert_non_null(name);
        assert_true(msg[0] != '\0');
        assert_string_equal(name, all[i].name);
        assert_string_not_equal(name, "UNKNOWN");
        assert_string_not_equal(msg, enospc_msg);
        assert_string_not_equal(msg, "unknown error");
        /* Outside errno's range, so never confused with a -errno. */
        assert_true(all[i].code < -4095);
        for (size_t j = i + 1; j < n; j++) {
            assert_int_not_equal(all[i].code, all[j].code);
            assert_string_not_equal(msg, presence_strerror(all[j].code));
            assert_string_not_equal(name, presence_err_name(all[j].code));
        }
    }
    /* Never NULL, even for what no table knows. */
    assert_non_null(presence_strerror(-30199));
    assert_string_equal(presence_err_name(-30199), "UNKNOWN");
    assert_string_equal(presence_err_name(-EROFS), "EROFS");
    assert_non_null(presence_strerror(0));
    assert_non_null(presence_err_name(5));
}

/* ---- read-only attachments ---------------------------------------------------------- */

static void test_rdonly(void **state)
{
    struct seg *s = *state;
    presence_options_t o;
    test_small_opts(&o, PRESENCE_CREATE | PRESENCE_EXCL);
    presence_t *rw = NULL;
    assert_int_equal(presence_open(s->name, &o, &rw), 0);
    presence_conn_t handle;
    assert_int_equal(presence_join_ex(rw, "room1", "c1", "u1", 0, 0, &handle), PRESENCE_JOINED);
    assert_int_equal(presence_join(rw, "room1", "c2", NULL), PRESENCE_JOINED);
    const char *groom[] = {"room1"};
    assert_int_equal(presence_group_add(rw, "g", groom, 1), 1);

    presence_options_t ro_opts;
    presence_options_init(&ro_opts);
    ro_opts.flags = PRESENCE_RDONLY;
    presence_t *ro = NULL;
    assert_int_equal(presence_open(s->name, &ro_opts, &ro), 0);
    assert_non_null(ro);

    /* Queries work. */
    presence_stats_t st;
    assert_int_equal(presence_stats(ro, &st), 0);
    assert_int_equal(st.rooms, 1);
    assert_int_equal(st.connections, 2);
    assert_int_equal(st.presences, 2);
    assert_int_equal(st.presences_cap, o.presences);
    uint64_t joins = st.joins;
    assert_int_equal(presence_occupancy(ro, "room1"), 2);
    assert_int_equal(presence_occupancy(ro, "nowhere"), 0);
    presence_options_t got;
    presence_get_options(ro, &got);
    assert_int_equal(got.rooms, o.rooms);

    /* Every write is refused with -EROFS and changes nothing. */
    const char *rooms[] = {"room1"};
    assert_int_equal(presence_join(ro, "room2", "c3", NULL), -EROFS);
    assert_int_equal(presence_join(ro, "room1", "c1", "u1"), -EROFS);
    assert_int_equal(presence_join_ex(ro, "room2", "c3", NULL, 1000, PRESENCE_BOUND, NULL), -EROFS);
    assert_int_equal(presence_leave(ro, "room1", "c1"), -EROFS);
    assert_int_equal(presence_leave_all(ro, "c2"), -EROFS);
    assert_int_equal(presence_touch(ro, "c1"), -EROFS);
    assert_int_equal(presence_touch_handle(ro, handle), -EROFS);
    assert_true(presence_on_message(ro, "c1", "\"heartbeat\"", 11) == -EROFS);
    assert_int_equal(presence_prune(ro, 1), -EROFS);
    assert_int_equal(presence_prune_rooms(ro), -EROFS);
    assert_int_equal(presence_set_state(ro, rooms, 1, NULL, 0, "c1", "{\"a\":1}"), -EROFS);
    assert_int_equal(presence_group_add(ro, "g2", rooms, 1), -EROFS);
    assert_int_equal(presence_group_remove(ro, "g", rooms, 1), -EROFS);
    assert_int_equal(presence_group_delete(ro, "g"), -EROFS);
    assert_int_equal(presence_maintain(ro), -EROFS);

    assert_int_equal(presence_occupancy(ro, "room1"), 2);
    assert_int_equal(presence_occupancy(ro, "room2"), 0);
    assert_int_equal(presence_stats(ro, &st), 0);
    assert_int_equal(st.presences, 2);
    assert_int_equal(st.groups, 1);
    assert_int_equal(st.joins, joins);

    /* The read-only view follows the writer's changes. */
    assert_int_equal(presence_leave(rw, "room1", "c2"), 1);
    assert_int_equal(presence_occupancy(ro, "room1"), 1);
    presence_close(ro);
    /* The writer is unaffected by the reader's close. */
    assert_int_equal(presence_occupancy(rw, "room1"), 1);
    presence_close(rw);
}

/* Field @field (e.g. "Rss", "ShmemPmdMapped") of the mapping that contains
 * @addr in /proc/self/smaps, in kB; -1 if not found. */
static long smaps_kb(const void *addr, const char *field)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    size_t flen = strlen(field);
    bool in = false;
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in = (uintptr_t) addr >= lo && (uintptr_t) addr < hi;
        else if (in && strncmp(line, field, flen) == 0 && line[flen] == ':' &&
                 sscanf(line + flen + 1, "%ld kB", &kb) == 1)
            break;
    }
    fclose(f);
    return kb;
}

/* Whether /dev/shm is mounted to give files 2 MiB pages by itself (huge=). */
static bool huge_mount(void)
{
    FILE *f = fopen("/proc/mounts", "r");
    if (!f)
        return false;
    char line[512];
    bool huge = false;
    while (fgets(line, sizeof line, f))
        if (strstr(line, " /dev/shm ") && strstr(line, "huge=") && !strstr(line, "huge=never"))
            huge = true;
    fclose(f);
    return huge;
}

/* Whether this kernel moves shared memory into 2 MiB pages on request (the
 * test's own 4 MiB file, outside the library). */
static bool kernel_collapses(void)
{
    const size_t huge = 2u << 20;
    char name[64];
    snprintf(name, sizeof name, "/pr-test-%d-probe", (int) getpid());
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0)
        return false;
    shm_unlink(name);
    bool ok = false;
    char *r = posix_fallocate(fd, 0, (off_t) (2 * huge)) == 0
                  ? mmap(NULL, 3 * huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                  : MAP_FAILED;
    if (r != MAP_FAILED) {
        char *at = (char *) (((uintptr_t) r + huge - 1) & ~(uintptr_t) (huge - 1));
        char *m = mmap(at, 2 * huge, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
        ok = m != MAP_FAILED && madvise(m, 2 * huge, 25 /* MADV_COLLAPSE */) == 0;
        munmap(r, 3 * huge);
    }
    close(fd);
    return ok;
}

/* PRESENCE_HUGE_PAGES: the segment is in 2 MiB pages exactly when the kernel
 * can do it, get_options says which, and a segment without it is not. */
static void test_huge_pages(void **state)
{
    struct seg *s = *state;
    bool can = kernel_collapses();
    printf("# this kernel %s collapse shared memory into 2 MiB pages\n", can ? "can" : "cannot");
    for (int want = 0; want <= 1; want++) {
        presence_options_t o;
        presence_options_init(&o);
        o.flags = PRESENCE_CREATE | PRESENCE_EXCL | (want ? PRESENCE_HUGE_PAGES : 0);
        presence_t *p = NULL;
        assert_int_equal(presence_open(s->name, &o, &p), 0);
        presence_options_t got;
        presence_get_options(p, &got);
        bool huge = want && can;
        assert_int_equal(got.flags, huge ? PRESENCE_HUGE_PAGES : 0);
        /* a second attachment, as another process makes it, sees the same */
        presence_t *q = NULL;
        assert_int_equal(presence_open(s->name, NULL, &q), 0);
        presence_get_options(q, &got);
        assert_int_equal(got.flags, huge ? PRESENCE_HUGE_PAGES : 0);
        assert_int_equal(presence_join(q, "room", "conn", "user"), PRESENCE_JOINED);
        assert_int_equal(presence_occupancy(p, "room"), 1);
        /* the kernel's own account of q's mapping, once every page of it is touched */
        const volatile char *m = (const volatile char *) q->base;
        for (size_t off = 0; off < q->size; off += 4096)
            (void) m[off];
        long kb = smaps_kb((const void *) m, "ShmemPmdMapped");
        printf("# HUGE_PAGES %s: %ld kB of %zu kB mapped by 2 MiB pages\n", want ? "on" : "off", kb,
               q->size / 1024);
        if (huge) /* every whole 2 MiB stretch */
            assert_int_equal(kb, (long) ((q->size / 1024) & ~(size_t) 2047));
        else if (!huge_mount())
            assert_int_equal(kb, 0);
        presence_close(q);
        presence_close(p);
        assert_int_equal(presence_unlink(s->name), 0);
    }
}

/* PRESENCE_POPULATE: an attachment with it has every page of the segment
 * mapped (resident in its page tables) before any operation, read-only too; one
 * without it has only what open itself read. The flag changes nothing else: it
 * is not a segment option (get_options does not report it). */
static void test_populate(void **state)
{
    struct seg *s = *state;
    presence_options_t o;
    test_small_opts(&o, PRESENCE_CREATE | PRESENCE_EXCL);
    presence_t *p = NULL;
    assert_int_equal(presence_open(s->name, &o, &p), 0);
    long total = (long) (p->size / 1024);
    long plain = smaps_kb(p->base, "Rss");
    printf("# without POPULATE: %ld of %ld kB mapped at open\n", plain, total);
    assert_true(plain >= 0 && plain < total / 2);
    const unsigned modes[] = {PRESENCE_POPULATE, PRESENCE_POPULATE | PRESENCE_RDONLY};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        presence_options_t a;
        presence_options_init(&a);
        a.flags = modes[i];
        presence_t *q = NULL;
        assert_int_equal(presence_open(s->name, &a, &q), 0);
        long kb = smaps_kb(q->base, "Rss");
        printf("# POPULATE%s: %ld of %ld kB mapped at open\n",
               (modes[i] & PRESENCE_RDONLY) ? " | RDONLY" : "", kb, total);
        /* the last page may be partly past the segment's end */
        assert_true(kb >= total - 4 && kb <= total + 4);
        presence_options_t got;
        presence_get_options(q, &got);
        assert_int_equal(got.flags, 0);
        if (!(modes[i] & PRESENCE_RDONLY))
            assert_int_equal(presence_join(q, "room", "conn", "user"), PRESENCE_JOINED);
        assert_int_equal(presence_occupancy(q, "room"), 1);
        presence_close(q);
    }
    presence_close(p);
}

#define T(fn, name) \
    cmocka_unit_test_prestate_setup_teardown(fn, seg_setup, seg_teardown, (void *) (name))

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_create_attach_close_unlink, "lifecycle"),
        T(test_options_persist, "options"),
        T(test_mode_ignores_umask, "mode"),
        T(test_default_mode, "defmode"),
        T(test_excl_existing, "excl"),
        T(test_bad_options, "badopt"),
        T(test_bad_names, "badname"),
        T(test_concurrent_create_excl, "race-excl"),
        T(test_concurrent_create_plain, "race-plain"),
        T(test_attach_garbage, "garbage"),
        T(test_attach_empty, "empty"),
        T(test_attach_truncated, "truncated"),
        T(test_attach_wrong_version, "version"),
        T(test_attach_not_ready, "notready"),
        T(test_attach_corrupt_offset, "corrupt"),
        T(test_attach_wrong_boot, "boot"),
        cmocka_unit_test(test_damage_codes_distinct),
        T(test_other_owner, "owner"),
        cmocka_unit_test(test_strerror_names),
        T(test_rdonly, "rdonly"),
        T(test_huge_pages, "huge"),
        T(test_populate, "populate"),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
