// The codec layer's public surface. volume/ uses createCodec() (worker pool) or
// createInlineCodec() (calling thread); sealSync/openSync are the same pure functions, for tools.
export type { Codec } from './codec';
export { OBJECT_KINDS, type ObjectKind, type ObjectPlace } from './object-place';
export { createCodec, type CodecOptions } from './worker-pool';
export { createInlineCodec, type InlineCodecOptions } from './inline-codec';
export { sealSync, type SealOptions } from './seal-object';
export { openSync } from './open-object';
export { isAllZero } from './zero-detect';
export {
  CHUNK_CONTAINER_MAGIC,
  DEFAULT_ZSTD_LEVEL,
  FORMAT_VERSION,
  FRAME_BYTES,
  FRAME_FORMAT_VERSION,
  FRAMED_HEADER_MAX_CHUNK,
  JOURNAL_CONTAINER_MAGIC,
  MAX_CHUNK_FRAMES,
  MAX_JOURNAL_FRAMES,
  MAX_PLAINTEXT_BYTES,
  SEAL_OVERHEAD_BYTES,
} from './format';
export {
  FramedHeaderIncomplete,
  chunkFrameLength,
  objectFormatOf,
  parseFramedHeader,
  sealFramesSync,
  openFrameSync,
  type ContainerMagic,
  type FrameKind,
  type FramedHeader,
  type FramesPlace,
} from './framed-container';
