#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole test suite
# (everything but the long `stress` tier). Exits with ctest's status.
#
#   bash tools/test.sh
set -euo pipefail
# shellcheck source=tools/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step_test() {
    banner "test: ctest -LE stress ($build_dir)"
    local status=0
    ctest --test-dir "$build_dir" --output-on-failure -j2 -LE stress || status=$?
    return "$status"
}

main() {
    step_bootstrap
    step_configure
    step_build
    local status=0
    step_test || status=$?
    if [[ $status -eq 0 ]]; then
        printf '\ntest.sh: all steps passed\n'
    else
        printf '\ntest.sh: tests FAILED (ctest exit status %d)\n' "$status" >&2
    fi
    exit "$status"
}

main "$@"
