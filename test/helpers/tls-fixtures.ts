// Test helper: TLS credentials made on the spot with openssl, in the layouts the servers and
// clients read.
//   psk/keys.psk               alice (made by psktool) and bob (qemu's tls-creds-psk wants keys.psk)
//   wrong-psk/keys.psk         alice with another key
//   server/                    ca-cert.pem, server-cert.pem (CN/SAN localhost, 127.0.0.1), server-key.pem
//   client-alice/              ca-cert.pem, client-cert.pem (CN alice), client-key.pem
//   client-stranger/           same CA file, but a client certificate (CN alice) from another CA
//                              whose name is the real CA's (a client only offers a certificate
//                              whose issuer's name the server asked for)
// Nothing here is a secret worth keeping: a fresh set per test run, in a temp directory.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TlsFixtures {
  readonly dir: string;
  /** directory holding keys.psk (alice, bob) */
  readonly pskDir: string;
  readonly pskFile: string;
  readonly wrongPskDir: string;
  readonly serverCertDir: string;
  readonly aliceCertDir: string;
  readonly strangerCertDir: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(cwd: string, name: string, cn = name): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}-key.pem`, '-out', `${name}-cert.pem`, '-days', '2', '-subj', `/CN=${cn}`], cwd);
}

function makeCert(cwd: string, ca: string, out: string, cn: string, ext: string): void {
  writeFileSync(join(cwd, `${out}.ext`), ext + '\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${out}-key.pem`, '-out', `${out}.csr`, '-subj', `/CN=${cn}`], cwd);
  openssl(['x509', '-req', '-in', `${out}.csr`, '-CA', `${ca}-cert.pem`, '-CAkey', `${ca}-key.pem`, '-CAcreateserial', '-out', `${out}-cert.pem`, '-days', '2', '-extfile', `${out}.ext`], cwd);
}

export function makeTlsFixtures(): TlsFixtures {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-tls-'));
  const pskDir = join(dir, 'psk');
  const wrongPskDir = join(dir, 'wrong-psk');
  mkdirSync(pskDir);
  mkdirSync(wrongPskDir);
  const hex = () => randomBytes(32).toString('hex');
  // alice's line made by psktool (gnutls-bin), as users make theirs; bob's by hand
  execFileSync('psktool', ['-u', 'alice', '-p', join(pskDir, 'keys.psk')], { stdio: 'ignore' });
  appendFileSync(join(pskDir, 'keys.psk'), `bob:${hex()}\n`);
  writeFileSync(join(wrongPskDir, 'keys.psk'), `alice:${hex()}\n`, { mode: 0o600 });

  const work = join(dir, 'work');
  mkdirSync(work);
  makeCa(work, 'ca');
  makeCa(work, 'otherca', 'ca');
  makeCert(work, 'ca', 'server', 'localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth');
  makeCert(work, 'ca', 'alice', 'alice', 'extendedKeyUsage=clientAuth');
  makeCert(work, 'otherca', 'stranger', 'alice', 'extendedKeyUsage=clientAuth');
  const place = (sub: string, files: Record<string, string>) => {
    const d = join(dir, sub);
    mkdirSync(d);
    for (const [to, from] of Object.entries(files)) copyFileSync(join(work, from), join(d, to));
    return d;
  };
  return {
    dir,
    pskDir,
    pskFile: join(pskDir, 'keys.psk'),
    wrongPskDir,
    serverCertDir: place('server', { 'ca-cert.pem': 'ca-cert.pem', 'server-cert.pem': 'server-cert.pem', 'server-key.pem': 'server-key.pem' }),
    aliceCertDir: place('client-alice', { 'ca-cert.pem': 'ca-cert.pem', 'client-cert.pem': 'alice-cert.pem', 'client-key.pem': 'alice-key.pem' }),
    strangerCertDir: place('client-stranger', { 'ca-cert.pem': 'ca-cert.pem', 'client-cert.pem': 'stranger-cert.pem', 'client-key.pem': 'stranger-key.pem' }),
  };
}

/** libnbd URI (nbdinfo, nbdcopy, nbdsh) for PSK. */
export function pskUri(port: number, exportName: string, identity: string, pskFile: string): string {
  return `nbds://${identity}@127.0.0.1:${port}/${encodeURIComponent(exportName)}?tls-psk-file=${encodeURIComponent(pskFile)}`;
}

/** libnbd URI for X.509 (client certificate from `certDir`). */
export function x509Uri(port: number, exportName: string, certDir: string): string {
  return `nbds://localhost:${port}/${encodeURIComponent(exportName)}?tls-certificates=${encodeURIComponent(certDir)}`;
}

/** qemu-img/qemu-io arguments: a TLS creds object plus --image-opts for the export. */
export function qemuTlsArgs(port: number, exportName: string, creds: { psk: string; identity: string } | { x509: string }): string[] {
  const object = 'psk' in creds ? `tls-creds-psk,id=tls0,dir=${creds.psk},username=${creds.identity},endpoint=client` : `tls-creds-x509,id=tls0,dir=${creds.x509},endpoint=client`;
  const host = 'psk' in creds ? '127.0.0.1' : 'localhost';
  return ['--object', object, '--image-opts', `driver=nbd,host=${host},port=${port},export=${exportName},tls-creds=tls0`];
}
