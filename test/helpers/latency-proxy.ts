// A tiny HTTP proxy that adds a fixed delay to every request before passing it on unchanged
// (headers included, so S3 SigV4 signatures made for the proxy's address still verify at the
// target: the Host header is passed through as signed). Stands in for a real S3 region's
// 20–50 ms round trip in front of an S3 server on loopback. Bodies are streamed both ways.
// Used by the disk cache e2e test (in-process) and bench/disk-cache-bench.ts (as a process).
import * as http from 'node:http';

export interface LatencyProxy {
  readonly port: number;
  readonly requests: () => number;
  close(): Promise<void>;
}

export async function startLatencyProxy(target: string, delayMs: number): Promise<LatencyProxy> {
  const t = new URL(target);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  let count = 0;
  const server = http.createServer((req, res) => {
    count++;
    req.pause(); // hold the body until the delay is over
    setTimeout(() => {
      const up = http.request(
        { host: t.hostname, port: Number(t.port || 80), method: req.method, path: req.url, headers: req.headers, agent },
        (r) => {
          res.writeHead(r.statusCode ?? 502, r.statusMessage, r.headers);
          r.pipe(res);
        },
      );
      up.on('error', (err) => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`proxy: ${err.message}`);
      });
      req.pipe(up);
      req.resume();
    }, delayMs);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    requests: () => count,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}

// As a process (the bench runs its clients synchronously, which would stall an in-process proxy):
// `node dist/test/helpers/latency-proxy.js TARGET_URL DELAY_MS` prints `port N` once listening.
if (require.main === module) {
  const [target, delay] = process.argv.slice(2);
  startLatencyProxy(target, Number(delay)).then(
    (p) => process.stdout.write(`port ${p.port}\n`),
    (err) => {
      process.stderr.write(`latency proxy: ${String(err)}\n`);
      process.exit(1);
    },
  );
}
