// nbd-vault command line: thin — parse, call the layers, print. Each command group lives in its
// own file and registers itself here.
import { Command, CommanderError } from 'commander';
import { describeError, VaultError } from '../errors';
import { registerServeCommand } from './serve-command';
import { registerKeysCommands } from './keys-command';
import { registerVaultCommands } from './vault-commands';
import { registerSnapshotCommands } from './snapshot-commands';
import { registerDataCommands } from './data-commands';
import { registerImportCommand } from './import-command';
import { registerRetentionCommands } from './retention-commands';
import { registerSyncCommand } from './sync-command';
import { registerCacheCommands } from './cache-command';
import { watchStdout } from './stdout';

export function buildProgram(): Command {
  const program = new Command('nbd-vault')
    .description('Serve encrypted VM disks over NBD from an untrusted object store')
    .version(require('../../../package.json').version)
    .showHelpAfterError()
    .exitOverride();
  registerServeCommand(program);
  registerKeysCommands(program);
  registerVaultCommands(program);
  registerSnapshotCommands(program);
  registerRetentionCommands(program);
  registerDataCommands(program);
  registerImportCommand(program);
  registerSyncCommand(program);
  registerCacheCommands(program);
  return program;
}

/** Exit codes a script can rely on: 0 ok, 1 runtime error, 2 usage / invalid argument. */
export async function main(argv: string[]): Promise<void> {
  watchStdout();
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    process.stderr.write(`nbd-vault: ${describeError(err)}\n`);
    process.exitCode = err instanceof VaultError && err.code === 'ERR_INVALID_ARGUMENT' ? 2 : 1;
  }
}
