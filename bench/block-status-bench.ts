// npm run bench (changed-block tracking part): BLOCK_STATUS on a 1 TiB volume through a real
// client (python3-libnbd), for qemu:dirty-bitmap:S1 on VOL@S2 and on the live VOL, beside its
// peer base:allocation on the same exports in the same run. Every context is computed from
// manifests in memory; the first dirty-bitmap request loads S1's manifest pages (256 for 1 TiB).
// The volume holds scattered data in every manifest page: 640 chunks at S1, 320 more changed
// (written or trimmed) by S2, and a few writes on the live volume that were never flushed.
// Prints a table; nothing is asserted.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Manifest, newObjectId } from '../src/volume/manifest';
import { allocationDepthState, chunkRuns, dirtyState } from '../src/volume/changed-blocks';

const REPO = path.resolve(__dirname, '../..');
const CLI = path.join(REPO, 'bin/nbd-vault.js');
const PYTHON = '/usr/bin/python3';
const TIB = 2 ** 40;
const CHUNK = 4 * 2 ** 20;
const REPEATS = 50;

const dir = mkdtempSync(path.join(os.tmpdir(), 'nbd-vault-bsbench-'));
const env = { ...process.env, NBD_VAULT_STORE: path.join(dir, 'data'), NBD_VAULT_KEYS: path.join(dir, 'keys'), NBD_VAULT_STATE: path.join(dir, 'state'), NBD_VAULT_LOG_LEVEL: 'warn' };
const cli = (...args: string[]) => execFileSync(process.execPath, [CLI, ...args], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Writes (4 KiB at the start of each chunk) or trims (whole chunks), then FLUSH unless told not to. */
function touch(uri: string, writes: number[], trims: number[], flush = true): void {
  const script = [
    'import nbd, sys, json',
    'h = nbd.NBD(); h.connect_uri(sys.argv[1]); a = json.loads(sys.argv[2])',
    `for c in a["w"]: h.pwrite(bytes([c % 251 + 1]) * 4096, c * ${CHUNK})`,
    `for c in a["t"]: h.trim(${CHUNK}, c * ${CHUNK})`,
    'if a["f"]: h.flush()',
    'h.shutdown()',
  ].join('\n');
  execFileSync(PYTHON, ['-c', script, uri, JSON.stringify({ w: writes, t: trims, f: flush })], { stdio: 'inherit' });
}

function timing(uri: string, context: string): { cold_ms: number; median_ms: number; max_ms: number; walk_ms: number; walk_requests: number } {
  return JSON.parse(execFileSync(PYTHON, [path.join(REPO, 'bench/block_status_timing.py'), uri, context, String(REPEATS)], { encoding: 'utf8' }));
}

/** The computation alone, in-process: the same layout as the served volume, median of 20 runs. */
function inProcess(): void {
  const chunks = TIB / CHUNK;
  const s1 = new Manifest(chunks);
  for (let i = 0; i < 640; i++) s1.set(Math.floor((i * chunks) / 640) + 7, { id: newObjectId(), epoch: 1, storedSize: 1 });
  const s2 = new Manifest(chunks);
  for (let i = 0; i < chunks; i++) if (!s1.isZero(i)) s2.set(i, s1.get(i));
  for (let i = 0; i < 240; i++) s2.set(Math.floor((i * chunks) / 240) + 100, { id: newObjectId(), epoch: 2, storedSize: 1 });
  const median = (work: () => unknown) => {
    const times: number[] = [];
    for (let k = 0; k < 20; k++) {
      const t = process.hrtime.bigint();
      work();
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    return times.sort((a, b) => a - b)[10].toFixed(2);
  };
  console.log('In-process, whole 1 TiB in one call (median of 20):');
  console.log(`  qemu:dirty-bitmap:s1 on s2 (240 chunks rewritten, spread over every page): ${median(() => chunkRuns(dirtyState(s1, s2), 0, TIB, TIB))} ms`);
  console.log(`  qemu:dirty-bitmap over identical manifests (peer: nothing changed): ${median(() => chunkRuns(dirtyState(s2, s2), 0, TIB, TIB))} ms`);
  console.log(`  qemu:allocation-depth of s2: ${median(() => chunkRuns(allocationDepthState(s2, false), 0, TIB, TIB))} ms`);
}

async function main(): Promise<void> {
  inProcess();
  cli('keys', 'init');
  cli('init');
  cli('volume', 'create', 'big', '--size', String(TIB));
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  let port = 0;
  while (!(port = Number(/nbd:\/\/127\.0\.0\.1:(\d+)\//.exec(log)?.[1] ?? 0))) {
    if (child.exitCode !== null) throw new Error(`server exited: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const uri = (name: string) => `nbd://127.0.0.1:${port}/${name}`;
  try {
    const chunks = TIB / CHUNK;
    const s1 = Array.from({ length: 640 }, (_, i) => Math.floor((i * chunks) / 640) + 7);
    touch(uri('big'), s1, []);
    cli('snapshot', 'big', 's1');
    const rewrite = Array.from({ length: 240 }, (_, i) => Math.floor((i * chunks) / 240) + 100);
    const trimmed = s1.filter((_, i) => i % 8 === 0); // 80 trims of S1 data
    touch(uri('big'), rewrite, trimmed);
    cli('snapshot', 'big', 's2');
    touch(uri('big'), [5, 50_000, 200_000], [], false); // never flushed: still in the write cache
    const rows: Array<[string, string, ReturnType<typeof timing>]> = [];
    for (const [exp, ctx] of [
      ['big@s2', 'base:allocation'],
      ['big@s2', 'qemu:dirty-bitmap:s1'],
      ['big', 'base:allocation'],
      ['big', 'qemu:dirty-bitmap:s1'],
      ['big', 'qemu:allocation-depth'],
    ]) {
      rows.push([exp, ctx, timing(uri(exp), ctx)]);
    }
    console.log(`BLOCK_STATUS on a 1 TiB volume (262,144 chunks, 256 manifest pages), python3-libnbd, ${REPEATS} requests of 4 GiB at random offsets`);
    console.log('export    context                  first (ms)  median (ms)  max (ms)  whole 1 TiB walk (ms, requests)');
    for (const [exp, ctx, r] of rows) {
      console.log(`${exp.padEnd(9)} ${ctx.padEnd(24)} ${r.cold_ms.toFixed(2).padStart(10)}  ${r.median_ms.toFixed(2).padStart(11)}  ${r.max_ms.toFixed(2).padStart(8)}  ${r.walk_ms.toFixed(1).padStart(8)} (${r.walk_requests})`);
    }
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
