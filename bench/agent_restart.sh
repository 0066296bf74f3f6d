#!/usr/bin/env bash
# Agent recovery benchmark (issue 6): an agent with 4 running custom executors is SIGKILLed
# and restarted N times (default 10); measures new agent process start -> every executor
# reconnected, from the agent's own "recovery complete" log line. Prints one JSON object
# (median/min/max in ms; target < 2000). Uses release binaries; pass --debug as the first
# argument to measure the debug build the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
if [ "${1:-}" = "--debug" ]; then profile=(); shift; fi
exec cargo run --quiet --locked "${profile[@]}" -p bramble-tests --bin bench-agent-restart -- "${1:-10}"
