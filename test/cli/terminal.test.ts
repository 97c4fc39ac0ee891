// Terminal behaviour under a real pseudo-terminal (`script`) against a pipe: human log lines and
// progress bars (with rate and ETA) on a terminal only; JSON lines and no progress in a pipe;
// --log-format overrides both ways; the recovery key goes only to a terminal unless forced.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { runCommand } from '../helpers/fuse-disk';
import { CLI, makeTestVault, type TestVault } from '../helpers/vault-server';

const ANSI = /\x1b(?:\[[0-9;?]*[A-Za-z]|[78])/g;

/** Runs the CLI with stdin, stdout and stderr on a pty; returns what the terminal showed. */
async function onTerminal(v: TestVault, args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}) {
  const quoted = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = await runCommand('script', ['-qec', quoted, '/dev/null'], { env: { ...v.env, ...opts.env }, cwd: v.dir, input: opts.input ?? '', okCodes: [0, 1, 2], timeoutMs: 120_000 });
  return { code: r.code, raw: r.stdout, text: r.stdout.replace(ANSI, '').replace(/\r/g, '\n') };
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
  const v = await makeTestVault();
  t.after(() => v.cleanup());

  // Log lines.
  const tty = await onTerminal(v, ['volume', 'create', 'a', '--size', '64M', '--log-level', 'info']);
  assert.equal(tty.code, 0, tty.text);
  assert.match(tty.text, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: volume created \{"volume":"a",/m, 'one human line per event');
  assert.doesNotMatch(tty.text, /\{"level":/);
  assert.match(tty.raw, /\x1b\[3\dm/, 'coloured on a terminal');
  const ttyJson = await onTerminal(v, ['volume', 'create', 'b', '--size', '64M', '--log-level', 'info', '--log-format', 'json']);
  assert.match(ttyJson.text, /^\{"level":30,.*"msg":"volume created"\}$/m);

  const pipe = await v.cli('volume', 'create', 'c', '--size', '64M', '--log-level', 'info');
  const lines = jsonLines(pipe.stderr) as Array<{ msg: string }>;
  assert.ok(lines.some((l) => l.msg === 'volume created'));
  const pipePretty = await v.cli('volume', 'create', 'd', '--size', '64M', '--log-level', 'info', '--log-format', 'pretty');
  assert.match(pipePretty.stderr, /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: volume created \{/m);
  assert.doesNotMatch(pipePretty.stderr, /\x1b\[/, 'no colours into a pipe');
  const bad = await v.cliResult('volume', 'list', '--log-format', 'xml');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /log format must be json, pretty or auto, got "xml"/);

  // Progress bars.
  const img = join(v.dir, 'in.img');
  writeFileSync(img, randomBytes(24 * 2 ** 20));
  const imp = await onTerminal(v, ['import', img, 'a']);
  assert.equal(imp.code, 0, imp.text);
  assert.match(imp.text, /import a \[=+\] 100% 24 MiB\/24 MiB [\d.]+ (KiB|MiB|GiB)\/s ETA \d+s/);
  assert.match(imp.text, /imported 24 MiB from .* into a/);
  const quiet = await onTerminal(v, ['import', img, 'b'], { env: { NBD_VAULT_NO_PROGRESS: '1' } });
  assert.equal(quiet.code, 0);
  assert.doesNotMatch(quiet.text, /ETA/);
  const piped = await v.cli('import', img, 'c');
  assert.equal(piped.stderr, '', 'nothing on stderr in a pipe: no bar, no log line at the default level');
  assert.match(piped.stdout, /^imported 24 MiB from .* into c \(0 zero chunks skipped\)\n$/);
});

test('recovery key: printed and typed on a terminal; refused through pipes unless asked', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const shown = await onTerminal(v, ['keys', 'export-recovery']);
  assert.equal(shown.code, 0, shown.text);
  const paper = shown.text.split('\n').filter((l) => /^nbd-vault recovery key|^[1-4]: /.test(l));
  assert.equal(paper.length, 5, shown.text);
  const refused = await v.cliResult('keys', 'export-recovery');
  assert.equal(refused.code, 2);
  assert.equal(refused.stdout, '', 'not a character of the key into the pipe');
  assert.match(refused.stderr, /refusing to write the master key to a non-terminal.*--force/);

  const typed = await onTerminal(v, ['keys', 'import-recovery', '--keys', join(v.dir, 'k2')], { input: paper.join('\n') + '\n\n' });
  assert.equal(typed.code, 0, typed.text);
  const keyId = /master key id ([0-9a-f]{16})/.exec(paper[0])![1];
  assert.match(typed.text, new RegExp(`restored master key ${keyId}`));
  const noStdin = await runCommand(process.execPath, [CLI, 'keys', 'import-recovery', '--keys', join(v.dir, 'k3')], { env: v.env, input: paper.join('\n'), okCodes: [2] });
  assert.match(noStdin.stderr, /refusing to read the master key from a non-terminal.*--stdin/);
  const typo = paper.map((l, i) => (i === 3 ? l.replace(/^3: (.)/, (_m, c) => `3: ${c === 'A' ? 'B' : 'A'}`) : l));
  const wrong = await onTerminal(v, ['keys', 'import-recovery', '--keys', join(v.dir, 'k4')], { input: typo.join('\n') + '\n\n' });
  assert.equal(wrong.code, 2);
  assert.match(wrong.text, /line 3 does not match its check characters/);
});
