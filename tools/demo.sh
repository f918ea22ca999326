#!/usr/bin/env bash
# The live demo: installs what is missing, builds, then runs a pretend chat server on a
# fresh segment and shows the registry live through presencectl:
#   - presence-reaper (max-age 3 s, a sweep every 250 ms);
#   - three worker processes (presence-demo-worker, tools/demo/demo_worker.c): their
#     connections join rooms with users, heartbeat, set state, move and leave; some go
#     silent and time out; worker 3 joins with PRESENCE_BOUND and is killed with SIGKILL,
#     so its connections vanish at once (owner_died);
#   - `presencectl watch` while that happens, then `top --once`, `here-now`, `procs`,
#     `stat` and `check`.
# It ends by itself (about 25 s after the build; DEMO_SHORT=1: about 6 s) or on Ctrl-C,
# stops every process it started (by pid) and destroys its segment.
#
#   bash tools/demo.sh
#   DEMO_SHORT=1 bash tools/demo.sh
#   DEMO_NO_BUILD=1 PRESENCE_BUILD_DIR=/path/to/build bash tools/demo.sh  # an existing build
set -euo pipefail
# shellcheck source=tools/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seg=presence-demo-$$
sock=${TMPDIR:-/tmp}/presence-demo-$$.sock
work=$(mktemp -d)
started=() # pids of what we started and still run: stopped in reverse order

if [[ ${DEMO_SHORT:-0} == 1 ]]; then
    watch_s=5 kill_at_s=1.5 silent_after_ms=500 pause_s=0
else
    watch_s=20 kill_at_s=7 silent_after_ms=1500 pause_s=1
fi

ctl() { "$build_dir/tools/presencectl" -s "$seg" "$@"; }
# The human form (aligned tables) also when our output is a pipe or a file.
ctl_tty() { PRESENCE_FORCE_TTY=1 ctl "$@"; }
note() { printf -- '-- %s\n' "$*"; }

# running PID: the process exists and is not a zombie waiting for us to reap it.
running() {
    local state
    state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z ]]
}

# stop PID [SIGNAL]: signals one of our processes, waits up to 5 s, then SIGKILL; returns
# its exit status and forgets it.
stop() {
    local pid=$1 sig=${2:-TERM} i rc=0
    if running "$pid"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            running "$pid" || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    forget "$pid"
    return "$rc"
}

# forget PID: no longer ours to stop.
forget() {
    local i
    for i in "${!started[@]}"; do
        [[ ${started[i]} == "$1" ]] && unset 'started[i]'
    done
    started=("${started[@]}")
}

cleanup() {
    set +e
    local i
    while [[ ${#started[@]} -gt 0 ]]; do
        stop "${started[-1]}"
    done
    if [[ -x $build_dir/tools/presencectl ]]; then
        ctl destroy >/dev/null 2>&1
    fi
    rm -f "$sock"
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; note "interrupted"; exit 130' INT TERM

step_segment() {
    banner "segment $seg: 64 rooms, 256 connections, max-age 3 s"
    ctl_tty create --rooms 64 --connections 256 --presences 1K --groups 8 --group-members 64 \
        --arena 1M --ring 4096 --max-age 3
    ctl group add games game.1 game.2 >/dev/null
}

step_reaper() {
    banner "presence-reaper: a sweep every 250 ms, registration socket $sock"
    "$build_dir/tools/presence-reaper" -s "$seg" --sweep-ms 250 --socket "$sock" -v \
        2>"$work/reaper.log" &
    started+=($!)
    local i
    for ((i = 0; i < 50; i++)); do
        if grep -qx $'reaper\trunning' <<<"$(ctl stat)"; then
            ctl_tty stat | grep -E '^(Max age|Reaper):'
            return 0
        fi
        sleep 0.1
    done
    echo "demo: presence-reaper did not start:" >&2
    cat "$work/reaper.log" >&2
    return 1
}

step_live() {
    banner "live: three workers (worker 3 bound to its process), presencectl watch for ${watch_s} s"
    local start worker=$build_dir/tools/presence-demo-worker watch_pid w3
    start=$(ctl stat | awk -F'\t' '$1 == "ring_tail" { print $2 }')
    echo "$start" >"$work/start_seq"
    # watch: human lines on our stdout, a copy for the summary. The binary itself, not
    # the ctl function, so that $! is its pid (a function would run in a subshell).
    PRESENCE_FORCE_TTY=1 "$build_dir/tools/presencectl" -s "$seg" watch \
        > >(tee "$work/watch.txt") &
    watch_pid=$!
    started+=("$watch_pid")
    sleep 0.2
    "$worker" -s "$seg" --id 1 --conns 6 --stall 2 --stall-after "$silent_after_ms" &
    started+=($!)
    "$worker" -s "$seg" --id 2 --conns 5 --stall 1 --stall-after "$silent_after_ms" &
    started+=($!)
    "$worker" -s "$seg" --id 3 --conns 4 --bound &
    w3=$!
    started+=("$w3")
    sleep "$kill_at_s"
    note "kill -KILL worker 3 (pid $w3): its bound connections go at once, reason owner_died"
    kill -KILL "$w3" 2>/dev/null || true
    wait "$w3" 2>/dev/null || true
    forget "$w3"
    sleep "$(awk -v a="$watch_s" -v b="$kill_at_s" 'BEGIN { print a - b }')"
    stop "$watch_pid" INT || {
        echo "demo: presencectl watch did not exit 0 on SIGINT" >&2
        return 1
    }
    sleep 0.1 # tee prints the last lines
    note "events seen by watch: $(awk 'NR > 1 && $3 ~ /^[a-z_]+$/ { n[$3]++ }
        END { split("room_created join state_change leave timeout owner_died room_deleted", k)
              for (i = 1; i <= 7; i++) printf "%s %d, ", k[i], n[k[i]] }' "$work/watch.txt" |
        sed 's/, $//')"
}

step_views() {
    banner "presencectl top --once: the busiest rooms and the event rate"
    ctl top --once --limit 8
    sleep "$pause_s"
    banner "presencectl here-now lobby --state, and the group 'games'"
    ctl_tty here-now lobby --state
    ctl_tty here-now -g games --no-uuids
    sleep "$pause_s"
    banner "presencectl procs: attached processes, reader slots, epochs"
    ctl_tty procs
    sleep "$pause_s"
    banner "presencectl stat and check"
    ctl_tty stat
    ctl_tty check
}

step_stop() {
    banner "stop: workers leave (SIGTERM), the reaper stops, the segment is destroyed"
    local pid rc failed=0
    while [[ ${#started[@]} -gt 0 ]]; do
        pid=${started[-1]}
        rc=0
        stop "$pid" || rc=$?
        if [[ $rc -ne 0 ]]; then
            echo "demo: process $pid exited with status $rc" >&2
            failed=1
        fi
    done
    note "presence-reaper log (last lines):"
    tail -n 6 "$work/reaper.log"
    ctl_tty destroy
    note "demo finished"
    return "$failed"
}

main() {
    if [[ ${DEMO_NO_BUILD:-0} != 1 ]]; then
        step_bootstrap
        step_configure
        step_build
    fi
    step_segment
    step_reaper
    step_live
    step_views
    step_stop
}

main "$@"
