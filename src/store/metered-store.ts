// MeteredStore: reports every store operation to a MetricsSink — its kind, its result ('ok' or
// the error code) and its duration. Placed below RetryStore, it sees every attempt; the retry
// layer reports the retries themselves (onRetry). A not-found get or a lost conditional put are
// results like any other ('ERR_STORE_NOT_FOUND', 'ERR_STORE_PRECONDITION'), not failures of ours.
// Body bytes of successful get, getRange and put attempts are counted too (storeBytes).
import { isVaultError } from '../errors';
import type { MetricsSink } from '../util/metrics';
import { childSegments, type ObjectInfo, type ObjectStore, type PutOptions, type StoredObject, type StoreLayer, type StoreProps } from './object-store';

export class MeteredStore implements ObjectStore {
  readonly name: string;
  readonly props: StoreProps;

  constructor(
    private readonly inner: ObjectStore,
    private readonly metrics: MetricsSink,
  ) {
    this.name = inner.name;
    this.props = inner.props;
  }

  private async timed<T>(op: string, run: () => Promise<T>): Promise<T> {
    const started = process.hrtime.bigint();
    let result = 'ok';
    try {
      return await run();
    } catch (err) {
      result = isVaultError(err) ? err.code : 'error';
      throw err;
    } finally {
      this.metrics.storeRequest(op, result, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  private bytes(op: string, n: number): void {
    if (n > 0) this.metrics.storeBytes?.(op, n);
  }

  get(key: string, into?: Buffer): Promise<StoredObject> {
    return this.timed('get', async () => {
      const r = await this.inner.get(key, into);
      this.bytes('get', r.body.length);
      return r;
    });
  }

  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.timed('getRange', async () => {
      const r = await this.inner.getRange(key, offset, length);
      this.bytes('getRange', r.length);
      return r;
    });
  }

  head(key: string): Promise<ObjectInfo | null> {
    return this.timed('head', () => this.inner.head(key));
  }

  put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    return this.timed('put', async () => {
      const r = await this.inner.put(key, body, opts);
      this.bytes('put', body.length);
      return r;
    });
  }

  delete(key: string): Promise<void> {
    return this.timed('delete', () => this.inner.delete(key));
  }

  deleteMany(keys: readonly string[]): Promise<void> {
    return this.timed('deleteMany', () => this.inner.deleteMany(keys));
  }

  listChildren(prefix: string): Promise<string[]> {
    return this.timed('list', () => childSegments(this.inner, prefix));
  }

  /** One 'list' per listing, timed from the first call to the end of the iteration. */
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const started = process.hrtime.bigint();
    let result = 'ok';
    try {
      yield* this.inner.list(prefix);
    } catch (err) {
      result = isVaultError(err) ? err.code : 'error';
      throw err;
    } finally {
      this.metrics.storeRequest('list', result, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  unwrap(): ObjectStore {
    return this.inner;
  }
}

export function meteredLayer(metrics: MetricsSink): StoreLayer {
  return (inner) => new MeteredStore(inner, metrics);
}
