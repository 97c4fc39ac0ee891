// NBD frontend benchmark (`npm run bench`, or `node bench/nbd-bench.mjs` after `npm run build`).
// Runs the same workloads against `nbd-vault serve --memory bench=1G` and `nbdkit memory 1G`,
// both started here on loopback, and prints a table:
//   1. nbdcopy of a 1 GiB file into the export (sequential write)
//   2. nbdcopy of the export to null: (sequential read)
//   3. fio, nbd engine, 4 KiB random read, iodepth 32, 10 s
// Targets (issue 3): >= 60 % of nbdkit's sequential throughput, >= 40 % of its 4k IOPS.
// Env: BENCH_SIZE_MIB (default 1024), BENCH_FIO_SECONDS (default 10).
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, writeSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SIZE_MIB = Number(process.env.BENCH_SIZE_MIB ?? 1024);
const FIO_SECONDS = Number(process.env.BENCH_FIO_SECONDS ?? 10);
const root = new URL('..', import.meta.url).pathname;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitListening(port, ms = 10000) {
  const { connect } = await import('node:net');
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ok = await new Promise((r) => {
      const c = connect(port, '127.0.0.1', () => (c.destroy(), r(true)));
      c.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listening on ${port}`);
}

function timed(cmd, args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return { seconds: s, stdout: r.stdout.toString() };
}

function fioRandRead(uri) {
  const { stdout } = timed('fio', [
    '--name=randread', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', '--iodepth=32',
    `--size=${SIZE_MIB}M`, `--runtime=${FIO_SECONDS}`, '--time_based', '--output-format=json',
  ]);
  const job = JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0];
  return job.read.iops;
}

function workloads(uri, file) {
  const write = timed('nbdcopy', [file, uri]);
  const read = timed('nbdcopy', [uri, 'null:']);
  const iops = fioRandRead(uri);
  const mib = SIZE_MIB;
  return { writeMiBs: mib / write.seconds, readMiBs: mib / read.seconds, iops };
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-bench-'));
  const file = join(dir, 'src.img');
  // Random data (incompressible, no zero pages), 16 MiB of it repeated: fast to make.
  const block = randomFillSync(Buffer.alloc(16 * 1024 * 1024));
  const fd = openSync(file, 'w');
  for (let i = 0; i < SIZE_MIB / 16; i++) writeSync(fd, block);
  closeSync(fd);

  const results = {};
  // nbdkit reference
  const kitPort = await freePort();
  const pidFile = join(dir, 'nbdkit.pid');
  execFileSync('nbdkit', ['-P', pidFile, '-i', '127.0.0.1', '-p', String(kitPort), 'memory', `${SIZE_MIB}M`]);
  try {
    await waitListening(kitPort);
    results.nbdkit = workloads(`nbd://127.0.0.1:${kitPort}/`, file);
  } finally {
    try { process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGTERM'); } catch {}
  }
  // nbd-vault
  const port = await freePort();
  const srv = spawn(process.execPath, [join(root, 'bin/nbd-vault.js'), 'serve', '--listen', `127.0.0.1:${port}`, '--memory', `bench=${SIZE_MIB}M`, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    await waitListening(port);
    results['nbd-vault'] = workloads(`nbd://127.0.0.1:${port}/bench`, file);
  } finally {
    srv.kill('SIGTERM');
    await new Promise((r) => srv.once('exit', r));
  }
  rmSync(dir, { recursive: true, force: true });

  const k = results.nbdkit;
  const v = results['nbd-vault'];
  const pct = (a, b) => `${((100 * a) / b).toFixed(0)} %`;
  console.log(`\nNBD frontend benchmark (${SIZE_MIB} MiB, loopback, fio ${FIO_SECONDS} s)`);
  console.log('| workload | nbdkit memory | nbd-vault --memory | ratio |');
  console.log('|---|---|---|---|');
  console.log(`| nbdcopy file → export (MiB/s) | ${k.writeMiBs.toFixed(0)} | ${v.writeMiBs.toFixed(0)} | ${pct(v.writeMiBs, k.writeMiBs)} |`);
  console.log(`| nbdcopy export → null: (MiB/s) | ${k.readMiBs.toFixed(0)} | ${v.readMiBs.toFixed(0)} | ${pct(v.readMiBs, k.readMiBs)} |`);
  console.log(`| fio 4k randread QD32 (IOPS) | ${k.iops.toFixed(0)} | ${v.iops.toFixed(0)} | ${pct(v.iops, k.iops)} |`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
