// Terminal behaviour under a real pseudo-terminal (`script`) against a pipe: human log lines and
// progress bars (with rate and ETA) on a terminal only; JSON lines and no progress in a pipe;
// --log-format overrides both ways; the recovery key goes only to a terminal unless forced.
// (A typo in a typed recovery key: test/keys/recovery-key.test.ts.)
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCommand } from '../helpers/fuse-disk';
import { parseLogFormat } from '../../src/util/log';
import { CLI, makeTestVault, type TestVault } from '../helpers/vault-server';

const ANSI = /\x1b(?:\[[0-9;?]*[A-Za-z]|[78])/g;

/** Runs the CLI with stdin, stdout and stderr on a pty; returns what the terminal showed. */
async function onTerminal(v: TestVault, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}) {
  const quoted = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = await runCommand('script', ['-qec', quoted, '/dev/null'], { env: { ...v.env, ...opts.env }, cwd: v.dir, input: opts.input ?? '', okCodes: [0, 1, 2], timeoutMs: 120_000 });
  return { code: r.code, raw: r.stdout, text: r.stdout.replace(ANSI, '').replace(/\r/g, '\n') };
}

/** Runs the CLI on a pty whose input stays open (a person at the keyboard): once `ready` shows,
 *  types `keys`; returns what the terminal showed, ending with EXIT=<code> (or killed after 20 s). */
async function typedOnTerminal(v: TestVault, args: string[], ready: RegExp, keys: string): Promise<string> {
  const quoted = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('script', ['-qec', `${quoted}; echo EXIT=$?`, '/dev/null'], { env: v.env, cwd: v.dir, stdio: ['pipe', 'pipe', 'pipe'] });
  let shown = '';
  child.stdout.on('data', (d) => (shown += d));
  const exited = new Promise((r) => child.once('exit', r));
  for (let i = 0; i < 400 && !ready.test(shown); i++) await new Promise((r) => setTimeout(r, 50));
  assert.match(shown, ready);
  child.stdin.write(keys);
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(timer);
  child.stdin.end();
  return shown.replace(ANSI, '');
}

function jsonLines(stderr: string): unknown[] {
  return stderr
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        assert.fail(`not a JSON log line: ${JSON.stringify(l)}`);
      }
    });
}

test('logs and progress: pretty and drawn on a terminal, JSON and silent in a pipe', async (t) => {
  assert.throws(() => parseLogFormat('xml'), /log format must be json, pretty or auto, got "xml"/);
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const img = join(v.dir, 'in.img');
  writeFileSync(img, randomBytes(24 * 2 ** 20));

  // A terminal: one human line per event, coloured.
  const tty = await onTerminal(v, ['volume', 'create', 'a', '--size', '64M', '--log-level', 'info']);
  assert.equal(tty.code, 0, tty.text);
  assert.match(tty.text, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: volume created \{"volume":"a",/m);
  assert.doesNotMatch(tty.text, /\{"level":/);
  assert.match(tty.raw, /\x1b\[3\dm/, 'coloured on a terminal');
  // A pipe asked for pretty: human lines, no colours.
  const pipePretty = await v.cli('volume', 'create', 'b', '--size', '64M', '--log-level', 'info', '--log-format', 'pretty');
  assert.match(pipePretty.stderr, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: volume created \{/m);
  assert.doesNotMatch(pipePretty.stderr, /\x1b\[/, 'no colours into a pipe');

  // A pipe: JSON log lines only, no progress bar.
  const piped = await v.cli('import', img, 'a', '--log-level', 'debug');
  const lines = jsonLines(piped.stderr) as Array<{ msg: string }>;
  assert.ok(lines.some((l) => l.msg === 'store opened'), piped.stderr);
  assert.doesNotMatch(piped.stderr, /ETA|\r/);
  assert.match(piped.stdout, /^imported 24 MiB from .* into a \(0 zero chunks skipped\); the 40 MiB past its end now read as zeros\n$/);
  // A terminal: the progress bar with rate and ETA; --log-format json wins over the terminal.
  const imp = await onTerminal(v, ['import', img, 'b', '--log-level', 'debug', '--log-format', 'json']);
  assert.equal(imp.code, 0, imp.text);
  assert.match(imp.text, /import b \[=+\] 100% 24 MiB\/24 MiB [\d.]+ (B|KiB|MiB|GiB)\/s ETA \d+s/);
  assert.match(imp.text, /^\{"level":20,.*"msg":"store opened"\}$/m);
  assert.match(imp.text, /imported 24 MiB from .* into b/);
});

test('recovery key: printed and typed on a terminal; refused through pipes unless asked', async (t) => {
  const v = await makeTestVault({ init: false });
  t.after(() => v.cleanup());
  await v.cli('keys', 'init');
  const shown = await onTerminal(v, ['keys', 'export-recovery']);
  assert.equal(shown.code, 0, shown.text);
  const paper = shown.text.split('\n').filter((l) => /^nbd-vault recovery key|^[1-4]: /.test(l));
  assert.equal(paper.length, 5, shown.text);
  const refused = await v.cliResult('keys', 'export-recovery');
  assert.equal(refused.code, 2);
  assert.equal(refused.stdout, '', 'not a character of the key into the pipe');
  assert.match(refused.stderr, /refusing to write the master key to a non-terminal.*--force/);

  // typed by a person: the terminal stays open after the empty line
  const typed = await typedOnTerminal(v, ['keys', 'import-recovery', '--keys', join(v.dir, 'k2')], /Type the recovery key/, paper.join('\n') + '\n\n');
  assert.match(typed, /EXIT=0/, typed);
  const keyId = /master key id ([0-9a-f]{16})/.exec(paper[0])![1];
  assert.match(typed, new RegExp(`restored master key ${keyId}`));
  // typed without the line numbers: the empty line ends the input and the mistake is named (it hung)
  const unnumbered = paper.slice(1).map((l) => l.replace(/^[1-4]: /, ''));
  const bare = await typedOnTerminal(v, ['keys', 'import-recovery', '--keys', join(v.dir, 'k4')], /Type the recovery key/, unnumbered.join('\n') + '\n\n');
  assert.match(bare, /every line must start with its number/);
  assert.match(bare, /EXIT=2/);
  const noStdin = await runCommand(process.execPath, [CLI, 'keys', 'import-recovery', '--keys', join(v.dir, 'k3')], { env: v.env, input: paper.join('\n'), okCodes: [2] });
  assert.match(noStdin.stderr, /refusing to read the master key from a non-terminal.*--stdin/);
});

test('a passphrase prompt ended by Ctrl+C or Ctrl+D says so and fails (exit 2), having written no key', async (t) => {
  const v = await makeTestVault({ init: false });
  t.after(() => v.cleanup());
  for (const [what, key] of [['Ctrl+C', '\x03'], ['Ctrl+D', '\x04']] as const) {
    const keys = join(v.dir, `keys-${what}`);
    const shown = await typedOnTerminal({ ...v, env: { ...v.env, NBD_VAULT_PASSPHRASE: '' } }, ['keys', 'init', '--passphrase', '--keys', keys], /New passphrase:/, key);
    assert.match(shown, /no passphrase entered \(the prompt was interrupted\); nothing was done/, `${what}: ${shown}`);
    assert.match(shown, /EXIT=2/, `${what}: a failure, not a silent exit 0`);
    assert.equal(existsSync(keys) && readdirSync(keys).length > 0, false, 'no key written');
  }
});
