// Runs the conformance suite against every store and decorator stack.
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { FsStore, MemoryStore, MeteredStore, RetryStore, FaultyStore, composeStore, faultyLayer, retryLayer, seededRandom, type ObjectStore } from '../../src/store';
import { createLogger, setLogger } from '../../src/util/log';
import { describeObjectStore } from './conformance';
import { S3_REQUIRED, S3_SKIP, makeTestS3Store } from './s3-env';

setLogger(createLogger(process.env.NBD_VAULT_LOG_LEVEL ?? 'error')); // retries log at warn: keep test output readable
const tmp = mkdtempSync(path.join(tmpdir(), 'nbdv-conf-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;

const fastRetry = { baseDelayMs: 1, maxDelayMs: 4, budgetMs: 30_000 };

describeObjectStore('memory', async () => new MemoryStore());
describeObjectStore('fs', async () => new FsStore(path.join(tmp, `fs-${n++}`)));
describeObjectStore('fs (no fsync)', async () => new FsStore(path.join(tmp, `fsn-${n++}`), { fsync: false }));
describeObjectStore('retry(memory)', async () => new RetryStore(new MemoryStore(), fastRetry));
describeObjectStore('faulty(memory), no faults armed', async () => new FaultyStore(new MemoryStore(), {}, seededRandom(1)));
describeObjectStore('retry(faulty(memory)) with 20% transient faults, before and after the operation', async () => {
  const seed = n++;
  return composeStore(
    new MemoryStore(),
    faultyLayer(
      {
        rules: [
          { probability: 0.1, phase: 'before' },
          { probability: 0.1, phase: 'after' },
        ],
        latencyMs: { min: 0, max: 2 },
      },
      seededRandom(seed),
    ),
    retryLayer(fastRetry),
  );
});
describeObjectStore('metered(memory)', async () => new MeteredStore(new MemoryStore(), { nbdRequest() {}, storeRequest() {}, storeRetry() {}, storeBytes() {} }));
describeObjectStore('retry(fs)', async () => new RetryStore(new FsStore(path.join(tmp, `rfs-${n++}`), { fsync: false }), fastRetry));

const s3Stores: ObjectStore[] = [];
describeObjectStore(
  's3 (RGW)',
  async () => {
    const s = makeTestS3Store();
    s3Stores.push(s);
    return s;
  },
  { manyKeys: 1_100, skip: S3_SKIP },
);

describe('s3 test target', () => {
  it('is configured when NBD_VAULT_REQUIRE_S3=1', () => {
    if (S3_REQUIRED) assert.ok(!S3_SKIP, 'NBD_VAULT_REQUIRE_S3=1 but NBD_VAULT_TEST_S3_URL is not set (run scripts/rgw.sh start DIR PORT and source DIR/s3.env)');
  });
});

// Leave the bucket tidy: remove what each run wrote under its own prefix.
after(async () => {
  for (const s of s3Stores) {
    const fresh = makeTestS3Store({ prefix: (s as unknown as { prefix: string }).prefix });
    const keys: string[] = [];
    for await (const info of fresh.list('')) keys.push(info.key);
    await fresh.deleteMany(keys);
    await fresh.close();
  }
});
