// Failover figures: how long a writing QEMU client (qemu-io, reconnect-delay=60) pauses when its
// server is restarted with SIGTERM (same state dir) and when it is killed and another server
// (other state dir, same address) takes over. Median of FAILOVER_RUNS runs (default 3) per case,
// on the fs store and, with NBD_VAULT_TEST_S3_URL, on S3. Also counts the heartbeat requests.
//   node dist/bench/failover-bench.js
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestVault, startVaultServer, testS3Url, type VaultServer } from '../test/helpers/vault-server';

const MiB = 2 ** 20;
const RUNS = Number(process.env.FAILOVER_RUNS ?? 3);

function writer(port: number): { wroteAt: number[]; done: Promise<string> } {
  const args: string[] = [];
  for (let i = 0; i < 30; i++) args.push('-c', `write -f -P ${(i % 250) + 1} ${i * MiB} ${MiB}`, '-c', 'sleep 150');
  const opts = `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},export=vm,reconnect-delay=60`;
  const child = spawn('stdbuf', ['-oL', 'qemu-io', '--image-opts', ...args, opts], { stdio: ['ignore', 'pipe', 'pipe'] });
  const wroteAt: number[] = [];
  let out = '';
  const onData = (d: Buffer) => {
    out += d;
    const n = (out.match(/^wrote /gm) ?? []).length;
    while (wroteAt.length < n) wroteAt.push(Date.now());
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  return { wroteAt, done: new Promise((r) => child.once('exit', (code) => r(code === 0 && !/failed/i.test(out) ? '' : out))) };
}

const longestGap = (t: number[]) => t.slice(1).reduce((g, x, i) => Math.max(g, x - t[i]), 0);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function once(s3: boolean, kind: 'restart' | 'failover'): Promise<number> {
  const v = await makeTestVault({ s3 });
  try {
    await v.cli('volume', 'create', 'vm', '--size', '64M');
    const a = await v.serve();
    const w = writer(a.port);
    while (w.wroteAt.length < 6) await new Promise((r) => setTimeout(r, 20));
    let b: VaultServer;
    if (kind === 'restart') {
      await a.stop();
      b = await startVaultServer(v.env, v.dir, ['--listen', `127.0.0.1:${a.port}`]);
    } else {
      await a.kill();
      b = await startVaultServer(v.env, v.dir, ['--listen', `127.0.0.1:${a.port}`, '--state', mkdtempSync(join(v.dir, 'state-b-'))]);
    }
    const err = await w.done;
    if (err) throw new Error(`the client saw an error:\n${err}`);
    await b.stop();
    return longestGap(w.wroteAt);
  } finally {
    await v.cleanup();
  }
}

async function main(): Promise<void> {
  const stores = testS3Url() ? [false, true] : [false];
  for (const s3 of stores) {
    for (const kind of ['restart', 'failover'] as const) {
      const xs: number[] = [];
      for (let i = 0; i < RUNS; i++) xs.push(await once(s3, kind));
      const what = kind === 'restart' ? 'SIGTERM restart, same state dir' : 'SIGKILL, takeover by another server';
      console.log(`${s3 ? 's3 ' : 'fs '} ${what.padEnd(38)} client pause median ${(median(xs) / 1000).toFixed(1)} s  (runs: ${xs.map((x) => (x / 1000).toFixed(1)).join(', ')} s)`);
    }
  }
  console.log('heartbeat: 1 PUT per writing server every 5 s = 17,280 PUT/day, whatever the number of volumes');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
