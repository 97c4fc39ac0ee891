// Dirty 4 KiB blocks come from reused slabs (block-slabs.ts). What must hold: a slot has one owner
// at a time (a block given back twice, or a buffer the pool never handed out, frees nothing);
// empty slabs beyond a few, and all of them after an idle spell, are let go; and in a volume,
// reused memory never shows one write's data in place of another's, while every block goes back
// once its batch is sealed.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { seededRandom } from '../../src/store/seeded-random';
import { BlockSlabs, MAX_EMPTY_SLABS, MAX_EMPTY_SLABS_PROCESS, SLAB_BYTES } from '../../src/volume/block-slabs';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { DirtyBatch } from '../../src/volume/dirty-blocks';
import { makeVault } from './vault-fixture';
import { MemoryBudget } from '../../src/util/memory-budget';

const MiB = 2 ** 20;

test('slots have one owner: given back twice or never handed out frees nothing', () => {
  const slabs = new BlockSlabs();
  const a = slabs.take();
  const b = slabs.take();
  assert.equal(a.length, 4096);
  assert.ok(a.buffer === b.buffer && a.byteOffset !== b.byteOffset, 'two slots of one slab');
  a.fill(1);
  b.fill(2);
  slabs.give(a);
  slabs.give(a); // twice: once
  slabs.give(Buffer.alloc(4096)); // not ours
  slabs.give(b.subarray(0, 100)); // not a block
  assert.equal(slabs.blocksInUse, 1);
  const c = slabs.take();
  const d = slabs.take();
  assert.notEqual(c.byteOffset, d.byteOffset, 'a slot given back twice is handed out once');
  assert.ok(c.byteOffset === a.byteOffset || d.byteOffset === a.byteOffset, "a's slot is reused");
  assert.ok(c.byteOffset !== b.byteOffset && d.byteOffset !== b.byteOffset, "b's slot is still b's");
  assert.ok(b.every((x) => x === 2), 'b unchanged');
  assert.equal(slabs.blocksInUse, 3);
});

test('empty slabs beyond a few are let go at once, the rest after an idle spell', () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  try {
    const slabs = new BlockSlabs();
    const perSlab = SLAB_BYTES / 4096;
    const count = MAX_EMPTY_SLABS + 6;
    const blocks = Array.from({ length: count * perSlab }, () => slabs.take()); // full slabs
    assert.equal(slabs.heldBytes, count * SLAB_BYTES);
    assert.equal(new Set(blocks.map((x) => x.buffer)).size, count, 'one slab per perSlab blocks');
    for (const x of blocks.slice(0, (MAX_EMPTY_SLABS + 2) * perSlab)) slabs.give(x);
    assert.equal(slabs.heldBytes, (count - 2) * SLAB_BYTES, 'two empty slabs past the kept ones let go');
    for (const x of blocks.slice((MAX_EMPTY_SLABS + 2) * perSlab, count * perSlab - 1)) slabs.give(x);
    assert.equal(slabs.heldBytes, (MAX_EMPTY_SLABS + 1) * SLAB_BYTES, 'the kept empty slabs, and the slab with one block in use');
    assert.equal(slabs.blocksInUse, 1);
    mock.timers.tick(6_000);
    assert.equal(slabs.heldBytes, SLAB_BYTES, 'idle: only the slab in use is held');
    const again = slabs.take();
    assert.equal(again.buffer, blocks[count * perSlab - 1].buffer, 'the partly used slab is taken from first');
    assert.equal(slabs.blocksInUse, 2);
  } finally {
    mock.timers.reset();
  }
});

test('a volume keeps as many empty slabs as its own bound (its dirty limit), no more', () => {
  const perSlab = SLAB_BYTES / 4096;
  const slabs = new BlockSlabs(undefined, 3);
  const blocks = Array.from({ length: 5 * perSlab }, () => slabs.take());
  for (const x of blocks) slabs.give(x);
  assert.equal(slabs.keptBytes, 3 * SLAB_BYTES);
  assert.equal(slabs.heldBytes, 3 * SLAB_BYTES, 'the two past the bound let go at once');
  // taken again: the kept slabs serve first, nothing new is allocated for them
  const again = Array.from({ length: 3 * perSlab }, () => slabs.take());
  assert.equal(slabs.heldBytes, 3 * SLAB_BYTES);
  const before = new Set(blocks.map((x) => x.buffer));
  assert.ok(again.every((x) => before.has(x.buffer)), 'the same slabs again');
  for (const x of again) slabs.give(x);
  slabs.dropKept(); // its idle timer too; the process-wide count starts from zero in the next test
});

test('all volumes together keep at most MAX_EMPTY_SLABS_PROCESS empty slabs', () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  try {
    const perSlab = SLAB_BYTES / 4096;
    const volumes = Array.from({ length: Math.ceil(MAX_EMPTY_SLABS_PROCESS / MAX_EMPTY_SLABS) + 1 }, () => new BlockSlabs());
    for (const slabs of volumes) {
      const blocks = Array.from({ length: MAX_EMPTY_SLABS * perSlab }, () => slabs.take());
      for (const x of blocks) slabs.give(x);
    }
    const held = volumes.reduce((n, s) => n + s.heldBytes, 0);
    assert.equal(held, MAX_EMPTY_SLABS_PROCESS * SLAB_BYTES, 'the last volumes let theirs go at once');
    mock.timers.tick(6_000);
    assert.equal(volumes.reduce((n, s) => n + s.heldBytes, 0), 0, 'idle: none kept');
    // the process allowance is back: a volume keeps its empty slabs again
    const blocks = Array.from({ length: 2 * perSlab }, () => volumes[0].take());
    for (const x of blocks) volumes[0].give(x);
    assert.equal(volumes[0].heldBytes, 2 * SLAB_BYTES);
  } finally {
    mock.timers.reset();
  }
});

test('kept empty slabs hold their bytes of the memory budget, from free room only; a closing volume lets them go', () => {
  const perSlab = SLAB_BYTES / 4096;
  const budget = new MemoryBudget(4 * SLAB_BYTES);
  const slabs = new BlockSlabs(budget);
  const blocks = Array.from({ length: 3 * perSlab }, () => slabs.take());
  assert.equal(budget.usedBytes, 0, 'blocks in use are their writes’ to count');
  const others = budget.tryReserve(2 * SLAB_BYTES)!;
  for (const x of blocks) slabs.give(x);
  assert.equal(slabs.heldBytes, 2 * SLAB_BYTES, 'two kept, the third let go: no free room for it');
  assert.equal(budget.usedBytes, 4 * SLAB_BYTES);
  slabs.take();
  assert.equal(budget.usedBytes, 3 * SLAB_BYTES, 'a kept slab in use again: its hold goes');
  others();
  slabs.dropKept();
  assert.equal(budget.usedBytes, 0);
  assert.equal(slabs.heldBytes, SLAB_BYTES, 'only the slab in use');
});

test('a volume reuses block memory without mixing writes up, and gives every block back when sealed', async (t) => {
  const f = await makeVault();
  t.after(() => f.cleanup());
  const size = 8 * CHUNK_SIZE + 12_288; // a short last chunk: its last block is partial
  await f.vault.createVolume('disk', size);
  const e = await f.vault.openEngine('disk', { readCacheBytes: 4 * MiB });
  t.after(() => e.close());
  const slabs: BlockSlabs = (e as any).state.blocks;
  const model = Buffer.alloc(size);
  const rnd = seededRandom(7);
  let peakInUse = 0;
  for (let round = 0; round < 6; round++) {
    for (let k = 0; k < 400; k++) {
      const kind = rnd();
      let at: number;
      let len: number;
      if (kind < 0.6) {
        at = Math.floor(rnd() * (size / 4096)) * 4096; // whole blocks, often the same ones again
        len = Math.min(4096 * (1 + Math.floor(rnd() * 3)), size - at);
      } else {
        at = Math.floor(rnd() * (size - 1)); // partial blocks: merged with what is there
        len = Math.min(1 + Math.floor(rnd() * 6000), size - at);
      }
      if (kind > 0.95) {
        await e.writeZeroes(at, len);
        model.fill(0, at, at + len);
      } else {
        const data = randomBytes(len);
        await e.write(at, data);
        data.copy(model, at);
      }
      peakInUse = Math.max(peakInUse, slabs.blocksInUse);
      if (k % 97 === 0) {
        const r = Math.floor(rnd() * (size - 8192));
        assert.ok((await e.read(r, 8192)).equals(model.subarray(r, r + 8192)), `round ${round} write ${k}: read at ${r}`);
      }
    }
    await e.flush();
    assert.equal(slabs.blocksInUse, 0, `round ${round}: every block back once sealed`);
    for (let at = 0; at < size; at += CHUNK_SIZE) {
      const n = Math.min(CHUNK_SIZE, size - at);
      assert.ok((await e.read(at, n)).equals(model.subarray(at, at + n)), `round ${round}: chunk at ${at}`);
    }
  }
  assert.ok(peakInUse > 100, `blocks were held from slabs (${peakInUse} at most)`);
  assert.ok(slabs.heldBytes <= 3 * MiB, `slab memory is reused, not grown (${slabs.heldBytes} bytes held)`);
  await e.close();
  const again = await f.vault.openEngine('disk');
  t.after(() => again.close());
  assert.ok((await again.read(0, size)).equals(model), 'stored as written');
});

test('a sealed batch gives its budget back before its blocks: under a full budget its slabs are kept in that room', () => {
  // A full budget is a read cache's steady state. The slabs a sealed batch empties can only be
  // kept in free room, and the room the batch itself held is what frees at that moment.
  const perSlab = SLAB_BYTES / 4096;
  const budget = new MemoryBudget(16 * SLAB_BYTES);
  const slabs = new BlockSlabs(budget, 8);
  const batch = new DirtyBatch(() => CHUNK_SIZE / 4096, slabs);
  for (let b = 0; b < 2 * perSlab; b++) batch.setBlock(0, b, slabs.take(), 0);
  batch.chunk(0).budgetHolds.push(budget.tryReserveFree(2 * SLAB_BYTES)!); // what the write path holds for them
  const rest = budget.tryReserveFree(budget.limitBytes - budget.stats().usedBytes)!; // the rest: a full cache
  assert.equal(budget.stats().usedBytes, budget.limitBytes);
  batch.release();
  assert.equal(slabs.keptBytes, 2 * SLAB_BYTES, 'both emptied slabs kept, in the room the batch gave back');
  assert.equal(budget.stats().usedBytes, budget.limitBytes, 'and they hold it');
  rest();
  slabs.dropKept();
  assert.equal(budget.stats().usedBytes, 0);
});
