// The local admin socket of a running `nbd-vault serve`: <state>/admin.sock, mode 0600 (root or
// the server's user only). CLI commands that must go through the server — a snapshot of a volume
// it is writing — send one JSON line and read one JSON line back. Nothing secret crosses it.
import { createServer, createConnection } from 'node:net';
import { chmod, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { VaultError, describeError, isVaultError, type VaultErrorCode } from '../errors';
import type { Logger } from '../util/log';
import { InFlight } from '../util/in-flight';
import { baseStoreName, type ObjectStore } from '../store';
import { makeDirs } from '../util/make-dirs';

export type AdminRequest =
  | { op: 'ping' }
  | { op: 'snapshot'; volume: string; name: string; keep?: boolean }
  /** start (or, with report, poll) a disk cache warm of a volume */
  | { op: 'cacheWarm'; volume: string; report?: boolean };
/** Every reply names the vault and the store the server serves: a replica has the source's vault
 *  id, and a command on the replica must not take the source's server for its own. */
export type AdminReply = { ok: true; vaultId: string; store: string; result: unknown } | { ok: false; vaultId: string; store: string; code: VaultErrorCode; message: string };

/** The reply came from a server of the command's vault on its store. */
export function servesThis(reply: AdminReply | null, ctx: { readonly vault: { readonly vaultId: string }; readonly store: ObjectStore }): reply is AdminReply {
  return reply !== null && reply.vaultId === ctx.vault.vaultId && reply.store === baseStoreName(ctx.store);
}

export const adminSocketPath = (stateDir: string) => join(stateDir, 'admin.sock');
const MAX_REQUEST_BYTES = 64 * 1024;
/** a connection that has not sent its request line within this is dropped */
const REQUEST_TIMEOUT_MS = 10_000;

/** The admin socket of a running server. */
export interface AdminServer {
  /** The server stops: new requests are refused (ERR_SHUTDOWN, so a CLI command says the server
   *  is stopping instead of taking its direct path against a volume still leased); settles once
   *  the requests being handled have been answered (a snapshot asked for just before is taken). */
  refuse(): Promise<void>;
  /** Refuse, then stop listening (the exports are closed). */
  close(): Promise<void>;
}

export async function startAdminServer(stateDir: string, vaultId: string, store: string, handle: (req: AdminRequest) => Promise<unknown>, logger: Logger): Promise<AdminServer> {
  const path = adminSocketPath(stateDir);
  await makeDirs(stateDir, 0o700);
  if ((await adminRequest(stateDir, { op: 'ping' }).catch(() => null)) !== null) {
    throw new VaultError('ERR_EXISTS', `another nbd-vault server is running with state directory ${stateDir}`);
  }
  await unlink(path).catch(() => {}); // a stale socket from a crash
  const handling = new InFlight();
  let closing = false;
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    // a request comes at once from our own CLI: one whose line is not in within the deadline is
    // dropped (300 half-written ones held 300 descriptors for good; a byte now and then is no line)
    const deadline = setTimeout(() => sock.destroy(), REQUEST_TIMEOUT_MS).unref();
    sock.on('close', () => clearTimeout(deadline));
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_REQUEST_BYTES) return sock.destroy();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      sock.removeAllListeners('data');
      clearTimeout(deadline); // (a snapshot may take longer: its reply is awaited)
      void handling.track((async () => {
        let reply: AdminReply;
        try {
          if (closing) throw new VaultError('ERR_SHUTDOWN', 'the server is stopping; try again once it has restarted');
          const req = parseAdminRequest(line);
          logger.info({ op: req.op }, 'admin request');
          reply = { ok: true, vaultId, store, result: await handle(req) };
        } catch (err) {
          // the code travels on its own: the caller's VaultError prints it once, after the message;
          // anything else failed in the server (a full disk under it), not in the request
          if (!isVaultError(err)) logger.error({ err: describeError(err) }, 'admin request failed');
          reply = { ok: false, vaultId, store, code: isVaultError(err) ? err.code : 'ERR_IO', message: isVaultError(err) ? err.message : `the server failed: ${describeError(err)}` };
        }
        sock.end(JSON.stringify(reply) + '\n');
      })());
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  await chmod(path, 0o600);
  const refuse = async () => {
    closing = true;
    await handling.settled();
  };
  return {
    refuse,
    async close() {
      await refuse();
      server.close();
    },
  };
}

/** A request line, checked field by field: the socket is local, but what it asks for is written
 *  to the store (a snapshot named `undefined` was, and no command could list snapshots after). */
export function parseAdminRequest(line: string): AdminRequest {
  let req: Record<string, unknown>;
  try {
    req = JSON.parse(line);
  } catch {
    throw new VaultError('ERR_INVALID_ARGUMENT', 'an admin request is one line of JSON');
  }
  const bad = (what: string) => new VaultError('ERR_INVALID_ARGUMENT', `malformed admin request: ${what}`);
  if (typeof req !== 'object' || req === null || Array.isArray(req)) throw bad('not an object');
  const text = (field: string) => {
    // ("" is no name: the server would take it for the default export)
    if (typeof req[field] !== 'string' || req[field] === '') throw bad(`"${field}" must be a non-empty string`);
    return req[field] as string;
  };
  const flag = (field: string) => {
    if (req[field] !== undefined && typeof req[field] !== 'boolean') throw bad(`"${field}" must be true or false`);
    return req[field] === true;
  };
  switch (req.op) {
    case 'ping':
      return { op: 'ping' };
    case 'snapshot':
      return { op: 'snapshot', volume: text('volume'), name: text('name'), keep: flag('keep') };
    case 'cacheWarm':
      return { op: 'cacheWarm', volume: text('volume'), report: flag('report') };
    default:
      throw bad(`unknown op ${JSON.stringify(req.op)}`);
  }
}

/** Send one request; null when no server listens on this state directory. */
export function adminRequest(stateDir: string, req: AdminRequest, timeoutMs = 600_000): Promise<AdminReply | null> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(adminSocketPath(stateDir));
    let buf = '';
    sock.setEncoding('utf8');
    sock.setTimeout(timeoutMs, () => sock.destroy(new Error('the server did not answer on its admin socket')));
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => (buf += d));
    // (the server stopped or was killed while it handled the request: whether it was done is unknown)
    const goneAway = () => new VaultError('ERR_IO', `the server went away before it answered (stopped or killed): the ${req.op} may or may not have been done; look before you retry`);
    sock.on('end', () => {
      if (buf.trim() === '') return reject(goneAway());
      try {
        resolve(JSON.parse(buf) as AdminReply);
      } catch {
        reject(new VaultError('ERR_IO', 'malformed reply on the admin socket'));
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(null);
      else if (err.code === 'ECONNRESET' || err.code === 'EPIPE') reject(goneAway());
      else reject(new VaultError('ERR_IO', `admin socket: ${err.message}`));
    });
  });
}
