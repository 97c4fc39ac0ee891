// `nbd-vault serve`: parse options, build an ExportProvider, run the NBD server until SIGINT or
// SIGTERM, then shut down gracefully (finish in-flight requests, flush every export, release the
// leases) and exit 0; requests that arrive meanwhile stay unanswered, for a reconnecting client
// to replay on the next server (docs/RECONNECT.md). SIGHUP reloads the configuration.
// runServer() is the reusable part: vault-backed exports call it with their own provider.
import type { Command } from 'commander';
import { VaultError, describeError } from '../errors';
import { nbdUri, startNbdServer, type NbdServerHandle } from '../nbd';
import { createLogger, log, parseLogFormat, setLogger, type Logger } from '../util/log';
import type { MetricsSink } from '../util/metrics';
import { MemoryBudget } from '../util/memory-budget';
import type { ExportProvider } from '../nbd/export';
import { MemoryExportProvider, parseMemoryExportSpec, type MemoryExportSpec } from '../nbd/memory-export';
import { addSettings, resolveSettings, SERVE_VAULT_SETTINGS, SETTINGS, TLS_SETTINGS } from './settings';
import { resolveServerSecurity, securitySummary, type ServerSecurity } from './tls-setup';

export interface ServeOptions {
  readonly listen?: { host: string; port: number };
  readonly socket?: string;
  readonly maxConnections: number;
  readonly handshakeTimeoutMs: number;
  readonly logger: Logger;
  /** TLS and access control (resolveServerSecurity) */
  readonly security: ServerSecurity;
  /** NBD request counts and latencies (serve --metrics) */
  readonly metrics?: MetricsSink;
  /** Called once the server listens, with the URI of the default export on each address. */
  readonly onListening?: (uris: string[]) => void;
  /** SIGHUP: reload the configuration (clients stay connected). What it returns replaces the
   *  TLS credentials and access policy: sessions they no longer allow end. */
  readonly onReload?: () => ServerSecurity | void;
  /** serve --memory-limit: shared by every connection (and, for a vault, every engine) */
  readonly memoryBudget?: MemoryBudget;
  /** Once a signal came, before the server stops: stop what starts work on the exports by
   *  itself (scheduled snapshots, admin requests, cache warming), so that none runs on after
   *  the exports are flushed and closed. */
  readonly onShutdown?: () => Promise<void>;
}

/** What SIGHUP does now: reload while a server runs; log and go on while it starts or stops. */
let onSighup: (() => void) | null = null;
let sighupGuarded = false;

/** From a serve's first moment on: SIGHUP's default action ends a process, and a `systemctl
 *  reload` while the vault opens (or the exports flush) must not end it unflushed. */
export function guardSighup(): void {
  if (sighupGuarded) return;
  sighupGuarded = true;
  process.on('SIGHUP', () => (onSighup ? onSighup() : log().info({ signal: 'SIGHUP' }, 'not reloaded: the server is starting or stopping')));
}

/** Starts the server for `provider`, logs where it listens, waits for SIGINT/SIGTERM, then closes
 *  it gracefully. Resolves when everything is flushed and closed. */
export async function runServer(provider: ExportProvider, opts: ServeOptions): Promise<void> {
  // Handlers first: a signal that arrives while the server starts is kept, not fatal.
  let signalled: NodeJS.Signals | null = null;
  let wake = () => {};
  const onSignal = (sig: NodeJS.Signals) => {
    signalled = sig;
    wake();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let running: NbdServerHandle | null = null;
  const onHup = () => {
    opts.logger.info({ signal: 'SIGHUP' }, 'reloading the configuration');
    try {
      const security = opts.onReload?.();
      if (security && running) running.setSecurity(security);
    } catch (err) {
      opts.logger.error({ err: describeError(err) }, 'configuration not reloaded; the running one stays');
    }
  };
  guardSighup();
  onSighup = onHup;
  const server = await startNbdServer({
    listen: opts.listen,
    socket: opts.socket,
    provider,
    logger: opts.logger,
    maxConnections: opts.maxConnections,
    handshakeTimeoutMs: opts.handshakeTimeoutMs,
    tls: opts.security.tls,
    access: opts.security.access,
    metrics: opts.metrics,
    memoryBudget: opts.memoryBudget,
  });
  running = server;
  opts.onListening?.(server.addresses().map((a) => nbdUri(a, provider.defaultName, opts.security.tls !== undefined)));
  logListening(server, provider, opts.logger);
  const signal: NodeJS.Signals = signalled ?? (await new Promise<NodeJS.Signals>((resolve) => (wake = () => resolve(signalled!))));
  process.removeListener('SIGINT', onSignal);
  process.removeListener('SIGTERM', onSignal);
  onSighup = null;
  opts.logger.info({ signal }, 'signal received');
  await opts.onShutdown?.().catch((err) => opts.logger.warn({ err: describeError(err) }, 'stopping background work failed; the exports close anyway'));
  await server.close();
  opts.logger.info('stopped');
}

function logListening(server: NbdServerHandle, provider: ExportProvider, logger: Logger): void {
  for (const a of server.addresses()) {
    logger.info({ ...a, uri: nbdUri(a, provider.defaultName, server.tls), defaultExport: provider.defaultName }, 'listening');
  }
}

export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new VaultError('ERR_INVALID_ARGUMENT', `--listen wants HOST:PORT, got "${text}"`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** Below this, one connection's largest request plus its in-flight share could not fit. */
export const MIN_MEMORY_LIMIT = 128 * 2 ** 20;

/**
 * The share of --memory-limit left to the runtime itself: V8's heaps (the main thread's and the
 * codec workers'), code, thread stacks and what the allocator keeps between uses. None of it is
 * data the budget counts, yet under load it is 400–550 MiB of the process (BENCHMARKS.md), so a
 * budget of the whole limit let the server grow to 1.5x it. A quarter, at most 512 MiB, and only
 * what leaves the rest (`rest`: what else is set aside, the sealing share) at least the minimum.
 */
export function runtimeShareOf(memoryLimitBytes: number, rest: number): number {
  return Math.max(0, Math.min(512 * 2 ** 20, Math.floor(memoryLimitBytes / 4), memoryLimitBytes - rest - MIN_MEMORY_LIMIT));
}

/** --memory-limit, checked: the whole limit is shared, so too small a one deadlocks nothing but
 *  would serialize every client. */
export function checkMemoryLimit(bytes: number): number {
  if (bytes < MIN_MEMORY_LIMIT) throw new VaultError('ERR_INVALID_ARGUMENT', `--memory-limit must be at least 128M (one connection may hold 64 MiB in flight plus a 32 MiB request), got ${bytes} bytes`);
  return bytes;
}

function positiveInt(name: string, max = Number.MAX_SAFE_INTEGER) {
  return (text: string): number => {
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n <= 0 || n > max) throw new VaultError('ERR_INVALID_ARGUMENT', `${name} wants a whole number from 1 to ${max}, got "${text}"`);
    return n;
  };
}

export function registerServeCommand(program: Command): void {
  const cmd = program
    .command('serve')
    .description('Serve the vault\'s volumes (and VOL@SNAP snapshots, read-only) over NBD until SIGINT/SIGTERM; with --memory, serve in-memory exports instead')
    .option('--memory <name=size>', 'serve an in-memory export instead of the vault (repeatable; first is the default; append :ro for read-only)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--handshake-timeout <seconds>', 'drop a client that has not finished negotiating (TLS included) by then', positiveInt('--handshake-timeout', 3600), 10);
  // listen, socket, max-connections, log-level and the vault settings: flag > env > config > default
  addSettings(cmd, SERVE_VAULT_SETTINGS).action(async (o: { memory: string[]; handshakeTimeout: number } & Record<string, unknown>) => {
    if (o.memory.length === 0) {
      const { serveVault } = await import('./serve-vault'); // (serve-vault imports runServer from here)
      return serveVault(o, o.handshakeTimeout * 1000);
    }
    const used = ['listen', 'socket', 'maxConnections', 'logLevel', 'logFormat', 'metrics', 'memoryLimit', ...TLS_SETTINGS] as const;
    // a vault flag beside --memory would be silently ignored: the user meant one or the other
    const vaultOnly = SERVE_VAULT_SETTINGS.filter((n) => !(used as readonly string[]).includes(n) && o[n] !== undefined);
    if (vaultOnly.length > 0) {
      throw new VaultError('ERR_INVALID_ARGUMENT', `--memory serves in-memory exports, not a vault: ${vaultOnly.map((n) => SETTINGS[n].flag.split(' ')[0]).join(', ')} ${vaultOnly.length > 1 ? 'do' : 'does'} not apply (drop --memory to serve the vault)`);
    }
    const s = resolveSettings(o, used);
    const logger = createLogger(s.logLevel, parseLogFormat(s.logFormat));
    setLogger(logger);
    guardSighup();
    const listen = parseListen(s.listen);
    const security = resolveServerSecurity(s, listen, o, logger);
    const specs: MemoryExportSpec[] = o.memory.map(parseMemoryExportSpec);
    const provider = new MemoryExportProvider(specs);
    // (metrics.ts imports parseListen from here: loaded when asked for)
    const { PromMetrics, parseMetricsAddress, startMetricsServer } = await import('./metrics');
    const memoryBudget = new MemoryBudget(checkMemoryLimit(s.memoryLimit));
    const metrics = s.metrics ? new PromMetrics(() => [], () => memoryBudget.stats()) : undefined;
    const metricsServer = metrics ? await startMetricsServer(metrics, parseMetricsAddress(s.metrics!), logger) : null;
    await runServer(provider, {
      metrics,
      listen,
      socket: s.socket,
      security,
      maxConnections: positiveInt('--max-connections')(String(s.maxConnections)),
      handshakeTimeoutMs: o.handshakeTimeout * 1000,
      logger,
      memoryBudget,
      // the PSK file, certificates and access section, read again (the settings stay as started)
      onReload: () => {
        const reloaded = resolveServerSecurity(s, listen, o, logger);
        logger.info({ tls: securitySummary(reloaded) }, 'configuration reloaded');
        return reloaded;
      },
    }).finally(() => {
      metricsServer?.close();
      metricsServer?.closeAllConnections();
    });
  });
}
