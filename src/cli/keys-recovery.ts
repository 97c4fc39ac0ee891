// `nbd-vault keys export-recovery|import-recovery`: the master key as a paper key (format:
// docs/FORMAT.md, "Recovery key") and back. Both refuse to move the key through a pipe or a file
// unless asked (--force / --stdin): on a terminal it goes to a person, elsewhere it may be kept.
import { createInterface } from 'node:readline';
import { VaultError } from '../errors';
import {
  describeMasterKey,
  formatRecoveryKey,
  loadMasterKey,
  masterKeyId,
  PASSPHRASE_ENV,
  parseRecoveryKey,
  readPassphrase,
  resolveKeysDir,
  saveMasterKey,
} from '../keys';

export async function exportRecoveryKey(opts: { keys?: string; force?: boolean }): Promise<void> {
  if (!process.stdout.isTTY && !opts.force) {
    throw new VaultError('ERR_INVALID_ARGUMENT', 'refusing to write the master key to a non-terminal (a pipe or a file would keep a copy of it); run it on a terminal, or add --force');
  }
  const dir = resolveKeysDir(opts.keys);
  const info = await describeMasterKey(dir);
  const passphrase = info.passphraseProtected ? await readPassphrase({ envVar: PASSPHRASE_ENV, prompt: 'Passphrase for the master key: ' }) : undefined;
  const master = await loadMasterKey(dir, { passphrase });
  try {
    process.stdout.write(formatRecoveryKey(master));
  } finally {
    master.wipe();
  }
  process.stderr.write('Write these lines down and keep them apart from the store. Anyone holding them can read every volume.\nTest them: nbd-vault keys import-recovery --keys /tmp/test-keys, then compare the key id.\n');
}

export async function importRecoveryKey(opts: { keys?: string; stdin?: boolean; passphrase?: boolean }): Promise<void> {
  const tty = Boolean(process.stdin.isTTY);
  if (!tty && !opts.stdin) {
    throw new VaultError('ERR_INVALID_ARGUMENT', 'refusing to read the master key from a non-terminal; type it on a terminal, or add --stdin to read it from standard input');
  }
  const dir = resolveKeysDir(opts.keys);
  if (tty) process.stderr.write('Type the recovery key: the 4 numbered lines (the header line is optional), then an empty line.\n');
  const text = await readRecoveryText(tty);
  const master = parseRecoveryKey(text);
  try {
    const passphrase = opts.passphrase ? await readPassphrase({ envVar: PASSPHRASE_ENV, prompt: 'New passphrase: ', confirm: true }) : undefined;
    const info = await saveMasterKey(dir, master, { passphrase });
    process.stdout.write(`restored master key ${masterKeyId(master).toString('hex')} at ${info.path}\n`);
  } finally {
    master.wipe();
  }
}

/** On a terminal: lines until an empty line after some text (or end of input); what is missing
 *  or mistyped then is parseRecoveryKey's to name (waiting for 4 numbered lines hung on lines
 *  typed without their numbers). */
async function readRecoveryText(tty: boolean): Promise<string> {
  const lines: string[] = [];
  let typed = 0;
  try {
    for await (const line of createInterface({ input: process.stdin, terminal: false })) {
      lines.push(line);
      if (line.trim() !== '') typed++;
      if (tty && line.trim() === '' && typed > 0) break;
      if (lines.length > 100) throw new VaultError('ERR_INVALID_ARGUMENT', 'recovery key: too many lines');
    }
  } finally {
    process.stdin.pause(); // a terminal still open must not keep the process alive once we are done
  }
  return lines.join('\n');
}
