// Every master key a process may need, by key id: normally one; two while a rotation is under way
// (the old one still opens what is not yet rewrapped, the next one wraps anything new). A long-
// running server opened before a rotation finds the new key with reload(): when a volume names a
// key id it does not hold, it re-reads the key directory — cheaply (key ids only, no Argon2id)
// unless a key id on disk is new to it.
import { VaultError } from '../errors';
import { masterKeyId } from './key-derivation';
import { describeMasterKey, hasPendingMasterKey, loadMasterKey } from './master-key-file';
import type { SecretKey } from './secret-key';

/** How often a missing key id may make the ring look at the key directory again. */
const RELOAD_INTERVAL_MS = 1000;

export class MasterKeyRing {
  private readonly keys = new Map<string, SecretKey>();
  private currentId: string;
  private lastReload = 0;
  private reloading: Promise<void> | null = null;
  /** Told the key id that became current after a reload (for a log line). */
  onReload: ((currentKeyId: string) => void) | null = null;

  private constructor(current: SecretKey, others: SecretKey[], private readonly reloader?: () => Promise<MasterKeyRing>, private readonly probe?: () => Promise<string[]>) {
    this.currentId = masterKeyId(current).toString('hex');
    for (const k of [current, ...others]) this.keys.set(masterKeyId(k).toString('hex'), k);
  }

  /** A ring of fixed keys (tests, the rotation itself). */
  static of(current: SecretKey, ...others: SecretKey[]): MasterKeyRing {
    return new MasterKeyRing(current, others);
  }

  /**
   * The keys of a key directory: the master key and, during a rotation, the next one (which is
   * then `current`: whatever is wrapped meanwhile is wrapped by the key that stays). The
   * passphrase is kept by the ring to reload with: it opens nothing the loaded keys do not.
   */
  static async load(dir: string, passphrase?: string): Promise<MasterKeyRing> {
    const current = await loadMasterKey(dir, { passphrase });
    let pending: SecretKey | null = null;
    try {
      if (await hasPendingMasterKey(dir)) pending = await loadMasterKey(dir, { passphrase, slot: 'pending' });
    } catch (err) {
      current.wipe();
      throw err;
    }
    const probe = async () => {
      const ids = [(await describeMasterKey(dir)).keyId];
      if (await hasPendingMasterKey(dir)) ids.push((await describeMasterKey(dir, 'pending')).keyId);
      return ids;
    };
    return pending ? new MasterKeyRing(pending, [current], () => MasterKeyRing.load(dir, passphrase), probe) : new MasterKeyRing(current, [], () => MasterKeyRing.load(dir, passphrase), probe);
  }

  /** The key that wraps new volume keys. */
  get current(): SecretKey {
    return this.keys.get(this.currentId)!;
  }

  get currentKeyId(): string {
    return this.currentId;
  }

  /** current first */
  all(): SecretKey[] {
    return [this.current, ...[...this.keys.entries()].filter(([id]) => id !== this.currentId).map(([, k]) => k)];
  }

  find(keyIdHex: string): SecretKey | undefined {
    return this.keys.get(keyIdHex);
  }

  /**
   * The key with this id, reloading the key directory once if the ring does not hold it (a
   * rotation finished while this process ran). After a reload, the directory's key is current.
   */
  async findOrReload(keyIdHex: string): Promise<SecretKey | undefined> {
    const found = this.keys.get(keyIdHex);
    if (found || !this.reloader || !this.probe) return found;
    // Concurrent lookups (a listing opens every volume at once) share one reload.
    if (!this.reloading) {
      if (Date.now() - this.lastReload < RELOAD_INTERVAL_MS) return undefined;
      this.reloading = this.reload(keyIdHex).finally(() => {
        this.lastReload = Date.now();
        this.reloading = null;
      });
    }
    await this.reloading;
    return this.keys.get(keyIdHex);
  }

  private async reload(keyIdHex: string): Promise<void> {
    const onDisk = await this.probe!().catch(() => [] as string[]);
    if (onDisk.every((id) => this.keys.has(id))) return;
    let fresh: MasterKeyRing;
    try {
      fresh = await this.reloader!();
    } catch (err) {
      throw new VaultError('ERR_WRONG_KEY', `a volume is wrapped by master key ${keyIdHex}, which this process does not hold, and reloading the key directory failed: ${(err as Error).message}`, { cause: err });
    }
    for (const k of fresh.all()) {
      const id = masterKeyId(k).toString('hex');
      if (this.keys.has(id)) k.wipe();
      else this.keys.set(id, k);
    }
    this.currentId = fresh.currentId;
    this.onReload?.(this.currentId);
  }

  wipe(): void {
    for (const k of this.keys.values()) k.wipe();
  }
}
