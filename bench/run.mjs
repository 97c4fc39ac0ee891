// `npm run bench` entry: runs each benchmark script in turn (after the build) and prints their
// figures. To add a benchmark, append its script to BENCHMARKS below.
import { spawnSync } from 'node:child_process';

const BENCHMARKS = [
  { name: 'NBD frontend', script: 'bench/nbd-bench.mjs' },
  { name: 'Codec', script: 'dist/bench/codec-bench.js' },
  { name: 'Vault (volumes over the fs store and S3)', script: 'dist/bench/vault-bench.js' },
  { name: 'Failover (qemu-io pause on restart and takeover)', script: 'dist/bench/failover-bench.js' },
];

let failed = 0;
for (const b of BENCHMARKS) {
  console.log(`\n=== ${b.name} (${b.script}) ===`);
  const r = spawnSync(process.execPath, [b.script], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
