// `nbd-vault keys init|passwd`: the master key file. Passphrases come from the environment
// (NBD_VAULT_PASSPHRASE, and NBD_VAULT_NEW_PASSPHRASE for the new one in passwd) or a no-echo
// prompt, never from argv. Output: one line naming the file and the public key id.
import type { Command } from 'commander';
import {
  changePassphrase,
  createMasterKey,
  describeMasterKey,
  NEW_PASSPHRASE_ENV,
  PASSPHRASE_ENV,
  readPassphrase,
  resolveKeysDir,
  type MasterKeyInfo,
} from '../keys';
import { addSettings, VAULT_SETTINGS } from './settings';

const KEYS_OPTION_HELP = 'key directory (default: $NBD_VAULT_KEYS, else ./keys)';

export function registerKeysCommands(program: Command): void {
  const keys = program.command('keys').description('Manage the master key');

  keys
    .command('init')
    .description('Create a new random master key (refuses to overwrite one)')
    .option('--keys <dir>', KEYS_OPTION_HELP)
    .option('--passphrase', `wrap the key with a passphrase (from $${PASSPHRASE_ENV} or a prompt)`)
    .action(async (opts: { keys?: string; passphrase?: boolean }) => {
      const dir = resolveKeysDir(opts.keys);
      const passphrase = opts.passphrase
        ? await readPassphrase({ envVar: PASSPHRASE_ENV, prompt: 'New passphrase: ', confirm: true })
        : undefined;
      const info = await createMasterKey(dir, { passphrase });
      printInfo('created master key', info);
      if (!info.passphraseProtected) process.stdout.write('keep a copy of this file safe: without it no volume can be read\n');
    });

  keys
    .command('passwd')
    .description(
      `Change, add or remove the passphrase of the master key (the key itself is unchanged): the current one from $${PASSPHRASE_ENV}, the new one from $${NEW_PASSPHRASE_ENV}, else no-echo prompts`,
    )
    .option('--keys <dir>', KEYS_OPTION_HELP)
    .option('--remove', 'store the key without a passphrase (protected by file mode 0600 only)')
    .action(async (opts: { keys?: string; remove?: boolean }) => {
      const dir = resolveKeysDir(opts.keys);
      const current = await describeMasterKey(dir);
      if (opts.remove && !current.passphraseProtected) {
        process.stdout.write(`master key ${current.keyId} at ${current.path} has no passphrase: nothing to remove\n`);
        return;
      }
      const oldPassphrase = current.passphraseProtected
        ? await readPassphrase({ envVar: PASSPHRASE_ENV, prompt: 'Current passphrase: ' })
        : undefined;
      const newPassphrase = opts.remove
        ? undefined
        : await readPassphrase({ envVar: NEW_PASSPHRASE_ENV, prompt: 'New passphrase: ', confirm: true });
      const info = await changePassphrase(dir, oldPassphrase, newPassphrase);
      printInfo(info.passphraseProtected ? 'passphrase set on master key' : 'passphrase removed from master key', info);
    });

  registerKeyRecoveryCommands(keys);
}

export function registerKeyRecoveryCommands(keys: Command): void {
  addSettings(keys.command('rotate').description('Replace the master key: every volume key is rewrapped, no data object rewritten (safe to interrupt and run again)'), VAULT_SETTINGS).action(
    async (opts: Record<string, unknown>) => (await import('./keys-rotate')).rotateMasterKey(opts),
  );
  keys
    .command('export-recovery')
    .description('Print the master key as a recovery key to write down (only on a terminal unless --force)')
    .option('--keys <dir>', KEYS_OPTION_HELP)
    .option('--force', 'print even when standard output is not a terminal')
    .action(async (opts: { keys?: string; force?: boolean }) => (await import('./keys-recovery')).exportRecoveryKey(opts));
  keys
    .command('import-recovery')
    .description('Rebuild the master key file from a recovery key (typed on a terminal, or --stdin); never overwrites a key file')
    .option('--keys <dir>', KEYS_OPTION_HELP)
    .option('--stdin', 'read the recovery key from standard input even when it is not a terminal')
    .option('--passphrase', `wrap the restored key with a passphrase (from $${PASSPHRASE_ENV} or a prompt)`)
    .action(async (opts: { keys?: string; stdin?: boolean; passphrase?: boolean }) => (await import('./keys-recovery')).importRecoveryKey(opts));
}

function printInfo(what: string, info: MasterKeyInfo): void {
  process.stdout.write(`${what} ${info.keyId} at ${info.path}\n`);
}
