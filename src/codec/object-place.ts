// Where a sealed object belongs. Every field goes into the AEAD associated data, so an object
// moved to another place (volume, kind, chunk index, generation) fails to open.

export const OBJECT_KINDS = ['chunk', 'page', 'root', 'snapshot', 'volume', 'lease'] as const;
export type ObjectKind = (typeof OBJECT_KINDS)[number];

export interface ObjectPlace {
  /** 16 random bytes from the public `vault` object. */
  readonly vaultId: Buffer;
  /** 16 random bytes; all-zero for vault-wide objects. */
  readonly volumeId: Buffer;
  readonly kind: ObjectKind;
  /** chunk index for chunks, page index for pages, 0 otherwise (< 2^53). */
  readonly index: number;
  /** write generation for chunks, sequence number for roots, 0 otherwise (< 2^53). */
  readonly generation: number;
}
