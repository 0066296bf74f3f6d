#!/usr/bin/env bash
# The chaos test (tests/tests/chaos.rs) on its own. `--long` runs the long run (at least 20
# agent kills and 3 master kills); the JSON counts land in target/chaos-<run>.json and stdout.
# Replay a run with BRAMBLE_CHAOS_SEED=<seed from a previous run's JSON>.
set -euo pipefail
cd "$(dirname "$0")/../.."
run=short
if [[ "${1:-}" == "--long" ]]; then run=long; fi
mkdir -p target
out="$PWD/target/chaos-$run.json"
BRAMBLE_CHAOS=$run BRAMBLE_CHAOS_JSON="$out" \
    cargo test --locked -p bramble-tests --test chaos -- --nocapture >&2
cat "$out"
