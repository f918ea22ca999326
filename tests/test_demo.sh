#!/usr/bin/env bash
# test_demo.sh DEMO: runs the live demo (tools/demo.sh) as CTest's demo_short does
# (DEMO_SHORT=1 DEMO_NO_BUILD=1 PRESENCE_BUILD_DIR=<build> in the environment), shows its
# output, and checks that it exited 0 and that its watch saw connections time out
# (timeout) and vanish with their killed process (owner_died).
set -uo pipefail
demo=${1:?usage: test_demo.sh path/to/tools/demo.sh}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

rc=0
bash "$demo" >"$out" 2>&1 || rc=$?
cat "$out"
status=0
if [[ $rc -ne 0 ]]; then
    echo "FAIL: demo exited with status $rc" >&2
    status=1
fi
# the watch lines: "TIME SEQ EVENT ROOM ..." with EVENT in the third column
for event in timeout owner_died; do
    if ! awk -v e="$event" '$3 == e { found = 1 } END { exit !found }' "$out"; then
        echo "FAIL: the demo's watch shows no $event event" >&2
        status=1
    fi
done
if ! grep -q 'is consistent' "$out"; then
    echo "FAIL: the demo's check did not report a consistent segment" >&2
    status=1
fi
[[ $status -eq 0 ]] && echo "test_demo: the demo ran and showed timeout and owner_died events"
exit "$status"
