/*
 * alloc.c -- allocation inside the segment: fixed-size records (rooms,
 * connections, presences, groups, group members) and variable-size blobs
 * (names, state documents) in the arena.
 *
 * Records: PR_NSHARD lock-free free stacks per kind (a process takes from and
 * returns to shard proc % PR_NSHARD, so processes do not bounce one head word;
 * it takes from the other shards only when its own is empty). A head word is
 * {top index+1 : 24 | tag : 24 | claimer : 16}. Taking a record is three steps:
 *   1. CAS head {top, t, 0} -> {top, t+1, me+1}: the claim is now durable in the
 *      head itself;
 *   2. CAS top's state FREE(g) -> CLAIMED(g+1, slot = claimer);
 *   3. CAS head {top, t+1, me+1} -> {top.link, t+2, 0}.
 * Any process that finds a claim pending in the head completes steps 2 and 3 on
 * the claimer's behalf (reading the record's state only while the head still
 * shows the claim, so a stale helper's CAS fails on the generation), so a
 * claimer that stalls or dies after step 1 never blocks anyone, and after step 1
 * the record is owned by the claimer whatever happens (if the claimer is dead,
 * the sweep finds it CLAIMED and unreachable: the sweep completes pending claims
 * before it marks, or a pop after the sweep would make it a record no one owns
 * and no sweep looks for; kill point claim_pending). The tag makes stale head
 * CASes fail (ABA); PRESENCE_TEST_NO_TAGS removes it to prove the ABA test.
 * Records go back on the stack only through reclamation (after a grace period),
 * by the maintenance-lease holder alone: one pusher, many poppers.
 *
 * Blobs: the arena is cut in 64 KiB pages; a page is given to one size class
 * (64 B << class) by a CAS on its class word and keeps it. A cell is owned iff
 * its bit in the page's bitmap is set (set by CAS, cleared on free). Before the
 * CAS the allocator records the cell in its reader slot (inflight_blob) until
 * the blob is attached to its record, so the sweep can tell a leak from an
 * allocation in progress.
 */
#include "internal.h"

#include <string.h>

int pr__test_no_tags;

static uint32_t tag_next(uint32_t tag)
{
    return pr__test_no_tags ? 0 : ((tag + 1) & 0xffffffu);
}

uint32_t pr__kind_cap(const struct presence *p, unsigned kind)
{
    switch (kind) {
    case PR_K_ROOM:
        return p->h->cap_rooms;
    case PR_K_CONN:
        return p->h->cap_conns;
    case PR_K_PRES:
        return p->h->cap_pres;
    case PR_K_GROUP:
        return p->h->cap_groups;
    case PR_K_GMEMBER:
        return p->h->cap_gmembers;
    default:
        return 0;
    }
}

struct pr_rec *pr__rec(const struct presence *p, unsigned kind, uint32_t idx)
{
    switch (kind) {
    case PR_K_ROOM:
        return (struct pr_rec *) pr__room(p, idx);
    case PR_K_CONN:
        return (struct pr_rec *) pr__conn(p, idx);
    case PR_K_PRES:
        return (struct pr_rec *) pr__pres(p, idx);
    case PR_K_GROUP:
        return (struct pr_rec *) pr__group(p, idx);
    case PR_K_GMEMBER:
        return (struct pr_rec *) pr__gmember(p, idx);
    default:
        return NULL;
    }
}

/* Completes the claim pending in head word @hw of stack @head (steps 2 and 3).
 * Returns 0, or ECORRUPT when the head names a record that cannot be. */
static int claim_complete(struct presence *p, uint64_t *head, unsigned kind, uint64_t hw)
{
    uint32_t claimer = PR_FH_CLAIMER(hw);
    struct pr_rec *r = pr__rec(p, kind, PR_FH_IDX1(hw) - 1);
    if (!r || claimer == 0 || claimer - 1 >= p->h->cap_readers)
        return PRESENCE_ECORRUPT;
    uint64_t st = pr_load(&r->state);
    if (pr_load(head) != hw)
        return 0; /* someone finished it */
    if (PR_ST_STATE(st) == PR_FREE)
        pr_cas(&r->state, st, PR_ST(PR_ST_GEN(st) + 1, PR_CLAIMED, claimer - 1));
    st = pr_load(&r->state);
    uint32_t next = pr_load(&r->link);
    if (pr_load(head) != hw)
        return 0;
    if (PR_ST_STATE(st) != PR_CLAIMED || PR_ST_SLOT(st) != claimer - 1)
        return PRESENCE_ECORRUPT;
    pr_cas(head, hw, PR_FH(next, tag_next(PR_FH_TAG(hw)), 0));
    return 0;
}

void pr__claims_complete(struct presence *p)
{
    for (unsigned kind = PR_K_ROOM; kind <= PR_K_GMEMBER; kind++)
        for (uint32_t sh = 0; sh < PR_NSHARD; sh++) {
            uint64_t *head = &p->h->free_head[sh][kind];
            uint64_t hw = pr_load(head);
            if (PR_FH_CLAIMER(hw))
                (void) claim_complete(p, head, kind, hw);
        }
}

/* Takes the top of stack @head: the record index, -ENOSPC when it is empty. */
static int64_t claim_from(struct presence *p, uint64_t *head, unsigned kind, uint32_t me)
{
    uint32_t cap = pr__kind_cap(p, kind);
    for (unsigned spins = 0;; spins++) {
        if (spins > 4u * cap + 1000000u)
            return PRESENCE_ECORRUPT; /* a cycle in a corrupted stack */
        uint64_t hw = pr_load(head);
        if (PR_FH_CLAIMER(hw)) {
            int rc = claim_complete(p, head, kind, hw);
            if (rc)
                return rc;
            continue;
        }
        uint32_t top1 = PR_FH_IDX1(hw);
        if (top1 == 0)
            return -ENOSPC;
        if (top1 - 1 >= cap)
            return PRESENCE_ECORRUPT;
        uint64_t mine = PR_FH(top1, tag_next(PR_FH_TAG(hw)), me + 1);
        if (!pr_cas(head, hw, mine))
            continue;
        PR_KILL_POINT("claim_pending");
        int rc = claim_complete(p, head, kind, mine);
        if (rc)
            return rc;
        struct pr_rec *r = pr__rec(p, kind, top1 - 1);
        uint64_t st = pr_load(&r->state);
        if (PR_ST_STATE(st) != PR_CLAIMED || PR_ST_SLOT(st) != me)
            return PRESENCE_ECORRUPT;
        PR_KILL_POINT("alloc");
        return top1 - 1;
    }
}

int64_t pr__rec_claim(struct presence *p, unsigned kind)
{
    uint32_t me = pr__my_slot(p);
    if (me == UINT32_MAX)
        return -EUSERS;
    int64_t idx = -ENOSPC;
    for (uint32_t k = 0; k < PR_NSHARD && idx == -ENOSPC; k++)
        idx = claim_from(p, &p->h->free_head[(p->shard + k) % PR_NSHARD][kind], kind, me);
    return idx;
}

void pr__rec_push_free(struct presence *p, unsigned kind, uint32_t idx)
{
    uint64_t *head = &p->h->free_head[p->shard % PR_NSHARD][kind];
    struct pr_rec *r = pr__rec(p, kind, idx);
    if (!r)
        return;
    uint64_t st = pr_load(&r->state);
    pr_store(&r->state, PR_ST(PR_ST_GEN(st), PR_FREE, 0));
    for (;;) {
        uint64_t hw = pr_load(head);
        if (PR_FH_CLAIMER(hw)) {
            if (claim_complete(p, head, kind, hw) != 0)
                return;
            continue;
        }
        pr_store(&r->link, PR_FH_IDX1(hw));
        if (pr_cas(head, hw, PR_FH(idx + 1, tag_next(PR_FH_TAG(hw)), 0)))
            return;
    }
}

void pr__alloc_format(struct presence *p)
{
    struct pr_header *h = p->h;
    for (unsigned kind = PR_K_ROOM; kind <= PR_K_GMEMBER; kind++) {
        uint32_t cap = pr__kind_cap(p, kind);
        /* Shard s gets the records [cap*s/N, cap*(s+1)/N), lowest on top. */
        for (uint32_t sh = 0; sh < PR_NSHARD; sh++) {
            uint32_t lo = (uint32_t) ((uint64_t) cap * sh / PR_NSHARD);
            uint32_t hi = (uint32_t) ((uint64_t) cap * (sh + 1) / PR_NSHARD);
            for (uint32_t i = lo; i < hi; i++) {
                struct pr_rec *r = pr__rec(p, kind, i);
                r->state = PR_ST(0, PR_FREE, 0);
                r->link = (i + 1 < hi) ? i + 2 : 0;
            }
            h->free_head[sh][kind] = PR_FH(hi > lo ? lo + 1 : 0, 0, 0);
        }
    }
}

/* ---- blobs --------------------------------------------------------------- */

static struct pr_page *page_meta(const struct presence *p, uint32_t page)
{
    return page < p->h->arena_pages ? PR_REGION(p, off_pages, struct pr_page) + page : NULL;
}

static unsigned class_for(uint64_t bytes)
{
    unsigned c = 0;
    while (c < PR_NCLASSES && ((uint64_t) PR_UNIT << c) < bytes)
        c++;
    return c;
}

static struct pr_blob *blob_hdr(const struct presence *p, uint32_t ref, unsigned *cls)
{
    if (ref == 0)
        return NULL;
    uint64_t unit = (uint64_t) ref - 1;
    uint32_t page = (uint32_t) (unit / PR_UNITS_PAGE);
    struct pr_page *pm = page_meta(p, page);
    if (!pm)
        return NULL;
    uint32_t c1 = pr_load(&pm->cls);
    if (c1 == 0 || c1 > PR_NCLASSES)
        return NULL;
    uint32_t in_page = (uint32_t) (unit % PR_UNITS_PAGE);
    if (in_page & ((1u << (c1 - 1)) - 1))
        return NULL; /* not the start of a cell */
    if (cls)
        *cls = c1 - 1;
    return (struct pr_blob *) (void *) (p->base + p->h->off_arena + unit * PR_UNIT);
}

bool pr__blob_eq(const struct presence *p, uint32_t ref, uint32_t rlen, const char *s, size_t n)
{
    uint32_t len;
    const char *d = pr__blob_get(p, ref, &len);
    return d && len == rlen && len == n && memcmp(d, s, n) == 0;
}

/* Takes a free cell of class @cls in @page, looking from bitmap word *@word on
 * (round the page) and leaving there the word it found it in: a process's own
 * page is mostly full below where it last found room. */
static int64_t try_page(struct presence *p, uint32_t page, unsigned cls, struct pr_reader *rd,
                        uint32_t *word)
{
    struct pr_page *pm = page_meta(p, page);
    uint32_t cells = PR_UNITS_PAGE >> cls;
    uint32_t words = (cells + 63) / 64;
    uint32_t w = *word < words ? *word : 0;
    for (uint32_t seen = 0; seen < words; seen++, w = w + 1 < words ? w + 1 : 0) {
        uint64_t valid = cells - w * 64 >= 64 ? ~0ull : ((1ull << (cells - w * 64)) - 1);
        for (;;) {
            uint64_t bits = pr_load(&pm->bits[w]);
            uint64_t free_bits = ~bits & valid;
            if (!free_bits)
                break;
            unsigned b = (unsigned) __builtin_ctzll(free_bits);
            uint32_t ref = page * PR_UNITS_PAGE + ((w * 64 + b) << cls) + 1;
            pr_store(&rd->inflight_blob, ref);
            if (pr_cas(&pm->bits[w], bits, bits | (1ull << b))) {
                *word = w;
                return ref;
            }
        }
    }
    return -ENOSPC;
}

/* Assigns a never-used page to class @cls and takes a cell of it: the page
 * ref, or -ENOSPC when every page has been assigned. */
static int64_t fresh_page(struct presence *p, unsigned cls, struct pr_reader *rd, uint32_t *page,
                          uint32_t *word)
{
    struct pr_header *h = p->h;
    for (;;) {
        uint32_t pg = pr_load(&h->next_page);
        if (pg >= h->arena_pages)
            return -ENOSPC;
        if (!pr_cas(&h->next_page, pg, pg + 1))
            continue;
        struct pr_page *pm = page_meta(p, pg);
        pr_store(&pm->cls, cls + 1);
        pr_store(&h->page_hint[cls], pg);
        *page = pg;
        *word = 0;
        return try_page(p, pg, cls, rd, word);
    }
}

int64_t pr__blob_new(struct presence *p, const void *data, uint32_t len, uint32_t owner)
{
    struct pr_header *h = p->h;
    unsigned cls = class_for((uint64_t) len + PR_BLOB_HDR);
    if (cls >= PR_NCLASSES)
        return -ENOSPC;
    struct pr_reader *rd = pr__reader(p, pr__my_slot(p));
    if (!rd)
        return -EUSERS;
    int64_t ref = -ENOSPC;
    uint32_t used = pr_load(&h->next_page);
    if (used > h->arena_pages)
        used = h->arena_pages;
    /* This process's own page of the class first (its bitmap then stays in
     * this process's cache), then any page of the class with room (from a
     * place that differs by process), then a fresh page. */
    uint32_t own1 = pr_load(&p->blob_page[cls]), pg = own1 - 1;
    uint32_t word = pr_load(&p->blob_word[cls]);
    struct pr_page *pm = own1 ? page_meta(p, pg) : NULL;
    if (pm && pg < used && pr_load(&pm->cls) == cls + 1)
        ref = try_page(p, pg, cls, rd, &word);
    uint32_t start = used ? (pr_load(&h->page_hint[cls]) + p->proc) % used : 0;
    for (uint32_t k = 0; k < used && ref < 0; k++) {
        pg = (start + k) % used;
        pm = page_meta(p, pg);
        if (pm && pr_load(&pm->cls) == cls + 1) {
            word = 0;
            ref = try_page(p, pg, cls, rd, &word);
            if (ref > 0 && pg != start)
                pr_store(&h->page_hint[cls], pg);
        }
    }
    if (ref < 0)
        ref = fresh_page(p, cls, rd, &pg, &word);
    if (ref < 0)
        return ref;
    if (pg + 1 != own1)
        pr_store(&p->blob_page[cls], pg + 1);
    pr_store(&p->blob_word[cls], word);
    struct pr_blob *b = blob_hdr(p, (uint32_t) ref, NULL);
    b->len = len;
    b->link = 0;
    b->retire_epoch = 0;
    b->owner = owner;
    /* unique per cell reuse without a shared counter: process slot, then a
     * count of this process's allocations */
    b->seq = (p->proc << 24) | (__atomic_add_fetch(&p->blob_seq, 1u, __ATOMIC_RELAXED) & 0xffffffu);
    if (data)
        memcpy(b + 1, data, len);
    pr__count(p, PR_C_ARENA, (int64_t) PR_UNIT << cls);
    return ref;
}

void pr__blob_attached(struct presence *p)
{
    struct pr_reader *rd = pr__reader(p, pr__my_slot(p));
    if (rd)
        pr_store(&rd->inflight_blob, 0u);
}

void pr__blob_free(struct presence *p, uint32_t ref)
{
    unsigned cls;
    if (!blob_hdr(p, ref, &cls))
        return;
    uint64_t unit = (uint64_t) ref - 1;
    uint32_t page = (uint32_t) (unit / PR_UNITS_PAGE);
    uint32_t cell = (uint32_t) (unit % PR_UNITS_PAGE) >> cls;
    struct pr_page *pm = page_meta(p, page);
    pr_fetch_and(&pm->bits[cell / 64], ~(1ull << (cell % 64)));
    pr__count(p, PR_C_ARENA, -((int64_t) PR_UNIT << cls));
}

/* Whether the cell @ref is marked allocated (for check and sweep). */
bool pr__blob_allocated(const struct presence *p, uint32_t ref)
{
    unsigned cls;
    if (!blob_hdr(p, ref, &cls))
        return false;
    uint64_t unit = (uint64_t) ref - 1;
    uint32_t page = (uint32_t) (unit / PR_UNITS_PAGE);
    uint32_t cell = (uint32_t) (unit % PR_UNITS_PAGE) >> cls;
    return (pr_load(&page_meta(p, page)->bits[cell / 64]) >> (cell % 64)) & 1u;
}
