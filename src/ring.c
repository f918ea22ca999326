/*
 * ring.c -- the event ring and subscriptions.
 *
 * Every change goes through pr__emit(): one global order, producers in any
 * process, never waiting for anyone.
 *   - claim: pos = fetch_add(ring_tail, k) reserves k entries of 64 bytes;
 *   - write: each entry's stamp becomes WRITING|producer, then its data is
 *     written, then its stamp becomes pos+i+1 (START on the first): a store
 *     with release ordering, so a reader that sees the stamp sees the data;
 *   - wake: a full fence, then, if a subscriber is armed, pr__wake (ipc.c).
 * A reader at position r copies a record only between two reads of each
 * entry's stamp that both say "r+i+1": anything else is "not yet" (older
 * stamp), "lapped" (newer stamp, or the tail is a whole ring ahead), or a gap
 * left by a producer that died between claim and commit: a WRITING stamp of a
 * dead process, or an entry still unwritten while later records are committed
 * for PR_GAP_NS, is skipped to the next record start. So a dead producer never
 * blocks anyone, and a slow subscriber never slows producers.
 *
 * Wake-ups (design-anchors §4.8): a subscriber that finds nothing arms itself
 * (ring_waiters++, then waiting = 1: see arm_slot), fences, and looks again
 * before reporting "none"; a producer publishes, fences, and only if
 * ring_waiters != 0 looks at the armed words (pr__wake). At least one of the two
 * sees the other; ring_waiters may count too many for an instant, never too
 * few. Whoever swaps a slot's waiting 1 -> 0 writes that subscriber's eventfd:
 * the producer itself, through its copy of the reaper's subscriber eventfds (one
 * hop; ipc.c), or the reaper, when the producer has no current copy and rings
 * its doorbell (presence_reaper_wake; it also wakes after each sweep).
 *
 * A subscription slot's tag is bumped at each claim and handed to the reaper
 * with the eventfd, so that an eventfd is only ever written for the
 * subscription it belongs to. A closed or dead subscription's waiting word is
 * cleared (presence_sub_close; pr__subs_collect in the sweep), so nobody writes
 * its eventfd again; the reaper then drops it and bumps subs_gen.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define PR_GAP_NS \
    500000000ull /* an unwritten entry this old, with later ones written, is a dead claim */

struct presence_sub {
    struct presence *p;
    uint32_t slot;
    int efd;     /* producers and the reaper write it (wake-ups) */
    int epfd;    /* what presence_sub_fd() returns: efd + the reaper link + tfd */
    int tfd;     /* a 100 ms timer, running only while no reaper can wake us */
    int watched; /* the reaper connection we watch for hang-up, -1 none */
    uint64_t pos;
    uint32_t tag; /* our slot's tag (layout.h) */
    bool armed;
    uint64_t reaper; /* reaper_owner we registered our eventfd with */
    char *filter;
    size_t filter_len;
    uint64_t gap_pos, gap_since; /* a stalled entry and since when */
    char buf[3 * 256 + PR_RING_DATA * PR_RING_MAXENT];
};

static struct pr_ring_entry *ring_entry(const struct presence *p, uint64_t pos)
{
    return PR_REGION(p, off_ring, struct pr_ring_entry) + (pos & (p->h->ring_entries - 1));
}

const char *presence_event_name(int type)
{
    static const char *names[] = {"unknown",    "join",         "leave",        "timeout",
                                  "owner_died", "state_change", "room_created", "room_deleted"};
    return type >= 1 && type <= 7 ? names[type] : names[0];
}

/* ---- producing ------------------------------------------------------------ */

/* Writes a record's bytes into the data of its entries, in order: @at is where
 * the next byte goes, @room what is left of its entry's data, @pos that entry's
 * position. The ring's base and mask are read once per record. */
struct ring_writer {
    struct pr_ring_entry *ring;
    uint64_t mask, pos;
    uint8_t *at;
    size_t room;
};

static void ring_put(struct ring_writer *w, const void *src, size_t n)
{
    const uint8_t *s = src;
    for (;;) {
        size_t take = n < w->room ? n : w->room;
        if (take > PR_RING_DATA)
            __builtin_unreachable(); /* room never exceeds an entry's data */
        memcpy(w->at, s, take);      /* inline: the size has a small bound */
        w->at += take;
        w->room -= take;
        n -= take;
        if (n == 0)
            return;
        s += take;
        w->pos++;
        w->at = w->ring[w->pos & w->mask].data;
        w->room = PR_RING_DATA;
    }
}

/* Bulk mode (pr__emit_bulk_begin/end): the shared clock reading, how many
 * events may still use it, and how many were committed since the last check
 * for armed subscribers. */
static PR_TLS struct {
    struct presence *p;
    uint32_t stamp_left, unchecked;
    uint64_t ns;
} bulk;

void pr__emit_bulk_begin(struct presence *p)
{
    bulk.p = p;
    bulk.stamp_left = 0;
    bulk.unchecked = 0;
}

/* After commits: fence, then wake armed subscribers. The subscriber arms,
 * fences and looks at the ring, so one of the two sees the other. */
static void wake_check(struct presence *p)
{
    pr_smp_mb_cheap(); /* store(stamps) -> load(ring_waiters, waiting) */
    if (PR_UNLIKELY(pr_load(&p->h->ring_waiters) != 0))
        pr__wake(p);
}

void pr__emit_bulk_end(void)
{
    if (bulk.p && bulk.unchecked)
        wake_check(bulk.p);
    bulk.p = NULL;
}

static uint64_t event_time_ns(const struct presence *p)
{
    if (bulk.p != p)
        return pr__realtime_ns();
    if (bulk.stamp_left == 0) {
        bulk.ns = pr__realtime_ns();
        bulk.stamp_left = PR_BULK_SHARE;
    }
    bulk.stamp_left--;
    return bulk.ns;
}

void pr__emit(struct presence *p, enum pr_event_type type, uint32_t room, uint32_t conn,
              uint32_t occupancy)
{
    struct pr_header *h = p->h;
    const char *rn = "", *cn = "", *un = "";
    uint32_t rl = 0, cl = 0, ul = 0;
    struct pr_room *r = pr__room(p, room);
    struct pr_conn *c = pr__conn(p, conn);
    if (r && !(rn = pr__blob_get(p, r->name_blob, &rl)))
        rn = "", rl = 0;
    if (c) {
        if (!(cn = pr__blob_get(p, c->name_blob, &cl)))
            cn = "", cl = 0;
        if (c->user_len == 0 || !(un = pr__blob_get(p, c->user_blob, &ul)))
            un = "", ul = 0;
    }
    struct pr_ring_hdr rh;
    memset(&rh, 0, sizeof rh);
    size_t total = sizeof rh + rl + cl + ul;
    uint32_t k = (uint32_t) ((total + PR_RING_DATA - 1) / PR_RING_DATA);
    rh.time_ns = event_time_ns(p);
    rh.occupancy = occupancy;
    rh.type = (uint16_t) type;
    rh.reason = (type == PR_EV_LEAVE || type == PR_EV_TIMEOUT || type == PR_EV_OWNER_DIED ||
                 type == PR_EV_ROOM_DELETED)
                    ? (uint16_t) type
                    : 0;
    rh.nentries = (uint16_t) k;
    rh.room_len = (uint16_t) rl;
    rh.conn_len = (uint16_t) cl;
    rh.user_len = (uint16_t) ul;

    struct pr_ring_entry *ring = ring_entry(p, 0);
    const uint64_t mask = h->ring_entries - 1;
    uint64_t pos = pr_fetch_add(&h->ring_tail, (uint64_t) k);
    /* In bulk mode our next events go right after this one: ask for those
     * lines now (for writing), so that we do not stall on their transfer at
     * the next fence. Not otherwise: the next event is then as likely another
     * process's, and taking its lines away from it made two producers'
     * join + leave ~10% slower. A hint only. */
    if (bulk.p == p) {
        pr_prefetch_write(&ring[(pos + k) & mask]);
        pr_prefetch_write(&ring[(pos + k + 1) & mask]);
    }
    PR_KILL_POINT("ring_claim");
    const uint64_t writing = PR_RING_WRITING | (p->proc + 1);
    for (uint32_t i = 0; i < k; i++)
        pr_store(&ring[(pos + i) & mask].stamp, writing);
    pr_barrier();
    struct ring_writer w = {ring, mask, pos, ring[pos & mask].data, PR_RING_DATA};
    ring_put(&w, &rh, sizeof rh);
    ring_put(&w, rn, rl);
    ring_put(&w, cn, cl);
    ring_put(&w, un, ul);
    PR_KILL_POINT("ring_commit");
    for (uint32_t i = k; i-- > 0;) /* first entry last: its START publishes the record */
        pr_store(&ring[(pos + i) & mask].stamp, (pos + i + 1) | (i == 0 ? PR_RING_START : 0));
    if (bulk.p == p && ++bulk.unchecked < PR_BULK_SHARE)
        return; /* a later event of the bulk (or its end) checks for this one too */
    bulk.unchecked = 0;
    wake_check(p);
}

/* ---- subscribing ------------------------------------------------------------ */

static uint64_t me_word(const struct presence *p)
{
    return ((uint64_t) p->proc_gen << 32) | (p->proc + 1);
}

/* Arms subscription slot @ss: counted in ring_waiters *before* its waiting word
 * says so. Whoever swaps waiting 1 -> 0 (a producer, the reaper, the subscriber
 * itself) decrements after its swap, so the count never drops below the number
 * of armed slots, not even for an instant: were it counted after, a producer
 * could disarm the slot in between (the subscriber preempted there) and take
 * the count below the truth, and another producer would then read 0 while some
 * other subscriber is armed, and wake no one (found by test_no_lost_wakeup). */
static void arm_slot(struct pr_header *h, struct pr_sub *ss)
{
    pr_fetch_add(&h->ring_waiters, 1u);
    if (pr_xchg(&ss->waiting, 1u) != 0u)
        pr_fetch_add(&h->ring_waiters, (uint32_t) -1); /* it was armed already */
}

/* Whether the record starting at @pos is committed (START stamp for pos). */
static bool is_start(const struct presence *p, uint64_t pos)
{
    return pr_load(&ring_entry(p, pos)->stamp) == ((pos + 1) | PR_RING_START);
}

/* Keeps the descriptor able to wake us whatever the reaper does: while we are
 * registered with a live reaper, its connection is watched for hang-up (a
 * reaper that dies wakes us, and the next call re-registers with its
 * successor); while no reaper holds our eventfd, a 100 ms timer polls. */
static void sub_watch(presence_sub_t *s)
{
    struct presence *p = s->p;
    bool registered = s->reaper != 0 && s->reaper == pr_load(&p->h->reaper_owner) && p->ipc_fd >= 0;
    int want = registered ? p->ipc_fd : -1;
    if (want != s->watched) {
        if (s->watched >= 0)
            epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->watched, NULL); /* fails if closed: fine */
        struct epoll_event ev = {.events = EPOLLRDHUP, .data.u32 = 2};
        if (want >= 0 && epoll_ctl(s->epfd, EPOLL_CTL_ADD, want, &ev) != 0)
            want = -1;
        s->watched = want;
    }
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (want < 0) {
        its.it_value.tv_nsec = 100000000;
        its.it_interval.tv_nsec = 100000000;
    }
    timerfd_settime(s->tfd, 0, &its, NULL);
}

int presence_subscribe(presence_t *p, uint64_t from_seq, const char *room, presence_sub_t **out)
{
    size_t fl = 0;
    if (room) {
        int rc = pr__validate_name(room, &fl);
        if (rc)
            return rc;
    }
    struct pr_header *h = p->h;
    uint64_t tail = pr_load(&h->ring_tail);
    if (from_seq == PRESENCE_SEQ_OLDEST) {
        uint64_t keep = h->ring_entries - PR_RING_MAXENT;
        from_seq = tail > keep ? tail - keep : 0;
        while (from_seq < tail && !is_start(p, from_seq))
            from_seq++;
    }
    if (from_seq != PRESENCE_SEQ_NOW) {
        if (from_seq > tail)
            return -EINVAL;
        if (tail - from_seq > h->ring_entries - PR_RING_MAXENT)
            return PRESENCE_ELAPPED;
        if (from_seq < tail && !is_start(p, from_seq))
            return -EINVAL;
    }
    presence_sub_t *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->p = p;
    s->pos = from_seq == PRESENCE_SEQ_NOW ? tail : from_seq;
    s->slot = UINT32_MAX;
    s->watched = -1;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e1 = {.events = EPOLLIN, .data.u32 = 0};
    struct epoll_event e2 = {.events = EPOLLIN, .data.u32 = 1};
    if (s->efd < 0 || s->tfd < 0 || s->epfd < 0 ||
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->efd, &e1) != 0 ||
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->tfd, &e2) != 0) {
        int rc = -errno;
        if (s->efd >= 0)
            close(s->efd);
        if (s->tfd >= 0)
            close(s->tfd);
        if (s->epfd >= 0)
            close(s->epfd);
        free(s);
        return rc;
    }
    if (room && !(s->filter = strdup(room))) {
        close(s->efd);
        close(s->tfd);
        close(s->epfd);
        free(s);
        return -ENOMEM;
    }
    s->filter_len = fl;
    if (p->rdonly) { /* an inspector: no slot, no eventfd wake-ups: the timer polls */
        sub_watch(s);
        *out = s;
        return 0;
    }
    for (uint32_t i = 0; i < PR_NSUBS; i++) {
        if (pr_load(&h->subs[i].owner) == 0 && pr_cas(&h->subs[i].owner, 0, me_word(p))) {
            s->slot = i;
            break;
        }
    }
    if (s->slot == UINT32_MAX) {
        close(s->efd);
        close(s->tfd);
        close(s->epfd);
        free(s->filter);
        free(s);
        return PRESENCE_ENOSUBS;
    }
    h->subs[s->slot].waiting = 0;
    h->subs[s->slot].lapped = 0;
    pr_store(&h->subs[s->slot].pos, s->pos);
    s->tag = pr_fetch_add(&h->subs[s->slot].tag, 1u) + 1u; /* a new subscription */
    s->reaper = pr_load(&h->reaper_owner);
    if (pr__ipc_subscribe(p, s->slot, s->tag, s->efd) != 0)
        s->reaper = 0; /* no reaper now: retried when arming */
    sub_watch(s);
    /* Armed from the start (after the reaper has our eventfd), so that polling
     * the descriptor before the first presence_sub_next works as documented;
     * events already waiting make it readable at once. */
    s->armed = true;
    arm_slot(h, &h->subs[s->slot]);
    pr_smp_mb();
    if (pr_load(&h->ring_tail) > s->pos) {
        uint64_t one = 1;
        if (write(s->efd, &one, sizeof one) < 0) {
            /* EAGAIN: already readable */
        }
    }
    *out = s;
    return 0;
}

int presence_sub_fd(const presence_sub_t *s)
{
    return s->epfd;
}

uint64_t presence_sub_position(const presence_sub_t *s)
{
    return s->pos;
}

/* Our slot in the segment, or NULL for a read-only subscription. */
static struct pr_sub *sub_slot(presence_sub_t *s)
{
    return s->slot < PR_NSUBS ? &s->p->h->subs[s->slot] : NULL;
}

static void disarm(presence_sub_t *s)
{
    struct pr_sub *ss = sub_slot(s);
    if (ss && s->armed) {
        s->armed = false;
        if (pr_xchg(&ss->waiting, 0u) == 1u)
            pr_fetch_add(&s->p->h->ring_waiters, (uint32_t) -1);
    }
}

void presence_sub_close(presence_sub_t *s)
{
    if (!s)
        return;
    disarm(s);
    if (sub_slot(s))
        pr_store(&sub_slot(s)->owner, 0);
    close(s->efd);
    close(s->tfd);
    close(s->epfd);
    free(s->filter);
    free(s);
}

/* Skips from s->pos to the next committed record start at or before @tail. */
static void skip_to_start(presence_sub_t *s, uint64_t tail)
{
    while (s->pos < tail && !is_start(s->p, s->pos))
        s->pos++;
}

enum { RD_EVENT = 1, RD_NONE = 0, RD_LAPPED = -1, RD_GAP = -2 };

/* Whether a record after position @r (and before @tail) is committed. */
static bool later_committed(const struct presence *p, uint64_t r, uint64_t tail)
{
    for (uint64_t i = r + 1; i < tail && i <= r + p->h->ring_entries; i++)
        if (is_start(p, i))
            return true;
    return false;
}

/* Reads the record at s->pos into s->buf / *ev. */
static int read_record(presence_sub_t *s, uint64_t tail, presence_event_t *ev)
{
    struct presence *p = s->p;
    uint64_t r = s->pos;
    struct pr_ring_entry *e0 = ring_entry(p, r);
    uint64_t st = pr_load(&e0->stamp);
    if (st != ((r + 1) | PR_RING_START)) {
        if (!(st & PR_RING_WRITING) && (st & PR_RING_POSMASK) > r + 1)
            return RD_LAPPED; /* overwritten by a later lap */
        if (!(st & PR_RING_WRITING) && (st & PR_RING_POSMASK) == r + 1)
            return RD_GAP; /* a continuation entry: we are misaligned */
        /* Not committed yet. A dead producer's claim is skipped. */
        bool dead = false;
        if (st & PR_RING_WRITING) {
            uint32_t proc1 = (uint32_t) (st & 0xffffffffu);
            struct pr_proc *pp = proc1 ? pr__proc(p, proc1 - 1) : NULL;
            dead = !pp || !pr__proc_alive(p, proc1 - 1, (uint32_t) (pr_load(&pp->owner) >> 32)) ||
                   (uint32_t) pr_load(&pp->owner) == 0;
        }
        if (!dead) {
            /* Claimed (r < tail) and unwritten for PR_GAP_NS while a later record
             * is committed: a dead claim, however few entries follow it (a
             * producer killed right after its claim leaves no WRITING stamp,
             * and the next events may be just one or two records). */
            uint64_t now = pr__now_ns();
            if (s->gap_pos != r) {
                s->gap_pos = r;
                s->gap_since = now;
            } else if (now - s->gap_since > PR_GAP_NS && later_committed(p, r, tail)) {
                dead = true;
            }
        }
        return dead ? RD_GAP : RD_NONE;
    }
    /* stamp -> data -> stamps: loads in order. A locked add (x86) orders them
     * as well as mfence, at a fraction of its cost (events_flood_read). */
    pr_smp_mb_cheap();
    struct pr_ring_hdr rh;
    memcpy(&rh, e0->data, sizeof rh);
    uint32_t k = rh.nentries;
    size_t names = (size_t) rh.room_len + rh.conn_len + rh.user_len;
    if (k == 0 || k > PR_RING_MAXENT || rh.room_len > 255 || rh.conn_len > 255 ||
        rh.user_len > 255 || sizeof rh + names > (size_t) k * PR_RING_DATA)
        return pr_load(&e0->stamp) == st ? RD_GAP : RD_LAPPED;
    for (uint32_t i = 1; i < k; i++)
        if (pr_load(&ring_entry(p, r + i)->stamp) != r + i + 1)
            return RD_LAPPED; /* committed records are whole; a mismatch is a lap */
    /* copy the names */
    size_t off = sizeof rh, done = 0;
    while (done < names) {
        struct pr_ring_entry *e = ring_entry(p, r + (off + done) / PR_RING_DATA);
        size_t in = (off + done) % PR_RING_DATA, take = PR_RING_DATA - in;
        if (take > names - done)
            take = names - done;
        memcpy(s->buf + done, e->data + in, take);
        done += take;
    }
    pr_smp_mb_cheap();
    for (uint32_t i = 0; i < k; i++) /* still ours after the copy? */
        if ((pr_load(&ring_entry(p, r + i)->stamp) & ~PR_RING_START) != r + i + 1)
            return RD_LAPPED;
    /* lay the three strings out NUL-terminated */
    char *room = s->buf + names + 3, *conn, *user;
    memmove(room, s->buf, rh.room_len);
    room[rh.room_len] = '\0';
    conn = room + rh.room_len + 1;
    memmove(conn, s->buf + rh.room_len, rh.conn_len);
    conn[rh.conn_len] = '\0';
    user = conn + rh.conn_len + 1;
    memmove(user, s->buf + rh.room_len + rh.conn_len, rh.user_len);
    user[rh.user_len] = '\0';
    ev->seq = r;
    ev->time_ns = rh.time_ns;
    ev->type = rh.type;
    ev->reason = rh.reason;
    ev->occupancy = rh.occupancy;
    ev->room = room;
    ev->conn = conn;
    ev->user = user;
    s->pos = r + k;
    return RD_EVENT;
}

static void note_lapped(presence_sub_t *s)
{
    struct pr_sub *ss = sub_slot(s);
    if (ss) {
        pr_fetch_add(&ss->lapped, 1u);
        pr_fetch_add(&s->p->h->reaper_lapped, 1);
        pr_store(&ss->pos, s->pos);
    }
}

int presence_sub_next(presence_sub_t *s, presence_event_t *ev)
{
    struct presence *p = s->p;
    struct pr_header *h = p->h;
    bool drained = false;
    if (s->reaper != pr_load(&h->reaper_owner) || (s->watched >= 0 && s->watched != p->ipc_fd)) {
        /* The reaper changed (or died): hand our eventfd to the new one. */
        s->reaper = pr_load(&h->reaper_owner);
        if (sub_slot(s) && pr__ipc_subscribe(p, s->slot, s->tag, s->efd) != 0)
            s->reaper = 0;
        if (!sub_slot(s))
            s->reaper = 0;
        sub_watch(s);
    }
    for (unsigned rounds = 0; rounds < 1000000; rounds++) {
        uint64_t tail = pr_load(&h->ring_tail);
        if (tail - s->pos > h->ring_entries - PR_RING_MAXENT && tail > s->pos) {
            /* a whole ring behind: continue from the oldest safe record */
            s->pos = tail - (h->ring_entries - PR_RING_MAXENT);
            skip_to_start(s, tail);
            note_lapped(s);
            return PRESENCE_ELAPPED;
        }
        int rc = s->pos < tail ? read_record(s, tail, ev) : RD_NONE;
        if (rc == RD_EVENT) {
            disarm(s);
            if (sub_slot(s))
                pr_store(&sub_slot(s)->pos, s->pos);
            if (s->filter &&
                (strlen(ev->room) != s->filter_len || strcmp(ev->room, s->filter) != 0))
                continue;
            return 1;
        }
        if (rc == RD_LAPPED) {
            s->pos = pr_load(&h->ring_tail);
            s->pos = s->pos > h->ring_entries - PR_RING_MAXENT
                         ? s->pos - (h->ring_entries - PR_RING_MAXENT)
                         : 0;
            skip_to_start(s, pr_load(&h->ring_tail));
            note_lapped(s);
            return PRESENCE_ELAPPED;
        }
        if (rc == RD_GAP) {
            s->pos++;
            skip_to_start(s, tail);
            continue;
        }
        /* none yet. First clear the descriptor (only now: draining a backlog makes
         * no system call), then look again, so that no wake-up is lost. */
        if (!drained) {
            uint64_t drain;
            if (read(s->efd, &drain, sizeof drain) < 0) {
                /* EAGAIN: no wake-up pending */
            }
            if (read(s->tfd, &drain, sizeof drain) < 0) {
                /* EAGAIN: the timer has not fired */
            }
            drained = true;
            continue;
        }
        /* Then arm, fence, look once more (the producer fences too). Re-arm
         * when the reaper disarmed us to wake us while nothing could be read yet
         * (a record claimed but not committed, a dead producer's gap not yet
         * old enough): otherwise nobody would ever wake us again. */
        if (sub_slot(s) && (!s->armed || pr_load(&h->subs[s->slot].waiting) == 0)) {
            s->armed = true;
            pr_store(&h->subs[s->slot].pos, s->pos);
            arm_slot(h, &h->subs[s->slot]);
            pr_smp_mb_cheap();
            continue;
        }
        return 0;
    }
    return 0;
}

/* ---- the reaper's side ------------------------------------------------------ */

int presence_reaper_wake(presence_t *p, void (*wake)(void *ctx, uint32_t slot), void *ctx)
{
    struct pr_header *h = p->h;
    uint64_t tail = pr_load(&h->ring_tail);
    int n = 0;
    for (uint32_t i = 0; i < PR_NSUBS; i++) {
        struct pr_sub *ss = &h->subs[i];
        if (pr_load(&ss->waiting) == 0 || pr_load(&ss->owner) == 0)
            continue;
        if (pr_load(&ss->pos) >= tail)
            continue;
        if (pr_xchg(&ss->waiting, 0u) == 1u) {
            pr_fetch_add(&h->ring_waiters, (uint32_t) -1);
            wake(ctx, i);
            n++;
        }
    }
    return n;
}

int presence_reaper_sub_alive(presence_t *p, uint32_t slot)
{
    if (slot >= PR_NSUBS)
        return 0;
    uint64_t owner = pr_load(&p->h->subs[slot].owner);
    return owner != 0 && pr__proc_alive(p, (uint32_t) owner - 1, (uint32_t) (owner >> 32));
}

void pr__subs_collect(struct presence *p)
{
    struct pr_header *h = p->h;
    for (uint32_t i = 0; i < PR_NSUBS; i++) {
        uint64_t owner = pr_load(&h->subs[i].owner);
        if (owner == 0 || pr__proc_alive(p, (uint32_t) owner - 1, (uint32_t) (owner >> 32)))
            continue;
        if (pr_xchg(&h->subs[i].waiting, 0u) == 1u)
            pr_fetch_add(&h->ring_waiters, (uint32_t) -1);
        pr_cas(&h->subs[i].owner, owner, 0);
    }
}
