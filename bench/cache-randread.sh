#!/bin/bash
# 4k random reads (fio nbd engine, QD32) through a read cache of a given size, builds alternating:
# the corpus is imported once (and compacted) into a local fs store, then each pass runs on a fresh
# `serve --read-cache SIZE` (an empty cache). Prints IOPS, the CPU seconds of the server's thread
# groups (main, codec workers, V8's collector) and its VmHWM. A cache smaller than the corpus's
# decoded data (~700 MB) evicts: every miss opens a 128 KiB frame. Only ratios from one run compare.
#   bench/cache-randread.sh LABEL=PATH/TO/bin/nbd-vault.js ...
#   e.g. RC=64M ROUNDS=3 bench/cache-randread.sh base=/work/wt/base/bin/nbd-vault.js new=bin/nbd-vault.js
# Env: RC (read cache, 64M), ROUNDS (2), SECONDS_PER_PASS (10), BS (4k), CORPUS (/tmp/bench/corpus.img).
set -euo pipefail
CORPUS=${CORPUS:-/tmp/bench/corpus.img}
ROOT=${TMPDIR:-/tmp}/cache-randread
PORT=10860
BUILDS=("$@")
[ ${#BUILDS[@]} -gt 0 ] || BUILDS=("now=$(cd "$(dirname "$0")/.." && pwd)/bin/nbd-vault.js")
export NBD_VAULT_STORE=file://$ROOT/store NBD_VAULT_STATE=$ROOT/state NBD_VAULT_KEYS=$ROOT/keys
serve() { node "$1" serve --listen 127.0.0.1:$PORT "${@:2}" > "$ROOT/serve.log" 2>&1 & pid=$!; for _ in $(seq 100); do nbdinfo --size nbd://127.0.0.1:$PORT/bench >/dev/null 2>&1 && return; sleep 0.1; done; echo "serve did not start"; exit 1; }
cpu() { for t in /proc/$pid/task/*; do echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done | awk '{a[$1]+=$2} END {printf "main %.1f codec %.1f collector %.1f", a["MainThread"]/100, a["WorkerThread"]/100, a["V8Worker"]/100}'; }
if [ ! -d "$ROOT/store" ]; then
  mkdir -p "$ROOT"; first=${BUILDS[0]#*=}
  node "$first" keys init >/dev/null; node "$first" init >/dev/null
  node "$first" volume create bench --size "$(stat -c %s "$CORPUS")" >/dev/null
  serve "$first"; nbdcopy --flush "$CORPUS" nbd://127.0.0.1:$PORT/bench
  sleep 15 # idle: compaction folds the import's journals
  kill $pid; wait $pid 2>/dev/null || true
fi
for round in $(seq "${ROUNDS:-2}"); do
  for b in "${BUILDS[@]}"; do
    serve "${b#*=}" --read-cache "${RC:-64M}"
    iops=$(fio --ioengine=nbd --uri=nbd://127.0.0.1:$PORT/bench --name=r --size="$(stat -c %s "$CORPUS")" --rw=randread --bs="${BS:-4k}" --iodepth=32 \
      --runtime="${SECONDS_PER_PASS:-10}" --time_based --norandommap --randrepeat=0 --output-format=terse 2>/dev/null | tail -1 | cut -d';' -f8)
    echo "round $round ${b%%=*}: $iops IOPS | CPU s: $(cpu) | VmHWM $(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status) MiB"
    kill $pid; wait $pid 2>/dev/null || true
  done
done
