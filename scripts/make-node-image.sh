#!/usr/bin/env bash
# Makes a local stand-in for the official node:24-bookworm-slim image, for machines that reach
# Debian's mirror and the npm registry but no image registry (the container test builds the
# Dockerfile on it: docker build --build-arg NODE_IMAGE=TAG). Needs root, debootstrap and a running
# Docker engine. Does nothing when TAG already exists.
#   scripts/make-node-image.sh TAG
# The image: Debian 12 (debootstrap --variant=minbase from this machine's mirror), Node 24 from the
# npm registry (scripts/install-node.sh) in /usr/local with its headers, this machine's npm, a user
# node (1000:1000) — the layout of the official image. Plus this machine's CA bundle and an npmrc
# using it (the registry may be reached through an intercepting proxy), and nodedir=/usr/local
# (node-gyp cannot download Node's headers here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TAG=${1:?usage: make-node-image.sh TAG}
DOCKER=${DOCKER:-docker}

if $DOCKER image inspect "$TAG" >/dev/null 2>&1; then
  echo "make-node-image: $TAG exists" >&2
  exit 0
fi
NODE_DIR=$(dirname "$(bash scripts/install-node.sh 24)")
NPM_DIR=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")") # …/lib/node_modules/npm
MIRROR=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}

ROOTFS=$(mktemp -d /var/tmp/node-image.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
  || { tail -20 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

install -m 0755 "$NODE_DIR/bin/node" "$ROOTFS/usr/local/bin/node"
mkdir -p "$ROOTFS/usr/local/include" "$ROOTFS/usr/local/lib/node_modules" "$ROOTFS/usr/local/etc"
cp -a "$NODE_DIR/include/node" "$ROOTFS/usr/local/include/node"
cp -a "$NPM_DIR" "$ROOTFS/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$ROOTFS/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$ROOTFS/usr/local/bin/npx"
echo 'node:x:1000:' >>"$ROOTFS/etc/group"
echo 'node:x:1000:1000::/home/node:/bin/sh' >>"$ROOTFS/etc/passwd"
echo 'node:*:20000:0:99999:7:::' >>"$ROOTFS/etc/shadow"
install -d -o 1000 -g 1000 "$ROOTFS/home/node"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
printf 'cafile=/etc/ssl/certs/ca-certificates.crt\nnodedir=/usr/local\n' >"$ROOTFS/usr/local/etc/npmrc"

tar -C "$ROOTFS" -c . | $DOCKER import -c 'CMD ["node"]' - "$TAG" >/dev/null
echo "make-node-image: $TAG ($("$NODE_DIR/bin/node" --version), npm $(npm --version))" >&2
