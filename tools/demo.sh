#!/usr/bin/env bash
# The live demo: installs what is missing, builds, and shows a segment.
# For now it creates a segment with the default capacities, prints what it holds,
# and removes it; the reaper and presencectl parts are planned.
#
#   bash tools/demo.sh
set -euo pipefail
# shellcheck source=tools/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step_segment() {
    local name="presence-demo-$$"
    banner "demo: create segment $name, show it, remove it"
    "$build_dir/tools/presence-segment-info" "$name"
}

main() {
    step_bootstrap
    step_configure
    step_build
    step_segment
}

main "$@"
