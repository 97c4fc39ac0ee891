// Metadata contexts in nbd/ alone, over a fake Export: which contexts LIST and SET queries select,
// the ids SET hands out, and the BLOCK_STATUS reply (one chunk per context, DONE on the last,
// REQ_ONE, never past the requested length).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assignContextIds, blockStatusReply, matchContexts, offeredContexts } from '../../src/nbd/meta-contexts';
import { NBD_CMD_FLAG_REQ_ONE, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS } from '../../src/nbd/constants';
import type { Export } from '../../src/nbd/export';

const OFFERED = ['base:allocation', 'qemu:allocation-depth', 'qemu:dirty-bitmap:s1', 'qemu:dirty-bitmap:s2'];

test('LIST and SET queries select contexts', () => {
  assert.deepEqual(matchContexts(OFFERED, [], true), OFFERED, 'LIST with no query: everything');
  assert.deepEqual(matchContexts(OFFERED, [], false), [], 'SET with no query: nothing');
  assert.deepEqual(matchContexts(OFFERED, ['qemu:'], true), OFFERED.slice(1));
  assert.deepEqual(matchContexts(OFFERED, ['qemu:dirty-bitmap:'], true), OFFERED.slice(2));
  assert.deepEqual(matchContexts(OFFERED, ['qemu:dirty-bitmap:'], false), [], 'wildcards only list');
  assert.deepEqual(matchContexts(OFFERED, ['base:'], true), ['base:allocation']);
  assert.deepEqual(matchContexts(OFFERED, ['qemu:dirty-bitmap:s2', 'x-unknown:thing', 'qemu:dirty-bitmap:nope', 'base:allocation'], false), ['base:allocation', 'qemu:dirty-bitmap:s2']);
  assert.deepEqual(matchContexts(OFFERED, ['qemu:dirty-bitmap:s1', 'qemu:dirty-bitmap:s1'], false), ['qemu:dirty-bitmap:s1'], 'each once');
  assert.deepEqual(assignContextIds(['base:allocation', 'qemu:dirty-bitmap:s2']), [
    { name: 'base:allocation', id: 1 },
    { name: 'qemu:dirty-bitmap:s2', id: 2 },
  ]);
  assert.deepEqual(assignContextIds(['qemu:dirty-bitmap:s2']), [{ name: 'qemu:dirty-bitmap:s2', id: 2 }], 'base:allocation keeps id 1');
});

function fakeExport(withContexts: boolean): Export {
  const MiB = 2 ** 20;
  const exp = {
    name: 'fake',
    description: '',
    size: 16 * MiB,
    async blockStatus() {
      return [
        { length: 4 * MiB, hole: false, zero: false },
        { length: 12 * MiB, hole: true, zero: true },
      ];
    },
  } as unknown as Export;
  if (withContexts) {
    Object.assign(exp, {
      async listMetaContexts() {
        return ['qemu:dirty-bitmap:s1'];
      },
      async metaContextStatus(name: string) {
        assert.equal(name, 'qemu:dirty-bitmap:s1');
        return [
          { length: 2 * MiB, flags: 0 },
          { length: 2 * MiB, flags: 0 }, // equal neighbours merge
          { length: 4 * MiB, flags: 1 },
          { length: 8 * MiB, flags: 0 },
        ];
      },
    });
  }
  return exp;
}

/** Decoded BLOCK_STATUS chunks: [flags, context id, [length, flags]...]. */
function decode(chunks: Buffer[]): Array<{ done: boolean; id: number; extents: number[][] }> {
  return chunks.map((b) => {
    assert.equal(b.readUInt16BE(6), NBD_REPLY_TYPE_BLOCK_STATUS);
    const extents: number[][] = [];
    for (let at = 24; at < 20 + b.readUInt32BE(16); at += 8) extents.push([b.readUInt32BE(at), b.readUInt32BE(at + 4)]);
    return { done: (b.readUInt16BE(4) & NBD_REPLY_FLAG_DONE) !== 0, id: b.readUInt32BE(20), extents };
  });
}

test('BLOCK_STATUS: one chunk per selected context, DONE on the last, REQ_ONE, clipped to the request', async () => {
  const MiB = 2 ** 20;
  const exp = fakeExport(true);
  assert.deepEqual(await offeredContexts(exp), ['base:allocation', 'qemu:dirty-bitmap:s1']);
  assert.deepEqual(await offeredContexts(fakeExport(false)), ['base:allocation'], 'an export without contexts offers base:allocation');
  const contexts = assignContextIds(['base:allocation', 'qemu:dirty-bitmap:s1']);
  const handle = Buffer.alloc(8);
  const all = decode(await blockStatusReply(exp, contexts, { handle, offset: 0, length: 16 * MiB, flags: 0 }));
  assert.deepEqual(all, [
    { done: false, id: 1, extents: [[4 * MiB, 0], [12 * MiB, 3]] },
    { done: true, id: 2, extents: [[4 * MiB, 0], [4 * MiB, 1], [8 * MiB, 0]] },
  ]);
  const one = decode(await blockStatusReply(exp, contexts, { handle, offset: 0, length: 6 * MiB, flags: NBD_CMD_FLAG_REQ_ONE }));
  assert.deepEqual(one, [
    { done: false, id: 1, extents: [[4 * MiB, 0]] },
    { done: true, id: 2, extents: [[4 * MiB, 0]] },
  ]);
  const short = decode(await blockStatusReply(exp, contexts.slice(1), { handle, offset: 0, length: 5 * MiB, flags: 0 }));
  assert.deepEqual(short, [{ done: true, id: 2, extents: [[4 * MiB, 0], [1 * MiB, 1]] }], 'never past the requested length');
  await assert.rejects(blockStatusReply(fakeExport(false), contexts.slice(1), { handle, offset: 0, length: MiB, flags: 0 }), /offers no context/);
});
