#!/usr/bin/env bash
# image/tests/boot.sh — the appliance boots: build a `--debian` image the way a user would and
# boot it in QEMU (testing level "real boot", issue 7).
#
#  1. cross-build the aarch64 release binaries; make a cluster identity and an ssh key;
#  2. `bramble-image build --debian --cluster C --out bramble.img --ssh-key K.pub --role master`
#     (which calls image/debian/mkbase.sh for the base);
#  3. take kernel and initrd out of the image's FAT boot partition with mtools (no mounting);
#  4. boot `qemu-system-aarch64 -M virt -cpu cortex-a72` on the image with -snapshot (the built
#     image stays clean) and a restricted user network: only ssh is forwarded (to loopback),
#     nothing else goes in or out;
#  5. assert over ssh: first boot named the node bramble-XXXX and gave it the master role,
#     bramble-master and bramble-agent are active; as the operator (CLI on the node, operator
#     certificate pushed into /run for the test): the node's agent is registered ("cluster
#     ready") and a pi job runs on the node to the exact partial sum of the series.
# Prints one JSON line: build and boot timings, power-on to cluster ready, the job's time.
#
# Env: BRAMBLE_BOOT_WORK=DIR keeps the image, logs and serial console there (default: a temp
#      dir, removed); BRAMBLE_BOOT_MANUAL=1 customises the base with dev-customise.sh instead
#      of bramble-image (development only, for a tree without the image crate), with
#      BRAMBLE_BOOT_BASE=IMG reusing a base mkbase.sh made earlier;
#      BRAMBLE_SSH_USER (default root): who the image's --ssh-key logs in as.
# Needs root (mkbase.sh), qemu-system-arm, qemu-user-static + binfmt_misc, mmdebstrap, mtools,
# dosfstools, e2fsprogs, fdisk, openssh-client, the aarch64 cross toolchain.
# Every wait polls with a deadline; QEMU and everything else started here is stopped on exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=aarch64-unknown-linux-gnu
terms=20000000
tasks=4
ssh_user=${BRAMBLE_SSH_USER:-root}

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
ok=0
cleanup() {
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
log "cargo build --release --target $target (the three services' binaries)"
t=$(now)
(cd "$repo" && cargo build --release --locked --target "$target" -p bramble-master -p bramble-agent -p bramble --quiet)
cross_build_s=$(since "$t")
# The same command as .ci/run's, so a no-op there.
(cd "$repo" && cargo build --workspace --bins --locked --quiet)
native=$repo/target/debug
aarch64_bins=$repo/target/$target/release

rm -rf "$work/cluster" "$work/key" "$work/key.pub"
"$native/bramble" cluster init "$work/cluster" --name boot-test >/dev/null
ssh-keygen -q -t ed25519 -N '' -C bramble-boot-test -f "$work/key"

# 2. The image.
img=$work/bramble.img
t=$(now)
if [ "${BRAMBLE_BOOT_MANUAL:-0}" = 1 ]; then
  log "BRAMBLE_BOOT_MANUAL=1: base + dev-customise.sh (development only, not bramble-image)"
  if [ -n "${BRAMBLE_BOOT_BASE:-}" ]; then
    cp --sparse=always "$BRAMBLE_BOOT_BASE" "$img"   # a base made earlier by mkbase.sh
  else
    "$repo/image/debian/mkbase.sh" "$img"
  fi
  "$repo/image/tests/dev-customise.sh" "$img" "$work/cluster" "$aarch64_bins" "$work/key.pub"
else
  [ -x "$native/bramble-image" ] || fail "$native/bramble-image not built (is the image crate in the workspace?)"
  log "bramble-image build --debian"
  "$native/bramble-image" build --debian --cluster "$work/cluster" --out "$img" \
    --ssh-key "$work/key.pub" --role master
fi
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

# 4. Power on. No KVM for an aarch64 guest on an x86_64 host: TCG, multi-threaded.
ssh_port=$(free_port tcp)
: >"$work/serial.log"
t_power=$(now)
qemu-system-aarch64 -M virt -cpu cortex-a72 -m 1024 -smp 2 -accel tcg,thread=multi \
  -kernel "$work/vmlinuz" -initrd "$work/initrd.img" \
  -append "root=/dev/vda2 rootwait rw console=ttyAMA0 systemd.show_status=1" \
  -drive "file=$img,if=virtio,format=raw" -snapshot \
  -netdev "user,id=n,restrict=on,hostfwd=tcp:127.0.0.1:$ssh_port-:22" \
  -device virtio-net-pci,netdev=n \
  -display none -monitor none -serial "file:$work/serial.log" </dev/null >"$work/qemu.log" 2>&1 &
qemu_pid=$!

ssh_node() {
  ssh -i "$work/key" -p "$ssh_port" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10 \
    "$ssh_user@127.0.0.1" "$@"
}
login_prompt() { grep -q 'login:' "$work/serial.log"; }
poll 300 "login prompt on the serial console" login_prompt
login_s=$(since "$t_power")
log "login prompt after ${login_s}s"
poll 180 "ssh as $ssh_user" ssh_node true
ssh_s=$(since "$t_power")
log "ssh answers after ${ssh_s}s"

# 5. What first boot did, and the services.
services_active() { ssh_node systemctl is-active --quiet bramble-master bramble-agent; }
poll 180 "bramble-master and bramble-agent active" services_active
node=$(ssh_node hostname)
[[ "$node" =~ ^bramble-[0-9a-zA-Z]{4}$ ]] || fail "hostname is '$node', expected bramble-XXXX"
ssh_node systemctl is-enabled --quiet bramble-master bramble-agent bramble-firstboot \
  || fail "bramble units are not all enabled"
ssh_node grep -Eq "'^role *= *\"master\"'" /boot/firmware/bramble.toml \
  || fail "bramble.toml on the boot partition does not say role = \"master\""
log "node $node: role master, bramble-master and bramble-agent active"

# Cluster ready: the node's own agent registered with its master, seen by the operator. QUIC
# is UDP, and slirp's restricted mode drops the guest's replies to a forwarded UDP port, so the
# operator's CLI runs on the node with the operator certificate pushed over ssh into /run
# (tmpfs: never on the card, gone at power-off) — the image itself never carries it.
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
log "cluster ready (agent on $node registered) ${ready_s}s after power-on"

# The job, run by the node's agent with the node's aarch64 bramble as executor.
t=$(now)
cli pi --terms "$terms" --tasks "$tasks" --json \
  >"$work/pi.json" 2>>"$work/cli.log" || fail "bramble pi failed: $(tail -5 "$work/cli.log")"
job_s=$(since "$t")
python3 - "$work/pi.json" "$terms" "$tasks" <<'PY' || fail "pi result wrong: $(cat "$work/pi.json")"
import json, math, sys
result = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
terms, tasks = int(sys.argv[2]), int(sys.argv[3])
# 4·Σ_{k<terms} (-1)^k/(2k+1), paired as the kernel does and summed exactly with fsum.
expected = 4.0 * math.fsum(2.0 / ((2.0 * k + 2.0) ** 2 - 1.0) for k in range(0, terms, 2))
assert result["terms"] == terms and result["tasks"] == tasks, result
assert abs(result["pi"] - expected) <= 1e-12, (result["pi"], expected)
PY
log "pi over $terms terms on $node: $(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["pi"])' "$work/pi.json") in ${job_s}s"

ok=1
kvm=no
[ -w /dev/kvm ] && kvm="present (unused: aarch64 guest on $(uname -m))"
printf '{"test":"image_boot","cross_build_s":%s,"image_build_s":%s,"login_prompt_s":%s,"ssh_s":%s,"power_on_to_cluster_ready_s":%s,"pi_job_s":%s,"pi_terms":%s,"accel":"tcg","kvm":"%s","total_s":%s}\n' \
  "$cross_build_s" "$image_build_s" "$login_s" "$ssh_s" "$ready_s" "$job_s" "$terms" "$kvm" "$(since "$t_all")"
