#!/usr/bin/env bash
# Installs every Debian package the test suite needs (Debian 12). Skips apt entirely when every
# binary is already present, so reruns are instant. Run as root (CI) or with sudo.
set -euo pipefail

PACKAGES=(nbdkit libnbd-bin python3-libnbd qemu-utils qemu-system-x86 qemu-block-extra fio fuse3
  e2fsprogs busybox-static linux-image-amd64 kmod cpio zstd radosgw ceph-mon ceph-osd)
# One probe per package: a binary (or file) that package provides.
PROBES=(/usr/sbin/nbdkit /usr/bin/nbdinfo /usr/lib/python3/dist-packages/nbd.py /usr/bin/qemu-img
  /usr/bin/qemu-system-x86_64 /usr/lib/x86_64-linux-gnu/qemu/block-curl.so /usr/bin/fio /usr/bin/fusermount3
  /sbin/mkfs.ext4 /bin/busybox /boot/vmlinuz-* /sbin/modprobe /usr/bin/cpio /usr/bin/zstd /usr/bin/radosgw
  /usr/bin/ceph-mon /usr/bin/ceph-osd)

missing=0
for p in "${PROBES[@]}"; do
  # shellcheck disable=SC2086 # the glob in /boot/vmlinuz-* must expand
  if ! ls $p >/dev/null 2>&1; then echo "install-test-deps: missing $p" >&2; missing=1; fi
done
if [ "$missing" = 0 ]; then
  echo "install-test-deps: all test packages present" >&2
  exit 0
fi

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${PACKAGES[@]}"
echo "install-test-deps: done" >&2
