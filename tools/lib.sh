# shellcheck shell=bash
# Shared steps of tools/test.sh and tools/demo.sh. Source it; do not run it.
#
# PRESENCE_BUILD_DIR  the build directory (default: build); test.sh and demo.sh share it.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${PRESENCE_BUILD_DIR:-build}
[[ $build_dir == /* ]] || build_dir=$repo_root/$build_dir
step_count=0

# banner TITLE: a visible header for each step.
banner() {
    step_count=$((step_count + 1))
    printf '\n==== [%d] %s ====\n' "$step_count" "$*"
}

step_bootstrap() {
    banner "bootstrap: Debian packages"
    bash "$repo_root/tools/bootstrap.sh"
}

# step_configure [extra cmake args...]
# shellcheck disable=SC2120 # the arguments are optional
step_configure() {
    banner "configure: $build_dir (Ninja, RelWithDebInfo, warnings are errors)"
    local cache=$build_dir/CMakeCache.txt
    if [[ -f $cache ]] && ! grep -qx 'CMAKE_GENERATOR:INTERNAL=Ninja' "$cache"; then
        echo "$build_dir was configured with another generator; configuring it afresh"
        rm -rf "$cache" "$build_dir/CMakeFiles"
    fi
    cmake -S "$repo_root" -B "$build_dir" -G Ninja \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_COMPILE_WARNING_AS_ERROR=ON \
        "$@"
}

step_build() {
    banner "build: $build_dir"
    cmake --build "$build_dir" -j 2
}
