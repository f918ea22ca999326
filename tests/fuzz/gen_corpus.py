#!/usr/bin/env python3
"""gen_corpus.py -- writes the seed corpora of the fuzz targets:

    tests/fuzz/corpus_segment/   inputs of fuzz_segment (mutations of a segment)
    tests/fuzz/corpus_api/       inputs of fuzz_api (operation sequences)

Run it from anywhere: python3 tests/fuzz/gen_corpus.py. The encodings follow the
comments at the top of fuzz_segment.c and fuzz_api.c; header and record offsets
are those of layout version 1 (struct pr_header, struct pr_room, ...). An input
that no longer means what its name says is still a valid input: the fuzzers
accept any bytes.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- fuzz_segment ---------------------------------------------------------------------
# regions (sel & 15)
R_HEADER, R_PROCS, R_READERS, R_ROOMS, R_CONNS, R_PRES, R_GROUPS, R_GMEMBERS = range(8)
R_BUCKETS, R_PAGES, R_BLOBS, R_HEADER_START, R_ALL = 8, 9, 10, 11, 12
# operations (sel >> 4)
SET8, SET32_SMALL, SET32, SET64, XOR8, ADD32, BOUNDARY32, SET16 = range(8)
BOUNDARY = {0: 0, 0xffffffff: 15, 0x80000000: 13, 0xffffff: 10, 1: 1}

# struct pr_header offsets (layout version 1)
H_MAGIC, H_VERSION, H_SEGMENT_SIZE, H_READY = 0, 8, 24, 32
H_ARENA_PAGES, H_NB_ROOMS, H_OFF_PROCS, H_OFF_ROOMS = 132, 144, 176, 192
H_LIMBO_HEAD, H_BATCH, H_BATCH_FIRST, H_NBATCH = 640, 648, 1160, 1164
ROOM_SIZE, ROOM_BUCKET_NEXT, ROOM_MEMBERS, ROOM_OCCUPANCY = 128, 36, 40, 44
PRES_SIZE, PRES_ROOM, PRES_ROOM_NEXT, PRES_CONN_NEXT, PRES_STATE_BLOB = 64, 24, 32, 36, 40
CONN_PRESENCES, CONN_USER_NEXT, REC_LINK = 60, 56, 16


def mut(region, op, off, value=0):
    sel = (op << 4) | region
    out = bytes([sel]) + struct.pack("<I", off)[:3]
    if op == SET32:
        out += struct.pack("<I", value)
    elif op == SET64:
        out += struct.pack("<Q", value)
    elif op == SET16:
        out += struct.pack("<H", value)
    elif op == BOUNDARY32:
        out += bytes([BOUNDARY[value]])
    elif op == ADD32:
        out += struct.pack("<b", value)
    else:
        out += bytes([value & 0xff])
    return out


def seg(*muts, truncate=None):
    if truncate is None:
        return b"\x00" + b"".join(muts)
    return b"\x01" + struct.pack("<I", truncate)[:3] + b"".join(muts)


SEGMENT = {
    "00-pristine": seg(),
    "01-bad-magic": seg(mut(R_HEADER_START, SET8, H_MAGIC, 0x51)),
    "02-layout-version": seg(mut(R_HEADER_START, SET32_SMALL, H_VERSION, 2)),
    "03-not-ready": seg(mut(R_HEADER_START, SET32_SMALL, H_READY, 0)),
    "04-truncated-100": seg(truncate=100),
    "05-truncated-mid": seg(truncate=200000),
    "06-segment-size-small": seg(mut(R_HEADER_START, SET64, H_SEGMENT_SIZE, 8192)),
    "07-arena-pages-zero": seg(mut(R_HEADER_START, BOUNDARY32, H_ARENA_PAGES, 0)),
    "08-region-misaligned": seg(mut(R_HEADER_START, ADD32, H_OFF_ROOMS, 8)),
    "09-buckets-not-pow2": seg(mut(R_HEADER_START, SET32_SMALL, H_NB_ROOMS, 3)),
    "10-room-chain-cycle": seg(mut(R_ROOMS, SET32_SMALL, ROOM_BUCKET_NEXT, 1),
                               mut(R_ROOMS, SET32_SMALL, ROOM_SIZE + ROOM_BUCKET_NEXT, 2)),
    "11-members-out-of-bounds": seg(mut(R_ROOMS, BOUNDARY32, ROOM_MEMBERS, 0xffffffff)),
    "12-occupancy-huge": seg(mut(R_ROOMS, BOUNDARY32, ROOM_OCCUPANCY, 0x80000000),
                             mut(R_ROOMS, BOUNDARY32, ROOM_SIZE + ROOM_OCCUPANCY + 4, 0x80000000)),
    "13-member-list-cycle": seg(mut(R_PRES, SET32_SMALL, PRES_ROOM_NEXT, 1),
                                mut(R_PRES, SET32_SMALL, PRES_CONN_NEXT, 1)),
    "14-presence-wrong-room": seg(mut(R_PRES, SET32_SMALL, PRES_ROOM, 200),
                                  mut(R_PRES, SET32, PRES_SIZE + PRES_STATE_BLOB, 0x7fffffff)),
    "15-blob-len-huge": seg(mut(R_BLOBS, SET32, 0, 0x7fffffff),
                            mut(R_BLOBS, SET32, 64, 0xfff0)),
    "16-page-class-bad": seg(mut(R_PAGES, SET32_SMALL, 0, 12),
                             mut(R_PAGES, SET32_SMALL, 520, 5)),
    "17-limbo-cycle": seg(mut(R_HEADER, SET32, H_LIMBO_HEAD + 4, (3 << 24) | 1),
                          mut(R_PRES, SET32, REC_LINK, (3 << 24) | 1)),
    "18-limbo-batches-garbage": seg(mut(R_HEADER, SET32_SMALL, H_NBATCH, 200),
                                    mut(R_HEADER, SET32_SMALL, H_BATCH_FIRST, 31),
                                    mut(R_HEADER, SET64, H_BATCH, 0x0600000105000001)),
    "19-user-chain-cycle": seg(mut(R_CONNS, SET32_SMALL, CONN_USER_NEXT, 1),
                               mut(R_CONNS, SET32_SMALL, CONN_PRESENCES, 0xff)),
    "20-proc-slots-garbage": seg(mut(R_PROCS, SET64, 0, 0xffffffff00000001),
                                 mut(R_READERS, SET64, 8, 0x0000000100000001)),
    "21-whole-segment-bytes": seg(mut(R_ALL, XOR8, 0x3000, 0xff), mut(R_ALL, XOR8, 0x7777, 0x01),
                                  mut(R_BUCKETS, BOUNDARY32, 0, 0xffffff)),
}

# ---- fuzz_api -----------------------------------------------------------------------------
# must match valid_names / edge_names / json_pool in fuzz_api.c
VALID = ["r0", "r1", "r2", "r3", "c0", "c1", "c2", "u0", "u1", "g0", "g1", "é", "日本", "a b",
         "x/y:z", "n" * 255, "😀", "\u00a0", "\uffff", "b1", "b2"]
EDGE = [None, "", "o" * 256, "\x01", "a\x7f", "\x1f", b"\xc0\xaf", b"\xc1\xbf", b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", "\u0085", "\u009f", b"\xe0\x80\x80",
        b"\xf0\x80\x80\x80", b"a\xff", b"\xe6\x97", b"\x80", "ok\n", b"\xf8\x88\x80\x80\x80",
        b"\xed\xbf\xbf"]
J_NULL, J_EMPTY, J_A1, J_NESTED, J_NUL, J_DUP, J_ARRAY, J_NUM, J_STR, J_OPEN, J_BADUTF8, \
    J_TRAIL, J_UNICODE, J_MAX, J_OVER = range(15)
OP = dict(join=0, join_ex=2, leave=3, leave_all=5, touch=6, touch_handle=7, set_state=8,
          group_add=10, group_bulk=11, group_remove=12, group_delete=13, prune_rooms=14,
          query=15, on_message=0x1f)
TINY, SMALL, GROUPS = 0, 1, 2


def name(n):
    """A name argument: a pool entry by value, or a literal (bytes)."""
    if isinstance(n, str) and n in VALID:
        return bytes([VALID.index(n)])
    if n is None or n in EDGE:
        return bytes([0xa0 + EDGE.index(n)])
    raw = n.encode() if isinstance(n, str) else n
    assert len(raw) < 255
    return bytes([0xe0, len(raw)]) + raw


def user(u):
    if u is None:
        return b"\x00"
    if u in VALID:  # a byte >= 0x30 that selects the same pool entry
        b = next(b for b in range(0x30, 0xa0) if b % len(VALID) == VALID.index(u))
        return bytes([b])
    return name(u)


def names(lst, null=False):
    if null:
        return b"\xff"
    return bytes([len(lst)]) + b"".join(name(n) for n in lst)


def json(j):
    if isinstance(j, int):
        return bytes([j])
    raw = j.encode() if isinstance(j, str) else j
    return b"\xc0" + struct.pack("<H", len(raw)) + raw


def op(kind, *args):
    return bytes([OP[kind]]) + b"".join(args)


def join(r, c, u=None):
    return op("join", name(r), name(c), user(u))


def join_ex(r, c, u=None, flags=0):
    return op("join_ex", name(r), name(c), user(u), bytes([flags]))


def leave(r, c):
    return op("leave", name(r), name(c))


def set_state(rooms, groups, c, j, null_rooms=False):
    return op("set_state", names(rooms, null_rooms), names(groups), name(c), json(j))


def group_add(g, rooms, null=False):
    return op("group_add", name(g), names(rooms, null))


def group_bulk(g, n, start=0, chunk=128):
    return op("group_bulk", name(g), struct.pack("<H", n), bytes([start, chunk - 1]))


def group_remove(g, rooms):
    return op("group_remove", name(g), names(rooms))


def query(rooms, groups, uuid, flags=3, limit=0, offset=0):
    return op("query", names(rooms), names(groups), bytes([flags, limit, offset]), name(uuid))


def api(profile, *ops):
    return bytes([profile]) + b"".join(ops)


API = {
    "00-basic": api(SMALL, join("r0", "c0", "u0"), join("r0", "c1"), join_ex("r1", "c0", "u0"),
                    set_state(["r0", "r1"], [], "c0", J_NESTED),
                    query(["r0", "r1", "r2"], [], "u0"), query(["r0"], [], "c1", 3, 1, 1),
                    leave("r0", "c1"), op("prune_rooms"), op("leave_all", name("c0")),
                    op("prune_rooms")),
    "01-bad-names": api(TINY, *(join(e, "c0") for e in EDGE), join("r0", "o" * 200 + "\x02"),
                        join("r0", b"ab\x00cd"), join("r0", "c0", b"\xe2\x82"),
                        join("r0", "c1", "\u200b"), op("touch", name("\x01")),
                        op("leave_all", name(None)), leave("", "c0")),
    "02-bad-json": api(SMALL, join("r0", "c0"),
                       *(set_state(["r0"], [], "c0", j) for j in range(15)),
                       set_state(["r0"], [], "c0", '{"a":"\\ud800"}'),
                       set_state(["r0"], [], "c0", b'{"a":"\xc3"}'),
                       set_state(["r0"], [], "c0", '{"a":1e999}'),
                       set_state([], [], "c0", J_A1, null_rooms=True),
                       set_state(["r0", "\x01"], [], "c0", J_A1),
                       query(["r0"], [], "c0")),
    "03-groups": api(SMALL, join("r0", "c0", "u1"), join("r2", "c0", "u1"),
                     group_add("g0", ["r0", "r1", "r2", "r1"]), group_add("g0", ["r1", "r3"]),
                     set_state([], ["g0"], "c0", J_UNICODE), query([], ["g0"], "u1"),
                     group_remove("g0", ["r1", "nope"]), op("group_delete", name("g0")),
                     group_remove("g1", ["r0"]), group_add("g1", [], null=True),
                     group_add("g1", []), set_state(["r0"], ["g1", "g0"], "c0", J_A1)),
    "04-capacity": api(TINY, *(join(r, c) for r in ["r0", "r1", "r2", "r3", "é"]
                               for c in ["c0", "c1", "c2"]),
                       join("r0", "u0"), join("日本", "u1"), op("leave_all", name("c1")),
                       join("r3", "u0"), op("prune_rooms")),
    "05-group-limit": api(GROUPS, group_bulk("g0", 2000), group_add("g0", ["r0"]),
                          group_bulk("g1", 2001), group_remove("g0", ["b0", "b1999"]),
                          group_add("g0", ["r0", "r1"]), op("group_delete", name("g0"))),
    "06-handles": api(SMALL, join_ex("r0", "c0", "u0"), join_ex("r1", "c0", "u0", 1),
                      join_ex("r2", "c1", None, 2), op("touch_handle", b"\x00\x00"),
                      op("leave_all", name("c0")), op("touch_handle", b"\x01\x00"),
                      op("touch_handle", b"\x02\x05\x00\x01"),
                      op("touch_handle", b"\x02\xff\xff\x01"), op("touch", name("c0"))),
    "07-user-conflict": api(SMALL, join("r0", "c0", "u0"), join("r1", "c0", "u1"),
                            join("r1", "c0"), join("r0", "c1"), join("r0", "c1", "u0"),
                            query(["r0", "r1"], [], "u0")),
    "08-state-sizes": api(SMALL, join("r0", "c0"), join("r1", "c0"),
                          set_state(["r0", "r1"], [], "c0", J_MAX),
                          set_state(["r0"], [], "c0", J_OVER), set_state(["r1"], [], "c0", J_NUL),
                          query(["r0", "r1"], [], "c0")),
    "09-empty-group-out-of-space": api(TINY, group_add("g0", []),
                                       group_add("g1", ["r0", "r1", "r2", "r3", "é"]),
                                       group_add("g1", ["日本"]), group_add("g0", ["r0"]),
                                       op("group_delete", name("g1")), group_add("g0", ["r0"])),
    "10-messages": api(SMALL, join("r0", "c0"), op("on_message", name("c0"), b"\x01"),
                       op("on_message", name("c0"), b"\x03"),
                       op("on_message", name("c1"), b"\x04abcd"),
                       op("on_message", name(b"\xff"), b"\x01")),
}


def write(dirname, corpus):
    d = os.path.join(HERE, dirname)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):  # regression inputs (crash-*) are kept; generated ones rewritten
        if f[:2].isdigit():
            os.remove(os.path.join(d, f))
    for fname, data in corpus.items():
        with open(os.path.join(d, fname), "wb") as fh:
            fh.write(data)


if __name__ == "__main__":
    write("corpus_segment", SEGMENT)
    write("corpus_api", API)
    print(f"{len(SEGMENT)} segment inputs, {len(API)} api inputs")
