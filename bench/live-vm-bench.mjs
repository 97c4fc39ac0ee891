// Live-VM performance (issue 10): every target of the issue, each beside its peer measured in the
// same run (the machine is 2 shared cores: only ratios from one run compare).
//
//   node bench/live-vm-bench.mjs [--quick]        (after `npm run build`; also run by `npm run bench`)
//
// On the corpus image (an ext4 of /usr files, bench/make-corpus.sh; built if missing), with real
// clients (nbdcopy, fio's nbd engine):
//   peer qemu-nbd on a raw file  vs  `nbd-vault serve` (fs store, default settings):
//     4k randread QD32 uniform and zipf:1.2 over the whole volume, 4k randread QD1 p50/p99,
//     4k randwrite QD32 with end_fsync (durable), 1M sequential write QD8 with end_fsync
//   the 2-core zstd -3 compress ceiling on the image  vs  import (nbdcopy --flush)
//   `nbdkit memory`  vs  export (nbdcopy to a file, compared with the image)
//   stored bytes after the import (du of the store, its 1 MiB space reserve left out), peak
//   server RSS (VmHWM), also after 8 volumes written at once
//   with NBD_VAULT_TEST_S3_URL (+ AWS_* credentials) set: nbdkit's S3 plugin (boto3) vs nbd-vault
//   on that S3 server: import, 4k randread QD32, 4k randwrite QD32 end_fsync
// Prints one line per figure: `NAME vault=… PEER=… ratio=… target… MET|MISS|NA`.
//
// Env: BENCH_CORPUS (/tmp/bench/corpus.img; --quick: /tmp/bench/corpus-256.img, 256 MiB),
//      RUNTIME (15 s; quick 3) per random phase, LAT_RUNTIME (10; 3), SEQ_RUNTIME (20; 5) cap,
//      COPY_TIMEOUT (150 s) per nbdcopy, BENCH_TMP (/tmp/bench), BENCH_QUICK=1 = --quick,
//      SKIP (space-separated: qemu vault memory limits multi s3).
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

const QUICK = process.argv.includes('--quick') || process.env.BENCH_QUICK === '1';
const env = (k, quick, full) => Number(process.env[k] ?? (QUICK ? quick : full));
const RUNTIME = env('RUNTIME', 3, 15);
const LAT_RUNTIME = env('LAT_RUNTIME', 3, 10);
const SEQ_RUNTIME = env('SEQ_RUNTIME', 5, 20);
const COPY_TIMEOUT = env('COPY_TIMEOUT', 150, 150);
const TMP = process.env.BENCH_TMP ?? '/tmp/bench';
const CORPUS = process.env.BENCH_CORPUS ?? join(TMP, QUICK ? 'corpus-256.img' : 'corpus.img');
const SKIP = new Set((process.env.SKIP ?? '').split(/\s+/).filter(Boolean));
const ROOT = new URL('..', import.meta.url).pathname;
const CLI = join(ROOT, 'bin/nbd-vault.js');
const MEMORY_LIMIT_MIB = 1024; // issue 10's default --memory-limit
const TODAY_STORED = 210e6; // issue 10: stored bytes of the 1 GiB corpus before format 2
const MB = 1e6;

const T0 = Date.now();
const say = (s) => console.log(`# [${((Date.now() - T0) / 1000).toFixed(0)} s] ${s}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const has = (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Runs a command to completion (bounded); returns { ok, secs, stdout, err }. */
function run(cmd, args, { timeoutS = 600, envs } = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutS * 1000, killSignal: 'SIGKILL', env: envs ?? process.env, maxBuffer: 64 << 20 });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const ok = r.status === 0;
  const err = ok ? '' : r.error?.code === 'ETIMEDOUT' ? `timed out after ${timeoutS} s` : `exit ${r.status ?? r.signal}: ${(r.stderr || '').trim().split('\n').pop()}`;
  return { ok, secs, stdout: r.stdout ?? '', err };
}

/** A server as a child process (stdout/stderr to LOG, a file: never a pipe the sync runs would stall). */
function startServer(cmd, args, log, envs = process.env) {
  const fd = openSync(log, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: envs });
  closeSync(fd);
  const exited = new Promise((r) => child.once('exit', r));
  return {
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
      await exited;
      clearTimeout(t);
    },
  };
}

async function waitNbd(uri) {
  for (let i = 0; i < 600; i++) {
    if (run('nbdinfo', ['--size', uri], { timeoutS: 10 }).ok) return;
    await sleep(100);
  }
  throw new Error(`no NBD server at ${uri} after 60 s`);
}

/** Whole-machine CPU busy % over 2 s (100 = all cores). */
async function cpuBusyPct() {
  const sample = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + f[4];
    return [f.reduce((a, b) => a + b, 0) - idle, f.reduce((a, b) => a + b, 0)];
  };
  const [b1, t1] = sample();
  await sleep(2000);
  const [b2, t2] = sample();
  return Math.round((100 * (b2 - b1)) / Math.max(1, t2 - t1));
}

/** Waits (up to QUIET_WAIT s, default 120) for the machine to be under QUIET_PCT % busy (25): others' load skews every figure. */
async function waitQuiet() {
  const max = Number(process.env.QUIET_WAIT ?? 120);
  const started = Date.now();
  let busy = await cpuBusyPct();
  while (busy > Number(process.env.QUIET_PCT ?? 25) && Date.now() - started < max * 1000) {
    await sleep(8000);
    busy = await cpuBusyPct();
  }
  say(`machine CPU busy before start: ${busy}% (waited ${((Date.now() - started) / 1000).toFixed(0)} s), loadavg ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
}

/** Waits (at most 90 s) until the server used under 5 % of a core for a whole second: its
 *  background work (compaction folding an import's journals) must not land on the next phase,
 *  which runs on the peer first (one run measured `nbdkit memory` at 627 instead of ~1,100 MB/s). */
function settle(pid) {
  const ticks = () => {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(f[11]) + Number(f[12]);
  };
  const deadline = Date.now() + 90_000;
  let last = ticks();
  while (Date.now() < deadline) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
    const now = ticks();
    if (now - last < 5) return;
    last = now;
  }
}

function vmHwmMiB(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

// ---- the workloads --------------------------------------------------------------------------

let SIZE = 0; // the corpus's, set in main()

function fio(uri, name, args, capS) {
  const r = run('fio', [`--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, `--size=${SIZE}`, '--output-format=json', '--norandommap', '--randrepeat=0', ...args], { timeoutS: capS });
  if (!r.ok) return { err: r.err };
  try {
    const job = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
    return job.error ? { err: `fio error ${job.error}` } : { job };
  } catch (e) {
    return { err: `fio output: ${e.message}` };
  }
}

/** Runs the phases named in `phases` against `uri`; returns figures (NaN = failed, with a note). */
function measure(label, uri, phases, { storeDir, into } = {}) {
  const f = into ?? {};
  const note = (k, v, unit, extra = '') => {
    f[k] = v;
    console.log(`${label} ${k} ${Number.isFinite(v) ? +v.toFixed(1) : 'NA'} ${unit}${extra ? ` (${extra})` : ''}`);
  };
  if (phases.includes('import')) {
    const r = run('nbdcopy', ['--flush', CORPUS, uri], { timeoutS: COPY_TIMEOUT });
    note('import', r.ok ? SIZE / MB / r.secs : NaN, 'MB/s', r.ok ? `${r.secs.toFixed(2)} s` : r.err);
    if (storeDir) {
      spawnSync('sync');
      // (not the fs store's 1 MiB `~reserve`: room held for metadata on a full disk, not data)
      const du = run('du', ['-sB1', '--exclude=~reserve', storeDir]);
      note('stored_bytes', Number(du.stdout.split('\t')[0]), 'bytes', `du -sB1 --exclude=~reserve ${storeDir}`);
    }
  }
  if (phases.includes('export')) {
    const out = join('/dev/shm', `live-vm-export.${process.pid}`);
    const r = run('nbdcopy', [uri, out], { timeoutS: COPY_TIMEOUT });
    const same = r.ok && run('cmp', ['-s', CORPUS, out]).ok;
    rmSync(out, { force: true });
    note('export', r.ok ? SIZE / MB / r.secs : NaN, 'MB/s', r.ok ? `${r.secs.toFixed(2)} s, ${same ? 'matches the image' : 'DIFFERS from the image'}` : r.err);
    if (r.ok && !same) f.export = NaN;
  }
  const rand = ['--bs=4k', `--runtime=${RUNTIME}`, '--time_based'];
  if (phases.includes('randread')) {
    const u = fio(uri, 'randread', ['--rw=randread', '--iodepth=32', ...rand], RUNTIME + 60);
    note('randread_uniform', u.job ? u.job.read.iops : NaN, 'IOPS', u.err);
  }
  if (phases.includes('zipf')) {
    const z = fio(uri, 'zipf', ['--rw=randread', '--iodepth=32', '--random_distribution=zipf:1.2', ...rand], RUNTIME + 60);
    note('randread_zipf', z.job ? z.job.read.iops : NaN, 'IOPS', z.err);
  }
  if (phases.includes('lat')) {
    const l = fio(uri, 'lat', ['--rw=randread', '--iodepth=1', '--bs=4k', `--runtime=${LAT_RUNTIME}`, '--time_based', '--lat_percentiles=1', '--percentile_list=50:99'], LAT_RUNTIME + 60);
    const p = l.job?.read.lat_ns.percentile ?? {};
    note('qd1_p50', l.job ? p['50.000000'] / 1000 : NaN, 'us', l.err);
    note('qd1_p99', l.job ? p['99.000000'] / 1000 : NaN, 'us', l.err);
  }
  if (phases.includes('randwrite')) {
    const w = fio(uri, 'randwrite', ['--rw=randwrite', '--iodepth=32', '--end_fsync=1', ...rand], RUNTIME + 180);
    note('randwrite_fsync', w.job ? w.job.write.iops : NaN, 'IOPS', w.job ? `${w.job.write.total_ios} writes in ${w.job.job_runtime} ms incl. the final flush` : w.err);
  }
  if (phases.includes('seqwrite')) {
    const s = fio(uri, 'seqwrite', ['--rw=write', '--bs=1M', '--iodepth=8', '--end_fsync=1', `--runtime=${SEQ_RUNTIME}`], SEQ_RUNTIME + 180);
    note('seqwrite_fsync', s.job ? s.job.write.bw_bytes / MB : NaN, 'MB/s', s.job ? `${(s.job.write.io_bytes / 2 ** 20).toFixed(0)} MiB in ${s.job.job_runtime} ms incl. the final flush` : s.err);
  }
  return f;
}

// ---- the servers ----------------------------------------------------------------------------

function vaultEnv(dir, store) {
  return { ...process.env, NBD_VAULT_KEYS: join(dir, 'keys'), NBD_VAULT_STATE: join(dir, 'state'), NBD_VAULT_STORE: store };
}

/** A fresh vault in DIR on STORE with volumes NAMES of the corpus size, served; returns { uri(name), pid, stop }. */
async function vaultServer(dir, store, names) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const envs = vaultEnv(dir, store);
  for (const args of [['keys', 'init'], ['init'], ...names.map((n) => ['volume', 'create', n, '--size', String(SIZE)])]) {
    const r = run(process.execPath, [CLI, ...args], { envs, timeoutS: 120 });
    if (!r.ok) throw new Error(`nbd-vault ${args.join(' ')}: ${r.err}`);
  }
  const port = await freePort();
  const srv = startServer(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`], join(dir, 'serve.log'), envs);
  const uri = (n) => `nbd://127.0.0.1:${port}/${n}`;
  await waitNbd(uri(names[0]));
  say(`server: nbd-vault serve --listen 127.0.0.1:${port} (default settings, store ${store.replace(/\?.*/, '')}, git ${gitRev()})`);
  return { ...srv, uri };
}

function gitRev() {
  return run('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']).stdout.trim() || '?';
}

/** The S3 plugin of Debian's nbdkit 1.32 refuses object-size > 64K (it advertises it as the minimum
 *  block size); it does read-modify-write itself, so a copy advertising minimum 1 runs (as in
 *  /work/shared/bench/run-peers.sh). Returns its path or null. */
function patchedS3Plugin() {
  const deb = '/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-S3-plugin';
  if (!existsSync(deb) || !run('/usr/bin/python3', ['-c', 'import boto3']).ok) return null;
  const src = readFileSync(deb, 'utf8');
  const out = join(TMP, 'nbdkit-S3-plugin-minblock1');
  const patched = src.replace(/^ {4}return \(cfg\.obj_size, cfg\.obj_size, cfg\.obj_size\)$/m, '    return (1, cfg.obj_size, 0xffffffff)');
  spawnSync('sh', ['-c', `cat > '${out}'`], { input: patched });
  return out;
}

/** Deletes every object under PREFIX in the test bucket (boto3; credentials from the environment). */
function s3DeletePrefix(endpoint, bucket, prefix) {
  const py = 'import boto3,sys\nb=boto3.resource("s3",endpoint_url=sys.argv[1]).Bucket(sys.argv[2])\nb.objects.filter(Prefix=sys.argv[3]).delete()';
  const r = run('/usr/bin/python3', ['-c', py, endpoint, bucket, prefix], { timeoutS: 300 });
  if (!r.ok) say(`cleanup of s3://${bucket}/${prefix} failed: ${r.err}`);
}

// ---- main -----------------------------------------------------------------------------------

const results = []; // [name, vault, peerName, peer, ratio, target, status, unit]
function compare(name, unit, vault, peerName, peer, cmp, target) {
  const ratio = vault / peer;
  const ok = cmp === '>=' ? ratio >= target : ratio <= target;
  const status = Number.isFinite(ratio) ? (ok ? 'MET' : 'MISS') : 'NA';
  results.push(`${name} vault=${fmt(vault)} ${peerName}=${fmt(peer)} ${unit} ratio=${Number.isFinite(ratio) ? ratio.toPrecision(2) : 'NA'} target${cmp}${target} ${status}`);
}
function absolute(name, unit, vault, cmp, target, extra = '') {
  const ok = cmp === '>=' ? vault >= target : vault <= target;
  const status = !Number.isFinite(target) ? '' : Number.isFinite(vault) ? (ok ? ' MET' : ' MISS') : ' NA';
  results.push(`${name} vault=${fmt(vault)} ${unit}${extra ? ` ${extra}` : ''}${Number.isFinite(target) ? ` target${cmp}${fmt(target)}` : ' (no target)'}${status}`);
}
function missing(name, why) {
  results.push(`${name} NA (${why})`);
}
const fmt = (v) => (!Number.isFinite(v) ? 'NA' : Math.abs(v) >= 100 ? Math.round(v).toString() : v.toPrecision(3));

async function main() {
  for (const t of ['fio', 'nbdcopy', 'nbdinfo', 'cmp', 'du']) if (!has(t)) throw new Error(`missing tool: ${t}`);
  mkdirSync(TMP, { recursive: true });
  if (!existsSync(CORPUS)) {
    say(`building the corpus ${CORPUS} (bench/make-corpus.sh)`);
    const r = run(join(ROOT, 'bench/make-corpus.sh'), [CORPUS, QUICK ? '256' : '1024'], { timeoutS: 600 });
    if (!r.ok) throw new Error(`make-corpus.sh: ${r.err}`);
  }
  SIZE = statSync(CORPUS).size;
  const size = SIZE;
  await waitQuiet();
  const started = Date.now();
  say(`live-VM bench${QUICK ? ' (--quick)' : ''}: image ${CORPUS} (${size} bytes), RUNTIME=${RUNTIME} LAT_RUNTIME=${LAT_RUNTIME} SEQ_RUNTIME=${SEQ_RUNTIME}, git ${gitRev()}, ${new Date().toISOString()}, loadavg ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
  const work = join(TMP, `live-vm.${process.pid}`);
  mkdirSync(work, { recursive: true });
  const stops = [];
  try {
    // All servers up at once, idle but for the one measured: each phase runs on the peer and
    // then on nbd-vault, seconds apart, so a load change on the shared machine hits both.
    const servers = [];
    let memory = {};
    if (!SKIP.has('memory')) {
      if (has('nbdkit')) {
        const port = await freePort();
        const srv = startServer('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), 'memory', String(SIZE)], join(work, 'nbdkit-memory.log'));
        stops.push(srv);
        await waitNbd(`nbd://127.0.0.1:${port}`);
        say(`server: nbdkit -f -i 127.0.0.1 -p ${port} memory ${SIZE}`);
        servers.push({ label: 'memory', uri: `nbd://127.0.0.1:${port}`, into: memory, phases: ['import', 'export'] });
      } else say('nbdkit missing: no export peer');
    }
    let qemu = {};
    if (!SKIP.has('qemu')) {
      if (has('qemu-nbd')) {
        const raw = join(work, 'qemu.raw');
        run('truncate', ['-s', String(SIZE), raw]);
        const port = await freePort();
        const args = ['-f', 'raw', '--cache=writeback', '--aio=threads', '-b', '127.0.0.1', '-p', String(port), '-x', '', '-t', raw];
        const srv = startServer('qemu-nbd', args, join(work, 'qemu-nbd.log'));
        stops.push(srv);
        await waitNbd(`nbd://127.0.0.1:${port}`);
        say(`server: truncate -s ${SIZE} ${raw}; qemu-nbd ${args.join(' ').replace('-x  ', "-x '' ")}`);
        servers.push({ label: 'qemu', uri: `nbd://127.0.0.1:${port}`, into: qemu, storeDir: raw, phases: ['import', 'randread', 'zipf', 'lat', 'randwrite', 'seqwrite'] });
      } else say('qemu-nbd missing: no peer for the random figures');
    }
    let vault = {};
    let vaultSrv = null;
    const dir = join(work, 'vault-fs');
    const names = ['bench', ...Array.from({ length: 7 }, (_, i) => `vm${i + 2}`)];
    if (!SKIP.has('vault')) {
      vaultSrv = await vaultServer(dir, join(dir, 'store'), names);
      stops.push(vaultSrv);
      servers.push({ label: 'vault', uri: vaultSrv.uri('bench'), into: vault, storeDir: join(dir, 'store'), phases: ['import', 'export', 'randread', 'zipf', 'lat', 'randwrite', 'seqwrite'] });
    }

    let ceiling = NaN;
    for (const phase of ['import', 'export', 'randread', 'zipf', 'lat', 'randwrite', 'seqwrite']) {
      if (vaultSrv) settle(vaultSrv.pid);
      for (const s of servers) if (s.phases.includes(phase)) measure(s.label, s.uri, [phase], s);
      if (phase === 'import' && !SKIP.has('limits')) {
        // the compress ceiling: zstd -3 on 2 cores over the logical image, right after the imports
        if (has('zstd')) {
          const { zstdBench } = createRequire(import.meta.url)(join(ROOT, 'dist/bench/physical-limits.js'));
          [ceiling] = zstdBench(CORPUS, 2);
          say(`zstd -b3 -T2 over the image: compress ${ceiling} MB/s (the 2-core ceiling of import)`);
        } else say('zstd missing: no compress ceiling');
      }
    }

    let rss1 = NaN;
    let rss8 = NaN;
    let multiIops = NaN;
    if (vaultSrv) {
      rss1 = vmHwmMiB(vaultSrv.pid);
      say(`vault peak RSS (VmHWM) after one volume: ${rss1.toFixed(0)} MiB`);
      if (!SKIP.has('multi')) {
        // 8 volumes written at once: 4k random writes, QD8 each, durable at the end
        const jobs = names.flatMap((n) => [`--name=${n}`, `--uri=${vaultSrv.uri(n)}`]);
        const r = run('fio', ['--ioengine=nbd', `--size=${SIZE}`, '--rw=randwrite', '--bs=4k', '--iodepth=8', '--end_fsync=1', `--runtime=${RUNTIME}`, '--time_based', '--norandommap', '--randrepeat=0', '--group_reporting', '--output-format=json', ...jobs], { timeoutS: RUNTIME + 300 });
        if (r.ok) multiIops = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0].write.iops;
        rss8 = vmHwmMiB(vaultSrv.pid);
        say(`8 volumes written at once (fio 4k randwrite QD8 each, end_fsync): ${r.ok ? `${multiIops.toFixed(0)} IOPS in all` : r.err}; VmHWM ${rss8.toFixed(0)} MiB`);
      }
    }
    for (const s of stops.splice(0)) await s.stop();
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });

    compare('randread4k_qd32_uniform', 'IOPS', vault.randread_uniform, 'qemu', qemu.randread_uniform, '>=', 0.5);
    compare('randread4k_qd32_zipf1.2', 'IOPS', vault.randread_zipf, 'qemu', qemu.randread_zipf, '>=', 0.5);
    absolute('randread4k_qd1_p99', 'us', vault.qd1_p99, '<=', 2000, `qemu=${fmt(qemu.qd1_p99)}`);
    absolute('randread4k_qd1_p50', 'us', vault.qd1_p50, '<=', NaN, `qemu=${fmt(qemu.qd1_p50)}`);
    compare('randwrite4k_qd32_fsync', 'IOPS', vault.randwrite_fsync, 'qemu', qemu.randwrite_fsync, '>=', 0.3);
    compare('seqwrite1m_qd8_fsync', 'MB/s', vault.seqwrite_fsync, 'qemu', qemu.seqwrite_fsync, '>=', 0.5);
    compare('import_flushed', 'MB/s', vault.import, 'zstd3_2core_ceiling', ceiling, '>=', 0.8);
    absolute('import_flushed_beside_qemu', 'MB/s', vault.import, '>=', NaN, `qemu=${fmt(qemu.import)}`);
    compare('export', 'MB/s', vault.export, 'nbdkit_memory', memory.export, '>=', 0.7);
    absolute('stored_bytes_after_import', 'bytes', vault.stored_bytes, '<=', QUICK ? NaN : 1.1 * TODAY_STORED, `qemu_raw=${fmt(qemu.stored_bytes)}`);
    absolute('peak_rss_one_volume', 'MiB', rss1, '<=', MEMORY_LIMIT_MIB + 150, '(VmHWM; target = default --memory-limit 1 GiB + 150 MiB)');
    absolute('peak_rss_8_volumes_written', 'MiB', rss8, '<=', MEMORY_LIMIT_MIB + 150, `(VmHWM; ${fmt(multiIops)} IOPS in all)`);

    // S3: nbdkit's S3 plugin beside nbd-vault on the same server
    if (!SKIP.has('s3')) {
      try {
        await s3(work, stops);
      } catch (e) {
        for (const n of S3_FIGURES) missing(n, `S3 run failed: ${e.message.split('\n')[0]}`);
      }
    }
  } finally {
    for (const s of stops) await s.stop();
    rmSync(work, { recursive: true, force: true });
  }
  console.log(`\nLive-VM figures (issue 10 targets), ${QUICK ? 'QUICK mode, ' : ''}image ${CORPUS}, git ${gitRev()}, ${((Date.now() - started) / 1000).toFixed(0)} s:`);
  for (const line of results) console.log(line);
}

const S3_FIGURES = ['s3_import', 's3_randread4k_qd32_uniform', 's3_randwrite4k_qd32_fsync'];

function reachable(endpoint) {
  const { hostname, port } = new URL(endpoint);
  return spawnSync('bash', ['-c', `exec 3<>/dev/tcp/${hostname}/${port || 80}`], { timeout: 5000 }).status === 0;
}

async function s3(work, stops) {
  const base = process.env.NBD_VAULT_TEST_S3_URL;
  if (!base) {
    for (const n of S3_FIGURES) missing(n, 'NBD_VAULT_TEST_S3_URL is not set');
    return;
  }
  const u = new URL(base);
  const endpoint = u.searchParams.get('endpoint');
  if (!reachable(endpoint)) {
    for (const n of S3_FIGURES) missing(n, `nothing listening at ${endpoint}`);
    return;
  }
  const bucket = u.hostname;
  const tag = `live-vm-bench-${randomBytes(4).toString('hex')}`;
  const prefix = `${u.pathname.replace(/^\/|\/$/g, '')}/${tag}`.replace(/^\//, '');
  const phases = ['import', 'randread', 'randwrite'];
  const plugin = {};
  const vault = {};
  const servers = [];
  const pluginPath = has('nbdkit') ? patchedS3Plugin() : null;
  if (pluginPath) {
    const port = await freePort();
    const args = ['-f', '-i', '127.0.0.1', '-p', String(port), 'python', pluginPath, `endpoint-url=${endpoint}`, `bucket=${bucket}`, `key=${prefix}/nbdkit`, `size=${SIZE}`, 'object-size=4M'];
    const srv = startServer('nbdkit', args, join(work, 'nbdkit-s3.log'), { AWS_DEFAULT_REGION: u.searchParams.get('region') ?? 'us-east-1', ...process.env });
    stops.push(srv);
    await waitNbd(`nbd://127.0.0.1:${port}`);
    say(`server: nbdkit ${args.join(' ')} (credentials from AWS_* env; the plugin patched to advertise minimum block size 1)`);
    servers.push({ label: 'nbdkit-s3', uri: `nbd://127.0.0.1:${port}`, into: plugin });
  } else say('nbdkit S3 plugin missing (needs nbdkit-plugin-python and python3-boto3: scripts/install-test-deps.sh --bench)');
  const url = new URL(base);
  url.pathname = `/${prefix}/vault`;
  const srv = await vaultServer(join(work, 'vault-s3'), url.toString(), ['bench']);
  stops.push(srv);
  servers.push({ label: 'vault-s3', uri: srv.uri('bench'), into: vault });
  try {
    for (const phase of phases) for (const s of servers) measure(s.label, s.uri, [phase], s);
  } finally {
    for (const s of stops.splice(0)) await s.stop();
    s3DeletePrefix(endpoint, bucket, `${prefix}/`);
  }
  const peer = pluginPath ? 'nbdkit_s3' : 'nbdkit_s3(missing)';
  compare('s3_import', 'MB/s', vault.import, peer, plugin.import, '>=', 2);
  compare('s3_randread4k_qd32_uniform', 'IOPS', vault.randread_uniform, peer, plugin.randread_uniform, '>=', 10);
  compare('s3_randwrite4k_qd32_fsync', 'IOPS', vault.randwrite_fsync, peer, plugin.randwrite_fsync, '>=', 10);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
