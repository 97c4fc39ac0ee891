// A vault served over TLS (PSK) with an access section: alice writes her volume with nbdcopy over
// nbds://, snapshots it, and reads the snapshot back (read-only for her); bob sees only his
// volume. The real serve path (vault exports, VOL@SNAP) behind STARTTLS and the access policy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { runTool } from '../helpers/nbd-server';
import { makeTestVault, type TestVault, type VaultServer } from '../helpers/vault-server';
import { makeTlsFixtures, pskUri, type TlsFixtures } from '../helpers/tls-fixtures';

const MIB = 1024 * 1024;
let v: TestVault;
let fx: TlsFixtures;
let srv: VaultServer;

before(async () => {
  v = await makeTestVault();
  fx = makeTlsFixtures();
  await v.cli('volume', 'create', 'web01', '--size', '64M');
  await v.cli('volume', 'create', 'db', '--size', '16M');
  await v.cli('volume', 'create', 'shared', '--size', '8M');
  const config = join(fx.dir, 'config.json');
  writeFileSync(config, JSON.stringify({ access: { alice: { rw: ['web01'], ro: ['web01@*'] }, bob: { rw: ['db'], ro: ['shared'] } } }));
  srv = await v.serve(['--tls-psk', fx.pskFile, '--config', config]);
});

after(async () => {
  assert.equal(await srv.stop(), 0);
  assert.doesNotMatch(srv.log(), /"level":50/);
  await v.cleanup();
});

async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await runTool(cmd, args, { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

test('vault over TLS: write, snapshot, read the snapshot back; each identity sees its own volumes', async () => {
  const data = randomFillSync(Buffer.alloc(24 * MIB));
  const src = join(fx.dir, 'in.img');
  writeFileSync(src, data);
  await ok('nbdcopy', ['--flush', src, pskUri(srv.port, 'web01', 'alice', fx.pskFile)]);
  await v.cli('snapshot', 'web01', 'monday');
  const out = join(fx.dir, 'snap.img');
  await ok('nbdcopy', [pskUri(srv.port, 'web01@monday', 'alice', fx.pskFile), out]);
  const got = readFileSync(out);
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  assert.equal(sha(got.subarray(0, data.length)), sha(data));

  const list = (id: string) => ok('nbdinfo', ['--list', '--json', pskUri(srv.port, '', id, fx.pskFile)]).then((o) => JSON.parse(o).exports.map((e: { 'export-name': string }) => e['export-name']).sort());
  assert.deepEqual(await list('alice'), ['web01', 'web01@monday']);
  assert.deepEqual(await list('bob'), ['db', 'shared']);
  const denied = await runTool('nbdinfo', [pskUri(srv.port, 'web01', 'bob', fx.pskFile)], { timeoutMs: 30_000 });
  assert.notEqual(denied.code, 0, 'bob opened web01');
});

test('the startup hint names an identity the access config lets open the export it names, and works as printed', async () => {
  const hint = /^try: nbdinfo '([^']+)'$/m.exec(srv.log());
  assert.ok(hint, srv.log());
  const uri = new URL(hint[1]);
  const id = decodeURIComponent(uri.username);
  const exportName = decodeURIComponent(uri.pathname.slice(1));
  assert.ok((id === 'alice' && exportName === 'web01') || (id === 'bob' && exportName === 'db'), `${id} may open ${exportName}`);
  assert.match(await ok('nbdinfo', [hint[1]]), /export-size/);
});

test('a read-only grant takes no writer\'s lease: another server of the vault writes while the reader reads, and a new reader sees what it wrote', async (t) => {
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  // a second server of the same vault (its own state directory) writes the volume, and stops
  const otherArgs = ['--state', join(v.dir, 'state-other')];
  const first = Buffer.alloc(4 * MIB, 0x11);
  let other = await v.serve(otherArgs);
  const wroteFirst = await runTool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4M', other.uri('shared')], { timeoutMs: 60_000 });
  assert.equal(wroteFirst.code, 0, wroteFirst.stderr);
  assert.equal(await other.stop(), 0);
  // bob may only read "shared" on this server: he connects first and stays, reading chunk 0 again
  // once told to
  const marker = join(fx.dir, 'read-again');
  const reader = spawn('/usr/bin/python3', ['-c', `
import hashlib, os, sys, time, nbd
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(sys.argv[1])
print('ro', h.is_read_only(), 'flush', h.can_flush(), flush=True)
print('sha', hashlib.sha256(h.pread(4 << 20, 0)).hexdigest(), flush=True)
try:
    h.set_strict_mode(0)
    h.pwrite(b'x' * 4096, 0)
    print('write', 'accepted', flush=True)
except nbd.Error as e:
    print('write', 'refused', e.errno, flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
print('sha', hashlib.sha256(h.pread(4 << 20, 0)).hexdigest(), flush=True)
h.shutdown()
`, pskUri(srv.port, 'shared', 'bob', fx.pskFile), marker], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => reader.kill('SIGKILL'));
  let said = '';
  let errs = '';
  reader.stdout.on('data', (d) => (said += d));
  reader.stderr.on('data', (d) => (errs += d));
  const readerExit = new Promise<number | null>((r) => reader.once('exit', r));
  const until = Date.now() + 60_000;
  while (!/^write /m.test(said)) {
    assert.ok(reader.exitCode === null && Date.now() < until, `the reader connects and reads: ${said} ${errs}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(said, /^ro True flush False$/m, 'read-only, and no FLUSH for a reader');
  assert.match(said, new RegExp(`^sha ${sha(first)}$`, 'm'));
  assert.match(said, /^write refused (1|EPERM)$/m, 'a write gets EPERM');

  // the second server writes the volume again, meanwhile
  other = await v.serve(otherArgs);
  t.after(() => other.kill());
  const second = Buffer.alloc(4 * MIB, 0x22);
  const wrote = await runTool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 0 4M', other.uri('shared')], { timeoutMs: 60_000 });
  assert.equal(wrote.code, 0, `the writer elsewhere is not kept out by a reader here: ${wrote.stderr}${wrote.stdout}`);
  assert.doesNotMatch(wrote.stdout, /error|failed/i, wrote.stdout);

  // a reader connecting now reads what the writer committed
  const out = join(fx.dir, 'shared.img');
  await ok('nbdcopy', [pskUri(srv.port, 'shared', 'bob', fx.pskFile), out]);
  assert.equal(sha(readFileSync(out).subarray(0, 4 * MIB)), sha(second), 'a new reader sees the committed write');

  // the first reader reads on: its view's root, or (when the writer deleted what it named) the
  // newest one, never an error
  writeFileSync(marker, '');
  assert.equal(await readerExit, 0, `the reader's second read: ${errs}`);
  const shas = [...said.matchAll(/^sha (\S+)$/gm)].map((m) => m[1]);
  assert.equal(shas.length, 2, said);
  assert.ok([sha(first), sha(second)].includes(shas[1]), `the first reader reads one state of the volume: ${said}`);
  assert.equal(await other.stop(), 0);
});
