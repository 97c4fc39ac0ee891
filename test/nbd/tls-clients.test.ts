// TLS with real clients (libnbd's nbdinfo/nbdcopy, qemu-img/qemu-io: gnutls on their side) against
// `nbd-vault serve --memory`: PSK and X.509 (with client certificates), data compared; FORCEDTLS
// refusals seen on the wire; wrong keys, unknown identities and foreign certificates refused;
// --tls on serving plaintext and TLS side by side; the server log never holds a key.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomFillSync } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runTool, startNbdServerProcess, type NbdServerProcess } from '../helpers/nbd-server';
import { makeTlsFixtures, pskUri, qemuTlsArgs, x509Uri, type TlsFixtures } from '../helpers/tls-fixtures';
import { Wire, greet, infoPayload, option, readOptionReply } from './raw-client';

const MIB = 1024 * 1024;
const NBD_REP_ACK = 1;
const NBD_REP_ERR_TLS_REQD = 2 ** 31 + 5;
const NBD_OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8 };

let fx: TlsFixtures;
let psk: NbdServerProcess;
let x509: NbdServerProcess;

before(async () => {
  fx = makeTlsFixtures();
  psk = await startNbdServerProcess({ memory: ['disk=64M', 'copy=32M'], extraArgs: ['--tls-psk', fx.pskFile] });
  x509 = await startNbdServerProcess({ memory: ['disk=64M', 'copy=32M'], extraArgs: ['--tls-certificates', fx.serverCertDir, '--tls-verify-peer'] });
});

after(async () => {
  assert.equal(await psk.stop(), 0, 'PSK server: graceful exit');
  assert.equal(await x509.stop(), 0, 'X.509 server: graceful exit');
  for (const line of readFileSync(fx.pskFile, 'utf8').trim().split('\n')) {
    const key = line.split(':')[1];
    assert.ok(!psk.log().includes(key), 'no PSK key in the server log');
  }
  assert.ok(!x509.log().includes('PRIVATE KEY'), 'no private key in the server log');
  for (const s of [psk, x509]) assert.doesNotMatch(s.log(), /"level":50/, 'no error-level log lines');
  rmSync(fx.dir, { recursive: true, force: true });
});

async function ok(cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const r = await runTool(cmd, args, { timeoutMs });
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

async function fails(cmd: string, args: string[]): Promise<string> {
  const r = await runTool(cmd, args, { timeoutMs: 30_000 });
  assert.notEqual(r.code, 0, `${cmd} ${args.join(' ')} should have failed:\n${r.stdout}`);
  return r.stderr;
}

function randomFile(name: string, size: number): { path: string; sha: string } {
  const buf = randomFillSync(Buffer.alloc(size));
  const path = join(fx.dir, name);
  writeFileSync(path, buf);
  return { path, sha: createHash('sha256').update(buf).digest('hex') };
}

const sha = (path: string, size?: number) => createHash('sha256').update(readFileSync(path).subarray(0, size)).digest('hex');

test('PSK: nbdinfo lists the exports over TLS', async () => {
  const out = await ok('nbdinfo', ['--list', '--json', pskUri(psk.port, '', 'alice', fx.pskFile)]);
  const names = JSON.parse(out).exports.map((e: { 'export-name': string }) => e['export-name']).sort();
  assert.deepEqual(names, ['copy', 'disk']);
  assert.equal(JSON.parse(out).TLS, true);
});

test('PSK: nbdcopy in and out (32 MiB random), byte compare', async () => {
  const src = randomFile('psk-in.img', 32 * MIB);
  await ok('nbdcopy', [src.path, pskUri(psk.port, 'copy', 'alice', fx.pskFile)]);
  const out = join(fx.dir, 'psk-out.img');
  await ok('nbdcopy', [pskUri(psk.port, 'copy', 'bob', fx.pskFile), out]);
  assert.equal(sha(out), src.sha);
});

test('PSK: qemu-io writes patterns, qemu-io and qemu-img read them back', async () => {
  const creds = { psk: fx.pskDir, identity: 'alice' };
  await ok('qemu-io', [...qemuTlsArgs(psk.port, 'disk', creds), '-c', 'write -P 0x3c 1M 5M', '-c', 'write -P 0xa7 20M 64k']);
  const out = await ok('qemu-io', [...qemuTlsArgs(psk.port, 'disk', { psk: fx.pskDir, identity: 'bob' }), '-c', 'read -P 0x3c 1M 5M', '-c', 'read -P 0xa7 20M 64k', '-c', 'read -P 0 0 1M']);
  assert.doesNotMatch(out, /verification failed|error/i);
  const info = JSON.parse(await ok('qemu-img', ['info', '--output=json', ...qemuTlsArgs(psk.port, 'disk', creds)]));
  assert.equal(info['virtual-size'], 64 * MIB);
  // and libnbd sees the same bytes qemu wrote
  const dump = join(fx.dir, 'psk-disk.img');
  await ok('nbdcopy', [pskUri(psk.port, 'disk', 'alice', fx.pskFile), dump]);
  const bytes = readFileSync(dump);
  assert.ok(bytes.subarray(MIB, 6 * MIB).equals(Buffer.alloc(5 * MIB, 0x3c)));
  assert.ok(bytes.subarray(20 * MIB, 20 * MIB + 65536).equals(Buffer.alloc(65536, 0xa7)));
});

test('PSK: a wrong key and an unknown identity are refused; a good client still gets in', async () => {
  await fails('nbdinfo', [pskUri(psk.port, 'disk', 'alice', join(fx.wrongPskDir, 'keys.psk'))]);
  writeFileSync(join(fx.dir, 'carol.psk'), `carol:${'ab'.repeat(32)}\n`);
  await fails('nbdinfo', [pskUri(psk.port, 'disk', 'carol', join(fx.dir, 'carol.psk'))]);
  await fails('qemu-img', ['info', ...qemuTlsArgs(psk.port, 'disk', { psk: fx.wrongPskDir, identity: 'alice' })]);
  await ok('nbdinfo', [pskUri(psk.port, 'disk', 'alice', fx.pskFile)]);
  const failures = psk.log().split('\n').filter((l) => /TLS (error|handshake failed)/.test(l));
  assert.ok(failures.length >= 3, 'every refused handshake is logged');
  for (const l of failures) assert.equal(JSON.parse(l).remote, '127.0.0.1', 'with the peer address');
});

test('--tls require: a plaintext client learns nothing and gets no export', async () => {
  await fails('nbdinfo', ['--list', psk.uri('')]);
  await fails('qemu-img', ['info', psk.uri('disk')]);

  const w = new Wire(psk.port);
  await greet(w);
  for (const opt of [NBD_OPT.LIST, NBD_OPT.STRUCTURED_REPLY, 999]) {
    await w.write(option(opt));
    const r = await readOptionReply(w);
    assert.equal(r.type, NBD_REP_ERR_TLS_REQD, `option ${opt}`);
  }
  for (const opt of [NBD_OPT.INFO, NBD_OPT.GO]) {
    await w.write(option(opt, infoPayload('disk')));
    const r = await readOptionReply(w); // the first reply is the error: no NBD_REP_INFO before it
    assert.equal(r.type, NBD_REP_ERR_TLS_REQD, `option ${opt}`);
    assert.ok(!r.data.includes(Buffer.from('disk')), 'the reply does not echo or describe the export');
  }
  await w.write(option(NBD_OPT.ABORT));
  assert.equal((await readOptionReply(w)).type, NBD_REP_ACK, 'ABORT is allowed');
  w.destroy();

  const w2 = new Wire(psk.port);
  await greet(w2);
  await w2.write(option(NBD_OPT.EXPORT_NAME, Buffer.from('disk')));
  assert.ok(await w2.closedWithin(5000), 'EXPORT_NAME before TLS ends the session');
  await assert.rejects(w2.read(1, 1000), /connection closed with 0\/1 bytes/, 'not a byte of export size or flags was sent');
});

test('X.509: nbdinfo, nbdcopy and qemu-io with a client certificate; data compared', async () => {
  const info = JSON.parse(await ok('nbdinfo', ['--json', x509Uri(x509.port, 'disk', fx.aliceCertDir)]));
  assert.equal(info.exports[0]['export-size'], 64 * MIB);
  const src = randomFile('x509-in.img', 32 * MIB);
  await ok('nbdcopy', [src.path, x509Uri(x509.port, 'copy', fx.aliceCertDir)]);
  const out = join(fx.dir, 'x509-out.img');
  await ok('nbdcopy', [x509Uri(x509.port, 'copy', fx.aliceCertDir), out]);
  assert.equal(sha(out), src.sha);
  const creds = { x509: fx.aliceCertDir };
  await ok('qemu-io', [...qemuTlsArgs(x509.port, 'disk', creds), '-c', 'write -P 0x5e 3M 2M']);
  const r = await ok('qemu-io', [...qemuTlsArgs(x509.port, 'disk', creds), '-c', 'read -P 0x5e 3M 2M']);
  assert.doesNotMatch(r, /verification failed/);
  const img = JSON.parse(await ok('qemu-img', ['info', '--output=json', ...qemuTlsArgs(x509.port, 'disk', creds)]));
  assert.equal(img['virtual-size'], 64 * MIB);
});

test('X.509: a client certificate from another CA, and no certificate, are refused', async () => {
  await fails('nbdinfo', [x509Uri(x509.port, 'disk', fx.strangerCertDir)]);
  await fails('qemu-img', ['info', ...qemuTlsArgs(x509.port, 'disk', { x509: fx.strangerCertDir })]);
  // the CA only: the server's certificate checks out, but the client has none to show
  const caOnly = join(fx.dir, 'ca-only');
  mkdirSync(caOnly);
  writeFileSync(join(caOnly, 'ca-cert.pem'), readFileSync(join(fx.aliceCertDir, 'ca-cert.pem')));
  await fails('nbdinfo', [x509Uri(x509.port, 'disk', caOnly)]);
  await ok('nbdinfo', [x509Uri(x509.port, 'disk', fx.aliceCertDir)]);
});

test('--tls on: plaintext and TLS clients side by side, over TCP and a Unix socket', async () => {
  const sock = join(fx.dir, 'nbd.sock');
  const on = await startNbdServerProcess({ memory: ['disk=16M'], socketPath: sock, extraArgs: ['--tls', 'on', '--tls-psk', fx.pskFile] });
  try {
    await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 1M', on.uri('disk')]);
    const r = await ok('qemu-io', [...qemuTlsArgs(on.port, 'disk', { psk: fx.pskDir, identity: 'alice' }), '-c', 'read -P 0x11 0 1M']);
    assert.doesNotMatch(r, /verification failed/);
    const unixTls = `nbds+unix://alice@/disk?socket=${encodeURIComponent(sock)}&tls-psk-file=${encodeURIComponent(fx.pskFile)}`;
    const info = JSON.parse(await ok('nbdinfo', ['--json', unixTls]));
    assert.equal(info.TLS, true);
    assert.equal(info.exports[0]['export-size'], 16 * MIB);
  } finally {
    assert.equal(await on.stop(), 0);
  }
});
