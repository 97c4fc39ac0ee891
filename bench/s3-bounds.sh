#!/bin/bash
# What bounds an import to S3 and a cold 4k random read from it: imports the corpus into a vault
# on the tests' S3 server (NBD_VAULT_TEST_S3_URL and AWS_* from `. .nbd-vault-test/rgw/s3.env`),
# lets compaction fold the journals, restarts `serve` (cold read cache) and runs fio 4k randread
# QD32 for RUNTIME s (10). Prints the import's MB/s and the IOPS, each with the cores every
# process used meanwhile: the server by thread, radosgw, ceph-osd, and the whole machine.
# PERF=1 also records the server's threads during the reads (perf record -g, node
# --perf-basic-prof) into $ROOT/perf.data. SERVE_ARGS: extra `serve` options (e.g. --dirty-limit 128M).
# PEER=1 first imports the corpus through nbdkit's S3 plugin (issue 10's S3 peer: Debian's python
# plugin, object-size=4M, patched to advertise a 1-byte minimum block size) into the same bucket,
# with the same accounting, so the two imports' CPU per party compare in one run.
# The volume is deleted at the end (KEEP=1 keeps it).
#   bench/s3-bounds.sh
set -euo pipefail
: "${NBD_VAULT_TEST_S3_URL:?source .nbd-vault-test/rgw/s3.env first}"
CLI=$(cd "$(dirname "$0")/.." && pwd)/bin/nbd-vault.js
CORPUS=${CORPUS:-/tmp/bench/corpus.img}
ROOT=${TMPDIR:-/tmp}/s3-bounds
PORT=10840
SERVE_ARGS=${SERVE_ARGS:-}
rm -rf "$ROOT"; mkdir -p "$ROOT"
export NBD_VAULT_STORE="$(echo "$NBD_VAULT_TEST_S3_URL" | sed "s#?#/s3-bounds-$$?#")"
export NBD_VAULT_STATE=$ROOT/state NBD_VAULT_KEYS=$ROOT/keys
node "$CLI" keys init >/dev/null; node "$CLI" init >/dev/null; node "$CLI" volume create bench --size 1G >/dev/null
sample() { # "name ticks" per process (the server by thread), then the machine's busy ticks
  for t in /proc/$pid/task/*; do echo "server-$(tr ' ' _ < $t/comm) $(awk '{print $14+$15}' $t/stat)"; done
  for p in $(pgrep -x radosgw) $(pgrep -x ceph-osd); do echo "$(cat /proc/$p/comm) $(awk '{print $14+$15}' /proc/$p/stat)"; done
  awk 'NR==1 {print "machine", $2+$3+$4+$7+$8}' /proc/stat
}
cores() { # cores each used between the samples $1 and $2, over $3 seconds
  join <(awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' "$1" | sort) <(awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' "$2" | sort) |
    awk -v dt="$3" '{d = ($3 - $2) / 100 / dt; if (d >= 0.01) printf "  %-28s %.2f cores  %.2f CPU s\n", $1, d, ($3 - $2) / 100}'
}
if [ -n "${PEER:-}" ]; then
  plugin=$ROOT/nbdkit-S3-plugin-minblock1
  sed 's/^    return (cfg.obj_size, cfg.obj_size, cfg.obj_size)$/    return (1, cfg.obj_size, 0xffffffff)/' \
    /usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-S3-plugin > "$plugin"
  grep -q 'return (1, cfg.obj_size, 0xffffffff)' "$plugin" || { echo "s3-bounds: could not patch the S3 plugin" >&2; exit 1; }
  u=${NBD_VAULT_TEST_S3_URL#s3://}; bucket=${u%%/*}; endpoint=$(echo "$u" | sed 's/.*endpoint=\([^&]*\).*/\1/')
  ppfx="s3-bounds-peer-$$"
  AWS_DEFAULT_REGION=us-east-1 nbdkit -f -i 127.0.0.1 -p $((PORT + 1)) python "$plugin" endpoint-url="$endpoint" bucket="$bucket" \
    key="$ppfx/vol" size=1073741824 object-size=4M > "$ROOT/nbdkit.log" 2>&1 & pid=$!
  sleep 3
  sample > "$ROOT/before"; t0=$(date +%s.%N)
  nbdcopy --flush "$CORPUS" nbd://127.0.0.1:$((PORT + 1))
  sample > "$ROOT/after"; t1=$(date +%s.%N)
  echo "import (nbdcopy --flush) through nbdkit's S3 plugin: $(echo "$(stat -c %s "$CORPUS") / 1000000 / ($t1 - $t0)" | bc) MB/s, $(echo "$t1 - $t0" | bc) s"
  cores "$ROOT/before" "$ROOT/after" "$(echo "$t1 - $t0" | bc)"
  kill $pid; wait $pid || true
  /usr/bin/python3 -c 'import boto3,sys; boto3.resource("s3",endpoint_url=sys.argv[1]).Bucket(sys.argv[2]).objects.filter(Prefix=sys.argv[3]).delete()' \
    "$endpoint" "$bucket" "$ppfx/" || echo "s3-bounds: could not delete the plugin's objects (under $ppfx/)"
fi
node "$CLI" serve --listen 127.0.0.1:$PORT $SERVE_ARGS > "$ROOT/serve.log" 2>&1 & pid=$!
sleep 3
sample > "$ROOT/before"; t0=$(date +%s.%N)
nbdcopy --flush "$CORPUS" nbd://127.0.0.1:$PORT/bench
sample > "$ROOT/after"; t1=$(date +%s.%N)
echo "import (nbdcopy --flush) to S3: $(echo "$(stat -c %s "$CORPUS") / 1000000 / ($t1 - $t0)" | bc) MB/s, $(echo "$t1 - $t0" | bc) s"
cores "$ROOT/before" "$ROOT/after" "$(echo "$t1 - $t0" | bc)"
sleep 40 # compaction folds the import's journals
kill $pid; wait $pid || true
node ${PERF:+--perf-basic-prof} "$CLI" serve --listen 127.0.0.1:$PORT $SERVE_ARGS >> "$ROOT/serve.log" 2>&1 & pid=$!
sleep 3
sample > "$ROOT/before"; t0=$(date +%s.%N)
[ -n "${PERF:-}" ] && { perf record -F 999 -g -t $pid -o "$ROOT/perf.data" 2>/dev/null & pp=$!; }
iops=$(fio --ioengine=nbd --uri=nbd://127.0.0.1:$PORT/bench --name=r --size=1G --rw=randread --bs=4k --iodepth=32 --runtime=${RUNTIME:-10} --time_based --norandommap --randrepeat=0 --output-format=terse 2>/dev/null | tail -1 | cut -d';' -f8)
[ -n "${PERF:-}" ] && { kill -INT $pp; wait $pp || true; }
sample > "$ROOT/after"; t1=$(date +%s.%N)
echo "4k randread QD32, cold, S3: $iops IOPS"
cores "$ROOT/before" "$ROOT/after" "$(echo "$t1 - $t0" | bc)"
kill $pid; wait $pid || true
# the test RGW keeps objects in a 2 GiB memstore: give it back what this run stored
[ -n "${KEEP:-}" ] || node "$CLI" volume delete bench --yes > /dev/null 2>&1 || echo "s3-bounds: could not delete the volume (objects stay under $NBD_VAULT_STORE)"
