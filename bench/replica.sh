#!/usr/bin/env bash
# Replicated-master store benchmark (issue 18): a 3-node bramble-replica group on loopback
# QUIC with mutual TLS. Measures write latency p50/p99 (control: a 1-node group, same store,
# no replication; the ratio is the cost of replication) and leader failover time
# (median/max over N kills, each killed leader restarted from its directory; target < 2000 ms).
# Prints one JSON object. Usage: bench/replica.sh [--debug] [WRITES] [KILLS] (500, 20).
# Uses a release build; --debug measures the debug build the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
if [ "${1:-}" = "--debug" ]; then profile=(); shift; fi
RUST_LOG="${RUST_LOG:-error}" exec cargo run --quiet --locked "${profile[@]}" -p bramble-replica \
  --example write_latency -- "${1:-500}" "${2:-20}"
