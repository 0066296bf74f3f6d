#!/usr/bin/env bash
# The tiny-task crash test (tests/tests/tasks_crash.rs) in its full form: 10,000 no-op tasks
# on two agents, 5 random agent SIGKILLs. The JSON summary lands in
# target/tasks-crash.json and on stdout. `--release` runs it on release binaries.
# Replay a run with BRAMBLE_CRASH_SEED=<seed from a previous run's JSON>; override the size
# with BRAMBLE_CRASH_TASKS / BRAMBLE_CRASH_KILLS. CI runs the short form (2,000 tasks, 3 kills).
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=()
if [[ "${1:-}" == "--release" ]]; then profile=(--release); fi
mkdir -p target
out="$PWD/target/tasks-crash.json"
BRAMBLE_CRASH_TASKS="${BRAMBLE_CRASH_TASKS:-10000}" BRAMBLE_CRASH_KILLS="${BRAMBLE_CRASH_KILLS:-5}" \
    BRAMBLE_CRASH_JSON="$out" \
    cargo test --locked "${profile[@]}" -p bramble-tests --test tasks_crash -- --nocapture >&2
cat "$out"
