/*
 * event.c -- the single place every change is announced. The event ring in the
 * segment (issue: presence-reaper and the event ring) completes this function;
 * until then it only counts, so no operation needs rework when the ring lands.
 */
#include "internal.h"

void pr__emit(struct presence *p, enum pr_event_type type, uint32_t room, uint32_t conn,
              uint32_t occupancy)
{
    PR_UNUSED(type);
    PR_UNUSED(room);
    PR_UNUSED(conn);
    PR_UNUSED(occupancy);
    pr_fetch_add(&p->h->ring_tail, 1);
}
