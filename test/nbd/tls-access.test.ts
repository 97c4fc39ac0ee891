// Access control by TLS identity (the config file's "access" section) with real clients:
// alice may write web01 and read its snapshots (web01@*), bob may only read db. Each sees only
// its exports in NBD_OPT_LIST, cannot open the others (they look nonexistent), and a read-only
// grant shows as a read-only export whose writes the server answers with EPERM.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runTool, startNbdServerProcess, type NbdServerProcess } from '../helpers/nbd-server';
import { makeTlsFixtures, pskUri, qemuTlsArgs, type TlsFixtures } from '../helpers/tls-fixtures';
import { waitFor } from '../helpers/fuse-disk';
import { Wire, go, infoPayload, option, readOptionReply, readSimpleReply, request } from './raw-client';
import { pskKeyOf, startTls, tlsWire } from './tls-wire';

const MIB = 1024 * 1024;
const NBD_REP_ERR_UNKNOWN = 2 ** 31 + 6;
const NBD_CMD_WRITE = 1;
const NBD_EPERM = 1;

let fx: TlsFixtures;
let srv: NbdServerProcess;

before(async () => {
  fx = makeTlsFixtures();
  const config = join(fx.dir, 'config.json');
  writeFileSync(config, JSON.stringify({ access: { alice: { rw: ['web01'], ro: ['web01@*'] }, bob: { ro: ['db'] } } }));
  srv = await startNbdServerProcess({
    memory: ['web01=16M', 'web01@monday=16M', 'db=16M'],
    extraArgs: ['--tls-psk', fx.pskFile, '--config', config],
  });
});

after(async () => {
  assert.equal(await srv.stop(), 0);
  assert.doesNotMatch(srv.log(), /"level":50/);
  rmSync(fx.dir, { recursive: true, force: true });
});

async function run(cmd: string, args: string[]) {
  return runTool(cmd, args, { timeoutMs: 60_000 });
}

async function listAs(identity: string): Promise<string[]> {
  const r = await run('nbdinfo', ['--list', '--json', pskUri(srv.port, '', identity, fx.pskFile)]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).exports.map((e: { 'export-name': string }) => e['export-name']).sort();
}

test('each identity sees only its exports in NBD_OPT_LIST', async () => {
  assert.deepEqual(await listAs('alice'), ['web01', 'web01@monday']);
  assert.deepEqual(await listAs('bob'), ['db']);
});

test('rw: alice writes web01 and reads it back (qemu-io)', async () => {
  const args = qemuTlsArgs(srv.port, 'web01', { psk: fx.pskDir, identity: 'alice' });
  let r = await run('qemu-io', [...args, '-c', 'write -P 0x42 0 1M']);
  assert.equal(r.code, 0, r.stderr);
  r = await run('qemu-io', [...args, '-c', 'read -P 0x42 0 1M']);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /verification failed/);
});

test('ro: the export is flagged read-only, qemu-io cannot write, the server answers writes EPERM', async () => {
  const info = await run('nbdinfo', ['--json', pskUri(srv.port, 'db', 'bob', fx.pskFile)]);
  assert.equal(info.code, 0, info.stderr);
  assert.equal(JSON.parse(info.stdout).exports[0].is_read_only, true);
  const snap = await run('nbdinfo', ['--json', pskUri(srv.port, 'web01@monday', 'alice', fx.pskFile)]);
  assert.equal(JSON.parse(snap.stdout).exports[0].is_read_only, true, 'alice: web01@* is read-only');

  const w = await run('qemu-io', [...qemuTlsArgs(srv.port, 'db', { psk: fx.pskDir, identity: 'bob' }), '-c', 'write -P 1 0 4k']);
  assert.notEqual(w.code, 0, `qemu-io wrote to a read-only grant: ${w.stdout}`);
  assert.match(w.stderr, /Permission denied/, 'qemu refuses to open a read-only export for writing');
  const read = await run('qemu-io', ['-r', ...qemuTlsArgs(srv.port, 'db', { psk: fx.pskDir, identity: 'bob' }), '-c', 'read -P 0 0 1M']);
  assert.equal(read.code, 0, read.stderr);

  // A client that ignores the flag: the server itself refuses the write.
  const raw = new Wire(srv.port);
  await startTls(raw);
  const t = await tlsWire(raw, 'bob', pskKeyOf(readFileSync(fx.pskFile, 'utf8'), 'bob'));
  assert.equal(await go(t, 'db'), 16 * MIB);
  await t.write(request(NBD_CMD_WRITE, 0, 9, 0, 512, Buffer.alloc(512, 0xff)));
  const reply = await readSimpleReply(t);
  assert.equal(reply.error, NBD_EPERM);
  t.destroy();
  const check = await run('qemu-io', ['-r', ...qemuTlsArgs(srv.port, 'db', { psk: fx.pskDir, identity: 'bob' }), '-c', 'read -P 0 0 512']);
  assert.doesNotMatch(check.stdout, /verification failed/, 'the refused write changed nothing');
});

test('an export outside the grants cannot be opened and looks nonexistent', async () => {
  const r = await run('nbdinfo', [pskUri(srv.port, 'web01', 'bob', fx.pskFile)]);
  assert.notEqual(r.code, 0, 'bob opened web01');
  const q = await run('qemu-io', ['-r', ...qemuTlsArgs(srv.port, 'db', { psk: fx.pskDir, identity: 'alice' }), '-c', 'read 0 4k']);
  assert.notEqual(q.code, 0, 'alice opened db');

  const raw = new Wire(srv.port);
  await startTls(raw);
  const t = await tlsWire(raw, 'bob', pskKeyOf(readFileSync(fx.pskFile, 'utf8'), 'bob'));
  for (const name of ['web01', 'no-such-export']) {
    await t.write(option(6, infoPayload(name)));
    const reply = await readOptionReply(t);
    assert.equal(reply.type, NBD_REP_ERR_UNKNOWN, name);
    assert.equal(reply.data.toString(), `no export named "${name}"`, 'the same answer for hidden and missing');
  }
  t.destroy();
});

test('X.509: the verified certificate\'s CN is the identity; a certificate of another CA with the same issuer name is refused', async () => {
  const config = join(fx.dir, 'config-x509.json');
  writeFileSync(config, JSON.stringify({ access: { alice: { rw: ['web01'] } } }));
  const x509 = await startNbdServerProcess({
    memory: ['web01=16M', 'db=16M'],
    extraArgs: ['--tls-certificates', fx.serverCertDir, '--tls-verify-peer', '--config', config],
  });
  try {
    const uri = (certDir: string) => `nbds://localhost:${x509.port}/?tls-certificates=${encodeURIComponent(certDir)}`;
    const alice = await run('nbdinfo', ['--list', '--json', uri(fx.aliceCertDir)]);
    assert.equal(alice.code, 0, alice.stderr);
    assert.deepEqual(JSON.parse(alice.stdout).exports.map((e: { 'export-name': string }) => e['export-name']), ['web01'], 'alice\'s grants apply to her certificate');
    // CN alice too, signed by a CA named like the server's: gnutls (nbdinfo, qemu) sends it, and
    // it used to be let in with the access of a client without identity
    const stranger = await run('nbdinfo', ['--list', '--json', uri(fx.strangerCertDir)]);
    assert.notEqual(stranger.code, 0, stranger.stdout);
    const write = await run('qemu-io', [...qemuTlsArgs(x509.port, 'web01', { x509: fx.strangerCertDir }), '-c', 'write -P 0x77 0 64k']);
    assert.notEqual(write.code, 0, write.stdout);
    assert.match(x509.log(), /client certificate refused: [A-Z_]+/);
  } finally {
    assert.equal(await x509.stop(), 0);
  }
});

test('SIGHUP applies a new PSK file and access section: open sessions they no longer allow end, new clients get the new grants', async () => {
  const dir = join(fx.dir, 'reload');
  mkdirSync(dir);
  const pskFile = join(dir, 'keys.psk');
  const config = join(dir, 'config.json');
  const text = readFileSync(fx.pskFile, 'utf8');
  writeFileSync(pskFile, text, { mode: 0o600 });
  writeFileSync(config, JSON.stringify({ access: { alice: { rw: ['web01'] }, bob: { rw: ['web01', 'db'] } } }));
  const hup = await startNbdServerProcess({ memory: ['web01=16M', 'db=16M'], extraArgs: ['--tls-psk', pskFile, '--config', config] });
  try {
    const session = async (identity: string, exportName: string) => {
      const raw = new Wire(hup.port);
      await startTls(raw);
      const w = await tlsWire(raw, identity, pskKeyOf(text, identity));
      await go(w, exportName);
      return w;
    };
    const readOk = async (w: Wire, handle: number) => {
      await w.write(request(0, 0, handle, 0, 4096));
      const r = await readSimpleReply(w, 4096);
      assert.equal(r.error, 0);
    };
    const aliceWeb = await session('alice', 'web01');
    const bobDb = await session('bob', 'db');
    const bobWeb = await session('bob', 'web01');
    // TLS up, still negotiating (it could LIST and INFO)
    const aliceRaw = new Wire(hup.port);
    await startTls(aliceRaw);
    const aliceNegotiating = await tlsWire(aliceRaw, 'alice', pskKeyOf(text, 'alice'));
    await readOk(aliceWeb, 1);
    // alice's key is gone from the file; bob keeps web01 only, and read-only
    writeFileSync(pskFile, text.split('\n').filter((l) => !l.startsWith('alice:')).join('\n'));
    writeFileSync(config, JSON.stringify({ access: { bob: { ro: ['web01'] } } }));
    const logged = hup.log().length;
    hup.process.kill('SIGHUP');
    for (const w of [aliceWeb, bobDb, bobWeb, aliceNegotiating]) {
      await Promise.race([w.closed, new Promise((_, reject) => setTimeout(() => reject(new Error('session still open after the reload')), 10_000))]);
    }
    const log = hup.log().slice(logged);
    assert.equal(log.match(/PSK identity \\"alice\\" was removed \(configuration reloaded\)/g)?.length, 2, 'both of alice\'s connections, the negotiating one too');
    assert.match(log, /access to \\"db\\" was withdrawn/);
    assert.match(log, /write access to \\"web01\\" was withdrawn/);
    assert.match(log, /"msg":"configuration reloaded"/);
    // new clients: alice cannot get in at all, bob sees web01 only, read-only
    assert.notEqual((await run('nbdinfo', [pskUri(hup.port, 'web01', 'alice', fx.pskFile)])).code, 0);
    const listed = await run('nbdinfo', ['--list', '--json', pskUri(hup.port, '', 'bob', fx.pskFile)]);
    assert.equal(listed.code, 0, listed.stderr);
    const exportsSeen = JSON.parse(listed.stdout).exports;
    assert.deepEqual(exportsSeen.map((e: { 'export-name': string }) => e['export-name']), ['web01']);
    assert.equal(exportsSeen[0]['is_read_only'], true);
    // a reload that fails (a broken access section) changes nothing
    writeFileSync(config, '{"access": {"bob": {"rw": 5}}}');
    hup.process.kill('SIGHUP');
    assert.ok(await waitFor(() => /configuration not reloaded/.test(hup.log()), 10_000));
    assert.equal((await run('nbdinfo', ['--list', '--json', pskUri(hup.port, '', 'bob', fx.pskFile)])).code, 0);
  } finally {
    assert.equal(await hup.stop(), 0);
  }
});
