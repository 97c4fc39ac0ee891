// npm run bench (sync part): `nbd-vault sync --to` throughput, fs→fs and (with
// NBD_VAULT_TEST_S3_URL set) RGW→fs, beside a peer measured in the same run on the same objects:
//   - fs→fs peer: `cp -r` of the source vault directory (plain file copies, no fsync);
//   - RGW→fs peer: the same objects fetched with 16 parallel GETs (our S3 store), written nowhere:
//     what the link gives.
// Also: a second sync (nothing to copy: listing + manifest reads only).
// Env: BENCH_SYNC_MB (default 256): random data imported into one volume, one snapshot.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { openStore } from '../src/store';

const REPO = path.resolve(__dirname, '../..');
const CLI = path.join(REPO, 'bin/nbd-vault.js');
const MB = 1e6;
const sizeMiB = Number(process.env.BENCH_SYNC_MB ?? 256);

function timed<T>(work: () => T): [T, number] {
  const t = process.hrtime.bigint();
  const r = work();
  return [r, Number(process.hrtime.bigint() - t) / 1e9];
}

async function timedAsync<T>(work: () => Promise<T>): Promise<[T, number]> {
  const t = process.hrtime.bigint();
  const r = await work();
  return [r, Number(process.hrtime.bigint() - t) / 1e9];
}

function makeVault(dir: string, store: string) {
  const env = { ...process.env, NBD_VAULT_STORE: store, NBD_VAULT_KEYS: path.join(dir, 'keys'), NBD_VAULT_STATE: path.join(dir, 'state'), NBD_VAULT_LOG_LEVEL: 'warn' };
  const cli = (...args: string[]) => execFileSync(process.execPath, [CLI, ...args], { env, cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  cli('keys', 'init');
  cli('init');
  cli('volume', 'create', 'bench', '--size', `${sizeMiB}M`);
  const image = path.join(dir, 'image.raw');
  writeFileSync(image, randomBytes(sizeMiB * 2 ** 20));
  cli('import', image, 'bench');
  rmSync(image);
  cli('snapshot', 'create', 'bench', 's1');
  return cli;
}

async function peerGet(storeUrl: string): Promise<number> {
  const store = openStore(storeUrl);
  const keys: string[] = [];
  for await (const info of store.list('volumes/')) keys.push(info.key);
  let bytes = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < keys.length) {
        const { body } = await store.get(keys[next++]);
        bytes += body.length;
      }
    }),
  );
  await store.close();
  return bytes;
}

async function peerCopy(from: string, to: string): Promise<number> {
  const src = openStore(from);
  const dst = openStore(to);
  const keys: string[] = [];
  for await (const info of src.list('volumes/')) keys.push(info.key);
  let bytes = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < keys.length) {
        const key = keys[next++];
        const { body } = await src.get(key);
        await dst.put(key, body);
        bytes += body.length;
      }
    }),
  );
  await src.close();
  await dst.close();
  return bytes;
}

async function main(): Promise<void> {
  const rows: string[][] = [];
  const root = mkdtempSync(path.join(os.tmpdir(), 'nbd-vault-sync-bench-'));
  try {
    // fs → fs
    const fsDir = path.join(root, 'fs');
    execFileSync('mkdir', ['-p', fsDir]);
    const cli = makeVault(fsDir, path.join(fsDir, 'data'));
    const [out, secs] = timed(() => cli('sync', '--to', path.join(fsDir, 'replica'), '--json'));
    const r = JSON.parse(out);
    rows.push(['fs→fs: sync (first, everything)', `${(r.bytes / MB / secs).toFixed(0)} MB/s`, `${r.copied} objects, ${(r.bytes / MB).toFixed(0)} MB in ${secs.toFixed(2)} s`]);
    const [, cpSecs] = timed(() => execFileSync('sh', ['-c', 'cp -r "$0" "$1" && sync -f "$1"', path.join(fsDir, 'data'), path.join(fsDir, 'peer-copy')]));
    rows.push(['fs→fs peer: cp -r of the vault directory + sync -f', `${(r.bytes / MB / cpSecs).toFixed(0)} MB/s`, `${cpSecs.toFixed(2)} s`]);
    const [copied, storeSecs] = await timedAsync(() => peerCopy(path.join(fsDir, 'data'), path.join(fsDir, 'peer-store')));
    rows.push(['fs→fs peer: the same objects get→put through FsStore, 16 parallel', `${(copied / MB / storeSecs).toFixed(0)} MB/s`, `${storeSecs.toFixed(2)} s (fsync per object, as sync)`]);
    const [, startSecs] = timed(() => cli('volume', 'list'));
    rows.push(['CLI start + vault open (volume list), for scale', `${startSecs.toFixed(2)} s`, '']);
    const [again, againSecs] = timed(() => JSON.parse(cli('sync', '--to', path.join(fsDir, 'replica'), '--json')));
    rows.push(['fs→fs: second sync (nothing new)', `${againSecs.toFixed(2)} s`, `${again.copied} copied, ${again.skipped} skipped`]);

    // RGW → fs
    const s3 = process.env.NBD_VAULT_TEST_S3_URL;
    if (s3) {
      const u = new URL(s3);
      u.pathname = `${u.pathname.replace(/\/$/, '')}/sync-bench-${randomBytes(6).toString('hex')}`;
      const s3Dir = path.join(root, 's3');
      execFileSync('mkdir', ['-p', s3Dir]);
      const s3cli = makeVault(s3Dir, u.toString());
      const [s3out, s3secs] = timed(() => s3cli('sync', '--to', path.join(s3Dir, 'replica'), '--json'));
      const s = JSON.parse(s3out);
      rows.push(['RGW→fs: sync (first, everything)', `${(s.bytes / MB / s3secs).toFixed(0)} MB/s`, `${s.copied} objects, ${(s.bytes / MB).toFixed(0)} MB in ${s3secs.toFixed(2)} s`]);
      const [got, getSecs] = await timedAsync(() => peerGet(u.toString()));
      rows.push(['RGW peer: the same objects, 16 parallel GETs, no writes', `${(got / MB / getSecs).toFixed(0)} MB/s`, `${getSecs.toFixed(2)} s`]);
    } else rows.push(['RGW→fs', 'skipped', 'NBD_VAULT_TEST_S3_URL is not set']);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  const w = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log(`sync of one snapshot of ${sizeMiB} MiB of random data (incompressible: objects ≈ chunks), --parallel 16`);
  for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(w[c])).join('  '));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
