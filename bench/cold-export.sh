#!/bin/bash
# Cold exports of the corpus, each build on a fresh `serve` (empty read cache), builds alternating
# over ROUNDS rounds (default 2): prints the MB/s of EXPORTS exports in a row per server (default
# 2: the first cold, the second after the stream area passed), the CPU seconds the server's
# threads used meanwhile (codec workers, V8's collector, main thread, libuv) and its VmHWM.
# The volume is imported (nbdcopy --flush) and compacted once, with the first build.
# IMPORT=1 measures imports instead: each build imports the corpus into a fresh volume on a fresh
# server (MB/s, CPU by thread, page faults, VmHWM, MB stored); IMPORTS=N (default 1) imports N times in
# a row on that server, each into a fresh volume: the first pays the server's first touch of its
# memory, the later ones show a warm server. SEQWRITE=1 likewise writes the whole volume
# with fio (1M sequential writes, QD8, end_fsync; fio's own buffers, which compress poorly).
#   bench/cold-export.sh LABEL=PATH/TO/bin/nbd-vault.js ...
#   e.g. bench/cold-export.sh base=/work/wt/base/bin/nbd-vault.js new=bin/nbd-vault.js
set -euo pipefail
CORPUS=${CORPUS:-/tmp/bench/corpus.img}
ROOT=${TMPDIR:-/tmp}/cold-export
PORT=10850
BUILDS=("$@")
[ ${#BUILDS[@]} -gt 0 ] || BUILDS=("now=$(cd "$(dirname "$0")/.." && pwd)/bin/nbd-vault.js")
rm -rf "$ROOT"; mkdir -p "$ROOT"
export NBD_VAULT_STORE=file://$ROOT/store NBD_VAULT_STATE=$ROOT/state NBD_VAULT_KEYS=$ROOT/keys
first=${BUILDS[0]#*=}
node "$first" keys init >/dev/null; node "$first" init >/dev/null; node "$first" volume create bench --size "$(stat -c %s "$CORPUS")" >/dev/null
serve() { node "$1" serve --listen 127.0.0.1:$PORT > "$ROOT/serve.log" 2>&1 & pid=$!; for _ in $(seq 100); do nbdinfo --size nbd://127.0.0.1:$PORT/bench >/dev/null 2>&1 && return; sleep 0.1; done; echo "serve did not start"; exit 1; }
ticks() { for t in /proc/$pid/task/*; do echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14+$15}' "$t/stat")"; done | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort; }
faults() { awk '{print $10}' /proc/$pid/stat; } # minor faults of every thread
cpu() { join "$ROOT/before" "$ROOT/after" | awk '{d = ($3 - $2) / 100; if (d >= 0.02) printf " %s %.2f", $1, d}'; }
mbps() { echo "$(stat -c %s "$CORPUS") / 1000000 / ($(date +%s.%N) - $1)" | bc; }
if [ -n "${IMPORT:-}${SEQWRITE:-}" ]; then
  for round in $(seq "${ROUNDS:-2}"); do
    for b in "${BUILDS[@]}"; do
      label=${b%%=*}
      for k in $(seq "${IMPORTS:-1}"); do
        node "${b#*=}" volume delete bench$k --yes >/dev/null 2>&1 || true
        node "${b#*=}" volume create bench$k --size "$(stat -c %s "$CORPUS")" >/dev/null
      done
      node "${b#*=}" volume delete bench --yes >/dev/null 2>&1 || true
      node "${b#*=}" volume create bench --size "$(stat -c %s "$CORPUS")" >/dev/null
      serve "${b#*=}"
      for k in $(seq "${IMPORTS:-1}"); do
      vol=bench; [ -n "${SEQWRITE:-}" ] || vol=bench$k
      ticks > "$ROOT/before"; f0=$(faults); t0=$(date +%s.%N)
      if [ -n "${SEQWRITE:-}" ]; then
        fio --name=seqwrite --ioengine=nbd --uri=nbd://127.0.0.1:$PORT/bench --rw=write --bs=1M --iodepth=8 --end_fsync=1 \
          --size="$(stat -c %s "$CORPUS")" --output-format=json --output="$ROOT/fio.json" >/dev/null
        line="round $round $label: seqwrite $(mbps "$t0") MB/s"
      else
        nbdcopy --flush "$CORPUS" nbd://127.0.0.1:$PORT/$vol
        line="round $round $label: import $k $(mbps "$t0") MB/s"
      fi
      ticks > "$ROOT/after"
      echo "$line | CPU s:$(cpu) | page faults $(( $(faults) - f0 )) | VmHWM $(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status) MiB | stored $(du -sm --exclude="~reserve" "$ROOT/store" | cut -f1) MB"
      [ -z "${SEQWRITE:-}" ] || break
      done
      kill $pid; wait $pid || true
    done
  done
  exit 0
fi
serve "$first"
nbdcopy --flush "$CORPUS" nbd://127.0.0.1:$PORT/bench
sleep 45 # compaction folds the import's journals
kill $pid; wait $pid || true
for round in $(seq "${ROUNDS:-2}"); do
  for b in "${BUILDS[@]}"; do
    label=${b%%=*}; serve "${b#*=}"
    ticks > "$ROOT/before"; line="round $round $label:"
    for n in $(seq "${EXPORTS:-2}"); do
      t0=$(date +%s.%N)
      nbdcopy nbd://127.0.0.1:$PORT/bench null:
      line="$line export$n $(mbps "$t0") MB/s"
    done
    ticks > "$ROOT/after"
    echo "$line | CPU s:$(cpu) | VmHWM $(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status) MiB"
    kill $pid; wait $pid || true
  done
done
