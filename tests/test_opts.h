/*
 * test_opts.h -- the small capacities that test_segment.c and its helper
 * (helper_create.c) both create with: one definition, so they cannot drift.
 */
#ifndef PR_TEST_OPTS_H
#define PR_TEST_OPTS_H

#include "presence.h"

static inline void test_small_opts(presence_options_t *o, uint32_t flags)
{
    presence_options_init(o);
    o->rooms = 64;
    o->connections = 128;
    o->presences = 256;
    o->groups = 8;
    o->group_members = 64;
    o->arena_bytes = 4u * 65536u;
    o->ring_entries = 1024;
    o->procs = 16;
    o->readers = 64;
    o->state_max = 4096;
    o->max_age_ms = 5000;
    o->flags = flags;
    o->attach_timeout_ms = 2000;
}

#endif /* PR_TEST_OPTS_H */
