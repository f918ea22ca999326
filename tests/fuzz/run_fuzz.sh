#!/usr/bin/env bash
# run_fuzz.sh FUZZER SEED_CORPUS WORK_DIR [libFuzzer options...]
# Runs FUZZER over a copy-free seed corpus: new inputs go to WORK_DIR/corpus (emptied
# first), crash/timeout/leak artifacts to WORK_DIR/. Exit status: the fuzzer's.
set -euo pipefail
fuzzer=$1 seeds=$2 work=$3
shift 3
rm -rf "$work"
mkdir -p "$work/corpus"
exec "$fuzzer" -artifact_prefix="$work/" -print_final_stats=1 "$@" "$work/corpus" "$seeds"
