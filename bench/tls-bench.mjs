// TLS cost benchmark (`npm run bench`, or `node bench/tls-bench.mjs` after `npm run build`).
// One `nbd-vault serve --memory bench=… --tls on --tls-certificates DIR` serves plaintext and
// TLS clients side by side; the same workloads run over nbd:// and over nbds:// (TLS 1.3, X.509
// server certificate made here with openssl) in the same run, alternating, best of ROUNDS each.
// X.509 rather than PSK because fio's nbd engine refuses ?tls-psk-file= (libnbd forbids local
// files in URIs it did not open itself); libnbd then reads the CA from $HOME/.pki/libnbd, so HOME
// points at a temp dir for the clients (it does not offer a client certificate from there, so
// the server runs without --tls-verify-peer; the bulk cipher costs the same either way).
//   1. nbdcopy of a file into the export (sequential write)
//   2. nbdcopy of the export to null: (sequential read)
//   3. fio, nbd engine, 4 KiB random read, iodepth 32
// Target (issue 11): TLS keeps >= 75 % of plaintext sequential throughput.
// Env: BENCH_SIZE_MIB (default 512), BENCH_FIO_SECONDS (default 5), BENCH_ROUNDS (default 2).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, openSync, writeSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SIZE_MIB = Number(process.env.BENCH_SIZE_MIB ?? 512);
const FIO_SECONDS = Number(process.env.BENCH_FIO_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const root = new URL('..', import.meta.url).pathname;

function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitListening(port, ms = 15000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ok = await new Promise((r) => {
      const c = connect(port, '127.0.0.1', () => (c.destroy(), r(true)));
      c.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listening on ${port}`);
}

let clientEnv = process.env;

function timed(cmd, args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: clientEnv });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return { seconds: s, stdout: r.stdout.toString() };
}

function fioRandRead(uri) {
  const { stdout } = timed('fio', [
    '--name=randread', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', '--iodepth=32',
    `--size=${SIZE_MIB}M`, `--runtime=${FIO_SECONDS}`, '--time_based', '--output-format=json',
  ]);
  return JSON.parse(stdout.slice(stdout.indexOf('{'))).jobs[0].read.iops;
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-tls-bench-'));
  const file = join(dir, 'src.img');
  const block = randomFillSync(Buffer.alloc(16 * 1024 * 1024));
  const fd = openSync(file, 'w');
  for (let i = 0; i < SIZE_MIB / 16; i++) writeSync(fd, block);
  closeSync(fd);
  const certs = makeCertificates(dir);
  clientEnv = { ...process.env, HOME: certs.home };

  const port = await freePort();
  const srv = spawn(process.execPath, [join(root, 'bin/nbd-vault.js'), 'serve', '--listen', `127.0.0.1:${port}`, '--memory', `bench=${SIZE_MIB}M`, '--tls', 'on', '--tls-certificates', certs.serverDir, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const uris = {
    plaintext: `nbd://127.0.0.1:${port}/bench`,
    TLS: `nbds://localhost:${port}/bench`,
  };
  const best = {};
  try {
    await waitListening(port);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, uri] of Object.entries(uris)) {
        const write = SIZE_MIB / timed('nbdcopy', [file, uri]).seconds;
        const read = SIZE_MIB / timed('nbdcopy', [uri, 'null:']).seconds;
        const iops = fioRandRead(uri);
        const b = (best[name] ??= { write: 0, read: 0, iops: 0 });
        b.write = Math.max(b.write, write);
        b.read = Math.max(b.read, read);
        b.iops = Math.max(b.iops, iops);
      }
    }
  } finally {
    srv.kill('SIGTERM');
    await new Promise((r) => srv.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
  const p = best.plaintext;
  const t = best.TLS;
  const pct = (a, b) => `${((100 * a) / b).toFixed(0)} %`;
  console.log(`\nTLS benchmark (${SIZE_MIB} MiB, loopback, one server with --tls on, best of ${ROUNDS}, fio ${FIO_SECONDS} s)`);
  console.log('| workload | nbd:// plaintext | nbds:// TLS 1.3 X.509 | TLS / plaintext | target |');
  console.log('|---|---|---|---|---|');
  console.log(`| nbdcopy file → export (MiB/s) | ${p.write.toFixed(0)} | ${t.write.toFixed(0)} | ${pct(t.write, p.write)} | ≥ 75 % |`);
  console.log(`| nbdcopy export → null: (MiB/s) | ${p.read.toFixed(0)} | ${t.read.toFixed(0)} | ${pct(t.read, p.read)} | ≥ 75 % |`);
  console.log(`| fio 4k randread QD32 (IOPS) | ${p.iops.toFixed(0)} | ${t.iops.toFixed(0)} | ${pct(t.iops, p.iops)} | |`);
}

/** A CA, a server certificate for localhost and a client certificate, in the qemu/nbdkit/libnbd
 *  layouts: DIR/server (for the server) and DIR/home/.pki/libnbd (libnbd's default place). */
function makeCertificates(dir) {
  const w = join(dir, 'pki');
  mkdirSync(w);
  const ssl = (args) => execFileSync('openssl', args, { cwd: w, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  ssl(['req', '-x509', ...ec, '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '1', '-subj', '/CN=bench CA']);
  for (const [name, ext] of [['server', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], ['client', 'extendedKeyUsage=clientAuth']]) {
    writeFileSync(join(w, `${name}.ext`), ext + '\n');
    ssl(['req', ...ec, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${name === 'server' ? 'localhost' : 'bench'}`]);
    ssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', `${name}-cert.pem`, '-days', '1', '-extfile', `${name}.ext`]);
  }
  const serverDir = join(dir, 'server');
  const home = join(dir, 'home');
  const clientDir = join(home, '.pki', 'libnbd');
  mkdirSync(serverDir);
  mkdirSync(clientDir, { recursive: true });
  for (const f of ['ca-cert.pem', 'server-cert.pem', 'server-key.pem']) copyFileSync(join(w, f), join(serverDir, f));
  for (const f of ['ca-cert.pem', 'client-cert.pem', 'client-key.pem']) copyFileSync(join(w, f), join(clientDir, f));
  return { serverDir, home };
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
