// Where a sealed object belongs. Every field goes into the AEAD associated data, so an object
// moved to another place (volume, kind, chunk index, generation) fails to open.

export const OBJECT_KINDS = ['chunk', 'page', 'root', 'snapshot', 'volume', 'lease', 'chunk-frame', 'journal-frame'] as const;
export type ObjectKind = (typeof OBJECT_KINDS)[number];

export interface ObjectPlace {
  /** 16 random bytes from the public `vault` object. */
  readonly vaultId: Buffer;
  /** 16 random bytes; all-zero for vault-wide objects. */
  readonly volumeId: Buffer;
  readonly kind: ObjectKind;
  /** chunk index for chunks and chunk frames, page index for pages, 0 otherwise (< 2^53). */
  readonly index: number;
  /** write generation for chunks (u48 of the object id; of the container for frames),
   *  sequence number for roots, 0 otherwise (< 2^53). */
  readonly generation: number;
  /** Frame number within a framed container: required for kinds chunk-frame and journal-frame
   *  (sealed as version 2, the number in the AD), absent for every other kind. */
  readonly frame?: number;
}
