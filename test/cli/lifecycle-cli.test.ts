// Lifecycle safety from the command line: a lost `vault` object (serve refuses instead of
// exporting an empty disk over the volumes; init --recover rebuilds it), and `import` of an
// image smaller than the volume (nothing of the old content survives past its end).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { spawn } from 'node:child_process';
import { CLI, makeTestVault } from '../helpers/vault-server';

const MiB = 2 ** 20;

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? files(join(dir, n)) : [join(dir, n)]));
}
// (CLI from the helper)

test('a vault with volume objects but no volume (a replica whose first sync was cut off, lost metadata): serve makes no default volume in it, and says why', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'disk', '--size', '16M');
  writeFileSync(join(v.dir, 'some.img'), randomBytes(MiB));
  await v.cli('import', join(v.dir, 'some.img'), 'disk');
  const id = JSON.parse((await v.cli('volume', 'info', 'disk', '--json')).stdout).id as string;
  rmSync(files(v.storeUrl).find((f) => f.includes(id) && basename(f) === 'meta')!);
  const serve = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0'], { env: v.env, cwd: v.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  serve.stdout.on('data', (b) => (output += b));
  serve.stderr.on('data', (b) => (output += b));
  // (a server that made a default volume serves on: stopped after 30 s, it fails the test)
  const stop = setTimeout(() => serve.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((resolve) => serve.on('exit', resolve));
  clearTimeout(stop);
  assert.notEqual(code, null, `serve must stop by itself: ${output}`);
  assert.notEqual(code, 0, `serve must fail: ${output}`);
  assert.match(output, new RegExp(`objects of 1 volume\\(s\\) without metadata \\(ids ${id}\\): a replica whose sync was cut off`));
  assert.match((await v.cli('volume', 'list')).stdout, /No volumes|no volumes/i, 'no default volume was made');
});

test('a lost vault object: serve stops and says how to recover; init --recover rebuilds it', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'disk', '--size', '16M');
  const image = join(v.dir, 'in.img');
  const data = randomBytes(4 * MiB);
  writeFileSync(image, data);
  await v.cli('import', image, 'disk');
  // the fs store keeps `vault` under a fan-out directory, after a header of its own
  const vaultFile = files(v.storeUrl).find((f) => basename(f) === 'vault')!;
  assert.ok(vaultFile, 'the vault object is in the store');
  const text = readFileSync(vaultFile, 'utf8');
  const vaultId = JSON.parse(text.slice(text.indexOf('{\n  "format"'))).vaultId as string;
  assert.match(vaultId, /^[0-9a-f]{32}$/);
  rmSync(vaultFile);

  // serve's first-run path must not make a new vault (nor a new key) over the volumes
  const serve = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0'], { env: v.env, cwd: v.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  serve.stdout.on('data', (b) => (output += b));
  serve.stderr.on('data', (b) => (output += b));
  const code = await new Promise<number | null>((resolve) => serve.on('exit', resolve));
  assert.notEqual(code, 0, `serve must fail: ${output}`);
  assert.match(output, /holds 1 volume\(s\) but no `vault` object/);
  assert.match(output, /init --recover/);
  assert.ok(!existsSync(vaultFile), 'no vault object was created');

  // any other command says the same, not "run nbd-vault init" (which refuses)
  const list = await v.cliResult('volume', 'list');
  assert.equal(list.code, 1);
  assert.match(list.stderr, /holds 1 volume\(s\) but no `vault` object: .*nbd-vault init --recover/);
  const plain = await v.cliResult('init');
  assert.equal(plain.code, 1);
  assert.match(plain.stderr, /no `vault` object/);
  const rebuilt = await v.cli('init', '--recover');
  assert.match(rebuilt.stdout, new RegExp(`rebuilt the vault object of vault ${vaultId}`));
  const out = join(v.dir, 'out.img');
  await v.cli('export', 'disk', out);
  assert.ok(readFileSync(out).subarray(0, 4 * MiB).equals(data), 'the volume reads as before');
});

test('import of an image smaller than the volume leaves nothing of the old content past its end', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'disk', '--size', '16M');
  const big = join(v.dir, 'big.img');
  writeFileSync(big, randomBytes(16 * MiB));
  await v.cli('import', big, 'disk');
  const small = join(v.dir, 'small.img');
  const smallData = randomBytes(5 * MiB + 4096); // ends inside a chunk
  writeFileSync(small, smallData);
  const r = await v.cli('import', small, 'disk');
  assert.match(r.stdout, /past its end now read as zeros/);
  const out = join(v.dir, 'out.img');
  await v.cli('export', 'disk', out);
  const got = readFileSync(out);
  assert.equal(got.length, 16 * MiB);
  assert.ok(got.subarray(0, smallData.length).equals(smallData));
  assert.ok(got.subarray(smallData.length).equals(Buffer.alloc(16 * MiB - smallData.length)), 'zeros past the image');
});
