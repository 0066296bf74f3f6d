#!/usr/bin/env bash
# image/tests/dev-customise.sh IMG CLUSTER_DIR BIN_DIR SSH_PUB — DEVELOPMENT ONLY.
#
# A hand-rolled stand-in for `bramble-image build`'s customisation, used by boot.sh when
# BRAMBLE_BOOT_MANUAL=1 so the boot harness could be written before the image crate existed.
# It writes the bare minimum (binaries, node certificates, three small units, root's ssh key,
# bramble.toml) with debugfs and mtools, without mounting. It is not the product: the real
# customisation (hardened units, configs, idempotent edits) is `bramble-image`.
set -euo pipefail

img=${1:?image}; cluster=${2:?cluster dir}; bins=${3:?aarch64 bin dir}; pub=${4:?ssh public key}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
die() { echo "dev-customise: $*" >&2; exit 1; }

read -r boot_start boot_size root_start root_size < <(sfdisk -J "$img" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"]
print(p[0]["start"], p[0]["size"], p[1]["start"], p[1]["size"])')

mkdir -p "$work/files"
f=$work/files
cp "$bins/bramble-master" "$bins/bramble-agent" "$bins/bramble" "$f/"
chmod 755 "$f"/bramble*
cp "$cluster/ca.pem" "$cluster/node.pem" "$cluster/node.key" "$f/"
chmod 644 "$f/ca.pem" "$f/node.pem"; chmod 600 "$f/node.key"
cp "$pub" "$f/authorized_keys"; chmod 600 "$f/authorized_keys"
cat >"$f/bramble-firstboot.service" <<'EOF'
[Unit]
Description=Bramble first boot (dev stand-in): hostname bramble-XXXX
ConditionPathExists=!/var/lib/bramble/firstboot-done
Before=bramble-master.service bramble-agent.service avahi-daemon.service
After=systemd-machine-id-commit.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'n=bramble-$(head -c4 /etc/machine-id); echo $n >/etc/hostname; hostname $n; mkdir -p /var/lib/bramble; touch /var/lib/bramble/firstboot-done'

[Install]
WantedBy=multi-user.target
EOF
for svc in master agent; do
  cat >"$f/bramble-$svc.service" <<EOF
[Unit]
Description=Bramble $svc (dev stand-in)
After=network-online.target bramble-firstboot.service
Wants=network-online.target

[Service]
ExecStart=/usr/local/bin/bramble-$svc
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF
done
chmod 644 "$f"/*.service

cat >"$work/batch" <<EOF
cd /usr/local/bin
write $f/bramble-master bramble-master
write $f/bramble-agent bramble-agent
write $f/bramble bramble
mkdir /etc/bramble
mkdir /etc/bramble/cluster
cd /etc/bramble/cluster
write $f/ca.pem ca.pem
write $f/node.pem node.pem
write $f/node.key node.key
cd /etc/systemd/system
write $f/bramble-firstboot.service bramble-firstboot.service
write $f/bramble-master.service bramble-master.service
write $f/bramble-agent.service bramble-agent.service
symlink /etc/systemd/system/multi-user.target.wants/bramble-firstboot.service /etc/systemd/system/bramble-firstboot.service
symlink /etc/systemd/system/multi-user.target.wants/bramble-master.service /etc/systemd/system/bramble-master.service
symlink /etc/systemd/system/multi-user.target.wants/bramble-agent.service /etc/systemd/system/bramble-agent.service
cd /root/.ssh
write $f/authorized_keys authorized_keys
EOF

part=$work/rootfs.ext4
dd if="$img" of="$part" bs=512 skip="$root_start" count="$root_size" conv=sparse status=none
# debugfs -w exits 0 even when a command fails (DESIGN.md pitfalls): read its error output.
debugfs -w -f "$work/batch" "$part" >"$work/debugfs.out" 2>&1
if grep -v -e '^debugfs' -e '^Allocated inode' "$work/debugfs.out" | grep -q .; then
  cat "$work/debugfs.out" >&2; die "debugfs reported errors"
fi
e2fsck -fn "$part" >/dev/null 2>&1 || die "e2fsck finds errors after the edit"
dd if="$part" of="$img" bs=512 seek="$root_start" conv=notrunc,sparse status=none

printf 'role = "master"\n' >"$work/bramble.toml"
mcopy -o -i "$img@@$((boot_start * 512))" "$work/bramble.toml" ::/bramble.toml
echo "dev-customise: $img customised (development stand-in for bramble-image)" >&2
