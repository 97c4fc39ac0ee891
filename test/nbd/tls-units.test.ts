// Units behind TLS and admission: the PSK file parser, the access policy of the config file,
// handshake-slot admission with eviction, the rate-limited log, and the startup checks
// (no plaintext off loopback, no contradictory TLS settings).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTlsConfig, parsePskFile } from '../../src/nbd/tls-credentials';
import { Admission, type Admitted } from '../../src/nbd/admission';
import { RateLimitedLog } from '../../src/nbd/rate-limited-log';
import { ConfigAccessPolicy } from '../../src/cli/access-policy';
import { certificateWarning, isLoopbackHost, resolveServerSecurity } from '../../src/cli/tls-setup';
import { createLogger, type Logger } from '../../src/util/log';
import { VaultError } from '../../src/errors';
import { startNbdServerProcess } from '../helpers/nbd-server';
import { makeTlsFixtures } from '../helpers/tls-fixtures';

const KEY = 'c0ffee'.repeat(8);

function capturingLogger(): { logger: Logger; lines: Array<{ msg: string; [k: string]: unknown }> } {
  const lines: Array<{ msg: string }> = [];
  const logger = { warn: (fields: object, msg: string) => lines.push({ ...fields, msg }), info: () => {}, debug: () => {}, error: () => {} } as unknown as Logger;
  return { logger, lines };
}

test('PSK file: identity:hexkey lines; errors name the line, never the key', () => {
  const keys = parsePskFile(`# comment\nalice:${KEY}\n\nbob:${KEY.toUpperCase()}\n`, 'k.psk');
  assert.deepEqual([...keys.keys()], ['alice', 'bob']);
  assert.equal(keys.get('alice')!.toString('hex'), KEY);
  const bad = (text: string, re: RegExp) =>
    assert.throws(() => parsePskFile(text, 'k.psk'), (e: VaultError) => e.code === 'ERR_INVALID_ARGUMENT' && re.test(e.message) && !e.message.includes(KEY.slice(0, 12)));
  bad(`alice:${KEY}x\n`, /k\.psk line 1: the key of "alice" is not an even number of hex digits/);
  // a trailing colon made everything before it the identity, and the message printed the key
  bad(`alice:${KEY}:\n`, /k\.psk line 1: the key of "alice" is not an even number of hex digits/);
  bad(`alice:${KEY}\nalice:${KEY}\n`, /line 2: identity "alice" appears twice/);
  bad(`${KEY}\n`, /line 1: expected identity:hexkey/);
  // written key first (hexkey:identity): the "identity" is the key, and must not be printed
  bad(`${KEY}:alice\n`, /k\.psk line 1: the key after the first colon is not an even number of hex digits \(the format is identity:hexkey\)/);
  bad('alice:abcd\n', /shorter than 16 bytes/);
  bad('# nothing\n', /holds no identity:hexkey line/);
});

test('access policy: exact names and globs, rw over ro, strangers and the unauthenticated get nothing', () => {
  const p = ConfigAccessPolicy.parse({ alice: { rw: ['web01'], ro: ['web01@*', 'web01'] }, ops: { ro: ['*'] } }, 'c.json');
  assert.equal(p.accessTo('alice', 'web01'), 'rw');
  assert.equal(p.accessTo('alice', 'web01@monday'), 'ro');
  assert.equal(p.accessTo('alice', 'web012'), 'none', 'no prefix match');
  assert.equal(p.accessTo('alice', 'db'), 'none');
  assert.equal(p.accessTo('ops', 'anything@at.all'), 'ro');
  assert.equal(p.accessTo('mallory', 'web01'), 'none');
  assert.equal(p.accessTo(null, 'web01'), 'none');
  const dots = ConfigAccessPolicy.parse({ a: { rw: ['v.1'] } }, 'c.json');
  assert.equal(dots.accessTo('a', 'vx1'), 'none', 'a dot is a dot, not a regex');
  const bad = (section: unknown, re: RegExp) => assert.throws(() => ConfigAccessPolicy.parse(section, 'c.json'), (e: VaultError) => re.test(e.message));
  bad([1], /"access" must be an object/);
  bad({ a: { rwx: ['v'] } }, /"a": unknown key "rwx"/);
  bad({ a: { ro: 'v' } }, /"a"."ro" must be a list of export names/);
  bad({ a: { ro: [''] } }, /must be a list of export names/);
});

class FakeConn implements Admitted {
  evicted: string | null = null;
  constructor(readonly remote: string) {}
  evict(why: string): void {
    this.evicted = why;
  }
}

test('admission: idle handshakes evict each other, never an established connection, never refuse a newcomer', () => {
  const { logger, lines } = capturingLogger();
  const a = new Admission<FakeConn>({ maxEstablished: 2, maxHandshakes: 4, maxHandshakesPerAddress: 3 }, logger);
  const idle = Array.from({ length: 10 }, () => new FakeConn('10.0.0.1'));
  for (const c of idle) assert.equal(a.admit(c), true);
  assert.equal(a.handshakingCount, 3, 'one address holds at most 3 handshake slots');
  assert.deepEqual(idle.map((c) => c.evicted !== null), [true, true, true, true, true, true, true, false, false, false], 'the oldest went first');
  const good = new FakeConn('10.0.0.1');
  assert.equal(a.admit(good), true);
  assert.equal(a.establish(good), true);
  assert.equal(a.handshakingCount, 2, 'the good client left the handshake slots');
  // another address: past the total of 4, the busiest address gives up its oldest
  const other = [new FakeConn('10.0.0.2'), new FakeConn('10.0.0.2'), new FakeConn('10.0.0.2')];
  for (const c of other) a.admit(c);
  assert.equal(a.handshakingCount, 4);
  assert.equal(other.filter((c) => c.evicted).length, 0, 'the quieter address keeps its slots');
  assert.equal(idle[8].evicted, 'too many handshakes in progress');
  assert.equal(good.evicted, null, 'established connections are never evicted');
  // established slots are the hard limit
  assert.equal(a.establish(other[0]), true);
  assert.equal(a.establish(other[1]), false, 'maxEstablished reached');
  assert.equal(a.admit(new FakeConn('10.0.0.3')), false, 'no established slot: refused at once');
  a.leave(good);
  assert.equal(a.establishedCount, 1);
  assert.ok(lines.some((l) => l.msg.includes('dropped to make room') && l.remote === '10.0.0.1'));
});

test('rate-limited log: a burst per window, then one summary line', () => {
  const { logger, lines } = capturingLogger();
  let now = 0;
  const log = new RateLimitedLog(logger, 1000, 3, () => now);
  for (let i = 0; i < 100; i++) log.warn({ i }, 'refused');
  assert.equal(lines.length, 3);
  now = 1500;
  log.warn({ i: 100 }, 'refused');
  assert.equal(lines.length, 5);
  assert.equal(lines[3].suppressed, 97);
  assert.equal(lines[4].i, 100);
});

test('startup checks: no plaintext off loopback unless told, no contradictions', () => {
  const silent = createLogger('silent');
  const bad = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: VaultError) => e.code === 'ERR_INVALID_ARGUMENT' && re.test(e.message));
  assert.ok(isLoopbackHost('127.0.0.1') && isLoopbackHost('::1') && isLoopbackHost('localhost') && isLoopbackHost('127.8.9.10'));
  assert.ok(!isLoopbackHost('0.0.0.0') && !isLoopbackHost('::') && !isLoopbackHost('192.168.1.5'));
  assert.deepEqual(resolveServerSecurity({}, { host: '127.0.0.1', port: 1 }, {}, silent), {});
  bad(() => resolveServerSecurity({}, { host: '0.0.0.0', port: 10809 }, {}, silent), /refusing to serve without TLS on 0\.0\.0\.0:10809.*--insecure-no-tls/);
  const { logger, lines } = capturingLogger();
  assert.deepEqual(resolveServerSecurity({ insecureNoTls: true }, { host: '0.0.0.0', port: 1 }, {}, logger), {});
  assert.match(lines[0].msg, /WITHOUT TLS/);
  bad(() => resolveServerSecurity({ tls: 'maybe' }, undefined, {}, silent), /--tls wants off, on or require/);
  bad(() => resolveServerSecurity({ tls: 'require' }, undefined, {}, silent), /exactly one of --tls-certificates DIR and --tls-psk FILE/);
  bad(() => resolveServerSecurity({ tls: 'off', tlsPsk: 'x' }, undefined, {}, silent), /--tls off contradicts/);
  const dir = mkdtempSync(join(tmpdir(), 'nbd-tls-units-'));
  const psk = join(dir, 'keys.psk');
  writeFileSync(psk, `alice:${KEY}\n`);
  const sec = resolveServerSecurity({ tlsPsk: psk }, { host: '0.0.0.0', port: 1 }, {}, silent);
  assert.equal(sec.tls?.mode, 'require', 'credentials alone mean TLS required');
  bad(() => resolveServerSecurity({ tlsPsk: psk, tlsVerifyPeer: true }, undefined, {}, silent), /--tls-verify-peer applies to X\.509/);
  bad(() => resolveServerSecurity({ tlsCertificates: dir }, undefined, {}, silent), /cannot read .*server-cert\.pem: no such file/);
  const config = join(dir, 'c.json');
  writeFileSync(config, JSON.stringify({ access: { alice: { rw: ['*'] } } }));
  bad(() => resolveServerSecurity({}, undefined, { config }, silent), /"access" section .* needs TLS/);
  assert.ok(resolveServerSecurity({ tlsPsk: psk }, undefined, { config }, silent).access);
  // a grant to a name the PSK file lacks (a typo), and a PSK file others can read: warnings
  writeFileSync(config, JSON.stringify({ access: { alice: { rw: ['*'] }, alcie: { ro: ['*'] } } }));
  chmodSync(psk, 0o644);
  const warned = capturingLogger();
  resolveServerSecurity({ tlsPsk: psk }, undefined, { config }, warned.logger);
  const msgs = warned.lines.map((l) => l.msg);
  assert.ok(msgs.some((m) => /names identities the PSK file does not hold/.test(m)), msgs.join('\n'));
  assert.deepEqual(warned.lines.find((l) => /does not hold/.test(l.msg))!.identities, ['alcie']);
  assert.ok(msgs.some((m) => /PSK file can be read by other users/.test(m)), msgs.join('\n'));
  chmodSync(psk, 0o600);
  writeFileSync(config, JSON.stringify({ access: { alice: { rw: ['*'] } } }));
  const quiet = capturingLogger();
  resolveServerSecurity({ tlsPsk: psk }, undefined, { config }, quiet.logger);
  assert.deepEqual(quiet.lines, [], 'no warning when the names match and the file is private');
  // a CA file OpenSSL would read as "no CA at all"
  const certs = join(dir, 'certs');
  mkdirSync(certs);
  const fx = makeTlsFixtures();
  for (const f of ['server-cert.pem', 'server-key.pem']) copyFileSync(join(fx.serverCertDir, f), join(certs, f));
  writeFileSync(join(certs, 'ca-cert.pem'), 'not a certificate\n');
  bad(() => resolveServerSecurity({ tlsCertificates: certs, tlsVerifyPeer: true }, undefined, {}, silent), /ca-cert\.pem holds no PEM certificate/);
  copyFileSync(join(fx.serverCertDir, 'ca-cert.pem'), join(certs, 'ca-cert.pem'));
  assert.equal(resolveServerSecurity({ tlsCertificates: certs, tlsVerifyPeer: true }, undefined, {}, silent).tls?.verifyPeer, true);
  rmSync(fx.dir, { recursive: true, force: true });
});

test('serve --listen 0.0.0.0 without TLS exits with the reason (and starts with --insecure-no-tls)', async () => {
  await assert.rejects(
    startNbdServerProcess({ memory: ['d=1M'], extraArgs: ['--listen', '0.0.0.0:0'] }),
    (e: Error) => /exited \(\d\).*refusing to serve without TLS/s.test(e.message),
  );
  const srv = await startNbdServerProcess({ memory: ['d=1M'], extraArgs: ['--listen', '0.0.0.0:0', '--insecure-no-tls'] });
  assert.match(srv.log(), /serving WITHOUT TLS/);
  assert.equal(await srv.stop(), 0);
});

test('serve on an address it cannot take says which one and why', async () => {
  await assert.rejects(
    startNbdServerProcess({ memory: ['d=1M'], socketPath: '/nonexistent/dir/x.sock' }),
    (e: Error) => /cannot listen on the Unix socket \/nonexistent\/dir\/x\.sock: E[A-Z]+ \(does its directory exist/.test(e.message),
  );
  const first = await startNbdServerProcess({ memory: ['d=1M'] });
  try {
    await assert.rejects(
      startNbdServerProcess({ memory: ['d=1M'], extraArgs: ['--listen', `127.0.0.1:${first.port}`] }),
      (e: Error) => new RegExp(`cannot listen on 127\\.0\\.0\\.1:${first.port}: EADDRINUSE \\(something listens there already\\)`).test(e.message),
    );
  } finally {
    assert.equal(await first.stop(), 0);
  }
});

test('a server certificate that expired, is not valid yet or ends within 14 days is named in a warning', () => {
  const day = 24 * 3600_000;
  const now = new Date('2026-12-06T12:00:00Z');
  const period = (fromDays: number, toDays: number) => ({ from: new Date(now.getTime() + fromDays * day), to: new Date(now.getTime() + toDays * day) });
  assert.match(certificateWarning(period(-400, -1), now)!, /has expired/);
  assert.match(certificateWarning(period(2, 400), now)!, /not valid yet/);
  assert.match(certificateWarning(period(-10, 13), now)!, /expires within 14 days/);
  assert.equal(certificateWarning(period(-10, 15), now), null);
});

test('the validity of a loaded X.509 server certificate is read (the fixtures: valid for 2 days from now)', () => {
  const fx = makeTlsFixtures();
  try {
    const config = loadTlsConfig({ mode: 'require', certificatesDir: fx.serverCertDir });
    assert.ok(config.certificateValidity, 'read');
    assert.ok(config.certificateValidity!.from.getTime() <= Date.now() && Date.now() < config.certificateValidity!.to.getTime());
    assert.match(certificateWarning(config.certificateValidity!, new Date())!, /expires within 14 days/);
    assert.match(certificateWarning(config.certificateValidity!, new Date(config.certificateValidity!.to.getTime() + 1000))!, /has expired/);
  } finally {
    rmSync(fx.dir, { recursive: true, force: true });
  }
});
