#!/usr/bin/env bash
# test_presencectl.sh -- end-to-end test of presencectl against a real segment:
# every command, its output (raw, table and JSON), its exit status (0 ok, 1 error,
# 2 usage) and its error messages; read-only commands must leave the segment's
# bytes unchanged; `check` must report a segment broken on purpose (helper_corrupt);
# the live views: `watch` (following, --from replays, room filters, lapping, signals),
# `top` (--once, --json, and on a terminal under tmux when tmux is installed) and `procs`
# (with a presence-reaper running).
#
# Run by CTest (label tools), which sets:
#   PRESENCECTL              the presencectl binary
#   PRESENCE_HELPER_CORRUPT  the helper_corrupt binary (tests/helper_corrupt.c)
#   PRESENCE_HELPER_WORKER   (optional) helper_worker: presencectl runs alongside it
#   PRESENCE_REAPER          (optional) presence-reaper, for `procs`
# By hand: PRESENCECTL=build/tools/presencectl \
#          PRESENCE_HELPER_CORRUPT=build/tests/helper_corrupt bash tests/test_presencectl.sh
# JSON is parsed with python3; without it the test is skipped (exit 77).
set -euo pipefail

ctl=${PRESENCECTL:?set PRESENCECTL to the presencectl binary}
corrupt=${PRESENCE_HELPER_CORRUPT:?set PRESENCE_HELPER_CORRUPT to the helper_corrupt binary}
if ! command -v python3 >/dev/null; then
    echo "test_presencectl: python3 not found; skipping" >&2
    exit 77
fi

seg=pr-test-ctl-$$
live=pr-test-ctl-$$-live
junk=pr-test-ctl-$$-junk
missing=pr-test-ctl-$$-missing
tmp=$(mktemp -d)
unset PRESENCE_SEGMENT PRESENCE_FORCE_TTY NO_COLOR

bg_pids=() # processes started in the background: stopped by pid on exit
cleanup() {
    local pid
    for pid in "${bg_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    for name in "$seg" "${main_seg:-$seg}" "$live" "$live-small" "${main_seg:-$seg}-huge"; do
        "$ctl" -s "$name" destroy >/dev/null 2>&1 || true
    done
    if command -v tmux >/dev/null; then
        tmux -L "pr-test-ctl-$$" kill-server 2>/dev/null || true
    fi
    rm -f "/dev/shm/$junk" "/dev/shm/$missing"
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---- harness ---------------------------------------------------------------------------

checks=0
failures=0
fail() {
    failures=$((failures + 1))
    printf 'FAIL: %s\n' "$*" >&2
}
ok() { checks=$((checks + 1)); }

# run RC ARGS...: runs presencectl -s SEGMENT ARGS; $out and $err hold its stdout and
# stderr; the exit status must be RC.
run() {
    local want=$1
    shift
    local rc=0
    "$ctl" -s "$seg" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
    if [[ $rc -ne $want ]]; then
        fail "presencectl $*: exit $rc, expected $want (stdout: '$out', stderr: '$err')"
    else
        ok
    fi
}

# same NAME GOT WANT
same() {
    if [[ $2 == "$3" ]]; then ok; else fail "$1: got '$2', expected '$3'"; fi
}

# contains NAME HAYSTACK NEEDLE
contains() {
    if [[ $2 == *"$3"* ]]; then ok; else fail "$1: '$2' does not contain '$3'"; fi
}

# present PATH WHAT / absent PATH WHAT: the file must exist / must not.
present() { if [[ -e $1 ]]; then ok; else fail "$2"; fi; }
absent() { if [[ ! -e $1 ]]; then ok; else fail "$2"; fi; }

# jv EXPR: evaluates the Python expression EXPR on the JSON document in $out (as d)
# and prints the result as compact JSON with sorted keys.
jv() {
    python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
print(json.dumps(eval(sys.argv[1], {"d": d}), sort_keys=True, separators=(",", ":")))
' "$1" <<<"$out"
}

# jsame NAME EXPR WANT: jv EXPR must print WANT.
jsame() {
    local got
    if ! got=$(jv "$2" 2>&1); then
        fail "$1: cannot evaluate $2 on '$out': $got"
        return
    fi
    same "$1" "$got" "$3"
}

shm_sum() { md5sum "/dev/shm/$seg" | cut -d' ' -f1; }

# ---- global options, help, usage ------------------------------------------------------------

run 0 --version
contains "--version" "$out" "presencectl "
run 0 --help
for cmd in create destroy stat rooms here-now where-now users get-state set-state join leave \
    touch leave-all prune prune-rooms group check dump watch top procs; do
    contains "--help lists $cmd" "$out" "  $cmd "
done
contains "--help has examples" "$out" "Examples:"
for cmd in create destroy stat rooms here-now where-now users get-state set-state join leave \
    touch leave-all prune prune-rooms group check dump watch top procs help; do
    run 0 "$cmd" --help
    contains "$cmd --help" "$out" "Usage: presencectl [-s SEGMENT] $cmd"
    run 0 "$cmd" -h
done
run 0 help join
contains "help join" "$out" "Usage: presencectl [-s SEGMENT] join ROOM CONN"

run 2
contains "no command" "$err" "no command given"
run 2 frobnicate
contains "unknown command" "$err" "unknown command 'frobnicate'"
run 2 --bogus stat
run 2 join lobby
contains "join usage" "$err" "Usage: presencectl [-s SEGMENT] join"
run 2 join --bogus lobby c1
contains "bad option" "$err" "unrecognized option '--bogus'"
run 2 join lobby c1 --timeout
contains "missing argument" "$err" "requires an argument"
run 2 join lobby c1 --timeout soon
run 2 here-now
contains "here-now needs a room" "$err" "expected at least one ROOM or -g GROUP"
run 2 here-now lobby --limit many
run 2 get-state alice
run 2 set-state c1
run 2 create --rooms 5Q
run 2 create --mode 0999
run 2 create extra-argument
run 2 group
run 2 group frob g
run 2 group add g
run 2 group list
run 2 stat extra
run 2 prune --max-age 0

# ---- a segment that does not exist ------------------------------------------------------------

for args in stat rooms "here-now lobby" "join lobby c1" check dump destroy; do
    rc=0
    # shellcheck disable=SC2086 # split the command on purpose
    "$ctl" -s "$missing" $args >"$tmp/out" 2>"$tmp/err" || rc=$?
    same "missing segment: $args: exit" "$rc" 1
    contains "missing segment: $args" "$(cat "$tmp/err")" "segment '$missing' does not exist"
done

# ---- create -------------------------------------------------------------------------------------

run 0 create --rooms 256 --connections 512 --presences 1K --groups 16 --group-members 256 \
    --arena 2M --ring 1024 --max-age 30 --mode 0640 --procs 16 --readers 64 --state-max 4K
same "segment file mode" "$(stat -c %a "/dev/shm/$seg")" 640
run 1 create
contains "create twice" "$err" "segment '$seg' already exists"
run 0 stat --json
jsame "stat rooms_cap" 'd["rooms_cap"]' 256
jsame "stat connections_cap" 'd["connections_cap"]' 512
jsame "stat presences_cap" 'd["presences_cap"]' 1024
jsame "stat groups_cap" 'd["groups_cap"]' 16
jsame "stat group_members_cap" 'd["group_members_cap"]' 256
jsame "stat state_max" 'd["state_max"]' 4096
jsame "stat max_age_ms" 'd["max_age_ms"]' 30000
jsame "stat ring_entries" 'd["ring_entries"]' 1024
jsame "stat procs_cap" 'd["procs_cap"]' 16
jsame "stat readers_cap" 'd["readers_cap"]' 64
jsame "stat mode" 'd["mode"]' '"0640"'
jsame "stat arena" 'd["arena_cap"] >= 2*1024*1024' true
jsame "stat empty" '[d["rooms"], d["connections"], d["presences"]]' '[0,0,0]'
jsame "stat reaper" 'd["reaper"]' '"none"'
jsame "stat keys" 'sorted(k for k in ("segment_bytes","bytes_per_presence","ring_tail","epoch","procs_attached","readers_active","arena_used") if k in d)' \
    '["arena_used","bytes_per_presence","epoch","procs_attached","readers_active","ring_tail","segment_bytes"]'
jsame "stat huge_pages (created without --huge-pages)" 'd["huge_pages"]' false

# --huge-pages: what create reports, stat reports too; a kernel that declines is warned about
main_seg=$seg
seg=$main_seg-huge
run 0 create --huge-pages --rooms 64 --json
huge=$(jv 'd["huge_pages"]')
if [[ $huge == false ]]; then
    contains "create --huge-pages declined: warning" "$err" "did not give segment"
else
    same "create --huge-pages: no warning" "$err" ""
fi
echo "# create --huge-pages: huge_pages $huge"
run 0 stat --json
jsame "stat huge_pages after create --huge-pages" 'd["huge_pages"]' "$huge"
run 0 destroy
seg=$main_seg
rc=0
"$ctl" -s "$missing" create --rooms 0 2>"$tmp/err" || rc=$?
same "create with a bad capacity: exit" "$rc" 1
contains "create with a bad capacity" "$(cat "$tmp/err")" "presencectl: create: segment '$missing':"
absent "/dev/shm/$missing" "a failed create left /dev/shm/$missing"

# ---- join, leave, touch, leave-all ----------------------------------------------------------------

run 0 join lobby c1 --user alice
same "join" "$out" joined
run 0 join lobby c1 --user alice
same "join again" "$out" refreshed
run 0 join lobby c2
run 0 join lobby c3 -u bob
run 0 join game.1 c1 -u alice
run 0 join game.2 c4 --user carol
run 0 join lobby c5 --json
jsame "join --json" 'd' '{"conn":"c5","result":"joined","room":"lobby"}'
run 1 join lobby c1 --user mallory
contains "user conflict" "$err" "presencectl: join: connection 'c1' is already joined with a different user"
long=$(printf 'r%.0s' $(seq 300))
run 1 join "$long" c1
contains "long room name" "$err" "presencectl: join: room name is longer than 255 bytes"
run 1 join lobby "$long"
contains "long connection name" "$err" "connection name is longer than 255 bytes"
run 1 join lobby "$(printf 'tab\there')"
contains "control character" "$err" "connection name contains a control character"
run 1 join lobby c9 --user "$(printf '\xff\xfe')"
contains "bad UTF-8" "$err" "user name is not valid UTF-8"
PRESENCE_FORCE_TTY=1 run 0 join lobby c1 -u alice
contains "join on a terminal" "$out" "Refreshed"

run 0 leave lobby c5
same "leave" "$out" removed
run 0 leave lobby c5
same "leave absent" "$out" absent
run 0 leave lobby c5 --json
jsame "leave --json" 'd["removed"]' false
run 0 touch c1
same "touch" "$out" touched
run 0 touch nobody
same "touch unknown" "$out" not-present
run 0 touch nobody --json
jsame "touch --json" 'd["touched"]' false

# ---- rooms, here-now, where-now, users ------------------------------------------------------------

run 0 rooms
same "rooms (raw)" "$out" "$(printf 'game.1\t1\t1\t0\ngame.2\t1\t1\t0\nlobby\t3\t2\t1')"
run 0 rooms --prefix game.
same "rooms --prefix" "$out" "$(printf 'game.1\t1\t1\t0\ngame.2\t1\t1\t0')"
run 0 rooms --json
jsame "rooms --json" '[(r["name"], r["occupancy"], r["users"], r["anonymous"]) for r in d["rooms"]]' \
    '[["game.1",1,1,0],["game.2",1,1,0],["lobby",3,2,1]]'
jsame "rooms --json count" 'd["count"]' 3
PRESENCE_FORCE_TTY=1 run 0 rooms
same "rooms (table) header" "$(head -n1 <<<"$out")" "ROOM    OCCUPANCY  USERS  ANONYMOUS"
same "rooms (table) row" "$(tail -n1 <<<"$out")" "lobby           3      2          1"
if [[ $out == *$'\t'* || $out == *$'\033'* ]]; then fail "table mode has tabs or colours"; else ok; fi

run 0 here-now lobby game.1 nosuch --json
jsame "here-now keys" 'sorted(d)' '["channels","total_channels","total_occupancy"]'
jsame "here-now totals" '[d["total_channels"], d["total_occupancy"]]' '[3,4]'
jsame "here-now channel order" 'list(d["channels"])' '["lobby","game.1","nosuch"]'
jsame "here-now lobby" 'd["channels"]["lobby"]["occupancy"]' 3
jsame "here-now lobby uuids" 'sorted(o["uuid"] for o in d["channels"]["lobby"]["occupants"])' \
    '["alice","bob","c2"]'
jsame "here-now no state key" '[sorted(o) for o in d["channels"]["lobby"]["occupants"]]' \
    '[["uuid"],["uuid"],["uuid"]]'
jsame "here-now missing room" 'd["channels"]["nosuch"]' '{"occupancy":0,"occupants":[]}'
run 0 here-now lobby --no-uuids --json
jsame "here-now --no-uuids" 'd' \
    '{"channels":{"lobby":{"occupancy":3,"occupants":[]}},"total_channels":1,"total_occupancy":3}'
run 0 here-now lobby --limit 1 --json
jsame "here-now --limit" '[d["channels"]["lobby"]["occupancy"], len(d["channels"]["lobby"]["occupants"])]' '[3,1]'
run 0 here-now lobby --limit 2 --offset 2 --json
jsame "here-now --offset" 'len(d["channels"]["lobby"]["occupants"])' 1
run 0 here-now game.2
same "here-now (raw)" "$out" "$(printf 'game.2\t1\tcarol\tc4')"
run 0 here-now game.2 --no-uuids
same "here-now --no-uuids (raw)" "$out" "$(printf 'game.2\t1')"
PRESENCE_FORCE_TTY=1 run 0 here-now game.2 nosuch
same "here-now (table)" "$out" "$(printf '%s\n' 'ROOM    OCCUPANCY  UUID   CONNECTION' \
    'game.2          1  carol  c4' 'nosuch          0' '2 rooms, 1 presence')"
PRESENCE_FORCE_TTY=1 run 0 here-now lobby --json
contains "JSON indented on a terminal" "$out" $'{\n  "total_channels": 1'
jsame "indented JSON parses" 'd["total_occupancy"]' 3

run 0 where-now alice
same "where-now" "$out" "$(printf 'game.1\nlobby')"
run 0 where-now c2 --json
jsame "where-now --json" 'd' '{"channels":["lobby"],"uuid":"c2"}'
run 0 where-now nobody
same "where-now nobody" "$out" ""
run 0 users lobby
same "users" "$out" "$(printf 'alice\nbob')"
run 0 users lobby --json
jsame "users --json" 'd' '{"room":"lobby","users":["alice","bob"]}'
run 1 users ""
contains "users empty name" "$err" "room name is empty"

# ---- state -----------------------------------------------------------------------------------------

run 0 set-state c1 '{"mood": "busy", "n": [1, 2]}' lobby game.1 nosuch
same "set-state count" "$out" 2
run 0 get-state alice lobby game.1 --json
jsame "get-state" 'd' \
    '{"channels":{"game.1":{"mood":"busy","n":[1,2]},"lobby":{"mood":"busy","n":[1,2]}},"uuid":"alice"}'
run 0 get-state alice lobby
same "get-state (raw)" "$out" "$(printf 'lobby\t{"mood":"busy","n":[1,2]}')"
run 0 get-state c2 lobby --json
jsame "get-state without state" 'd["channels"]' '{"lobby":null}'
run 0 here-now lobby --state --json
jsame "here-now --state is an object" \
    '[o.get("state") for o in d["channels"]["lobby"]["occupants"] if o["uuid"] == "alice"]' \
    '[{"mood":"busy","n":[1,2]}]'
jsame "here-now --state only when set" \
    '[sorted(o) for o in d["channels"]["lobby"]["occupants"] if o["uuid"] != "alice"]' \
    '[["uuid"],["uuid"]]'
run 1 set-state c1 '{"mood":' lobby
contains "set-state bad JSON" "$err" "presencectl: set-state: state is not a JSON object"
run 1 set-state c1 '[1, 2]' lobby
contains "set-state array" "$err" "state is not a JSON object"
big=$(python3 -c 'print("{\"x\": \"" + "y" * 5000 + "\"}")')
run 1 set-state c1 "$big" lobby
contains "set-state too big" "$err" "state is larger than the segment's state_max"
run 0 get-state alice lobby --json
jsame "state unchanged after errors" 'd["channels"]["lobby"]' '{"mood":"busy","n":[1,2]}'
run 0 set-state c1 '{}' lobby --json
jsame "set-state --json" 'd' '{"conn":"c1","updated":1}'

# ---- groups -----------------------------------------------------------------------------------------

run 0 group add pub lobby game.1 future
same "group add" "$out" 3
run 0 group add pub lobby
same "group add again" "$out" 0
run 0 group list pub
same "group list" "$(sort <<<"$out")" "$(printf 'future\ngame.1\nlobby')"
run 0 group list pub --json
jsame "group list --json" '[d["group"], sorted(d["rooms"])]' '["pub",["future","game.1","lobby"]]'
run 0 here-now -g pub --json
jsame "here-now -g" '[d["total_channels"], d["total_occupancy"]]' '[3,4]'
run 0 here-now game.2 -g pub --no-uuids --json
jsame "here-now room and group" 'sorted(d["channels"])' '["future","game.1","game.2","lobby"]'
run 0 get-state alice -g pub --json
jsame "get-state -g" 'sorted(d["channels"])' '["game.1","lobby"]'
run 0 set-state c1 '{"g": 1}' -g pub
same "set-state -g" "$out" 2
run 1 here-now -g nogroup
contains "here-now unknown group" "$err" "no such group 'nogroup'"
run 1 group list nogroup
contains "group list unknown" "$err" "presencectl: group list: no such group 'nogroup'"
run 0 group remove pub future
same "group remove" "$out" 1
run 0 group --json remove pub future
jsame "group remove --json" 'd' '{"group":"pub","removed":0}'
run 0 group delete pub
same "group delete" "$out" deleted
run 0 group delete pub
same "group delete absent" "$out" absent
run 1 group remove pub lobby
contains "group remove unknown" "$err" "no such group 'pub'"

# ---- read-only commands do not write ----------------------------------------------------------------

before=$(shm_sum)
for args in stat "stat --json" rooms "rooms --json" "here-now lobby game.1 --state --json" \
    "here-now lobby" "where-now alice" "users lobby" "get-state alice lobby" "group list x" \
    check "check --json" dump; do
    # shellcheck disable=SC2086 # split the command on purpose
    "$ctl" -s "$seg" $args >/dev/null 2>&1 || true
done
PRESENCE_FORCE_TTY=1 "$ctl" -s "$seg" stat >/dev/null
same "read-only commands leave the segment's bytes unchanged" "$(shm_sum)" "$before"

# ---- stat, dump -----------------------------------------------------------------------------------------

run 0 stat
contains "stat (raw)" "$out" "$(printf 'rooms\t3')"
contains "stat (raw) caps" "$out" "$(printf 'rooms_cap\t256')"
PRESENCE_FORCE_TTY=1 run 0 stat
contains "stat (table)" "$out" "Rooms:"
contains "stat (table) usage" "$out" "3 / 256"
run 0 stat --json
jsame "stat counts" '[d["rooms"], d["connections"], d["presences"]]' '[3,4,5]'

run 0 group add dumpg lobby zz game.1
run 0 dump
jsame "dump totals" '[d["segment"], d["total_channels"], d["total_occupancy"]]' "[\"$seg\",3,5]"
jsame "dump room" '[d["channels"]["lobby"][k] for k in ("occupancy","users","anonymous")]' '[3,2,1]'
jsame "dump occupant" '[o for o in d["channels"]["game.1"]["occupants"]]' \
    '[{"conn":"c1","state":{"g":1},"uuid":"alice"}]'
jsame "dump groups" 'd["groups"]' '{"dumpg":["game.1","lobby","zz"]}'
run 0 group delete dumpg
run 0 dump
jsame "dump without groups" 'd["groups"]' '{}'

# ---- leave-all, prune, prune-rooms ------------------------------------------------------------------------

run 0 leave-all c1
same "leave-all" "$out" 2
run 0 leave-all c1 --json
jsame "leave-all again" 'd' '{"conn":"c1","removed":0}'
run 0 join quick q1 --timeout 0.3
run 0 join lobby c1 -u alice
sleep 1.2
run 0 prune
same "prune (own timeout)" "$out" 1
run 0 where-now q1
same "q1 pruned" "$out" ""
run 0 touch c1
run 0 prune --max-age 1 --json
jsame "prune --max-age" 'd' '{"max_age_ms":1000,"removed":3}'
run 0 where-now alice
same "alice (touched) survives" "$out" lobby
run 0 rooms
same "rooms after prune" "$out" "$(printf 'game.1\t0\t0\t0\ngame.2\t0\t0\t0\nlobby\t1\t1\t0\nquick\t0\t0\t0')"
run 0 prune-rooms
same "prune-rooms" "$out" 3
run 0 rooms
same "rooms after prune-rooms" "$out" "$(printf 'lobby\t1\t1\t0')"
run 0 prune-rooms --json
jsame "prune-rooms --json" 'd' '{"removed":0}'

# ---- alongside a live writer -------------------------------------------------------------------------------

# helper_worker (tests/helper_worker.c) joins, leaves, touches and sets state in rooms
# r0..r7 and checks every result against its own model; presencectl queries and changes
# other rooms meanwhile. Neither may disturb the other, and every JSON document must parse.
if [[ -n ${PRESENCE_HELPER_WORKER:-} ]]; then
    "$PRESENCE_HELPER_WORKER" write "$seg" 1 4242 2 "$tmp/worker.log" >"$tmp/worker.out" 2>&1 &
    worker=$!
    rounds=0
    while kill -0 "$worker" 2>/dev/null; do
        run 0 here-now r0 r1 r2 r3 --state --json
        jsame "here-now while writing" 'd["total_channels"]' 4
        run 0 rooms --json
        run 0 dump
        jsame "dump while writing" 'd["total_channels"] == len(d["channels"])' true
        run 0 stat --json
        run 0 join ctl-room ctl-c1 -u ctl-user
        run 0 set-state ctl-c1 "{\"round\": $rounds}" ctl-room
        same "set-state while writing" "$out" 1
        run 0 touch ctl-c1
        run 0 leave ctl-room ctl-c1
        same "leave while writing" "$out" removed
        rounds=$((rounds + 1))
    done
    rc=0
    wait "$worker" || rc=$?
    same "helper_worker undisturbed (exit status; output: $(cat "$tmp/worker.out"))" "$rc" 0
    if [[ $rounds -gt 0 ]]; then ok; else fail "no round ran while helper_worker was running"; fi
fi

# ---- check ----------------------------------------------------------------------------------------------------

run 0 check
same "check (raw) clean" "$out" ""
run 0 check --json
jsame "check --json clean" 'd' "{\"clean\":true,\"count\":0,\"segment\":\"$seg\",\"violations\":[]}"
"$corrupt" "$seg" lobby 5 >/dev/null
run 1 check
contains "check reports the occupancy" "$out" "occupancy"
contains "check summary" "$err" "presencectl: check: segment '$seg':"
run 1 check --json
jsame "check --json broken" '[d["clean"], d["count"] > 0, any("occupancy" in v for v in d["violations"])]' \
    '[false,true,true]'

# ---- live views: watch, top, procs ------------------------------------------------------------------------------
# On a segment of their own (a small ring, so that it laps), with presencectl itself as the
# producer, presence-reaper (PRESENCE_REAPER) for procs, and tmux for top's screen.

main_seg=$seg
seg=$live
run 0 create --rooms 64 --connections 128 --presences 256 --ring 1024 --max-age 60

# ring_tail: the seq the next event will get.
ring_tail() { "$ctl" -s "$live" stat | awk -F'\t' '$1 == "ring_tail" { print $2 }'; }

# wait_pid PID SECONDS: waits for a background process of ours; its exit status, or 124
# (and it is killed) when it runs longer.
wait_pid() {
    local pid=$1 i rc=0
    for ((i = 0; i < $2 * 10; i++)); do
        [[ $(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) == [^Z]* ]] || break
        sleep 0.1
    done
    if [[ $(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) == [^Z]* ]]; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 124
    fi
    wait "$pid" || rc=$?
    return "$rc"
}

# jl EXPR FILE: evaluates EXPR on the list of JSON lines of FILE (as e).
jl() {
    python3 -c '
import json, sys
e = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
print(json.dumps(eval(sys.argv[1], {"e": e}), sort_keys=True, separators=(",", ":")))
' "$1" "$2"
}
jlsame() {
    local got
    if ! got=$(jl "$2" "$3" 2>&1); then
        fail "$1: cannot evaluate $2 on $(cat "$3"): $got"
        return
    fi
    same "$1" "$got" "$4"
}

# watch --json --count, following a producer (presencectl) that runs after it started;
# --from the tail taken before, so that no event can slip in before it subscribed.
start=$(ring_tail)
"$ctl" -s "$live" watch --json --count 7 --from "$start" >"$tmp/watch1" 2>"$tmp/watch1.err" &
wpid=$!
sleep 0.3
run 0 join w1 c1 --user u1
run 0 join w2 c2
run 0 set-state c1 '{"k": 1}' w1
run 0 leave w1 c1
run 0 prune-rooms
rc=0
wait_pid "$wpid" 10 || rc=$?
same "watch --json --count: exit (stderr: $(cat "$tmp/watch1.err"))" "$rc" 0
jlsame "watch: 7 events" 'len(e)' "$tmp/watch1" 7
jlsame "watch: types" '[x["type"] for x in e]' "$tmp/watch1" \
    '["room_created","join","room_created","join","state_change","leave","room_deleted"]'
jlsame "watch: rooms, conns, users" '[(x["room"], x["conn"], x["user"]) for x in e]' "$tmp/watch1" \
    '[["w1",null,null],["w1","c1","u1"],["w2",null,null],["w2","c2",null],["w1","c1","u1"],["w1","c1","u1"],["w1",null,null]]'
jlsame "watch: occupancy" '[x["occupancy"] for x in e]' "$tmp/watch1" '[0,1,0,1,1,0,0]'
jlsame "watch: reason" '[x["reason"] for x in e]' "$tmp/watch1" \
    '[null,null,null,null,null,"leave","room_deleted"]'
jlsame "watch: keys" 'sorted(e[1])' "$tmp/watch1" \
    '["conn","occupancy","reason","room","seq","time","time_ns","type","user"]'
jlsame "watch: seqs increase from the tail" \
    "e[0]['seq'] == $start and all(a['seq'] < b['seq'] for a, b in zip(e, e[1:]))" "$tmp/watch1" true
jlsame "watch: time is ISO-8601 UTC with ms and agrees with time_ns" \
    '[__import__("re").fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", x["time"]) is not None and __import__("datetime").datetime.utcfromtimestamp(x["time_ns"] // 10**9).strftime("%Y-%m-%dT%H:%M:%S") == x["time"][:19] for x in e] == [True] * 7' \
    "$tmp/watch1" true
seqs=$(jl '[x["seq"] for x in e]' "$tmp/watch1")

# watch --from SEQ replays: the same events again, long after they happened
run 0 watch --json --count 7 --from "$start"
printf '%s\n' "$out" >"$tmp/watch2"
jlsame "watch --from replays the same events" '[x["seq"] for x in e]' "$tmp/watch2" "$seqs"
third=$(jl 'e[2]["seq"]' "$tmp/watch1")
run 0 watch --json --count 2 --from "$third"
printf '%s\n' "$out" >"$tmp/watch3"
jlsame "watch --from the third event" '[x["type"] for x in e]' "$tmp/watch3" \
    '["room_created","join"]'
# several rooms: one subscription, filtered by name; one room: the library filters
run 0 watch w2 nosuch --json --count 2 --from "$start"
printf '%s\n' "$out" >"$tmp/watch4"
jlsame "watch ROOM ROOM" '[(x["type"], x["room"]) for x in e]' "$tmp/watch4" \
    '[["room_created","w2"],["join","w2"]]'
run 0 watch w1 --json --count 3 --from "$start"
printf '%s\n' "$out" >"$tmp/watch5"
jlsame "watch ROOM" '[(x["type"], x["room"]) for x in e]' "$tmp/watch5" \
    '[["room_created","w1"],["join","w1"],["state_change","w1"]]'
# piped: tab-separated seq, time, type, room, conn, user, occupancy, reason
run 0 watch --count 2 --from "$start"
same "watch (raw) fields" "$(cut -f1,3- <<<"$out")" \
    "$(printf '%s\troom_created\tw1\t\t\t0\t\n%s\tjoin\tw1\tc1\tu1\t1\t' "$start" "$((start + 1))")"
PRESENCE_FORCE_TTY=1 run 0 watch --count 1 --from "$start"
contains "watch (terminal) header" "$(head -n1 <<<"$out")" "SEQ  EVENT"
contains "watch (terminal) line" "$(tail -n1 <<<"$out")" "room_created  w1"

# a record of several ring entries (a long name): its second entry is not an event
longroom=$(printf 'room%.0s' $(seq 30))
long_seq=$(ring_tail)
run 0 join "$longroom" c9
run 1 watch --count 1 --from "$((long_seq + 1))"
contains "watch --from inside a record" "$err" "is not the seq of an event"
run 1 watch --from 999999
contains "watch --from the future" "$err" "seq 999999 has not happened yet"
run 2 watch --count 0
run 2 watch --from soon
run 1 watch "$(printf 'bad\tname')"
contains "watch bad room" "$err" "room name contains a control character"

# "from now": only events produced after it started (produce until it has one)
now_tail=$(ring_tail)
"$ctl" -s "$live" watch --json --count 1 >"$tmp/watch6" &
wpid=$!
for ((i = 0; i < 50; i++)); do
    "$ctl" -s "$live" join nowroom "n$i" >/dev/null
    [[ -s $tmp/watch6 ]] && break
    sleep 0.1
done
rc=0
wait_pid "$wpid" 10 || rc=$?
same "watch from now: exit" "$rc" 0
jlsame "watch from now: a later event" \
    "[e[0]['seq'] >= $now_tail, e[0]['room'], e[0]['type'] in ('join', 'room_created')]" \
    "$tmp/watch6" '[true,"nowroom",true]'

# Ctrl-C and SIGTERM end it with status 0
for sig in INT TERM; do
    "$ctl" -s "$live" watch >/dev/null 2>"$tmp/watch.err" &
    wpid=$!
    sleep 0.3
    kill "-$sig" "$wpid"
    rc=0
    wait_pid "$wpid" 5 || rc=$?
    same "watch ends on SIG$sig with status 0 ($(cat "$tmp/watch.err"))" "$rc" 0
done

# a watcher that asks for events the ring no longer holds: "lapped", then continues
seg=$live-small
run 0 create --rooms 256 --connections 64 --presences 256 --ring 64 --max-age 60
for ((i = 0; i < 12; i++)); do
    "$ctl" -s "$seg" join "$longroom-$i" c1 >/dev/null
done
run 0 watch --json --count 2 --from 0
printf '%s\n' "$out" >"$tmp/watch7"
jlsame "watch --from a lapped seq: a lapped line first" \
    '[e[0]["type"], sorted(e[0]), [x["type"] in ("join", "room_created") for x in e[1:]]]' \
    "$tmp/watch7" '["lapped",["message","next_seq","time","time_ns","type"],[true,true]]'
run 0 destroy
seg=$live

# top --once (and piped): the busiest room first, with the event rate
run 0 join busy b1 -u x
run 0 join busy b2 -u y
run 0 join busy b3
run 0 join quiet q1
run 0 top --once
contains "top --once header" "$(head -n1 <<<"$out")" "presencectl top: segment '$live'"
contains "top --once events" "$out" "Events "
same "top --once: the busiest room first" \
    "$(awk '$1 == "ROOM" { getline; print $1, $2; exit }' <<<"$out")" "busy 3"
rc=0
timeout 10 "$ctl" -s "$live" top >"$tmp/top" 2>&1 || rc=$?
same "top piped behaves like --once" "$rc:$(head -c 20 "$tmp/top")" "0:presencectl top: seg"
if [[ $(cat "$tmp/top") == *$'\033'* ]]; then fail "top --once wrote escape sequences"; else ok; fi
run 0 top --once --limit 1
contains "top --limit" "$out" "more rooms)"
run 0 top --json
jsame "top --json busiest" '[d["busiest"][0]["room"], d["busiest"][0]["occupancy"], d["busiest"][0]["users"]]' \
    '["busy",3,2]'
jsame "top --json rate" '[d["events"] >= 0, isinstance(d["events_per_sec"], float), d["rooms"] >= 2]' \
    '[true,true,true]'
run 0 top --json --interval 60000
jsame "top --json counts the last interval's events" 'd["busiest"][0]["events"] >= 3' true
run 2 top --interval 0
run 2 top --limit x

# procs: presence-reaper and a read-write process, with liveness and reader slots
if [[ -n ${PRESENCE_REAPER:-} ]]; then
    rsock=${TMPDIR:-/tmp}/pr-test-ctl-$$.sock
    "$PRESENCE_REAPER" -s "$live" --sweep-ms 100 --socket "$rsock" 2>"$tmp/reaper.log" &
    rpid=$!
    bg_pids+=("$rpid")
    for ((i = 0; i < 50; i++)); do
        # not `stat | grep -q` (under pipefail, stat may die of SIGPIPE after the match)
        grep -qx $'reaper\trunning' <<<"$("$ctl" -s "$live" stat)" && break
        sleep 0.1
    done
    run 0 procs --json
    jsame "procs lists the reaper" \
        "[(p['pid'], p['alive'], p['is_reaper'], p['readers'] >= 0) for p in d['procs'] if p['pid'] == $rpid]" \
        "[[$rpid,true,true,true]]"
    jsame "procs keys" 'sorted(d["procs"][0])' \
        '["alive","attached","attached_ns","command","epoch_lag","is_reaper","oldest_epoch","pid","readers","slot","subscribers"]'
    jsame "procs command" "[p['command'] for p in d['procs'] if p['pid'] == $rpid]" \
        '["presence-reaper"]'
    run 0 procs
    contains "procs (raw)" "$out" "$(printf '\t%s\tyes\tyes\t' "$rpid")"
    PRESENCE_FORCE_TTY=1 run 0 procs
    contains "procs (table) header" "$(head -n1 <<<"$out")" "SLOT"
    contains "procs (table) header" "$(head -n1 <<<"$out")" "REAPER"
    run 0 stat --json
    jsame "stat: reaper fields" \
        "[d['reaper_pid'] == $rpid, d['reaper_sweeps'] > 0, d['reaper_last_sweep_ns'] > 0, d['reaper_last_sweep'].endswith('Z'), d['procs_alive'] >= 1]" \
        '[true,true,true,true,true]'
    kill -TERM "$rpid"
    rc=0
    wait_pid "$rpid" 10 || rc=$?
    same "presence-reaper stops on SIGTERM ($(cat "$tmp/reaper.log"))" "$rc" 0
    run 0 procs --json
    jsame "procs: the reaper detached" "[p for p in d['procs'] if p['pid'] == $rpid]" '[]'
    rm -f "$rsock"
else
    echo "test_presencectl: PRESENCE_REAPER not set; skipping procs with a reaper" >&2
fi
# the live views are inspectors too: they leave the segment's bytes unchanged
before=$(md5sum "/dev/shm/$live" | cut -d' ' -f1)
for args in "watch --json --count 3 --from $start" "top --once" "top --json" procs "procs --json"; do
    # shellcheck disable=SC2086 # split the command on purpose
    "$ctl" -s "$live" $args >/dev/null 2>&1 || true
done
same "watch, top and procs leave the segment's bytes unchanged" \
    "$(md5sum "/dev/shm/$live" | cut -d' ' -f1)" "$before"
run 0 procs --json
jsame "procs --json" '[d["segment"], d["count"] == len(d["procs"]), d["global_epoch"] >= 1]' \
    "[\"$live\",true,true]"
run 0 stat --json
jsame "stat: new fields" \
    '[k in d for k in ("ring_oldest","subscribers","lapped","reaper_sweeps","reaper_last_sweep_ns","layout_version","creator_pid","owner_uid","created","created_ns","mode","procs_alive")]' \
    '[true,true,true,true,true,true,true,true,true,true,true,true]'
jsame "stat: origin" "[d['owner_uid'] == $(id -u), d['creator_pid'] > 0, d['created'].endswith('Z'), d['layout_version'] >= 1]" \
    '[true,true,true,true]'

# top on a terminal, under tmux: header, 'q' quits, the terminal is restored
if command -v tmux >/dev/null; then
    tsock=pr-test-ctl-$$
    tmux -L "$tsock" new-session -d -s top -x 120 -y 40 \
        "'$ctl' -s '$live' top --interval 200; echo TOP-EXITED-\$?; stty -a | tr ' ;' '\n\n' | grep -x -e echo -e icanon | tr '\n' ' '; echo; sleep 60"
    screen=""
    for ((i = 0; i < 50; i++)); do
        screen=$(tmux -L "$tsock" capture-pane -p -t top 2>/dev/null || true)
        [[ $screen == *"presencectl top: segment '$live'"* && $screen == *busy* ]] && break
        sleep 0.1
    done
    contains "top under tmux: header" "$screen" "presencectl top: segment '$live'"
    contains "top under tmux: the busiest room" "$screen" "busy"
    contains "top under tmux: key help" "$screen" "q or Ctrl-C: quit"
    tmux -L "$tsock" send-keys -t top q
    for ((i = 0; i < 50; i++)); do
        screen=$(tmux -L "$tsock" capture-pane -p -t top 2>/dev/null || true)
        [[ $screen == *TOP-EXITED-*echo* ]] && break
        sleep 0.1
    done
    contains "top under tmux: 'q' quits with status 0" "$screen" "TOP-EXITED-0"
    contains "top under tmux: the terminal is restored" "$screen" "icanon echo"
    tmux -L "$tsock" kill-server 2>/dev/null || true
else
    echo "test_presencectl: tmux not found; skipping top on a terminal (tools/bootstrap.sh installs it)" >&2
fi

run 0 destroy
seg=$main_seg

# ---- PRESENCE_SEGMENT, destroy ------------------------------------------------------------------------------------

rc=0
PRESENCE_SEGMENT=$seg "$ctl" rooms --prefix lob >"$tmp/out" 2>&1 || rc=$?
same "PRESENCE_SEGMENT selects the segment" "$rc:$(cat "$tmp/out")" "0:$(printf 'lobby\t6\t1\t0')"

printf 'not a presence segment at all' >"/dev/shm/$junk"
rc=0
"$ctl" -s "$junk" destroy 2>"$tmp/err" || rc=$?
same "destroy junk: exit" "$rc" 1
contains "destroy junk" "$(cat "$tmp/err")" "is not a presence segment"
present "/dev/shm/$junk" "destroy removed a non-presence object without --force"
"$ctl" -s "$junk" destroy --force
absent "/dev/shm/$junk" "destroy --force did not remove $junk"

run 0 destroy
absent "/dev/shm/$seg" "destroy left /dev/shm/$seg"
run 1 destroy
contains "destroy twice" "$err" "segment '$seg' does not exist"

# ---------------------------------------------------------------------------------------------------------------------

if [[ $failures -ne 0 ]]; then
    printf 'test_presencectl: %d of %d checks FAILED\n' "$failures" "$((checks + failures))" >&2
    exit 1
fi
printf 'test_presencectl: all %d checks passed\n' "$checks"
