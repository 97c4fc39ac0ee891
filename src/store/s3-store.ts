// S3Store: objects in an S3 bucket under a key prefix, via @aws-sdk/client-s3 (any S3-compatible
// endpoint: AWS, Ceph RGW, MinIO, R2, ...).
//
// Assumes: the bucket exists; credentials come from the standard AWS chain (env, shared profile,
// SSO, instance role), or from options.credentials (tests). They are never logged or put in errors.
// Guarantees:
// - GETs (whole and ranged) and PUTs are signed here and sent on the same agents
//   (s3-signed-requests.ts): the SDK's per-request work was half a cold random read's CPU and a
//   quarter of an import's main thread. Where the endpoint needs more than plain SigV4 (S3
//   Express, SigV4a) they go through the SDK like everything else.
// - Exactly one retry layer: the SDK client runs with maxAttempts 1; RetryStore above decides.
// - NodeHttpHandler with keep-alive agents sized to maxConcurrency, a connection timeout and a
//   request timeout that THROWS (throwOnRequestTimeout), so a hung endpoint becomes TRANSIENT.
// - Bodies are whole Buffers (no streams, no aws-chunked framing); each put can be replayed.
// - ETags are returned unquoted; ifMatch is sent unquoted (RGW 16 accepts only that form).
// - deleteMany sends DeleteObjects in batches of 1,000 and checks every per-key error.
// - list() pages with ListObjectsV2 continuation tokens; S3 returns keys in UTF-8 byte order.
// - Errors are classified here (classifyS3Error): 404/NoSuchKey → NOT_FOUND, 412 → PRECONDITION,
//   401/403 and credential errors → DENIED (message names bucket and operation), 5xx, throttling,
//   timeouts, resets → TRANSIENT, anything else → IO.
import * as http from 'node:http';
import * as https from 'node:https';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { VaultError, type VaultErrorCode } from '../errors';
import { MAX_OBJECT_BYTES, type ObjectInfo, type ObjectStore, type PutOptions, type StoredObject, type StoreProps } from './object-store';
import { checkKey, checkPrefix, checkRange } from './keys';
import { SignedRequests, headerOf, notS3Error } from './s3-signed-requests';

export interface S3StoreOptions {
  readonly bucket: string;
  /** Key prefix inside the bucket, '' or ending in '/'. */
  readonly prefix?: string;
  readonly endpoint?: string;
  /** Default: AWS_REGION, else us-east-1. */
  readonly region?: string;
  readonly forcePathStyle?: boolean;
  /** Sockets per agent and props.maxConcurrency (default 32). */
  readonly maxConcurrency?: number;
  /** Per request, until the answer's headers (a body sent slowly included; default 60,000 ms). */
  readonly requestTimeoutMs?: number;
  /** Per request, no byte moving either way for this long (default 20,000 ms): a hung endpoint
   *  is retried and warned of after this, not after the request timeout. */
  readonly idleTimeoutMs?: number;
  /** TCP/TLS connect (default 5,000 ms). */
  readonly connectionTimeoutMs?: number;
  /** Explicit credentials (tests); default: the AWS chain. */
  readonly credentials?: S3ClientConfig['credentials'];
}

const DELETE_BATCH = 1000;

export class S3Store implements ObjectStore {
  readonly name: string;
  readonly props: StoreProps;
  readonly bucket: string;
  readonly prefix: string;
  private readonly client: S3Client;
  private readonly agents: { http: http.Agent; https: https.Agent };
  /** GETs and PUTs signed and sent without the SDK's middleware (s3-signed-requests.ts) */
  private readonly signed: SignedRequests;

  constructor(opts: S3StoreOptions) {
    if (!opts.bucket) throw new VaultError('ERR_INVALID_ARGUMENT', 's3 store: bucket is required');
    const prefix = opts.prefix ?? '';
    if (prefix !== '' && (!prefix.endsWith('/') || prefix.startsWith('/'))) {
      throw new VaultError('ERR_INVALID_ARGUMENT', `s3 store: prefix ${JSON.stringify(prefix)} must be '' or end with '/' (no leading '/')`);
    }
    const maxConcurrency = opts.maxConcurrency ?? 32;
    const requestTimeout = opts.requestTimeoutMs ?? 60_000;
    const connectionTimeout = opts.connectionTimeoutMs ?? 5_000;
    const idleTimeout = Math.min(opts.idleTimeoutMs ?? 20_000, requestTimeout);
    for (const [k, v] of Object.entries({ maxConcurrency, requestTimeout, connectionTimeout, idleTimeout })) {
      if (!Number.isInteger(v) || v < 1) throw new VaultError('ERR_INVALID_ARGUMENT', `s3 store: ${k} must be a positive integer`);
    }
    this.bucket = opts.bucket;
    this.prefix = prefix;
    const where = opts.endpoint ? `@${safeHost(opts.endpoint)}` : '';
    this.name = `s3(${this.bucket}/${this.prefix}${where})`;
    this.props = { atomicReplace: true, conditionalPut: true, maxConcurrency };
    this.agents = {
      http: new http.Agent({ keepAlive: true, maxSockets: maxConcurrency }),
      https: new https.Agent({ keepAlive: true, maxSockets: maxConcurrency }),
    };
    this.client = new S3Client({
      endpoint: opts.endpoint,
      region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      forcePathStyle: opts.forcePathStyle ?? false,
      credentials: opts.credentials,
      maxAttempts: 1,
      // Checksums only where the API requires them: older S3-compatible servers reject the rest.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: new NodeHttpHandler({
        httpAgent: this.agents.http,
        httpsAgent: this.agents.https,
        requestTimeout,
        throwOnRequestTimeout: true,
        connectionTimeout,
        socketTimeout: idleTimeout,
      }),
    });
    this.signed = new SignedRequests(this.client, this.bucket, this.agents, { requestTimeoutMs: requestTimeout, connectionTimeoutMs: connectionTimeout, idleTimeoutMs: idleTimeout });
  }

  async get(key: string): Promise<StoredObject> {
    checkKey(key);
    try {
      const got = await this.getObject(key, 'get');
      if (!got) throw Object.assign(new Error('416 without a Range'), { name: 'InvalidRange', $metadata: { httpStatusCode: 416 } });
      return { body: got.body, etag: got.etag };
    } catch (err) {
      throw this.classify(err, 'get', key);
    }
  }

  /** GET with `Range: bytes=a-b`. A range starting at/after the end is HTTP 416 (InvalidRange):
   *  the contract's empty buffer. A zero-length range cannot be expressed as a Range: a HEAD says
   *  whether the object exists. A server that ignores Range (200, no Content-Range) is sliced here. */
  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    checkKey(key);
    checkRange(offset, length);
    if (length === 0) {
      if ((await this.head(key)) === null) throw new VaultError('ERR_STORE_NOT_FOUND', `${this.name}: getRange ${key}: not found`);
      return Buffer.alloc(0);
    }
    try {
      const got = await this.getObject(key, 'getRange', { offset, length });
      if (!got) return Buffer.alloc(0);
      const { body, contentRange } = got;
      if (!contentRange) return body.subarray(Math.min(offset, body.length), Math.min(offset + length, body.length));
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange);
      if (!m || Number(m[1]) !== offset || body.length !== Number(m[2]) - Number(m[1]) + 1 || body.length > length) {
        throw new VaultError('ERR_STORE_IO', `${this.name}: getRange ${key}: asked for ${length} bytes at ${offset}, got Content-Range ${JSON.stringify(contentRange)} with ${body.length} bytes`);
      }
      return body;
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 416 || (err as { name?: string }).name === 'InvalidRange') return Buffer.alloc(0);
      throw this.classify(err, 'getRange', key);
    }
  }

  /** One GET, signed here where the endpoint allows it (s3-signed-requests.ts), else through the SDK:
   *  the body, its etag and Content-Range (undefined: the whole object; a 206 without one says
   *  "(none)"), or null for HTTP 416 from the signed path (the SDK throws it). */
  private async getObject(key: string, op: string, range?: { offset: number; length: number }): Promise<{ body: Buffer; etag: string; contentRange?: string } | null> {
    const direct = await this.signed.get(this.prefix + key, range);
    if (direct) {
      if (direct.status === 416) return null;
      const contentRange = direct.status === 206 ? (headerOf(direct.headers['content-range']) ?? '(none)') : undefined;
      return { body: direct.body, etag: unquote(headerOf(direct.headers.etag)), contentRange };
    }
    const res = await this.client.send(
      new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, Range: range && `bytes=${range.offset}-${range.offset + range.length - 1}` }),
    );
    if (!res.Body) throw new VaultError('ERR_STORE_IO', `${this.name}: ${op} ${key}: response without a body`);
    const most = range ? range.length : MAX_OBJECT_BYTES;
    if ((res.ContentLength ?? 0) > most) {
      (res.Body as { destroy?: () => void }).destroy?.();
      throw new VaultError('ERR_STORE_IO', `${this.name}: ${op} ${key}: a body of ${res.ContentLength} bytes, at most ${most} expected (no object nbd-vault writes is larger): not read`);
    }
    const bytes = await res.Body.transformToByteArray();
    return { body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), etag: unquote(res.ETag), contentRange: res.ContentRange };
  }

  async head(key: string): Promise<ObjectInfo | null> {
    checkKey(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      return { key, size: res.ContentLength ?? 0, etag: unquote(res.ETag), lastModified: res.LastModified ?? new Date(0) };
    } catch (err) {
      const e = this.classify(err, 'head', key);
      if (e.code === 'ERR_STORE_NOT_FOUND') return null;
      throw e;
    }
  }

  async put(key: string, body: Buffer, opts: PutOptions = {}): Promise<{ etag: string }> {
    checkKey(key);
    try {
      const ifMatch = opts.ifMatch === undefined ? undefined : unquote(opts.ifMatch);
      const direct = await this.signed.put(this.prefix + key, body, { ifNoneMatch: opts.ifNoneMatch, ifMatch });
      if (direct) return { etag: unquote(headerOf(direct.headers.etag)) };
      const res = await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.prefix + key,
          Body: body,
          ContentLength: body.length,
          ContentType: 'application/octet-stream',
          IfNoneMatch: opts.ifNoneMatch,
          IfMatch: ifMatch,
        }),
      );
      return { etag: unquote(res.ETag) };
    } catch (err) {
      const e = this.classify(err, 'put', key);
      // If-Match on a key that is gone: the version we expected is not there (the contract's
      // PRECONDITION, as memory and fs say), not a missing object to read.
      if (opts.ifMatch !== undefined && e.code === 'ERR_STORE_NOT_FOUND') throw new VaultError('ERR_STORE_PRECONDITION', `${this.name}: put ${key}: the object to replace is gone`, { cause: e });
      throw e;
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
    } catch (err) {
      const e = this.classify(err, 'delete', key);
      if (e.code !== 'ERR_STORE_NOT_FOUND') throw e;
    }
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    for (const k of keys) checkKey(k);
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      const batch = keys.slice(i, i + DELETE_BATCH);
      let res;
      try {
        res = await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Objects: batch.map((k) => ({ Key: this.prefix + k })), Quiet: true },
          }),
        );
      } catch (err) {
        throw this.classify(err, 'deleteMany', `${batch[0]} (+${batch.length - 1})`);
      }
      const errors = (res.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (errors.length > 0) {
        const first = errors[0];
        const key = (first.Key ?? '').slice(this.prefix.length);
        const fake = Object.assign(new Error(first.Message ?? first.Code ?? 'error'), { name: first.Code ?? 'Error', $metadata: {} });
        const e = this.classify(fake, 'deleteMany', key);
        throw new VaultError(e.code, `${e.message} (${errors.length} of ${batch.length} keys in the batch failed)`, { cause: e });
      }
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkPrefix(prefix);
    let token: string | undefined;
    do {
      let res;
      try {
        res = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, ContinuationToken: token }),
        );
      } catch (err) {
        const e = this.classify(err, 'list', prefix);
        // S3 answers a listing 404 only for a missing bucket, and says so (NoSuchBucket)
        throw e.code === 'ERR_STORE_NOT_FOUND' ? this.classify(notS3Error('a listing answered 404 without NoSuchBucket'), 'list', prefix) : e;
      }
      for (const o of res.Contents ?? []) {
        if (!o.Key || !o.Key.startsWith(this.prefix)) continue;
        yield { key: o.Key.slice(this.prefix.length), size: o.Size ?? 0, etag: unquote(o.ETag), lastModified: o.LastModified ?? new Date(0) };
      }
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
      if (res.IsTruncated && !token) throw new VaultError('ERR_STORE_IO', `${this.name}: list ${prefix}: truncated listing without a continuation token`);
    } while (token);
  }

  /** A listing with Delimiter '/': its CommonPrefixes, without the objects below them. */
  async listChildren(prefix: string): Promise<string[]> {
    checkPrefix(prefix);
    const segs = new Set<string>();
    let token: string | undefined;
    do {
      let res;
      try {
        res = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, Delimiter: '/', ContinuationToken: token }));
      } catch (err) {
        const e = this.classify(err, 'list', prefix);
        throw e.code === 'ERR_STORE_NOT_FOUND' ? this.classify(notS3Error('a listing answered 404 without NoSuchBucket'), 'list', prefix) : e;
      }
      for (const p of res.CommonPrefixes ?? []) {
        const full = p.Prefix ?? '';
        if (!full.startsWith(this.prefix + prefix) || !full.endsWith('/')) continue;
        const seg = full.slice(this.prefix.length + prefix.length, -1);
        if (seg !== '' && !seg.includes('/')) segs.add(seg);
      }
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
      if (res.IsTruncated && !token) throw new VaultError('ERR_STORE_IO', `${this.name}: list ${prefix}: truncated listing without a continuation token`);
    } while (token);
    return [...segs].sort();
  }

  async close(): Promise<void> {
    this.client.destroy();
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  unwrap(): ObjectStore | null {
    return null;
  }

  private classify(err: unknown, op: string, key: string): VaultError {
    return classifyS3Error(err, `${this.name}: ${op} ${key}`, `bucket ${this.bucket}`, op);
  }
}

const DENIED_NAMES = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'InvalidToken',
  'ExpiredToken',
  'TokenRefreshRequired',
  'AllAccessDisabled',
  'AccountProblem',
  'CredentialsProviderError',
  'InvalidSecurity',
]);
const TRANSIENT_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'ProvisionedThroughputExceededException',
  'InternalError',
  'ServiceUnavailable',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
  'RequestTimeTooSkewed',
  'ConditionalRequestConflict',
  'OperationAborted',
]);
const TRANSIENT_SYSCODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'ERR_SOCKET_CONNECTION_TIMEOUT', 'UND_ERR_SOCKET']);

/** Maps an SDK / network error to a VaultError. `what` prefixes the message; never includes secrets. */
export function classifyS3Error(err: unknown, what: string, bucketDesc: string, op: string): VaultError {
  if (err instanceof VaultError) return err;
  const e = (err ?? {}) as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number }; $retryable?: unknown; cause?: { code?: string } };
  const status = e.$metadata?.httpStatusCode;
  const name = e.name ?? 'Error';
  const sys = e.code ?? e.cause?.code;
  const detail = `${status ? `HTTP ${status} ` : ''}${name}${sys && sys !== name ? ` ${sys}` : ''}`;
  const make = (code: VaultErrorCode, msg: string): VaultError => new VaultError(code, msg, { cause: err });
  if (name === 'NotS3') return make('ERR_STORE_IO', `${what}: ${String(e.message)}`);
  if (name === 'NoSuchKey' || name === 'NotFound' || (status === 404 && name !== 'NoSuchBucket')) return make('ERR_STORE_NOT_FOUND', `${what}: not found`);
  if (name === 'NoSuchBucket') return make('ERR_STORE_IO', `${what}: ${bucketDesc} does not exist (${detail})`);
  if (status === 412 || name === 'PreconditionFailed') return make('ERR_STORE_PRECONDITION', `${what}: precondition failed (${detail})`);
  if (name === 'CredentialsProviderError') {
    // no request was made: the SDK found no credentials (or not the profile named)
    return make('ERR_STORE_DENIED', `${what}: no S3 credentials (${String(e.message ?? '').slice(0, 200)}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE`);
  }
  if (sys === 'ENOTFOUND') {
    // virtual-hosted style puts the bucket in the host name, which a self-hosted S3 rarely resolves
    const hint = String(e.message ?? '').includes(`ENOTFOUND ${bucketDesc.replace(/^bucket /, '')}.`) ? '; a self-hosted S3 (Ceph RGW, MinIO) needs path_style=true in the store URL' : '';
    return make('ERR_STORE_IO', `${what}: the endpoint's host name does not resolve (${String(e.message ?? '').slice(0, 200)})${hint}`);
  }
  if (status === 401 || status === 403 || DENIED_NAMES.has(name)) {
    return make(
      'ERR_STORE_DENIED',
      `${what}: access denied to ${bucketDesc} for ${op} (${detail}); check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE) and the bucket policy`,
    );
  }
  if ((status !== undefined && (status >= 500 || status === 429 || status === 408)) || TRANSIENT_NAMES.has(name) || (sys && TRANSIENT_SYSCODES.has(sys)) || e.$retryable) {
    return make('ERR_STORE_TRANSIENT', `${what}: transient failure (${detail})`);
  }
  return make('ERR_STORE_IO', `${what}: failed (${detail}: ${String(e.message ?? '').slice(0, 200)})`);
}

function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

function safeHost(endpoint: string): string {
  try {
    return new URL(endpoint).host;
  } catch {
    return '?';
  }
}
