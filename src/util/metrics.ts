// What the lower layers report for metrics, as a small interface: nbd/ and store/ call it, and
// know nothing of Prometheus. The CLI plugs in the prom-client implementation (cli/metrics.ts)
// when `serve --metrics` asks for it; everywhere else (tests, one-shot commands) NO_METRICS.
// State that is cheaper to read than to report (cache sizes, dirty bytes, leases) is not pushed
// here: the CLI's collector reads it from the engines at scrape time.

export interface MetricsSink {
  /** One NBD request done: its command ('read', 'write', …), result ('ok' or an errno name), payload bytes moved. */
  nbdRequest(exportName: string, command: string, result: string, bytes: number, seconds: number): void;
  /** One attempt of a store operation ('get', 'put', …): result 'ok' or the error code. */
  storeRequest(op: string, result: string, seconds: number): void;
  /** Body bytes a successful store attempt moved: read by get/getRange, written by put (optional). */
  storeBytes?(op: string, bytes: number): void;
  /** The retry layer is about to try `op` again. */
  storeRetry(op: string): void;
}

export const NO_METRICS: MetricsSink = {
  nbdRequest() {},
  storeRequest() {},
  storeRetry() {},
};
