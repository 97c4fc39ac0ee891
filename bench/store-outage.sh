#!/usr/bin/env bash
# What a store outage costs a writing VM and the log: nbd-vault serves a volume on the S3 store
# of the test env (. .nbd-vault-test/rgw/s3.env) through bench/outage-proxy.mjs; fio writes 4k at
# random (QD8, an fsync every 64 writes) for 75 s; the store goes away for OUTAGE s (default 30)
# 10 s in. Prints fio's result and the server's log lines by level and message.
#   usage: bash bench/store-outage.sh [OUTAGE_SECONDS]
set -euo pipefail
outage=${1:-30}
repo=$(cd "$(dirname "$0")/.." && pwd)
: "${NBD_VAULT_TEST_S3_URL:?source .nbd-vault-test/rgw/s3.env first}"
target=$(sed -E 's|.*endpoint=http://127\.0\.0\.1:([0-9]+).*|\1|' <<<"$NBD_VAULT_TEST_S3_URL")
proxy_port=17600 nbd_port=17601
work=$(mktemp -d /tmp/nbd-vault-outage-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
export NBD_VAULT_KEYS=$work/keys NBD_VAULT_STATE=$work/state
export NBD_VAULT_STORE="s3://nbd-vault-test/outage-$RANDOM?endpoint=http://127.0.0.1:$proxy_port&region=us-east-1&path_style=true"
cli() { node "$repo/bin/nbd-vault.js" "$@"; }
node "$repo/bench/outage-proxy.mjs" $proxy_port "$target" >"$work/proxy.log" & proxy=$!
sleep 1
cli keys init >/dev/null 2>&1
cli init >/dev/null
cli volume create vm --size 256M >/dev/null
node "$repo/bin/nbd-vault.js" serve --listen 127.0.0.1:$nbd_port --log-format json >"$work/serve.log" 2>&1 & server=$!
for _ in $(seq 50); do grep -q '"msg":"listening"' "$work/serve.log" && break; sleep 0.2; done
fio --name=w --ioengine=nbd --uri=nbd://127.0.0.1:$nbd_port/vm --rw=randwrite --bs=4k --iodepth=8 \
  --time_based --runtime=75 --size=256M --fsync=64 >"$work/fio.log" 2>&1 & fio=$!
sleep 10; kill -USR1 $proxy; sleep "$outage"; kill -USR1 $proxy
wait $fio || true
kill -TERM $server; wait $server || true
echo "store outage of ${outage}s under fio randwrite 4k QD8:"
grep -E 'err=|IOPS' "$work/fio.log" | sed 's/^ */  fio: /'
echo "  server log lines by level (30 info, 40 warn, 50 error):"
grep -o '"level":[0-9]*' "$work/serve.log" | sort | uniq -c | sed 's/^/   /'
echo "  by message:"
grep -o '"msg":"[^"]*"' "$work/serve.log" | sort | uniq -c | sort -rn | sed 's/^/   /'
