// The npm package as a user gets it: `npm pack` from a clean copy of the sources (no dist/: the
// prepack script builds), the tarball's file list (the built code; no tests, sources or local
// data), `npm install -g` of the tarball into a temporary prefix with npm's strict install-script
// policy and the one approval the README documents, then the installed command: --version, a
// first `serve` that qemu-img talks to, and a clear message when zstd-napi was never built.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { commandExists, runCommand } from '../helpers/fuse-disk';
import { reapOnExit } from '../helpers/child-reaper';
import { REPO } from '../helpers/vault-server';

test('npm pack ships the built code only; npm install -g of the tarball gives a working nbd-vault', async (t) => {
  if (!(await commandExists('qemu-img'))) {
    if (process.env.NBD_VAULT_REQUIRE_ALL === '1') assert.fail('qemu-img is not installed');
    return t.skip('qemu-img is not installed');
  }
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-package-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // The Node running the tests runs npm and the installed command (CI: Node 24).
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}`, JOBS: 'max' };
  for (const k of Object.keys(env)) if (k.startsWith('NBD_VAULT_')) delete env[k];
  const version = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version as string;

  // A clean checkout: the tracked sources, the installed dependencies, and local data that must
  // not reach the package.
  const src = join(dir, 'src');
  for (const p of ['package.json', 'package-lock.json', 'tsconfig.json', 'README.md', 'bin', 'src', 'docs', 'contrib']) cpSync(join(REPO, p), join(src, p), { recursive: true });
  symlinkSync(join(REPO, 'node_modules'), join(src, 'node_modules'));
  for (const p of ['keys/master-key.json', 'data/v1/x', 'state/admin.sock', '.nbd-vault-test/x', 'test/e2e/fixture.raw', 'debug.log']) {
    mkdirSync(dirname(join(src, p)), { recursive: true });
    writeFileSync(join(src, p), 'local\n');
  }
  const packed = await runCommand('npm', ['pack', '--json', '--pack-destination', dir], { cwd: src, env, timeoutMs: 300_000 });
  const [{ filename, files }] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as [{ filename: string; files: { path: string }[] }];
  const paths = files.map((f) => f.path);
  for (const p of ['package.json', 'README.md', 'bin/nbd-vault.js', 'dist/src/cli/main.js', 'dist/src/codec/codec-worker.js', 'contrib/systemd/nbd-vault.service', 'docs/FORMAT.md']) {
    assert.ok(paths.includes(p), `the package has ${p}`);
  }
  const unwanted = paths.filter((p) => !/^(package\.json|README\.md|bin\/|dist\/src\/.*\.js$|docs\/|contrib\/)/.test(p));
  assert.deepEqual(unwanted, [], 'nothing else: no tests, no TypeScript sources, no source maps, no keys or local data');

  // Strict: any install script not approved would fail the install; the README's approval suffices.
  const prefix = join(dir, 'prefix');
  mkdirSync(join(prefix, 'lib'), { recursive: true });
  const install = await runCommand(
    'npm',
    ['install', '-g', '--prefix', prefix, '--prefer-offline', '--strict-allow-scripts', '--allow-scripts=zstd-napi', '--no-audit', '--no-fund', join(dir, filename)],
    { cwd: dir, env, timeoutMs: 900_000 },
  );
  console.log(`npm install -g took ${(install.durationMs / 1000).toFixed(1)} s`);
  const bin = join(prefix, 'bin/nbd-vault');
  assert.equal((await runCommand(bin, ['--version'], { env })).stdout.trim(), version);

  // A first run in an empty directory: key, vault and volume "default" are created, and served.
  const work = join(dir, 'work');
  mkdirSync(work);
  const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0'], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
  reapOnExit(child);
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const keepAlive = setInterval(() => {}, 1000); // the child is unref'd: hold the loop open
  t.after(() => {
    clearInterval(keepAlive);
    child.kill('SIGKILL');
  });
  const deadline = Date.now() + 60_000;
  let port = 0;
  while (!(port = Number(/"port":(\d+)[^\n]*"msg":"listening"/.exec(log)?.[1] ?? 0))) {
    assert.ok(child.exitCode === null && Date.now() < deadline, `the installed nbd-vault serve did not listen:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const info = JSON.parse((await runCommand('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${port}/default`])).stdout);
  assert.equal(info['virtual-size'], 10 * 2 ** 30);
  child.kill('SIGTERM');
  assert.equal(await exited, 0, `a graceful stop exits 0:\n${log}`);

  // Where npm skipped zstd-napi's build: --version still works, vault commands say what to do.
  const zstdBuild = join(prefix, 'lib/node_modules/nbd-vault/node_modules/zstd-napi/build');
  renameSync(zstdBuild, `${zstdBuild}.away`);
  try {
    assert.equal((await runCommand(bin, ['--version'], { env })).stdout.trim(), version);
    const r = await runCommand(bin, ['volume', 'list'], { cwd: work, env, okCodes: [1] });
    assert.match(r.stderr, /^nbd-vault: zstd-napi's native module was never built .*--allow-scripts=zstd-napi.* \[ERR_INSTALL\]\n$/);
  } finally {
    renameSync(`${zstdBuild}.away`, zstdBuild);
  }
});
