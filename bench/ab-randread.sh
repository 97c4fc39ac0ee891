#!/bin/bash
# A/B of 4k random reads (fio nbd engine, QD32) against two builds of nbd-vault, alternating, on
# one 1 GiB volume of random data in a local fs store, each pass on a fresh server with a 256 MiB
# RAM budget (three reads in four miss the RAM cache and open a 128 KiB frame). With --disk-cache
# the passes read through a warm disk cache (`cache warm` first) instead of the fs store. Only
# ratios from one run compare (2 shared cores).
#
#   bench/ab-randread.sh BASE_TREE NEW_TREE [ROUNDS] [--disk-cache]
#   e.g.: git worktree add --detach /work/wt/base HEAD~2 && (cd /work/wt/base && cp -al ../../main/node_modules . && npm run build)
#         bench/ab-randread.sh /work/wt/base . 3 --disk-cache
# Env: AB_DIR (/tmp/nbd-vault-ab: the volume, keys and cache are kept there between runs),
#      AB_SECONDS (10 per pass).
set -euo pipefail
BASE=$(realpath "$1"); NEW=$(realpath "$2"); ROUNDS=${3:-2}; MODE=${4:-}
DIR=${AB_DIR:-/tmp/nbd-vault-ab}; SECS=${AB_SECONDS:-10}
export NBD_VAULT_STORE=$DIR/vault NBD_VAULT_KEYS=$DIR/keys NBD_VAULT_LOG_LEVEL=warn
mkdir -p "$DIR"
if [ ! -d "$DIR/vault" ]; then
  head -c 1073741824 /dev/urandom > "$DIR/rand.img"
  NBD_VAULT_STATE=$DIR/state node "$NEW/bin/nbd-vault.js" keys init >/dev/null
  NBD_VAULT_STATE=$DIR/state node "$NEW/bin/nbd-vault.js" init >/dev/null
  NBD_VAULT_STATE=$DIR/state node "$NEW/bin/nbd-vault.js" volume create --size 1G vol >/dev/null
  NBD_VAULT_STATE=$DIR/state node "$NEW/bin/nbd-vault.js" import "$DIR/rand.img" vol >/dev/null
  rm -f "$DIR/rand.img"
fi
EXTRA=()
if [ "$MODE" = --disk-cache ]; then
  EXTRA=(--disk-cache "$DIR/dc" --disk-cache-size 2G)
  [ -d "$DIR/dc" ] || NBD_VAULT_STATE=$DIR/state node "$NEW/bin/nbd-vault.js" cache warm vol "${EXTRA[@]}" >/dev/null
fi

pass() { # TREE PORT -> "IOPS p99"
  local tree=$1 port=$2 pid out
  rm -rf "$DIR/state-$port"; cp -r "$DIR/state" "$DIR/state-$port"
  NBD_VAULT_STATE=$DIR/state-$port node "$tree/bin/nbd-vault.js" serve --listen "127.0.0.1:$port" \
    --memory-limit 256M --read-cache 256M "${EXTRA[@]}" >"$DIR/serve-$port.log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do nbdinfo --size "nbd://127.0.0.1:$port/vol" >/dev/null 2>&1 && break; sleep 0.2; done
  out=$(fio --name=rr --ioengine=nbd --uri="nbd://127.0.0.1:$port/vol" --rw=randread --bs=4k --iodepth=32 \
    --size=1024M --time_based --runtime="$SECS" --randrepeat=0 --output-format=json 2>/dev/null)
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  /usr/bin/python3 -c 'import json,sys; d=sys.stdin.read(); r=json.loads(d[d.index("{"):])["jobs"][0]["read"]; print("%d IOPS, p99 %.1f ms" % (r["iops"], r["clat_ns"]["percentile"]["99.000000"]/1e6))' <<<"$out"
}

echo "ab-randread: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), ${MODE:-fs store}, ${SECS} s passes"
echo "  base $BASE ($(git -C "$BASE" rev-parse --short HEAD)), new $NEW ($(git -C "$NEW" rev-parse --short HEAD))"
for r in $(seq "$ROUNDS"); do
  echo "  round $r: base $(pass "$BASE" 10981) | new $(pass "$NEW" 10982)"
done
