/*
 * fuzz_common.h -- helpers shared by the libFuzzer targets (fuzz_segment.c,
 * fuzz_api.c): segment names unique to the process, removal of segments left
 * by fuzzer processes that died, and the error-code check every rejection
 * must pass.
 */
#ifndef PR_FUZZ_COMMON_H
#define PR_FUZZ_COMMON_H

#include "presence.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_FAIL(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "FUZZ FAILURE %s:%d: ", __FILE__, __LINE__);                             \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        abort();                                                                                   \
    } while (0)

#define FUZZ_ASSERT(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond))                                                                               \
            FUZZ_FAIL("assertion '" #cond "' failed: " __VA_ARGS__);                               \
    } while (0)

/* A rejection must be a negative, known code with a non-empty description. */
static inline void fuzz_check_err(int rc, const char *what)
{
    if (rc >= 0)
        return;
    const char *msg = presence_strerror(rc);
    const char *name = presence_err_name(rc);
    if (!msg || !*msg || !name || strcmp(name, "UNKNOWN") == 0)
        FUZZ_FAIL("%s: error %d has no name/description (%s / %s)", what, rc,
                  name ? name : "(null)", msg ? msg : "(null)");
}

/* Unlinks /dev/shm/<prefix><pid>* segments whose process no longer exists
 * (left by a fuzzer that crashed: that is what it is for). */
static inline void fuzz_remove_stale(const char *prefix)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    size_t pl = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, pl) != 0)
            continue;
        char *end;
        long pid = strtol(e->d_name + pl, &end, 10);
        if (end == e->d_name + pl || pid <= 0 || (*end != '\0' && *end != '-'))
            continue;
        if (kill((pid_t) pid, 0) != 0 && errno == ESRCH)
            presence_unlink(e->d_name);
    }
    closedir(d);
}

#endif /* PR_FUZZ_COMMON_H */
