#!/bin/sh
# Judge benchmark (issue 6, docs/judge.md): ours vs a Flagger-like threshold
# judge vs a Kayenta-like judge on simulated cohorts, >= 1000 seeds each.
#   bench/judge.sh [BUILD_DIR]     env: SEEDS (default 1000)
set -eu
build=${1:-build}
cd "$(dirname "$0")/.."
[ -x "$build/bench_judge" ] || cmake --build "$build" --target bench_judge >/dev/null
exec "$build/bench_judge" --seeds "${SEEDS:-1000}"
