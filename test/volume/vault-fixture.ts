// A vault over a MemoryStore with an inline codec and a random master key, for volume/ tests.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { SecretKey } from '../../src/keys/secret-key';
import { createInlineCodec } from '../../src/codec';
import { MemoryStore } from '../../src/store/memory-store';
import type { ObjectStore } from '../../src/store/object-store';
import { Vault, type VaultOptions } from '../../src/volume/vault';
import { createLogger } from '../../src/util/log';
import { InFlight } from '../../src/util/in-flight';

export const logger = createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');

export interface Fixture {
  store: ObjectStore;
  master: SecretKey;
  vault: Vault;
  stateDir: string;
  reopen(opts?: Partial<VaultOptions>, store?: ObjectStore): Promise<Vault>;
  cleanup(): void;
}

/** The inline codec seals on the event loop: a test that writes hundreds of chunks at once
 *  blocks it for seconds on a loaded machine, where a real server's worker pool would not.
 *  Writer sessions get a long ttl here; lease tests set their own. */
const TEST_LEASE_TIMING = { ttlMs: 300_000, renewMs: 5_000 };

/**
 * A MemoryStore that knows which deletes are still running. The engine deletes replaced objects in
 * the background after a durable root; `settled()` waits for exactly those, instead of a sleep.
 */
export class SettlingStore extends MemoryStore {
  private readonly deleting = new InFlight();
  override deleteMany(keys: readonly string[]): Promise<void> {
    return this.deleting.track(super.deleteMany(keys));
  }
  /** Resolves once every delete started so far (and any started meanwhile) has finished. */
  settled(): Promise<void> {
    return this.deleting.settled();
  }
}

/** Polls `check` until it returns true; fails with `what` after the deadline. */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, deadlineMs = 10_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function makeVault(store: ObjectStore = new SettlingStore()): Promise<Fixture> {
  const master = new SecretKey(randomBytes(32), 'master');
  const stateDir = mkdtempSync(join(tmpdir(), 'nbd-vault-state-'));
  const codec = createInlineCodec();
  const vault = await Vault.create(store, master, codec, { stateDir, logger, leaseTiming: TEST_LEASE_TIMING });
  return {
    store,
    master,
    vault,
    stateDir,
    reopen: (opts = {}, s = store) => Vault.open(s, master, codec, { stateDir, logger, leaseTiming: TEST_LEASE_TIMING, ...opts }),
    cleanup: () => rmSync(stateDir, { recursive: true, force: true }),
  };
}

export async function countKeys(store: ObjectStore, prefix: string, part: string): Promise<number> {
  let n = 0;
  for await (const info of store.list(prefix)) if (info.key.includes(part)) n++;
  return n;
}
