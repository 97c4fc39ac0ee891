#!/bin/bash
# Peak memory by phase for several server variants (allocator settings, cache sizes, builds).
# Each variant runs alone on a fresh server through every phase (import, export, 4k randread, 4k
# randwrite, 1M seqwrite, 8 volumes of 4k randwrite, then 30 s idle while compaction folds the
# journals), one variant at a time, and ROUNDS rounds alternate the order. Running servers side by
# side biased the figures by position: a server still compacting after its phase took the cores
# from the next one's. Prints the figure, VmRSS and VmHWM (MiB) per phase, variant and round, and
# where the resident memory sits at the end (smaps).
#   bench/memory-phases.sh "LABEL|ENV=VALUE ...|SERVE ARGS|PATH TO bin/nbd-vault.js" ...
#   e.g. bench/memory-phases.sh "glibc|X=1" "arena2|MALLOC_ARENA_MAX=2" "rc384|X=1|--read-cache 384M"
# Env: PHASES (default: import export randread randwrite seqwrite multi idle), ROUNDS (1),
#      CORPUS (/tmp/bench/corpus.img).
CLI=$(cd "$(dirname "$0")/.." && pwd)/bin/nbd-vault.js
CORPUS=${CORPUS:-/tmp/bench/corpus.img}
ROOT=${TMPDIR:-/tmp}/memory-phases
VARIANTS=("$@")   # each: "label|ENV=... ENV2=...|serve args|cli"

hwm() { grep VmHWM /proc/$1/status | awk '{print int($2/1024)}'; }
rss() { grep VmRSS /proc/$1/status | awk '{print int($2/1024)}'; }
mbps() { echo "1073.741824/($(date +%s.%N)-$1)" | bc -l | cut -c1-6; }

run_variant() { # variant round
  local v=$1 round=$2 label rest envs args cli d pid port=10820 uri
  label=${v%%|*}; rest=${v#*|}; envs=${rest%%|*}; args=${rest#*|}; [ "$args" = "$rest" ] && args=""
  cli=${args#*|}; [ "$cli" = "$args" ] && cli=$CLI; args=${args%%|*}
  d=$ROOT/$label; rm -rf "$d"; mkdir -p "$d"
  export NBD_VAULT_STORE=$d/store NBD_VAULT_STATE=$d/state NBD_VAULT_KEYS=$d/keys
  node "$cli" keys init >/dev/null 2>&1; node "$cli" init >/dev/null 2>&1
  for n in bench vm2 vm3 vm4 vm5 vm6 vm7 vm8; do node "$cli" volume create $n --size 1G >/dev/null; done
  env $envs node "$cli" serve --listen 127.0.0.1:$port $args > "$d/serve.log" 2>&1 &
  pid=$!
  sleep 3
  uri=nbd://127.0.0.1:$port/bench
  for phase in ${PHASES:-import export randread randwrite seqwrite multi idle}; do
    local t0 fig
    t0=$(date +%s.%N)
    case $phase in
      import) nbdcopy --flush "$CORPUS" $uri; fig="$(mbps $t0) MB/s";;
      export) nbdcopy $uri "$ROOT/out.img"; fig="$(mbps $t0) MB/s"; rm -f "$ROOT/out.img";;
      randread) fig=$(fio --ioengine=nbd --uri=$uri --name=r --size=1G --rw=randread --bs=4k --iodepth=32 --runtime=10 --time_based --norandommap --randrepeat=0 --output-format=terse 2>/dev/null | tail -1 | cut -d';' -f8)" IOPS";;
      randwrite) fig=$(fio --ioengine=nbd --uri=$uri --name=w --size=1G --rw=randwrite --bs=4k --iodepth=32 --end_fsync=1 --runtime=10 --time_based --norandommap --randrepeat=0 --output-format=terse 2>/dev/null | tail -1 | cut -d';' -f49)" IOPS";;
      seqwrite) fig=$(fio --ioengine=nbd --uri=$uri --name=s --size=1G --rw=write --bs=1M --iodepth=8 --end_fsync=1 --runtime=20 --output-format=terse 2>/dev/null | tail -1 | cut -d';' -f48)" KB/s";;
      multi) local jobs=""
        for n in bench vm2 vm3 vm4 vm5 vm6 vm7 vm8; do jobs="$jobs --name=$n --uri=nbd://127.0.0.1:$port/$n"; done
        fig=$(fio --ioengine=nbd --size=1G --rw=randwrite --bs=4k --iodepth=8 --end_fsync=1 --runtime=15 --time_based --norandommap --randrepeat=0 --group_reporting --output-format=terse $jobs 2>/dev/null | tail -1 | cut -d';' -f49)" IOPS";;
      idle) sleep 30; fig="30 s";;  # compaction starts after 10 s idle and folds every volume's journals
    esac
    echo "round $round $phase $label: ${fig} rss=$(rss $pid) hwm=$(hwm $pid)"
  done
  # where the resident memory is: the main thread's malloc heap, other threads' malloc arenas
  # (64 MiB heaps), the other anonymous mappings (V8's heaps, large buffers), the files mapped
  python3 - "$pid" "$label" "$round" <<'EOF'
import re, sys
pid, label, rnd = sys.argv[1:4]
sums = {'heap': 0, 'arenas': 0, 'anon': 0, 'files': 0}
start = size = name = None
for line in open(f'/proc/{pid}/smaps'):
    m = re.match(r'^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$', line)
    if m:
        start, size, name = int(m.group(1), 16), int(m.group(2), 16) - int(m.group(1), 16), m.group(3)
    elif line.startswith('Rss:'):
        kib = int(line.split()[1])
        # glibc's heaps of other threads' arenas: 64 MiB-aligned anonymous mappings of at most 64 MiB
        arena = name == '' and start % (64 << 20) == 0 and size <= 64 << 20
        kind = 'heap' if name == '[heap]' else 'arenas' if arena else 'anon' if name == '' or name.startswith('[') else 'files'
        sums[kind] += kib
print(f"round {rnd} smaps {label}: main malloc heap {sums['heap'] >> 10} MiB, thread arenas {sums['arenas'] >> 10} MiB, other anonymous {sums['anon'] >> 10} MiB, files {sums['files'] >> 10} MiB")
EOF
  kill $pid; wait $pid 2>/dev/null
}

for round in $(seq 1 "${ROUNDS:-1}"); do
  order=("${VARIANTS[@]}")
  if [ $((round % 2)) -eq 0 ]; then order=(); for ((k=${#VARIANTS[@]}-1; k>=0; k--)); do order+=("${VARIANTS[$k]}"); done; fi
  for v in "${order[@]}"; do run_variant "$v" "$round"; done
done
