#!/usr/bin/env bash
# Service framework benchmark (issue 21): `bramble service apply` of INSTANCES instances until
# all run, then KILLS instances SIGKILLed one at a time, each timed until its replacement runs
# (p50/p99). Real master, agent and service scheduler on loopback; prints one JSON object.
# Usage: bench/services.sh [--debug] [INSTANCES] [KILLS] (default 10 20, release binaries).
# The CI form is tests/tests/services.rs (3 instances, 3 kills, debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
if [ "${1:-}" = "--debug" ]; then profile=(); shift; fi
exec cargo run --quiet --locked "${profile[@]}" -p bramble-tests --bin bench-services -- "${1:-10}" "${2:-20}"
