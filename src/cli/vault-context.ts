// Opening what a vault command needs, from resolved settings: the store stack, the master key
// (asking for its passphrase if it has one), the codec and the Vault. One place, so every command
// validates its settings the same way and fails at startup with one clear line.
import { existsSync } from 'node:fs';
import { createCodec } from '../codec';
import type { Codec } from '../codec/codec';
import { VaultError, isVaultError } from '../errors';
import { createMasterKey, describeMasterKey, loadMasterKey, masterKeyPath, PASSPHRASE_ENV, readPassphrase } from '../keys';
import type { SecretKey } from '../keys/secret-key';
import { openStore } from '../store';
import type { ObjectStore } from '../store/object-store';
import { createLogger, setLogger, type Logger } from '../util/log';
import { Vault } from '../volume/vault';
import { resolveSettings, VAULT_SETTINGS, type Settings } from './settings';

export { VAULT_SETTINGS };
export type VaultSettings = Pick<Settings, (typeof VAULT_SETTINGS)[number]>;

export interface VaultContext {
  readonly store: ObjectStore;
  readonly master: SecretKey;
  readonly codec: Codec;
  readonly vault: Vault;
  readonly logger: Logger;
  close(): Promise<void>;
}

export function makeLogger(level: string): Logger {
  const logger = createLogger(level);
  setLogger(logger);
  return logger;
}

export async function loadMaster(keysDir: string): Promise<SecretKey> {
  const info = await describeMasterKey(keysDir);
  const passphrase = info.passphraseProtected ? await readPassphrase({ envVar: PASSPHRASE_ENV, prompt: 'Passphrase for the master key: ' }) : undefined;
  return loadMasterKey(keysDir, { passphrase });
}

export interface OpenVaultOptions {
  /** `init`: create the vault object instead of opening one. */
  readonly create?: boolean;
  /** first run of `serve`: create a key and a vault where there are none, and say so */
  readonly firstRun?: boolean;
}

export async function openVaultContext(s: VaultSettings, opts: OpenVaultOptions = {}): Promise<VaultContext> {
  const logger = makeLogger(s.logLevel);
  const store = openStore(s.store);
  logger.debug({ store: store.name }, 'store opened');
  const codec = createCodec({ workers: s.workers, zstdLevel: s.zstdLevel });
  let master: SecretKey | null = null;
  try {
    if (opts.firstRun && !existsSync(masterKeyPath(s.keys)) && !(await store.head('vault'))) {
      const info = await createMasterKey(s.keys);
      logger.warn({ path: info.path, keyId: info.keyId }, 'created a new master key: back up this file, without it no volume can be read');
    }
    master = await loadMaster(s.keys);
    if (!(s.leaseTtl >= 1 && s.leaseTtl <= 600)) throw new VaultError('ERR_INVALID_ARGUMENT', `--lease-ttl wants 1 to 600 seconds, got ${s.leaseTtl}`);
    const leaseTiming = { ttlMs: s.leaseTtl * 1000, renewMs: Math.min(5000, (s.leaseTtl * 1000) / 2) };
    const vopts = { stateDir: s.state, acceptRollback: s.acceptRollback, logger, leaseTiming };
    let vault: Vault;
    if (opts.create) vault = await Vault.create(store, master, codec, vopts);
    else {
      try {
        vault = await Vault.open(store, master, codec, vopts);
      } catch (err) {
        if (!(opts.firstRun && isVaultError(err, 'ERR_NOT_FOUND'))) throw err;
        vault = await Vault.create(store, master, codec, vopts);
        logger.warn({ store: store.name, vaultId: vault.vaultId }, 'created a new vault');
      }
    }
    const m = master;
    return {
      store,
      master: m,
      codec,
      vault,
      logger,
      close: async () => {
        await vault.close(); // the writer session's heartbeat: after every lease is released
        m.wipe();
        await codec.close();
        await store.close();
      },
    };
  } catch (err) {
    master?.wipe();
    await codec.close().catch(() => {});
    await store.close().catch(() => {});
    if (isVaultError(err, 'ERR_KEY_FILE') && !existsSync(masterKeyPath(s.keys))) {
      throw new VaultError('ERR_KEY_FILE', `no master key in ${s.keys} (create one with \`nbd-vault keys init\`, or point --keys / $NBD_VAULT_KEYS at yours)`, { cause: err });
    }
    throw err;
  }
}

/**
 * Run a one-shot command against the vault: resolve the vault settings of a parsed command,
 * open, run, close. One-shot commands log at 'warn' unless a level is set anywhere.
 */
export async function withVault<T>(opts: Record<string, unknown>, fn: (ctx: VaultContext, s: VaultSettings) => Promise<T>, open: OpenVaultOptions = {}): Promise<T> {
  const s = resolveSettings(opts, VAULT_SETTINGS, process.env, { logLevel: 'warn' }) as VaultSettings;
  const ctx = await openVaultContext(s, open);
  try {
    return await fn(ctx, s);
  } finally {
    await ctx.close();
  }
}

export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}
