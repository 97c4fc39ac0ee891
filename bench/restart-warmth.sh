#!/bin/bash
# What a restart costs a warm disk cache, separated: 4k random reads (fio nbd engine, QD32) on the
# bench/ab-randread.sh volume (run that first: it makes $AB_DIR) in a local fs store under a 2 GiB
# disk cache, with a 256 MiB RAM budget. Per round: the pass on the server that ran `cache warm`;
# then fresh servers: the first pass at once, the pass after a 2 s pre-pass, the first pass after
# 10 s idle. Nothing is read from the store after a restart (the disk cache holds everything).
#
#   bench/restart-warmth.sh [ROUNDS]        Env: AB_DIR (/tmp/nbd-vault-ab), AB_SECONDS (8)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${AB_DIR:-/tmp/nbd-vault-ab}; SECS=${AB_SECONDS:-8}; PORT=10971; ROUNDS=${1:-2}
[ -d "$DIR/vault" ] || { echo "restart-warmth: no volume in $DIR: run bench/ab-randread.sh first" >&2; exit 2; }
export NBD_VAULT_STORE=$DIR/vault NBD_VAULT_KEYS=$DIR/keys NBD_VAULT_STATE=$DIR/state-r NBD_VAULT_LOG_LEVEL=warn
rm -rf "$DIR/state-r" "$DIR/dc-r"; cp -r "$DIR/state" "$DIR/state-r"
start() {
  node "$ROOT/bin/nbd-vault.js" serve --listen "127.0.0.1:$PORT" --memory-limit 256M --read-cache 256M \
    --disk-cache "$DIR/dc-r" --disk-cache-size 2G >"$DIR/serve-r.log" 2>&1 &
  SP=$!
  for _ in $(seq 150); do nbdinfo --size "nbd://127.0.0.1:$PORT/vol" >/dev/null 2>&1 && break; sleep 0.2; done
}
stop() { kill -INT "$SP"; wait "$SP" 2>/dev/null || true; }
pass() {
  fio --name=rr --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/vol" --rw=randread --bs=4k --iodepth=32 --size=1024M \
    --time_based --runtime="$1" --randrepeat=0 --output-format=json 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; d=sys.stdin.read(); print(round(json.loads(d[d.index("{"):])["jobs"][0]["read"]["iops"]))'
}
ratio() { /usr/bin/python3 -c "print('%d (%.2f)' % ($1, $1 / $2))"; }
echo "restart-warmth: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), git $(git -C "$ROOT" rev-parse --short HEAD), ${SECS} s passes"
for r in $(seq "$ROUNDS"); do
  start; node "$ROOT/bin/nbd-vault.js" cache warm vol >/dev/null; warm=$(pass "$SECS"); stop
  start; first=$(pass "$SECS"); stop
  start; pass 2 >/dev/null; pre=$(pass "$SECS"); stop
  start; sleep 10; idle=$(pass "$SECS"); stop
  echo "  round $r: warm $warm | first after a restart $(ratio "$first" "$warm") | after a 2 s pre-pass $(ratio "$pre" "$warm") | after 10 s idle $(ratio "$idle" "$warm")"
done
