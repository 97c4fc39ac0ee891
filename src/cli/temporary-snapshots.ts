// The temporary snapshots `nbd-vault export VOL` has the local server take (export-source.ts):
// their names, which say the machine and the process that reads them, and the removal of those
// whose export was killed before it could delete its own.
import { createHash } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import * as os from 'node:os';
import type { Logger } from '../util/log';
import type { Vault } from '../volume/vault';
import { TEMPORARY_EXPORT_SNAPSHOT } from '../volume/snapshot-record';
import { defaultSnapshotName } from './snapshot-commands';

/** The temporary snapshot's name: says what it is, sorts by time, unique per process, and names
 *  the machine (a tag of its host name, machine id and pid namespace) and the process that read
 *  it, so that a later export on the same machine can tell one whose process is gone. */
export function temporarySnapshotName(now = new Date(), pid = process.pid, tag = hostTag()): string {
  return `export-${defaultSnapshotName(now)}-${tag}-${pid}`;
}

const TEMPORARY_NAME = TEMPORARY_EXPORT_SNAPSHOT;

/** 8 hex digits naming where pids mean the same: the host name, the machine id and the pid
 *  namespace (containers that share a host name have namespaces of their own), hashed. */
export function hostTag(where = `${os.hostname()}\n${orEmpty(() => readFileSync('/etc/machine-id', 'utf8').trim())}\n${orEmpty(() => readlinkSync('/proc/self/ns/pid'))}`): string {
  return createHash('sha256').update(where).digest('hex').slice(0, 8);
}

/** What `read` returns, or '' where it fails (no such file: another OS, a container without it). */
function orEmpty(read: () => string): string {
  try {
    return read();
  } catch {
    return '';
  }
}

/** Linux's largest pid (PID_MAX_LIMIT) */
const MAX_PID = 4_194_304;

/** The process still runs (EPERM: it does, as another user). */
function alive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid < 1 || pid > MAX_PID) return true; // not a pid of ours: leave it
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Temporary snapshots that exports on this machine left when they were killed (SIGKILL, a crash,
 * a power cut): their process is gone, so nothing reads them, and kept from retention they would
 * pin their chunks forever. Deleted before the next export of the volume takes its own, and by a
 * prune of it here (`snapshot prune`, a server's scheduled prune). One of another machine, or of
 * a process that runs (or a pid taken again since) is left alone. Each one deleted is logged;
 * returns their names.
 */
export async function removeAbandonedSnapshots(vault: Vault, logger: Logger, volume: string, tag = hostTag()): Promise<string[]> {
  const removed: string[] = [];
  for (const snap of await vault.listSnapshots(volume)) {
    const m = TEMPORARY_NAME.exec(snap.name);
    if (!m || m[1] !== tag || Number(m[2]) === process.pid || alive(Number(m[2]))) continue;
    try {
      await deleteTemporarySnapshot(vault, volume, snap.name);
      removed.push(snap.name);
      logger.warn({ volume, snapshot: snap.name }, 'deleted the temporary snapshot an export on this machine left when it was killed');
    } catch (err) {
      // (another export deleting it at the same moment, or the store): the caller goes on
      logger.warn({ volume, snapshot: snap.name, err: (err as Error).message }, 'could not delete the temporary snapshot a killed export left; the next export or prune tries again');
    }
  }
  return removed;
}

/** A temporary snapshot is kept (a retention prune must not delete it under its export): cleared,
 *  then deleted. Gone already: nothing to do. */
export async function deleteTemporarySnapshot(vault: Vault, volume: string, name: string): Promise<void> {
  const { objects } = await vault.loadVolume(volume);
  const found = (await objects.listSnapshots()).find((x) => x.name === name);
  if (!found) return;
  await objects.setSnapshotKeep(found.id, false);
  await vault.deleteSnapshot(volume, name);
}
