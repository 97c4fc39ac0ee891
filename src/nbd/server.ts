// The NBD server: listens on TCP and/or a Unix socket, runs one NbdConnection per client, and
// shuts down gracefully. Knows exports only through the ExportProvider it is given.
//
// Guarantees: a connection over maxConnections is closed at once (logged); close() stops
// accepting, lets every transmitting connection finish its in-flight requests (new ones get
// ESHUTDOWN), cuts whatever is left after shutdownGraceMs, then calls provider.closeAll()
// (which flushes every export). close() is idempotent.
import net from 'node:net';
import { lstatSync, unlinkSync } from 'node:fs';
import type { ExportProvider } from '../volume/export';
import type { Logger } from '../util/log';
import type { MetricsSink } from '../util/metrics';
import { describeError } from '../errors';
import { NbdConnection } from './connection';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT_BYTES, DEFAULT_SHUTDOWN_GRACE_MS } from './limits';

export interface NbdServerOptions {
  readonly listen?: { readonly host: string; readonly port: number };
  /** Unix socket path; a stale socket file there is replaced, any other file is an error. */
  readonly socket?: string;
  readonly provider: ExportProvider;
  readonly logger: Logger;
  readonly maxConnections?: number;
  readonly maxInFlightBytes?: number;
  readonly handshakeTimeoutMs?: number;
  readonly shutdownGraceMs?: number;
  /** where request counts and latencies go (serve --metrics); none by default */
  readonly metrics?: MetricsSink;
}

export type NbdServerAddress = { readonly host: string; readonly port: number } | { readonly path: string };

export interface NbdServerHandle {
  /** Every address listened on (TCP first). */
  addresses(): NbdServerAddress[];
  /** The first address. */
  address(): NbdServerAddress;
  /** nbd:// URI for an export on the first address. */
  uri(exportName?: string): string;
  connectionCount(): number;
  close(): Promise<void>;
}

export function nbdUri(addr: NbdServerAddress, exportName = ''): string {
  const name = encodeURIComponent(exportName);
  if ('path' in addr) return `nbd+unix:///${name}?socket=${encodeURIComponent(addr.path)}`;
  const host = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
  return `nbd://${host}:${addr.port}/${name}`;
}

export async function startNbdServer(opts: NbdServerOptions): Promise<NbdServerHandle> {
  if (!opts.listen && !opts.socket) throw new Error('startNbdServer: give listen and/or socket');
  const maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  const connOpts = {
    provider: opts.provider,
    logger: opts.logger,
    maxInFlightBytes: opts.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES,
    handshakeTimeoutMs: opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    metrics: opts.metrics,
  };
  const connections = new Set<NbdConnection>();
  let nextId = 1;
  let closing: Promise<void> | null = null;

  const onConnection = (socket: net.Socket) => {
    socket.on('error', () => {}); // per-connection handlers below log; never let one crash us
    if (closing) {
      socket.destroy();
      return;
    }
    if (connections.size >= maxConnections) {
      opts.logger.warn({ remote: socket.remoteAddress, maxConnections }, 'connection limit reached: client refused');
      socket.destroy();
      return;
    }
    const conn = new NbdConnection(socket, connOpts, nextId++);
    connections.add(conn);
    void conn.done.then(() => connections.delete(conn));
    conn.start();
  };

  const servers: net.Server[] = [];
  const listenOn = (server: net.Server, arg: net.ListenOptions) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(arg, () => {
        server.off('error', reject);
        server.on('error', (err) => opts.logger.error({ err: describeError(err) }, 'server socket error'));
        resolve();
      });
    });
  try {
    if (opts.listen) {
      // allowHalfOpen: a client that shuts down its sending side still gets every reply it asked for
      const tcp = net.createServer({ allowHalfOpen: true }, onConnection);
      servers.push(tcp);
      await listenOn(tcp, { host: opts.listen.host, port: opts.listen.port });
    }
    if (opts.socket) {
      removeStaleSocket(opts.socket);
      const unix = net.createServer({ allowHalfOpen: true }, onConnection);
      servers.push(unix);
      await listenOn(unix, { path: opts.socket });
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }

  const addresses = (): NbdServerAddress[] =>
    servers.map((s) => {
      const a = s.address();
      if (typeof a === 'string') return { path: a };
      if (!a) throw new Error('server not listening');
      return { host: a.address, port: a.port };
    });

  const close = async (): Promise<void> => {
    const graceMs = opts.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
    const stopped = Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    opts.logger.info({ connections: connections.size }, 'shutting down: finishing in-flight requests');
    for (const c of connections) c.beginShutdown();
    const drained = Promise.all([...connections].map((c) => c.done));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), graceMs)));
    if ((await Promise.race([drained, timedOut])) === 'timeout') {
      opts.logger.warn({ connections: connections.size }, 'shutdown grace period over: dropping connections');
      for (const c of connections) c.destroy();
      await drained;
    }
    clearTimeout(timer);
    await stopped;
    await opts.provider.closeAll();
    opts.logger.info('all exports flushed and closed');
  };

  return {
    addresses,
    address: () => addresses()[0],
    uri: (name?: string) => nbdUri(addresses()[0], name),
    connectionCount: () => connections.size,
    close: () => (closing ??= close()),
  };
}

function removeStaleSocket(path: string): void {
  try {
    if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket`);
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
