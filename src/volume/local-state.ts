// Local, per-machine state: the highest root sequence seen per volume, so that a store that
// serves an older root (rollback/replay) is noticed. One small JSON file per volume under
// <stateDir>/<vaultId>/, written atomically (temp file, fsync, rename, directory fsync). Losing
// it loses only the local half of rollback detection; the store's snapshot records still catch a
// root older than a snapshot (vault.ts, loadVolume).
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { KeyedMutex } from '../util/keyed-mutex';
import { writePrivateFileAtomic } from '../keys/atomic-file';
import { VaultError, isVaultError } from '../errors';
import type { Logger } from '../util/log';
import { makeDirs } from '../util/make-dirs';

/** how often a failing state directory is named in the log, at most */
const WRITE_FAILURE_LOG_MS = 60_000;

export class LocalState {
  private instance: string | null = null;
  private readonly locks = new KeyedMutex<string>();
  private lastFailureLog = 0;

  constructor(
    private readonly dir: string,
    private readonly vaultId: string,
    private readonly logger?: Logger,
  ) {}

  /** This state directory's random instance id (created on first use): who holds a lease. */
  async instanceId(): Promise<string> {
    if (this.instance) return this.instance;
    const path = join(this.dir, 'instance-id');
    const found = await this.readInstanceId(path);
    if (found !== null && found !== 'unusable') return (this.instance = found);
    await makeDirs(this.dir, 0o700);
    const id = randomBytes(16).toString('hex');
    try {
      // Whole or absent, whatever cuts the write short (a full disk, a kill): an empty file left
      // by a plain create made every later command spin re-reading it. One that holds no id (an
      // older build's) is replaced: no lease can name an id that was never written.
      await writePrivateFileAtomic(path, Buffer.from(id + '\n'), found === 'unusable' ? 'replace' : 'create');
      return (this.instance = id);
    } catch (err: any) {
      if (isVaultError(err, 'ERR_EXISTS')) {
        const theirs = await this.readInstanceId(path); // another process created it first
        if (theirs !== null && theirs !== 'unusable') return (this.instance = theirs);
      }
      throw new VaultError('ERR_IO', `cannot write ${path}: ${err?.message ?? err}`);
    }
  }

  /** The id in PATH, null when there is no file, 'unusable' when it holds no id. */
  private async readInstanceId(path: string): Promise<string | 'unusable' | null> {
    try {
      const text = (await readFile(path, 'utf8')).trim();
      return /^[0-9a-f]{32}$/.test(text) ? text : 'unusable';
    } catch (err: any) {
      if (err?.code === 'ENOENT') return null;
      throw new VaultError('ERR_IO', `cannot read ${path}: ${err?.message ?? err}`);
    }
  }

  private file(volumeId: string): string {
    return join(this.dir, this.vaultId, `${volumeId}.json`);
  }

  async highestSeq(volumeId: string): Promise<number> {
    try {
      const raw = JSON.parse(await readFile(this.file(volumeId), 'utf8'));
      return Number.isSafeInteger(raw.highestSeq) ? raw.highestSeq : 0;
    } catch (err: any) {
      if (err?.code === 'ENOENT') return 0;
      throw new VaultError('ERR_IO', `cannot read local state ${this.file(volumeId)}: ${err?.message ?? err}`);
    }
  }

  /** Remember `seq` if it is higher than what is recorded (never moves backwards). Serialised per
   *  volume within the process; a unique temp file per write keeps concurrent writers apart. */
  async recordSeq(volumeId: string, seq: number): Promise<void> {
    await this.locks.run(volumeId, async () => {
      if ((await this.highestSeq(volumeId)) >= seq) return;
      // The root is durable in the store already: a state directory that cannot take the record
      // (full, read-only) weakens rollback detection, and fails nothing that was done (a flush
      // answered EIO for data the store held, an import reported failed that had landed).
      await this.writeSeq(volumeId, seq).catch((err: NodeJS.ErrnoException) => this.writeFailed(volumeId, err));
    });
  }

  private writeFailed(volumeId: string, err: NodeJS.ErrnoException): void {
    const now = Date.now();
    if (now - this.lastFailureLog < WRITE_FAILURE_LOG_MS) return;
    this.lastFailureLog = now;
    this.logger?.warn(
      { stateFile: this.file(volumeId), code: err.code, err: err.code ? undefined : String(err.message ?? err) },
      'cannot record the newest root in the state directory (full or read-only?): committed all the same; a rollback of this volume by the store is noticed only by its snapshot records until it can be written',
    );
  }

  /** Accepting a rollback: from now on, the older root is the reference. */
  async resetSeq(volumeId: string, seq: number): Promise<void> {
    await this.locks.run(volumeId, () => this.writeSeq(volumeId, seq));
  }

  private async writeSeq(volumeId: string, seq: number): Promise<void> {
    const path = this.file(volumeId);
    await makeDirs(join(this.dir, this.vaultId), 0o700);
    await writePrivateFileAtomic(path, Buffer.from(JSON.stringify({ highestSeq: seq, updatedAt: new Date().toISOString() })), 'replace');
  }
}
