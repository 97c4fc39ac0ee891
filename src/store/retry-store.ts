// RetryStore: the one layer that retries store operations.
//
// Policy (defaults in RETRY_DEFAULTS): exponential backoff with full jitter, the delay before retry
// i (0-based) is random() × min(baseDelayMs · 2^i, maxDelayMs). Only ERR_STORE_TRANSIENT is retried
// (or whatever policy.decide says); DENIED, NOT_FOUND, PRECONDITION, IO and non-store errors fail on
// the first attempt. A retry is refused when the wall time since the first attempt plus the next
// delay would exceed budgetMs, or after maxAttempts attempts.
// Guarantees:
// - Every error thrown is a RetriedStoreError: same `code` and message as the last inner error
//   (which is its `cause`), plus `attempts` and `totalRetryDelayMs`.
// - Bodies are whole Buffers, so a put is replayed byte for byte.
// - A conditional put (ifNoneMatch / ifMatch) whose outcome is unknown (a transient failure) is read
//   back before it is retried: if the object now holds our bytes, the put succeeded and returns.
// - list() resumes after a failure by listing again and skipping keys up to the last one yielded
//   (lists are in key order), so no key is yielded twice.
// - Each retry is logged with store, op, key (as `objectKey`), attempt, delay and error code, never
//   bodies: at warn at most once per 10 s, else at debug (RetryReport). sleep, random and now are
//   injectable so tests check the schedule without waiting.
import { VaultError, isVaultError } from '../errors';
import { childSegments, type ObjectInfo, type ObjectStore, type PutOptions, type StoredObject, type StoreLayer, type StoreProps } from './object-store';
import { compareKeys } from './memory-store';
import { RetryReport } from './retry-report';

export interface RetryPolicy {
  /** First backoff cap (ms); doubles per retry. */
  readonly baseDelayMs?: number;
  /** Largest backoff cap (ms). */
  readonly maxDelayMs?: number;
  /** Total time (ms) from the first attempt within which retries may start. */
  readonly budgetMs?: number;
  /** Most attempts per operation, first included. */
  readonly maxAttempts?: number;
  /** Override: should `err` (after `attempt` attempts) be retried? Default: code === ERR_STORE_TRANSIENT. */
  readonly decide?: (err: unknown, attempt: number) => boolean;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Uniform in [0, 1). */
  readonly random?: () => number;
  readonly now?: () => number;
  /** Called before each retry (tests, metrics). */
  readonly onRetry?: (e: RetryEvent) => void;
}

export interface RetryEvent {
  readonly op: string;
  readonly key: string;
  /** Attempts made so far (1 = the first failed). */
  readonly attempt: number;
  readonly delayMs: number;
  readonly error: unknown;
}

export const RETRY_DEFAULTS = {
  baseDelayMs: 100,
  maxDelayMs: 10_000,
  budgetMs: 60_000,
  maxAttempts: 1_000,
} as const;

export class RetriedStoreError extends VaultError {
  readonly attempts: number;
  readonly totalRetryDelayMs: number;
  constructor(last: VaultError, attempts: number, totalRetryDelayMs: number) {
    const suffix = attempts > 1 ? ` (gave up after ${attempts} attempts, ${Math.round(totalRetryDelayMs)} ms of backoff)` : '';
    super(last.code, `${last.message}${suffix}`, { cause: last });
    this.name = 'RetriedStoreError';
    this.attempts = attempts;
    this.totalRetryDelayMs = totalRetryDelayMs;
  }
}

type Resolved = Required<Omit<RetryPolicy, 'decide' | 'onRetry'>> & Pick<RetryPolicy, 'decide' | 'onRetry'>;

export class RetryStore implements ObjectStore {
  readonly name: string;
  readonly props: StoreProps;
  private readonly inner: ObjectStore;
  private readonly p: Resolved;
  private readonly report: RetryReport;

  constructor(inner: ObjectStore, policy: RetryPolicy = {}) {
    this.inner = inner;
    this.name = `retry(${inner.name})`;
    this.props = inner.props;
    this.p = resolvePolicy(policy);
    this.report = new RetryReport(inner.name, this.p.now);
  }

  get(key: string, into?: Buffer): Promise<StoredObject> {
    // a failed attempt may have left bytes in `into`: only the body a call returns counts
    return this.run('get', key, () => this.inner.get(key, into));
  }

  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.run('getRange', key, () => this.inner.getRange(key, offset, length));
  }

  head(key: string): Promise<ObjectInfo | null> {
    return this.run('head', key, () => this.inner.head(key));
  }

  put(key: string, body: Buffer, opts: PutOptions = {}): Promise<{ etag: string }> {
    const conditional = opts.ifNoneMatch !== undefined || opts.ifMatch !== undefined;
    let outcomeUnknown = false;
    return this.run('put', key, async () => {
      if (outcomeUnknown) {
        // The previous attempt may have landed: if the object holds our bytes, it did.
        const landed = await this.readBack(key, body);
        if (landed) return { etag: landed };
      }
      try {
        return await this.inner.put(key, body, opts);
      } catch (err) {
        if (conditional && isVaultError(err, 'ERR_STORE_TRANSIENT')) outcomeUnknown = true;
        throw err;
      }
    });
  }

  delete(key: string): Promise<void> {
    return this.run('delete', key, () => this.inner.delete(key));
  }

  deleteMany(keys: readonly string[]): Promise<void> {
    // Deletes are idempotent: replaying the whole batch is safe.
    return this.run('deleteMany', keys.length > 0 ? `${keys[0]} (+${keys.length - 1})` : '(none)', () => this.inner.deleteMany(keys));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let lastKey: string | null = null;
    const st = { attempts: 0, delayMs: 0, start: this.p.now() };
    for (;;) {
      st.attempts++;
      try {
        for await (const info of this.inner.list(prefix)) {
          if (lastKey !== null && compareKeys(info.key, lastKey) <= 0) continue;
          lastKey = info.key;
          yield info;
        }
        this.report.succeeded();
        return;
      } catch (err) {
        await this.backoffOrThrow('list', prefix, err, st);
      }
    }
  }

  listChildren(prefix: string): Promise<string[]> {
    return this.run('list', prefix, () => childSegments(this.inner, prefix));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  unwrap(): ObjectStore | null {
    return this.inner;
  }

  // ---- mechanism ----

  private async run<T>(op: string, key: string, attempt: () => Promise<T>): Promise<T> {
    const st = { attempts: 0, delayMs: 0, start: this.p.now() };
    for (;;) {
      st.attempts++;
      try {
        const result = await attempt();
        this.report.succeeded();
        return result;
      } catch (err) {
        await this.backoffOrThrow(op, key, err, st);
      }
    }
  }

  /** Sleeps before the next attempt, or throws the final error. */
  private async backoffOrThrow(op: string, key: string, err: unknown, st: { attempts: number; delayMs: number; start: number }): Promise<void> {
    const retryable = this.p.decide ? this.p.decide(err, st.attempts) : isVaultError(err, 'ERR_STORE_TRANSIENT');
    if (!(err instanceof VaultError)) throw err; // a bug or a foreign error: not ours to wrap
    if (!retryable || st.attempts >= this.p.maxAttempts) throw new RetriedStoreError(err, st.attempts, st.delayMs);
    const cap = Math.min(this.p.baseDelayMs * 2 ** (st.attempts - 1), this.p.maxDelayMs);
    const delayMs = this.p.random() * cap;
    if (this.p.now() - st.start + delayMs > this.p.budgetMs) throw new RetriedStoreError(err, st.attempts, st.delayMs);
    this.report.retrying({ op, key, attempt: st.attempts, delayMs, error: err });
    this.p.onRetry?.({ op, key, attempt: st.attempts, delayMs, error: err });
    st.delayMs += delayMs;
    await this.p.sleep(delayMs);
  }

  /** The etag if `key` now holds exactly `body`, else null. Transient errors propagate (and count). */
  private async readBack(key: string, body: Buffer): Promise<string | null> {
    try {
      const cur = await this.inner.get(key);
      return cur.body.equals(body) ? cur.etag : null;
    } catch (err) {
      if (isVaultError(err, 'ERR_STORE_NOT_FOUND')) return null;
      throw err;
    }
  }
}

/** A StoreLayer for composeStore. The policy is checked now, not on first use. */
export function retryLayer(policy: RetryPolicy = {}): StoreLayer {
  resolvePolicy(policy);
  return (inner) => new RetryStore(inner, policy);
}

function resolvePolicy(policy: RetryPolicy): Resolved {
  const p: Resolved = {
    baseDelayMs: policy.baseDelayMs ?? RETRY_DEFAULTS.baseDelayMs,
    maxDelayMs: policy.maxDelayMs ?? RETRY_DEFAULTS.maxDelayMs,
    budgetMs: policy.budgetMs ?? RETRY_DEFAULTS.budgetMs,
    maxAttempts: policy.maxAttempts ?? RETRY_DEFAULTS.maxAttempts,
    sleep: policy.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
    random: policy.random ?? Math.random,
    now: policy.now ?? Date.now,
    decide: policy.decide,
    onRetry: policy.onRetry,
  };
  for (const k of ['baseDelayMs', 'maxDelayMs', 'budgetMs'] as const) {
    if (!Number.isFinite(p[k]) || p[k] < 0) throw new VaultError('ERR_INVALID_ARGUMENT', `retry policy: ${k} must be a finite number >= 0, got ${p[k]}`);
  }
  if (!Number.isInteger(p.maxAttempts) || p.maxAttempts < 1) {
    throw new VaultError('ERR_INVALID_ARGUMENT', `retry policy: maxAttempts must be an integer >= 1, got ${p.maxAttempts}`);
  }
  if (p.maxDelayMs < p.baseDelayMs) throw new VaultError('ERR_INVALID_ARGUMENT', 'retry policy: maxDelayMs < baseDelayMs');
  return p;
}
