// copyBytes (util/shared-copy.ts): target.set(source, at) for every relative alignment, either side
// in shared memory, long copies and copies short enough to go direct, overlapping ones.
// Its speed is in BENCHMARKS.md; here, only that every byte lands where set() would put it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { copyBytes } from '../../src/util/shared-copy';

function memory(shared: boolean, length: number): Uint8Array {
  return new Uint8Array(shared ? new SharedArrayBuffer(length) : new ArrayBuffer(length));
}

for (const [targetShared, sourceShared] of [[true, false], [false, true], [true, true], [false, false]]) {
  test(`copyBytes: ${targetShared ? 'shared' : 'plain'} target, ${sourceShared ? 'shared' : 'plain'} source, every alignment`, () => {
    for (const length of [0, 100, 511, 512, 4096, 300_001, 600_000]) {
      for (let s = 0; s < 8; s++) {
        for (const t of [0, 1, 3, 4, 7]) {
          const bytes = randomBytes(length);
          const source = memory(sourceShared, length + 16).subarray(s, s + length);
          source.set(bytes);
          const target = memory(targetShared, length + 64);
          const before = randomBytes(target.length);
          target.set(before);
          const at = t + 8;
          copyBytes(target.subarray(3), at, source);
          const expected = Buffer.from(before);
          expected.set(bytes, 3 + at);
          assert.ok(Buffer.from(target).equals(expected), `length ${length}, source offset ${s}, target offset ${3 + at}: bytes outside or inside the copy differ`);
        }
      }
    }
  });
}

test('copyBytes: a source that runs past the target fails as set() does, and writes nothing', () => {
  const target = memory(true, 1024);
  assert.throws(() => copyBytes(target, 600, randomBytes(1000)), RangeError);
  // misaligned and longer than the bounce buffer: the path that copies in pieces
  const big = memory(true, 600_000);
  const source = memory(false, 600_016).subarray(3, 3 + 599_990);
  source.fill(7);
  assert.throws(() => copyBytes(big, 16, source), RangeError);
  assert.ok(big.every((b) => b === 0), 'no piece was copied before the error');
  assert.throws(() => copyBytes(big, -1, source.subarray(0, 1000)), RangeError);
});

test('copyBytes: overlapping source and target in one shared buffer move like set() (memmove)', () => {
  for (const shift of [-9, -1, 1, 3, 4096]) {
    const bytes = randomBytes(20_000);
    const mem = memory(true, bytes.length);
    mem.set(bytes);
    const expected = Buffer.from(bytes);
    const from = 5_000;
    const n = 10_000;
    expected.set(bytes.subarray(from, from + n), from + shift);
    copyBytes(mem, from + shift, mem.subarray(from, from + n));
    assert.ok(Buffer.from(mem).equals(expected), `shift ${shift}`);
  }
});
