// The public surface of store/: everything above store/ imports from here only.
export type { ObjectStore, ObjectInfo, StoredObject, PutOptions, StoreProps, StoreLayer } from './object-store';
export { MemoryStore } from './memory-store';
export { FsStore, type FsStoreOptions } from './fs-store';
// S3Store is not re-exported: importing it loads the AWS SDK (openStore requires it for s3:// only)
export type { S3StoreOptions } from './s3-store';
export { RetryStore, RetriedStoreError, retryLayer, RETRY_DEFAULTS, type RetryPolicy, type RetryEvent } from './retry-store';
export { RetryReport, RETRY_REPORT_MS } from './retry-report';
export { baseStoreName, composeStore, findLayer } from './compose';
export { openStore, parseStoreUrl, type OpenStoreOptions, type StoreUrl } from './store-url';
export { FaultyStore, faultyLayer, type FaultRules, type FaultRule, type Outage, type StoreOp, type FaultPhase, type FaultyOptions } from './faulty-store';
export { seededRandom } from './seeded-random';
export { MeteredStore, meteredLayer } from './metered-store';
export { DiskCache, type DiskCacheCounters } from './disk-cache';
export { DiskCacheStore, diskCacheLayer, type DiskCacheStats } from './disk-cache-store';
