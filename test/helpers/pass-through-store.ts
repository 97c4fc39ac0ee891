// A store decorator that passes every call through: tests that change one operation (a put that
// fails, or lands with its reply lost) extend it and override only that one.
import { childSegments, type ObjectInfo, type ObjectStore, type PutOptions, type StoredObject } from '../../src/store/object-store';

export class PassThroughStore implements ObjectStore {
  constructor(protected readonly inner: ObjectStore, readonly name = `test(${inner.name})`) {}
  get props() {
    return this.inner.props;
  }
  get(key: string, into?: Buffer): Promise<StoredObject> {
    return this.inner.get(key, into);
  }
  getRange(key: string, offset: number, length: number): Promise<Buffer> {
    return this.inner.getRange(key, offset, length);
  }
  head(key: string): Promise<ObjectInfo | null> {
    return this.inner.head(key);
  }
  put(key: string, body: Buffer, opts?: PutOptions): Promise<{ etag: string }> {
    return this.inner.put(key, body, opts);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  deleteMany(keys: readonly string[]): Promise<void> {
    return this.inner.deleteMany(keys);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  listChildren(prefix: string): Promise<string[]> {
    return childSegments(this.inner, prefix);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  unwrap(): ObjectStore | null {
    return this.inner;
  }
}
