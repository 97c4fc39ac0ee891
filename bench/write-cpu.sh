#!/bin/bash
# What a large write costs the server, builds alternating: each pass makes a fresh vault and volume
# in a local fs store, starts `serve`, and writes 1 GiB: fio's 1 MiB sequential writes (QD8,
# end_fsync: fio's own buffers, which compress poorly) or, with WORKLOAD=import, the corpus by
# `nbdcopy --flush`. Prints MB/s, the CPU seconds of the server's thread groups (main, codec
# workers, V8's collector, libuv's pool), its VmHWM and the bytes stored. Only ratios from one run
# compare.
#   bench/write-cpu.sh LABEL=PATH/TO/bin/nbd-vault.js ...
#   e.g. ROUNDS=3 bench/write-cpu.sh base=/work/wt/base/bin/nbd-vault.js new=bin/nbd-vault.js
# Env: WORKLOAD (seqwrite | import), ROUNDS (3), CORPUS (/tmp/bench/corpus.img).
set -euo pipefail
CORPUS=${CORPUS:-/tmp/bench/corpus.img}
ROOT=${TMPDIR:-/tmp}/write-cpu
PORT=10870
BUILDS=("$@")
[ ${#BUILDS[@]} -gt 0 ] || BUILDS=("now=$(cd "$(dirname "$0")/.." && pwd)/bin/nbd-vault.js")
export NBD_VAULT_STORE=file://$ROOT/store NBD_VAULT_STATE=$ROOT/state NBD_VAULT_KEYS=$ROOT/keys
cpu() { for t in /proc/$pid/task/*; do echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done | awk '{a[$1]+=$2} END {printf "main %.2f codec %.2f collector %.2f libuv %.2f", a["MainThread"]/100, a["WorkerThread"]/100, a["V8Worker"]/100, a["libuv-worker"]/100}'; }
for round in $(seq "${ROUNDS:-3}"); do
  for b in "${BUILDS[@]}"; do
    cli=${b#*=}
    rm -rf "$ROOT"; mkdir -p "$ROOT"
    node "$cli" keys init >/dev/null; node "$cli" init >/dev/null
    node "$cli" volume create bench --size 2G >/dev/null
    node "$cli" serve --listen 127.0.0.1:$PORT > "$ROOT/serve.log" 2>&1 & pid=$!
    for _ in $(seq 100); do nbdinfo --size nbd://127.0.0.1:$PORT/bench >/dev/null 2>&1 && break; sleep 0.1; done
    before=$(cpu)
    t0=$(date +%s.%N)
    if [ "${WORKLOAD:-seqwrite}" = import ]; then
      nbdcopy --flush "$CORPUS" nbd://127.0.0.1:$PORT/bench
      bytes=$(stat -c %s "$CORPUS")
    else
      fio --ioengine=nbd --uri=nbd://127.0.0.1:$PORT/bench --name=s --size=1G --rw=write --bs=1M --iodepth=8 --end_fsync=1 --output-format=terse >/dev/null 2>&1
      bytes=$((1 << 30))
    fi
    mbps=$(echo "$bytes / 1000000 / ($(date +%s.%N) - $t0)" | bc -l | cut -c1-6)
    after=$(cpu)
    # the thread groups' CPU during the write: after minus before, field by field
    used=$(paste -d' ' <(echo "$before" | tr ' ' '\n') <(echo "$after" | tr ' ' '\n') | awk 'NR % 2 == 1 {printf "%s ", $1} NR % 2 == 0 {printf "%.2f ", $2 - $1}')
    echo "round $round ${b%%=*}: ${WORKLOAD:-seqwrite} $mbps MB/s | CPU s: $used| VmHWM $(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status) MiB | stored $(du -sm "$ROOT/store" | cut -f1) MB"
    kill $pid; wait $pid 2>/dev/null || true
  done
done
