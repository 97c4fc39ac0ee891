// npm run bench:codec — seal/open throughput over a realistic disk image, beside the physical
// limits measured in the same run on the same bytes: zstd -b3 (1 and 2+ threads, 4 MiB blocks)
// and raw XChaCha20-Poly1305 (sodium-native, one thread).
// The image: an ext4 filesystem built with mkfs.ext4 -d from files under /usr, ~60 % full.
// Env: BENCH_IMAGE_MB (default 1024), BENCH_KEEP_IMAGE=1 to keep the temp directory.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FRAME_BYTES, createCodec, isAllZero, openFrameSync, parseFramedHeader, sealFramesSync, type Codec, type ObjectPlace } from '../src/codec';
import { openChunkContainerSync } from '../src/codec/framed-container';
import { openObject } from '../src/codec/open-object';
import { sealObject } from '../src/codec/seal-object';
import { SecretKey } from '../src/keys/secret-key';
import { buildDiskImage, readChunks } from './disk-image';
import { rawAead, zstdBench } from './physical-limits';
import { bestCpuSeconds, framesOf } from './bench-util';

const MB = 1e6; // rates in MB/s (10^6), like zstd -b
const imageMiB = Number(process.env.BENCH_IMAGE_MB ?? 1024);

async function timeAsync(work: () => Promise<void>): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

async function codecRates(codec: Codec, chunks: Buffer[], key: SecretKey): Promise<{ seal: number; open: number; storedBytes: number; zeroChunks: number }> {
  const place = (index: number): ObjectPlace => ({ vaultId: Buffer.alloc(16, 1), volumeId: Buffer.alloc(16, 2), kind: 'chunk', index, generation: 1 });
  const bytes = chunks.reduce((s, c) => s + c.length, 0);
  let sealed: (Buffer | null)[] = [];
  const sealSeconds = await timeAsync(async () => {
    sealed = await Promise.all(chunks.map((c, i) => codec.seal(key, c, place(i))));
  });
  const openSeconds = await timeAsync(async () => {
    await Promise.all(sealed.map((s, i) => (s ? codec.open(key, s, place(i)) : Promise.resolve(null))));
  });
  return {
    seal: bytes / sealSeconds / MB,
    open: bytes / openSeconds / MB,
    storedBytes: sealed.reduce((s, b) => s + (b?.length ?? 0), 0),
    zeroChunks: sealed.filter((s) => s === null).length,
  };
}

/** Format 2: each chunk as 32 frames of 128 KiB in one sealFrames task; open = every frame. */
async function framedRates(codec: Codec, chunks: Buffer[], key: SecretKey): Promise<{ seal: number; open: number; openFrames: number; storedBytes: number }> {
  const place = (index: number) => ({ vaultId: Buffer.alloc(16, 1), volumeId: Buffer.alloc(16, 2), index, generation: 1 });
  const data = chunks.filter((c) => !isAllZero(c)); // writers store no object for a zero chunk
  const bytes = chunks.reduce((s, c) => s + c.length, 0);
  let sealed: Buffer[] = [];
  const sealSeconds = await timeAsync(async () => {
    sealed = await Promise.all(data.map((c, i) => codec.sealFrames(key, 'chunk-frame', framesOf(c), place(i), c.length)));
  });
  const openSeconds = await timeAsync(async () => {
    await Promise.all(sealed.map((container, i) => codec.openChunkContainer(key, container, place(i), data[i].length, 'bench')));
  });
  const openFramesSeconds = await timeAsync(async () => {
    await Promise.all(
      sealed.map(async (container, i) => {
        const h = parseFramedHeader(container, 'chunk', 'bench', container.length);
        for (let f = 0; f < h.frameCount; f++) {
          const frame = container.subarray(h.frameOffsets[f], h.frameOffsets[f] + h.frameLengths[f]);
          await codec.openFrame(key, frame, { ...place(i), kind: 'chunk-frame', frame: f }, Math.min(FRAME_BYTES, data[i].length - f * FRAME_BYTES));
        }
      }),
    );
  });
  return { seal: bytes / sealSeconds / MB, open: bytes / openSeconds / MB, openFrames: bytes / openFramesSeconds / MB, storedBytes: sealed.reduce((s, b) => s + b.length, 0) };
}

/**
 * CPU cost on one thread (process CPU time, best of 3), v1 whole-chunk seal/open beside format 2
 * on the same chunks: robust to a loaded machine, where the wall-clock rates above are not.
 */
function cpuRates(chunks: Buffer[], keyBytes: Buffer): string[][] {
  const data = chunks.filter((c) => !isAllZero(c));
  const bytes = data.reduce((n, c) => n + c.length, 0);
  const ids = { vaultId: Buffer.alloc(16, 1), volumeId: Buffer.alloc(16, 2), generation: 1 };
  const best = (work: () => void) => (bytes / bestCpuSeconds(work) / MB).toFixed(0);
  let v1: Buffer[] = [];
  let v2: Buffer[] = [];
  const v1Seal = best(() => (v1 = data.map((c, i) => sealObject(keyBytes, c, { ...ids, kind: 'chunk', index: i }, 3))));
  const v2Seal = best(() => (v2 = data.map((c, i) => sealFramesSync(keyBytes, 'chunk-frame', framesOf(c), { ...ids, index: i }, c.length, 3))));
  const v1Open = best(() => v1.forEach((s, i) => openObject(keyBytes, s, { ...ids, kind: 'chunk', index: i })));
  const v2Open = best(() => v2.forEach((s, i) => openChunkContainerSync(keyBytes, s, { ...ids, index: i }, data[i].length, 'bench')));
  const v2Frames = best(() =>
    v2.forEach((s, i) => {
      const h = parseFramedHeader(s, 'chunk', 'bench', s.length);
      for (let f = 0; f < h.frameCount; f++) {
        openFrameSync(keyBytes, s.subarray(h.frameOffsets[f], h.frameOffsets[f] + h.frameLengths[f]), { ...ids, kind: 'chunk-frame', index: i, frame: f }, Math.min(FRAME_BYTES, data[i].length - f * FRAME_BYTES));
      }
    }),
  );
  return [
    ['v1: seal / open whole 4 MiB chunks', v1Seal, v1Open],
    ['v2: sealFrames / openChunkContainer', v2Seal, v2Open],
    ['v2: openFrame, each 128 KiB frame on its own', '', v2Frames],
  ];
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nbd-vault-bench-'));
  try {
    const image = buildDiskImage(dir, imageMiB);
    const chunks = readChunks(image);
    const bytes = chunks.reduce((s, c) => s + c.length, 0);
    const cores = os.availableParallelism();
    const key = new SecretKey(Buffer.alloc(32, 9), 'data');

    const [zstd1c, zstd1d] = zstdBench(image, 1);
    const [zstdNc] = zstdBench(image, cores);
    const [aeadEnc, aeadDec] = rawAead(chunks, key.bytes);

    const rows: string[][] = [];
    const codecs: [string, number][] = [['codec, 1 worker', 1], [`codec, default pool (${cores} workers)`, cores]];
    let pooled = { seal: 0, open: 0, storedBytes: 0, zeroChunks: 0 };
    for (const [name, workers] of codecs) {
      const codec = createCodec({ workers });
      await codecRates(codec, chunks.slice(0, Math.min(8, chunks.length)), key); // warm up
      const r = await codecRates(codec, chunks, key);
      await codec.close();
      rows.push([name, r.seal.toFixed(0), r.open.toFixed(0)]);
      pooled = r;
    }
    // Format 2 beside the whole-chunk seal, same pool size, same bytes.
    const framedCodec = createCodec({ workers: cores });
    await framedRates(framedCodec, chunks.slice(0, Math.min(8, chunks.length)), key); // warm up
    const framed = await framedRates(framedCodec, chunks, key);
    await framedCodec.close();
    rows.push([`codec v2: sealFrames 32 × 128 KiB / openChunkContainer (${cores} workers)`, framed.seal.toFixed(0), framed.open.toFixed(0)]);
    rows.push([`codec v2: openFrame, every frame on its own (${cores} workers)`, '', framed.openFrames.toFixed(0)]);
    // One thread's physical limit for open is decompress then decrypt, back to back.
    const openLimit1 = 1 / (1 / zstd1d + 1 / aeadDec);
    const sealLimit1 = 1 / (1 / zstd1c + 1 / aeadEnc);
    rows.push(['zstd -b3, 1 thread (compress / decompress)', zstd1c.toFixed(0), zstd1d.toFixed(0)]);
    rows.push([`zstd -b3, ${cores} threads (compress)`, zstdNc.toFixed(0), '']);
    rows.push(['XChaCha20-Poly1305 raw, 1 thread (encrypt / decrypt)', aeadEnc.toFixed(0), aeadDec.toFixed(0)]);
    rows.push(['limit, 1 thread: zstd-3 + AEAD back to back', sealLimit1.toFixed(0), openLimit1.toFixed(0)]);

    console.log(`data: ${chunks.length} chunks of 4 MiB (${pooled.zeroChunks} all-zero → no object), stored ${(pooled.storedBytes / 2 ** 20).toFixed(0)} MiB of ${(bytes / 2 ** 20).toFixed(0)} MiB (${((100 * pooled.storedBytes) / bytes).toFixed(0)} %)`);
    console.log(`format 2 (128 KiB frames): stored ${(framed.storedBytes / 2 ** 20).toFixed(0)} MiB (${((100 * framed.storedBytes) / pooled.storedBytes - 100).toFixed(1)} % more than whole 4 MiB chunks)`);
    console.log('');
    const width = Math.max(...rows.map((r) => r[0].length));
    console.log(`${'MB/s (logical bytes)'.padEnd(width)}  ${'seal'.padStart(6)}  ${'open'.padStart(6)}`);
    for (const [name, seal, open] of rows) console.log(`${name.padEnd(width)}  ${seal.padStart(6)}  ${open.padStart(6)}`);
    console.log('');
    const cpuRows = cpuRates(chunks, key.bytes);
    const cpuWidth = Math.max(...cpuRows.map((r) => r[0].length));
    console.log(`${'MB per CPU-second, one thread (non-zero chunks)'.padEnd(cpuWidth)}  ${'seal'.padStart(6)}  ${'open'.padStart(6)}`);
    for (const [name, seal, open] of cpuRows) console.log(`${name.padEnd(cpuWidth)}  ${seal.padStart(6)}  ${open.padStart(6)}`);
    console.log('');
    const sealRatio = pooled.seal / zstdNc;
    const openRatio = pooled.open / openLimit1;
    const openRatioCores = pooled.open / (openLimit1 * cores);
    console.log(`pooled seal / zstd-3 ${cores}-thread compress = ${sealRatio.toFixed(2)} (target ≥ 0.80) ${sealRatio >= 0.8 ? 'ok' : 'MISSED'}`);
    const sealRatioIdeal = pooled.seal / (zstd1c * cores);
    console.log(`pooled seal / (${cores} × zstd-3 1-thread compress) = ${sealRatioIdeal.toFixed(2)} (ideal scaling, no encryption in the limit)`);
    console.log(`pooled open / 1-thread decompress+decrypt = ${openRatio.toFixed(2)} (target ≥ 0.70) ${openRatio >= 0.7 ? 'ok' : 'MISSED'}`);
    console.log(`pooled open / ${cores} × (decompress+decrypt) = ${openRatioCores.toFixed(2)} (stricter reading of the same target)`);
  } finally {
    if (process.env.BENCH_KEEP_IMAGE) console.log(`kept ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
