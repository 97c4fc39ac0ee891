// Hostile and greedy clients against a vault export on the fs store (issue 18). Prints:
//   1. one raw-socket client writes 1 MiB at offset 0, then pipelines 1,000 NBD_CMD_READs of
//      64 KiB inside that chunk and never reads a reply: the server's RSS growth (sampled every
//      5 ms) beside the per-connection in-flight budget + one decoded chunk, and the latency of
//      new clients (TCP connect + handshake + a 4 KiB read) probed one after another meanwhile.
//      Three variants: the chunk still dirty (write cache), the same chunk after a flush (read
//      cache), and reads spread over 64 data-bearing chunks with a 16 MiB read cache (misses).
//      A first row without any flood: what the rewrite of the chunk itself costs (a 4 MiB dirty
//      chunk, then its upload: sealing in the codec workers). Then four flooders at once (RSS
//      against 4 × budget + chunk). A last row floods a memory export (`serve --memory`: no
//      chunk, no decode) for what the NBD layer alone costs. Each probe's time is split into
//      connect + handshake (greeting to the GO reply) and the 4 KiB read after it.
//   2. fio (nbd engine, 4k randread, iodepth 32, warm data) alone, then beside four such
//      flooders holding their unread replies, then beside four flooders that reconnect and flood
//      again every 100 ms: the well-behaved client's share of its unloaded IOPS, in rounds (each
//      loaded run against the alone run just before it: the machine's load drifts).
// Env: BENCH_FIO_SECONDS (default 3), BENCH_FIO_ROUNDS (default 3); BENCH_HOSTILE_PARTS=floods
// or =fio runs one part only.
// Nothing is asserted: figures go to BENCHMARKS.md.
//   npm run build && node dist/bench/hostile-bench.js
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { DEFAULT_MAX_IN_FLIGHT_BYTES } from '../src/nbd/limits';
import { CHUNK_SIZE } from '../src/volume/chunk-math';
import { Wire, greet, go, readSimpleReply, request } from '../test/nbd/raw-client';

const REPO = path.resolve(__dirname, '../..');
const CLI = path.join(REPO, 'bin/nbd-vault.js');
const MIB = 2 ** 20;
const FIO_SECONDS = Number(process.env.BENCH_FIO_SECONDS ?? 3);
const FIO_ROUNDS = Number(process.env.BENCH_FIO_ROUNDS ?? 3);
const PARTS = process.env.BENCH_HOSTILE_PARTS ?? 'floods,fio';
const FLOOD_REQUESTS = 1000;
const FLOOD_LENGTH = 64 * 1024;
/** a flood whose server grows past this is cut short (the unfixed server reached 4 GB) */
const SAFETY_GROWTH = 3 * 1024 * MIB;
const NBD_CMD_READ = 0;
const NBD_CMD_WRITE = 1;
const NBD_CMD_FLUSH = 3;

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Server {
  private log = '';
  port = 0;
  private constructor(readonly child: ChildProcess) {}

  static async start(env: NodeJS.ProcessEnv, cwd: string, extra: string[]): Promise<Server> {
    const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--log-level', 'info', ...extra], { env, cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    const s = new Server(child);
    child.stderr!.on('data', (d) => (s.log = (s.log + d).slice(-200_000)));
    const t0 = Date.now();
    while (!(s.port = Number(/"port":(\d+)[^\n]*"msg":"listening"/.exec(s.log)?.[1] ?? 0))) {
      if (child.exitCode !== null) throw new Error(`server exited: ${s.log}`);
      if (Date.now() - t0 > 60_000) throw new Error(`server did not start: ${s.log}`);
      await sleep(50);
    }
    return s;
  }

  get pid(): number {
    return this.child.pid!;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 60_000);
    await exited;
    clearTimeout(t);
  }
}

async function connect(port: number, structured = false): Promise<Wire> {
  const w = new Wire(port);
  await greet(w);
  await go(w, 'disk', structured);
  return w;
}

async function writeAt(w: Wire, offset: number, data: Buffer, handle: number): Promise<void> {
  await w.write(request(NBD_CMD_WRITE, 0, handle, offset, data.length, data));
  const r = await readSimpleReply(w);
  if (r.error !== 0) throw new Error(`write at ${offset}: error ${r.error}`);
}

async function flush(w: Wire): Promise<void> {
  await w.write(request(NBD_CMD_FLUSH, 0, 999_999, 0, 0));
  const r = await readSimpleReply(w);
  if (r.error !== 0) throw new Error(`flush: error ${r.error}`);
}

/** A client that pipelines `n` reads and never reads a reply (its socket stays paused). */
async function flooder(port: number, offsetOf: (i: number) => number, n = FLOOD_REQUESTS): Promise<Wire> {
  const w = await connect(port);
  w.sock.pause();
  w.sock.removeAllListeners('data');
  const reqs = Buffer.concat(Array.from({ length: n }, (_, i) => request(NBD_CMD_READ, 0, i + 1, offsetOf(i), FLOOD_LENGTH)));
  w.sock.write(reqs);
  return w;
}

interface Probe {
  /** TCP connect + greeting + options up to the GO reply */
  handshake: number;
  /** one 4 KiB read after it */
  read: number;
  total: number;
}

/** New client: TCP connect + handshake + one 4 KiB read, checked against `expect`. */
async function probe(port: number, offset: number, expect: Buffer): Promise<Probe> {
  const t0 = performance.now();
  let t1 = Infinity;
  let w: Wire | null = null;
  try {
    w = await connect(port);
    t1 = performance.now();
    await w.write(request(NBD_CMD_READ, 0, 1, offset, 4096));
    const r = await readSimpleReply(w, 4096);
    if (r.error !== 0 || !r.data.equals(expect)) throw new Error('probe read returned wrong data');
    const t2 = performance.now();
    return { handshake: t1 - t0, read: t2 - t1, total: t2 - t0 };
  } catch (err) {
    // the unfixed server did not even send the greeting within Wire's 10 s timeout
    if (!/timeout/.test((err as Error).message)) throw err;
    return { handshake: t1 === Infinity ? Infinity : t1 - t0, read: Infinity, total: Infinity };
  } finally {
    w?.destroy();
  }
}

interface FloodFigures {
  growthMiB: number;
  probes: Probe[];
  cut: boolean;
}

/** Starts `flood()`, samples RSS and probes new clients for `windowMs`, then drops the flood. */
async function measureFlood(srv: Server, flood: () => Promise<Wire[]>, probeAt: number, expect: Buffer, windowMs = 2000): Promise<FloodFigures> {
  await sleep(300);
  const base = rssBytes(srv.pid);
  let peak = base;
  let cut = false;
  let wires: Wire[] = [];
  const sampler = setInterval(() => {
    const rss = rssBytes(srv.pid);
    peak = Math.max(peak, rss);
    if (rss - base > SAFETY_GROWTH && !cut) {
      cut = true;
      for (const w of wires) w.destroy();
    }
  }, 5);
  const probes: Probe[] = [];
  try {
    wires = await flood();
    const end = Date.now() + windowMs;
    while (Date.now() < end) {
      probes.push(await probe(srv.port, probeAt, expect));
      await sleep(50);
    }
  } finally {
    clearInterval(sampler);
    for (const w of wires) w.destroy();
  }
  await sleep(500); // let the server drop the connections before the next measurement
  return { growthMiB: (peak - base) / MIB, probes, cut };
}

/** fio in a child process (this event loop stays free for the flooders): its read IOPS. */
function fioAsync(port: number, seconds: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const child = spawn('fio', ['--name=wb', '--ioengine=nbd', `--uri=nbd://127.0.0.1:${port}/disk`, '--rw=randread', '--bs=4k', '--iodepth=32', '--offset=16M', '--size=32M', `--runtime=${seconds}`, '--time_based', '--output-format=json']);
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out.slice(out.indexOf('{'))).jobs[0].read.iops) : reject(new Error(`fio exited ${code}`))));
  });
}

const fmt = (ms: number) => (ms === Infinity ? 'timeout (10 s)' : ms.toFixed(ms < 10 ? 1 : 0));
function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  return `median ${fmt(s[Math.floor(s.length / 2)])} ms, max ${fmt(s[s.length - 1])} ms (${s.length} probes)`;
}
/** p50 / p90 / max of one part of the probes, in ms */
function spread(ps: Probe[], part: keyof Probe): string {
  const s = ps.map((p) => p[part]).sort((a, b) => a - b);
  const at = (q: number) => fmt(s[Math.min(s.length - 1, Math.floor(q * s.length))]);
  return `${at(0.5)} / ${at(0.9)} / ${fmt(s[s.length - 1])}`;
}
const under = (ps: Probe[], ms: number) => `${ps.filter((p) => p.total < ms).length}/${ps.length}`;

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nbd-hostile-bench-'));
  const env = { ...process.env, NBD_VAULT_STORE: path.join(dir, 'data'), NBD_VAULT_KEYS: path.join(dir, 'keys'), NBD_VAULT_STATE: path.join(dir, 'state'), NBD_VAULT_LOG_LEVEL: 'warn', NBD_VAULT_WORKERS: '2' };
  const cli = (...args: string[]) => execFileSync(process.execPath, [CLI, ...args], { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const budgetMiB = DEFAULT_MAX_IN_FLIGHT_BYTES / MIB;
  const chunkMiB = CHUNK_SIZE / MIB;
  let srv: Server | null = null;
  try {
    cli('keys', 'init');
    cli('init');
    cli('volume', 'create', 'disk', '--size', '1G');
    // Seed: chunk 0 (1 MiB at 0), fio's 32 MiB at 16 MiB, 64 KiB in each of 64 chunks from 64 MiB.
    const first = randomBytes(MIB);
    srv = await Server.start(env, dir, []);
    const seed = await connect(srv.port);
    await writeAt(seed, 0, first, 1);
    const warm = randomBytes(32 * MIB);
    for (let at = 0; at < warm.length; at += 4 * MIB) await writeAt(seed, 16 * MIB + at, warm.subarray(at, at + 4 * MIB), 2 + at / MIB);
    for (let c = 1; c <= 64; c++) await writeAt(seed, 64 * MIB + c * CHUNK_SIZE, randomBytes(FLOOD_LENGTH), 100 + c);
    await flush(seed);
    seed.destroy();
    await srv.stop();
    srv = null;

    console.log(`hostile-client benchmark: vault export on the fs store, in-flight budget ${budgetMiB} MiB per connection, chunk ${chunkMiB} MiB, read cache 16 MiB; a fresh server per row`);
    console.log(`(load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} cores at the start: other work on the machine widens the latency figures)`);
    console.log('| flood: 1,000 unread 64 KiB reads per client | RSS growth | limit | new client alone: connect + handshake + 4 KiB read | during the flood: handshake p50 / p90 / max (ms) | 4 KiB read p50 / p90 / max (ms) | both, max | under 200 ms |');
    console.log('|---|---|---|---|---|---|---|---|');
    const sameChunk = (i: number) => ((i * 7) % 16) * FLOOD_LENGTH;
    const rows: Array<[string, boolean, (i: number) => number, number, string]> = [
      ['no flood: the same rewrite of chunk 0 (and its writeback) alone', true, sameChunk, 0, '—'],
      ['same chunk, dirty (just rewritten)', true, sameChunk, 1, `${budgetMiB + chunkMiB} MiB (budget + chunk)`],
      ['same chunk, clean (read cache)', false, sameChunk, 1, `${budgetMiB + chunkMiB} MiB (budget + chunk)`],
      ['64 chunks, read-cache misses', false, (i) => 64 * MIB + ((i % 64) + 1) * CHUNK_SIZE, 1, `${budgetMiB + 16 * chunkMiB} MiB (budget + 16 fetches)`],
      ['four such clients at once, same chunk, dirty', true, sameChunk, 4, `${4 * budgetMiB + chunkMiB} MiB (4 × budget + chunk)`],
    ];
    for (const [label, dirty, offsetOf, clients, limit] of PARTS.includes('floods') ? rows : []) {
      srv = await Server.start(env, dir, ['--read-cache', '16M']);
      const s = srv;
      const w = await connect(s.port);
      // warm the codec workers and caches: a read of chunk 0 (decode), a write+flush elsewhere (seal)
      await w.write(request(NBD_CMD_READ, 0, 1, 0, 4096));
      await readSimpleReply(w, 4096);
      await writeAt(w, 8 * MIB, randomBytes(4096), 2);
      await flush(w);
      const alone: Probe[] = [];
      for (let k = 0; k < 5; k++) alone.push(await probe(s.port, 0, first.subarray(0, 4096)));
      if (dirty) await writeAt(w, 0, first, 3); // same bytes: the chunk is dirty for the flood
      const f = await measureFlood(s, () => Promise.all(Array.from({ length: clients }, () => flooder(s.port, offsetOf))), 0, first.subarray(0, 4096));
      console.log(`| ${label} | ${f.cut ? '> ' : ''}${f.growthMiB.toFixed(0)} MiB | ${limit} | ${stats(alone.map((p) => p.total))} | ${spread(f.probes, 'handshake')} | ${spread(f.probes, 'read')} | ${fmt(Math.max(...f.probes.map((p) => p.total)))} | ${under(f.probes, 200)} |`);
      w.destroy();
      await s.stop();
      srv = null;
    }

    if (PARTS.includes('floods')) {
      // the same flood on a memory export: what the NBD layer costs without chunks and decoding
      srv = await Server.start(env, dir, ['--memory', 'disk=1G']);
      const s = srv;
      const w = await connect(s.port);
      await writeAt(w, 0, first, 1);
      const alone: Probe[] = [];
      for (let k = 0; k < 5; k++) alone.push(await probe(s.port, 0, first.subarray(0, 4096)));
      const f = await measureFlood(s, () => flooder(s.port, sameChunk).then((x) => [x]), 0, first.subarray(0, 4096));
      console.log(`| memory export (serve --memory: no chunk, no decode) | ${f.growthMiB.toFixed(0)} MiB | ${budgetMiB} MiB (budget) | ${stats(alone.map((p) => p.total))} | ${spread(f.probes, 'handshake')} | ${spread(f.probes, 'read')} | ${fmt(Math.max(...f.probes.map((p) => p.total)))} | ${under(f.probes, 200)} |`);
      w.destroy();
      await s.stop();
      srv = null;
    }

    // 2. a well-behaved client (fio) beside four flooders; a read cache that holds fio's 32 MiB
    if (!PARTS.includes('fio')) return;
    // The machine is shared: fio alone, beside the holders and beside the re-flooders run in
    // turn, FIO_ROUNDS times, and each loaded run is compared with the alone run just before it.
    srv = await Server.start(env, dir, ['--read-cache', '64M']);
    const s = srv;
    await fioAsync(s.port, 2); // warm the cache
    const fioRows: Array<{ alone: number; held: number; reflood: number; floods: number }> = [];
    for (let round = 0; round < FIO_ROUNDS; round++) {
      const alone = await fioAsync(s.port, FIO_SECONDS);
      const holders = await Promise.all(Array.from({ length: 4 }, () => flooder(s.port, (i) => ((i * 7) % 16) * FLOOD_LENGTH)));
      const held = await fioAsync(s.port, FIO_SECONDS);
      for (const w of holders) w.destroy();
      await sleep(500);
      let looping = true;
      let floods = 0;
      const loops = Array.from({ length: 4 }, async () => {
        while (looping) {
          const w = await flooder(s.port, (i) => ((i * 7) % 16) * FLOOD_LENGTH);
          await sleep(100);
          w.destroy();
          floods++;
        }
      });
      const reflood = await fioAsync(s.port, FIO_SECONDS); // fio runs in a child: the loops need this event loop
      looping = false;
      await Promise.all(loops);
      await sleep(500);
      fioRows.push({ alone, held, reflood, floods });
    }
    const pct = (x: number, of: number) => `${((100 * x) / of).toFixed(0)} %`;
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log('');
    console.log(`| well-behaved client: fio nbd 4k randread QD32, ${FIO_SECONDS} s runs, warm data, ${FIO_ROUNDS} rounds | alone (IOPS) | beside 4 clients holding 1,000 unread 64 KiB reads each | beside 4 clients flooding anew every 100 ms |`);
    console.log('|---|---|---|---|');
    fioRows.forEach((r, k) => console.log(`| round ${k + 1} | ${r.alone.toFixed(0)} | ${r.held.toFixed(0)} (${pct(r.held, r.alone)}) | ${r.reflood.toFixed(0)} (${pct(r.reflood, r.alone)}, ${r.floods} floods of 1,000) |`));
    console.log(`| median share of alone | | ${median(fioRows.map((r) => (100 * r.held) / r.alone)).toFixed(0)} % | ${median(fioRows.map((r) => (100 * r.reflood) / r.alone)).toFixed(0)} % |`);
  } finally {
    await srv?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
