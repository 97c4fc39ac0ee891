// Physical limits measured on the benchmark's own bytes: zstd -b3 (the CLI) and raw
// XChaCha20-Poly1305 (sodium-native), so our figures can be read against what 2 cores can do.
import { execFileSync } from 'node:child_process';
import sodium from 'sodium-native';

const CHUNK_BYTES = 4 * 1024 * 1024;
const MB = 1e6;

function timeIt(work: () => void): number {
  const start = process.hrtime.bigint();
  work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/**
 * zstd -b3 over the image: [compress MB/s, decompress MB/s]. One thread: independent 4 MiB blocks,
 * like our chunks. Several threads: the whole image (zstd's own jobs), since zstd does not split a
 * 4 MiB block between threads — this is the multi-core compression rate the machine can reach.
 */
export function zstdBench(image: string, threads: number): [number, number] {
  const blocks = threads === 1 ? [`-B${CHUNK_BYTES}`] : [];
  const out = execFileSync('zstd', ['-b3', '-i5', `-T${threads}`, ...blocks, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  // The result line carries both rates; progress lines (\r-separated, in any order around it)
  // carry one.
  const last = out.split(/\r|\n/).filter((l) => /MB\/s.*MB\/s/.test(l)).pop() ?? '';
  const rates = [...last.matchAll(/([\d.]+) MB\/s/g)].map((m) => Number(m[1]));
  if (rates.length < 2) throw new Error(`cannot parse zstd -b output: ${last}`);
  return [rates[0], rates[1]];
}

export function rawAead(chunks: Buffer[], key: Buffer): [number, number] {
  const nonce = Buffer.alloc(24, 1);
  const ad = Buffer.alloc(85);
  const sealed = chunks.map((c) => Buffer.allocUnsafeSlow(c.length + 16));
  const bytes = chunks.reduce((s, c) => s + c.length, 0);
  const enc = timeIt(() => chunks.forEach((c, i) => sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(sealed[i], c, ad, null, nonce, key)));
  const out = Buffer.allocUnsafeSlow(CHUNK_BYTES);
  const dec = timeIt(() => sealed.forEach((s) => sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(out.subarray(0, s.length - 16), null, s, ad, nonce, key)));
  return [bytes / enc / MB, bytes / dec / MB];
}

