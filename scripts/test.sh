#!/usr/bin/env bash
# The test command (README, .ci/run): on a fresh Debian 12 machine it installs the Debian tools the
# tests use and Node 24, installs npm dependencies, starts a throwaway Ceph RADOS Gateway on loopback for the
# S3 tests, runs `npm test` (every test, nothing skipped), and stops the gateway.
#   scripts/test.sh            everything
#   scripts/test.sh nbd store  only test files whose path contains one of the words
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-test-deps.sh
# The suite runs on Node 24 LTS (package.json engines: >=22), from the npm registry's binary package
# (scripts/install-node.sh, into .node/24); npm ci builds the native modules against its headers.
NODE_BIN=$(bash scripts/install-node.sh 24)
export PATH="$NODE_BIN:/usr/bin:$PATH" # Node 24 first; Debian's python3 (python3-libnbd) before any pyenv shim
export npm_config_nodedir="${NODE_BIN%/bin}"
echo "test.sh: node $(node --version), npm $(npm --version)" >&2
npm ci --no-audit --no-fund

RGW_DIR=.nbd-vault-test/rgw
RGW_PORT=${NBD_VAULT_TEST_RGW_PORT:-7480}
trap 'bash scripts/rgw.sh stop "$RGW_DIR" || true' EXIT
bash scripts/rgw.sh start "$RGW_DIR" "$RGW_PORT"
# shellcheck disable=SC1090,SC1091
. "$RGW_DIR/s3.env"

# In this run nothing may skip for lack of a tool or a service.
export NBD_VAULT_REQUIRE_S3=1 NBD_VAULT_REQUIRE_ALL=1
npm test -- "$@"
