#!/usr/bin/env bash
# tests/aarch64/smoke.sh [BIN_DIR] — testing level 5: the cross-built aarch64 binaries run
# under qemu-user on this machine.
#
# Checks that each binary is an aarch64 ELF and prints its version, then runs a real cluster on
# loopback — bramble-master, one bramble-agent with a static `master` address in its config
# (mdns-sd cannot send multicast under qemu-user), `bramble run -- echo hi` and a small
# `bramble pi` whose executor is the aarch64 `bramble` too — and checks the pi result against
# the series summed here independently. Prints one JSON line with the timings.
#
# BIN_DIR defaults to target/aarch64-unknown-linux-gnu/$BRAMBLE_AARCH64_PROFILE (release).
# Build first: cargo build --release --locked --target aarch64-unknown-linux-gnu \
#   -p bramble-master -p bramble-agent -p bramble
# Needs: qemu-user-static and the cross glibc (libc6-arm64-cross, /usr/aarch64-linux-gnu);
# not binfmt_misc: every aarch64 program is started through qemu-aarch64-static explicitly.
# Every wait polls with a deadline; every process started here is stopped on exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
profile=${BRAMBLE_AARCH64_PROFILE:-release}
bin=${1:-$repo/target/aarch64-unknown-linux-gnu/$profile}
sysroot=${BRAMBLE_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}
qemu=(qemu-aarch64-static -L "$sysroot")
terms=4000000
tasks=4

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
log() { echo "smoke: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

command -v qemu-aarch64-static >/dev/null || fail "qemu-aarch64-static not found (apt-get install qemu-user-static)"
[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] || fail "no aarch64 glibc in $sysroot (apt-get install libc6-arm64-cross)"

work=$(mktemp -d "${TMPDIR:-/tmp}/bramble-aarch64.XXXXXX")
pids=()
ok=0
cleanup() {
  local pid deadline
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # A clean shutdown under qemu takes a moment; anything still there after 10 s is killed.
  deadline=$(( $(date +%s) + 10 ))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$ok" != 1 ]; then
    for f in "$work"/*.log; do
      [ -f "$f" ] || continue
      echo "---- $(basename "$f") (last 40 lines)" >&2
      tail -n 40 "$f" >&2
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# poll DEADLINE_SECS DESCRIPTION COMMAND...: runs COMMAND until it succeeds or time runs out.
poll() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + secs ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${secs}s"
    sleep 0.2
  done
}

t_start=$(now)

# 1. Each binary: an aarch64 ELF (e_machine 0xb7 at offset 18) that runs and knows its version.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
for b in bramble-master bramble-agent bramble; do
  exe=$bin/$b
  [ -x "$exe" ] || fail "$exe missing: cargo build --$profile --target aarch64-unknown-linux-gnu -p bramble-master -p bramble-agent -p bramble"
  machine=$(od -An -tx1 -j18 -N2 "$exe" | tr -d ' \n')
  [ "$machine" = b700 ] || fail "$exe is not an aarch64 ELF (e_machine bytes $machine)"
  out=$(timeout 60 "${qemu[@]}" "$exe" --version) || fail "$b --version exited non-zero"
  [ "$out" = "$b $version" ] || fail "$b --version printed '$out', expected '$b $version'"
  log "$out ($(du -k "$exe" | cut -f1) KiB)"
done

# 2. A cluster identity, made by the aarch64 CLI.
timeout 120 "${qemu[@]}" "$bin/bramble" cluster init "$work/cluster" --name smoke >"$work/init.log" 2>&1 \
  || fail "bramble cluster init: $(cat "$work/init.log")"

# 3. The master, on ephemeral loopback ports; its log says which QUIC port it got. mDNS stays
#    on loopback (and cannot send under qemu-user anyway: the master logs that and carries on).
cat >"$work/master.toml" <<'EOF'
heartbeat_interval_ms = 500
allocation_interval_ms = 200

[discovery]
interfaces = ["lo"]
EOF
RUST_LOG=info "${qemu[@]}" "$bin/bramble-master" --config "$work/master.toml" \
  --cluster "$work/cluster" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
  --state-dir "$work/master-state" </dev/null >/dev/null 2>"$work/master.log" &
pids+=($!)
master_port() { grep -o 'bramble-master ready.*listen=127\.0\.0\.1:[0-9]*' "$work/master.log" | grep -o '[0-9]*$' | head -1; }
master_ready() { [ -n "$(master_port)" ]; }
poll 60 "master ready" master_ready
port=$(master_port)
master=127.0.0.1:$port
log "master ready on $master after $(since "$t_start")s"

# 4. One agent, its master given statically in its config file.
cat >"$work/agent.toml" <<EOF
master = "$master"
heartbeat_interval_ms = 500
kill_grace_secs = 1
EOF
t_agent=$(now)
RUST_LOG=info "${qemu[@]}" "$bin/bramble-agent" --config "$work/agent.toml" \
  --cluster "$work/cluster" --work-dir "$work/agent" --cpus 2 --mem 512 --no-cgroups \
  </dev/null >/dev/null 2>"$work/agent.log" &
pids+=($!)
cli() { timeout 120 "${qemu[@]}" "$bin/bramble" --cluster "$work/cluster" --master "$master" "$@"; }
agent_registered() {
  cli agents --json 2>>"$work/cli.log" | python3 -c 'import json,sys; sys.exit(0 if len(json.load(sys.stdin)) >= 1 else 1)'
}
poll 90 "agent registered with the master" agent_registered
agent_s=$(since "$t_agent")
log "agent registered after ${agent_s}s"

# 5. A shell task through the aarch64 agent (its /bin/sh is this machine's, as on a Pi).
t_run=$(now)
out=$(cli run -- echo hi 2>>"$work/cli.log") || fail "bramble run -- echo hi exited non-zero"
[ "$out" = hi ] || fail "bramble run -- echo hi printed '$out'"
run_s=$(since "$t_run")
log "bramble run -- echo hi: '$out' in ${run_s}s"

# 6. A small pi job whose executor is the aarch64 `bramble`. The agent gives tasks a clean
#    environment, so the executor path is a wrapper that starts it under qemu with the sysroot.
cat >"$work/pi-executor" <<EOF
#!/bin/sh
exec qemu-aarch64-static -L "$sysroot" "$bin/bramble" "\$@"
EOF
chmod 755 "$work/pi-executor"
t_pi=$(now)
cli pi --terms "$terms" --tasks "$tasks" --executor "$work/pi-executor" --json \
  >"$work/pi.json" 2>>"$work/cli.log" || fail "bramble pi exited non-zero"
pi_s=$(since "$t_pi")
# The Leibniz partial sum 4·Σ_{k<terms} (-1)^k/(2k+1), summed exactly here (math.fsum).
python3 - "$work/pi.json" "$terms" "$tasks" <<'EOF' || fail "pi result wrong: $(cat "$work/pi.json")"
import json, math, sys
result = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
terms, tasks = int(sys.argv[2]), int(sys.argv[3])
expected = 4.0 * math.fsum((-1.0) ** k / (2 * k + 1) for k in range(terms))
assert result["terms"] == terms and result["tasks"] == tasks, result
assert abs(result["pi"] - expected) <= 1e-13, (result["pi"], expected)
assert result["agents_used"] == 1, result
EOF
log "bramble pi --terms $terms --tasks $tasks: $(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["pi"])' "$work/pi.json") in ${pi_s}s"

ok=1
printf '{"test":"aarch64_smoke","profile":"%s","agent_registered_s":%s,"run_s":%s,"pi_s":%s,"pi_terms":%s,"total_s":%s}\n' \
  "$profile" "$agent_s" "$run_s" "$pi_s" "$terms" "$(since "$t_start")"
