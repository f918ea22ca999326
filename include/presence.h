/*
 * presence.h -- shm-presence: a presence registry for co-located processes.
 *
 * One POSIX shared-memory segment holds rooms, connections and their presences.
 * Any number of processes (and threads) attach it and join, leave, touch and query
 * without a global lock: readers never block and never wait for a writer; writers
 * take only per-room, per-connection or per-bucket-stripe locks that survive the
 * death of their holder (a dead holder's lock is taken over and the object repaired
 * by the next locker).
 *
 * Conventions
 *   - Every function that can fail returns an int: >= 0 on success (0, a count or a
 *     documented result code), a negative value on failure: -errno (e.g. -ENOSPC)
 *     or one of the PRESENCE_E* codes below. presence_strerror() describes any of
 *     them. Nothing is changed by a call that fails with bad input.
 *   - Names (room, connection, user, group) are NUL-terminated strings of 1..255
 *     bytes of valid UTF-8 with no control characters.
 *   - "Never blocks" means: takes no lock and never waits for another process.
 *     "May block briefly" means: may wait for a per-object lock held by another
 *     writer (never by a reader), bounded by that writer's critical section.
 *   - Thread-safety: a presence_t may be shared by threads; each thread gets its
 *     own reader slot on first use (released when the thread exits).
 *   - Result structures returned through out-pointers are owned by the caller and
 *     released with the matching *_free() function.
 */
#ifndef PRESENCE_H
#define PRESENCE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#    define PRESENCE_EXTERN __attribute__((visibility("default")))
#else
#    define PRESENCE_EXTERN
#endif

#define PRESENCE_VERSION_MAJOR 0
#define PRESENCE_VERSION_MINOR 1
#define PRESENCE_VERSION_PATCH 0

/** Longest room, connection, user or group name, in bytes. */
#define PRESENCE_NAME_MAX        255
/** Most rooms a group may hold. */
#define PRESENCE_GROUP_MAX_ROOMS 2000

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* X-macro: name, value, message. Values lie in a range no errno uses. */
#define PRESENCE_ERRNO_MAP(XX)                                                       \
    XX(EBADMAGIC, -30100, "object is not a presence segment (bad magic)")            \
    XX(EVERSION, -30101, "segment was made by an incompatible layout version")       \
    XX(ETRUNCATED, -30102, "segment is smaller than its header says (truncated)")    \
    XX(ENOTREADY, -30103, "segment was never finished by its creator")               \
    XX(ECORRUPT, -30104, "segment failed an integrity check")                        \
    XX(EOWNER, -30105, "segment belongs to another user")                            \
    XX(EBOOT, -30106, "segment was made before the last reboot")                     \
    XX(ENAMELEN, -30110, "name is empty or longer than 255 bytes")                   \
    XX(ENAMEUTF8, -30111, "name is not valid UTF-8")                                 \
    XX(ENAMECTRL, -30112, "name contains a control character")                       \
    XX(ESTATEJSON, -30113, "state is not a JSON object")                             \
    XX(ESTATESIZE, -30114, "state is larger than the segment's state_max")           \
    XX(EGROUPFULL, -30115, "group would hold more than 2000 rooms")                  \
    XX(EUSERCONFLICT, -30116, "connection is already joined with a different user")  \
    XX(ESTALE, -30117, "connection handle is stale (the connection was removed)")    \
    XX(ENOGROUP, -30118, "no such group")                                            \
    XX(EOPTION, -30119, "invalid option or capacity")                                \
    XX(ELAPPED, -30120, "subscriber fell behind the event ring (re-read the rooms)") \
    XX(EREAPER, -30121, "another presence-reaper is running on this segment")        \
    XX(ENOSUBS, -30122, "no free subscriber slot in the segment")

typedef enum {
#define PRESENCE_XX_(name, val, msg) PRESENCE_##name = (val),
    PRESENCE_ERRNO_MAP(PRESENCE_XX_)
#undef PRESENCE_XX_
} presence_errno_t;

/** Describes any return value (-errno, PRESENCE_E*, or >= 0). Never NULL. Never blocks. */
PRESENCE_EXTERN const char *presence_strerror(int err);
/** "ENOSPC", "PRESENCE_EVERSION", ... or "UNKNOWN". Never NULL. Never blocks. */
PRESENCE_EXTERN const char *presence_err_name(int err);
/** Library version as "MAJOR.MINOR.PATCH". */
PRESENCE_EXTERN const char *presence_version_string(void);

/* ------------------------------------------------------------------------ */
/* Segment lifecycle                                                         */
/* ------------------------------------------------------------------------ */

typedef struct presence presence_t; /**< Opaque: one attachment to one segment. */

/** presence_open() flags. */
enum {
    PRESENCE_CREATE = 1u << 0,    /**< create the segment if it does not exist */
    PRESENCE_EXCL = 1u << 1,      /**< with CREATE: fail with -EEXIST if it exists */
    PRESENCE_RDONLY = 1u << 2,    /**< map read-only: queries only (inspectors) */
    PRESENCE_ANY_OWNER = 1u << 3, /**< allow attaching a segment owned by another uid */
    /** with CREATE: back a new segment with 2 MiB pages where the kernel can
     *  (madvise MADV_COLLAPSE, Linux 6.1+, whatever the tmpfs mount says): fewer
     *  TLB misses on large segments, at about 1.2 s per GiB more at creation here.
     *  Where it cannot, the segment stays in 4 KiB pages; presence_get_options()
     *  tells which. */
    PRESENCE_HUGE_PAGES = 1u << 4,
    /** map every page of the segment at open (madvise MADV_POPULATE_WRITE, or
     *  _READ with PRESENCE_RDONLY), so that no later operation takes a page
     *  fault: for long-lived processes that walk much of the segment, such as
     *  the reaper, whose prune otherwise faults in each page it first meets
     *  (~15% of a 100k-presence prune here). Costs page tables (2 KiB per MiB
     *  in 4 KiB pages) and time at open (~150 ms per GiB in 4 KiB pages here).
     *  Best effort: on kernels before 5.14 it reads one byte per page. */
    PRESENCE_POPULATE = 1u << 5,
};

/** Capacities and settings. Fill with presence_options_init(), then override. */
typedef struct presence_options {
    uint32_t rooms;             /**< room records (create only; default 4096) */
    uint32_t connections;       /**< connection records (default 16384) */
    uint32_t presences;         /**< presence records (default 65536) */
    uint32_t groups;            /**< group records (default 256) */
    uint32_t group_members;     /**< group-member records, all groups together (default 16384) */
    uint64_t arena_bytes;       /**< bytes for names and state (default 16 MiB, at most 1 GiB);
                                     the segment adds 32 B per presence and 64 B per room for
                                     the rooms' member arrays, within the same 1 GiB */
    uint32_t ring_entries;      /**< event ring entries of 64 bytes, power of two (default 65536) */
    uint32_t procs;             /**< attached-process slots (default 128) */
    uint32_t readers;           /**< reader (thread) slots (default 512) */
    uint32_t state_max;         /**< largest state document in bytes (default 32768) */
    uint64_t max_age_ms;        /**< default connection timeout (default 60000) */
    uint32_t mode;              /**< file mode of a new segment (default 0600; umask ignored) */
    uint32_t flags;             /**< PRESENCE_CREATE | PRESENCE_EXCL | ... */
    uint32_t attach_timeout_ms; /**< how long to wait for a segment being created (1000) */
} presence_options_t;

/** Fills @p opts with the defaults above. */
PRESENCE_EXTERN void presence_options_init(presence_options_t *opts);

/**
 * Attaches to the segment @p name (a POSIX shm name, with or without the leading
 * '/'), creating it first when PRESENCE_CREATE is set and it does not exist.
 * Of several processes creating the same name at once exactly one creates and the
 * others attach (or get -EEXIST with PRESENCE_EXCL); a segment is published only
 * once complete, so no process ever sees it half-made.
 * @param opts NULL for the defaults (attach only).
 * @param out  receives the handle; untouched on error.
 * @return 0, or -ENOENT (no such segment and no CREATE), -EEXIST (EXCL and it
 *   exists), -EACCES, PRESENCE_EOWNER (another uid; see PRESENCE_ANY_OWNER),
 *   PRESENCE_EBADMAGIC (not a presence segment), PRESENCE_EVERSION,
 *   PRESENCE_ETRUNCATED, PRESENCE_ENOTREADY (creator died before finishing, or
 *   still creating after attach_timeout_ms), PRESENCE_EBOOT, PRESENCE_EOPTION
 *   (bad capacities, or an unknown flag), -EINVAL (bad name), -ENOMEM, -ENOSPC
 *   (/dev/shm full).
 * May block up to attach_timeout_ms while another process creates the segment,
 * and with PRESENCE_POPULATE for as long as mapping every page takes.
 */
PRESENCE_EXTERN int presence_open(const char *name, const presence_options_t *opts,
                                  presence_t **out);

/** Detaches. The segment and everything in it stay. Never blocks. NULL is a no-op. */
PRESENCE_EXTERN void presence_close(presence_t *p);

/** Removes the name; processes already attached keep their mapping.
 *  @return 0, -ENOENT, -EACCES, -EINVAL. */
PRESENCE_EXTERN int presence_unlink(const char *name);

/** The segment's capacities and settings as created (flags: PRESENCE_HUGE_PAGES
 *  when the segment is in 2 MiB pages, else 0). Never blocks. */
PRESENCE_EXTERN void presence_get_options(const presence_t *p, presence_options_t *out);

/* ------------------------------------------------------------------------ */
/* Membership                                                                */
/* ------------------------------------------------------------------------ */

/** A connection handle: touch without a name lookup. Validated by generation. */
typedef struct presence_conn {
    uint32_t index;
    uint32_t generation;
} presence_conn_t;

/** presence_join_ex() flags. */
enum {
    /** The connection dies with the calling process: removed at once, reason
     *  owner_died, when that process dies. Otherwise it simply expires. */
    PRESENCE_BOUND = 1u << 0,
};

/** presence_join() results. */
enum {
    PRESENCE_JOINED = 0,    /**< the presence was added */
    PRESENCE_REFRESHED = 1, /**< it was already there; last_seen refreshed, no event */
};

/**
 * Adds the presence (@p room, @p conn). The room and the connection are created
 * on first use. @p user may be NULL (anonymous). Join counts as activity.
 * @return PRESENCE_JOINED or PRESENCE_REFRESHED, or PRESENCE_ENAME* (bad name),
 *   PRESENCE_EUSERCONFLICT (the connection exists with another user; nothing
 *   changed), -ENOSPC (a capacity is exhausted; nothing left behind),
 *   -EROFS (read-only attachment). May block briefly; when a capacity is
 *   exhausted but retired records are waiting for their grace period, it
 *   reclaims and retries for up to 200 ms before answering -ENOSPC.
 */
PRESENCE_EXTERN int presence_join(presence_t *p, const char *room, const char *conn,
                                  const char *user);

/**
 * presence_join() with a per-connection timeout (@p timeout_ms, 0 = the segment's
 * max_age; applies when the join creates the connection), @p flags
 * (PRESENCE_BOUND), and an optional handle for presence_touch_handle().
 */
PRESENCE_EXTERN int presence_join_ex(presence_t *p, const char *room, const char *conn,
                                     const char *user, uint64_t timeout_ms, unsigned flags,
                                     presence_conn_t *handle_out);

/** Removes the presence. @return 1 removed, 0 it was absent (not an error), or
 *  PRESENCE_ENAME*, -EROFS. May block briefly. */
PRESENCE_EXTERN int presence_leave(presence_t *p, const char *room, const char *conn);

/** Removes every presence of @p conn, one leave event per room.
 *  @return the number removed (0 if unknown), PRESENCE_ENAME*, -EROFS. */
PRESENCE_EXTERN int presence_leave_all(presence_t *p, const char *conn);

/** touch() result for an unknown connection (so the caller can re-join). */
#define PRESENCE_NOT_PRESENT 1

/** Refreshes last_seen of @p conn. last_seen is stamped from CLOCK_MONOTONIC_COARSE
 *  rounded up by four of its resolutions (kernel ticks, 4 ms each on a HZ=250 kernel;
 *  the coarse clock was measured lagging the precise one by up to two): a touch
 *  within the same tick writes nothing, and a connection expires no earlier than its
 *  timeout after its last touch (while the coarse clock lags by less than four ticks)
 *  and at most four ticks later. A load, a clock reading (no TSC) and at most one CAS
 *  after the lookup, which for a name of up to 40 bytes is tried first without a read
 *  section (validated as a touch by handle is; a miss is looked up again inside one).
 *  @return 0, PRESENCE_NOT_PRESENT, PRESENCE_ENAME*, -EROFS. Never blocks. */
PRESENCE_EXTERN int presence_touch(presence_t *p, const char *conn);

/** touch by handle. @return 0, PRESENCE_NOT_PRESENT (removed since), PRESENCE_ESTALE
 *  (the handle does not name a connection of this segment). Never blocks. */
PRESENCE_EXTERN int presence_touch_handle(presence_t *p, presence_conn_t handle);

/** on_message() result bits. */
enum {
    PRESENCE_MSG_HEARTBEAT = 1,   /**< the message is exactly the 11 bytes "heartbeat" */
    PRESENCE_MSG_NOT_PRESENT = 2, /**< the connection is unknown (nothing touched) */
};

/** Touches @p conn, then tells whether @p msg (binary-safe, @p len bytes) is the
 *  heartbeat literal "heartbeat" with its quotes, in which case the caller should
 *  stop processing it. @return a PRESENCE_MSG_* mask (>= 0), or an error. */
PRESENCE_EXTERN int presence_on_message(presence_t *p, const char *conn, const void *msg,
                                        size_t len);

/** Removes every connection whose last_seen is strictly older than now minus its
 *  timeout (its own, or @p max_age_ms when it has none; 0 = the segment's max_age),
 *  with reason timeout, one event per presence. "now" is CLOCK_MONOTONIC; last_seen
 *  is a coarse upper bound (see presence_touch), so a removal can come up to four
 *  ticks late, never early. @return connections removed. */
PRESENCE_EXTERN int presence_prune(presence_t *p, uint64_t max_age_ms);

/** Removes every empty room (room_deleted events). @return rooms removed. */
PRESENCE_EXTERN int presence_prune_rooms(presence_t *p);

/* ------------------------------------------------------------------------ */
/* State                                                                     */
/* ------------------------------------------------------------------------ */

/**
 * Replaces the state of @p conn's presence in each of @p rooms and in each room of
 * each of @p groups with the JSON object @p json (whole-object replace). Rooms where
 * the connection is not present are skipped. Validated before anything changes.
 * @return the number of presences updated, or PRESENCE_ESTATEJSON,
 *   PRESENCE_ESTATESIZE, PRESENCE_ENAME*, PRESENCE_ENOGROUP, -ENOSPC, -EROFS.
 */
PRESENCE_EXTERN int presence_set_state(presence_t *p, const char *const *rooms, size_t nrooms,
                                       const char *const *groups, size_t ngroups, const char *conn,
                                       const char *json);

/** One (room, uuid, state) row of get_state. */
typedef struct presence_state_item {
    char *room;
    char *uuid;  /**< the user if set, else the connection id */
    char *state; /**< JSON text, or NULL when no state was set */
} presence_state_item_t;

typedef struct presence_state_list {
    size_t count;
    presence_state_item_t *items;
} presence_state_list_t;

/** The state of @p uuid (a user id or a connection id) in the given rooms and
 *  groups. Never blocks. */
PRESENCE_EXTERN int presence_get_state(presence_t *p, const char *const *rooms, size_t nrooms,
                                       const char *const *groups, size_t ngroups, const char *uuid,
                                       presence_state_list_t **out);
PRESENCE_EXTERN void presence_state_list_free(presence_state_list_t *list);

/* ------------------------------------------------------------------------ */
/* Queries (never block)                                                     */
/* ------------------------------------------------------------------------ */

typedef struct presence_strlist {
    size_t count;
    char **items;
} presence_strlist_t;
PRESENCE_EXTERN void presence_strlist_free(presence_strlist_t *list);

typedef struct presence_occupant {
    char *uuid;  /**< user if set, else connection id */
    char *conn;  /**< connection id */
    char *state; /**< JSON text when include_state and set, else NULL */
} presence_occupant_t;

typedef struct presence_room_result {
    char *name;
    uint32_t occupancy; /**< presences in the room at the snapshot */
    size_t noccupants;  /**< occupants listed (limit/offset applied) */
    presence_occupant_t *occupants;
} presence_room_result_t;

typedef struct presence_here_now {
    size_t total_channels;
    uint64_t total_occupancy;
    size_t nrooms;
    presence_room_result_t *rooms;
} presence_here_now_t;

/** here_now() flags. */
enum {
    PRESENCE_INCLUDE_UUIDS = 1u << 0,
    PRESENCE_INCLUDE_STATE = 1u << 1,
    /** list the occupants' uuids only, as PubNub's here-now does: conn stays NULL,
     *  so a user's occupant costs one name instead of two (an anonymous
     *  occupant's uuid is its connection id). Implies INCLUDE_UUIDS. */
    PRESENCE_UUIDS_ONLY = 1u << 2,
};

/**
 * Occupancy and occupants of @p rooms and of the rooms of @p groups (each room
 * once). A room that does not exist answers occupancy 0. Each room's answer is a
 * consistent snapshot: with no limit, occupancy equals the occupants listed.
 * Occupants come in no particular order (a leave moves the room's last one into
 * its place), so pages taken with @p offset add up to the room only while it
 * does not change. @p limit caps occupants per room (0 = no cap); @p offset
 * skips that many. Free the answer with presence_here_now_free() (which keeps
 * one occupant block per thread for the next call).
 * @return 0, PRESENCE_ENAME*, PRESENCE_ENOGROUP, PRESENCE_EOPTION (an unknown flag),
 *   -ENOMEM. Never blocks.
 */
PRESENCE_EXTERN int presence_here_now(presence_t *p, const char *const *rooms, size_t nrooms,
                                      const char *const *groups, size_t ngroups, unsigned flags,
                                      size_t limit, size_t offset, presence_here_now_t **out);
PRESENCE_EXTERN void presence_here_now_free(presence_here_now_t *res);

/** The rooms where @p uuid (a user id, or else a connection id) is present. */
PRESENCE_EXTERN int presence_where_now(presence_t *p, const char *uuid, presence_strlist_t **out);

/** Unique users present in @p room (anonymous presences excluded). O(members). */
PRESENCE_EXTERN int presence_users(presence_t *p, const char *room, presence_strlist_t **out);

/** Presences in @p room without a user. @return the count (>= 0) or an error. */
PRESENCE_EXTERN int presence_anonymous_count(presence_t *p, const char *room);

/** Presences in @p room (0 if it does not exist). @return the count or an error. O(1). */
PRESENCE_EXTERN int presence_occupancy(presence_t *p, const char *room);

/** One row of presence_rooms(). */
typedef struct presence_room_info {
    char *name;
    uint32_t occupancy;
    uint32_t users;     /**< unique users */
    uint32_t anonymous; /**< presences without a user */
} presence_room_info_t;

typedef struct presence_room_list {
    size_t count;
    presence_room_info_t *items;
} presence_room_list_t;

/** Every room whose name starts with @p prefix (NULL or "" = all). */
PRESENCE_EXTERN int presence_rooms(presence_t *p, const char *prefix, presence_room_list_t **out);
PRESENCE_EXTERN void presence_room_list_free(presence_room_list_t *list);

/* ------------------------------------------------------------------------ */
/* Groups                                                                    */
/* ------------------------------------------------------------------------ */

/** Adds rooms to @p group, creating it. Rooms need not exist. Rooms already in
 *  the group are ignored. @return rooms added, PRESENCE_EGROUPFULL (nothing
 *  added), PRESENCE_ENAME*, -ENOSPC. May block briefly. */
PRESENCE_EXTERN int presence_group_add(presence_t *p, const char *group, const char *const *rooms,
                                       size_t nrooms);
/** Removes rooms from @p group. @return rooms removed, PRESENCE_ENOGROUP. */
PRESENCE_EXTERN int presence_group_remove(presence_t *p, const char *group,
                                          const char *const *rooms, size_t nrooms);
/** The rooms of @p group. @return 0, PRESENCE_ENOGROUP. Never blocks. */
PRESENCE_EXTERN int presence_group_list(presence_t *p, const char *group, presence_strlist_t **out);
/** Deletes @p group. @return 1 deleted, 0 absent. */
PRESENCE_EXTERN int presence_group_delete(presence_t *p, const char *group);

/* ------------------------------------------------------------------------ */
/* Introspection                                                             */
/* ------------------------------------------------------------------------ */

typedef struct presence_stats {
    uint64_t segment_bytes;
    uint32_t rooms, rooms_cap;
    uint32_t connections, connections_cap;
    uint32_t presences, presences_cap;
    uint32_t groups, groups_cap;
    uint32_t group_members, group_members_cap;
    uint64_t arena_used, arena_cap;
    uint32_t procs_attached, procs_cap;
    uint32_t readers_active, readers_cap;
    uint64_t epoch; /**< global reclamation epoch */
    uint64_t limbo; /**< retired items not yet reclaimed */
    uint64_t max_age_ms;
    uint32_t state_max;
    uint32_t bytes_per_presence; /**< a presence's record and its room member-array entry
                                      (80), names and state excluded */
    uint64_t joins, leaves, expired, reclaimed;
    int32_t reaper_pid; /**< 0 when none */
    uint64_t ring_tail; /**< next event sequence number */
    uint32_t ring_entries;
    uint64_t ring_oldest; /**< oldest seq that may still be in the ring */
    uint32_t subscribers; /**< subscriber slots in use */
    uint32_t ring_waiters;
    uint64_t lapped;               /**< times subscribers were lapped */
    uint64_t reaper_last_sweep_ns; /**< CLOCK_REALTIME of the reaper's last sweep (0: never) */
    uint64_t reaper_sweeps, reaper_expired, reaper_reclaimed;
    uint32_t layout_version;
    int32_t creator_pid;
    uint32_t owner_uid, mode;
    uint64_t created_ns; /**< CLOCK_REALTIME */
} presence_stats_t;

/** Counts and capacities. Never blocks. */
PRESENCE_EXTERN int presence_stats(presence_t *p, presence_stats_t *out);

/** One attached process (presence_procs). */
typedef struct presence_proc_info {
    uint32_t slot; /**< process slot */
    pid_t pid;
    int alive; /**< 1 while its liveness lock is held */
    int is_reaper;
    uint64_t attached_ns; /**< CLOCK_REALTIME */
    uint32_t readers;     /**< reader (thread) slots it holds */
    uint64_t
        oldest_epoch; /**< smallest epoch its readers announce (0: none inside a read section) */
    uint32_t subscribers; /**< subscriptions it holds */
} presence_proc_info_t;

typedef struct presence_proc_list {
    size_t count;
    presence_proc_info_t *items;
    uint64_t global_epoch;
} presence_proc_list_t;

/** Attached processes with their reader slots and liveness. Never blocks. */
PRESENCE_EXTERN int presence_procs(presence_t *p, presence_proc_list_t **out);
PRESENCE_EXTERN void presence_proc_list_free(presence_proc_list_t *list);

/** Every group's name, sorted. Never blocks. */
PRESENCE_EXTERN int presence_groups(presence_t *p, presence_strlist_t **out);

/** 0 if @p name is a valid room, connection, user or group name, else the
 *  PRESENCE_ENAME* code saying why not. Never blocks. */
PRESENCE_EXTERN int presence_validate_name(const char *name);

/**
 * Verifies every invariant of the segment: indexes agree with each other, counters
 * equal what is listed, every record is reachable or free, every offset in bounds.
 * Meaningful on a quiescent registry (concurrent writers cause transient reports).
 * @param out receives one message per violation (may be NULL).
 * @return the number of violations (0 = clean), or an error. Never blocks.
 */
PRESENCE_EXTERN int presence_check(presence_t *p, presence_strlist_t **out);

/**
 * The maintenance pass any process may run (the reaper runs it on a timer): clears
 * reader slots of dead processes, repairs what dead processes left half-done,
 * reclaims retired memory whose grace period has passed. Runs only while holding
 * the segment's maintenance lease; another live holder makes it return 0 at once.
 * @return items reclaimed. May block briefly.
 */
PRESENCE_EXTERN int presence_maintain(presence_t *p);

/* ------------------------------------------------------------------------ */
/* Events                                                                    */
/* ------------------------------------------------------------------------ */

/** Event types (and, for removals, the reason). */
enum {
    PRESENCE_EV_JOIN = 1,
    PRESENCE_EV_LEAVE = 2,
    PRESENCE_EV_TIMEOUT = 3,
    PRESENCE_EV_OWNER_DIED = 4,
    PRESENCE_EV_STATE_CHANGE = 5,
    PRESENCE_EV_ROOM_CREATED = 6,
    PRESENCE_EV_ROOM_DELETED = 7,
};

/** One event. The strings stay valid until the next call on the subscription. */
typedef struct presence_event {
    uint64_t seq;       /**< position in the ring: one global order, strictly increasing */
    uint64_t time_ns;   /**< CLOCK_REALTIME when it was produced */
    int type;           /**< PRESENCE_EV_* */
    int reason;         /**< for removals the type again (leave, timeout, owner_died,
                             room_deleted), else 0 */
    uint32_t occupancy; /**< the room's occupancy after the event */
    const char *room;   /**< never NULL */
    const char *conn;   /**< "" for room events */
    const char *user;   /**< "" when anonymous or for room events */
} presence_event_t;

/** "join", "leave", "timeout", "owner_died", "state_change", "room_created",
 *  "room_deleted", or "unknown". */
PRESENCE_EXTERN const char *presence_event_name(int type);

typedef struct presence_sub presence_sub_t; /**< Opaque: one subscription. */

/** presence_subscribe(): start at the next event produced. */
#define PRESENCE_SEQ_NOW    UINT64_MAX
/** presence_subscribe(): start at the oldest event still in the ring. */
#define PRESENCE_SEQ_OLDEST (UINT64_MAX - 1)

/**
 * Subscribes to the event ring from @p from_seq (an event's seq still in the
 * ring), PRESENCE_SEQ_NOW or PRESENCE_SEQ_OLDEST, optionally only events of room @p room (NULL:
 * all). Producers never wait for subscribers; one that falls a whole ring behind is told so
 * (PRESENCE_ELAPPED from presence_sub_next) and carries on from the oldest event still there. On a
 * read-only attachment the subscription writes nothing to the segment and gets no wake-ups (its
 * descriptor never becomes readable): poll on a timer.
 * @return 0, PRESENCE_ELAPPED (from_seq is no longer in the ring), -EINVAL
 *   (from_seq is not an event's seq), PRESENCE_ENAME*, PRESENCE_ENOSUBS,
 *   -ENOMEM, -EMFILE. Never blocks (the registration with a running reaper is a
 *   local socket round trip).
 */
PRESENCE_EXTERN int presence_subscribe(presence_t *p, uint64_t from_seq, const char *room,
                                       presence_sub_t **out);

/**
 * A file descriptor that becomes readable when events may be waiting: poll it
 * with poll/epoll/libuv (it is an epoll descriptor), then call
 * presence_sub_next() until it returns 0, which re-arms the wake-up. The
 * subscription's eventfd is handed to presence-reaper, which passes it on to the
 * producing processes: a producer writes it directly (one hop), and the reaper
 * relays for a producer that has no current copy. If the reaper dies the
 * descriptor becomes readable and the next call registers with its successor;
 * while no reaper holds the eventfd (none running, or a read-only attachment)
 * the descriptor polls by itself every 100 ms. Never blocks.
 */
PRESENCE_EXTERN int presence_sub_fd(const presence_sub_t *s);

/**
 * The next event into @p ev. @return 1 (an event), 0 (none yet: the wake-up is
 * armed), PRESENCE_ELAPPED (the subscription was lapped: events were lost; re-read
 * the rooms you care about, then continue calling). Never blocks.
 */
PRESENCE_EXTERN int presence_sub_next(presence_sub_t *s, presence_event_t *ev);

/** The seq the next call will look at. */
PRESENCE_EXTERN uint64_t presence_sub_position(const presence_sub_t *s);

/** Ends the subscription. NULL is a no-op. */
PRESENCE_EXTERN void presence_sub_close(presence_sub_t *s);

/* ------------------------------------------------------------------------ */
/* The reaper's side (used by presence-reaper; any process may call them)    */
/* ------------------------------------------------------------------------ */

/**
 * Makes this attachment the segment's reaper and records @p socket_path, where
 * it accepts registrations. @return 0, PRESENCE_EREAPER (another live reaper;
 * its pid in *other_pid), -EROFS, -EINVAL (path too long).
 */
PRESENCE_EXTERN int presence_reaper_claim(presence_t *p, const char *socket_path, pid_t *other_pid);
/** Stops being the reaper (the segment and its presences stay). */
PRESENCE_EXTERN void presence_reaper_release(presence_t *p);

/** What one presence_reaper_sweep() did. */
typedef struct presence_sweep_stats {
    int expired;       /**< connections removed with reason timeout */
    int owner_died;    /**< connections removed with reason owner_died */
    int rooms_deleted; /**< empty rooms removed */
    int reclaimed;     /**< records and blobs freed after their grace period */
    uint64_t duration_ns;
} presence_sweep_stats_t;

/**
 * One maintenance sweep: expire connections past their timeout, remove
 * connections bound to dead processes, remove empty rooms, clear reader slots
 * of dead processes, repair and reclaim. Updates the reaper statistics in the
 * segment header. @p st may be NULL. May block briefly.
 */
PRESENCE_EXTERN int presence_reaper_sweep(presence_t *p, presence_sweep_stats_t *st);

/**
 * Calls @p wake for every subscriber slot armed to wait whose position is behind
 * the ring, after disarming it. The reaper writes that slot's eventfd. Never blocks.
 * @return the number woken.
 */
PRESENCE_EXTERN int presence_reaper_wake(presence_t *p, void (*wake)(void *ctx, uint32_t slot),
                                         void *ctx);

/** Whether subscriber slot @p slot belongs to a live process (1), or not (0). */
PRESENCE_EXTERN int presence_reaper_sub_alive(presence_t *p, uint32_t slot);

/** This attachment's process slot and its generation (for registration). */
PRESENCE_EXTERN void presence_proc_id(const presence_t *p, uint32_t *slot, uint32_t *generation);

#ifdef __cplusplus
}
#endif
#endif /* PRESENCE_H */
