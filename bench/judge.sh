#!/bin/sh
# Judge benchmark (issues 6 and 18, docs/judge.md): ours vs a Flagger-like
# threshold judge vs a Kayenta-like judge on simulated cohorts, >= 1000 seeds
# each, plus the statistical methods side by side on the same streams.
#   bench/judge.sh [BUILD_DIR]
#   env: SEEDS (default 1000), METHODS=0 (skip the methods table: half the CPU)
# CPU-heavy (two threads, minutes per 100 seeds): on a shared machine run it
# under `nice -n 10`.
set -eu
build=${1:-build}
cd "$(dirname "$0")/.."
[ -x "$build/bench_judge" ] || cmake --build "$build" --target bench_judge >/dev/null
if [ "${METHODS:-1}" = 0 ]; then
	exec "$build/bench_judge" --seeds "${SEEDS:-1000}" --no-methods
fi
exec "$build/bench_judge" --seeds "${SEEDS:-1000}"
