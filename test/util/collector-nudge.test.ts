// collector-nudge.ts: shared memory V8 does not weigh starts a major collection every NUDGE_BYTES.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MIN_INTERVAL_MS, NUDGE_BYTES, allocatedUnweighed, nudgedCollections } from '../../src/util/collector-nudge';

test('every NUDGE_BYTES of unweighed shared memory starts one collection, at most one per MIN_INTERVAL_MS, and dropped buffers are freed by it', async () => {
  const before = nudgedCollections();
  allocatedUnweighed(NUDGE_BYTES - 1);
  assert.equal(nudgedCollections(), before, 'not yet');
  allocatedUnweighed(1);
  assert.equal(nudgedCollections(), before + 1, 'one collection at the threshold');
  allocatedUnweighed(NUDGE_BYTES / 2);
  assert.equal(nudgedCollections(), before + 1, 'the count starts again');
  allocatedUnweighed(NUDGE_BYTES);
  assert.equal(nudgedCollections(), before + 1, `at most one per ${MIN_INTERVAL_MS} ms`);
  await new Promise((r) => setTimeout(r, MIN_INTERVAL_MS + 20));
  allocatedUnweighed(1);
  assert.equal(nudgedCollections(), before + 2, 'what was counted meanwhile asks again after the interval');
  // the collection frees what was dropped: a SharedArrayBuffer no one holds is finalized
  let freed = false;
  const registry = new FinalizationRegistry(() => (freed = true));
  (() => registry.register(new SharedArrayBuffer(4 * 2 ** 20), 'sab'))();
  for (let i = 0; i < 50 && !freed; i++) {
    allocatedUnweighed(NUDGE_BYTES);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(freed, 'the dropped buffer was collected');
});
