#!/bin/bash
# Does compaction keep a reader's hot frames? Per build, on a fresh server: import the corpus,
# warm the read cache with 4k random reads over the first half of the volume, write 4k blocks at
# random over the second half (journals), wait while compaction folds them, and read the first
# half again. Prints both read passes' IOPS and the read cache's hits/misses of the last pass.
#   bench/compaction-cache.sh BASE_CHECKOUT NEW_CHECKOUT [ROUNDS]   (each built: dist/ present)
# Env: CORPUS (/tmp/bench/corpus.img), IDLE_SECONDS (30).
CORPUS=${CORPUS:-/tmp/bench/corpus.img}
ROOT=${TMPDIR:-/tmp}/compaction-cache
metric() { curl -s 127.0.0.1:10911/metrics | awk -v m="$1" '$1 ~ "^"m"\\{" || $1 == m {s += $2} END {print s + 0}'; }
randread() { fio --ioengine=nbd --uri=nbd://127.0.0.1:10910/bench --name=r --offset=0 --size=512M --rw=randread --bs=4k --iodepth=32 --runtime=8 --time_based --norandommap --randrepeat=0 --output-format=terse 2>/dev/null | tail -1 | cut -d';' -f8; }
run() { # label checkout round
  local d=$ROOT/$1 cli=$2/bin/nbd-vault.js pid
  rm -rf "$d"; mkdir -p "$d"
  export NBD_VAULT_STORE=$d/store NBD_VAULT_STATE=$d/state NBD_VAULT_KEYS=$d/keys
  node "$cli" keys init >/dev/null 2>&1; node "$cli" init >/dev/null 2>&1; node "$cli" volume create bench --size 1G >/dev/null
  node "$cli" serve --listen 127.0.0.1:10910 --metrics 127.0.0.1:10911 > "$d/serve.log" 2>&1 &
  pid=$!; sleep 3
  nbdcopy --flush "$CORPUS" nbd://127.0.0.1:10910/bench
  sleep "${IDLE_SECONDS:-30}" # the import's own compaction, if any, is over
  local warm after hits misses
  randread >/dev/null; warm=$(randread)
  fio --ioengine=nbd --uri=nbd://127.0.0.1:10910/bench --name=w --offset=512M --size=512M --rw=randwrite --bs=4k --iodepth=32 --runtime=8 --time_based --end_fsync=1 --norandommap --randrepeat=0 --output-format=terse >/dev/null 2>&1
  sleep "${IDLE_SECONDS:-30}"
  hits=$(metric nbd_vault_read_cache_hits_total); misses=$(metric nbd_vault_read_cache_misses_total)
  after=$(randread)
  echo "round $3 $1: warm ${warm} IOPS, after compaction ${after} IOPS; that pass's read cache hits $(( $(metric nbd_vault_read_cache_hits_total) - hits )), misses $(( $(metric nbd_vault_read_cache_misses_total) - misses ))"
  kill $pid; wait $pid 2>/dev/null
}
for round in $(seq 1 "${3:-1}"); do
  if [ $((round % 2)) -eq 1 ]; then run base "$1" $round; run new "$2" $round; else run new "$2" $round; run base "$1" $round; fi
done
