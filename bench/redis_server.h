/*
 * redis_server.h -- presence-bench: a private redis-server for the redis backends.
 *
 * Started by the harness itself on a unix socket in a fresh temporary directory, with
 * no persistence and no TCP port (--save "" --appendonly no --port 0 --unixsocket ...),
 * ready once it answers PING, stopped by its pid (SIGTERM, waitpid) at the end.
 */
#ifndef BENCH_REDIS_SERVER_H
#define BENCH_REDIS_SERVER_H

#include <stddef.h>
#include <sys/types.h>

typedef struct redis_server {
    pid_t pid;
    char dir[64];
    char sock[128];
    char log[128];
} redis_server_t;

/** Finds the redis-server binary ($PRESENCE_BENCH_REDIS_SERVER, else $PATH, else
 *  /usr/bin/redis-server). @return 1 and the path, or 0 with the reason in @p path. */
int redis_server_find(char *path, size_t pathlen);

/** Starts a server and waits (up to 10 s) until it answers PING. @return 0 or -1. */
int redis_server_start(redis_server_t *s, char *err, size_t errlen);

/** Stops it (SIGTERM, then SIGKILL after 5 s) and removes its directory. */
void redis_server_stop(redis_server_t *s);

#endif /* BENCH_REDIS_SERVER_H */
