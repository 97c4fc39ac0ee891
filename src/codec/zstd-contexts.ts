// zstd through zstd-napi's low-level binding, one compression and one decompression context per
// thread (created lazily, reused: context setup costs more than a small object). Synchronous: call
// it from a worker thread for 4 MiB chunks, or inline for small objects.
// The binding loads on first use, so that commands which never compress (--version, keys) run even
// where npm skipped zstd-napi's install script, and the rest say how to fix that.
import type * as ZstdBinding from 'zstd-napi/binding';
import { VaultError } from '../errors';

let binding: typeof ZstdBinding | null = null;
let cctx: ZstdBinding.CCtx | null = null;
let dctx: ZstdBinding.DCtx | null = null;

function zstd(): typeof ZstdBinding {
  if (binding) return binding;
  try {
    binding = require('zstd-napi/binding') as typeof ZstdBinding;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND' || !/binding\.node/.test(String((err as Error).message))) throw err;
    throw new VaultError(
      'ERR_INSTALL',
      "zstd-napi's native module was never built (npm skipped its install script): reinstall nbd-vault with " +
        '`npm install -g --allow-scripts=zstd-napi PACKAGE` (README: Install), or in a checkout run `npm rebuild zstd-napi`',
      { cause: err },
    );
  }
  return binding;
}

export function compressBound(length: number): number {
  return zstd().compressBound(length);
}

/** Compresses `src` into `dst` (≥ compressBound(src.length)); returns the compressed length. */
export function compressInto(dst: Uint8Array, src: Uint8Array, level: number): number {
  cctx ??= new (zstd().CCtx)();
  return cctx.compress(dst, src, level);
}

/** Decompresses one frame into `dst`; throws if it does not fit. Returns the decompressed length. */
export function decompressInto(dst: Uint8Array, src: Uint8Array): number {
  dctx ??= new (zstd().DCtx)();
  return dctx.decompress(dst, src);
}

export function zstdLevelBounds(): { min: number; max: number } {
  return { min: zstd().minCLevel(), max: zstd().maxCLevel() };
}
