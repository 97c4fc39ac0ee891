// Regenerates test/codec/vectors/*.json (run: npx tsc -p . && node dist/test/codec/make-vectors.js).
// Only after a deliberate format change (FORMAT_VERSION bump + docs/FORMAT.md changelog): the
// committed vectors are what stops the format drifting silently.
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import * as zstd from 'zstd-napi/binding';
import { sealFramesSync } from '../../src/codec';
import { sealObject } from '../../src/codec/seal-object';
import { compressibleBytes, seededBytes, testKey, testPlace } from './codec-fixtures';
import { FRAMED_VECTOR_CASES, frameBytes, type FramedVector } from './framed-vector-cases';
import { VECTOR_CASES, VECTORS_DIR, type CodecVector } from './vector-cases';

const key = testKey(77);
for (const c of VECTOR_CASES) {
  const plaintext = c.plaintext === 'text' ? compressibleBytes(c.length) : c.plaintext === 'random' ? seededBytes(c.length, 77) : Buffer.alloc(c.length);
  const place = testPlace(c.place);
  const nonce = seededBytes(24, c.nonceSeed);
  const sealed = sealObject(key.bytes, plaintext, place, c.zstdLevel, nonce);
  const vector: CodecVector = {
    name: c.name,
    description: c.description,
    zstdVersion: zstd.versionString(),
    key: key.bytes.toString('hex'),
    nonce: nonce.toString('hex'),
    place: { vaultId: place.vaultId.toString('hex'), volumeId: place.volumeId.toString('hex'), kind: place.kind, index: place.index, generation: place.generation },
    zstdLevel: c.zstdLevel,
    plaintext: plaintext.toString('hex'),
    sealed: sealed.toString('hex'),
  };
  writeFileSync(path.join(VECTORS_DIR, `${c.name}.json`), JSON.stringify(vector, null, 2) + '\n');
  console.log(`${c.name}: ${plaintext.length} → ${sealed.length} bytes`);
}

for (const c of FRAMED_VECTOR_CASES) {
  const frames = c.frames.map(frameBytes);
  const place = testPlace({ index: c.index, generation: c.generation });
  const nonces = frames.map((_, f) => seededBytes(24, c.nonceSeed + f));
  const logicalLength = frames.reduce((n, f) => n + f.length, 0);
  const container = sealFramesSync(key.bytes, c.kind, frames, place, logicalLength, c.zstdLevel, nonces);
  const vector: FramedVector = {
    ...c,
    zstdVersion: zstd.versionString(),
    key: key.bytes.toString('hex'),
    vaultId: place.vaultId.toString('hex'),
    volumeId: place.volumeId.toString('hex'),
    logicalLength,
    nonces: nonces.map((n) => n.toString('hex')),
    frameSha256: frames.map((f) => createHash('sha256').update(f).digest('hex')),
    container: container.toString('hex'),
  };
  writeFileSync(path.join(VECTORS_DIR, `${c.name}.json`), JSON.stringify(vector, null, 2) + '\n');
  console.log(`${c.name}: ${logicalLength} bytes in ${frames.length} frames → ${container.length} bytes`);
}
