// Test helper: a real `nbd-vault` CLI and server as child processes, over a temp directory
// (keys/, state/, and the store: data/ by default, or a fresh prefix in the test S3 bucket).
//   const v = await makeTestVault({ s3: true });  await v.cli('volume', 'create', 'd', '--size', '1G');
//   const srv = await v.serve();  ... nbd://127.0.0.1:${srv.port}/d ...  await srv.stop();
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runCommand, type RunResult } from './fuse-disk';
import { reapOnExit } from './child-reaper';

export const REPO = resolve(__dirname, '../../..');
export const CLI = join(REPO, 'bin/nbd-vault.js');

export interface TestVault {
  readonly dir: string;
  readonly storeUrl: string;
  readonly env: NodeJS.ProcessEnv;
  cli(...args: string[]): Promise<RunResult>;
  /** like cli() but resolves with the result even when the exit code is not 0 */
  cliResult(...args: string[]): Promise<RunResult>;
  serve(extra?: string[]): Promise<VaultServer>;
  /**
   * Never throws, never hangs, safe to run first among a test's after-hooks (node:test runs them
   * in registration order, and stops at one that throws): lazily unmounts whatever is mounted
   * under the directory, detaches its loop devices, kills the servers it started, removes it.
   */
  cleanup(): Promise<void>;
}

export interface VaultServer {
  readonly port: number;
  readonly process: ChildProcess;
  uri(name: string): string;
  /** SIGTERM and wait for the exit code (graceful: flushes everything). */
  stop(): Promise<number | null>;
  /** SIGKILL: a crash. */
  kill(): Promise<void>;
  readonly log: () => string;
}

/** The S3 URL of the test gateway, or null (callers skip unless NBD_VAULT_REQUIRE_S3=1). */
export function testS3Url(): string | null {
  return process.env.NBD_VAULT_TEST_S3_URL ?? null;
}

export function s3Required(): boolean {
  return process.env.NBD_VAULT_REQUIRE_S3 === '1';
}

/** For S3 tests: true when they can run; otherwise skips `t` (or fails it when S3 is required). */
export function s3Available(t: { skip(message: string): void }): boolean {
  if (testS3Url()) return true;
  if (s3Required()) throw new Error('NBD_VAULT_TEST_S3_URL is not set but NBD_VAULT_REQUIRE_S3=1');
  t.skip('no S3 gateway (run scripts/test.sh or scripts/rgw.sh start DIR PORT)');
  return false;
}

export async function makeTestVault(opts: { s3?: boolean; init?: boolean } = {}): Promise<TestVault> {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-e2e-'));
  const servers: VaultServer[] = [];
  let storeUrl = join(dir, 'data');
  if (opts.s3) {
    const base = testS3Url();
    if (!base) throw new Error('NBD_VAULT_TEST_S3_URL is not set (run scripts/test.sh, or scripts/rgw.sh start)');
    // a fresh prefix per test vault: s3://bucket/prefix?query → s3://bucket/prefix/<random>?query
    const u = new URL(base);
    u.pathname = `${u.pathname.replace(/\/$/, '')}/e2e-${randomBytes(6).toString('hex')}`;
    storeUrl = u.toString();
  }
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NBD_VAULT_STORE: storeUrl,
    NBD_VAULT_KEYS: join(dir, 'keys'),
    NBD_VAULT_STATE: join(dir, 'state'),
    NBD_VAULT_LOG_LEVEL: process.env.TEST_SERVER_LOG_LEVEL ?? 'info',
    NBD_VAULT_WORKERS: '2',
  };
  const cliResult = (...args: string[]) => runCommand(process.execPath, [CLI, ...args], { env, cwd: dir, timeoutMs: 300_000, okCodes: [0, 1, 2] });
  const cli = async (...args: string[]) => {
    const r = await cliResult(...args);
    if (r.code !== 0) throw new Error(`nbd-vault ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r;
  };
  const vault: TestVault = {
    dir,
    storeUrl,
    env,
    cli,
    cliResult,
    serve: async (extra = []) => {
      const srv = await startVaultServer(env, dir, extra);
      servers.push(srv);
      return srv;
    },
    cleanup: async () => {
      await releaseMountsUnder(dir);
      for (const srv of servers) await srv.kill().catch(() => {});
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch (err) {
        console.error(`cleanup of ${dir}: ${(err as Error).message}`);
      }
    },
  };
  if (opts.init !== false) {
    await cli('keys', 'init');
    await cli('init');
  }
  return vault;
}

/** Lazily unmount every mount under `dir` (deepest first) and detach loop devices backed by files
 *  under it. Errors are ignored: this is last-resort cleanup. */
async function releaseMountsUnder(dir: string): Promise<void> {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && m.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await runCommand('umount', ['-l', m], { timeoutMs: 10_000 }).catch(() => {});
  const loops = await runCommand('losetup', ['-a'], { timeoutMs: 10_000 }).catch(() => null);
  for (const line of loops?.stdout.split('\n') ?? []) {
    const m = /^(\/dev\/loop\d+):.*\((.*)\)$/.exec(line);
    if (m && m[2].startsWith(dir + '/')) await runCommand('losetup', ['-d', m[1]], { timeoutMs: 10_000 }).catch(() => {});
  }
}

export async function startVaultServer(env: NodeJS.ProcessEnv, cwd: string, extra: string[] = []): Promise<VaultServer> {
  // Port 0: the kernel picks a free port (no race with other tests); the log line tells which.
  const child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', ...extra], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  reapOnExit(child);
  const started = Date.now();
  let port = 0;
  while (!(port = Number(/"port":(\d+)[^\n]*"msg":"listening"/.exec(log)?.[1] ?? 0))) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nbd-vault serve exited early:\n${log}`);
    if (Date.now() - started > 60_000) {
      child.kill('SIGKILL');
      throw new Error(`nbd-vault serve did not start listening in 60 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    process: child,
    log: () => log,
    uri: (name: string) => `nbd://127.0.0.1:${port}/${name}`,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      const keepAlive = setTimeout(() => {}, 30_000); // the child is unref'd: hold the loop open
      await exited;
      clearTimeout(keepAlive);
    },
  };
}
