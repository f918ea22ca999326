/*
 * redis_server.c -- presence-bench: starts, checks and stops the private redis-server
 * the redis backends talk to (see redis_server.h).
 */
#include "redis_server.h"

#include "cleanup.h"
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

int redis_server_find(char *path, size_t pathlen)
{
    const char *env = getenv("PRESENCE_BENCH_REDIS_SERVER");
    if (env != NULL && env[0] != '\0') {
        if (access(env, X_OK) == 0) {
            snprintf(path, pathlen, "%s", env);
            return 1;
        }
        snprintf(path, pathlen, "PRESENCE_BENCH_REDIS_SERVER=%s is not executable", env);
        return 0;
    }
    const char *p = getenv("PATH");
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t) (end - p) : strlen(p);
        if (n > 0 && n < pathlen - 16) {
            snprintf(path, pathlen, "%.*s/redis-server", (int) n, p);
            if (access(path, X_OK) == 0)
                return 1;
        }
        p = end ? end + 1 : NULL;
    }
    snprintf(path, pathlen, "/usr/bin/redis-server");
    if (access(path, X_OK) == 0)
        return 1;
    snprintf(path, pathlen, "redis-server not found (install the Debian package redis-server)");
    return 0;
}

/* The last line of the server's log, for error messages. */
static void log_tail(const redis_server_t *s, char *out, size_t outlen)
{
    out[0] = '\0';
    FILE *f = fopen(s->log, "r");
    if (f == NULL)
        return;
    char line[256];
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] != '\0')
            snprintf(out, outlen, "%.150s", line);
    }
    fclose(f);
}

static int ping(const char *sock)
{
    struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
    redisContext *c = redisConnectUnixWithTimeout(sock, tv);
    int ok = 0;
    if (c != NULL && c->err == 0) {
        redisReply *r = redisCommand(c, "PING");
        ok = r != NULL && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        if (r != NULL)
            freeReplyObject(r);
    }
    if (c != NULL)
        redisFree(c);
    return ok;
}

static void remove_files(redis_server_t *s)
{
    unlink(s->sock);
    unlink(s->log);
    rmdir(s->dir);
    cleanup_del_path(s->sock);
    cleanup_del_path(s->log);
    cleanup_del_path(s->dir);
}

int redis_server_start(redis_server_t *s, char *err, size_t errlen)
{
    char bin[256];
    memset(s, 0, sizeof *s);
    if (!redis_server_find(bin, sizeof bin)) {
        snprintf(err, errlen, "%s", bin);
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 24)
        tmp = "/tmp";
    snprintf(s->dir, sizeof s->dir, "%s/presence-bench-XXXXXX", tmp);
    if (mkdtemp(s->dir) == NULL) {
        snprintf(err, errlen, "redis: mkdtemp %s: %s", s->dir, strerror(errno));
        return -1;
    }
    snprintf(s->sock, sizeof s->sock, "%s/redis.sock", s->dir);
    snprintf(s->log, sizeof s->log, "%s/redis.log", s->dir);
    cleanup_add_path(s->dir, 1);
    cleanup_add_path(s->sock, 0);
    cleanup_add_path(s->log, 0);

    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "redis: fork: %s", strerror(errno));
        remove_files(s);
        return -1;
    }
    if (pid == 0) {
        cleanup_forget_all();
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int nul = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        if (nul >= 0)
            dup2(nul, STDIN_FILENO);
        execl(bin, bin, "--save", "", "--appendonly", "no", "--port", "0", "--unixsocket", s->sock,
              "--unixsocketperm", "700", "--dir", s->dir, "--daemonize", "no", "--loglevel",
              "warning", (char *) NULL);
        dprintf(STDERR_FILENO, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    s->pid = pid;
    cleanup_add_pid(pid);

    uint64_t deadline = now_ns() + 10000000000ull;
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            char tail[200];
            log_tail(s, tail, sizeof tail);
            snprintf(err, errlen, "redis-server exited at start-up%s%s", tail[0] ? ": " : "", tail);
            cleanup_del_pid(pid);
            s->pid = 0;
            remove_files(s);
            return -1;
        }
        if (access(s->sock, F_OK) == 0 && ping(s->sock))
            return 0;
        if (now_ns() > deadline) {
            snprintf(err, errlen, "redis-server did not answer PING within 10 s");
            redis_server_stop(s);
            return -1;
        }
        sleep_ns(10000000);
    }
}

void redis_server_stop(redis_server_t *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        uint64_t deadline = now_ns() + 5000000000ull;
        int st;
        while (waitpid(s->pid, &st, WNOHANG) == 0) {
            if (now_ns() > deadline) {
                kill(s->pid, SIGKILL);
                waitpid(s->pid, &st, 0);
                break;
            }
            sleep_ns(5000000);
        }
        cleanup_del_pid(s->pid);
        s->pid = 0;
    }
    if (s->dir[0] != '\0')
        remove_files(s);
    s->dir[0] = '\0';
}
