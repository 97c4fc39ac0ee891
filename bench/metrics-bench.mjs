// Metrics overhead (`node bench/metrics-bench.mjs` after `npm run build`): the same
// `nbd-vault serve --memory` with and without `--metrics`, side by side in one run, fio 4 KiB
// random reads (the request rate is highest there, so per-request metric work shows most).
// Rounds alternate the two servers so machine load hits both alike. Prints IOPS per round and
// the ratio. Env: BENCH_FIO_SECONDS (default 5), BENCH_ROUNDS (default 2).
import { spawn, spawnSync } from 'node:child_process';

const FIO_SECONDS = Number(process.env.BENCH_FIO_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const cli = new URL('../bin/nbd-vault.js', import.meta.url).pathname;

async function startServer(extra) {
  const child = spawn(process.execPath, [cli, 'serve', '--memory', 'bench=256M', '--listen', '127.0.0.1:0', '--log-format', 'json', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => (log += d));
  const deadline = Date.now() + 60_000;
  let m;
  while (!(m = /"port":(\d+)[^\n]*"msg":"listening"/.exec(log))) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`server did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, uri: `nbd://127.0.0.1:${m[1]}/bench`, metricsUrl: /"url":"([^"]+)"/.exec(log)?.[1] };
}

function fioRandRead(uri) {
  const r = spawnSync('fio', ['--name=randread', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', '--iodepth=32', '--size=256M', `--runtime=${FIO_SECONDS}`, '--time_based', '--output-format=json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`fio failed: ${r.stderr}`);
  return JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0].read.iops;
}

const plain = await startServer([]);
const metered = await startServer(['--metrics', '0']);
try {
  const rows = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const a = fioRandRead(plain.uri);
    const b = fioRandRead(metered.uri);
    rows.push({ round, without: Math.round(a), with: Math.round(b), ratio: (b / a).toFixed(2) });
  }
  console.log('fio 4k randread, iodepth 32, serve --memory: IOPS without and with --metrics');
  console.table(rows);
  const sum = (k) => rows.reduce((s, r) => s + r[k], 0);
  console.log(`overall: with/without = ${(sum('with') / sum('without')).toFixed(2)}`);
  const text = await (await fetch(metered.metricsUrl)).text();
  const reads = /nbd_vault_nbd_requests_total\{volume="bench",command="read",result="ok"\} (\d+)/.exec(text)?.[1];
  console.log(`(the metered server counted ${reads} reads)`);
} finally {
  plain.child.kill('SIGTERM');
  metered.child.kill('SIGTERM');
}
