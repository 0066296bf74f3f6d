#!/usr/bin/env bash
# image/virtual-bramble.sh — a three-Pi Bramble in QEMU: the appliance as a user meets it, one
# image flashed to three "cards", powered on together on a bare "switch", nothing configured.
#
#  1. one image (`bramble-image build --debian`, default role auto), flashed three times with
#     `bramble-image flash IMG nodeN.img --role R`: node 1 master (it runs an agent too), nodes 2
#     and 3 agents (QEMU's virt machine has no I2C bus, so auto would make every node an agent);
#  2. a network namespace of this script's own; in it the three VMs
#     (`qemu-system-aarch64 -M virt -cpu cortex-a72`, TCG) on one QEMU socket network (UDP
#     multicast on the namespace's loopback = one Ethernet segment). No DHCP server and no
#     address configured anywhere: the nodes take IPv4 link-local addresses and the agents find
#     the master by mDNS, natively inside the VMs;
#  3. the operator's laptop on the same switch: a tap device in the namespace, joined to the
#     socket network by socat, with a link-local address; the native `bramble` CLI finds the
#     master by mDNS too, with the cluster's operator certificate (never on a card);
#  4. power on → cluster ready (all three agents registered), then a pi job over all three; while
#     node 3 runs some of its tasks and others have finished, node 3's power is cut (QEMU
#     SIGKILLed: no shutdown, no goodbye); its tasks are lost and run elsewhere, and the job
#     still ends with the exact partial sum of the series.
# Prints one JSON line with the figures (power-on to cluster ready, job time, time for the
# master to notice the dead node, relaunches).
#
# Usage: image/virtual-bramble.sh [--image IMG --cluster DIR] [--work DIR] [--terms N]
#                                 [--tasks N] [--mem MIB]
#   --image/--cluster  use an image built earlier (e.g. by image/tests/boot.sh with
#                      BRAMBLE_BOOT_WORK set) and the cluster directory it was built for;
#                      default: build one (about 6-9 minutes, needs mmdebstrap)
#   --work DIR         keep cards, consoles and logs there (default: a temp dir, removed)
# Env: BRAMBLE_AARCH64_BIN=DIR takes the aarch64 binaries from DIR.
# Needs root (network namespace, tap, mkbase.sh), qemu-system-arm, socat, iproute2, mtools,
# fdisk, python3 and, to build the image, what image/tests/boot.sh needs.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
target=aarch64-unknown-linux-gnu
image=
cluster=
work=
keep=0
terms=2400000000
tasks=48
mem=1024
nodes=3
victim=3

fail() { echo "virtual-bramble: FAIL: $*" >&2; exit 1; }
log() { echo "virtual-bramble: [$(date -u +%H:%M:%S)] $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=${2:?--image needs a file}; shift ;;
    --cluster) cluster=${2:?--cluster needs a directory}; shift ;;
    --work) work=${2:?--work needs a directory}; keep=1; shift ;;
    --terms) terms=${2:?--terms needs a number}; shift ;;
    --tasks) tasks=${2:?--tasks needs a number}; shift ;;
    --mem) mem=${2:?--mem needs MiB}; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) fail "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[ -z "$image" ] || [ -n "$cluster" ] || fail "--image needs --cluster: the operator's certificate must come from the CA the image was built for"
[ -n "$image" ] || [ -z "$cluster" ] || fail "--cluster without --image: a new image gets a new cluster"
[[ "$terms" =~ ^[0-9]+$ && "$tasks" =~ ^[0-9]+$ && "$mem" =~ ^[0-9]+$ ]] || fail "--terms, --tasks and --mem take whole numbers"
[ "$(id -u)" = 0 ] || fail "needs root (network namespace, tap device)"
for tool in qemu-system-aarch64 socat ip mcopy mdir mtype sfdisk python3 cargo; do
  command -v "$tool" >/dev/null || fail "$tool not found (apt-get install qemu-system-arm socat iproute2 mtools fdisk python3)"
done

if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/var/tmp}/virtual-bramble.XXXXXX")
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
ns=bramble-vb-$$
qemu_pids=()
socat_pid=
job_pid=
ok=0
cleanup() {
  local pid
  [ -z "$job_pid" ] || kill "$job_pid" 2>/dev/null || true
  for pid in "${qemu_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  [ -z "$socat_pid" ] || kill "$socat_pid" 2>/dev/null || true
  for pid in "${qemu_pids[@]}" $socat_pid $job_pid; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  if [ "$ok" != 1 ]; then
    local i
    for i in $(seq 1 "$nodes"); do
      [ -f "$work/node$i.console" ] || continue
      echo "---- node $i serial console (last 25 lines)" >&2
      tail -n 25 "$work/node$i.console" | tr -d '\r' >&2
    done
    [ ! -f "$work/cli.log" ] || { echo "---- operator CLI (last 20 lines)" >&2; tail -n 20 "$work/cli.log" >&2; }
  fi
  if [ "$keep" = 1 ]; then
    log "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap "exit 130" INT TERM

# poll SECS WHAT COMMAND...: runs COMMAND until it succeeds; fails after SECS or if a VM that
# should be running has stopped.
poll() {
  local secs=$1 what=$2 deadline i
  shift 2
  deadline=$(( $(date +%s) + secs ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${secs}s"
    for i in "${!qemu_pids[@]}"; do
      [ "${powered_off:-0}" = $((i + 1)) ] && continue
      kill -0 "${qemu_pids[$i]}" 2>/dev/null || fail "$what: node $((i + 1))'s QEMU exited (see $work/node$((i + 1)).qemu.log)"
    done
    sleep 1
  done
}

t_all=$(now)

# 1. Binaries: native for the operator and bramble-image, aarch64 for a new image.
(cd "$repo" && cargo build --workspace --bins --locked --quiet)
native=$repo/target/debug
if [ -z "$image" ]; then
  if [ -n "${BRAMBLE_AARCH64_BIN:-}" ]; then
    aarch64_bins=$BRAMBLE_AARCH64_BIN
  else
    log "cargo build --release --target $target"
    (cd "$repo" && cargo build --release --locked --target "$target" -p bramble-master -p bramble-agent -p bramble --quiet)
    aarch64_bins=$repo/target/$target/release
  fi
  cluster=$work/cluster
  rm -rf "$cluster"
  "$native/bramble" cluster init "$cluster" --name virtual-bramble >/dev/null
  image=$work/bramble.img
  log "bramble-image build --debian (role auto)"
  t=$(now)
  "$native/bramble-image" build --debian --cluster "$cluster" --out "$image" \
    --binaries "$aarch64_bins" --json >"$work/build.json" || fail "bramble-image build failed"
  log "image built in $(since "$t")s"
fi
[ -f "$image" ] || fail "no image at $image"
[ -f "$cluster/operator.pem" ] || fail "$cluster holds no operator certificate (operator.pem)"

# 2. Three cards, as a user flashes them; per-card role in each card's bramble.toml.
for i in $(seq 1 "$nodes"); do
  role=agent
  [ "$i" = 1 ] && role=master
  "$native/bramble-image" flash "$image" "$work/node$i.img" --role "$role" >/dev/null 2>"$work/flash$i.log" \
    || fail "flashing node $i: $(tail -3 "$work/flash$i.log")"
done
log "flashed $nodes cards (node 1 master, the others agents)"

# Kernel, initrd and command line from the first card's FAT partition, read in place.
boot_offset=$(sfdisk -J "$work/node1.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][0]["start"]*512)')
fat="$work/node1.img@@$boot_offset"
kernel=$(mdir -b -i "$fat" ::/ | sed 's|^::/||' | grep -m1 '^vmlinuz-') || fail "no vmlinuz-* on the boot partition"
initrd=$(mdir -b -i "$fat" ::/ | sed 's|^::/||' | grep -m1 '^initrd.img-') || fail "no initrd.img-* on the boot partition"
mcopy -n -i "$fat" "::/$kernel" "$work/vmlinuz"
mcopy -n -i "$fat" "::/$initrd" "$work/initrd.img"
cmdline=$(mtype -i "$fat" ::/cmdline.txt | tr -d '\r\n')
[[ "$cmdline" == *root=PARTUUID=* ]] || fail "cmdline.txt has no root=PARTUUID=: $cmdline"

# 3. The switch: a namespace whose loopback carries the socket network's multicast, and the
# operator's tap on it. IPv6 off in the namespace: the tap hears its own frames back from the
# multicast group, which IPv6 duplicate address detection would take for another host.
ip netns add "$ns"
# Background processes are started with `ip netns exec` itself (it execs the command), so $! is
# the process to kill, not a subshell.
nsx() { ip netns exec "$ns" "$@"; }
nsx sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
nsx ip link set lo up multicast on
nsx ip route add 224.0.0.0/4 dev lo
group=239.255.66.1
port=5555
ip netns exec "$ns" socat "UDP4-DATAGRAM:$group:$port,bind=$group:$port,reuseaddr,ip-add-membership=$group:127.0.0.1,ip-multicast-if=127.0.0.1,ip-multicast-loop=1" \
  "TUN:169.254.250.1/16,tun-type=tap,iff-no-pi,tun-name=vb0,up" 2>"$work/socat.log" &
socat_pid=$!
tap_up() { nsx ip link show vb0 2>/dev/null | grep -q 'state UP\|state UNKNOWN'; }
poll 10 "the operator's tap device" tap_up
nsx ip link set vb0 multicast on

# 4. Power on.
powered_off=0
t_power=$(now)
for i in $(seq 1 "$nodes"); do
  ip netns exec "$ns" qemu-system-aarch64 -M virt -cpu cortex-a72 -m "$mem" -smp 2 -accel tcg,thread=multi \
    -kernel "$work/vmlinuz" -initrd "$work/initrd.img" -append "$cmdline console=ttyAMA0" \
    -drive "file=$work/node$i.img,if=virtio,format=raw" \
    -netdev "socket,id=lan,mcast=$group:$port,localaddr=127.0.0.1" \
    -device "virtio-net-pci,netdev=lan,mac=52:54:00:b7:00:0$i,romfile=" \
    -display none -monitor none -serial "file:$work/node$i.console" \
    </dev/null >"$work/node$i.qemu.log" 2>&1 &
  qemu_pids+=($!)
done
log "powered on $nodes nodes (QEMU pids ${qemu_pids[*]})"

export RUST_BACKTRACE=0
bramble_cli() { nsx timeout 120 "$native/bramble" --cluster "$cluster" "$@" 2>>"$work/cli.log"; }
state() { bramble_cli status --json >"$work/state.json.new" && mv "$work/state.json.new" "$work/state.json"; }
# query PYTHON-EXPR: evaluates EXPR over the last state (`s`), exits 0 when it is true.
query() {
  python3 - "$work/state.json" "$1" "${@:2}" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
args = sys.argv[3:]
def st(t): return str(t["state"]).lower()
def up(): return [a for a in s["agents"] if a["connected"]]
sys.exit(0 if eval(sys.argv[2]) else 1)
EOF
}
all_agents_up() { state && query "len(up()) == $nodes"; }
poll 600 "all $nodes agents registered with the master (found by mDNS, through the operator's tap)" all_agents_up
ready_s=$(since "$t_power")
log "cluster ready: $nodes agents registered ${ready_s}s after power-on"

# Which agent is on the node whose power will be cut: the agent's address as the master sees it,
# resolved over ARP from the operator's tap; the answer's MAC names the VM.
victim_mac=52:54:00:b7:00:0$victim
agent_on_victim() {
  local id addr
  while read -r id addr; do
    # Any datagram makes the kernel resolve the address; the next poll reads the answer.
    nsx bash -c "echo >/dev/udp/$addr/9" 2>/dev/null || true
    if nsx ip neigh show "$addr" | grep -qi "lladdr $victim_mac"; then
      victim_id=$id
      victim_host=$(python3 -c 'import json,sys; print(next(a["hostname"] for a in json.load(open(sys.argv[1]))["agents"] if a["id"] == sys.argv[2]))' "$work/state.json" "$id")
      return 0
    fi
  done < <(python3 -c '
import json, sys
for a in json.load(open(sys.argv[1]))["agents"]:
    host = a["address"].rsplit(":", 1)[0].strip("[]")
    print(a["id"], host)' "$work/state.json")
  return 1
}
victim_id=
poll 30 "finding node $victim's agent by its MAC $victim_mac" agent_on_victim
log "node $victim is $victim_host (agent $victim_id)"

# 5. The job, from the operator's laptop, with the nodes' own bramble as executor.
t_job=$(now)
ip netns exec "$ns" "$native/bramble" --cluster "$cluster" pi --terms "$terms" --tasks "$tasks" \
  --executor /usr/local/bin/bramble --journal "$work/pi.journal" --json \
  >"$work/pi.json" 2>"$work/pi.log" &
job_pid=$!
# Mid-job: the victim runs some of the job's tasks while others have finished.
mid_job() {
  state && query "any(t['agent_id'] == args[0] and 'running' in st(t) for t in s['tasks']) and any('finished' in st(t) for t in s['tasks'] + s.get('completed_tasks', []))" "$victim_id"
}
poll 600 "node $victim running tasks of the job while others have finished" mid_job
victim_tasks=$(python3 -c 'import json,sys; print(sum(t["agent_id"] == sys.argv[2] and "running" in str(t["state"]).lower() for t in json.load(open(sys.argv[1]))["tasks"]))' "$work/state.json" "$victim_id")
kill -KILL "${qemu_pids[$((victim - 1))]}"
powered_off=$victim
t_off=$(now)
log "power cut on node $victim ($victim_host) $(since "$t_job")s into the job, with $victim_tasks tasks running there"

agent_gone() { state && query "not any(a['id'] == args[0] and a['connected'] for a in s['agents'])" "$victim_id"; }
poll 120 "the master noticing node $victim is gone" agent_gone
lost_s=$(since "$t_off")
log "master reports $victim_host disconnected ${lost_s}s after the power cut"

job_done() { ! kill -0 "$job_pid" 2>/dev/null; }
poll 1800 "the pi job finishing" job_done
job_rc=0
wait "$job_pid" || job_rc=$?
job_pid=
job_s=$(since "$t_job")
[ "$job_rc" = 0 ] || fail "bramble pi exited $job_rc: $(tail -5 "$work/pi.log")"
python3 - "$work/pi.json" "$terms" "$tasks" "$nodes" <<'EOF' || fail "pi result wrong: $(cat "$work/pi.json")"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
terms, tasks, nodes = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# 4·Σ_{k<N} (-1)^k/(2k+1) = π - (-1)^N (1/N - 1/(4N³) + 5/(16N⁵) - ...) (Euler–Boole): exact
# to far below f64's resolution for the N used here, and instant where summing 10⁹ terms in
# Python takes minutes.
import math
n = terms
expected = math.pi - (-1) ** n * (1 / n - 1 / (4 * n**3) + 5 / (16 * n**5))
assert r["terms"] == terms and r["tasks"] == tasks, r
assert r["chunks_counted"] == tasks, ("chunks counted", r["chunks_counted"], tasks)
assert abs(r["pi"] - expected) <= 1e-12, (r["pi"], expected)
assert r["agents_used"] == nodes, ("agents used", r["agents_used"])
assert r["relaunches"] >= 1, ("no task was relaunched after the power cut", r)
EOF
relaunches=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["relaunches"])' "$work/pi.json")
pi=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["pi"])' "$work/pi.json")
log "pi = $pi over $terms terms in $tasks tasks on $nodes nodes: ${job_s}s, $relaunches relaunched after the power cut"

# The survivors are still a cluster.
state && query "len(up()) == $((nodes - 1))" || fail "expected $((nodes - 1)) agents up after the power cut"

ok=1
printf '{"test":"virtual_bramble","nodes":%s,"accel":"tcg","power_on_to_cluster_ready_s":%s,"pi_terms":%s,"pi_tasks":%s,"pi_job_s":%s,"power_cut_tasks_running":%s,"power_cut_to_agent_lost_s":%s,"relaunches":%s,"total_s":%s}\n' \
  "$nodes" "$ready_s" "$terms" "$tasks" "$job_s" "$victim_tasks" "$lost_s" "$relaunches" "$(since "$t_all")"
