#!/bin/bash
# Peak RSS of `serve --memory-limit LIMIT` under plain sequential readers: 4 volumes of 256 MiB of
# random data, then two rounds of 8 `nbdcopy … null:` at once (two per volume). Issue 10's bound is
# peak RSS <= the limit + 150 MiB. Prints VmHWM after each round and the collections the server
# started for the shared memory it dropped (src/util/collector-nudge.ts).
#   bench/readers-rss.sh [LIMIT=256M]
set -euo pipefail
LIMIT=${1:-256M}; PORT=10860
CLI=$(cd "$(dirname "$0")/.." && pwd)/bin/nbd-vault.js
D=${TMPDIR:-/tmp}/readers-rss; rm -rf "$D"; mkdir -p "$D"
export NBD_VAULT_STORE=$D/store NBD_VAULT_KEYS=$D/keys NBD_VAULT_STATE=$D/state
node "$CLI" keys init >/dev/null; node "$CLI" init >/dev/null
for i in 0 1 2 3; do node "$CLI" volume create v$i --size 256M >/dev/null; done
head -c 256M /dev/urandom > "$D/img"
node "$CLI" serve --listen 127.0.0.1:$PORT --memory-limit "$LIMIT" --metrics 127.0.0.1:$((PORT + 1)) --log-format json > "$D/serve.log" 2>&1 & P=$!
trap 'kill -TERM $P 2>/dev/null; wait $P 2>/dev/null || true; rm -rf "$D"' EXIT
until grep -q '"msg":"listening"' "$D/serve.log"; do sleep 0.2; done
for i in 0 1 2 3; do nbdcopy "$D/img" nbd://127.0.0.1:$PORT/v$i; done
hwm() { awk '/VmHWM/ {print int($2/1024)}' /proc/$P/status; }
# mid-round: what the budget holds beside what the process holds
sample() {
  curl -s 127.0.0.1:$((PORT + 1))/metrics | awk '/^nbd_vault_memory_used_bytes / {u=$2} /^nbd_vault_read_cache_bytes/ {c+=$2} /^nbd_vault_decode_buffers_free_bytes/ {f+=$2}
    END {printf "budget used %d MiB (read caches %d, free decode buffers %d)", u/2^20, c/2^20, f/2^20}'
  echo ", VmRSS $(awk '/VmRSS/ {print int($2/1024)}' /proc/$P/status) MiB"
}
echo "limit $LIMIT: after writing 4 x 256 MiB, VmHWM $(hwm) MiB"
for round in 1 2; do
  t0=$(date +%s.%N); R=""
  for i in 0 1 2 3; do nbdcopy nbd://127.0.0.1:$PORT/v$i null: & R="$R $!"; nbdcopy nbd://127.0.0.1:$PORT/v$i null: & R="$R $!"; done
  sleep 2; echo "round $round, 2 s in: $(sample)"
  wait $R
  echo "round $round: 8 readers x 256 MiB in $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5) s, VmHWM $(hwm) MiB"
done
curl -s 127.0.0.1:$((PORT + 1))/metrics | grep -E '^nbd_vault_collections_nudged_total' || true
