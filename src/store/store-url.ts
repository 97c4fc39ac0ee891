// openStore: a store URL → a ready store stack (base store wrapped in RetryStore by default).
//
// Accepted URLs (anything else is ERR_INVALID_ARGUMENT with a message naming the problem):
//   /path, ./path, path          → FsStore (a plain path; relative to the working directory)
//   file:///abs/path             → FsStore (host must be empty or localhost)
//   memory://                    → a fresh MemoryStore private to this call
//   memory://NAME                → the process-wide MemoryStore called NAME (shared by every open)
//   s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true|false]
//                                → S3Store; credentials from the standard AWS chain, never the URL
// Validation happens here, at construction: a bad URL fails at startup, never on first request.
// The stack's `name` describes it without secrets, e.g. `retry(s3(bucket/prefix))`.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VaultError } from '../errors';
import { composeStore } from './compose';
import { FsStore, type FsStoreOptions } from './fs-store';
import { MemoryStore } from './memory-store';
import type { ObjectStore, StoreLayer } from './object-store';
import { meteredLayer } from './metered-store';
import { retryLayer, type RetryPolicy } from './retry-store';
import type { MetricsSink } from '../util/metrics';
import type { S3StoreOptions } from './s3-store';

export interface OpenStoreOptions {
  /** Retry policy, or false for no RetryStore (tests). Default: RETRY_DEFAULTS. */
  readonly retry?: RetryPolicy | false;
  /** Extra layers applied to the base store before RetryStore (e.g. a faulty layer in tests). */
  readonly layers?: readonly StoreLayer[];
  readonly fs?: FsStoreOptions;
  /** S3 client settings beyond what the URL carries (timeouts, pool size, credentials for tests). */
  readonly s3?: Omit<S3StoreOptions, 'bucket' | 'prefix' | 'endpoint' | 'region' | 'forcePathStyle'>;
  /** Report every store attempt and retry here (serve --metrics). */
  readonly metrics?: MetricsSink;
}

export type StoreUrl =
  | { readonly kind: 'fs'; readonly dir: string }
  | { readonly kind: 'memory'; readonly storeName: string | null }
  | { readonly kind: 's3'; readonly bucket: string; readonly prefix: string; readonly endpoint?: string; readonly region?: string; readonly forcePathStyle: boolean };

export function openStore(url: string, opts: OpenStoreOptions = {}): ObjectStore {
  const parsed = parseStoreUrl(url);
  let base: ObjectStore;
  switch (parsed.kind) {
    case 'fs':
      base = new FsStore(parsed.dir, opts.fs);
      break;
    case 'memory':
      base = parsed.storeName === null ? new MemoryStore() : MemoryStore.named(parsed.storeName);
      break;
    case 's3': {
      // loaded only for an s3:// store: the AWS SDK is most of the CLI's start-up time (0.24 of 0.38 s)
      const { S3Store } = require('./s3-store') as typeof import('./s3-store');
      base = new S3Store({
        ...opts.s3,
        bucket: parsed.bucket,
        prefix: parsed.prefix,
        endpoint: parsed.endpoint,
        region: parsed.region,
        forcePathStyle: parsed.forcePathStyle,
      });
      break;
    }
  }
  const layers = [...(opts.layers ?? [])];
  const metrics = opts.metrics;
  if (metrics) layers.push(meteredLayer(metrics)); // below the retries: every attempt counts
  if (opts.retry !== false) {
    const policy = opts.retry ?? {};
    const onRetry = policy.onRetry;
    layers.push(retryLayer(metrics ? { ...policy, onRetry: (e) => (metrics.storeRetry(e.op), onRetry?.(e)) } : policy));
  }
  return composeStore(base, ...layers);
}

const S3_PARAMS = new Set(['endpoint', 'region', 'path_style']);
const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export function parseStoreUrl(url: string): StoreUrl {
  const bad = (why: string): VaultError => new VaultError('ERR_INVALID_ARGUMENT', `invalid store URL ${JSON.stringify(redactUrl(url))}: ${why}`);
  if (typeof url !== 'string' || url.trim() === '') throw bad('empty');
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined || /^[a-zA-Z]:[\\/]/.test(url)) return { kind: 'fs', dir: path.resolve(url) };
  if (!url.slice(scheme.length + 1).startsWith('//')) throw bad(`expected ${scheme}://…`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw bad('not a URL');
  }
  if (u.username || u.password) throw bad('credentials do not belong in a store URL (use the AWS environment or profile)');
  switch (scheme) {
    case 'file': {
      if (u.hostname !== '' && u.hostname !== 'localhost') throw bad('file URLs must be file:///absolute/path');
      if (u.search || u.hash) throw bad('file URLs take no query or fragment');
      const dir = fileURLToPath(new URL(`file://${u.pathname}`));
      if (dir === '/' || dir === '') throw bad('refusing to use / as a store directory');
      return { kind: 'fs', dir };
    }
    case 'memory': {
      if ((u.pathname !== '' && u.pathname !== '/') || u.search || u.hash) throw bad('use memory:// or memory://NAME');
      return { kind: 'memory', storeName: u.hostname === '' ? null : u.hostname };
    }
    case 's3': {
      const bucket = u.hostname;
      if (!bucket) throw bad('missing bucket (s3://BUCKET/PREFIX)');
      if (!BUCKET_RE.test(bucket) || bucket.includes('..')) throw bad(`bad bucket name ${JSON.stringify(bucket)}`);
      if (u.port) throw bad('a port belongs in ?endpoint=, not after the bucket');
      if (u.hash) throw bad('no fragment allowed');
      let prefix = decodeURIComponent(u.pathname.replace(/^\/+/, ''));
      if (prefix !== '' && !prefix.endsWith('/')) prefix += '/';
      if (prefix.includes('//')) throw bad('empty segment in prefix');
      for (const k of u.searchParams.keys()) {
        // (a parameter without a value may be a pasted secret: not echoed)
        if (!S3_PARAMS.has(k)) throw bad(`unknown parameter ${u.searchParams.get(k) !== '' ? JSON.stringify(k) : '(one without a value)'} (known: endpoint, region, path_style)`);
        if (u.searchParams.getAll(k).length > 1) throw bad(`${k} is given more than once`);
      }
      const endpoint = u.searchParams.get('endpoint') ?? undefined;
      if (endpoint !== undefined) {
        let e: URL;
        try {
          e = new URL(endpoint);
        } catch {
          throw bad('endpoint is not a URL');
        }
        if (e.protocol !== 'http:' && e.protocol !== 'https:') throw bad('endpoint must be http:// or https://');
        if (e.username || e.password) throw bad('credentials do not belong in the endpoint');
        // (a path or query there is not sent as the caller thinks: the SDK puts the bucket after it)
        if ((e.pathname !== '' && e.pathname !== '/') || e.search || e.hash) throw bad('the endpoint is scheme://host[:port] only (no path or query; the bucket and prefix go in s3://BUCKET/PREFIX)');
      }
      const region = u.searchParams.get('region') ?? undefined;
      if (region !== undefined && !/^[a-z0-9-]+$/.test(region)) throw bad(`bad region ${JSON.stringify(region)}`);
      const ps = u.searchParams.get('path_style');
      if (ps !== null && ps !== 'true' && ps !== 'false') throw bad('path_style must be true or false');
      return { kind: 's3', bucket, prefix, endpoint, region, forcePathStyle: ps === 'true' };
    }
    default:
      throw bad(`unknown scheme ${scheme}: (use a path, file://, memory:// or s3://)`);
  }
}

/** The URL with anything that looks like a credential removed, for error messages: user info
 *  (also an endpoint's), and the value of every query parameter that is not a known one (a
 *  `secret_key=` a user tried). */
function redactUrl(url: string): string {
  const text = redactUserInfo(String(url));
  const q = text.indexOf('?');
  if (q < 0) return text;
  const params = text
    .slice(q + 1)
    .split('&')
    .map((kv) => {
      const eq = kv.indexOf('=');
      if (eq < 0) return S3_PARAMS.has(kv) || kv === 'endpoint' ? kv : '[redacted]'; // (a bare secret pasted after the ?)
      const name = kv.slice(0, eq);
      if (name === 'endpoint') return `${name}=${redactEndpoint(kv.slice(eq + 1))}`;
      return S3_PARAMS.has(name) ? kv : `${name}=[redacted]`;
    });
  return `${text.slice(0, q + 1)}${params.join('&')}`;
}

/** An endpoint as far as its host and port: user info, path and query go (percent-encoded as
 *  a parameter value, `u%3Apw%40host` or `?sig=` hide from a plain look). */
function redactEndpoint(value: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(value);
  } catch {
    return '[redacted]';
  }
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)([^/?#]*)(.*)$/s.exec(redactUserInfo(decoded));
  if (!m) return '[redacted]';
  return `${m[1]}${m[2]}${m[3] === '' || m[3] === '/' ? m[3] : '/[redacted]'}`;
}

/** After `scheme:` (and its slashes, however many: `s3:/AK:pw@b` is no URL but echoes the same)
 *  up to the last `@` before the query: user info, whatever it holds (a secret key may contain
 *  `/`, which ends no user info here). A path without a scheme is left alone. */
function redactUserInfo(text: string): string {
  const scheme = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/*/.exec(text);
  if (!scheme) return text;
  const start = scheme[0].length;
  const q = text.indexOf('?', start);
  const at = text.lastIndexOf('@', q < 0 ? text.length : q);
  return at < start ? text : `${text.slice(0, start)}[redacted]${text.slice(at)}`;
}
