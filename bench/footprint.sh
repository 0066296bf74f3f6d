#!/usr/bin/env bash
# Footprint (issue 3): resident memory and CPU of a master and two agents, real processes on
# loopback, idle for 30 s after registering. Prints one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p bramble -p bramble-master -p bramble-agent
B=target/release
IDLE=${1:-30}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
$B/bramble cluster init "$tmp/c" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo 'heartbeat_interval_ms = 1000' > "$tmp/m.toml"
$B/bramble-master --config "$tmp/m.toml" --cluster "$tmp/c" --listen 127.0.0.1:$port --state-dir "$tmp/ms" 2>"$tmp/master.log" & pids+=($!); m=$!
for i in 1 2; do
  $B/bramble-agent --cluster "$tmp/c" --master 127.0.0.1:$port --work-dir "$tmp/a$i" --cpus 1 --mem 512 2>"$tmp/a$i.log" & pids+=($!)
done
a1=${pids[1]}
# Wait (with a deadline) until both agents registered.
for _ in $(seq 1 100); do
  [ "$(grep -c 'agent registered' "$tmp/master.log" || true)" -ge 2 ] && break
  sleep 0.1
done
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
m0=$(ticks $m); a0=$(ticks $a1)
sleep "$IDLE"   # the measurement window itself, not a wait for an event
m1=$(ticks $m); a1t=$(ticks $a1)
python3 - <<PY
import json
idle=$IDLE; hz=$hz
print(json.dumps({
 "idle_s": idle,
 "master": {"rss_mib": $(rss $m)/1024, "cpu_pct_of_core": 100*($m1-$m0)/hz/idle, "target": "rss <= 20 MiB"},
 "agent": {"rss_mib": $(rss $a1)/1024, "cpu_pct_of_core": 100*($a1t-$a0)/hz/idle, "target": "rss <= 10 MiB, cpu <= 0.5%"},
}, indent=1))
PY
