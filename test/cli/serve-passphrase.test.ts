// `serve` with a passphrase-protected master key: missing, wrong and correct passphrase, from the
// environment and typed on a terminal (a pty made by util-linux `script`). The passphrase never
// shows in any output, and the served volume really is readable and writable with the key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { runCommand } from '../helpers/fuse-disk';
import { CLI, makeTestVault, startVaultServer, type TestVault } from '../helpers/vault-server';
import { reapOnExit } from '../helpers/child-reaper';

const PASS = 'serve-test-passphrase-8128';
const WRONG = 'not-the-passphrase-4096';

async function protectedVault(): Promise<TestVault> {
  const v = await makeTestVault();
  await v.cli('volume', 'create', 'v', '--size', '8M');
  const r = await runCommand(process.execPath, [CLI, 'keys', 'passwd'], { env: { ...v.env, NBD_VAULT_NEW_PASSPHRASE: PASS }, cwd: v.dir });
  assert.equal(r.code, 0, r.stderr);
  return v;
}

/** The environment of the vault without any passphrase variable. */
function bareEnv(v: TestVault): NodeJS.ProcessEnv {
  const env = { ...v.env };
  delete env.NBD_VAULT_PASSPHRASE;
  delete env.NBD_VAULT_NEW_PASSPHRASE;
  return env;
}

function noSecret(output: string): void {
  assert.ok(!output.includes(PASS), 'the passphrase never shows');
  assert.ok(!output.includes(WRONG), 'a wrong passphrase never shows');
}

test('serve: passphrase from the environment (missing, wrong, correct)', { timeout: 120_000 }, async (t) => {
  const v = await protectedVault();
  t.after(() => v.cleanup());
  const serve = (env: NodeJS.ProcessEnv) =>
    runCommand(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0'], { env, cwd: v.dir, okCodes: [0, 1, 2], timeoutMs: 60_000, input: '' });

  const missing = await serve(bareEnv(v)); // stdin is not a terminal
  assert.equal(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /a passphrase is needed: set NBD_VAULT_PASSPHRASE or run on a terminal/);

  const wrong = await serve({ ...bareEnv(v), NBD_VAULT_PASSPHRASE: WRONG });
  assert.equal(wrong.code, 1, wrong.stderr);
  assert.match(wrong.stderr, /wrong passphrase .*\[ERR_WRONG_KEY\]/);
  assert.doesNotMatch(wrong.stdout + wrong.stderr, /"msg":"listening"/, 'nothing was served');
  noSecret(missing.stdout + missing.stderr + wrong.stdout + wrong.stderr);

  const env = { ...bareEnv(v), NBD_VAULT_PASSPHRASE: PASS };
  const good = await startVaultServer(env, v.dir);
  t.after(() => good.kill());
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 4096 8192', good.uri('v')]);
  const read = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 4096 8192', good.uri('v')]);
  assert.match(read.stdout, /read 8192\/8192 bytes/);
  assert.equal(await good.stop(), 0);
  noSecret(good.log());
});

/** Runs `serve` on a pty (util-linux script); resolves with a handle to type and read. */
function serveOnTerminal(v: TestVault) {
  // JSON log lines even on the terminal, to read the port (pretty logs are tested elsewhere)
  const cmd = `exec ${process.execPath} ${CLI} serve --listen 127.0.0.1:0 --log-format json`;
  const child = spawn('script', ['-q', '-e', '-c', cmd, '/dev/null'], { env: { ...bareEnv(v), TERM: 'dumb' }, cwd: v.dir, stdio: ['pipe', 'pipe', 'pipe'] });
  reapOnExit(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const waitFor = async (re: RegExp, what: string) => {
    const end = Date.now() + 60_000;
    while (!re.test(out)) {
      if (child.exitCode !== null) throw new Error(`serve ended before ${what}:\n${out}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}:\n${out}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  return { child, exited, output: () => out, waitFor, type: (s: string) => child.stdin!.write(s) };
}

test('serve: passphrase typed on a terminal (wrong, then correct); never echoed', { timeout: 120_000 }, async (t) => {
  const v = await protectedVault();
  t.after(() => v.cleanup());
  const keepAlive = setInterval(() => {}, 1000); // the reaper unrefs children: hold the loop while we await them
  t.after(() => clearInterval(keepAlive));

  const wrong = serveOnTerminal(v);
  await wrong.waitFor(/Passphrase for the master key: /, 'the prompt');
  wrong.type(`${WRONG}\r`);
  assert.equal(await wrong.exited, 1, wrong.output());
  assert.match(wrong.output(), /wrong passphrase .*\[ERR_WRONG_KEY\]/);
  noSecret(wrong.output());

  const good = serveOnTerminal(v);
  await good.waitFor(/Passphrase for the master key: /, 'the prompt');
  good.type(`${PASS}\r`);
  await good.waitFor(/"port":(\d+)[^\n]*"msg":"listening"/, 'listening');
  const port = Number(/"port":(\d+)[^\n]*"msg":"listening"/.exec(good.output())![1]);
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 4096', `nbd://127.0.0.1:${port}/v`]);
  const read = await runCommand('qemu-io', ['-f', 'raw', '-c', 'read -P 0x33 0 4096', `nbd://127.0.0.1:${port}/v`]);
  assert.match(read.stdout, /read 4096\/4096 bytes/);
  good.type('\x03'); // Ctrl-C on the terminal: SIGINT, a graceful stop
  assert.equal(await good.exited, 0, good.output());
  assert.match(good.output(), /all exports flushed and closed/);
  noSecret(good.output());
});
