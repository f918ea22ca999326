#!/usr/bin/env bash
# Installs a build into a scratch prefix and consumes it from outside, the two ways a user
# would: a compiler command line from pkg-config, and a CMake project with
# find_package(presence). Registered with CTest as `install_consumer` (label: install).
#
#   run.sh BUILD_DIR WORK_DIR [CONFIG]
#
# WORK_DIR is emptied first and kept afterwards for inspection.
# Environment (set by tests/CMakeLists.txt): PRESENCE_CMAKE (cmake to use),
# PRESENCE_CONSUMER_CC (C compiler), PRESENCE_CONSUMER_FLAGS (extra compile and link flags,
# e.g. -fsanitize=... for a sanitizer build), CMAKE_GENERATOR.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 BUILD_DIR WORK_DIR [CONFIG]" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
work=$2
config=${3:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cmake=${PRESENCE_CMAKE:-cmake}
cc=${PRESENCE_CONSUMER_CC:-cc}
read -r -a flags <<<"${PRESENCE_CONSUMER_FLAGS:-}"

fail() {
    echo "install_consumer: FAILED: $*" >&2
    exit 1
}

rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)
prefix=$work/prefix

echo "== cmake --install $build --prefix $prefix"
"$cmake" --install "$build" --prefix "$prefix" ${config:+--config "$config"} >"$work/install.log" ||
    { cat "$work/install.log"; fail "cmake --install"; }

pc=$(find "$prefix" -name presence.pc -path '*/pkgconfig/*' | head -n 1)
[[ -n $pc ]] || fail "no presence.pc under $prefix"
config_file=$(find "$prefix" -name presenceConfig.cmake | head -n 1)
[[ -n $config_file ]] || fail "no presenceConfig.cmake under $prefix"

# --- pkg-config -----------------------------------------------------------------------
echo "== pkg-config ($pc)"
PKG_CONFIG_PATH=$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
export PKG_CONFIG_PATH
version=$(pkg-config --modversion presence)
includedir=$(pkg-config --variable=includedir presence)
libdir=$(pkg-config --variable=libdir presence)
# The .pc prefix is relative to the file itself, so it must point into this prefix.
[[ $(realpath "$includedir") == $(realpath "$prefix")/* ]] ||
    fail "presence.pc includedir $includedir is outside $prefix"
[[ -f $includedir/presence.h ]] || fail "no presence.h in $includedir"
[[ -f $libdir/libpresence.so && -f $libdir/libpresence.a ]] ||
    fail "libpresence.so or libpresence.a missing in $libdir"
pkg-config --exists --print-errors --static presence || fail "pkg-config --static presence"

# shellcheck disable=SC2046 # word splitting of pkg-config output is intended
"$cc" "${flags[@]}" -std=c11 -Wall -Wextra -Wpedantic -Werror $(pkg-config --cflags presence) \
    "$here/consumer.c" -o "$work/consumer-pkgconfig" \
    $(pkg-config --libs presence) -Wl,-rpath,"$libdir"
"$work/consumer-pkgconfig"

# --- find_package ---------------------------------------------------------------------
echo "== find_package(presence ${version}) with CMAKE_PREFIX_PATH=$prefix"
CC=$cc CFLAGS="${flags[*]}" LDFLAGS="${flags[*]}" \
    "$cmake" -S "$here" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DPRESENCE_VERSION="$version" -DCMAKE_BUILD_TYPE=Release
"$cmake" --build "$work/cmake-build"
"$work/cmake-build/consumer"
"$work/cmake-build/consumer_static"
# Make sure each one uses the library it was meant to. ldd's output is taken whole
# first: `ldd | grep -q` under pipefail fails at random (grep -q exits at its first
# match, and ldd, still writing, dies of SIGPIPE).
deps=$(ldd "$work/cmake-build/consumer")
grep -q -e "$(realpath "$libdir")/libpresence.so" -e "$libdir/libpresence.so" <<<"$deps" ||
    fail "consumer does not load libpresence.so from $libdir: $deps"
deps=$(ldd "$work/cmake-build/consumer_static")
if grep -q libpresence <<<"$deps"; then
    fail "consumer_static loads a shared libpresence: $deps"
fi

echo "install_consumer: OK"
