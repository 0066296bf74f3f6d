#!/usr/bin/env bash
# image/debian/mkbase.sh OUT.img — an arm64 Debian bookworm base image for Bramble, built from
# Debian's packages with mmdebstrap and laid out like Raspberry Pi OS (MBR; partition 1 FAT32
# "bootfs" with firmware, kernel and initrd; partition 2 ext4 "rootfs"), without mounting
# anything or using loop devices.
#
# `bramble-image build --debian` calls this for the base and then customises the result; the
# base itself knows nothing about Bramble beyond carrying what the services need (systemd,
# openssh-server, avahi-daemon, i2c-tools).
#
# Why it is shaped this way (see DESIGN.md "Pitfalls"): under qemu-user nearly all the time
# goes into maintainer scripts and the initramfs, so dpkg runs under eatmydata, docs and
# locales are never unpacked, and update-initramfs is held back while packages install and run
# once at the end with a short module list. Packages and apt lists are kept in a cache dir so a
# re-run is offline and installs the very same versions (pass --refresh to update them).
#
# Usage: mkbase.sh [--refresh] [--cache DIR] [--disk-id HEX8] OUT.img
# Env:   BRAMBLE_IMAGE_CACHE (default /var/cache/bramble-image), BRAMBLE_DEBIAN_MIRROR,
#        BRAMBLE_KEEP_TREE=DIR (leave the root tree there, for debugging).
# Needs: root (mmdebstrap root mode keeps file ownership for mke2fs -d), mmdebstrap, kmod,
#        qemu-user-static with binfmt_misc, arch-test, e2fsprogs >= 1.43, dosfstools, mtools,
#        fdisk (sfdisk).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
suite=bookworm
mirror=${BRAMBLE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${BRAMBLE_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
cache=${BRAMBLE_IMAGE_CACHE:-/var/cache/bramble-image}
refresh=0
disk_id=
out=

die() { echo "mkbase: $*" >&2; exit 1; }
log() { echo "mkbase: [$(date -u +%H:%M:%S)] $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --refresh) refresh=1 ;;
    --cache) cache=${2:?--cache needs a directory}; shift ;;
    --disk-id) disk_id=${2:?--disk-id needs 8 hex digits}; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$out" ] || die "one output image only (got $out and $1)"; out=$1 ;;
  esac
  shift
done
[ -n "$out" ] || die "usage: mkbase.sh [--refresh] [--cache DIR] [--disk-id HEX8] OUT.img"
[ "$(id -u)" = 0 ] || die "needs root: mmdebstrap's root mode keeps file ownership for mke2fs -d"
for tool in mmdebstrap arch-test depmod mke2fs mkfs.vfat mcopy sfdisk; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install mmdebstrap arch-test kmod e2fsprogs dosfstools mtools fdisk qemu-user-static)"
done
arch-test arm64 >/dev/null 2>&1 || die "this machine cannot run arm64 binaries: install qemu-user-static and mount binfmt_misc (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64)"

# The disk id names both partitions (PARTUUID=<id>-01/-02) in fstab and cmdline.txt; a fresh
# random one per image unless given, as Pi OS images differ per release.
if [ -z "$disk_id" ]; then
  disk_id=$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')
fi
[[ "$disk_id" =~ ^[0-9a-f]{8}$ ]] || die "--disk-id must be 8 lowercase hex digits, got '$disk_id'"

mkdir -p "$cache/apt/archives" "$cache/apt/lists"
out_dir=$(cd "$(dirname "$out")" && pwd) || die "output directory of $out does not exist"
work=$(mktemp -d "$out_dir/.mkbase.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
tree=$work/root

# Reuse the cached apt lists (offline, same versions) unless asked to refresh or there are none.
skip_update=()
if [ "$refresh" = 0 ] && compgen -G "$cache/apt/lists/*_Packages*" >/dev/null; then
  skip_update=(--skip=update)
  log "using cached package lists from $cache/apt/lists (--refresh to update)"
fi

export BRAMBLE_CACHE=$cache BRAMBLE_DISKID=$disk_id BRAMBLE_REUSE_LISTS=${#skip_update[@]}
export BRAMBLE_HOOKS=$here/hooks.sh

packages=(
  # boot: Debian's arm64 kernel runs on Pi 3/4/400/Zero 2 W and on QEMU's virt machine;
  # raspi-firmware puts the Pi's boot firmware, DTBs, config.txt and cmdline.txt in /boot/firmware.
  linux-image-arm64 raspi-firmware initramfs-tools zstd
  systemd systemd-sysv systemd-timesyncd systemd-resolved libnss-myhostname udev kmod dbus
  # the network: systemd-networkd (configured in hooks.sh), ssh, mDNS for the agents
  iproute2 openssh-server avahi-daemon libnss-mdns
  # No ca-certificates: a node trusts only its cluster's CA, and that package's postinst (a
  # process per certificate) is the slowest step of the whole build under qemu-user.
  e2fsprogs i2c-tools
  # container-image tasks: crun runs them (no daemon), umoci and skopeo load images
  crun umoci skopeo
  # eatmydata is installed properly so the cached debs hold it for the next run's hook
  eatmydata libeatmydata1
)

log "mmdebstrap $suite arm64 -> $tree (cache $cache)"
t0=$(date +%s)
mmdebstrap --variant=minbase --arch=arm64 --mode=root --format=directory \
  --include="$(IFS=,; echo "${packages[*]}")" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --aptopt='Acquire::Languages "none"' \
  --skip=essential/unlink "${skip_update[@]}" \
  --setup-hook='"$BRAMBLE_HOOKS" setup "$1"' \
  --extract-hook='"$BRAMBLE_HOOKS" extract "$1"' \
  --essential-hook='"$BRAMBLE_HOOKS" essential "$1"' \
  --customize-hook='"$BRAMBLE_HOOKS" customize "$1"' \
  "$suite" "$tree" \
  "deb $mirror $suite main non-free-firmware" \
  "deb $mirror $suite-updates main non-free-firmware" \
  "deb $security $suite-security main non-free-firmware" >&2
log "mmdebstrap done in $(( $(date +%s) - t0 ))s"

# --- lay the tree out like Raspberry Pi OS, in files, without mounting -----------------------
boot=$tree/boot/firmware
for f in cmdline.txt config.txt initrd.img vmlinuz; do
  compgen -G "$boot/$f*" >/dev/null || die "raspi-firmware left no $f in /boot/firmware"
done
grep -q "root=PARTUUID=${disk_id}-02" "$boot/cmdline.txt" || die "cmdline.txt does not name root=PARTUUID=${disk_id}-02: $(cat "$boot/cmdline.txt")"

# Partition 1: FAT32 "bootfs", 512 MiB from 4 MiB on, as Pi OS has it.
boot_mib=512
fat=$work/bootfs.vfat
mkfs.vfat -F 32 -n bootfs -i "$disk_id" -C "$fat" $((boot_mib * 1024)) >/dev/null
mcopy -i "$fat" -s -p -Q "$boot"/* ::/
find "$boot" -mindepth 1 -delete   # the mount point stays, empty, in the root filesystem

# Partition 2: ext4 "rootfs" made from the tree with room to spare; growing it to the card is
# a first-boot job.
used_mib=$(du -sm "$tree" | cut -f1)
root_mib=$(( (used_mib * 5 / 4 + 512 + 3) / 4 * 4 ))
ext4=$work/rootfs.ext4
mke2fs -q -F -t ext4 -b 4096 -I 256 -L rootfs -d "$tree" "$ext4" "${root_mib}M"
e2fsck -fn "$ext4" >/dev/null 2>&1 || die "e2fsck found errors in the new root filesystem"
fsck.vfat -n "$fat" >/dev/null || die "fsck.vfat found errors in the new boot filesystem"

# The image: MBR with the disk id, both filesystems copied in sparsely.
start=8192
boot_sectors=$((boot_mib * 2048))
root_start=$((start + boot_sectors))
root_sectors=$((root_mib * 2048))
img=$work/out.img
truncate -s $(( (root_start + root_sectors) * 512 )) "$img"
sfdisk --quiet --no-reread --no-tell-kernel "$img" >/dev/null <<SFDISK
label: dos
label-id: 0x${disk_id}
unit: sectors
start=${start}, size=${boot_sectors}, type=c
start=${root_start}, size=${root_sectors}, type=83
SFDISK
dd if="$fat" of="$img" bs=1M seek=$((start / 2048)) conv=notrunc,sparse status=none
dd if="$ext4" of="$img" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
mv "$img" "$out"
if [ -n "${BRAMBLE_KEEP_TREE:-}" ]; then
  rm -rf "$BRAMBLE_KEEP_TREE" && mv "$tree" "$BRAMBLE_KEEP_TREE"
fi
log "$out: disk id $disk_id, bootfs ${boot_mib} MiB, rootfs ${root_mib} MiB ($used_mib MiB used), $(du -h "$out" | cut -f1) on disk, $(( $(date +%s) - t0 ))s in all"
