// Child process of disk-cache.test.ts (kill -9 during cache writes): reads the objects of an fs
// store through a DiskCacheStore in a loop — misses, ranged reads, evictions, write-through puts —
// until it is killed. Prints `ready N` once N entries are in the cache.
// argv: STORE_DIR CACHE_DIR CACHE_BYTES
import { FsStore } from '../../src/store/fs-store';
import { DiskCache } from '../../src/store/disk-cache';
import { DiskCacheStore } from '../../src/store/disk-cache-store';
import { isImmutableObjectKey } from '../../src/volume/object-keys';
import { createLogger, setLogger } from '../../src/util/log';

async function main(): Promise<void> {
  setLogger(createLogger('error'));
  const [storeDir, cacheDir, bytes] = process.argv.slice(2);
  const inner = new FsStore(storeDir, { fsync: false });
  const store = new DiskCacheStore(inner, await DiskCache.open(cacheDir, Number(bytes)), isImmutableObjectKey);
  const keys: string[] = [];
  for await (const info of inner.list('volumes/')) keys.push(info.key);
  let said = false;
  let n = 0;
  for (;;) {
    const key = keys[Math.floor(Math.random() * keys.length)];
    const work: Array<Promise<unknown>> = [];
    for (let i = 0; i < 8; i++) {
      const k = keys[Math.floor(Math.random() * keys.length)];
      if (i % 3 === 0) work.push(store.getRange(k, Math.floor(Math.random() * 100_000), 131_072));
      else work.push(store.get(k));
    }
    if (n % 5 === 0) work.push(store.put(key, (await inner.get(key)).body)); // write-through of the same bytes
    await Promise.all(work);
    n++;
    if (!said && store.cache.entries >= 20) {
      said = true;
      process.stdout.write(`ready ${store.cache.entries}\n`);
    }
  }
}

main().catch((err) => {
  process.stderr.write(`child failed: ${String(err?.stack ?? err)}\n`);
  process.exit(1);
});
