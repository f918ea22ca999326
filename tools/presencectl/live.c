/*
 * live.c -- presencectl: what the live views (`watch`, `top`) share. Signals:
 * SIGINT and SIGTERM only set a flag, so a view ends its loop, restores what it
 * changed and exits 0; they interrupt sleeps and polls (no SA_RESTART). Clocks.
 * And replaying the event ring from its oldest event: the ring holds records of
 * one or more 64-byte entries, so the oldest entry still there is not always
 * the start of a record; ctl_sub_oldest() walks forward to the first one that
 * presence_subscribe() accepts.
 */
#include "ctl.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop_flag, winch_flag;

static void on_stop(int sig)
{
    (void) sig;
    stop_flag = 1;
}

static void on_winch(int sig)
{
    (void) sig;
    winch_flag = 1;
}

void ctl_live_signals(bool winch)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a signal ends the wait in progress */
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (winch) {
        sa.sa_handler = on_winch;
        sigaction(SIGWINCH, &sa, NULL);
    }
}

bool ctl_live_stopped(void)
{
    return stop_flag != 0;
}

bool ctl_live_resized(void)
{
    bool r = winch_flag != 0;
    winch_flag = 0;
    return r;
}

void ctl_live_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t) (ms / 1000u), (long) (ms % 1000u) * 1000000L};
    /* EINTR (a signal) ends the sleep early: the caller looks at the flags. */
    (void) nanosleep(&ts, NULL);
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

uint64_t ctl_now_ns(void)
{
    return clock_ns(CLOCK_REALTIME);
}

uint64_t ctl_mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

int ctl_sub_oldest(presence_t *p, const char *room, presence_sub_t **out)
{
    presence_stats_t st;
    int rc = presence_stats(p, &st);
    if (rc < 0)
        return rc;
    /* ELAPPED: that entry is about to be overwritten (or already was, as producers
     * run on); EINVAL: it continues a record. Both mean: try the next one. */
    for (uint64_t seq = st.ring_oldest; seq < st.ring_tail; seq++) {
        rc = presence_subscribe(p, seq, room, out);
        if (rc != PRESENCE_ELAPPED && rc != -EINVAL)
            return rc;
    }
    return presence_subscribe(p, PRESENCE_SEQ_NOW, room, out);
}
