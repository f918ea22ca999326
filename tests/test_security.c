/*
 * test_security.c -- who may do what: segments are private by default, another
 * user's segment is refused unless explicitly allowed, and presence-reaper
 * refuses registrations from another uid (SO_PEERCRED) even when the socket's
 * file permissions would let them connect. The uid tests need root (to become
 * another user); without it they are skipped with a message.
 */
#include "ipc.h"
#include "presence.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#ifndef PRESENCE_REAPER
#    define PRESENCE_REAPER "presence-reaper"
#endif
#define NOBODY 65534

static char seg[64], sock_path[108];
static pid_t reaper = -1;

static int setup(void **state)
{
    (void) state;
    snprintf(seg, sizeof seg, "pr-test-%d-sec", (int) getpid());
    snprintf(sock_path, sizeof sock_path, "/tmp/pr-test-%d-sec.sock", (int) getpid());
    presence_unlink(seg);
    return 0;
}

static int teardown(void **state)
{
    (void) state;
    if (reaper > 0) {
        kill(reaper, SIGTERM);
        waitpid(reaper, NULL, 0);
        reaper = -1;
    }
    unlink(sock_path);
    presence_unlink(seg);
    return 0;
}

static void test_default_mode_is_private(void **state)
{
    (void) state;
    presence_options_t o;
    presence_options_init(&o);
    o.flags = PRESENCE_CREATE | PRESENCE_EXCL;
    presence_t *p;
    mode_t old = umask(0);
    assert_int_equal(presence_open(seg, &o, &p), 0);
    umask(old);
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/%s", seg);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    presence_close(p);
}

/* Forks a child that becomes uid NOBODY and runs @fn; returns its exit code. */
static int as_nobody(int (*fn)(void))
{
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(NOBODY) != 0 || setuid(NOBODY) != 0)
            _exit(90);
        _exit(fn());
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

static int attach_other_users_segment(void)
{
    presence_t *p;
    int rc = presence_open(seg, NULL, &p);
    return rc == -EACCES ? 0 : 1; /* 0600 and not ours: the kernel refuses */
}

static void test_other_user_cannot_attach(void **state)
{
    (void) state;
    if (geteuid() != 0) {
        skip();
    }
    presence_options_t o;
    presence_options_init(&o);
    o.flags = PRESENCE_CREATE | PRESENCE_EXCL;
    presence_t *p;
    assert_int_equal(presence_open(seg, &o, &p), 0);
    assert_int_equal(as_nobody(attach_other_users_segment), 0);
    presence_close(p);
}

static void start_reaper(void)
{
    reaper = fork();
    if (reaper == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 2);
        const char *path = getenv("PRESENCE_REAPER") ? getenv("PRESENCE_REAPER") : PRESENCE_REAPER;
        execl(path, path, "-s", seg, "--create", "--socket", sock_path, (char *) NULL);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) { /* up to 2 s for the socket to appear */
        struct stat st;
        if (stat(sock_path, &st) == 0)
            return;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    fail_msg("presence-reaper did not create %s", sock_path);
}

/* Connects and sends a registration; 0 if the reaper refused (closed the
 * connection or never answered), 1 if it acknowledged. */
static int register_with_reaper(void)
{
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, sock_path, strlen(sock_path));
    if (s < 0 || connect(s, (struct sockaddr *) &sa, sizeof sa) != 0)
        return 2; /* could not even connect */
    struct timeval tv = {2, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int pidfd = (int) syscall(SYS_pidfd_open, getpid(), 0);
    struct pr_ipc_msg m = {PR_IPC_MAGIC, PR_IPC_PROC, 0, 1, 0, 0, 0, 0};
    if (pr__ipc_send(s, &m, pidfd) != 0)
        return 0;
    int fd = -1;
    int rc = pr__ipc_recv(s, &m, &fd);
    if (fd >= 0)
        close(fd);
    close(s);
    return rc == 0 && m.type == PR_IPC_ACK && m.status == 0 ? 1 : 0;
}

static void test_reaper_refuses_other_uid(void **state)
{
    (void) state;
    if (geteuid() != 0) {
        skip();
    }
    start_reaper();
    /* The socket is 0600: another user cannot even connect. */
    assert_int_equal(as_nobody(register_with_reaper), 2);
    /* Open the file permissions: the reaper itself must still refuse (SO_PEERCRED). */
    assert_int_equal(chmod(sock_path, 0777), 0);
    assert_int_equal(as_nobody(register_with_reaper), 0);
    /* Our own uid is accepted (so the refusal above is about the uid). */
    assert_int_equal(register_with_reaper(), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_default_mode_is_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_user_cannot_attach, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reaper_refuses_other_uid, setup, teardown),
    };
    return cmocka_run_group_tests_name("security", tests, NULL, NULL);
}
