#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole test suite
# (everything but the long `stress` tier), then again under AddressSanitizer +
# UndefinedBehaviorSanitizer (clang), the threaded tests under ThreadSanitizer, and
# the static checks (clang-format, clang-tidy on src/). Exits non-zero if any fails.
#
#   bash tools/test.sh
#   PRESENCE_QUICK=1 bash tools/test.sh   # the plain build and suite only
set -euo pipefail
# shellcheck source=tools/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

step_test() {
    banner "test: ctest -LE stress ($build_dir)"
    local status=0
    ctest --test-dir "$build_dir" --output-on-failure -j2 -LE stress || status=$?
    return "$status"
}

# A sanitizer build in its own directory:
#   step_sanitized NAME SANITIZERS TARGET|all CTEST-ARGS...
step_sanitized() {
    local name=$1 sanitize=$2 target=$3
    shift 3
    local dir=$repo_root/build-$name
    banner "$name: clang, -fsanitize=$sanitize ($dir)"
    CC=clang cmake -S "$repo_root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_COMPILE_WARNING_AS_ERROR=ON -DPRESENCE_SANITIZE="$sanitize" >/dev/null
    if [[ $target == all ]]; then
        cmake --build "$dir" -j 2
    else
        cmake --build "$dir" -j 2 --target "$target"
    fi
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        ctest --test-dir "$dir" --output-on-failure -j2 "$@"
}

step_lint() {
    banner "lint: clang-format and clang-tidy (src/)"
    local files
    mapfile -t files < <(cd "$repo_root" && git ls-files 'src/*.[ch]' 'include/*.h')
    (cd "$repo_root" && clang-format --dry-run --Werror "${files[@]}")
    (cd "$repo_root" && clang-tidy -p "$build_dir" --quiet --warnings-as-errors='*' src/*.c)
}

main() {
    step_bootstrap
    step_configure
    step_build
    local status=0
    step_test || status=$?
    if [[ -z ${PRESENCE_QUICK:-} ]]; then
        # Under ASan the multi-process and tool tests run too; bench and install are
        # covered by the plain build. TSan sees one process only: the threaded test.
        step_sanitized asan address,undefined all -LE 'stress|bench|install' || status=$?
        step_sanitized tsan thread test_threads -L threads || status=$?
        step_lint || status=$?
    fi
    if [[ $status -eq 0 ]]; then
        printf '\ntest.sh: all steps passed\n'
    else
        printf '\ntest.sh: tests FAILED (ctest exit status %d)\n' "$status" >&2
    fi
    exit "$status"
}

main "$@"
