// Opening what a vault command needs, from resolved settings: the store stack, the master key
// (asking for its passphrase if it has one), the codec and the Vault. One place, so every command
// validates its settings the same way and fails at startup with one clear line.
import { existsSync } from 'node:fs';
import { createCodec } from '../codec';
import type { Codec } from '../codec/codec';
import { VaultError, describeError, isVaultError } from '../errors';
import { createMasterKey, describeMasterKey, masterKeyPath, MasterKeyRing, PASSPHRASE_ENV, readPassphrase } from '../keys';
import type { SecretKey } from '../keys/secret-key';
import { openStore } from '../store';
import { DiskCache } from '../store/disk-cache';
import { DiskCacheStore } from '../store/disk-cache-store';
import { isImmutableObjectKey } from '../volume/object-keys';
import type { ObjectStore } from '../store/object-store';
import { createLogger, parseLogFormat, setLogger, type Logger } from '../util/log';
import type { MetricsSink } from '../util/metrics';
import { closeAfter } from '../util/close-after';
import { Vault } from '../volume/vault';
import { listVolumeIds, vaultIdsOfVolumes } from '../volume/volume-references';
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

export function makeLogger(level: string, format = 'auto'): Logger {
  const logger = createLogger(level, parseLogFormat(format));
  setLogger(logger);
  return logger;
}

/** The master key (and, while a rotation is unfinished, the next one): see MasterKeyRing. */
export async function loadMasterRing(keysDir: string): Promise<MasterKeyRing> {
  const info = await describeMasterKey(keysDir);
  const passphrase = info.passphraseProtected ? await readPassphrase({ envVar: PASSPHRASE_ENV, prompt: 'Passphrase for the master key: ' }) : undefined;
  return MasterKeyRing.load(keysDir, passphrase);
}

export interface OpenVaultOptions {
  /** `init`: create the vault object instead of opening one. */
  readonly create?: boolean;
  /** first run of `serve`: create a key and a vault where there are none, and say so */
  readonly firstRun?: boolean;
  /** `init --recover`: rebuild a lost `vault` object for the volumes in the store; true: the
   *  vault id their metadata names, or this id */
  readonly recover?: true | string;
  /** report store attempts and retries here (serve --metrics) */
  readonly metrics?: MetricsSink;
  /** serve --disk-cache DIR --disk-cache-size SIZE: the disk cache above the store stack */
  readonly diskCache?: { readonly dir: string; readonly bytes: number };
}

export async function openVaultContext(s: VaultSettings, opts: OpenVaultOptions = {}): Promise<VaultContext> {
  const logger = makeLogger(s.logLevel, s.logFormat);
  let store = openStore(s.store, { metrics: opts.metrics });
  // The disk cache sits above the retry layer: a hit costs no store machinery at all, a miss is
  // retried below it before anything is cached, and store metrics count only real store requests.
  if (opts.diskCache) {
    try {
      store = new DiskCacheStore(store, await DiskCache.open(opts.diskCache.dir, opts.diskCache.bytes), isImmutableObjectKey);
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
  }
  logger.debug({ store: store.name }, 'store opened');
  const codec = createCodec({ workers: s.workers, zstdLevel: s.zstdLevel });
  let ring: MasterKeyRing | null = null;
  try {
    // A store with volumes but no `vault` object is not a first run: it lost its vault object.
    const fresh = async () => !(await store.head('vault')) && (await listVolumeIds(store)).length === 0;
    if (opts.firstRun && !existsSync(masterKeyPath(s.keys)) && (await fresh())) {
      const info = await createMasterKey(s.keys);
      logger.warn({ path: info.path, keyId: info.keyId }, 'created a new master key: back up this file, without it no volume can be read');
    }
    ring = await loadMasterRing(s.keys);
    if (ring.all().length > 1) logger.warn({ keyId: ring.currentKeyId }, 'a master key rotation is unfinished: run `nbd-vault keys rotate` again to finish it');
    ring.onReload = (keyId) => logger.warn({ keyId }, 'master key reloaded from the key directory (it was rotated)');
    const master = ring.current;
    if (!(s.leaseTtl >= 1 && s.leaseTtl <= 600)) throw new VaultError('ERR_INVALID_ARGUMENT', `--lease-ttl wants 1 to 600 seconds, got ${s.leaseTtl}`);
    const leaseTiming = { ttlMs: s.leaseTtl * 1000, renewMs: Math.min(5000, (s.leaseTtl * 1000) / 2) };
    const vopts = { stateDir: s.state, acceptRollback: s.acceptRollback, logger, keyRing: ring, leaseTiming };
    let vault: Vault;
    if (opts.recover !== undefined) vault = await Vault.create(store, master, codec, { ...vopts, recoverVaultId: await recoverVaultId(store, opts.recover) });
    else if (opts.create) vault = await Vault.create(store, master, codec, vopts);
    else {
      try {
        vault = await Vault.open(store, master, codec, vopts);
      } catch (err) {
        if (!(opts.firstRun && isVaultError(err, 'ERR_NOT_FOUND'))) throw err;
        // (Vault.create refuses a store that holds volumes, with what to do)
        vault = await Vault.create(store, master, codec, vopts);
        logger.warn({ store: store.name, vaultId: vault.vaultId }, 'created a new vault');
      }
    }
    const r = ring;
    return {
      store,
      master,
      codec,
      vault,
      logger,
      close: async () => {
        await vault.close(); // the writer session's heartbeat: after every lease is released
        r.wipe();
        await codec.close();
        await store.close();
      },
    };
  } catch (err) {
    ring?.wipe();
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
  return closeAfter(
    () => fn(ctx, s),
    () => ctx.close(),
    (err) => ctx.logger.warn({ err: describeError(err) }, 'closing the vault after the failure failed too'),
  );
}

export { out } from './stdout';

/** The vault id to rebuild: the one given, or the one the volumes' metadata names. */
async function recoverVaultId(store: ObjectStore, given: true | string): Promise<string> {
  if (given !== true) return given;
  const ids = await vaultIdsOfVolumes(store);
  if (ids.length === 1) return ids[0];
  if (ids.length === 0) {
    throw new VaultError('ERR_NOT_FOUND', `no volume in ${store.name} names its vault id (volumes made before nbd-vault recorded it); give it with --vault-id ID (a directory name in the server's --state directory)`);
  }
  throw new VaultError('ERR_INVALID_ARGUMENT', `the volumes in ${store.name} name several vault ids (${ids.join(', ')}); choose one with --vault-id`);
}
