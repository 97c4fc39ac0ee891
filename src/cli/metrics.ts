// `serve --metrics HOST:PORT`: Prometheus text at http://HOST:PORT/metrics, with prom-client.
// PromMetrics is the MetricsSink the NBD server and the store stack report to (counters and
// latency histograms); cache, write-back and lease state is read from the open engines at each
// scrape (collect callbacks), so the I/O path pays nothing for it. Off unless asked for; a bare
// port listens on loopback only.
import { createServer, type Server } from 'node:http';
import client from 'prom-client';
import { VaultError } from '../errors';
import type { Logger } from '../util/log';
import type { MetricsSink } from '../util/metrics';
import type { EngineStats } from '../volume/volume-engine';
import type { MemoryBudgetStats } from '../util/memory-budget';
import { nudgedCollections } from '../util/collector-nudge';
import type { DiskCacheStats } from '../store/disk-cache-store';
import { parseListen } from './serve-command';

export type EngineStatsSource = () => Array<{ name: string; readOnly: boolean; stats: EngineStats }>;

/** Seconds: from a cached read (~0.1 ms) to a slow S3 commit (10 s). */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The memory budget, and what chunk fetches hold beside it (volume/fetch-memory.ts). */
export type ProcessMemoryStats = MemoryBudgetStats & { fetchFloorBytes?: number; fetchesWaiting?: number; payloadsKeptBytes?: number; slabsKeptBytes?: number };

export class PromMetrics implements MetricsSink {
  readonly registry = new client.Registry();
  private readonly nbdRequests: client.Counter<'volume' | 'command' | 'result'>;
  private readonly nbdBytes: client.Counter<'volume' | 'direction'>;
  private readonly nbdLatency: client.Histogram<'volume' | 'command'>;
  private readonly storeRequests: client.Counter<'op' | 'result'>;
  private readonly storeLatency: client.Histogram<'op'>;
  private readonly storeRetries: client.Counter<'op'>;
  private readonly storeBytesTotal: client.Counter<'op'>;

  constructor(engines: EngineStatsSource, memory?: () => ProcessMemoryStats) {
    const registers = [this.registry];
    client.collectDefaultMetrics({ register: this.registry, prefix: 'nbd_vault_' });
    this.nbdRequests = new client.Counter({ name: 'nbd_vault_nbd_requests_total', help: 'NBD requests answered, by volume (export), command and result (ok or the NBD errno)', labelNames: ['volume', 'command', 'result'], registers });
    this.nbdBytes = new client.Counter({ name: 'nbd_vault_nbd_bytes_total', help: 'Payload bytes of successful NBD reads and writes', labelNames: ['volume', 'direction'], registers });
    this.nbdLatency = new client.Histogram({ name: 'nbd_vault_nbd_request_duration_seconds', help: 'NBD request latency, from parsed request to reply queued', labelNames: ['volume', 'command'], buckets: LATENCY_BUCKETS, registers });
    this.storeRequests = new client.Counter({ name: 'nbd_vault_store_requests_total', help: 'Object store attempts, by operation and result (ok or the error code)', labelNames: ['op', 'result'], registers });
    this.storeLatency = new client.Histogram({ name: 'nbd_vault_store_request_duration_seconds', help: 'Object store attempt latency', labelNames: ['op'], buckets: LATENCY_BUCKETS, registers });
    this.storeBytesTotal = new client.Counter({ name: 'nbd_vault_store_bytes_total', help: 'Object body bytes moved by successful store attempts: read by get and getRange, written by put', labelNames: ['op'], registers });
    this.storeRetries = new client.Counter({ name: 'nbd_vault_store_retries_total', help: 'Object store operations retried (after a transient failure)', labelNames: ['op'], registers });

    // Engine state, read at scrape time. Counters of an engine that closed (a snapshot export
    // whose last client left) restart from 0 when it reopens, which Prometheus reads as a reset.
    const perVolume = (name: string, help: string, kind: 'counter' | 'gauge', pick: (s: EngineStats) => number) => {
      const Metric = kind === 'counter' ? client.Counter : client.Gauge;
      new Metric({
        name,
        help,
        labelNames: ['volume'],
        registers,
        collect(this: client.Counter<'volume'> | client.Gauge<'volume'>) {
          this.reset();
          // (inc for both kinds: a volume a writer and a read-only view both serve is their sum)
          for (const e of engines()) (this as client.Counter<'volume'>).inc({ volume: e.name }, pick(e.stats));
        },
      });
    };
    perVolume('nbd_vault_read_cache_hits_total', 'Frame reads answered from the read cache', 'counter', (s) => s.readCacheHits);
    perVolume('nbd_vault_read_cache_misses_total', 'Frame reads the read cache could not answer', 'counter', (s) => s.readCacheMisses);
    perVolume('nbd_vault_read_cache_bytes', 'Bytes of decoded frames in the read cache', 'gauge', (s) => s.readCacheBytes);
    perVolume('nbd_vault_decode_buffers_reused_total', 'Whole chunks (a stream\'s) and frames (a random read\'s miss) decoded into memory a dropped one left', 'counter', (s) => s.decodeBuffersReused);
    perVolume('nbd_vault_decode_buffers_free_bytes', 'Bytes of dropped chunks and frames kept for the next decode', 'gauge', (s) => s.decodeBuffersFreeBytes);
    perVolume('nbd_vault_dirty_bytes', 'Bytes written by clients and not yet stored (dirty 4 KiB blocks)', 'gauge', (s) => s.dirtyBytes);
    perVolume('nbd_vault_upload_queue_chunks', 'Chunks with dirty blocks (being sealed included)', 'gauge', (s) => s.dirtyChunks);
    perVolume('nbd_vault_uploads_in_flight', 'Seal cycles or compaction steps running (0 or 1)', 'gauge', (s) => s.uploadsInFlight);
    perVolume('nbd_vault_journals', 'Write journals the live root names', 'gauge', (s) => s.journals);
    perVolume('nbd_vault_journal_blocks', 'Journal blocks not yet folded into chunk objects', 'gauge', (s) => s.journalBlocks);
    perVolume('nbd_vault_lease_held', '1 if this server holds the volume\'s writer lease', 'gauge', (s) => (s.leaseHeld ? 1 : 0));
    perVolume('nbd_vault_lease_lost', '1 if this server lost the volume\'s writer lease (writes refused)', 'gauge', (s) => (s.leaseLost ? 1 : 0));
    const total = (name: string, help: string, pick: (s: EngineStats) => boolean) =>
      new client.Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(engines().filter((e) => pick(e.stats)).length);
        },
      });
    if (memory) {
      const gauge = (name: string, help: string, pick: (m: ProcessMemoryStats) => number) =>
        new client.Gauge({
          name,
          help,
          registers,
          collect() {
            this.set(pick(memory()));
          },
        });
      gauge('nbd_vault_memory_limit_bytes', 'The process memory budget (serve --memory-limit)', (m) => m.limitBytes);
      gauge('nbd_vault_memory_used_bytes', 'Bytes of the memory budget held by caches, dirty data, in-flight requests, unsent replies and chunk fetches', (m) => m.usedBytes);
      gauge('nbd_vault_memory_waiting', 'Reservations waiting for room in the memory budget (backpressure)', (m) => m.waiting);
      gauge('nbd_vault_memory_waiting_bytes', 'Bytes the waiting reservations ask for', (m) => m.waitingBytes);
      gauge('nbd_vault_fetch_floor_bytes', 'Bytes chunk fetches hold of their own floor, outside the budget (it had no free room)', (m) => m.fetchFloorBytes ?? 0);
      gauge('nbd_vault_payload_buffers_kept_bytes', 'Bytes of WRITE payload memory kept for the next requests (they hold budget, and give way)', (m) => m.payloadsKeptBytes ?? 0);
      gauge('nbd_vault_dirty_slabs_kept_bytes', 'Bytes of emptied dirty-block memory volumes keep for their next writes (they hold budget, and give way)', (m) => m.slabsKeptBytes ?? 0);
      gauge('nbd_vault_fetches_waiting', 'Chunk fetches waiting for memory (the budget and the fetch floor are full)', (m) => m.fetchesWaiting ?? 0);
      new client.Counter({
        name: 'nbd_vault_memory_waits_total',
        help: 'Reservations that had to wait for room in the memory budget',
        registers,
        collect() {
          this.reset();
          this.inc(memory().waitsTotal);
        },
      });
    }
    new client.Counter({
      name: 'nbd_vault_collections_nudged_total',
      help: 'Major collections started for shared memory V8 does not weigh (decoded chunks and frames dropped)',
      registers,
      collect() {
        this.reset();
        this.inc(nudgedCollections());
      },
    });
    total('nbd_vault_leases_held', 'Writer leases held by this server', (s) => s.leaseHeld);
    total('nbd_vault_leases_lost', 'Writer leases this server lost (its volumes refuse writes)', (s) => s.leaseLost);
  }

  /** serve --disk-cache: its counters, read at scrape time. */
  watchDiskCache(stats: () => DiskCacheStats): void {
    const registers = [this.registry];
    const metric = (name: string, help: string, kind: 'counter' | 'gauge', pick: (s: DiskCacheStats) => number) => {
      const Metric = kind === 'counter' ? client.Counter : client.Gauge;
      new Metric({
        name,
        help,
        registers,
        collect(this: client.Counter | client.Gauge) {
          this.reset();
          if (this instanceof client.Gauge) this.set(pick(stats()));
          else (this as client.Counter).inc(pick(stats()));
        },
      });
    };
    metric('nbd_vault_disk_cache_hits_total', 'Store reads answered from the disk cache', 'counter', (s) => s.hits);
    metric('nbd_vault_disk_cache_misses_total', 'Store reads of cacheable objects the disk cache could not answer (read from the store)', 'counter', (s) => s.misses);
    metric('nbd_vault_disk_cache_hit_bytes_total', 'Bytes answered from the disk cache', 'counter', (s) => s.hitBytes);
    metric('nbd_vault_disk_cache_miss_bytes_total', 'Bytes of cacheable objects read from the store', 'counter', (s) => s.missBytes);
    metric('nbd_vault_disk_cache_inserted_bytes_total', 'Bytes written into the disk cache (misses and write-through)', 'counter', (s) => s.insertedBytes);
    metric('nbd_vault_disk_cache_evictions_total', 'Disk cache entries evicted to stay within --disk-cache-size', 'counter', (s) => s.evictions);
    metric('nbd_vault_disk_cache_corrupt_total', 'Disk cache entries found torn or corrupt (dropped, read from the store)', 'counter', (s) => s.corrupt);
    metric('nbd_vault_disk_cache_rejected_total', 'Objects whose cached bytes failed authentication (entries dropped, read again from the store)', 'counter', (s) => s.rejected);
    metric('nbd_vault_disk_cache_write_errors_total', 'Disk cache writes that failed (the read or write went on)', 'counter', (s) => s.writeErrors);
    metric('nbd_vault_disk_cache_entries', 'Entries in the disk cache', 'gauge', (s) => s.entries);
    metric('nbd_vault_disk_cache_bytes', 'Bytes the disk cache uses on disk, its metadata included', 'gauge', (s) => s.usedBytes);
    metric('nbd_vault_disk_cache_limit_bytes', 'The disk cache bound (--disk-cache-size)', 'gauge', (s) => s.maxBytes);
  }

  // Per-request work is a Map lookup and an add: label children are made once per label set
  // (prom-client would otherwise hash the labels on every call).
  private readonly children = new Map<string, { count: client.Counter.Internal; latency: client.Histogram.Internal<'volume' | 'command'>; bytes: client.Counter.Internal | null }>();
  private readonly storeChildren = new Map<string, { count: client.Counter.Internal; latency: client.Histogram.Internal<'op'> }>();

  nbdRequest(volume: string, command: string, result: string, bytes: number, seconds: number): void {
    const key = `${volume}\0${command}\0${result}`;
    let c = this.children.get(key);
    if (!c) {
      const direction = command === 'read' || command === 'write' ? command : null;
      c = {
        count: this.nbdRequests.labels(volume, command, result),
        latency: this.nbdLatency.labels(volume, command),
        bytes: direction ? this.nbdBytes.labels(volume, direction) : null,
      };
      this.children.set(key, c);
    }
    c.count.inc();
    c.latency.observe(seconds);
    if (bytes > 0) c.bytes?.inc(bytes);
  }

  storeRequest(op: string, result: string, seconds: number): void {
    const key = `${op}\0${result}`;
    let c = this.storeChildren.get(key);
    if (!c) {
      c = { count: this.storeRequests.labels(op, result), latency: this.storeLatency.labels(op) };
      this.storeChildren.set(key, c);
    }
    c.count.inc();
    c.latency.observe(seconds);
  }

  storeBytes(op: string, bytes: number): void {
    this.storeBytesTotal.inc({ op }, bytes);
  }

  storeRetry(op: string): void {
    this.storeRetries.inc({ op });
  }
}

/** HOST:PORT, [v6]:PORT, or a bare PORT (loopback). */
export function parseMetricsAddress(text: string): { host: string; port: number } {
  if (/^\d+$/.test(text)) {
    const port = Number(text);
    if (port > 65535) throw new VaultError('ERR_INVALID_ARGUMENT', `--metrics: port ${text} is out of range`);
    return { host: '127.0.0.1', port };
  }
  try {
    return parseListen(text);
  } catch {
    throw new VaultError('ERR_INVALID_ARGUMENT', `--metrics wants HOST:PORT or PORT, got "${text}"`);
  }
}

/** Serves GET /metrics; anything else is 404. Resolves once listening. */
export async function startMetricsServer(metrics: PromMetrics, address: { host: string; port: number }, logger: Logger): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      (err: Error) => {
        logger.error({ err: err.message }, 'metrics collection failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new VaultError('ERR_INVALID_ARGUMENT', `--metrics: cannot listen on ${address.host}:${address.port} (${err.code ?? err.message})`)));
    server.listen(address.port, address.host, () => resolve());
  });
  const bound = server.address();
  const port = typeof bound === 'object' && bound ? bound.port : address.port;
  logger.info({ host: address.host, port, url: `http://${address.host.includes(':') ? `[${address.host}]` : address.host}:${port}/metrics` }, 'metrics listening');
  return server;
}
