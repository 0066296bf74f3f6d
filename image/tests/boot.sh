#!/usr/bin/env bash
# image/tests/boot.sh — the appliance boots: build a `--debian` image the way a user would and
# boot it in QEMU (testing level "real boot", issue 7).
#
#  1. the aarch64 release binaries (a no-op when CI built them already); a cluster identity
#     and an ssh key;
#  2. `bramble-image build --debian --cluster C --out bramble.img --ssh-key K.pub --role master
#     --binaries DIR` (which calls image/debian/mkbase.sh for the base);
#  3. take kernel and initrd out of the image's FAT boot partition with mtools (no mounting);
#  4. boot `qemu-system-aarch64 -M virt -cpu cortex-a72` on the image with -snapshot (the built
#     image stays clean) and a restricted user network: only ssh is forwarded (to loopback),
#     nothing else goes in or out;
#  5. assert over ssh (as root, with the key first boot installed): first boot ran once, named
#     the node bramble-XXXX and gave it the master role from bramble.toml; bramble-master
#     (as user bramble) and bramble-agent are active; as the operator (CLI on the node,
#     operator and framework certificates pushed into /run for the test: cards carry only the
#     node's): the node's agent is registered ("cluster ready"), a command task runs as
#     a uid of task_uids, and a pi job runs on the node — its executors as one such uid — to the
#     exact partial sum of the series.
# Prints one JSON line: build and boot timings, power-on to cluster ready, the job's time.
#
# Env: BRAMBLE_BOOT_WORK=DIR keeps the image, logs and serial console there (default: a temp
#      dir, removed); BRAMBLE_AARCH64_BIN=DIR takes the aarch64 binaries from DIR instead of
#      `cargo build --release --target aarch64-unknown-linux-gnu`;
#      BRAMBLE_BOOT_BASE=IMG (development only) customises a base mkbase.sh made earlier with
#      `bramble-image build --base IMG` instead of building one with --debian (minutes saved
#      per iteration; the Debian route's /etc/default/raspi-* edits, which QEMU never reads,
#      are then missing).
# Needs root (mkbase.sh), qemu-system-arm, qemu-user-static + binfmt_misc, mmdebstrap, mtools,
# dosfstools, e2fsprogs, fdisk, openssh-client, the aarch64 cross toolchain.
# Every wait polls with a deadline; QEMU and everything else started here is stopped on exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=aarch64-unknown-linux-gnu
terms=20000000
tasks=4

fail() { echo "boot: FAIL: $*" >&2; exit 1; }
log() { echo "boot: [$(date -u +%H:%M:%S)] $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || fail "needs root (mmdebstrap builds the base as root)"
for tool in qemu-system-aarch64 mcopy mdir sfdisk ssh ssh-keygen python3 cargo; do
  command -v "$tool" >/dev/null || fail "$tool not found"
done

if [ -n "${BRAMBLE_BOOT_WORK:-}" ]; then
  work=$BRAMBLE_BOOT_WORK
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/var/tmp}/bramble-boot.XXXXXX")
fi
qemu_pid=
watch_pid=
ok=0
cleanup() {
  if [ -n "$watch_pid" ]; then kill "$watch_pid" 2>/dev/null || true; fi
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill -TERM "$qemu_pid" 2>/dev/null || true
    local deadline=$(( $(date +%s) + 10 ))
    while kill -0 "$qemu_pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.2; done
    kill -KILL "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  if [ "$ok" != 1 ] && [ -f "$work/serial.log" ]; then
    echo "---- serial console (last 60 lines)" >&2
    tail -n 60 "$work/serial.log" | tr -d '\r' >&2
  fi
  [ -n "${BRAMBLE_BOOT_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

# poll DEADLINE_SECS DESCRIPTION COMMAND...: runs COMMAND until it succeeds or time runs out.
poll() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + secs ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${secs}s"
    if [ -n "$qemu_pid" ] && ! kill -0 "$qemu_pid" 2>/dev/null; then fail "$what: QEMU exited"; fi
    sleep 1
  done
}

free_port() { # free_port tcp|udp
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1]=="tcp" else socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

t_all=$(now)

# 1. Binaries: aarch64 release for the image, native for the operator's CLI (and bramble-image).
t=$(now)
if [ -n "${BRAMBLE_AARCH64_BIN:-}" ]; then
  aarch64_bins=$BRAMBLE_AARCH64_BIN
else
  log "cargo build --release --target $target (the three services' binaries)"
  (cd "$repo" && cargo build --release --locked --target "$target" -p bramble-master -p bramble-agent -p bramble --quiet)
  aarch64_bins=$repo/target/$target/release
fi
cross_build_s=$(since "$t")
# The same command as .ci/run's, so a no-op there.
(cd "$repo" && cargo build --workspace --bins --locked --quiet)
native=$repo/target/debug
[ -x "$native/bramble-image" ] || fail "$native/bramble-image not built"

rm -rf "$work/cluster" "$work/key" "$work/key.pub"
"$native/bramble" cluster init "$work/cluster" --name boot-test >/dev/null
ssh-keygen -q -t ed25519 -N '' -C bramble-boot-test -f "$work/key"

# 2. The image, as a user builds it.
img=$work/bramble.img
rm -f "$img" "$img.sha256"
if [ -n "${BRAMBLE_BOOT_BASE:-}" ]; then
  log "BRAMBLE_BOOT_BASE: bramble-image build --base $BRAMBLE_BOOT_BASE (development shortcut)"
  base_args=(--base "$BRAMBLE_BOOT_BASE")
else
  log "bramble-image build --debian"
  base_args=(--debian)
fi
t=$(now)
"$native/bramble-image" build "${base_args[@]}" --cluster "$work/cluster" --out "$img" \
  --ssh-key "$work/key.pub" --role master --binaries "$aarch64_bins" --json >"$work/build.json" \
  || fail "bramble-image build failed"
image_build_s=$(since "$t")
log "image built in ${image_build_s}s: $(du -h "$img" | cut -f1) on disk"

# 3. Kernel and initrd from the FAT partition (partition 1), read in place by mtools.
boot_offset=$(sfdisk -J "$img" | python3 -c 'import json,sys; p=json.load(sys.stdin)["partitiontable"]["partitions"][0]; print(p["start"]*512)')
fat="$img@@$boot_offset"
kernel=$(mdir -b -i "$fat" ::/ | sed 's|^::/||' | grep -m1 '^vmlinuz-') || fail "no vmlinuz-* on the boot partition"
initrd=$(mdir -b -i "$fat" ::/ | sed 's|^::/||' | grep -m1 '^initrd.img-') || fail "no initrd.img-* on the boot partition"
mcopy -n -i "$fat" "::/$kernel" "$work/vmlinuz"
mcopy -n -i "$fat" "::/$initrd" "$work/initrd.img"
log "booting $kernel with $initrd"

# 4. Power on with the kernel command line the image gives a Pi (cmdline.txt as raspi-firmware
# wrote it: root=PARTUUID=... and our cgroup settings) plus QEMU's serial console.
# No KVM for an aarch64 guest on an x86_64 host: TCG, multi-threaded. No option ROM for the
# NIC (romfile=): the kernel is booted directly, and CI need not install ipxe-qemu.
cmdline=$(mtype -i "$fat" ::/cmdline.txt | tr -d '\r\n') || fail "no cmdline.txt on the boot partition"
[[ "$cmdline" == *root=PARTUUID=* ]] || fail "cmdline.txt has no root=PARTUUID=: $cmdline"
ssh_port=$(free_port tcp)
: >"$work/serial.log"
t_power=$(now)
qemu-system-aarch64 -M virt -cpu cortex-a72 -m 1024 -smp 2 -accel tcg,thread=multi \
  -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
  -append "$cmdline console=ttyAMA0" \
  -drive "file=$img,if=virtio,format=raw" -snapshot \
  -netdev "user,id=n,restrict=on,hostfwd=tcp:127.0.0.1:$ssh_port-:22" \
  -device virtio-net-pci,netdev=n,romfile= \
  -display none -monitor none -serial "file:$work/serial.log" </dev/null >"$work/qemu.log" 2>&1 &
qemu_pid=$!

ssh_node() {
  ssh -i "$work/key" -p "$ssh_port" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10 \
    root@127.0.0.1 "$@"
}
login_prompt() { grep -q 'login:' "$work/serial.log"; }
poll 300 "login prompt on the serial console" login_prompt
login_s=$(since "$t_power")
log "login prompt after ${login_s}s"
# Root's key comes from bramble-firstboot (the image carries it in /etc/bramble).
ssh_quiet() { ssh_node true 2>/dev/null; }
poll 180 "ssh as root with the image's key" ssh_quiet
ssh_s=$(since "$t_power")
log "ssh answers after ${ssh_s}s"
node=$(ssh_node hostname)

# 5. Cluster ready: the node's own agent registered with its master, seen by the operator. QUIC
# is UDP, and slirp's restricted mode drops the guest's replies to a forwarded UDP port, so the
# operator's CLI runs on the node with the operator and framework certificates pushed over ssh
# into /run (tmpfs: never on the card, gone at power-off) — the image never carries them.
tar -C "$work/cluster" -cf - ca.pem operator.pem operator.key framework.pem framework.key \
  | ssh_node 'umask 077; mkdir -p /run/bramble-operator && tar -C /run/bramble-operator -xf -' \
  || fail "pushing the operator certificate to the node"
cli() { ssh_node timeout 300 /usr/local/bin/bramble --cluster /run/bramble-operator --master 127.0.0.1:5051 "$@"; }
agent_registered() {
  cli agents --json 2>>"$work/cli.log" | python3 -c '
import json, sys
agents = json.load(sys.stdin)
sys.exit(0 if any(a["hostname"] == sys.argv[1] and a["connected"] for a in agents) else 1)' "$node"
}
poll 300 "the node's agent registered with its master" agent_registered
ready_s=$(since "$t_power")
# The same moment by the node's own clock (seconds since its kernel started, i.e. since power
# on less QEMU's own start-up), free of this script's polling interval.
ready_guest_s=$(ssh_node journalctl -b -o short-monotonic -u bramble-agent --grep "'registered with master'" \
  | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p' | head -1)
[ -n "$ready_guest_s" ] || fail "the agent's journal has no 'registered with master'"
log "cluster ready (agent on $node registered) ${ready_s}s after power-on (${ready_guest_s}s on the node's clock)"

# 6. What first boot did, and the services.
ssh_node systemctl is-active --quiet bramble-master bramble-agent \
  || fail "bramble-master and bramble-agent are not both active"
[[ "$node" =~ ^bramble-[0-9a-f]{4}$ ]] || fail "hostname is '$node', expected bramble-XXXX"
ssh_node grep -Eq "'^role *= *\"master\"'" /boot/firmware/bramble.toml \
  || fail "bramble.toml on the boot partition does not say role = \"master\""
ssh_node cat /var/lib/bramble/firstboot.done >"$work/firstboot.json" \
  || fail "no first-boot marker /var/lib/bramble/firstboot.done"
python3 - "$work/firstboot.json" "$node" <<'EOF' || fail "first boot report wrong: $(cat "$work/firstboot.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["hostname"] == sys.argv[2], r
assert r["role"] == "master" and r["role_source"] == "bramble.toml", r
assert r["ssh_keys_added"] == 1, r
assert sorted(r["enabled_units"]) == ["bramble-agent.service", "bramble-master.service", "bramble-services.service"], r
EOF
# Ran once, succeeded, and running it again changes nothing.
[ "$(ssh_node systemctl show -P Result bramble-firstboot)" = success ] || fail "bramble-firstboot did not succeed"
runs=$(ssh_node journalctl -b -o cat -u bramble-firstboot | grep -c 'first boot done' || true)
[ "$runs" = 1 ] || fail "bramble-firstboot logged 'first boot done' $runs times"
ssh_node /usr/local/bin/bramble node firstboot 2>/dev/null | grep -qx 'first boot already done' \
  || fail "a second first boot did not see the marker"
ssh_node systemctl is-enabled --quiet bramble-master bramble-agent bramble-services \
  || fail "bramble-master, bramble-agent and bramble-services are not all enabled"
# The service scheduler runs with the node certificate (the card never carries framework.key)
# and registers with the master over loopback.
ssh_node test ! -e /etc/bramble/cluster/framework.key || fail "the card carries framework.key"
services_registered() { cli frameworks 2>/dev/null | grep -q bramble-services; }
poll 120 "bramble-services registered with the master" services_registered
# Who the services run as.
user_of() { ssh_node "ps -o user= -p \$(systemctl show -P MainPID $1)" | tr -d ' '; }
master_user=$(user_of bramble-master)
[ "$master_user" = bramble ] || fail "bramble-master runs as '$master_user', not bramble"
agent_user=$(user_of bramble-agent)
[ "$agent_user" = root ] || fail "bramble-agent runs as '$agent_user', not root"
services_user=$(user_of bramble-services)
[ "$services_user" = bramble ] || fail "bramble-services runs as '$services_user', not bramble"
log "node $node: first boot once, role master; bramble-master (user bramble), bramble-agent and bramble-services active"

# A command task runs as its framework's uid from task_uids (70000-70999), with no account.
in_task_uids() { [ "$1" -ge 70000 ] 2>/dev/null && [ "$1" -le 70999 ]; }
cli run -- id -u >"$work/run.out" 2>>"$work/cli.log" || fail "bramble run failed: $(tail -5 "$work/cli.log")"
in_task_uids "$(tr -d ' \n' <"$work/run.out")" || fail "a command task ran as uid '$(cat "$work/run.out")', not one of task_uids"

# The job, run by the node's agent with the node's aarch64 bramble as executor. Meanwhile the
# node samples who its executor processes run as, until told to stop.
ssh_node 'cat >/run/bramble-watch.sh' <<'EOF'
rm -f /run/bramble-watch.stop /run/bramble-watch.users
i=0
while [ ! -e /run/bramble-watch.stop ] && [ $i -lt 3000 ]; do
  ps -eo uid=,args= | awk '$2 ~ /bramble$/ && $3 == "executor" { print $1 }' >>/run/bramble-watch.users
  sleep 0.2; i=$((i + 1))
done
EOF
ssh_node sh /run/bramble-watch.sh &
watch_pid=$!
t=$(now)
cli pi --terms "$terms" --tasks "$tasks" --executor /usr/local/bin/bramble --json \
  >"$work/pi.json" 2>>"$work/cli.log" || fail "bramble pi failed: $(tail -5 "$work/cli.log")"
job_s=$(since "$t")
ssh_node touch /run/bramble-watch.stop
wait "$watch_pid" || true
executor_users=$(ssh_node 'sort -u /run/bramble-watch.users' | tr '\n' ' ')
[ -n "$executor_users" ] || fail "no pi executor process seen on the node while the job ran"
read -ra executor_uids <<<"$executor_users"
[ ${#executor_uids[@]} = 1 ] && in_task_uids "${executor_uids[0]}" || fail "pi executors ran as uids: $executor_users (want one uid of task_uids)"
python3 - "$work/pi.json" "$terms" "$tasks" <<'EOF' || fail "pi result wrong: $(cat "$work/pi.json")"
import json, math, sys
result = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
terms, tasks = int(sys.argv[2]), int(sys.argv[3])
# 4·Σ_{k<terms} (-1)^k/(2k+1), paired as the kernel does and summed exactly with fsum.
expected = 4.0 * math.fsum(2.0 / ((2.0 * k + 2.0) ** 2 - 1.0) for k in range(0, terms, 2))
assert result["terms"] == terms and result["tasks"] == tasks, result
assert abs(result["pi"] - expected) <= 1e-12, (result["pi"], expected)
EOF
log "pi over $terms terms on $node: $(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["pi"])' "$work/pi.json") in ${job_s}s, executors as uid $executor_users"

# Where the boot's time went, for whoever makes it faster.
ssh_node systemd-analyze >"$work/systemd-analyze.txt" 2>&1 || true
ssh_node systemd-analyze blame >"$work/blame.txt" 2>&1 || true
ssh_node systemd-analyze critical-chain bramble-agent.service >"$work/critical-chain.txt" 2>&1 || true
ssh_node journalctl -b -o short-monotonic -u bramble-firstboot -u bramble-master -u bramble-agent \
  >"$work/bramble-journal.txt" 2>&1 || true
log "$(head -1 "$work/systemd-analyze.txt")"

ok=1
kvm=no
[ -w /dev/kvm ] && kvm="present (unused: aarch64 guest on $(uname -m))"
printf '{"test":"image_boot","cross_build_s":%s,"image_build_s":%s,"login_prompt_s":%s,"ssh_s":%s,"power_on_to_cluster_ready_s":%s,"cluster_ready_node_clock_s":%s,"pi_job_s":%s,"pi_terms":%s,"accel":"tcg","kvm":"%s","total_s":%s}\n' \
  "$cross_build_s" "$image_build_s" "$login_s" "$ssh_s" "$ready_s" "$ready_guest_s" "$job_s" "$terms" "$kvm" "$(since "$t_all")"
