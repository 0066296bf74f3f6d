#!/usr/bin/env bash
# Discovery benchmark: agent process start -> registered with the master, found by mDNS on
# namespaced hosts (root only; avahi-daemon runs on every host when installed).
# Prints one JSON object on stdout (median/min/max of 10 runs, in ms; target <= 1000).
# Uses release binaries; pass --debug to measure the debug build the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
[ "${1:-}" = "--debug" ] && profile=()
exec cargo run --quiet --locked "${profile[@]}" -p bramble-tests --bin bench-discovery
