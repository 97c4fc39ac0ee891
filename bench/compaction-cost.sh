#!/bin/bash
# What compaction costs after 8 volumes take 15 s of 4k random writes (fio, QD8 each): the time
# until every journal is folded (compaction starts after 10 s idle), the store reads it made, and
# the server's peak VmRSS meanwhile (sampled each second) and VmHWM.
#   bench/compaction-cost.sh LABEL PATH/TO/bin/nbd-vault.js
label=$1; cli=$2
d=${TMPDIR:-/tmp}/compaction-cost/$label; rm -rf $d; mkdir -p $d
export NBD_VAULT_STORE=$d/store NBD_VAULT_STATE=$d/state NBD_VAULT_KEYS=$d/keys
node $cli keys init >/dev/null 2>&1; node $cli init >/dev/null 2>&1; for n in v1 v2 v3 v4 v5 v6 v7 v8; do node $cli volume create $n --size 1G >/dev/null; done
node $cli serve --listen 127.0.0.1:10930 --metrics 127.0.0.1:10931 > $d/serve.log 2>&1 &
pid=$!; sleep 3
jobs=""; for n in v1 v2 v3 v4 v5 v6 v7 v8; do jobs="$jobs --name=$n --uri=nbd://127.0.0.1:10930/$n"; done
fio --ioengine=nbd --size=1G --rw=randwrite --bs=4k --iodepth=8 --end_fsync=1 --runtime=15 --time_based --norandommap --randrepeat=0 --group_reporting --output-format=terse $jobs >/dev/null 2>&1
m() { curl -s 127.0.0.1:10931/metrics; }
reads0=$(m | awk '/^nbd_vault_store_requests_total\{op="get/ {s+=$2} END {print s+0}')
t0=$(date +%s.%N); peak=0
while :; do
  jb=$(m | awk '/^nbd_vault_journal_blocks/ {s+=$2} END {print s+0}')
  r=$(grep VmRSS /proc/$pid/status | awk '{print int($2/1024)}'); [ $r -gt $peak ] && peak=$r
  [ "$jb" = "0" ] && break
  sleep 1
  [ $(echo "$(date +%s.%N) - $t0 > 240" | bc) = 1 ] && { echo "timeout jb=$jb"; break; }
done
reads1=$(m | awk '/^nbd_vault_store_requests_total\{op="get/ {s+=$2} END {print s+0}')
echo "$label: all journals folded $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5) s after the writes (incl. 10 s idle wait), store reads $((reads1-reads0)), peak VmRSS $peak MiB, hwm $(grep VmHWM /proc/$pid/status | awk '{print int($2/1024)}')"
kill $pid; wait $pid 2>/dev/null
