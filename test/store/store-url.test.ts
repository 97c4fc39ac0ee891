// openStore / parseStoreUrl / composeStore: wiring, naming and validation at construction.
import { describe, it, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { FaultyStore, FsStore, MemoryStore, RetryStore, composeStore, faultyLayer, findLayer, openStore, parseStoreUrl, seededRandom } from '../../src/store';
import { S3Store } from '../../src/store/s3-store';

const tmp = mkdtempSync(path.join(tmpdir(), 'nbdv-url-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('openStore', () => {
  it('a plain path and file:/// open an FsStore inside RetryStore', () => {
    const a = openStore(path.join(tmp, 'a'));
    assert.ok(a instanceof RetryStore);
    assert.ok(a.unwrap() instanceof FsStore);
    assert.equal(a.name, `retry(fs(${path.join(tmp, 'a')}))`);
    const b = openStore(`file://${path.join(tmp, 'b')}`, { retry: false });
    assert.ok(b instanceof FsStore);
    assert.equal((b as FsStore).root, path.join(tmp, 'b'));
    assert.deepEqual(parseStoreUrl('rel/dir'), { kind: 'fs', dir: path.resolve('rel/dir') });
  });

  it('memory://NAME is shared within the process; memory:// is private', async () => {
    const a = openStore('memory://shared-test');
    const b = openStore('memory://shared-test');
    await a.put('k', Buffer.from('v'));
    assert.equal((await b.get('k')).body.toString(), 'v');
    const c = openStore('memory://');
    assert.equal(await c.head('k'), null);
    assert.ok(c.unwrap() instanceof MemoryStore);
    MemoryStore.dropNamed('shared-test');
  });

  it('s3:// URLs parse to bucket, prefix, endpoint, region and path style', () => {
    assert.deepEqual(parseStoreUrl('s3://my-bucket/some/prefix?endpoint=http://127.0.0.1:7480&region=us-east-1&path_style=true'), {
      kind: 's3',
      bucket: 'my-bucket',
      prefix: 'some/prefix/',
      endpoint: 'http://127.0.0.1:7480',
      region: 'us-east-1',
      forcePathStyle: true,
    });
    assert.deepEqual(parseStoreUrl('s3://bkt'), { kind: 's3', bucket: 'bkt', prefix: '', endpoint: undefined, region: undefined, forcePathStyle: false });
    const s = openStore('s3://bkt/p?endpoint=http://127.0.0.1:1&region=eu-west-1');
    assert.ok(s.unwrap() instanceof S3Store);
    assert.equal(s.name, 'retry(s3(bkt/p/@127.0.0.1:1))');
    return s.close();
  });

  it('rejects malformed URLs at construction with ERR_INVALID_ARGUMENT and a clear message', () => {
    const cases: Array<[string, RegExp]> = [
      ['', /empty/],
      ['ftp://host/x', /unknown scheme ftp/],
      ['s3://', /missing bucket/],
      ['s3://Bad_Bucket/x', /bad bucket name/],
      ['s3://bkt/x?foo=1', /unknown parameter "foo"/],
      ['s3://bkt/x?path_style=yes', /path_style must be true or false/],
      ['s3://bkt/x?endpoint=notaurl', /endpoint is not a URL/],
      ['s3://bkt:9000/x', /port belongs in \?endpoint=/],
      ['s3://AKIA:secret@bkt/x', /credentials do not belong/],
      // a credential tried as a parameter: named, its value not echoed
      ['s3://bkt/x?endpoint=http://127.0.0.1:11050&secret_key=SUPERsecret', /"s3:\/\/bkt\/x\?endpoint=http:\/\/127\.0\.0\.1:11050&secret_key=\[redacted\]": unknown parameter "secret_key"/],
      ['s3://bkt/x?endpoint=http://AK:secret@127.0.0.1:7480', /credentials do not belong in the endpoint/],
      ['memory://a/b', /memory:\/\/NAME/],
      ['file://otherhost/x', /file:\/\/\/absolute/],
      ['file:///', /refusing to use \//],
      ['s3:bkt', /expected s3:\/\//],
      ['s3://bkt/x?path_style=true&path_style=false', /path_style is given more than once/],
      ['s3://bkt/x?region=us-east-1&region=eu-west-1', /region is given more than once/],
      ['s3://bkt/x?endpoint=http://127.0.0.1:7480/sub/path', /the endpoint is scheme:\/\/host\[:port\] only/],
      ['s3://bkt/x?endpoint=' + encodeURIComponent('http://127.0.0.1:7480?x=1'), /no path or query/],
      // a secret in the endpoint, percent-encoded or in its query: refused, and not echoed either
      ['s3://bkt/x?endpoint=' + encodeURIComponent('http://u:SECRETpw@127.0.0.1:7480'), /"s3:\/\/bkt\/x\?endpoint=http:\/\/\[redacted\]@127\.0\.0\.1:7480": credentials do not belong in the endpoint/],
      ['s3://bkt/x?endpoint=http://127.0.0.1:7480/?sig=SECRETsig', /"s3:\/\/bkt\/x\?endpoint=http:\/\/127\.0\.0\.1:7480\/\[redacted\]": the endpoint is scheme/],
      ['s3://bkt/x?endpoint=' + encodeURIComponent('http://127.0.0.1:7480/p?token=SECRETtok'), /endpoint=http:\/\/127\.0\.0\.1:7480\/\[redacted\]"/],
      // a secret key with a "/" in it (AWS's often have one), in the endpoint or the URL itself
      ['s3://bkt/x?endpoint=' + encodeURIComponent('https://AKIAEXAMPLE:ab/SECRETcd@127.0.0.1:7480'), /endpoint=https:\/\/\[redacted\]@127\.0\.0\.1:7480"/],
      ['s3://AKIAEXAMPLE:ab/SECRETcd@bkt/x', /"s3:\/\/\[redacted\]@bkt\/x"/],
      // no URL at all, but a credential in it all the same: not echoed
      ['s3:/AKIAEXAMPLE:SECRETkey@bkt/x', /"s3:\/\[redacted\]@bkt\/x"/],
      ['s3:AKIAEXAMPLE:SECRETkey@bkt', /"s3:\[redacted\]@bkt"/],
      ['s3://bkt/x?SECRETkey123', /"s3:\/\/bkt\/x\?\[redacted\]"/],
    ];
    for (const [url, re] of cases) {
      assert.throws(() => openStore(url), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_INVALID_ARGUMENT', url);
        assert.match(err.message, re, url);
        assert.ok(!/secret(?!_key)|AKIAEXAMPLE/i.test(err.message), `no secret in the message: ${err.message}`);
        return true;
      });
    }
  });

  it('extra layers go inside the retry layer', () => {
    const s = openStore('memory://', { layers: [faultyLayer({}, seededRandom(1))] });
    assert.equal(s.name, 'retry(faulty(memory))');
    assert.ok(findLayer(s, FaultyStore));
  });
});

describe('composeStore', () => {
  it('applies layers innermost first and rejects a malformed layer', () => {
    const s = composeStore(new MemoryStore(), (i) => new FaultyStore(i, {}, seededRandom(1)), (i) => new RetryStore(i));
    assert.equal(s.name, 'retry(faulty(memory))');
    assert.throws(() => composeStore(new MemoryStore(), 42 as never), { code: 'ERR_INVALID_ARGUMENT' });
    assert.throws(() => composeStore(new MemoryStore(), () => new MemoryStore()), { code: 'ERR_BUG' });
  });

  it('faulty layers validate their rules', () => {
    assert.throws(() => faultyLayer({ rules: [{ probability: 2 }] }, seededRandom(1)), { code: 'ERR_INVALID_ARGUMENT' });
    assert.throws(() => faultyLayer({ outages: [{}] }, seededRandom(1)), { code: 'ERR_INVALID_ARGUMENT' });
  });
});
