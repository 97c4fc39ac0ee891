// npm run bench (disk cache part): 4k random reads at queue depth 32 (fio, nbd engine) on a volume
// in S3 with 25 ms added to every S3 request (test/helpers/latency-proxy.ts in front of the test RGW),
// served with `--disk-cache`: cold (empty cache), after `nbd-vault cache warm`, and the first pass
// after a restart; the same cold and restarted passes without a disk cache; the sequential export
// of the whole volume cold from S3 (nbdcopy → null:, a fresh server, no disk cache); and qemu-nbd
// on a raw file with the same data, in the same run. Every server runs with a 256 MiB RAM budget
// (--memory-limit 256M, read cache within it). Beside them, what bounds them: the codec's rate of
// opening 128 KiB frames (no I/O) and 128 KiB ranged GETs at the store interface.
// Env: NBD_VAULT_TEST_S3_URL (+ AWS_*; skipped without), BENCH_DC_MB (volume size, default 1024),
// BENCH_DC_SECONDS (each fio pass, default 10), BENCH_DC_LATENCY_MS (default 25), BENCH_DC_FIO=0
// (only the store-level part: 128 KiB ranged reads, format 2's frames, through the cache).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { FsStore, openStore, type ObjectStore } from '../src/store';
import { DiskCache } from '../src/store/disk-cache';
import { DiskCacheStore } from '../src/store/disk-cache-store';
import { isImmutableObjectKey } from '../src/volume/object-keys';
import { FRAME_BYTES, createCodec, parseFramedHeader } from '../src/codec';
import { SecretKey } from '../src/keys/secret-key';
import { freePort } from './bench-util';

const REPO = path.resolve(__dirname, '../..');
const CLI = path.join(REPO, 'bin/nbd-vault.js');
const MiB = 2 ** 20;
const sizeMiB = Number(process.env.BENCH_DC_MB ?? 1024);
const passSeconds = Number(process.env.BENCH_DC_SECONDS ?? 10);
const latencyMs = Number(process.env.BENCH_DC_LATENCY_MS ?? 25);

async function waitForPort(port: number, child: ChildProcess, what: string): Promise<void> {
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
    if (child.exitCode !== null) throw new Error(`${what} exited`);
    const ok = await new Promise<boolean>((r) => net.connect(port, '127.0.0.1').on('connect', function (this: net.Socket) { this.destroy(); r(true); }).on('error', () => r(false)));
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not listen in 60 s`);
}

/** MB/s (10^6) of `nbdcopy URI null:`: the whole export read in order, nbdcopy's defaults. */
function exportToNull(uri: string): number {
  const t0 = process.hrtime.bigint();
  execFileSync('nbdcopy', [uri, 'null:']);
  return (sizeMiB * MiB) / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e6;
}

function fioRandRead(uri: string, seconds: number): number {
  const out = execFileSync(
    'fio',
    ['--name=rr', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', '--iodepth=32', `--size=${sizeMiB}M`, '--time_based', `--runtime=${seconds}`, '--randrepeat=0', '--output-format=json'],
    { encoding: 'utf8' },
  );
  return JSON.parse(out.slice(out.indexOf('{'))).jobs[0].read.iops as number;
}

/** 128 KiB ranged reads (format 2's frames) at random places of `keys`, 32 in flight, for `secs`. */
async function frameReads(store: ObjectStore, keys: string[], secs: number): Promise<number> {
  const FRAME = 131072;
  let ops = 0;
  const end = Date.now() + secs * 1000;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (Date.now() < end) {
        const key = keys[Math.floor(Math.random() * keys.length)];
        const got = await store.getRange(key, Math.floor(Math.random() * 32) * FRAME, FRAME);
        if (got.length !== FRAME) throw new Error(`short frame read: ${got.length}`);
        ops++;
      }
    }),
  );
  return ops / secs;
}

/** The engine's ceiling for reads that miss the RAM cache: 128 KiB frames (random data) opened
 *  by the codec's worker pool (as serve sizes it), 32 at once, no I/O. */
async function frameOpens(secs: number): Promise<number> {
  const codec = createCodec({ workers: os.availableParallelism() });
  const key = new SecretKey(randomBytes(32), 'data');
  const place = { vaultId: randomBytes(16), volumeId: randomBytes(16), index: 0, generation: 1 };
  const frames = Array.from({ length: 32 }, () => randomBytes(FRAME_BYTES));
  const container = await codec.sealFrames(key, 'chunk-frame', frames, place, 32 * FRAME_BYTES);
  const h = parseFramedHeader(container, 'chunk', 'bench');
  let ops = 0;
  const end = Date.now() + secs * 1000;
  await Promise.all(
    Array.from({ length: 32 }, async (_, w) => {
      for (let f = w; Date.now() < end; f = (f + 1) % 32) {
        const sealed = Buffer.from(container.subarray(h.frameOffsets[f], h.frameOffsets[f] + h.frameLengths[f]));
        await codec.openFrame(key, sealed, { ...place, kind: 'chunk-frame', frame: f }, FRAME_BYTES);
        ops++;
      }
    }),
  );
  await codec.close();
  return ops / secs;
}

/** The cache alone, at the store interface, with format 2's access pattern: frames by ranged GET. */
async function storeLevel(proxied: string, dir: string, rows: string[][]): Promise<void> {
  const MiB4 = 4 * MiB;
  const s3 = openStore(proxied);
  const fs = new FsStore(path.join(dir, 'fs-objects'), { fsync: false });
  const keys = Array.from({ length: 48 }, () => `volumes/${'cd'.repeat(16)}/chunks/${randomBytes(16).toString('hex')}`);
  await Promise.all(keys.map(async (k) => {
    const body = randomBytes(MiB4);
    await s3.put(k, body);
    await fs.put(k, body);
  }));
  const secs = Math.max(3, Math.round(passSeconds / 2));
  const row = (what: string, v: number, note = '', unit = 'reads/s') => {
    rows.push([what, v.toFixed(0), note, unit]);
    console.log(`  ${what}: ${v.toFixed(0)} ${unit} ${note}`);
  };
  row('store level, 128 KiB ranged GETs, QD32: fs store (local peer)', await frameReads(fs, keys, secs));
  const bound = 32 / (latencyMs / 1000);
  const direct = await frameReads(s3, keys, secs);
  row('  S3 + latency, no cache', direct, `= ${(direct / bound).toFixed(2)} × QD/latency`);
  const cacheDir = path.join(dir, 'frame-cache');
  let cached = new DiskCacheStore(s3, await DiskCache.open(cacheDir, 2 * 2 ** 30), isImmutableObjectKey);
  const cold = await frameReads(cached, keys, secs);
  row('  through the disk cache, cold (empty)', cold, `= ${(cold / bound).toFixed(2)} × QD/latency`);
  // one pass over every frame (1,536 of them, 192 MiB), as `cache warm` or a first VM boot would
  await Promise.all(keys.map(async (k) => { for (let f = 0; f < 32; f++) await cached.getRange(k, f * 131072, 131072); }));
  await cached.cache.settle();
  const before = cached.stats();
  const warm = await frameReads(cached, keys, secs);
  const after = cached.stats();
  row('  through the disk cache, warm (after one pass over every frame)', warm, `= ${(warm / direct).toFixed(1)} × no cache; misses in the pass: ${after.misses - before.misses}`);
  await cached.cache.close();
  cached = new DiskCacheStore(s3, await DiskCache.open(cacheDir, 2 * 2 ** 30), isImmutableObjectKey);
  const restarted = await frameReads(cached, keys, secs);
  row('  through the disk cache, after a reopen (a restart)', restarted, `= ${(restarted / warm).toFixed(2)} × warm; misses: ${cached.stats().misses}`);
  await cached.cache.close();
  await s3.close();
}

async function main(): Promise<void> {
  const s3 = process.env.NBD_VAULT_TEST_S3_URL;
  if (!s3) {
    console.log('disk cache bench: skipped (NBD_VAULT_TEST_S3_URL not set: . DIR/s3.env of scripts/rgw.sh)');
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nbd-vault-dcbench-'));
  console.log(`start ${new Date().toISOString()}, load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  const u = new URL(s3);
  // The proxy is its own process: this one blocks in fio and nbdcopy.
  const proxy = spawn(process.execPath, [path.join(__dirname, '../test/helpers/latency-proxy.js'), u.searchParams.get('endpoint')!, String(latencyMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const proxyPort = await new Promise<number>((resolve, reject) => {
    let out = '';
    proxy.stdout!.on('data', (d) => {
      out += d;
      const m = /port (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proxy.once('exit', () => reject(new Error('latency proxy exited')));
  });
  u.pathname = `${u.pathname.replace(/\/$/, '')}/dcbench-${randomBytes(4).toString('hex')}`;
  const direct = u.toString(); // for the cleanup
  u.searchParams.set('endpoint', `http://127.0.0.1:${proxyPort}`);
  const env = { ...process.env, NBD_VAULT_STORE: u.toString(), NBD_VAULT_KEYS: path.join(dir, 'keys'), NBD_VAULT_STATE: path.join(dir, 'state'), NBD_VAULT_LOG_LEVEL: 'warn' };
  // the same volume in a local fs store: what the engine reads from a local disk without any cache
  const fsEnv = { ...env, NBD_VAULT_STORE: path.join(dir, 'fs-data'), NBD_VAULT_STATE: path.join(dir, 'fs-state') };
  const cli = (...args: string[]) => execFileSync(process.execPath, [CLI, ...args], { env, cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const children: ChildProcess[] = [];
  const serve = async (extra: string[], e: NodeJS.ProcessEnv = env) => {
    const port = await freePort();
    const child = spawn(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--memory-limit', '256M', '--read-cache', '256M', ...extra], { env: e, cwd: dir, stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(child);
    await waitForPort(port, child, 'nbd-vault serve');
    return {
      uri: `nbd://127.0.0.1:${port}/bench`,
      stop: () => new Promise<void>((r) => (child.once('exit', () => r()), child.kill('SIGTERM'))),
    };
  };
  const rows: string[][] = [];
  const row = (what: string, iops: number, note = '', unit = 'IOPS') => {
    rows.push([what, iops.toFixed(0), note, unit]);
    console.log(`  ${what}: ${iops.toFixed(0)} ${unit} ${note}`);
  };
  try {
    mkdirSync(dir, { recursive: true });
    if (process.env.BENCH_DC_FIO === '0') {
      await storeLevel(u.toString(), dir, rows);
      return;
    }
    cli('keys', 'init');
    cli('init');
    cli('volume', 'create', 'bench', '--size', `${sizeMiB}M`);
    const raw = path.join(dir, 'raw.img');
    writeFileSync(raw, Buffer.alloc(0));
    for (let i = 0; i < sizeMiB; i += 64) writeFileSync(raw, randomBytes(64 * MiB), { flag: 'a' });
    let srv = await serve([]);
    execFileSync('nbdcopy', ['--flush', raw, srv.uri]);
    await srv.stop();
    execFileSync(process.execPath, [CLI, 'init'], { env: fsEnv, cwd: dir, stdio: 'ignore' });
    execFileSync(process.execPath, [CLI, 'volume', 'create', 'bench', '--size', `${sizeMiB}M`], { env: fsEnv, cwd: dir, stdio: 'ignore' });
    srv = await serve([], fsEnv);
    execFileSync('nbdcopy', ['--flush', raw, srv.uri]);
    await srv.stop();
    srv = await serve([], fsEnv);
    row('fs store (local directory), no disk cache: the engine\'s local-disk figure', fioRandRead(srv.uri, passSeconds));
    await srv.stop();
    const opens = await frameOpens(Math.max(3, Math.round(passSeconds / 2)));
    row('codec: 128 KiB frames opened (worker pool, no I/O)', opens, `= ${((opens * FRAME_BYTES) / 1e6).toFixed(0)} MB/s; → ceiling ${(opens / (1 - 256 / sizeMiB)).toFixed(0)} IOPS when 1 - 256 MiB / volume of the reads miss the RAM cache`, 'frames/s');

    // qemu-nbd on the raw file (page cache warm): the local-disk peer.
    const qport = await freePort();
    const q = spawn('qemu-nbd', ['-f', 'raw', '-t', '-b', '127.0.0.1', '-p', String(qport), '-x', 'bench', '--shared=8', raw], { stdio: 'ignore' });
    children.push(q);
    await waitForPort(qport, q, 'qemu-nbd');
    const peer = fioRandRead(`nbd://127.0.0.1:${qport}/bench`, passSeconds);
    q.kill('SIGTERM');
    row('qemu-nbd, raw file (peer)', peer);

    const bound = `QD/latency = ${Math.round(32 / (latencyMs / 1000))}`;
    srv = await serve([]);
    row('no disk cache, cold (RAM read cache 256 MiB)', fioRandRead(srv.uri, passSeconds), `(${bound})`);
    await srv.stop();

    const cacheDir = path.join(dir, 'disk-cache');
    const cacheArgs = ['--disk-cache', cacheDir, '--disk-cache-size', '2G'];
    srv = await serve(cacheArgs);
    const cold = fioRandRead(srv.uri, passSeconds);
    row('disk cache 2 GiB, cold (empty)', cold, `= ${(cold / (32 / (latencyMs / 1000))).toFixed(2)} × QD/latency`);
    await srv.stop();
    // Warm, then a restart, twice over (the second round from an empty cache again): a warm and a
    // restarted pass are 10 s apart on a shared machine whose load moves by 2x within a minute,
    // so each restart is compared with the warm pass just before it.
    for (let round = 1; round <= 2; round++) {
      rmSync(cacheDir, { recursive: true, force: true }); // the warm figure starts from a `cache warm`, not from the cold pass
      srv = await serve(cacheArgs);
      const t0 = Date.now();
      cli('cache', 'warm', 'bench');
      const warmSecs = (Date.now() - t0) / 1000;
      const warm = fioRandRead(srv.uri, passSeconds);
      row(`disk cache, after \`cache warm\` (${warmSecs.toFixed(1)} s for ${sizeMiB} MiB), round ${round}`, warm, `= ${(warm / peer).toFixed(2)} × qemu-nbd`);
      await srv.stop();
      srv = await serve(cacheArgs);
      const restarted = fioRandRead(srv.uri, passSeconds);
      row(`disk cache, first pass after a restart, round ${round}`, restarted, `= ${(restarted / warm).toFixed(2)} × warm`);
      await srv.stop();
      // the same, the pass starting as late after the server's start as the warm pass did
      // (after its `cache warm`): what the server's first seconds cost, apart from the cache
      srv = await serve(cacheArgs);
      await new Promise((r) => setTimeout(r, warmSecs * 1000));
      const later = fioRandRead(srv.uri, passSeconds);
      row(`disk cache, first pass ${warmSecs.toFixed(0)} s after a restart, round ${round}`, later, `= ${(later / warm).toFixed(2)} × warm`);
      await srv.stop();
    }
    srv = await serve([]);
    row('no disk cache, first pass after a restart', fioRandRead(srv.uri, passSeconds));
    await srv.stop();
    srv = await serve([]);
    row('sequential export, cold from S3, no disk cache (nbdcopy → null:)', exportToNull(srv.uri), '(target ≥ 600)', 'MB/s');
    await srv.stop();
    srv = await serve(cacheArgs);
    row('sequential export, disk cache warm (a restarted server: RAM cold)', exportToNull(srv.uri), '', 'MB/s');
    await srv.stop();
    await storeLevel(u.toString(), dir, rows);
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    proxy.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
    // The test gateway keeps objects in memory: leave nothing behind.
    const store = openStore(direct);
    const keys: string[] = [];
    for await (const info of store.list('')) keys.push(info.key);
    for (let i = 0; i < keys.length; i += 1000) await store.deleteMany(keys.slice(i, i + 1000));
    await store.close();
  }
  let rev = '?';
  try {
    rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8' }).trim();
  } catch {
    // not a git checkout
  }
  console.log(`\n${new Date().toISOString()} rev ${rev}, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`Disk cache: 4k random read, QD32, fio nbd engine, ${sizeMiB} MiB volume on S3 (RGW) + ${latencyMs} ms per request, ${passSeconds} s per pass`);
  const w = Math.max(...rows.map((r) => r[0].length));
  for (const r of rows) console.log(`  ${r[0].padEnd(w)}  ${r[1].padStart(7)} ${r[3].padEnd(8)}  ${r[2]}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
