#!/usr/bin/env bash
# Installs every Debian package the test suite needs (Debian 12). Skips apt entirely when every
# binary is already present, so reruns are instant. Run as root (CI) or with sudo.
#   scripts/install-test-deps.sh [--bench]
set -euo pipefail

PACKAGES=(nbdkit libnbd-bin python3-libnbd qemu-utils qemu-system-x86 qemu-block-extra fio fuse3
  e2fsprogs busybox-static linux-image-amd64 kmod cpio zstd radosgw ceph-mon ceph-osd
  openssl gnutls-bin docker.io debootstrap systemd)
# One probe per package: a command (looked up on PATH plus the sbin directories) or an absolute file.
PROBES=(nbdkit nbdinfo /usr/lib/python3/dist-packages/nbd.py qemu-img qemu-system-x86_64
  /usr/lib/x86_64-linux-gnu/qemu/block-curl.so fio fusermount3 mkfs.ext4 busybox '/boot/vmlinuz-*' modprobe
  cpio zstd radosgw ceph-mon ceph-osd
  openssl psktool dockerd debootstrap systemd-analyze)
# --bench: also what the benchmarks' peers need (the nbdkit S3 plugin of bench/live-vm-bench.mjs
# and ../shared/bench, which is python with boto3); the tests do not.
if [ "${1:-}" = --bench ]; then
  PACKAGES+=(nbdkit-plugin-python python3-boto3)
  PROBES+=(/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-python-plugin.so /usr/lib/python3/dist-packages/boto3/__init__.py)
fi
export PATH="$PATH:/usr/sbin:/sbin"

missing=0
for p in "${PROBES[@]}"; do
  case "$p" in
    /*) # shellcheck disable=SC2086 # the glob in /boot/vmlinuz-* must expand
        ls $p >/dev/null 2>&1 && continue ;;
    *) command -v "$p" >/dev/null 2>&1 && continue ;;
  esac
  echo "install-test-deps: missing $p" >&2; missing=1
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
