// Known-answer vectors: committed fixed key + nonce + place + plaintext → exact sealed bytes.
// Opening a vector must always work (the format is frozen); sealing must reproduce the bytes
// exactly, except that compressed bytes are only compared under the zstd that produced them.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import * as zstd from 'zstd-napi/binding';
import { openSync } from '../../src/codec';
import { FLAG_COMPRESSED, OFFSET_FLAGS } from '../../src/codec/format';
import { sealObject } from '../../src/codec/seal-object';
import { SecretKey } from '../../src/keys/secret-key';
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
