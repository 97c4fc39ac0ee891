// Peak memory of `nbd-vault serve --memory-limit 1G` while 8 volumes are written at once
// (issue 10's target: peak RSS <= the memory limit + 150 MiB). A vault on the fs store with 8
// volumes; one fio process (nbd engine) runs one job per volume at the same time: 1 MiB
// sequential writes of fresh random data (incompressible, refilled per write) at QD16, then
// 4 KiB random writes at QD32 over the same range, each job ending with a flush (end_fsync).
// The server's VmHWM (peak resident set, read from /proc at the end) and the highest VmRSS
// sampled meanwhile are printed beside the limit; nothing is asserted: figures go to
// BENCHMARKS.md.
//   npm run build && node dist/bench/memory-bench.js
// Env: BENCH_MEMORY_VOLUMES (default 8), BENCH_MEMORY_VOLUME_MIB (MiB written per volume,
// default 128), BENCH_MEMORY_LIMIT (default 1G), BENCH_MEMORY_RANDOM_SECONDS (default 10).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseSize } from '../src/util/size';

const REPO = path.resolve(__dirname, '../..');
const CLI = path.join(REPO, 'bin/nbd-vault.js');
const MIB = 2 ** 20;
const VOLUMES = Number(process.env.BENCH_MEMORY_VOLUMES ?? 8);
const VOLUME_MIB = Number(process.env.BENCH_MEMORY_VOLUME_MIB ?? 128);
const LIMIT = process.env.BENCH_MEMORY_LIMIT ?? '1G';
const RANDOM_SECONDS = Number(process.env.BENCH_MEMORY_RANDOM_SECONDS ?? 10);

/** the server's stderr, for the error report */
let lastLog = '';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function procStatus(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

async function startServer(env: NodeJS.ProcessEnv, cwd: string): Promise<{ child: ChildProcess; port: number; log: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--log-level', 'info', '--memory-limit', LIMIT], { env, cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (d) => (lastLog = log = (log + d).slice(-200_000)));
  child.on('exit', (code, signal) => (lastLog += `\n[server exited: code ${code}, signal ${signal}]`));
  const t0 = Date.now();
  let port = 0;
  while (!(port = Number(/"port":(\d+)[^\n]*"msg":"listening"/.exec(log)?.[1] ?? 0))) {
    if (child.exitCode !== null) throw new Error(`server exited: ${log}`);
    if (Date.now() - t0 > 60_000) throw new Error(`server did not start: ${log}`);
    await sleep(50);
  }
  return { child, port, log: () => log };
}

/** One fio run with a job per volume, all at once; resolves with the summed write figures. */
function fio(port: number, jobArgs: string[]): Promise<{ mbps: number; iops: number; seconds: number }> {
  const args = ['--output-format=json', '--ioengine=nbd', '--group_reporting=0'];
  for (let v = 0; v < VOLUMES; v++) args.push(`--name=vol${v}`, `--uri=nbd://127.0.0.1:${port}/vol${v}`, ...jobArgs);
  return new Promise((resolve, reject) => {
    const child = spawn('fio', args);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`fio exited ${code}: ${err}`));
      const jobs = JSON.parse(out.slice(out.indexOf('{'))).jobs as Array<{ write: { bw_bytes: number; iops: number; runtime: number } }>;
      resolve({
        mbps: jobs.reduce((a, j) => a + j.write.bw_bytes, 0) / 1e6,
        iops: jobs.reduce((a, j) => a + j.write.iops, 0),
        seconds: Math.max(...jobs.map((j) => j.write.runtime)) / 1000,
      });
    });
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nbd-memory-bench-'));
  const env = { ...process.env, NBD_VAULT_STORE: path.join(dir, 'data'), NBD_VAULT_KEYS: path.join(dir, 'keys'), NBD_VAULT_STATE: path.join(dir, 'state'), NBD_VAULT_LOG_LEVEL: 'warn' };
  const cli = (...args: string[]) => execFileSync(process.execPath, [CLI, ...args], { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const limit = parseSize(LIMIT);
  let srv: Awaited<ReturnType<typeof startServer>> | null = null;
  try {
    cli('keys', 'init');
    cli('init');
    for (let v = 0; v < VOLUMES; v++) cli('volume', 'create', `vol${v}`, '--size', `${Math.max(1024, VOLUME_MIB)}M`);
    srv = await startServer(env, dir);
    const pid = srv.child.pid!;
    await sleep(500);
    const idle = procStatus(pid, 'VmRSS');
    let sampled = idle;
    const sampler = setInterval(() => {
      try {
        sampled = Math.max(sampled, procStatus(pid, 'VmRSS'));
      } catch {
        // the server exited: main() reports it
      }
    }, 20);
    const seq = await fio(srv.port, ['--rw=write', '--bs=1M', '--iodepth=16', `--size=${VOLUME_MIB}M`, '--refill_buffers', '--end_fsync=1']);
    const afterSeq = procStatus(pid, 'VmHWM');
    const rnd = await fio(srv.port, ['--rw=randwrite', '--bs=4k', '--iodepth=32', `--size=${VOLUME_MIB}M`, `--runtime=${RANDOM_SECONDS}`, '--time_based', '--refill_buffers', '--end_fsync=1']);
    const hwm = procStatus(pid, 'VmHWM');
    clearInterval(sampler);
    const mib = (b: number) => `${(b / MIB).toFixed(0)} MiB`;
    console.log(`memory benchmark: serve --memory-limit ${LIMIT}, ${VOLUMES} volumes on the fs store written at once by one fio (nbd engine, one job per volume), defaults otherwise (--dirty-limit / --read-cache per volume)`);
    console.log('| phase | written | peak RSS (VmHWM) | peak − limit | target |');
    console.log('|---|---|---|---|---|');
    console.log(`| idle server | | ${mib(idle)} | | |`);
    console.log(`| ${VOLUMES} × ${VOLUME_MIB} MiB sequential 1M writes QD16, end_fsync | ${seq.mbps.toFixed(0)} MB/s in all, ${seq.seconds.toFixed(1)} s | ${mib(afterSeq)} | ${mib(afterSeq - limit)} | ≤ 150 MiB |`);
    console.log(`| then ${VOLUMES} × 4k random writes QD32, ${RANDOM_SECONDS} s, end_fsync | ${rnd.iops.toFixed(0)} IOPS in all | ${mib(hwm)} | ${mib(hwm - limit)} | ≤ 150 MiB |`);
    console.log(`(highest VmRSS sampled every 20 ms: ${mib(sampled)})`);
  } finally {
    if (srv && srv.child.exitCode === null) {
      const exited = new Promise((r) => srv!.child.once('exit', r));
      srv.child.kill('SIGTERM');
      const t = setTimeout(() => srv!.child.kill('SIGKILL'), 120_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  console.error(`server log (last lines):\n${lastLog.split('\n').slice(-30).join('\n')}`);
  process.exit(1);
});
