// The NBD server: listens on TCP and/or a Unix socket, runs one NbdConnection per client, and
// shuts down gracefully. Knows exports only through the ExportProvider it is given.
//
// Guarantees: a connection over maxConnections (established ones) is closed at once; connections
// still negotiating are bounded apart from them (admission.ts), so idle strangers cannot keep an
// authenticated client out. With `tls`, STARTTLS is offered (or required); `access` decides
// which client identity sees which export. close() stops
// accepting, lets every transmitting connection finish its in-flight requests (new ones get
// ESHUTDOWN), cuts whatever is left after shutdownGraceMs, then calls provider.closeAll()
// (which flushes every export). close() is idempotent.
import net from 'node:net';
import { lstatSync, unlinkSync } from 'node:fs';
import type { ExportProvider } from './export';
import type { Logger } from '../util/log';
import type { MetricsSink } from '../util/metrics';
import type { MemoryBudget } from '../util/memory-budget';
import { VaultError, describeError } from '../errors';
import { NbdConnection, type ConnectionOptions } from './connection';
import { Admission } from './admission';
import { PayloadBuffers } from './payload-buffers';
import { withRecycledReads } from './socket-reads';
import type { ExportAccessPolicy } from './access';
import type { TlsServerConfig } from './tls';
import {
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_HANDSHAKES,
  DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
  DEFAULT_MAX_IN_FLIGHT_BYTES,
  DEFAULT_SHUTDOWN_GRACE_MS,
  SHUTDOWN_STRAGGLER_WAIT_MS,
} from './limits';
import { settledWithin } from '../util/within';

export interface NbdServerOptions {
  readonly listen?: { readonly host: string; readonly port: number };
  /** Unix socket path; a stale socket file there is replaced, any other file is an error. */
  readonly socket?: string;
  readonly provider: ExportProvider;
  readonly logger: Logger;
  /** most connections in transmission at once */
  readonly maxConnections?: number;
  /** most connections still negotiating, in total and from one address */
  readonly maxHandshakes?: number;
  readonly maxHandshakesPerAddress?: number;
  /** absent: TLS off */
  readonly tls?: TlsServerConfig;
  readonly access?: ExportAccessPolicy;
  readonly maxInFlightBytes?: number;
  readonly handshakeTimeoutMs?: number;
  readonly shutdownGraceMs?: number;
  /** where request counts and latencies go (serve --metrics); none by default */
  readonly metrics?: MetricsSink;
  /** the process memory budget (serve --memory-limit): every connection's requests in flight
   *  and unsent replies also hold a share of it; none: only the per-connection limit */
  readonly memoryBudget?: MemoryBudget;
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
  /** STARTTLS is offered */
  readonly tls: boolean;
  /** New TLS credentials and access policy (a reload): new clients get them, and open sessions
   *  they no longer allow end. STARTTLS stays offered or not: that needs a restart. */
  setSecurity(security: { tls?: TlsServerConfig; access?: ExportAccessPolicy }): void;
  close(): Promise<void>;
}

/** nbd:// (nbds:// with `tls`) URI of an export, as libnbd and qemu read them. */
export function nbdUri(addr: NbdServerAddress, exportName = '', tls = false): string {
  const name = encodeURIComponent(exportName);
  const s = tls ? 's' : '';
  if ('path' in addr) return `nbd${s}+unix:///${name}?socket=${encodeURIComponent(addr.path)}`;
  const host = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
  return `nbd${s}://${host}:${addr.port}/${name}`;
}

export async function startNbdServer(opts: NbdServerOptions): Promise<NbdServerHandle> {
  if (!opts.listen && !opts.socket) throw new Error('startNbdServer: give listen and/or socket');
  const admission = new Admission<NbdConnection>(
    {
      maxEstablished: opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      maxHandshakes: opts.maxHandshakes ?? DEFAULT_MAX_HANDSHAKES,
      maxHandshakesPerAddress: opts.maxHandshakesPerAddress ?? DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
    },
    opts.logger,
  );
  const payloads = new PayloadBuffers(opts.memoryBudget);
  const connOpts: ConnectionOptions = {
    provider: opts.provider,
    logger: opts.logger,
    maxInFlightBytes: opts.maxInFlightBytes ?? DEFAULT_MAX_IN_FLIGHT_BYTES,
    handshakeTimeoutMs: opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    tls: opts.tls,
    access: opts.access,
    onEstablished: (c: NbdConnection) => admission.establish(c),
    negotiationLog: admission.log,
    metrics: opts.metrics,
    memoryBudget: opts.memoryBudget,
    payloads,
  };
  // Without TLS, sockets read into one recycled buffer (socket-reads.ts): accepted paused, then
  // wrapped again before anything is read. (TLS is on or off for the server's life.)
  const recycledReads = opts.tls === undefined;
  const connections = new Set<NbdConnection>();
  let nextId = 1;
  let closing: Promise<void> | null = null;

  const onConnection = (accepted: net.Socket) => {
    accepted.on('error', () => {}); // per-connection handlers below log; never let one crash us
    if (closing) {
      accepted.destroy();
      return;
    }
    let reads: ((view: Buffer) => void) | null = null; // (nothing is read before the connection is made)
    const socket = (recycledReads && withRecycledReads(accepted, (view) => reads?.(view))) || accepted;
    if (socket !== accepted) socket.on('error', () => {});
    else if (recycledReads) socket.resume(); // (accepted paused, and this Node cannot wrap it)
    const conn = new NbdConnection(socket, connOpts, nextId++);
    reads = (view) => conn.onTransientData(view);
    if (!admission.admit(conn)) {
      socket.destroy();
      return;
    }
    connections.add(conn);
    void conn.done.then(() => {
      connections.delete(conn);
      admission.leave(conn);
    });
    conn.start();
  };

  const servers: net.Server[] = [];
  const listenOn = (server: net.Server, arg: net.ListenOptions) =>
    new Promise<void>((resolve, reject) => {
      // the address in the message: a bare "listen EACCES" does not say which one, or why
      const where = arg.path !== undefined ? `the Unix socket ${arg.path}` : `${arg.host}:${arg.port}`;
      const hint = (code: string | undefined) =>
        code === 'EADDRINUSE' ? ' (something listens there already)' : code === 'EACCES' || code === 'ENOENT' ? (arg.path !== undefined ? ' (does its directory exist, and may this user write it?)' : ' (a port below 1024 needs root)') : '';
      server.once('error', (err: NodeJS.ErrnoException) => reject(new VaultError('ERR_IO', `cannot listen on ${where}: ${err.code ?? err.message}${hint(err.code)}`)));
      server.listen(arg, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => opts.logger.error({ err: describeError(err) }, 'server socket error'));
        resolve();
      });
    });
  try {
    if (opts.listen) {
      // allowHalfOpen: a client that shuts down its sending side still gets every reply it asked for
      const tcp = net.createServer({ allowHalfOpen: true, pauseOnConnect: recycledReads }, onConnection);
      servers.push(tcp);
      await listenOn(tcp, { host: opts.listen.host, port: opts.listen.port });
    }
    if (opts.socket) {
      await removeStaleSocket(opts.socket);
      const unix = net.createServer({ allowHalfOpen: true, pauseOnConnect: recycledReads }, onConnection);
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
    let stragglers = false;
    if (!(await settledWithin(drained, graceMs))) {
      opts.logger.warn({ connections: connections.size }, 'shutdown grace period over: dropping connections');
      for (const c of connections) c.destroy();
      // A request can wait on its export for as long as the export waits (a write waiting for
      // room while the store fails): it ends once the exports close below, unanswered (its client
      // replays it on the next server). Waiting for it first hung the stop for good.
      stragglers = !(await settledWithin(drained, SHUTDOWN_STRAGGLER_WAIT_MS));
    }
    await settledWithin(stopped, SHUTDOWN_STRAGGLER_WAIT_MS);
    try {
      await opts.provider.closeAll();
      opts.logger.info('all exports flushed and closed');
    } finally {
      payloads.close();
      if (stragglers && !(await settledWithin(drained, SHUTDOWN_STRAGGLER_WAIT_MS))) {
        opts.logger.warn({ connections: connections.size }, 'requests still running after the exports closed: stopping without them');
      }
    }
  };

  return {
    addresses,
    address: () => addresses()[0],
    uri: (name?: string) => nbdUri(addresses()[0], name, opts.tls !== undefined),
    tls: opts.tls !== undefined,
    connectionCount: () => connections.size,
    setSecurity: (security) => {
      if ((security.tls === undefined) !== (connOpts.tls === undefined)) throw new VaultError('ERR_INVALID_ARGUMENT', 'turning TLS on or off needs a restart');
      connOpts.tls = security.tls;
      connOpts.access = security.access;
      for (const conn of connections) conn.recheckGrant();
    },
    close: () => (closing ??= close()),
  };
}

/** A socket file left by a server that is gone is removed; one a live server listens on is not
 *  (taking its path silently orphaned that server's socket, and its stop then deleted ours). */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    if (!lstatSync(path).isSocket()) throw new VaultError('ERR_EXISTS', `cannot listen on the Unix socket ${path}: it exists and is not a socket`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (await someoneListens(path)) throw new VaultError('ERR_EXISTS', `cannot listen on the Unix socket ${path}: a running server listens there (another nbd-vault serve?)`);
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** A connect succeeds: something accepts on `path` (refused, or gone: nothing does). */
function someoneListens(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createConnection(path);
    const done = (alive: boolean) => {
      probe.destroy();
      resolve(alive);
    };
    probe.once('connect', () => done(true));
    probe.once('error', (err: NodeJS.ErrnoException) => done(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
    probe.setTimeout(2000, () => done(true)); // a listener too busy to accept is still a listener
  });
}
