/*
 * helper_create.c -- one of several processes racing to create the same segment
 * (run by test_segment's concurrent-create tests; never a test by itself).
 *
 *   helper_create NAME DEADLINE_NS MODE
 *
 * Waits until CLOCK_REALTIME reaches DEADLINE_NS (so that all instances call
 * presence_open() at the same moment), then:
 *   MODE "excl":  presence_open(NAME, CREATE|EXCL). Exits 0 if it created the
 *                 segment; on -EEXIST attaches with a plain presence_open() and
 *                 exits 3 (or 4 if that attach fails).
 *   MODE "plain": presence_open(NAME, CREATE). Exits 0 on success.
 * On success prints one line "INODE\n" (the inode of the object it is attached to)
 * to stdout in a single write(). Other exit codes:
 *   5 presence_open failed otherwise, 6 usage, 7 deadline out of range,
 *   8 the attached segment's options are not the ones all helpers create with,
 *   9 fstat/write failed.
 * No cmocka here: checks are plain and the parent asserts on the exit status.
 */
#include "internal.h"
#include "test_util.h"
#include "presence.h"
#include "test_opts.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Sleeps until ~1 ms before @deadline, then spins until it is reached. */
static void wait_until(uint64_t deadline)
{
    for (;;) {
        uint64_t now = tu_realtime_ns();
        if (now >= deadline)
            return;
        if (deadline - now > 2000000ull) {
            uint64_t d = deadline - now - 1000000ull;
            struct timespec ts = {(time_t) (d / 1000000000ull), (long) (d % 1000000000ull)};
            nanosleep(&ts, NULL);
        }
    }
}

/* Verifies the attachment and reports its inode. Returns the exit code to use. */
static int report(presence_t *p, int ok_code)
{
    presence_options_t want, got;
    test_small_opts(&want, 0);
    presence_get_options(p, &got);
    if (got.rooms != want.rooms || got.connections != want.connections ||
        got.presences != want.presences || got.arena_bytes != want.arena_bytes ||
        got.ring_entries != want.ring_entries || got.procs != want.procs) {
        fprintf(stderr, "helper_create[%d]: attached segment has unexpected options\n",
                (int) getpid());
        presence_close(p);
        return 8;
    }
    struct stat st;
    if (fstat(p->fd, &st) != 0) {
        presence_close(p);
        return 9;
    }
    char line[64];
    int n = snprintf(line, sizeof line, "%" PRIu64 "\n", (uint64_t) st.st_ino);
    ssize_t w = write(STDOUT_FILENO, line, (size_t) n); /* < PIPE_BUF: atomic */
    presence_close(p);
    return w == n ? ok_code : 9;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: helper_create NAME DEADLINE_NS excl|plain\n");
        return 6;
    }
    alarm(20); /* never outlive the test, whatever happens */
    const char *name = argv[1];
    char *end = NULL;
    errno = 0;
    uint64_t deadline = strtoull(argv[2], &end, 10);
    if (errno || !end || *end || deadline > tu_realtime_ns() + 10000000000ull) {
        fprintf(stderr, "helper_create: deadline out of range: %s\n", argv[2]);
        return 7;
    }
    bool excl;
    if (strcmp(argv[3], "excl") == 0)
        excl = true;
    else if (strcmp(argv[3], "plain") == 0)
        excl = false;
    else {
        fprintf(stderr, "helper_create: bad mode %s\n", argv[3]);
        return 6;
    }

    presence_options_t o;
    test_small_opts(&o, PRESENCE_CREATE | (excl ? PRESENCE_EXCL : 0u));
    wait_until(deadline);

    presence_t *p = NULL;
    int rc = presence_open(name, &o, &p);
    if (rc == 0)
        return report(p, 0);
    if (excl && rc == -EEXIST) {
        presence_t *q = NULL;
        int rc2 = presence_open(name, NULL, &q);
        if (rc2 != 0) {
            fprintf(stderr, "helper_create[%d]: -EEXIST, then attach failed: %s\n", (int) getpid(),
                    presence_err_name(rc2));
            return 4;
        }
        return report(q, 3);
    }
    fprintf(stderr, "helper_create[%d]: presence_open: %s (%d)\n", (int) getpid(),
            presence_err_name(rc), rc);
    return 5;
}
