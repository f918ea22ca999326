#!/usr/bin/env bash
# Installs every Debian package shm-presence needs to build, test, demo and benchmark.
# Idempotent: when all of them are installed already it does nothing (no apt-get at all).
# Non-interactive; uses sudo only when not run as root.
set -euo pipefail

packages=(
    # build
    gcc make cmake ninja-build pkg-config
    # libraries
    liburcu-dev libuv1-dev libjansson-dev libxxhash-dev
    # tests, sanitizers, lint
    libcmocka-dev clang libclang-rt-14-dev clang-tidy clang-format
    # benchmark peer (Redis) and the live demo
    redis-server libhiredis-dev tmux
)

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != installed ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "bootstrap: all ${#packages[@]} packages are installed"
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "bootstrap: not root and no sudo; install these packages: ${missing[*]}" >&2
    exit 1
fi

echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
