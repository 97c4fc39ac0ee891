// A vault served over TLS (PSK) with an access section: alice writes her volume with nbdcopy over
// nbds://, snapshots it, and reads the snapshot back (read-only for her); bob sees only his
// volume. The real serve path (vault exports, VOL@SNAP) behind STARTTLS and the access policy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
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
  const config = join(fx.dir, 'config.json');
  writeFileSync(config, JSON.stringify({ access: { alice: { rw: ['web01'], ro: ['web01@*'] }, bob: { rw: ['db'] } } }));
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
  assert.deepEqual(await list('bob'), ['db']);
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
