/*
 * backend_redis.c -- presence-bench: presence kept in a real redis-server, the way real
 * systems keep it there, through hiredis over a unix socket. Two backends share this
 * file and one private server (redis_server.c): "redis" waits for the replies of each
 * operation before the next one, "redis-pipe" sends 100 operations per round trip
 * (its latency figures are the round trip of the whole batch, what each op in it waits).
 *
 * Keys (expiry scores are CLOCK_REALTIME milliseconds; timeout 60 s unless given):
 *   pr:z:<room>   sorted set  connection -> expiry time
 *   pr:h:<room>   hash        connection -> "<uuid>\n<state JSON>"
 *   pr:u:<uuid>   set         rooms where the user is (where_now's reverse index)
 *   pr:rooms      set         every room (what prune walks)
 * Operations; the commands of one operation go in one round trip (never MULTI, which
 * would only slow redis down):
 *   join      ZADD z + HSETNX h + SADD u + SADD pr:rooms
 *   leave     ZREM z + HDEL h + SREM u          (the caller knows its connection's user)
 *   touch     ZADD z XX                         (one room: each benchmark connection is
 *                                                in one room; redis cannot tell "not
 *                                                present" without another round trip)
 *   here_now  ZRANGEBYSCORE z now +inf + HGETALL h
 *   where_now SMEMBERS u
 *   get_state HGET h conn                       (by connection id: a shortcut the
 *                                                library, which resolves the user, lacks)
 *   prune     SMEMBERS pr:rooms, then per batch of 100 rooms: ZRANGEBYSCORE -inf (now,
 *             HMGET (the uuids), HDEL + ZREMRANGEBYSCORE + SREM, pipelined.
 * Each process opens its own connection. The database is flushed at every setup.
 */
#include "backend.h"
#include "redis_server.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#define RD_DEFAULT_MS  60000u
#define RD_PIPE_DEPTH  100u
#define RD_PRUNE_BATCH 100u
#define RD_POP_CHUNK   1000u
#define RD_EREPLY      (-1) /* an error reply; message in h->err */
#define RD_EPROTO      (-2) /* a reply of an unexpected type */

typedef struct rd_handle {
    redisContext *c;
    bool pipe;
    unsigned pending; /* replies queued, read by flush() */
    char err[256];
} rd_handle_t;

static redis_server_t g_server;
static bool g_started;
static char g_start_error[256];

/* ------------------------------------------------------- private helpers ---- */

static long long realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *uuid_of(const bench_key_t *k)
{
    return k->user ? k->user : k->conn;
}

static int conn_error(rd_handle_t *h)
{
    snprintf(h->err, sizeof h->err, "redis connection: %s",
             h->c->errstr[0] ? h->c->errstr : "lost");
    return BENCH_FATAL;
}

/*
 * Completes an operation of @p n queued commands. Pipelined: counts them for flush()
 * and returns 0. Otherwise reads the @p n replies, hands the first @p nkeep to the
 * caller through @p keep (to free) and returns 0, RD_EREPLY or BENCH_FATAL.
 */
static int rd_complete(rd_handle_t *h, unsigned n, redisReply **keep, unsigned nkeep)
{
    if (h->pipe) {
        h->pending += n;
        return 0;
    }
    int rc = 0;
    for (unsigned i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(h->c, &r) != REDIS_OK || r == NULL) {
            for (unsigned j = 0; j < i && j < nkeep; j++)
                freeReplyObject(keep[j]);
            return conn_error(h);
        }
        redisReply *rep = r;
        if (rep->type == REDIS_REPLY_ERROR && rc == 0) {
            snprintf(h->err, sizeof h->err, "redis: %s", rep->str);
            rc = RD_EREPLY;
        }
        if (i < nkeep)
            keep[i] = rep;
        else
            freeReplyObject(rep);
    }
    if (rc != 0)
        for (unsigned j = 0; j < n && j < nkeep; j++)
            freeReplyObject(keep[j]);
    return rc;
}

/* Reads @p n replies, storing them in @p out (NULL: discard). */
static int read_replies(rd_handle_t *h, size_t n, redisReply **out)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply(h->c, &r) != REDIS_OK || r == NULL) {
            for (size_t j = 0; out != NULL && j < i; j++) {
                freeReplyObject(out[j]);
                out[j] = NULL;
            }
            return conn_error(h);
        }
        redisReply *rep = r;
        if (rep->type == REDIS_REPLY_ERROR && rc == 0) {
            snprintf(h->err, sizeof h->err, "redis: %s", rep->str);
            rc = RD_EREPLY;
        }
        if (out)
            out[i] = rep;
        else
            freeReplyObject(rep);
    }
    return rc;
}

static int append_join(rd_handle_t *h, const bench_key_t *k, uint64_t timeout_ms, const char *state)
{
    long long exp = realtime_ms() + (long long) (timeout_ms ? timeout_ms : RD_DEFAULT_MS);
    const char *uuid = uuid_of(k);
    size_t ulen = strlen(uuid), slen = state ? strlen(state) : 0;
    char small[600];
    char *val = ulen + slen + 2 <= sizeof small ? small : malloc(ulen + slen + 2);
    if (val == NULL)
        return -ENOMEM;
    memcpy(val, uuid, ulen);
    val[ulen] = '\n';
    if (slen)
        memcpy(val + ulen + 1, state, slen);
    redisAppendCommand(h->c, "ZADD pr:z:%s %lld %s", k->room, exp, k->conn);
    redisAppendCommand(h->c, state ? "HSET pr:h:%s %s %b" : "HSETNX pr:h:%s %s %b", k->room,
                       k->conn, val, ulen + 1 + slen);
    redisAppendCommand(h->c, "SADD pr:u:%s %s", uuid, k->room);
    redisAppendCommand(h->c, "SADD pr:rooms %s", k->room);
    if (val != small)
        free(val);
    return 0;
}

/* ------------------------------------------------------------- vtable ---- */

static int rd_available(char *why, size_t whylen)
{
    return redis_server_find(why, whylen);
}

static int rd_setup(const bench_store_spec_t *spec, void **store, char *err, size_t errlen)
{
    (void) spec;
    if (g_start_error[0] != '\0') {
        snprintf(err, errlen, "%s", g_start_error);
        return -1;
    }
    if (!g_started) {
        if (redis_server_start(&g_server, g_start_error, sizeof g_start_error) != 0) {
            snprintf(err, errlen, "%s", g_start_error);
            return -1;
        }
        g_started = true;
    }
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    redisContext *c = redisConnectUnixWithTimeout(g_server.sock, tv);
    redisReply *r = NULL;
    if (c != NULL && c->err == 0)
        r = redisCommand(c, "FLUSHALL");
    int ok = r != NULL && r->type == REDIS_REPLY_STATUS;
    if (!ok)
        snprintf(err, errlen, "redis: FLUSHALL: %s",
                 c == NULL ? "no memory"
                 : c->err  ? c->errstr
                 : r       ? r->str
                           : "no reply");
    if (r != NULL)
        freeReplyObject(r);
    if (c != NULL)
        redisFree(c);
    if (!ok)
        return -1;
    *store = &g_server;
    return 0;
}

static void rd_teardown(void *store)
{
    (void) store; /* the next setup flushes; the server stops in finish() */
}

static void rd_finish(void)
{
    if (g_started)
        redis_server_stop(&g_server);
    g_started = false;
}

static int open_common(void *store, void **out, char *err, size_t errlen, bool pipe)
{
    redis_server_t *s = store;
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    redisContext *c = redisConnectUnixWithTimeout(s->sock, tv);
    if (c == NULL || c->err) {
        snprintf(err, errlen, "redis: connect %s: %s", s->sock, c ? c->errstr : "no memory");
        if (c)
            redisFree(c);
        return -1;
    }
    struct timeval rtv = {.tv_sec = 60, .tv_usec = 0};
    redisSetTimeout(c, rtv);
    rd_handle_t *h = calloc(1, sizeof *h);
    if (h == NULL) {
        redisFree(c);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    h->c = c;
    h->pipe = pipe;
    *out = h;
    return 0;
}

static int rd_open(void *store, void **out, char *err, size_t errlen)
{
    return open_common(store, out, err, errlen, false);
}

static int rdp_open(void *store, void **out, char *err, size_t errlen)
{
    return open_common(store, out, err, errlen, true);
}

static void rd_close(void *hv)
{
    rd_handle_t *h = hv;
    if (h == NULL)
        return;
    redisFree(h->c);
    free(h);
}

static int rd_join(void *hv, const bench_key_t *k, uint64_t timeout_ms)
{
    rd_handle_t *h = hv;
    redisReply *r[1] = {NULL};
    int rc = append_join(h, k, timeout_ms, NULL);
    if (rc == 0)
        rc = rd_complete(h, 4, r, 1);
    if (rc != 0 || h->pipe)
        return rc;
    rc = r[0]->type == REDIS_REPLY_INTEGER ? (r[0]->integer == 1 ? 0 : 1) : RD_EPROTO;
    freeReplyObject(r[0]);
    return rc;
}

static int rd_leave(void *hv, const bench_key_t *k)
{
    rd_handle_t *h = hv;
    redisReply *r[1] = {NULL};
    redisAppendCommand(h->c, "ZREM pr:z:%s %s", k->room, k->conn);
    redisAppendCommand(h->c, "HDEL pr:h:%s %s", k->room, k->conn);
    redisAppendCommand(h->c, "SREM pr:u:%s %s", uuid_of(k), k->room);
    int rc = rd_complete(h, 3, r, 1);
    if (rc != 0 || h->pipe)
        return rc;
    rc = r[0]->type == REDIS_REPLY_INTEGER ? (int) r[0]->integer : RD_EPROTO;
    freeReplyObject(r[0]);
    return rc;
}

static int rd_touch(void *hv, const bench_key_t *k)
{
    rd_handle_t *h = hv;
    redisAppendCommand(h->c, "ZADD pr:z:%s XX %lld %s", k->room,
                       realtime_ms() + (long long) RD_DEFAULT_MS, k->conn);
    return rd_complete(h, 1, NULL, 0);
}

static int rd_here_now(void *hv, const char *room)
{
    rd_handle_t *h = hv;
    redisReply *r[2] = {NULL, NULL};
    redisAppendCommand(h->c, "ZRANGEBYSCORE pr:z:%s %lld +inf", room, realtime_ms());
    redisAppendCommand(h->c, "HGETALL pr:h:%s", room);
    int rc = rd_complete(h, 2, r, 2);
    if (rc != 0 || h->pipe)
        return rc;
    rc = r[0]->type == REDIS_REPLY_ARRAY && r[1]->type == REDIS_REPLY_ARRAY ? (int) r[0]->elements
                                                                            : RD_EPROTO;
    freeReplyObject(r[0]);
    freeReplyObject(r[1]);
    return rc;
}

static int rd_where_now(void *hv, const char *uuid)
{
    rd_handle_t *h = hv;
    redisReply *r[1] = {NULL};
    redisAppendCommand(h->c, "SMEMBERS pr:u:%s", uuid);
    int rc = rd_complete(h, 1, r, 1);
    if (rc != 0 || h->pipe)
        return rc;
    rc = r[0]->type == REDIS_REPLY_ARRAY ? (int) r[0]->elements : RD_EPROTO;
    freeReplyObject(r[0]);
    return rc;
}

static int rd_get_state(void *hv, const bench_key_t *k)
{
    rd_handle_t *h = hv;
    redisReply *r[1] = {NULL};
    redisAppendCommand(h->c, "HGET pr:h:%s %s", k->room, k->conn);
    int rc = rd_complete(h, 1, r, 1);
    if (rc != 0 || h->pipe)
        return rc;
    rc = r[0]->type == REDIS_REPLY_STRING ? 1 : r[0]->type == REDIS_REPLY_NIL ? 0 : RD_EPROTO;
    freeReplyObject(r[0]);
    return rc;
}

static int rd_flush(void *hv)
{
    rd_handle_t *h = hv;
    int failed = 0;
    for (; h->pending > 0; h->pending--) {
        void *r = NULL;
        if (redisGetReply(h->c, &r) != REDIS_OK || r == NULL)
            return conn_error(h);
        redisReply *rep = r;
        if (rep->type == REDIS_REPLY_ERROR) {
            if (failed == 0)
                snprintf(h->err, sizeof h->err, "redis: %s", rep->str);
            failed++;
        }
        freeReplyObject(rep);
    }
    return failed;
}

/* Prunes one batch of rooms (see the file comment). @return removed or < 0. */
static int prune_batch(rd_handle_t *h, redisReply *rooms, size_t from, size_t n, long long now)
{
    redisReply **exp = calloc(n, sizeof *exp), **vals = calloc(n, sizeof *vals);
    int removed = 0, rc = 0;
    if (exp == NULL || vals == NULL) {
        free(exp);
        free(vals);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        redisAppendCommand(h->c, "ZRANGEBYSCORE pr:z:%s -inf (%lld", rooms->element[from + i]->str,
                           now);
    rc = read_replies(h, n, exp);
    size_t queued = 0, maxargs = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (exp[i]->type == REDIS_REPLY_ARRAY && exp[i]->elements > maxargs)
            maxargs = exp[i]->elements;
    const char **argv = calloc(maxargs + 2, sizeof *argv);
    size_t *lens = calloc(maxargs + 2, sizeof *lens);
    char key[300];
    if (rc == 0 && (argv == NULL || lens == NULL))
        rc = -ENOMEM;
    /* HMGET the member values: their uuids, for the reverse index. */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (exp[i]->type != REDIS_REPLY_ARRAY || exp[i]->elements == 0)
            continue;
        int kl = snprintf(key, sizeof key, "pr:h:%s", rooms->element[from + i]->str);
        argv[0] = "HMGET";
        lens[0] = 5;
        argv[1] = key;
        lens[1] = (size_t) kl;
        for (size_t j = 0; j < exp[i]->elements; j++) {
            argv[2 + j] = exp[i]->element[j]->str;
            lens[2 + j] = exp[i]->element[j]->len;
        }
        redisAppendCommandArgv(h->c, (int) exp[i]->elements + 2, argv, lens);
        queued++;
    }
    if (rc == 0)
        rc = read_replies(h, queued, vals);
    /* HDEL + ZREMRANGEBYSCORE + SREM per uuid, all pipelined. */
    size_t q = 0, nreplies = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (exp[i]->type != REDIS_REPLY_ARRAY || exp[i]->elements == 0)
            continue;
        const char *room = rooms->element[from + i]->str;
        redisReply *v = vals[q++];
        int kl = snprintf(key, sizeof key, "pr:h:%s", room);
        argv[0] = "HDEL";
        lens[0] = 4;
        argv[1] = key;
        lens[1] = (size_t) kl;
        for (size_t j = 0; j < exp[i]->elements; j++) {
            argv[2 + j] = exp[i]->element[j]->str;
            lens[2 + j] = exp[i]->element[j]->len;
        }
        redisAppendCommandArgv(h->c, (int) exp[i]->elements + 2, argv, lens);
        redisAppendCommand(h->c, "ZREMRANGEBYSCORE pr:z:%s -inf (%lld", room, now);
        nreplies += 2;
        for (size_t j = 0; v->type == REDIS_REPLY_ARRAY && j < v->elements; j++) {
            const redisReply *e = v->element[j];
            if (e->type != REDIS_REPLY_STRING)
                continue;
            const char *nl = memchr(e->str, '\n', e->len);
            size_t ul = nl ? (size_t) (nl - e->str) : e->len;
            redisAppendCommand(h->c, "SREM pr:u:%b %s", e->str, ul, room);
            nreplies++;
        }
    }
    if (rc == 0)
        rc = read_replies(h, nreplies, NULL);
    for (size_t i = 0; i < n; i++)
        if (exp[i] != NULL) {
            if (rc == 0 && exp[i]->type == REDIS_REPLY_ARRAY)
                removed += (int) exp[i]->elements;
            freeReplyObject(exp[i]);
        }
    for (size_t i = 0; i < queued; i++)
        if (vals[i] != NULL)
            freeReplyObject(vals[i]);
    free(exp);
    free(vals);
    free(argv);
    free(lens);
    return rc < 0 ? rc : removed;
}

static int rd_prune(void *hv)
{
    rd_handle_t *h = hv;
    if (h->pending > 0) {
        int rc = rd_flush(h);
        if (rc < 0)
            return rc;
    }
    long long now = realtime_ms();
    redisReply *rooms = redisCommand(h->c, "SMEMBERS pr:rooms");
    if (rooms == NULL)
        return conn_error(h);
    int removed = 0;
    if (rooms->type == REDIS_REPLY_ARRAY) {
        for (size_t from = 0; from < rooms->elements && removed >= 0; from += RD_PRUNE_BATCH) {
            size_t n =
                rooms->elements - from < RD_PRUNE_BATCH ? rooms->elements - from : RD_PRUNE_BATCH;
            int rc = prune_batch(h, rooms, from, n, now);
            removed = rc < 0 ? rc : removed + rc;
        }
    } else {
        removed = RD_EPROTO;
    }
    freeReplyObject(rooms);
    return removed;
}

static int rd_populate(void *hv, const bench_key_t *keys, size_t n, uint64_t timeout_ms,
                       const char *state)
{
    rd_handle_t *h = hv;
    for (size_t i = 0; i < n; i += RD_POP_CHUNK) {
        size_t m = n - i < RD_POP_CHUNK ? n - i : RD_POP_CHUNK;
        for (size_t j = 0; j < m; j++)
            if (append_join(h, &keys[i + j], timeout_ms, state) != 0)
                return -ENOMEM;
        int rc = read_replies(h, m * 4, NULL);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static const char *rd_errstr(void *hv, int rc)
{
    rd_handle_t *h = hv;
    if (rc == RD_EPROTO)
        return "redis: reply of an unexpected type";
    if (rc == -ENOMEM)
        return "out of memory";
    if ((rc == RD_EREPLY || rc == BENCH_FATAL) && h != NULL && h->err[0] != '\0')
        return h->err;
    return rc < 0 ? "redis: error" : "unexpected result";
}

#define RD_COMMON                                                                             \
    .available = rd_available, .setup = rd_setup, .teardown = rd_teardown, .close = rd_close, \
    .finish = rd_finish, .join = rd_join, .leave = rd_leave, .touch = rd_touch,               \
    .here_now = rd_here_now, .where_now = rd_where_now, .get_state = rd_get_state,            \
    .prune = rd_prune, .populate = rd_populate, .errstr = rd_errstr

const bench_backend_t bench_backend_redis = {
    .name = "redis",
    .description = "redis-server on a unix socket, hash + sorted set per room",
    .batch = 1,
    .open = rd_open,
    RD_COMMON,
};

const bench_backend_t bench_backend_redis_pipe = {
    .name = "redis-pipe",
    .description = "the same, pipelined: 100 operations per round trip",
    .batch = RD_PIPE_DEPTH,
    .open = rdp_open,
    .flush = rd_flush,
    RD_COMMON,
};
