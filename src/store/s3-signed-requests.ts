// Object GETs and PUTs signed here and sent with node's http client, beside the SDK client: a
// random read on S3 is one ranged GET of a 128 KiB frame, and an import is one PUT per sealed
// chunk; the SDK's per-request work (middleware stack, request serialization, response
// deserialization, a body stream concatenated at the end) was half of the server's main thread in
// a cold random read (BENCHMARKS.md, "What bounds a cold random read on S3") and a quarter of it in
// an S3 import; this path costs about half the CPU per request.
//
// What stays the SDK's: where the bucket is (its endpoint rules, resolved once per store: path or
// virtual-host style, FIPS, dual-stack, custom endpoints), the credentials (its provider chain and
// refresh), the hash, and the clock-skew offset it learnt. Only plain SigV4 endpoints take this
// path; anything else (S3 Express session auth, SigV4a access points) returns null from target()
// and the caller uses the SDK. Errors come out shaped like the SDK's (name = the S3 error code,
// $metadata.httpStatusCode), so classifyS3Error treats both paths alike. A PUT signs its body's
// SHA-256 as the SDK does: S3 refuses a body that does not match it.
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { getEndpointFromInstructions } from '@smithy/core/endpoints';
import { SignatureV4 } from '@smithy/signature-v4';
import { MAX_OBJECT_BYTES } from './object-store';

/** SHA-256 of the empty body a GET sends: signed as the payload hash (S3 requires the header). */
const EMPTY_PAYLOAD_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
/** at most this much of an error response is read (its XML names the error code) */
const MAX_ERROR_BODY = 64 * 1024;
/** a whole body declared or streamed beyond MAX_OBJECT_BYTES is a store that lies, not
 *  something to buffer (a ranged one may not exceed its range) */
const MAX_BODY_BYTES = MAX_OBJECT_BYTES;
/** a clock this far from the server's is corrected before S3 refuses it (it allows 15 min) */
const CLOCK_SKEW_MS = 5 * 60_000;
/** names these requests in the server's logs (the SDK's say aws-sdk-js) */
const USER_AGENT = 'nbd-vault';

export interface SignedResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

interface Target {
  url: URL;
  signer: SignatureV4;
  headers: Record<string, string>;
}

export class SignedRequests {
  private target: Promise<Target | null> | null = null;

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly agents: { http: http.Agent; https: https.Agent },
    private readonly timeouts: { readonly requestTimeoutMs: number; readonly connectionTimeoutMs: number; readonly idleTimeoutMs: number },
  ) {}

  /**
   * GET `key` (the full key, prefix included), or `bytes=offset..` of it; the body is read whole.
   * Null: this endpoint needs the SDK. Throws on a network failure, a timeout or a status of 300
   * or more other than 416 (the caller decides about 416), as the SDK would.
   */
  async get(key: string, range?: { offset: number; length: number }): Promise<SignedResult | null> {
    const headers: Record<string, string> = { 'x-amz-content-sha256': EMPTY_PAYLOAD_SHA256 };
    if (range) headers.range = `bytes=${range.offset}-${range.offset + range.length - 1}`;
    return this.request('GET', key, headers, null, range ? range.length : MAX_BODY_BYTES);
  }

  /**
   * PUT `body` at `key` (the full key), with `If-None-Match` / `If-Match` when given (sent as they
   * are). Null: this endpoint needs the SDK. Throws like get() for any status of 300 or more.
   */
  async put(key: string, body: Buffer, conditions: { ifNoneMatch?: string; ifMatch?: string } = {}): Promise<SignedResult | null> {
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'content-length': String(body.length),
      'x-amz-content-sha256': createHash('sha256').update(body).digest('hex'),
    };
    if (conditions.ifNoneMatch !== undefined) headers['if-none-match'] = conditions.ifNoneMatch;
    if (conditions.ifMatch !== undefined) headers['if-match'] = conditions.ifMatch;
    return this.request('PUT', key, headers, body, MAX_ERROR_BODY);
  }

  /** `limit`: the most bytes a successful answer may carry. */
  private async request(method: 'GET' | 'PUT', key: string, own: Record<string, string>, body: Buffer | null, limit: number): Promise<SignedResult | null> {
    const target = await this.resolveTarget();
    if (!target) return null;
    const { url } = target;
    const path = `${url.pathname.replace(/\/$/, '')}/${key.split('/').map(escapeSegment).join('/')}`;
    const headers: Record<string, string> = { ...target.headers, host: url.host, 'user-agent': USER_AGENT, ...own };
    for (let attempt = 0; ; attempt++) {
      const signed = await target.signer.sign(
        { method, protocol: url.protocol, hostname: url.hostname, port: url.port ? Number(url.port) : undefined, path, query: {}, headers: { ...headers } },
        { signingDate: new Date(Date.now() + this.clockOffset) },
      );
      const res = await this.send(method, url, path, signed.headers, body, limit);
      const skewed = this.learnClock(res.headers.date);
      // S3 (and every S3-compatible server) names an object's version in its ETag, and explains
      // a missing key in XML: a web server or proxy at the endpoint does neither
      if (res.status === 200 && res.headers.etag === undefined) throw notS3(res, method === 'GET' ? 'an object without an ETag' : 'a stored object without an ETag');
      if (res.status < 300 || (method === 'GET' && res.status === 416)) return res;
      const err = s3ErrorOf(res);
      if (res.status === 404 && !/<Code>/.test(res.body.toString('utf8'))) throw notS3(res, 'a 404 without an S3 error');
      // a clock S3 refused, now corrected: once more (the SDK does the same)
      if (skewed && attempt === 0 && err.name === 'RequestTimeTooSkewed') continue;
      throw err;
    }
  }

  private get clockOffset(): number {
    return (this.client.config as { systemClockOffset?: number }).systemClockOffset ?? 0;
  }

  /** The server's Date says our clock is off by more than CLOCK_SKEW_MS: remember the offset (in
   *  the SDK's config, which its own requests use too). Returns whether it changed. */
  private learnClock(date: string | undefined): boolean {
    const server = date ? Date.parse(date) : NaN;
    if (!Number.isFinite(server)) return false;
    const offset = server - Date.now();
    if (Math.abs(offset - this.clockOffset) < CLOCK_SKEW_MS) return false;
    (this.client.config as { systemClockOffset?: number }).systemClockOffset = offset;
    return true;
  }

  private resolveTarget(): Promise<Target | null> {
    this.target ??= this.makeTarget().catch(() => null); // an endpoint the rules reject: the SDK reports it
    return this.target;
  }

  private async makeTarget(): Promise<Target | null> {
    const config = this.client.config;
    const ep = await getEndpointFromInstructions({ Bucket: this.bucket, Key: 'k' }, GetObjectCommand, config);
    const schemes = (ep.properties?.authSchemes ?? []) as Array<{ name?: string; signingName?: string; signingRegion?: string }>;
    const scheme = schemes[0];
    if (!scheme || scheme.name !== 'sigv4') return null;
    const url = new URL(ep.url.href);
    if (url.search !== '' || (url.protocol !== 'http:' && url.protocol !== 'https:')) return null;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(ep.headers ?? {})) headers[k.toLowerCase()] = v.join(',');
    const signer = new SignatureV4({
      credentials: config.credentials,
      region: scheme.signingRegion ?? (await config.region()),
      service: scheme.signingName ?? 's3',
      sha256: config.sha256,
      uriEscapePath: false, // S3 signs the path as sent, escaped once
      applyChecksum: false,
    });
    return { url, signer, headers };
  }

  /** `limit`: the most bytes a successful answer may carry (a ranged GET: its range). */
  private send(method: 'GET' | 'PUT', url: URL, path: string, headers: Record<string, string>, body: Buffer | null, limit: number): Promise<SignedResult> {
    const secure = url.protocol === 'https:';
    const request = secure ? https.request : http.request;
    return new Promise((resolve, reject) => {
      const req = request({
        agent: secure ? this.agents.https : this.agents.http,
        method,
        protocol: url.protocol,
        hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: url.port || undefined,
        path,
        headers,
      });
      const fail = (err: Error) => {
        clearTimeout(deadline);
        reject(err);
      };
      const { requestTimeoutMs, connectionTimeoutMs, idleTimeoutMs } = this.timeouts;
      const deadline = setTimeout(() => req.destroy(timeoutError(`no complete answer within ${requestTimeoutMs} ms`)), requestTimeoutMs);
      req.setTimeout(idleTimeoutMs, () => req.destroy(timeoutError(`no byte for ${idleTimeoutMs} ms`)));
      req.on('socket', (socket) => {
        if (!socket.connecting) return;
        const connect = setTimeout(() => req.destroy(timeoutError(`no connection within ${connectionTimeoutMs} ms`)), connectionTimeoutMs);
        socket.once('connect', () => clearTimeout(connect));
        socket.once('close', () => clearTimeout(connect));
      });
      req.on('error', fail);
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        const declared = Number(res.headers['content-length']);
        // a server that ignores Range answers 200 with the whole object
        const most = status === 206 || method === 'PUT' ? limit : MAX_BODY_BYTES;
        if (status < 300 && declared > most) return req.destroy(oversizeError(`${path}: a body of ${declared} bytes declared, at most ${most} expected`));
        const sized = status < 300 && Number.isSafeInteger(declared) && declared >= 0;
        const keep = status < 300 ? most : MAX_ERROR_BODY;
        let received = sized ? Buffer.allocUnsafe(declared) : null;
        const parts: Buffer[] = [];
        let at = 0;
        res.on('data', (chunk: Buffer) => {
          if (received) {
            if (at + chunk.length > received.length) return req.destroy(lyingError(`${path}: more than the ${declared} bytes Content-Length declared`));
            chunk.copy(received, at);
          } else if (at + chunk.length <= keep) parts.push(chunk);
          else if (status < 300) return req.destroy(oversizeError(`${path}: a body of more than ${most} bytes`));
          at += chunk.length;
        });
        res.on('error', fail);
        res.on('end', () => {
          clearTimeout(deadline);
          if (received && at !== received.length) return reject(lyingError(`${path}: ${at} of the ${declared} bytes Content-Length declared`));
          received ??= Buffer.concat(parts);
          resolve({ status, headers: res.headers, body: received });
        });
      });
      req.end(body ?? undefined);
    });
  }
}

/** RFC 3986 escaping of one path segment, as the SDK does for a key (`!'()*` too). */
function escapeSegment(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** An error response as the SDK would throw it: the S3 error code as name, the HTTP status. */
function s3ErrorOf(res: SignedResult): Error {
  const text = res.body.subarray(0, MAX_ERROR_BODY).toString('utf8');
  const code = /<Code>([^<]{1,100})<\/Code>/.exec(text)?.[1];
  const message = /<Message>([^<]{0,300})<\/Message>/.exec(text)?.[1];
  const name = code ?? (res.status === 404 ? 'NotFound' : `HTTP${res.status}`);
  return Object.assign(new Error(message ?? name), { name, $metadata: { httpStatusCode: res.status } });
}

/** An answer no S3 service gives (`what`): the endpoint is something else (a web server, a
 *  proxy's page). classifyS3Error makes it ERR_STORE_IO. */
export function notS3Error(what: string): Error {
  return Object.assign(new Error(`the endpoint does not answer like S3 (${what}); check ?endpoint= and path_style in the store URL`), { name: 'NotS3' });
}

function notS3(res: SignedResult, what: string): Error {
  const type = headerOf(res.headers['content-type']) ?? 'no content type';
  return notS3Error(`${what}: HTTP ${res.status}, ${type.slice(0, 60)}`);
}

/** A header's (first) value. */
export function headerOf(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function timeoutError(message: string): Error {
  return Object.assign(new Error(message), { name: 'TimeoutError' });
}

/** A body bigger than any object: not retried (ERR_STORE_IO). */
function oversizeError(message: string): Error {
  return Object.assign(new Error(message), { name: 'OversizeBody' });
}

/** A body shorter or longer than declared: retried (a cut connection looks the same). */
function lyingError(message: string): Error {
  return Object.assign(new Error(message), { name: 'TruncatedBody', $retryable: true });
}
