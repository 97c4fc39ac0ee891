#!/usr/bin/env bash
# A throwaway one-node Ceph cluster (mon + memstore OSD) with a RADOS Gateway on 127.0.0.1, for the
# S3 store tests. Nothing here is secret: auth is off inside the cluster, and the S3 keys below are
# fixed test credentials for a loopback-only gateway whose data lives in memory.
#
#   scripts/rgw.sh start DIR PORT   start (or reuse a running one), create user and bucket, write DIR/s3.env
#   scripts/rgw.sh stop DIR         kill the daemons started in DIR (pid files), keep DIR
#   scripts/rgw.sh status DIR       exit 0 if the gateway in DIR answers HTTP
#
# Then: `. DIR/s3.env && node test/run.mjs store`. Progress goes to stderr.
# Needs radosgw, ceph-mon, ceph-osd (scripts/install-test-deps.sh) and node_modules (for the bucket).
set -euo pipefail

ACCESS_KEY=NBDVAULTTESTACCESSKEY
SECRET_KEY=nbd-vault-loopback-test-secret-not-a-real-one
BUCKET=nbd-vault-test
USER_ID=nbd-vault-test
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { echo "rgw.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

cmd=${1:-}; DIR=${2:-}
[ -n "$cmd" ] && [ -n "$DIR" ] || die "usage: rgw.sh start DIR PORT | stop DIR | status DIR"
mkdir -p "$DIR"; DIR="$(cd "$DIR" && pwd)"
CONF="$DIR/ceph.conf"
export CEPH_CONF="$CONF"

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

http_ok() { # any HTTP answer from the gateway counts
  local port; port=$(cat "$DIR/port" 2>/dev/null) || return 1
  node -e "require('http').get('http://127.0.0.1:$port/',r=>process.exit(0)).on('error',()=>process.exit(1)).setTimeout(2000,function(){this.destroy()})" 2>/dev/null
}

kill_wait() { # kill_wait PID: TERM, up to 5 s, then KILL
  kill "$1" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}

# Daemons started from this DIR's ceph.conf, found by their environment: a run that was killed
# (or a DIR wiped by hand) leaves daemons whose pid files are gone, and a stale monitor on our
# port answers for a cluster that is not the one being started.
daemons_of_dir() { # [NAME-REGEX]
  local p
  for p in $(pgrep -x "${1:-ceph-mon|ceph-osd|radosgw}" 2>/dev/null); do
    ours "$p" && echo "$p"
  done
  return 0
}
ours() { grep -qxF "CEPH_CONF=$CONF" < <(tr "\\0" "\\n" 2>/dev/null < "/proc/$1/environ"); } # PID runs from this DIR

stop_all() {
  local f p
  for f in "$DIR"/run/client.rgw.*.pid "$DIR"/run/osd.*.pid "$DIR"/run/mon.*.pid; do
    [ -f "$f" ] || continue
    # a pid file can outlive its daemon (SIGKILL, reboot) and name a reused pid: only ours is killed
    if ours "$(cat "$f")"; then kill_wait "$(cat "$f")"; fi
    rm -f "$f"
  done
  for p in $(daemons_of_dir); do say "stopping stale daemon $p"; kill_wait "$p"; done
}

port_free() { # nobody listens on 127.0.0.1:PORT
  node -e "const s=require('net').createServer();s.once('error',()=>process.exit(1));s.listen($1,'127.0.0.1',()=>s.close(()=>process.exit(0)))" 2>/dev/null
}

show_logs() { # the tail of every log, so a failed start in CI says why
  local f
  for f in "$DIR"/log/*; do
    [ -s "$f" ] || continue
    say "--- last lines of $f"
    tail -n 12 "$f" | sed 's/^/rgw.sh:   /' >&2
  done
}

write_conf() {
  local port=$1 fsid=$2
  # $3: monitor port
  cat > "$CONF" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$3
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
ms bind msgr2 = false
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd objectstore = memstore
# 4 GiB of RAM at most: the live-VM bench's S3 phase (nbdkit's S3 plugin and the vault, 1 GiB
# imported each, then random writes) filled 2 GiB and the OSD stopped taking writes (99 % full)
memstore device bytes = 4294967296
osd crush chooseleaf type = 0
osd crush update on start = false
# Ceph 16 races here: the OSD's first command (set its device class) may leave before its monitor
# client has the monmap, carry fsid 0, be refused 'wrong fsid', and the OSD exits (1 start in ~5
# on this machine, twice in a row in one CI run). We set no device class, so skip that command.
osd class update on start = false
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
mon data = $DIR/mon/\$name
osd data = $DIR/osd/\$name
keyring = $DIR/keyring
[client.rgw.test]
rgw frontends = beast endpoint=127.0.0.1:$port
rgw data = $DIR/rgw
rgw dns name = localhost
CONF
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND... (a deadline: a probe may itself take seconds)
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  while [ "$SECONDS" -lt "$deadline" ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  say "timed out waiting for $what"; return 1
}

# The listener on 127.0.0.1:PORT is our radosgw (not a gateway that took the port meanwhile).
listens_ours() {
  local p
  p=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2)
  [ -n "$p" ] && [ "$p" = "$(cat "$DIR/run/client.rgw.test.pid" 2>/dev/null)" ] && ours "$p"
}
osd_up() { ceph --connect-timeout 5 osd stat 2>/dev/null | grep -q ' 1 up'; }
osd_up_or_gone() { osd_up || [ -z "$(daemons_of_dir ceph-osd)" ]; } # a dead OSD is not waited for
# The monitor that answers is ours: a foreign one on the port would answer `mon stat` too.
mon_is_ours() { [ "$(ceph --connect-timeout 5 fsid 2>/dev/null)" = "$1" ]; }

start_once() {
  local port=$1 fsid uuid
  stop_all
  rm -rf "$DIR/mon" "$DIR/osd" "$DIR/run" "$DIR/log" "$DIR/rgw" "$DIR/monmap" "$DIR/s3.env"
  mkdir -p "$DIR/mon/mon.a" "$DIR/osd/osd.0" "$DIR/run" "$DIR/log" "$DIR/rgw"
  : > "$DIR/keyring"
  # The monitor listens on PORT+1 (override: RGW_MON_PORT), so clusters on different PORTs coexist.
  # Ports someone else holds (another cluster, a stale one from a killed run) are skipped upward.
  local mon_port tries=0
  while :; do
    mon_port=${RGW_MON_PORT:-$((port + 1))}
    port_free "$port" && port_free "$mon_port" && break
    tries=$((tries + 1))
    [ -z "${RGW_MON_PORT:-}" ] && [ "$tries" -lt 20 ] || { say "ports $port/$mon_port are in use"; return 1; }
    say "port $port or $mon_port is in use; trying $((port + 10))"
    port=$((port + 10))
  done
  echo "$port" > "$DIR/port"
  fsid=$(cat /proc/sys/kernel/random/uuid); uuid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$port" "$fsid" "$mon_port"
  say "creating monitor on 127.0.0.1:$mon_port (fsid $fsid)"
  monmaptool --create --addv a "[v1:127.0.0.1:$mon_port]" --fsid "$fsid" "$DIR/monmap" >/dev/null 2>&1
  ceph-mon --mkfs -i a --monmap "$DIR/monmap" >/dev/null 2>&1
  ceph-mon -i a
  wait_for 30 "monitor" mon_is_ours "$fsid" || return 1
  say "creating memstore OSD"
  ceph osd new "$uuid" >/dev/null
  ceph-osd -i 0 --mkfs --osd-uuid "$uuid" >/dev/null 2>&1
  ceph osd crush add-bucket localhost host >/dev/null 2>&1
  ceph osd crush move localhost root=default >/dev/null 2>&1
  ceph osd crush add osd.0 1.0 host=localhost >/dev/null 2>&1
  ceph-osd -i 0 2>>"$DIR/log/start.err"
  wait_for 60 "OSD up" osd_up_or_gone || return 1
  [ -n "$(daemons_of_dir ceph-osd)" ] || { say "the OSD exited"; return 1; }
  say "starting radosgw on 127.0.0.1:$port"
  radosgw -n client.rgw.test
  wait_for 90 "radosgw HTTP" http_ok || return 1
  listens_ours "$port" || { say "something else answers on port $port"; return 1; }
}

write_env() {
  local port; port=$(cat "$DIR/port")
  say "ensuring user $USER_ID and bucket $BUCKET"
  radosgw-admin user info --uid="$USER_ID" >/dev/null 2>&1 ||
    radosgw-admin user create --uid="$USER_ID" --display-name="nbd-vault tests" \
      --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >/dev/null
  ( cd "$REPO" && AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY node --no-warnings -e "
    const { S3Client, CreateBucketCommand } = require('@aws-sdk/client-s3');
    const c = new S3Client({ endpoint: 'http://127.0.0.1:$port', region: 'us-east-1', forcePathStyle: true });
    (async () => {
      for (let i = 0; ; i++) {
        try { await c.send(new CreateBucketCommand({ Bucket: '$BUCKET' })); return; }
        catch (e) {
          if (e.name === 'BucketAlreadyOwnedByYou' || e.name === 'BucketAlreadyExists') return;
          if (i >= 20) { console.error('create bucket: ' + e.name); process.exit(1); }
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    })();" )
  cat > "$DIR/s3.env" <<ENV
export NBD_VAULT_TEST_S3_URL='s3://$BUCKET/test?endpoint=http://127.0.0.1:$port&region=us-east-1&path_style=true'
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
ENV
  say "ready: . $DIR/s3.env"
}

case "$cmd" in
  start)
    PORT=${3:-}; [ -n "$PORT" ] || die "usage: rgw.sh start DIR PORT"
    # ours, healthy, on PORT or on the port a busy PORT made it skip to (s3.env names it)
    if pid_alive "$DIR/run/client.rgw.test.pid" && http_ok && listens_ours "$(cat "$DIR/port")"; then
      say "already running in $DIR"
      write_env; exit 0
    fi
    t0=$(date +%s)
    if ! start_once "$PORT"; then
      show_logs
      say "start failed, retrying once"
      start_once "$PORT" || { show_logs; stop_all; die "could not start RGW; logs in $DIR/log"; }
    fi
    write_env
    say "started in $(( $(date +%s) - t0 )) s"
    ;;
  stop)
    stop_all; say "stopped"
    ;;
  status)
    http_ok
    ;;
  *) die "unknown command $cmd" ;;
esac
