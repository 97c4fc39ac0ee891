// S3Store against the real gateway (RGW): credentials, error classification, retry interplay.
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { RetryStore, RetriedStoreError } from '../../src/store';
import { createLogger, setLogger } from '../../src/util/log';
import { expectCode } from './conformance';
import { S3_SKIP, makeTestS3Store } from './s3-env';

setLogger(createLogger(process.env.NBD_VAULT_LOG_LEVEL ?? 'error'));
const WRONG_SECRET = 'wrong-secret-0123456789abcdefWRONG';

describe('S3Store on RGW', { skip: S3_SKIP }, () => {
  it('a wrong secret is ERR_STORE_DENIED, fast, through RetryStore in 1 attempt, with no secret in the message', async () => {
    const good = makeTestS3Store();
    await good.put('obj', Buffer.from('x'));
    const bad = makeTestS3Store({
      prefix: good.prefix,
      credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'x', secretAccessKey: WRONG_SECRET },
    });
    const store = new RetryStore(bad, { baseDelayMs: 1_000 });
    const t0 = Date.now();
    for (const op of [() => store.get('obj'), () => store.put('obj', Buffer.from('y')), async () => { for await (const _ of store.list('')) void _; }]) {
      const err = (await expectCode(op(), 'ERR_STORE_DENIED')) as RetriedStoreError;
      assert.equal(err.attempts, 1);
      assert.match(err.message, /access denied to bucket \S+ for (get|put|list)/);
      assert.ok(!err.message.includes(WRONG_SECRET) && !err.message.includes(process.env.AWS_SECRET_ACCESS_KEY ?? '\u0000'), 'no secret in the message');
      assert.ok(!JSON.stringify(err).includes(WRONG_SECRET));
    }
    assert.ok(Date.now() - t0 < 5_000, 'fails fast');
    assert.equal((await good.get('obj')).body.toString(), 'x');
    await good.deleteMany(['obj']);
    await good.close();
    await store.close();
  });

  it('a missing bucket is a clear, non-retried error', async () => {
    const store = makeTestS3Store({ bucket: 'nbd-vault-no-such-bucket' });
    const err = await expectCode(store.put('k', Buffer.from('x')), 'ERR_STORE_IO');
    assert.match(err.message, /does not exist/);
    await store.close();
  });

  it('a refused connection is ERR_STORE_TRANSIENT', async () => {
    const store = makeTestS3Store({ endpoint: 'http://127.0.0.1:1', connectionTimeoutMs: 1_000 });
    await expectCode(store.get('k'), 'ERR_STORE_TRANSIENT');
    await store.close();
  });

  it('keys with characters S3 escapes read back through the signed GET path, whole and by range (RGW checks each signature)', async () => {
    const s = makeTestS3Store();
    try {
      const keys = ["a b/c+d!'()*", 'ünï/cødé/€', 'x=y&z;w,v:u@t$s', 'tilde~and%25percent'];
      for (const [n, key] of keys.entries()) {
        const body = Buffer.from(`object ${n}: ${key}`);
        await s.put(key, body);
        assert.ok((await s.get(key)).body.equals(body), `get ${key}`);
        assert.ok((await s.getRange(key, 3, 7)).equals(body.subarray(3, 10)), `getRange ${key}`);
      }
      const listed = [];
      for await (const o of s.list('')) listed.push(o.key);
      assert.deepEqual(listed.sort(), [...keys].sort());
      await s.deleteMany(keys);
    } finally {
      await s.close();
    }
  });

  it('etags from put, get, head and list agree (unquoted)', async () => {
    const store = makeTestS3Store();
    const { etag } = await store.put('e', Buffer.from('etag me'));
    assert.doesNotMatch(etag, /"/);
    assert.equal((await store.get('e')).etag, etag);
    assert.equal((await store.head('e'))!.etag, etag);
    for await (const info of store.list('')) assert.equal(info.etag, etag);
    await store.delete('e');
    await store.close();
  });
});
