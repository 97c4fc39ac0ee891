#!/usr/bin/env node
// How 128 KiB frames of a file compress at zstd level 3 and at the fast level, and what
// sealFramesSync stores with its per-frame choice (frame-compression.ts): MB/s per
// CPU-second on one thread and bytes out. Build first (npm run build).
//   node bench/frame-levels.mjs FILE [MiB, default 256]
// e.g. a file of fio's write buffers: fio --name=f --filename=/tmp/fio.dat --rw=write --bs=1M --size=256M
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { sealFramesSync, FRAME_BYTES } = require('../dist/src/codec');
const { POOR_DATA_ZSTD_LEVEL } = require('../dist/src/codec/frame-compression');
const { compressBound, compressInto } = require('../dist/src/codec/zstd-contexts');

const [file, mib = '256'] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/frame-levels.mjs FILE [MiB]');
  process.exit(2);
}
const data = readFileSync(file).subarray(0, Number(mib) << 20);
const CHUNK = 4 << 20;

function timed(work) {
  const c0 = process.cpuUsage();
  const bytes = work();
  const cpu = process.cpuUsage(c0);
  return { bytes, mbPerCpuS: data.length / 1e6 / ((cpu.user + cpu.system) / 1e6) };
}

const dst = Buffer.alloc(compressBound(FRAME_BYTES));
for (const level of [3, POOR_DATA_ZSTD_LEVEL]) {
  const r = timed(() => {
    let out = 0;
    for (let at = 0; at < data.length; at += FRAME_BYTES) out += Math.min(compressInto(dst, data.subarray(at, at + FRAME_BYTES), level), Math.min(FRAME_BYTES, data.length - at));
    return out;
  });
  console.log(`zstd level ${level}, every frame: ${r.mbPerCpuS.toFixed(0)} MB/s a core, ${r.bytes} bytes (${(r.bytes / data.length).toFixed(3)})`);
}
const key = Buffer.alloc(32, 1);
const place = { vaultId: Buffer.alloc(16, 2), volumeId: Buffer.alloc(16, 3), index: 0, generation: 1 };
const r = timed(() => {
  let out = 0;
  for (let at = 0; at < data.length; at += CHUNK) {
    const chunk = data.subarray(at, at + CHUNK);
    const frames = [];
    for (let f = 0; f < chunk.length; f += FRAME_BYTES) frames.push(chunk.subarray(f, f + FRAME_BYTES));
    out += sealFramesSync(key, 'chunk-frame', frames, { ...place, index: at / CHUNK }, chunk.length, 3).length;
  }
  return out;
});
console.log(`sealFramesSync at level 3 (per-frame choice, sealed): ${r.mbPerCpuS.toFixed(0)} MB/s a core, ${r.bytes} bytes (${(r.bytes / data.length).toFixed(3)})`);
