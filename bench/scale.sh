#!/usr/bin/env bash
# Scale benchmark (issue 17): one release `bramble-master` process against N simulated agents
# (`bramble bench scale`: each agent its own QUIC connection with mutual TLS, F frameworks
# launching at R tasks/s, the master SIGKILLed and restarted). Prints the run's JSON: time to
# register, master RSS/CPU idle and under load, allocation cycle p50/p99 (the master's own
# histogram), launch latency p50/p99, SIGKILL -> all re-registered, /api/v1/state and the
# paged operator state, and `machine` (cores, load average at start and end): the run shares
# the machine with whatever else runs, so quote the load average with any figure.
# Usage: bench/scale.sh [agents, default 1000] [extra `bramble bench scale` flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
agents=${1:-1000}
shift || true
cargo build --release -q --locked -p bramble -p bramble-master
target=${CARGO_TARGET_DIR:-target}
# Open files: one UDP socket per 16 agents, plus the master's.
ulimit -n 65536 2>/dev/null || true
exec "$target/release/bramble" bench scale --agents "$agents" \
    --master-bin "$target/release/bramble-master" "$@"
