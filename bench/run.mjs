// `npm run bench` entry: runs each benchmark script in turn (after the build) and prints their
// figures. To add a benchmark, append its script to BENCHMARKS below.
import { spawnSync } from 'node:child_process';

const BENCHMARKS = [
  { name: 'NBD frontend', script: 'bench/nbd-bench.mjs' },
  { name: 'TLS (plaintext beside nbds://)', script: 'bench/tls-bench.mjs' },
  { name: 'Codec', script: 'dist/bench/codec-bench.js' },
  { name: 'Vault (volumes over the fs store and S3)', script: 'dist/bench/vault-bench.js' },
  { name: 'Hostile clients on a vault export', script: 'dist/bench/hostile-bench.js' },
  { name: 'Memory (8 volumes written at once under --memory-limit 1G)', script: 'dist/bench/memory-bench.js' },
  { name: 'Changed-block tracking (BLOCK_STATUS on 1 TiB)', script: 'dist/bench/block-status-bench.js' },
  { name: 'Sync (replica copies, fs→fs and RGW→fs)', script: 'dist/bench/sync-bench.js' },
  { name: 'Metrics overhead', script: 'bench/metrics-bench.mjs' },
  { name: 'Failover (qemu-io pause on restart and takeover)', script: 'dist/bench/failover-bench.js' },
  { name: 'Live-VM performance (issue 10; BENCH_QUICK=1 for a short run)', script: 'bench/live-vm-bench.mjs' },
  { name: 'Transfer ceilings (the CPU of import and export, and what 2 cores allow)', script: 'dist/bench/transfer-ceilings.js' },
  { name: 'Disk cache (4k random reads, S3 + 25 ms, cold / warm / restarted)', script: 'dist/bench/disk-cache-bench.js' },
];

let failed = 0;
for (const b of BENCHMARKS) {
  console.log(`\n=== ${b.name} (${b.script}) ===`);
  const r = spawnSync(process.execPath, [b.script], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
