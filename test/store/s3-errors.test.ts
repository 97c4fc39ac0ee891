// S3 error classification (classifyS3Error, through S3Store and the real SDK): which failures are
// transient (retried) and which are permanent. A tiny local HTTP server answers like S3 for what
// RGW cannot be made to produce (5xx, 429/SlowDown, resets, a hung endpoint, per-key DeleteObjects
// errors); RGW answers the cases it can (404, 412, 403, deletes of missing keys).
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { RetryStore, type RetriedStoreError } from '../../src/store';
import { S3Store } from '../../src/store/s3-store';
import { VaultError } from '../../src/errors';
import { createLogger, setLogger } from '../../src/util/log';
import { expectCode } from './conformance';
import { S3_SKIP, makeTestS3Store } from './s3-env';

setLogger(createLogger(process.env.NBD_VAULT_LOG_LEVEL ?? 'error'));

type Handler = (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => void;

const xmlError = (code: string, message = code) =>
  `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message><RequestId>tx1</RequestId></Error>`;

function answer(status: number, code: string | null): Handler {
  return (_req, _body, res) => {
    res.writeHead(status, { 'content-type': 'application/xml', 'x-amz-request-id': 'tx1' });
    res.end(code ? xmlError(code) : '');
  };
}

describe('classifyS3Error against a local S3 look-alike', () => {
  let server: http.Server;
  let port = 0;
  let handler: Handler = answer(500, 'InternalError');
  let requests = 0;
  const sockets = new Set<Socket>();

  before(async () => {
    server = http.createServer((req, res) => {
      requests++;
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => handler(req, Buffer.concat(parts), res));
    });
    server.on('connection', (s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });

  const store = (extra: Partial<ConstructorParameters<typeof S3Store>[0]> = {}) =>
    new S3Store({
      bucket: 'b',
      prefix: 'p/',
      endpoint: `http://127.0.0.1:${port}`,
      forcePathStyle: true,
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-not-real' },
      requestTimeoutMs: 5_000,
      ...extra,
    });

  const cases: Array<[string, number, string | null, string]> = [
    ['500 InternalError', 500, 'InternalError', 'ERR_STORE_TRANSIENT'],
    ['502 without a body', 502, null, 'ERR_STORE_TRANSIENT'],
    ['503 SlowDown', 503, 'SlowDown', 'ERR_STORE_TRANSIENT'],
    ['503 ServiceUnavailable', 503, 'ServiceUnavailable', 'ERR_STORE_TRANSIENT'],
    ['429 TooManyRequests', 429, 'TooManyRequests', 'ERR_STORE_TRANSIENT'],
    ['400 SlowDown (throttling by name)', 400, 'SlowDown', 'ERR_STORE_TRANSIENT'],
    ['403 AccessDenied', 403, 'AccessDenied', 'ERR_STORE_DENIED'],
    ['403 SignatureDoesNotMatch', 403, 'SignatureDoesNotMatch', 'ERR_STORE_DENIED'],
    ['404 NoSuchKey', 404, 'NoSuchKey', 'ERR_STORE_NOT_FOUND'],
    ['404 NoSuchBucket', 404, 'NoSuchBucket', 'ERR_STORE_IO'],
    ['412 PreconditionFailed', 412, 'PreconditionFailed', 'ERR_STORE_PRECONDITION'],
    ['400 InvalidArgument', 400, 'InvalidArgument', 'ERR_STORE_IO'],
  ];
  for (const [what, status, code, expected] of cases) {
    it(`get and put: ${what} → ${expected}`, async () => {
      handler = answer(status, code);
      const s = store();
      try {
        const e1 = await expectCode(s.get('k'), expected);
        assert.match(e1.message, /get k/);
        const e2 = await expectCode(s.getRange('k', 0, 10), expected);
        assert.match(e2.message, /getRange k/);
        if (expected !== 'ERR_STORE_NOT_FOUND') await expectCode(s.put('k', Buffer.from('x')), expected);
        assert.ok(!e1.message.includes('local-secret-not-real'), 'no secret in the message');
      } finally {
        await s.close();
      }
    });
  }

  it('a web server at the endpoint (not S3) is named as such, not taken for a missing or damaged vault', async () => {
    const page = (status: number) => (_req: http.IncomingMessage, _body: Buffer, res: http.ServerResponse) => {
      res.writeHead(status, { 'content-type': 'text/html' });
      res.end('<html><body>It works!</body></html>');
    };
    const s = store();
    try {
      for (const status of [200, 404]) {
        handler = page(status);
        for (const [what, op] of [
          ['get', () => s.get('vault')],
          ['getRange', () => s.getRange('vault', 0, 10)],
          ['list', async () => {
            for await (const _ of s.list('volumes/')) void _;
          }],
        ] as const) {
          if (what === 'list' && status === 200) continue; // (the SDK's XML parser refuses it: ERR_STORE_IO too)
          const err = await expectCode((op as () => Promise<unknown>)(), 'ERR_STORE_IO');
          assert.match(err.message, /the endpoint does not answer like S3 .*check \?endpoint= and path_style/, `${what}, HTTP ${status}: ${err.message}`);
        }
      }
      handler = (_req, _body, res) => {
        res.writeHead(404);
        res.end();
      };
      assert.match((await expectCode(s.get('vault'), 'ERR_STORE_IO')).message, /a 404 without an S3 error: HTTP 404, no content type/);
    } finally {
      await s.close();
    }
  });

  it('head of a missing object is null (404 without a body), not an error', async () => {
    handler = answer(404, null);
    const s = store();
    assert.equal(await s.head('k'), null);
    await s.close();
  });

  it('a connection reset mid-request is ERR_STORE_TRANSIENT', async () => {
    handler = (req) => req.socket.destroy();
    const s = store();
    await expectCode(s.get('k'), 'ERR_STORE_TRANSIENT');
    await expectCode(s.put('k', Buffer.from('x')), 'ERR_STORE_TRANSIENT');
    await s.close();
  });

  it('a hung endpoint times out as ERR_STORE_TRANSIENT within the request timeout', async () => {
    handler = () => {}; // accepts, reads the request, never answers
    const s = store({ requestTimeoutMs: 300 });
    const t0 = Date.now();
    const err = await expectCode(s.get('k'), 'ERR_STORE_TRANSIENT');
    const took = Date.now() - t0;
    assert.ok(took >= 250 && took < 10_000, `timed out after ${took} ms`);
    assert.match(err.message, /transient failure/);
    await s.close();
  });

  it('a hung endpoint is given up at the idle timeout, well before the request timeout: get, getRange, put, list', async () => {
    handler = () => {};
    const s = store({ requestTimeoutMs: 60_000, idleTimeoutMs: 400 });
    try {
      for (const [what, op] of [
        ['get', () => s.get('k')],
        ['getRange', () => s.getRange('k', 0, 10)],
        ['put', () => s.put('k', Buffer.from('x'))],
        ['list', async () => {
          for await (const _ of s.list('')) void _;
        }],
      ] as const) {
        const t0 = Date.now();
        await expectCode((op as () => Promise<unknown>)(), 'ERR_STORE_TRANSIENT');
        const took = Date.now() - t0;
        assert.ok(took >= 350 && took < 10_000, `${what}: gave up after ${took} ms`);
      }
    } finally {
      await s.close();
    }
  });

  it('getRange of a hung endpoint times out as ERR_STORE_TRANSIENT too', async () => {
    handler = () => {};
    const s = store({ requestTimeoutMs: 300 });
    const t0 = Date.now();
    await expectCode(s.getRange('k', 0, 10), 'ERR_STORE_TRANSIENT');
    assert.ok(Date.now() - t0 < 10_000);
    await s.close();
  });

  it('GETs are signed here (not by the SDK): path, range, SigV4 headers and a session token as S3 expects them', async () => {
    const seen: http.IncomingMessage[] = [];
    handler = (req, _body, res) => {
      seen.push(req);
      res.writeHead(206, { 'content-range': 'bytes 5-9/100', 'content-length': '5', etag: '"e1"' });
      res.end('56789');
    };
    const s = store({ credentials: { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-secret-not-real', sessionToken: 'session-token-xyz' } });
    try {
      assert.equal((await s.getRange("dir/a b+c!'()*\u00e9", 5, 5)).toString(), '56789');
      const req = seen[0];
      assert.equal(req.method, 'GET');
      assert.equal(req.url, '/b/p/dir/a%20b%2Bc%21%27%28%29%2A%C3%A9', 'path style, bucket, prefix, key escaped once per RFC 3986');
      assert.equal(req.headers.range, 'bytes=5-9');
      assert.equal(req.headers['user-agent'], 'nbd-vault', 'sent by the signed path, not the SDK');
      assert.equal(req.headers['x-amz-security-token'], 'session-token-xyz');
      assert.equal(req.headers['x-amz-content-sha256'], 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
      assert.match(String(req.headers['x-amz-date']), /^\d{8}T\d{6}Z$/);
      assert.match(
        String(req.headers.authorization),
        /^AWS4-HMAC-SHA256 Credential=AKIDLOCALTEST\/\d{8}\/us-east-1\/s3\/aws4_request, SignedHeaders=[a-z0-9;-]*range[a-z0-9;-]*, Signature=[0-9a-f]{64}$/,
      );
      assert.ok(!String(req.headers.authorization).includes('local-secret-not-real'));
      handler = (req2, _body, res) => {
        seen.push(req2);
        res.writeHead(200, { 'content-length': '5', etag: '"whole-etag"' });
        res.end('hello');
      };
      const whole = await s.get('k');
      assert.equal(whole.body.toString(), 'hello');
      assert.equal(whole.etag, 'whole-etag');
      assert.equal(seen[1].headers.range, undefined);
      assert.equal(seen[1].headers['user-agent'], 'nbd-vault');
    } finally {
      await s.close();
    }
  });

  it('PUTs are signed here too: the body, its SHA-256 signed, the conditions as sent; a 200 without an ETag is no S3', async () => {
    const seen: Array<{ req: http.IncomingMessage; body: Buffer }> = [];
    handler = (req, body, res) => {
      seen.push({ req, body });
      res.writeHead(200, { etag: '"put-etag"', 'content-length': '0' });
      res.end();
    };
    const s = store();
    try {
      const body = Buffer.from('sealed bytes of a chunk');
      assert.deepEqual(await s.put('volumes/v/chunks/c', body, { ifNoneMatch: '*' }), { etag: 'put-etag' });
      const { req, body: sent } = seen[0];
      assert.equal(req.method, 'PUT');
      assert.equal(req.url, '/b/p/volumes/v/chunks/c');
      assert.ok(sent.equals(body), 'the body as given');
      assert.equal(req.headers['content-length'], String(body.length));
      assert.equal(req.headers['user-agent'], 'nbd-vault', 'sent by the signed path, not the SDK');
      assert.equal(req.headers['x-amz-content-sha256'], createHash('sha256').update(body).digest('hex'), 'the payload hash S3 checks the body against');
      assert.equal(req.headers['if-none-match'], '*');
      assert.equal(req.headers['if-match'], undefined);
      assert.match(String(req.headers.authorization), /^AWS4-HMAC-SHA256 Credential=AKIDLOCALTEST\/\d{8}\/us-east-1\/s3\/aws4_request, SignedHeaders=[a-z0-9;-]*x-amz-content-sha256[a-z0-9;-]*, Signature=[0-9a-f]{64}$/);
      // If-Match goes unquoted (RGW takes only that form), whatever the caller's quoting
      await s.put('root', body, { ifMatch: '"put-etag"' });
      assert.equal(seen[1].req.headers['if-match'], 'put-etag');
      assert.equal(seen[1].req.headers['if-none-match'], undefined);
      // a web server that takes any PUT with 200 stored nothing an S3 reader could name
      handler = (_req, _body, res) => {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<html>ok</html>');
      };
      assert.match((await expectCode(s.put('k', body), 'ERR_STORE_IO')).message, /does not answer like S3 \(a stored object without an ETag/);
    } finally {
      await s.close();
    }
  });

  it('a clock an hour behind the server: S3 refuses the first GET, the server\'s Date corrects it, the retry succeeds', async () => {
    const serverNow = () => Date.now() + 3_600_000;
    let requestsSeen = 0;
    handler = (req, _body, res) => {
      requestsSeen++;
      const m = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(String(req.headers['x-amz-date']))!;
      const signedAt = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
      if (Math.abs(signedAt - serverNow()) > 15 * 60_000) {
        res.writeHead(403, { 'content-type': 'application/xml', date: new Date(serverNow()).toUTCString() });
        return res.end(xmlError('RequestTimeTooSkewed'));
      }
      res.writeHead(206, { 'content-range': 'bytes 0-4/10', 'content-length': '5', date: new Date(serverNow()).toUTCString() });
      res.end('01234');
    };
    const s = store();
    try {
      assert.equal((await s.getRange('k', 0, 5)).toString(), '01234');
      assert.equal(requestsSeen, 2, 'refused once, then signed with the corrected clock');
      assert.equal((await s.getRange('k', 0, 5)).toString(), '01234');
      assert.equal(requestsSeen, 3, 'the offset is remembered');
    } finally {
      await s.close();
    }
  });

  it('a server that lies about ranges and lengths: a wrong Content-Range or a body bigger than any object is ERR_STORE_IO, a cut body is retried, a 200 is sliced', async () => {
    const s = store();
    try {
      handler = (_req, _body, res) => {
        res.writeHead(206, { 'content-range': 'bytes 0-4/100', 'content-length': '5' });
        res.end('01234');
      };
      const wrong = await expectCode(s.getRange('k', 5, 5), 'ERR_STORE_IO');
      assert.match(wrong.message, /asked for 5 bytes at 5, got Content-Range "bytes 0-4\/100"/);
      // 3 of the 5 declared bytes, then the connection closes
      handler = (req, _body, res) => {
        res.writeHead(206, { 'content-range': 'bytes 5-9/100', 'content-length': '5' });
        res.write('567', () => req.socket.destroy());
      };
      await expectCode(s.getRange('k', 5, 5), 'ERR_STORE_TRANSIENT');
      handler = (_req, _body, res) => {
        res.writeHead(200, { 'content-length': '12', etag: '"e12"' });
        res.end('0123456789ab');
      };
      assert.equal((await s.getRange('k', 5, 5)).toString(), '56789', 'a server that ignores Range: the range is cut out here');
      assert.equal((await s.getRange('k', 10, 5)).toString(), 'ab');
      handler = (_req, _body, res) => {
        res.writeHead(200, { 'content-length': String(2 ** 40) }); // a terabyte, declared
        res.write('x');
      };
      const huge = await expectCode(s.get('k'), 'ERR_STORE_IO');
      assert.match(huge.message, /a body of 1099511627776 bytes declared/);
      handler = (_req, _body, res) => {
        res.writeHead(206, { 'content-range': 'bytes 5-9/100', 'content-length': '1000' }); // more than the range
        res.write('x');
      };
      await expectCode(s.getRange('k', 5, 5), 'ERR_STORE_IO');
      handler = (_req, _body, res) => {
        res.writeHead(206, { 'content-length': '5' }); // partial content that does not say which part
        res.end('56789');
      };
      await expectCode(s.getRange('k', 5, 5), 'ERR_STORE_IO');
      handler = (_req, _body, res) => {
        res.writeHead(416, { 'content-type': 'application/xml' });
        res.end(xmlError('InvalidRange'));
      };
      assert.equal((await s.getRange('k', 100, 5)).length, 0, '416: a range past the end is empty');
    } finally {
      await s.close();
    }
  });

  it('RetryStore retries transient answers and then succeeds; a permanent one is not retried', async () => {
    let n = 0;
    handler = (_req, _body, res) => {
      if (n++ < 2) return answer(503, 'SlowDown')(_req, _body, res);
      res.writeHead(200, { etag: '"abc"', 'content-length': '5' });
      res.end('hello');
    };
    const s = store();
    const r = new RetryStore(s, { baseDelayMs: 1, maxDelayMs: 5 });
    const got = await r.get('k');
    assert.equal(got.body.toString(), 'hello');
    assert.equal(n, 3, 'two SlowDown answers, then the object');
    const before = requests;
    handler = answer(403, 'AccessDenied');
    const err = (await expectCode(r.get('k'), 'ERR_STORE_DENIED')) as RetriedStoreError;
    assert.equal(err.attempts, 1);
    assert.equal(requests - before, 1, 'one request: access denied is not retried');
    await r.close();
  });

  const deleteResult = (errors: Array<[string, string]>) =>
    `<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${errors
      .map(([key, code]) => `<Error><Key>${key}</Key><Code>${code}</Code><Message>${code}</Message></Error>`)
      .join('')}</DeleteResult>`;
  function deleteAnswer(errors: Array<[string, string]>, seen: string[]): Handler {
    return (req, body, res) => {
      assert.equal(req.method, 'POST');
      assert.match(req.url ?? '', /[?&]delete/);
      for (const m of body.toString().matchAll(/<Key>([^<]*)<\/Key>/g)) seen.push(m[1]);
      res.writeHead(200, { 'content-type': 'application/xml' });
      res.end(deleteResult(errors));
    };
  }

  it('DeleteObjects: a 200 reply listing per-key errors fails with the right class; NoSuchKey is fine', async () => {
    const s = store();
    try {
      const seen: string[] = [];
      handler = deleteAnswer([['p/b', 'AccessDenied']], seen);
      const denied = await expectCode(s.deleteMany(['a', 'b', 'c']), 'ERR_STORE_DENIED');
      assert.match(denied.message, /deleteMany b/);
      assert.match(denied.message, /\(1 of 3 keys in the batch failed\)/);
      assert.deepEqual(seen, ['p/a', 'p/b', 'p/c'], 'every key was sent, under the prefix');
      handler = deleteAnswer([['p/a', 'InternalError'], ['p/c', 'InternalError']], []);
      const transient = await expectCode(s.deleteMany(['a', 'b', 'c']), 'ERR_STORE_TRANSIENT');
      assert.match(transient.message, /\(2 of 3 keys in the batch failed\)/);
      handler = deleteAnswer([['p/a', 'NoSuchKey']], []);
      await s.deleteMany(['a', 'b']); // already gone counts as deleted
      handler = deleteAnswer([], []);
      await s.deleteMany(['a']);
    } finally {
      await s.close();
    }
  });

  it('DeleteObjects: 2,500 keys go in batches of at most 1,000', async () => {
    const s = store();
    const batches: number[] = [];
    handler = (req, body, res) => {
      batches.push([...body.toString().matchAll(/<Key>/g)].length);
      deleteAnswer([], [])(req, body, res);
    };
    await s.deleteMany(Array.from({ length: 2500 }, (_, i) => `k${i}`));
    assert.deepEqual(batches, [1000, 1000, 500]);
    await s.close();
  });

  it('a VaultError passes through classification unchanged', async () => {
    const { classifyS3Error } = await import('../../src/store/s3-store');
    const original = new VaultError('ERR_STORE_PRECONDITION', 'x');
    assert.equal(classifyS3Error(original, 'w', 'b', 'get'), original);
    const reset = classifyS3Error(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }), 'w', 'b', 'get');
    assert.equal(reset.code, 'ERR_STORE_TRANSIENT');
    const timeout = classifyS3Error(Object.assign(new Error('timed out'), { name: 'TimeoutError' }), 'w', 'b', 'get');
    assert.equal(timeout.code, 'ERR_STORE_TRANSIENT');
  });

  it('no credentials at all is said as such, not as a refusal; a bucket host name that does not resolve hints at path_style', async () => {
    const { classifyS3Error } = await import('../../src/store/s3-store');
    const none = classifyS3Error(Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }), 'get vault', 'bucket b1', 'get');
    assert.equal(none.code, 'ERR_STORE_DENIED');
    assert.match(none.message, /^get vault: no S3 credentials \(Could not load credentials from any providers\); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE$/);
    const dns = classifyS3Error(Object.assign(new Error('getaddrinfo ENOTFOUND b1.localhost'), { code: 'ENOTFOUND' }), 'get vault', 'bucket b1', 'get');
    assert.equal(dns.code, 'ERR_STORE_IO');
    assert.match(dns.message, /host name does not resolve .*needs path_style=true/);
    const other = classifyS3Error(Object.assign(new Error('getaddrinfo ENOTFOUND s3.example.invalid'), { code: 'ENOTFOUND' }), 'get vault', 'bucket b1', 'get');
    assert.doesNotMatch(other.message, /path_style/);
  });
});

describe('classifyS3Error on RGW (the cases a real gateway produces)', { skip: S3_SKIP }, () => {
  it('404 on a missing key, 412 on a lost condition, deletes of missing keys succeed', async () => {
    const s = makeTestS3Store();
    try {
      const missing = await expectCode(s.get('nope'), 'ERR_STORE_NOT_FOUND');
      assert.match(missing.message, /get nope: not found/);
      assert.equal(await s.head('nope'), null);
      await s.put('k', Buffer.from('a'));
      await expectCode(s.put('k', Buffer.from('b'), { ifNoneMatch: '*' }), 'ERR_STORE_PRECONDITION');
      await expectCode(s.put('k', Buffer.from('b'), { ifMatch: '0123456789abcdef0123456789abcdef' }), 'ERR_STORE_PRECONDITION');
      await s.deleteMany(['k', 'never-existed-1', 'never-existed-2']);
      assert.equal(await s.head('k'), null);
    } finally {
      await s.close();
    }
  });

  it('403 with a wrong secret; a bucket that does not exist is a clear error', async () => {
    const good = makeTestS3Store();
    const bad = makeTestS3Store({ prefix: good.prefix, credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'x', secretAccessKey: 'wrong-secret-for-classification' } });
    try {
      await expectCode(bad.deleteMany(['a']), 'ERR_STORE_DENIED');
      await expectCode(bad.head('a'), 'ERR_STORE_DENIED');
    } finally {
      await good.close();
      await bad.close();
    }
  });
});
