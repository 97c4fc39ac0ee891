#!/bin/bash
# Peak memory by phase, several server variants side by side: each phase (import, export, 4k
# randread, 4k randwrite, 1M seqwrite, 8 volumes of 4k randwrite) runs on every variant back to
# back, so a load change on the shared machine hits all of them. Prints the figure, VmRSS and
# VmHWM (MiB) per phase and variant.
#   bench/memory-phases.sh "LABEL|ENV=VALUE ...|SERVE ARGS|PATH TO bin/nbd-vault.js" ...
#   e.g. bench/memory-phases.sh "glibc|X=1" "arena2|MALLOC_ARENA_MAX=2" "rc384|X=1|--read-cache 384M"
# Env: PHASES (default: import export randread randwrite seqwrite multi), CORPUS (/tmp/bench/corpus.img).
CLI=$(cd "$(dirname "$0")/.." && pwd)/bin/nbd-vault.js
CORPUS=${CORPUS:-/tmp/bench/corpus.img}
VARIANTS=("$@")   # each: "label|ENV=... ENV2=..."
declare -A PIDS PORTS
i=0
for v in "${VARIANTS[@]}"; do
  label=${v%%|*}; rest=${v#*|}; envs=${rest%%|*}; args=${rest#*|}; [ "$args" = "$rest" ] && args=""; cli=${args#*|}; [ "$cli" = "$args" ] && cli=$CLI; args=${args%%|*}
  d=${TMPDIR:-/tmp}/memory-phases/$label; rm -rf $d; mkdir -p $d
  export NBD_VAULT_STORE=$d/store NBD_VAULT_STATE=$d/state NBD_VAULT_KEY_FILE=$d/master.key
  node $cli keys init >/dev/null 2>&1; node $cli init >/dev/null 2>&1; for n in bench vm2 vm3 vm4 vm5 vm6 vm7 vm8; do node $cli volume create $n --size 1G >/dev/null; done
  port=$((10820+i)); i=$((i+1))
  env $envs node $cli serve --listen 127.0.0.1:$port $args > $d/serve.log 2>&1 &
  PIDS[$label]=$!; PORTS[$label]=$port
done
sleep 4
hwm() { grep VmHWM /proc/$1/status | awk '{print int($2/1024)}'; }
rss() { grep VmRSS /proc/$1/status | awk '{print int($2/1024)}'; }
for phase in ${PHASES:-import export randread randwrite seqwrite multi}; do
  for v in "${VARIANTS[@]}"; do
    label=${v%%|*}; pid=${PIDS[$label]}; uri=nbd://127.0.0.1:${PORTS[$label]}/bench
    t0=$(date +%s.%N)
    case $phase in
      import) nbdcopy --flush $CORPUS $uri; fig=$(echo "1073.741824/($(date +%s.%N)-$t0)" | bc -l | cut -c1-6)" MB/s";;
      export) nbdcopy $uri ${TMPDIR:-/tmp}/memory-phases/out.img; fig=$(echo "1073.741824/($(date +%s.%N)-$t0)" | bc -l | cut -c1-6)" MB/s"; rm -f ${TMPDIR:-/tmp}/memory-phases/out.img;;
      randread) fig=$(fio --ioengine=nbd --uri=$uri --name=r --size=1G --rw=randread --bs=4k --iodepth=32 --runtime=10 --time_based --norandommap --randrepeat=0 --output-format=terse 2>/dev/null | tail -1 | cut -d';' -f8)" IOPS";;
      randwrite) fig=$(fio --ioengine=nbd --uri=$uri --name=w --size=1G --rw=randwrite --bs=4k --iodepth=32 --end_fsync=1 --runtime=10 --time_based --norandommap --randrepeat=0 --output-format=terse 2>/dev/null | tail -1 | cut -d';' -f49)" IOPS";;
      multi) jobs=""; for n in bench vm2 vm3 vm4 vm5 vm6 vm7 vm8; do jobs="$jobs --name=$n --uri=nbd://127.0.0.1:${PORTS[$label]}/$n"; done
        fig=$(fio --ioengine=nbd --size=1G --rw=randwrite --bs=4k --iodepth=8 --end_fsync=1 --runtime=15 --time_based --norandommap --randrepeat=0 --group_reporting --output-format=terse $jobs 2>/dev/null | tail -1 | cut -d';' -f49)" IOPS";;
      seqwrite) fig=$(fio --ioengine=nbd --uri=$uri --name=s --size=1G --rw=write --bs=1M --iodepth=8 --end_fsync=1 --runtime=20 --output-format=terse 2>/dev/null | tail -1 | cut -d';' -f48)" KB/s";;
    esac
    echo "$phase $label: ${fig} rss=$(rss $pid) hwm=$(hwm $pid)"
  done
done
# where the resident memory is: the main thread's malloc heap, the other anonymous mappings
# (other threads' malloc arenas, V8's heap), and the files mapped (the node binary, libraries)
for v in "${VARIANTS[@]}"; do
  label=${v%%|*}
  awk -v l="$label" '/^[0-9a-f]+-[0-9a-f]+ /{name=$6} /^Rss:/{ if (name=="[heap]") h+=$2; else if (name=="") a+=$2; else f+=$2 } END {printf "smaps %s: main malloc heap %d MiB, other anonymous %d MiB, files %d MiB\n", l, h/1024, a/1024, f/1024}' /proc/${PIDS[$label]}/smaps
done
for v in "${VARIANTS[@]}"; do label=${v%%|*}; kill ${PIDS[$label]}; done; wait
