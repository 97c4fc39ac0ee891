// Known-answer vectors: committed fixed key + nonce + place + plaintext → exact sealed bytes.
// Opening a vector must always work (the format is frozen); sealing must reproduce the bytes
// exactly, except that compressed bytes are only compared under the zstd that produced them.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import * as zstd from 'zstd-napi/binding';
import { openFrameSync, openSync, parseFramedHeader, sealFramesSync, type FramesPlace } from '../../src/codec';
import { FLAG_COMPRESSED, OFFSET_FLAGS } from '../../src/codec/format';
import { sealObject } from '../../src/codec/seal-object';
import { SecretKey } from '../../src/keys/secret-key';
import { FRAMED_VECTOR_CASES, frameBytes, type FramedVector } from './framed-vector-cases';
import { VECTOR_CASES, VECTORS_DIR, type CodecVector } from './vector-cases';

for (const c of VECTOR_CASES) {
  test(`vector ${c.name}: ${c.description}`, (t) => {
    const v: CodecVector = JSON.parse(readFileSync(path.join(VECTORS_DIR, `${c.name}.json`), 'utf8'));
    const key = new SecretKey(Buffer.from(v.key, 'hex'), 'data');
    const place = { ...v.place, vaultId: Buffer.from(v.place.vaultId, 'hex'), volumeId: Buffer.from(v.place.volumeId, 'hex') };
    const plaintext = Buffer.from(v.plaintext, 'hex');
    const sealed = Buffer.from(v.sealed, 'hex');

    assert.deepEqual(openSync(key, sealed, place), plaintext);
    const resealed = sealObject(key.bytes, plaintext, place, v.zstdLevel, Buffer.from(v.nonce, 'hex'));
    if ((sealed[OFFSET_FLAGS] & FLAG_COMPRESSED) !== 0 && zstd.versionString() !== v.zstdVersion) {
      t.diagnostic(`zstd ${zstd.versionString()} differs from ${v.zstdVersion}: compressed bytes not compared`);
      return;
    }
    assert.equal(resealed.toString('hex'), v.sealed);
  });
}

test('vector layout, spelled out: chunk-raw header bytes', () => {
  const v: CodecVector = JSON.parse(readFileSync(path.join(VECTORS_DIR, 'chunk-raw.json'), 'utf8'));
  const sealed = Buffer.from(v.sealed, 'hex');
  assert.equal(sealed.subarray(0, 12).toString('hex'), '4e42564f' + '01' + '01' + '00' + '00' + '40000000');
  assert.equal(sealed.subarray(12, 36).toString('hex'), v.nonce);
  assert.equal(sealed.length, 36 + 64 + 16);
});

// --- format 2: framed containers ---------------------------------------------------------------

function loadFramed(name: string): { v: FramedVector; key: SecretKey; container: Buffer; frames: Buffer[]; place: FramesPlace } {
  const v: FramedVector = JSON.parse(readFileSync(path.join(VECTORS_DIR, `${name}.json`), 'utf8'));
  return {
    v,
    key: new SecretKey(Buffer.from(v.key, 'hex'), 'data'),
    container: Buffer.from(v.container, 'hex'),
    frames: v.frames.map(frameBytes),
    place: { vaultId: Buffer.from(v.vaultId, 'hex'), volumeId: Buffer.from(v.volumeId, 'hex'), index: v.index, generation: v.generation },
  };
}

for (const c of FRAMED_VECTOR_CASES) {
  test(`vector ${c.name}: ${c.description}`, (t) => {
    const { v, key, container, frames, place } = loadFramed(c.name);
    frames.forEach((f, i) => assert.equal(createHash('sha256').update(f).digest('hex'), v.frameSha256[i], `frame ${i} generator drifted`));
    const header = parseFramedHeader(container, c.kind === 'chunk-frame' ? 'chunk' : 'journal', c.name, container.length);
    assert.equal(header.frameCount, frames.length);
    assert.equal(header.logicalLength, v.logicalLength);
    for (let f = 0; f < header.frameCount; f++) {
      const sealed = container.subarray(header.frameOffsets[f], header.frameOffsets[f] + header.frameLengths[f]);
      assert.equal(sealed[4], 2, 'a sealed frame is version 2');
      assert.equal(sealed[5], c.kind === 'chunk-frame' ? 7 : 8, 'kind code');
      assert.deepEqual(openFrameSync(key.bytes, sealed, { ...place, kind: c.kind, frame: f }, frames[f].length), frames[f]);
    }
    const resealed = sealFramesSync(key.bytes, c.kind, frames, place, v.logicalLength, v.zstdLevel, v.nonces.map((n) => Buffer.from(n, 'hex')));
    if (zstd.versionString() !== v.zstdVersion) {
      t.diagnostic(`zstd ${zstd.versionString()} differs from ${v.zstdVersion}: compressed bytes not compared`);
      return;
    }
    assert.equal(resealed.toString('hex'), v.container);
  });
}

test('vector layout, spelled out: the chunk-v2 container header and a zero frame that is still sealed', () => {
  const { container } = loadFramed('chunk-v2-container');
  // magic NBVC, version 2, reserved, logical length 2 × 131072 + 1000 = 0x403e8, 3 frames
  assert.equal(container.subarray(0, 16).toString('hex'), '4e425643' + '02' + '000000' + 'e8030400' + '03000000');
  const lengths = [0, 1, 2].map((f) => container.readUInt32LE(16 + 4 * f));
  assert.equal(lengths[2], 1000 + 52, 'random frame stored raw: plaintext + header + tag');
  assert.ok(lengths[1] > 52 && lengths[1] < 100, `a zero frame compresses to a few bytes but is sealed (${lengths[1]})`);
  assert.equal(container.length, 16 + 12 + lengths[0] + lengths[1] + lengths[2]);
  assert.equal(container.subarray(28, 32).toString('latin1'), 'NBVO', 'frame 0 starts right after the header');
  const journal = loadFramed('journal-container').container;
  assert.equal(journal.subarray(0, 16).toString('hex'), '4e42564a' + '02' + '000000' + '38200000' + '02000000');
});
