/*
 * layout.h -- THE shared-memory format. Everything a segment holds is declared
 * here, and nothing in it is a pointer: records are addressed by 32-bit indexes
 * into fixed arrays, regions by byte offsets recorded in the header. Every
 * process computes base + offset locally, and every index read from the segment
 * is bounds-checked before use (see pr__room() etc. in internal.h).
 *
 * Any change to a struct here must bump PR_LAYOUT_VERSION; the layout hash
 * (sizes and offsets of every shared struct) catches builds that forgot.
 *
 * Segment map (offsets in the header, each region 128-byte aligned):
 *   header | procs[] | readers[] | rooms[] | conns[] | pres[] | groups[] |
 *   gmembers[] | room/conn/user/group buckets (u32) | stripe locks |
 *   arena page metadata | arena pages (64 KiB each) | event ring
 */
#ifndef PR_LAYOUT_H
#define PR_LAYOUT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define PR_MAGIC          0x31434e4553455250ull /* "PRESENC1" little-endian */
#define PR_LAYOUT_VERSION 6u
#define PR_CACHELINE      128
#define PR_NBATCH         32
#define PR_NSUBS          64

/* ---- record state word: {gen:32 | state:8 | slot:24} ------------------- */
/* gen is bumped each time the record is claimed, so a stale handle or a stale
 * helper CAS can never act on a later life of the same record. slot is the
 * reader slot that claimed it (valid in CLAIMED; kept afterwards for audit). */
enum pr_rstate {
    PR_FREE = 0,    /* on its free stack (or being claimed from it) */
    PR_CLAIMED = 1, /* popped by `slot`, being initialised, not yet published */
    PR_LIVE = 2,    /* published */
    PR_DEAD = 3,    /* logically removed; being unlinked */
    PR_RETIRED = 4, /* unlinked, in limbo until its grace period has passed */
};
#define PR_ST_GEN(w)   ((uint32_t) ((w) >> 32))
#define PR_ST_STATE(w) ((unsigned) (((w) >> 24) & 0xffu))
#define PR_ST_SLOT(w)  ((uint32_t) ((w) &0xffffffu))
#define PR_ST(gen, state, slot) \
    (((uint64_t) (gen) << 32) | ((uint64_t) (state) << 24) | ((uint64_t) (slot) &0xffffffu))

/* ---- free-stack head word: {idx1:24 | tag:24 | claimer:16} -------------- */
/* idx1 = index + 1 of the top record (0 = empty). tag grows on every change
 * (ABA). claimer = reader slot + 1 that has claimed the top record and not yet
 * swung the head (0 = none): the claim is durable in the head word itself, so
 * any process can complete it (see alloc.c). */
#define PR_NSHARD        4u
#define PR_FH_IDX1(w)    ((uint32_t) ((w) >> 40))
#define PR_FH_TAG(w)     ((uint32_t) (((w) >> 16) & 0xffffffu))
#define PR_FH_CLAIMER(w) ((uint32_t) ((w) &0xffffu))
#define PR_FH(idx1, tag, claimer)                                        \
    (((uint64_t) (idx1) << 40) | (((uint64_t) (tag) &0xffffffu) << 16) | \
     ((uint64_t) (claimer) &0xffffu))
#define PR_MAX_RECORDS 0xfffffeu /* indexes must fit idx1:24 */
#define PR_MAX_READERS 0xfffeu   /* claimer:16 */

/* Item ids in limbo: {kind:8 | index+1:24}. */
enum pr_kind { PR_K_ROOM = 1, PR_K_CONN, PR_K_PRES, PR_K_GROUP, PR_K_GMEMBER, PR_K_BLOB };
#define PR_ITEM(kind, idx) (((uint32_t) (kind) << 24) | ((uint32_t) (idx) + 1u))
#define PR_ITEM_KIND(it)   ((unsigned) ((it) >> 24))
#define PR_ITEM_IDX(it)    (((it) &0xffffffu) - 1u)

/* Common record head (24 bytes). */
struct pr_rec {
    uint64_t state;        /* state word above */
    uint64_t retire_epoch; /* global epoch read after the record was unlinked */
    uint32_t link;         /* free-stack or limbo successor: index+1 / item id, 0 = end */
    uint32_t aux;          /* kind-specific */
};

/* A lock (lock.c): word is 0 when free, else the holder's token {generation &
 * 0x3fff : 14 | process slot + 1 : 16} (a futex); sleepers counts the lockers
 * asleep on it, or about to be. */
typedef struct pr_lock {
    uint32_t word;
    uint32_t sleepers;
} pr_lock_t;

/* A bucket stripe's lock, alone on its cache line. */
struct pr_stripe {
    pr_lock_t lock;
    uint8_t pad[PR_CACHELINE - sizeof(pr_lock_t)];
};

/* A presence: (room, connection), 64 bytes. */
struct pr_pres {
    struct pr_rec h;     /* aux: 1 = the connection has no user (anonymous) */
    uint32_t room;       /* room index */
    uint32_t conn;       /* connection index */
    uint32_t room_next;  /* next presence of the room (index+1), under the room lock */
    uint32_t conn_next;  /* next presence of the connection (index+1), under its lock */
    uint32_t state_blob; /* arena ref of the state JSON (0 = none); swapped under room lock */
    uint32_t room_prev;  /* previous presence of the room (index+1), under the room lock */
    /* Copies of the connection's name and user (lengths and refs, which live as
     * long as the connection), so that a room walk reads no connection record
     * and sizes its answer without reading a blob. */
    uint16_t conn_len;
    uint16_t user_len;
    uint32_t room_slot; /* its entry in the room's member array, under the room lock */
    uint32_t conn_blob;
    uint32_t user_blob;
};

/* An entry of a room's member array (members.c), 16 bytes: what here_now lists
 * of a presence, so that a listing reads the array and the names, not the
 * presence records one after another down the room's list. */
struct pr_mentry {
    uint32_t pres; /* presence index */
    uint32_t conn_blob, user_blob;
    uint16_t conn_len, user_len;
};
#define PR_MCHUNKS 8u /* chunk refs in a room record */
#define PR_MCHUNK_MAX \
    ((PR_PAGE_SIZE - (uint32_t) PR_BLOB_HDR) / (uint32_t) sizeof(struct pr_mentry))

/* A room, 128 bytes. */
struct pr_room {
    struct pr_rec h;
    uint32_t name_blob, name_len, name_hash;
    uint32_t bucket_next; /* room hash chain (index+1), under the bucket's stripe lock */
    uint32_t members;     /* first presence (index+1) */
    uint32_t occupancy;   /* LIVE presences; written under the lock, read lock-free */
    uint32_t anonymous;   /* LIVE presences without a user */
    uint32_t version;     /* seqlock: odd while a writer changes members (under the lock) */
    pr_lock_t lock;       /* guards members, counters and the member array */
    /* The member array (members.c): entries 0 .. occupancy-1, entry i in chunk
     * i / PR_MCHUNK_MAX (blob refs). Exact while marray is 1; 0 after a failed
     * allocation or an inconsistency, until the room is empty again or the
     * maintenance after a death rebuilds it: readers then walk the list. */
    uint32_t marray;
    uint32_t mchunk[PR_MCHUNKS];
    uint8_t pad1[128 - 24 - 32 - sizeof(pr_lock_t) - sizeof(uint32_t) * (1 + PR_MCHUNKS)];
};

#define PR_CONN_INLINE 40u

/* A connection, 128 bytes. last_seen has bit 63 set once the connection is
 * being removed (a tombstone: touch fails from then on; bits 0..7 = reason). */
#define PR_TOMB (1ull << 63)
struct pr_conn {
    struct pr_rec h;    /* aux: flags (PRESENCE_BOUND) */
    uint64_t last_seen; /* pr__stamp_ns(), or PR_TOMB | reason */
    uint32_t name_blob, user_blob;
    uint16_t name_len, user_len;
    uint32_t name_hash, user_hash;
    uint32_t bucket_next; /* connection-name chain */
    uint32_t user_next;   /* user chain */
    uint32_t presences;   /* first presence (index+1) */
    uint32_t npres;       /* LIVE presences */
    uint32_t timeout_ms;  /* 0 = the prune call's max_age */
    uint32_t owner_proc;  /* process slot + 1 that joined it (for BOUND) */
    uint32_t owner_gen;   /* that slot's generation */
    pr_lock_t lock;       /* guards presences, npres */
    /* A copy of the name when it has at most PR_CONN_INLINE bytes, so that a
     * lookup compares it without reading the blob (immutable, like the blob) */
    char name_inline[PR_CONN_INLINE]; /* the record's last bytes */
};

/* A group, 128 bytes. */
struct pr_group {
    struct pr_rec h;
    uint32_t name_blob, name_len, name_hash;
    uint32_t bucket_next;
    uint32_t members; /* first gmember (index+1) */
    uint32_t count;
    uint8_t pad0[8];
    pr_lock_t lock;
    uint8_t pad1[128 - 24 - 32 - sizeof(pr_lock_t)];
};

/* A room name in a group, 64 bytes. */
struct pr_gmember {
    struct pr_rec h;
    uint32_t group, next;
    uint32_t name_blob, name_len, name_hash;
    uint8_t pad[64 - 24 - 20];
};

/* An attached process (one per presence_open), 64 bytes. Liveness is an OFD
 * write lock on byte PR_LOCK_BASE + index of the segment's file, held for as
 * long as the attachment lives: the kernel drops it when the process dies, so
 * pid reuse cannot fool it (LMDB's reader-table idea, with OFD locks). */
#define PR_LOCK_BASE 0x40000000ull
/* Statistics counters live in the reader slots, each thread adding to its own
 * with plain stores (no cache line shared between threads or processes on the
 * hot paths, no locked instruction); a thread without a reader slot adds to its
 * process slot's (atomically). A total is the sum over all reader and process
 * slots, dead ones included, and a slot's counters are never reset: a slot's
 * next owner goes on from the counts it finds. */
enum pr_ctr {
    PR_C_ARENA,
    PR_C_JOINS,
    PR_C_LEAVES,
    PR_C_EXPIRED,
    PR_C_RECLAIMED,
    PR_C_REPAIRS,
    PR_C_MEMBERS, /* arena bytes held by member arrays (chunks retired count as gone) */
    PR_NCTR
};
struct pr_proc {
    uint64_t owner;       /* {gen:32 | pid:32}; pid 0 = never used / released */
    uint64_t attached_ns; /* CLOCK_REALTIME */
    int64_t ctr[PR_NCTR]; /* this slot's share of each counter (may be negative) */
    uint8_t pad[128 - 16 - 8 * PR_NCTR];
};

/* A reader slot (one per thread per attachment), 192 bytes. The second line
 * is the thread's limbo stack: only the slot's thread pushes (CAS, for the
 * race with a take), only the lease holder takes the whole stack (CAS), so
 * a thread's retirements write no line another CPU wrote (epoch.c). The third
 * holds the thread's share of the statistics counters: only the slot's owner
 * writes them, with plain stores (no locked instruction on the write paths). */
struct pr_reader {
    uint64_t epoch;         /* global epoch announced on entry; 0 = quiescent */
    uint64_t owner;         /* {proc_gen:32 | proc+1:32}; 0 = free */
    uint32_t inflight_blob; /* arena ref allocated and not yet attached (crash recovery) */
    uint32_t tid;
    uint8_t pad0[64 - 24];
    uint64_t limbo_head; /* {item:32 | tag:32} */
    uint32_t limbo_tail; /* last item of the stack: set by the push onto an empty one */
    uint8_t pad1[64 - 12];
    int64_t ctr[PR_NCTR]; /* this slot's share of each counter (see pr_proc) */
    uint8_t pad2[64 - 8 * PR_NCTR];
};

/* Arena: 64 KiB pages of cells of one size class (64 B << class). A cell is
 * owned iff its bit is set. Blob refs count 64-byte units from the arena start,
 * plus 1 (0 = none). */
#define PR_PAGE_SIZE       65536u
#define PR_UNIT            64u
#define PR_UNITS_PAGE      (PR_PAGE_SIZE / PR_UNIT)
#define PR_NCLASSES        11u        /* 64 .. 65536 */
#define PR_MAX_ARENA_PAGES (1u << 14) /* 1 GiB */
struct pr_page {
    uint32_t cls; /* 0 = unassigned, else class + 1 (set once by CAS) */
    uint32_t pad;
    uint64_t bits[PR_UNITS_PAGE / 64];
};
struct pr_blob {
    uint32_t len;  /* payload bytes */
    uint32_t link; /* limbo successor (item id) */
    uint64_t retire_epoch;
    uint32_t owner; /* item id of the record that holds it (audit) */
    uint32_t seq;   /* allocation sequence: tells a leaked cell from a reused one */
    /* payload follows */
};
#define PR_BLOB_HDR sizeof(struct pr_blob)

/* The header. Hot words sit on their own cache lines. */
struct pr_header {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t header_size;
    uint64_t layout_hash;
    uint64_t segment_size;
    uint32_t ready; /* 0 while building, 1 when complete: written last */
    uint32_t creator_pid;
    uint64_t created_realtime_ns;
    uint32_t uid;
    uint32_t mode;
    char boot_id[40];
    uint32_t huge_pages; /* 1: the creator collapsed the segment into 2 MiB pages */
    uint32_t pad0;

    /* capacities */
    uint32_t cap_rooms, cap_conns, cap_pres, cap_groups, cap_gmembers;
    uint32_t cap_procs, cap_readers, ring_entries, state_max, arena_pages;
    uint64_t max_age_ms;
    uint64_t members_budget; /* arena bytes the rooms' member arrays may hold (members.c) */
    uint32_t nb_rooms, nb_conns, nb_users, nb_groups, nstripes; /* powers of two */
    uint32_t readers_hwm; /* reader slots ever claimed: slot i is used only once this > i */
    uint64_t hash_seed;

    /* region offsets */
    uint64_t off_procs, off_readers, off_rooms, off_conns, off_pres, off_groups, off_gmembers;
    uint64_t off_rb, off_cb, off_ub, off_gb, off_stripes, off_pages, off_arena, off_ring;

    /* free-stack heads: PR_NSHARD stacks per record kind (index = enum pr_kind),
     * one cache line per shard; a process takes from and returns to its own
     * shard (proc % PR_NSHARD) and takes from the others only when it is empty */
    uint64_t free_head[PR_NSHARD][8] __attribute__((aligned(PR_CACHELINE)));
    uint32_t page_hint[PR_NCLASSES]; /* a page of each class likely to have room */
    uint32_t next_page;              /* first never-assigned page */

    uint64_t global_epoch __attribute__((aligned(PR_CACHELINE)));

    /* The limbo stack of retirements made without a reader slot (none are
     * today; the reader slots hold the threads' own stacks). */
    uint64_t limbo_head __attribute__((aligned(PR_CACHELINE))); /* {item:32 | tag:32} */
    /* Batches taken off the limbo stacks by the lease holder, oldest first,
     * each freed whole once its newest stamp is older than every reader. */
    struct pr_batch {
        uint32_t head; /* item id; chained through their link */
        uint32_t pad;
        uint64_t max_stamp;
    } batch[PR_NBATCH];
    uint32_t batch_first, nbatch;

    uint64_t lease __attribute__((aligned(PR_CACHELINE))); /* {gen:32 | proc+1:32} */
    uint32_t needs_sweep;    /* a process died or a lock was recovered */
    uint32_t owners_changed; /* a process detached: look for its bound connections */
    uint32_t pad1;

    /* reaper */
    int32_t reaper_pid;
    uint32_t pad2;
    uint64_t reaper_last_sweep_ns, reaper_sweeps;

    /* reaper: one per segment, proven alive by its process slot's OFD lock */
    uint64_t reaper_owner; /* {proc gen : 32 | proc + 1 : 32}, 0 = none */
    uint64_t reaper_expired, reaper_reclaimed, reaper_lapped;
    char reaper_socket[108];

    /* event ring positions */
    uint64_t ring_tail __attribute__((aligned(PR_CACHELINE)));
    uint32_t ring_waiters __attribute__((aligned(PR_CACHELINE))); /* subscribers armed to wait */
    /* Bumped by the reaper after every change of the set of subscriber eventfds
     * it holds (and when a reaper starts): a producer's copy of that set (ipc.c)
     * is current while this has not moved. On ring_waiters' line, which every
     * producer that wakes someone reads anyway. */
    uint32_t subs_gen;
    struct pr_sub {
        uint64_t owner;   /* {proc gen : 32 | proc + 1 : 32}, 0 = free */
        uint32_t waiting; /* armed: wants an eventfd wake-up; whoever swaps it 1 -> 0 writes
                             the eventfd (a producer directly, or the reaper) */
        uint32_t lapped;  /* times it was lapped */
        uint64_t pos;     /* its read position (for presencectl) */
        uint32_t tag;     /* bumped at each claim of the slot: names this subscription (and
                             its eventfd) to the reaper and to producers' copies */
        uint32_t pad;
    } subs[PR_NSUBS];
} __attribute__((aligned(PR_CACHELINE)));

/* The event ring: entries of 64 bytes, a record spans 1..PR_RING_MAXENT
 * consecutive entries (wrapping freely). An entry's stamp is its absolute
 * position + 1 once committed (PR_RING_START on a record's first entry), or
 * PR_RING_WRITING | producer process + 1 while it is being written. */
#define PR_RING_START   (1ull << 62)
#define PR_RING_WRITING (1ull << 63)
#define PR_RING_POSMASK (PR_RING_START - 1)
#define PR_RING_DATA    56u
#define PR_RING_MAXENT  15u
struct pr_ring_entry {
    uint64_t stamp;
    uint8_t data[PR_RING_DATA];
};
struct pr_ring_hdr {  /* at the start of a record's data */
    uint64_t time_ns; /* CLOCK_REALTIME */
    uint32_t occupancy;
    uint16_t type, reason, nentries, room_len, conn_len, user_len;
    uint32_t pad;
};
_Static_assert(sizeof(struct pr_ring_entry) == 64, "ring entry");
_Static_assert(sizeof(struct pr_ring_hdr) == 32, "ring record header");

_Static_assert(sizeof(struct pr_rec) == 24, "pr_rec");
_Static_assert(sizeof(struct pr_pres) == 64, "presence record is 64 bytes");
_Static_assert(sizeof(struct pr_room) == 128, "room record is 128 bytes");
_Static_assert(sizeof(struct pr_conn) == 128, "connection record is 128 bytes");
_Static_assert(sizeof(struct pr_group) == 128, "group record is 128 bytes");
_Static_assert(sizeof(struct pr_gmember) == 64, "gmember record is 64 bytes");
_Static_assert(sizeof(struct pr_reader) == 192, "reader slot is 192 bytes");
_Static_assert(sizeof(struct pr_proc) == 128, "proc slot is 128 bytes");
_Static_assert(sizeof(struct pr_blob) == 24, "blob header");
_Static_assert(sizeof(struct pr_sub) == 32, "subscription slot");
_Static_assert(sizeof(uint64_t) == 8 && sizeof(void *) == 8, "LP64 only");

#endif /* PR_LAYOUT_H */
