// zstd through zstd-napi's low-level binding, one compression and one decompression context per
// thread (created lazily, reused: context setup costs more than a small object). Synchronous: call
// it from a worker thread for 4 MiB chunks, or inline for small objects.
import * as zstd from 'zstd-napi/binding';

let cctx: zstd.CCtx | null = null;
let dctx: zstd.DCtx | null = null;

export function compressBound(length: number): number {
  return zstd.compressBound(length);
}

/** Compresses `src` into `dst` (≥ compressBound(src.length)); returns the compressed length. */
export function compressInto(dst: Uint8Array, src: Uint8Array, level: number): number {
  cctx ??= new zstd.CCtx();
  return cctx.compress(dst, src, level);
}

/** Decompresses one frame into `dst`; throws if it does not fit. Returns the decompressed length. */
export function decompressInto(dst: Uint8Array, src: Uint8Array): number {
  dctx ??= new zstd.DCtx();
  return dctx.decompress(dst, src);
}

export function zstdLevelBounds(): { min: number; max: number } {
  return { min: zstd.minCLevel(), max: zstd.maxCLevel() };
}
