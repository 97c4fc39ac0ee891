// Where a passphrase comes from: an environment variable (scripts, tests) or a no-echo prompt on
// the terminal (the prompt goes to stderr; typed characters are not echoed). Never from argv, so
// it cannot show in process titles or `ps`. The returned string is handed straight to key code.
import readline from 'node:readline';
import { Writable } from 'node:stream';
import { VaultError } from '../errors';

export interface PassphraseRequest {
  /** e.g. NBD_VAULT_PASSPHRASE; a non-empty value wins over the prompt. */
  envVar: string;
  prompt: string;
  /** Ask twice on a terminal (for a new passphrase). */
  confirm?: boolean;
}

export interface PassphraseIo {
  env: NodeJS.ProcessEnv;
  input: NodeJS.ReadableStream & { isTTY?: boolean };
  output: NodeJS.WritableStream;
}

const defaultIo = (): PassphraseIo => ({ env: process.env, input: process.stdin, output: process.stderr });

export async function readPassphrase(request: PassphraseRequest, io: PassphraseIo = defaultIo()): Promise<string> {
  const fromEnv = io.env[request.envVar];
  if (fromEnv) return fromEnv;
  if (!io.input.isTTY) {
    throw new VaultError('ERR_INVALID_ARGUMENT', `a passphrase is needed: set ${request.envVar} or run on a terminal`);
  }
  const first = await promptHidden(request.prompt, io);
  if (first === '') throw new VaultError('ERR_INVALID_ARGUMENT', 'the passphrase is empty');
  if (request.confirm && (await promptHidden('Repeat the passphrase: ', io)) !== first) {
    throw new VaultError('ERR_INVALID_ARGUMENT', 'the two passphrases differ');
  }
  return first;
}

function promptHidden(prompt: string, io: PassphraseIo): Promise<string> {
  let muted = false;
  const output = new Writable({
    write(chunk, _encoding, done) {
      if (!muted) io.output.write(chunk);
      done();
    },
  });
  const rl = readline.createInterface({ input: io.input, output, terminal: true });
  return new Promise<string>((resolve, reject) => {
    let answered = false;
    io.output.write(prompt);
    muted = true;
    rl.question('', (answer) => {
      answered = true;
      muted = false;
      io.output.write('\n');
      rl.close();
      resolve(answer);
    });
    // Ctrl+C, or Ctrl+D on an empty line: say so and stop (the promise used to stay pending, and
    // the command exited 0 having done nothing).
    rl.on('SIGINT', () => rl.close());
    rl.on('close', () => {
      if (answered) return;
      muted = false;
      io.output.write('\n');
      reject(new VaultError('ERR_INVALID_ARGUMENT', 'no passphrase entered (the prompt was interrupted); nothing was done'));
    });
  });
}
