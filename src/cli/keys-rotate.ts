// `nbd-vault keys rotate`: a new master key; every volume key rewrapped by it, no data object
// rewritten (docs/FORMAT.md, "Rotating the master key"). The order makes it safe to interrupt
// and run again: the next key file is written before any metadata changes; both keys stay loaded
// (and loadable: see MasterKeyRing) until every volume and the vault's key check are on the new
// one; only then does the next key file replace the old one. A running server needs no restart:
// when it meets the new key id it reloads the key directory (MasterKeyRing.findOrReload).
import { createCodec } from '../codec';
import { VaultError } from '../errors';
import {
  createMasterKey,
  describeMasterKey,
  hasPendingMasterKey,
  loadMasterKey,
  MasterKeyRing,
  masterKeyId,
  PASSPHRASE_ENV,
  pendingMasterKeyPath,
  promotePendingMasterKey,
  readPassphrase,
} from '../keys';
import type { SecretKey } from '../keys/secret-key';
import { openStore } from '../store';
import { rewrapVolumeKeys, rewriteKeyCheck } from '../volume/key-rotation';
import { Vault } from '../volume/vault';
import { adminRequest } from './admin-socket';
import { Progress } from './progress';
import { resolveSettings, VAULT_SETTINGS } from './settings';
import { makeLogger, out, type VaultSettings } from './vault-context';

export async function rotateMasterKey(opts: Record<string, unknown>): Promise<void> {
  const s = resolveSettings(opts, VAULT_SETTINGS, process.env, { logLevel: 'warn' }) as VaultSettings;
  const logger = makeLogger(s.logLevel, s.logFormat);
  const dir = s.keys;
  const info = await describeMasterKey(dir);
  const passphrase = info.passphraseProtected ? await readPassphrase({ envVar: PASSPHRASE_ENV, prompt: 'Passphrase for the master key: ' }) : undefined;
  const keys: SecretKey[] = [];
  const store = openStore(s.store);
  const codec = createCodec({ workers: 1, zstdLevel: s.zstdLevel });
  try {
    const old = await loadMasterKey(dir, { passphrase });
    keys.push(old);
    const resumed = await hasPendingMasterKey(dir);
    if (!resumed) {
      // Same protection as the old file (the same passphrase): `keys passwd` changes it later.
      const next = await createMasterKey(dir, { passphrase, slot: 'pending' });
      out(`new master key ${next.keyId} written to ${next.path}; rewrapping volume keys`);
    }
    const next = await loadMasterKey(dir, { passphrase, slot: 'pending' });
    keys.push(next);
    const oldId = masterKeyId(old).toString('hex');
    const nextId = masterKeyId(next).toString('hex');
    if (resumed) out(`resuming the rotation from ${oldId} to ${nextId} (${pendingMasterKeyPath(dir)})`);
    if (oldId === nextId) throw new VaultError('ERR_KEY_FILE', `${pendingMasterKeyPath(dir)} holds the current master key; remove it and run keys rotate again`);

    // Both keys must belong to this vault: its key check opens with one of them.
    const vault = await Vault.open(store, next, codec, { stateDir: s.state, logger, keyRing: MasterKeyRing.of(next, old) });
    const target = { store, codec, vaultId: vault.vaultId, logger };
    const progress = new Progress('rewrapping', 0, 'objects');
    const { rewrapped, already } = await rewrapVolumeKeys(target, old, next, (done, total) => progress.update(done, total));
    progress.done();
    await rewriteKeyCheck(target, old, next);
    await promotePendingMasterKey(dir);
    // A volume created meanwhile by a process that held only the old key (still in memory here).
    const late = await rewrapVolumeKeys(target, old, next);
    out(`rotated master key ${oldId} -> ${nextId}: ${rewrapped + late.rewrapped} volume key(s) rewrapped${already > 0 ? `, ${already} already done by an earlier run` : ''}; no data object was rewritten`);
    out(`the old key no longer opens this vault; back up the new key file ${info.path} (or print a recovery key: nbd-vault keys export-recovery)`);
    const server = await adminRequest(s.state, { op: 'ping' }, 5000).catch(() => null);
    if (server?.ok && server.vaultId === vault.vaultId) { // (any store: the key directory is shared)
      out('a server is running on this state directory: it loads the new key from the key directory by itself when it next reads a volume (no restart needed), with the passphrase it was started with: if `keys passwd` changed the passphrase since, restart it with the new one');
    }
  } finally {
    for (const k of keys) k.wipe();
    await codec.close();
    await store.close();
  }
}
