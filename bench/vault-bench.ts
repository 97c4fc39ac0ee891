// npm run bench (vault part): the product measured with real clients, beside the physical limits
// measured in the same run on the same image.
//   - import / export of a realistic disk image (ext4 from /usr, ~60 % full) with nbdcopy, flush
//     included, on the fs store and (when NBD_VAULT_TEST_S3_URL is set) on S3 (RGW);
//   - peak RSS of the server during the import, beside its cache limits;
//   - 4k random read IOPS with a warm cache (fio nbd engine, iodepth 32);
//   - a full-device TRIM of an empty 1 TiB volume;
//   - snapshot time on a 1 GiB and a 1 TiB volume, and restore throughput from VOL@SNAP.
// Env: BENCH_IMAGE_MB (default 1024). Prints a table; nothing is asserted.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { buildDiskImage, readChunks } from './disk-image';
import { rawAead, zstdBench } from './physical-limits';
import { freePort } from './bench-util';

const REPO = path.resolve(__dirname, '../..');
const CLI = path.join(REPO, 'bin/nbd-vault.js');
const MB = 1e6;
const imageMiB = Number(process.env.BENCH_IMAGE_MB ?? 1024);

function seconds(work: () => void): number {
  const t = process.hrtime.bigint();
  work();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

class Vault {
  readonly env: NodeJS.ProcessEnv;
  constructor(readonly dir: string, store: string) {
    mkdirSync(dir, { recursive: true });
    this.env = { ...process.env, NBD_VAULT_STORE: store, NBD_VAULT_KEYS: path.join(dir, 'keys'), NBD_VAULT_STATE: path.join(dir, 'state'), NBD_VAULT_LOG_LEVEL: 'warn' };
    this.cli('keys', 'init');
    this.cli('init');
  }
  cli(...args: string[]): string {
    return execFileSync(process.execPath, [CLI, ...args], { env: this.env, cwd: this.dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }
  async serve(): Promise<{ port: number; pid: number; stop: () => Promise<void>; peakRssMiB: () => number }> {
    const port = await freePort();
    const child = spawn(process.execPath, [CLI, 'serve', '--listen', `127.0.0.1:${port}`, '--log-level', 'info'], { env: this.env, cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr.on('data', (d) => (log += d));
    while (!log.includes('"msg":"listening"')) {
      if (child.exitCode !== null) throw new Error(`server exited: ${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return {
      port,
      pid: child.pid!,
      peakRssMiB: () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]) / 1024,
      stop: () =>
        new Promise((r) => {
          child.once('exit', () => r());
          child.kill('SIGTERM');
        }),
    };
  }
}

function nbdcopy(from: string, to: string): number {
  return seconds(() => execFileSync('nbdcopy', ['--flush', from, to], { stdio: 'inherit' }));
}

const limits = { compress: 0, open: 0 };

async function importExport(label: string, store: string, dir: string, image: string, rows: string[][]): Promise<void> {
  const v = new Vault(dir, store);
  v.cli('volume', 'create', 'bench', '--size', `${imageMiB}M`);
  let srv = await v.serve();
  const bytes = statSync(image).size;
  const imp = nbdcopy(image, `nbd://127.0.0.1:${srv.port}/bench`);
  const rss = srv.peakRssMiB();
  await srv.stop();
  srv = await v.serve(); // cold caches: every chunk comes from the store
  const exp = nbdcopy(`nbd://127.0.0.1:${srv.port}/bench`, 'null:');
  const ratio = (rate: number, limit: number) => `${(rate / limit).toFixed(2)} ×`;
  rows.push([`${label}: import (nbdcopy → vault, flush included)`, (bytes / imp / MB).toFixed(0), `MB/s = ${ratio(bytes / imp / MB, limits.compress)} the compress limit`]);
  rows.push([`${label}: export, cold cache (nbdcopy vault → null:)`, (bytes / exp / MB).toFixed(0), `MB/s = ${ratio(bytes / exp / MB, limits.open)} the open limit`]);
  rows.push([`${label}: server peak RSS during import (limits: 256 MiB dirty + 256 MiB read cache)`, rss.toFixed(0), 'MiB']);
  if (label === 'fs') {
    // 4k random reads with a warm cache: a 192 MiB region that fits the read cache
    const fio = ['--name=rr', '--ioengine=nbd', `--uri=nbd://127.0.0.1:${srv.port}/bench`, '--rw=randread', '--bs=4k', '--iodepth=32', '--size=192M', '--direct=1', '--output-format=json'];
    execFileSync('fio', [...fio, '--time_based', '--runtime=3'], { stdio: 'ignore' }); // warm up
    const out = execFileSync('fio', [...fio, '--time_based', '--runtime=10'], { encoding: 'utf8' });
    const iops = JSON.parse(out.slice(out.indexOf('{'))).jobs[0].read.iops;
    rows.push(['fs: 4k random read, warm cache (fio nbd, iodepth 32)', iops.toFixed(0), 'IOPS']);
    // snapshot of a 1 GiB volume with data, through the running server; restore throughput
    const snap1 = JSON.parse(v.cli('snapshot', 'bench', 's1', '--json'));
    rows.push([`snapshot of a ${imageMiB} MiB volume (CLI → admin socket → server; whole command)`, String(snap1.ms), 'ms']);
    await srv.stop();
    srv = await v.serve();
    const rest = nbdcopy(`nbd://127.0.0.1:${srv.port}/bench@s1`, path.join(dir, 'restored.img'));
    rows.push(['restore: nbdcopy bench@s1 → file, cold cache', (bytes / rest / MB).toFixed(0), 'MB/s']);
    // 1 TiB: full-device TRIM of an empty volume, then a snapshot after writing a few chunks
    v.cli('volume', 'create', 'tera', '--size', '1T');
    await srv.stop();
    srv = await v.serve();
    const trimPy = `import nbd,sys,time\nh=nbd.NBD()\nh.connect_uri(sys.argv[1])\nsize=h.get_size()\nstep=(1<<32)-(1<<20)\nt=time.time()\noff=0\nwhile off<size:\n  n=min(step,size-off); h.trim(n,off); off+=n\nh.flush()\nprint(time.time()-t)\n`;
    const trim = Number(execFileSync('/usr/bin/python3', ['-c', trimPy, `nbd://127.0.0.1:${srv.port}/tera`], { encoding: 'utf8' }));
    rows.push(['full-device TRIM of an empty 1 TiB volume (257 requests + flush)', (trim * 1000).toFixed(0), 'ms']);
    const wr = `import nbd,sys,os\nh=nbd.NBD()\nh.connect_uri(sys.argv[1])\nfor i in range(8): h.pwrite(os.urandom(1<<20), i*(1<<37))\nh.flush()\n`;
    execFileSync('/usr/bin/python3', ['-c', wr, `nbd://127.0.0.1:${srv.port}/tera`]);
    const snapT = JSON.parse(v.cli('snapshot', 'tera', 's1', '--json'));
    rows.push(['snapshot of a 1 TiB volume (8 chunks written; same command)', String(snapT.ms), 'ms']);
  }
  await srv.stop();
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nbd-vault-vbench-'));
  const rows: string[][] = [];
  try {
    const image = buildDiskImage(dir, imageMiB);
    const chunks = readChunks(image);
    const [, dec1] = zstdBench(image, 1);
    const [comp2] = zstdBench(image, 2);
    const [, aeadDec] = rawAead(chunks, randomBytes(32));
    const openLimit2 = 2 / (1 / dec1 + 1 / aeadDec);
    limits.compress = comp2;
    limits.open = openLimit2;
    rows.push(['limit: zstd -b3 -T2 compress (2 cores)', comp2.toFixed(0), 'MB/s']);
    rows.push(['limit: zstd -3 decompress + XChaCha20 decrypt, 2 cores', openLimit2.toFixed(0), 'MB/s']);
    await importExport('fs', path.join(dir, 'fs-vault', 'data'), path.join(dir, 'fs-vault'), image, rows);
    const s3 = process.env.NBD_VAULT_TEST_S3_URL;
    if (s3) {
      const u = new URL(s3);
      u.pathname = `${u.pathname.replace(/\/$/, '')}/bench-${randomBytes(4).toString('hex')}`;
      await importExport('s3 (RGW, memstore)', u.toString(), path.join(dir, 's3-vault'), image, rows);
    } else rows.push(['s3: skipped (no NBD_VAULT_TEST_S3_URL; scripts/rgw.sh start DIR PORT)', '', '']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const w = Math.max(...rows.map((r) => r[0].length));
  console.log(`\nnbd-vault, ${imageMiB} MiB ext4 image, ${os.availableParallelism()} cores\n`);
  for (const r of rows) console.log(`${r[0].padEnd(w)}  ${r[1].padStart(7)} ${r[2]}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
