#!/usr/bin/env bash
# image/debian/hooks.sh STAGE ROOT — mmdebstrap hooks for mkbase.sh, one function per stage.
#
#   setup      packages and (unless refreshing) apt lists from the cache into the chroot
#   extract    dpkg under eatmydata (its debs come from the cache, downloaded once)
#   essential  hold update-initramfs back; /boot/firmware for raspi-firmware
#   customize  cache out; the base's configuration; the one initramfs run; eatmydata off
#
# Settings come from mkbase.sh through the environment (mmdebstrap passes it on):
# BRAMBLE_CACHE, BRAMBLE_DISKID, BRAMBLE_REUSE_LISTS.
set -euo pipefail

stage=${1:?stage}
root=${2:?chroot dir}
cache=${BRAMBLE_CACHE:?}
disk_id=${BRAMBLE_DISKID:?}

log() { echo "hooks[$stage]: [$(date -u +%H:%M:%S)] $*" >&2; }

# Modules the initramfs needs to find and mount the root filesystem, and nothing else:
# QEMU's virt machine (virtio disk on PCI or MMIO) and the Pi 3/4/400/Zero 2 W (SD card via
# sdhost/sdhci-iproc, USB boot via dwc2 / the Pi 4's PCIe xHCI). Only the root filesystem's
# are loaded unconditionally (/etc/initramfs-tools/modules); the drivers are merely included
# (a hook) and udev loads the ones whose hardware is there: loading all of them on every
# boot cost seconds under QEMU and loads the Pi's drivers on QEMU and QEMU's on the Pi.
initramfs_load=(ext4 crc32c_generic)
initramfs_include=(
  virtio_pci virtio_mmio virtio_blk
  mmc_block sdhci sdhci_pltfm sdhci_iproc bcm2835 bcm2835_dma
  dwc2 pcie_brcmstb reset_raspberrypi xhci_pci xhci_plat_hcd usb_storage uas sd_mod
)

stage_setup() {
  mkdir -p "$root/var/cache/apt/archives" "$root/var/lib/apt/lists"
  # Hard links cost nothing; apt only adds and (at cleanup) unlinks, never rewrites a deb.
  if compgen -G "$cache/apt/archives/*.deb" >/dev/null; then
    cp -al "$cache"/apt/archives/*.deb "$root/var/cache/apt/archives/" 2>/dev/null \
      || cp -a "$cache"/apt/archives/*.deb "$root/var/cache/apt/archives/"
    log "$(find "$root/var/cache/apt/archives" -name '*.deb' | wc -l) cached packages in"
  fi
  if [ "${BRAMBLE_REUSE_LISTS:-0}" != 0 ]; then
    cp -a "$cache/apt/lists/." "$root/var/lib/apt/lists/"
    log "cached package lists in"
  fi
}

stage_extract() {
  local archives=$root/var/cache/apt/archives libdir=/usr/lib/aarch64-linux-gnu
  if ! compgen -G "$archives/eatmydata_*_all.deb" >/dev/null \
    || ! compgen -G "$archives/libeatmydata1_*_arm64.deb" >/dev/null; then
    log "downloading eatmydata (first run)"
    (cd "$archives" && APT_CONFIG=$MMDEBSTRAP_APT_CONFIG apt-get download -q eatmydata libeatmydata1 >&2)
  fi
  local deb
  deb=$(ls "$archives"/eatmydata_*_all.deb | tail -1)
  dpkg-deb --fsys-tarfile "$deb" | tar -C "$root" -x ./usr/bin/eatmydata
  deb=$(ls "$archives"/libeatmydata1_*_arm64.deb | tail -1)
  mkdir -p "$root$libdir"
  dpkg-deb --fsys-tarfile "$deb" | tar -C "$root" -x --wildcards ".$libdir/libeatmydata.so*"
  # The same diversion mmdebstrap's own eatmydata hook sets up, without its download.
  mv "$root/usr/bin/dpkg" "$root/usr/bin/dpkg.distrib"
  printf '#!/bin/sh\nexec /usr/bin/eatmydata /usr/bin/dpkg.distrib "$@"\n' >"$root/usr/bin/dpkg"
  chmod 755 "$root/usr/bin/dpkg"
  printf '/usr/bin/dpkg\n/usr/bin/dpkg.distrib\n:\n' >>"$root/var/lib/dpkg/diversions"
}

stage_essential() {
  # Every kernel and initramfs-tools trigger would build an initramfs with every module
  # (minutes each under qemu-user); customize builds the one we need.
  chroot "$root" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
  ln -sf /bin/true "$root/usr/sbin/update-initramfs"
  # The kernel's postinst runs depmod over its ~4000 modules: tens of seconds emulated, a
  # fraction of a second for the host's own depmod, which reads any architecture's modules
  # (cross-built kernels are installed the same way). customize runs it natively.
  chroot "$root" dpkg-divert --quiet --local --rename --add /sbin/depmod
  ln -sf /bin/true "$root/sbin/depmod"
  mkdir -p "$root/boot/firmware"
  # openssh-server's postinst makes RSA, ECDSA and Ed25519 host keys unless they exist (the
  # RSA one takes seconds under qemu-user), and customize deletes them again: every card makes
  # its own on first boot. Empty stand-ins make the postinst skip them.
  mkdir -p "$root/etc/ssh"
  touch "$root"/etc/ssh/ssh_host_{rsa,ecdsa,ed25519}_key
}

cache_out() {
  # New packages join the cache; the lists are replaced only when this run fetched them.
  local n=0 f
  for f in "$root"/var/cache/apt/archives/*.deb; do
    [ -e "$cache/apt/archives/${f##*/}" ] && continue
    cp -a "$f" "$cache/apt/archives/" && n=$((n + 1))
  done
  log "$n new packages cached in $cache/apt/archives"
  if [ "${BRAMBLE_REUSE_LISTS:-0}" = 0 ]; then
    rm -rf "$cache/apt/lists.new"
    mkdir -p "$cache/apt/lists.new"
    find "$root/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -exec cp -a {} "$cache/apt/lists.new/" \;
    rm -rf "$cache/apt/lists"
    mv "$cache/apt/lists.new" "$cache/apt/lists"
    log "package lists cached"
  fi
}

configure_base() {
  # Names: a placeholder until bramble-firstboot gives the node its bramble-XXXX name.
  echo bramble >"$root/etc/hostname"
  cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF

  # Both partitions by PARTUUID, as Pi OS does: the disk id is the image's, kept by every edit.
  cat >"$root/etc/fstab" <<EOF
PARTUUID=${disk_id}-02  /               ext4  defaults,noatime  0 1
PARTUUID=${disk_id}-01  /boot/firmware  vfat  defaults          0 2
EOF

  # Wired network: DHCP where there is a server, IPv4 link-local always, so Pis on a bare
  # switch (and the virtual bramble) still reach each other and mDNS works.
  mkdir -p "$root/etc/systemd/network"
  cat >"$root/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Name=eth* en*

[Network]
DHCP=yes
LinkLocalAddressing=yes
MulticastDNS=no
LLMNR=no
EOF
  # network-online means "a link is up with an address", not "DHCP answered": without a DHCP
  # server the default waits two minutes before the services ordered after it start.
  mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
  cat >"$root/etc/systemd/system/systemd-networkd-wait-online.service.d/bramble.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --operational-state=degraded --timeout=60
EOF
  # avahi-daemon answers mDNS on the Pi (as on Pi OS): resolved must not take port 5353 too.
  mkdir -p "$root/etc/systemd/resolved.conf.d"
  printf '[Resolve]\nMulticastDNS=no\nLLMNR=no\n' >"$root/etc/systemd/resolved.conf.d/bramble.conf"
  ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
  chroot "$root" systemctl enable --quiet systemd-networkd systemd-resolved systemd-timesyncd

  # One image is flashed to many cards: each card makes its own ssh host key on first boot.
  # Ed25519 only: every current client speaks it, and it takes milliseconds where RSA takes
  # seconds on a Pi 3 (and under QEMU's TCG).
  rm -f "$root"/etc/ssh/ssh_host_*
  mkdir -p "$root/etc/ssh/sshd_config.d"
  printf '# bramble: one host key, made on first boot (ssh-host-keys.service)\nHostKey /etc/ssh/ssh_host_ed25519_key\n' \
    >"$root/etc/ssh/sshd_config.d/bramble-hostkey.conf"
  cat >"$root/etc/systemd/system/ssh-host-keys.service" <<'EOF'
[Unit]
Description=Generate this machine's SSH host key
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -C "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=ssh.service
EOF
  chroot "$root" systemctl enable --quiet ssh-host-keys.service ssh.service avahi-daemon.service

  # Units a Bramble node never needs, each a process or a module load at boot (seconds under
  # QEMU): fuse, loop and device-mapper modules, EFI pstore (no EFI on a Pi), DRM ahead of
  # logind (the Pi's KMS driver loads by udev anyway), and e2scrub's LVM snapshot cleanup.
  local unit
  for unit in modprobe@fuse modprobe@loop modprobe@dm_mod modprobe@efi_pstore modprobe@drm e2scrub_reap; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit.service"
  done

  # I2C for the front panel: i2c-dev at boot (config.txt's dtparam is bramble-image's edit).
  echo i2c-dev >"$root/etc/modules-load.d/i2c-dev.conf"

  # raspi-firmware writes cmdline.txt from these on every kernel update.
  sed -i "s|^#\?ROOTPART=.*|ROOTPART=PARTUUID=${disk_id}-02|" "$root/etc/default/raspi-firmware"
  grep -q "^ROOTPART=PARTUUID=${disk_id}-02$" "$root/etc/default/raspi-firmware" \
    || { log "could not set ROOTPART in /etc/default/raspi-firmware"; exit 1; }
}

build_initramfs() {
  rm -f "$root/usr/sbin/update-initramfs"
  chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
  printf 'MODULES=list\n' >"$root/etc/initramfs-tools/conf.d/bramble.conf"
  printf '%s\n' "# bramble: the root filesystem's modules" \
    "${initramfs_load[@]}" >>"$root/etc/initramfs-tools/modules"
  cat >"$root/etc/initramfs-tools/hooks/bramble" <<EOF
#!/bin/sh
# bramble: the drivers that may hold the root filesystem on QEMU virt and on the Pi; included
# only, udev loads those whose hardware is present.
[ "\$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
for m in ${initramfs_include[*]}; do manual_add_modules "\$m"; done
EOF
  chmod 755 "$root/etc/initramfs-tools/hooks/bramble"
  rm -f "$root/sbin/depmod"
  chroot "$root" dpkg-divert --quiet --local --rename --remove /sbin/depmod
  local kver n=0
  for kver in $(ls "$root/lib/modules"); do
    log "depmod (native) for $kver"
    depmod -b "$root" "$kver"
    log "update-initramfs for $kver"
    chroot "$root" update-initramfs -c -k "$kver" >&2
    # Writes kernel, DTBs, config.txt and cmdline.txt (with ROOTPART) into /boot/firmware.
    chroot "$root" /etc/kernel/postinst.d/z50-raspi-firmware "$kver" >&2
    n=$((n + 1))
  done
  [ "$n" = 1 ] || { log "expected one kernel, found $n"; exit 1; }
}

eatmydata_off() {
  rm "$root/usr/bin/dpkg"
  chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/bin/dpkg
}

stage_customize() {
  cache_out
  configure_base
  build_initramfs
  eatmydata_off
}

case "$stage" in
  setup | extract | essential | customize) "stage_$stage" ;;
  *) echo "hooks.sh: unknown stage $stage" >&2; exit 2 ;;
esac
