#!/usr/bin/env bash
# Status update recording (issue 15): updates/s made durable then acknowledged, in batches of
# 1, 16 and 256, the agent's update log against the one-file-per-update design it replaced
# (the control, in the same run, on the same disk). Prints one JSON object.
# Usage: bench/updates.sh [DIR] [SECS]  — DIR must be on the disk to measure (not a tmpfs,
# where fsync is free); default target/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p bramble-agent --example update_log_bench
target/release/examples/update_log_bench --dir "${1:-target}" --secs "${2:-2}"
