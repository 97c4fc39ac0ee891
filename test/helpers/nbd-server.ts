// Test helper: `nbd-vault serve` as a child process on a free loopback port (the server itself
// binds port 0 and logs the port it got, so there is no race for the port).
//   const srv = await startNbdServerProcess({ memory: ['disk=256M'] });
//   ... srv.uri('disk') ...   const code = await srv.stop();   // SIGTERM, graceful, expects 0
// Also: runTool() — run a client tool with a timeout and collect its output.
import { spawn, type ChildProcess } from 'node:child_process';
import { reapOnExit } from './child-reaper';
import { resolve, join } from 'node:path';

export const REPO_ROOT = resolve(__dirname, '../../..');
export const NBD_VAULT_BIN = join(REPO_ROOT, 'bin/nbd-vault.js');
/** python3 with the libnbd bindings (a pyenv python may come first on PATH). */
export const SYSTEM_PYTHON = '/usr/bin/python3';

export interface NbdServerProcessOptions {
  /** `--memory` specs, e.g. ['disk=256M', 'ro=1M:ro']. */
  readonly memory: readonly string[];
  /** Anything else for `serve` (e.g. ['--max-connections', '4']). */
  readonly extraArgs?: readonly string[];
  readonly socketPath?: string;
  /** info (default) or debug: the port is read from the info-level "listening" line. */
  readonly logLevel?: 'info' | 'debug';
  readonly startTimeoutMs?: number;
}

export interface NbdServerProcess {
  readonly host: string;
  readonly port: number;
  readonly process: ChildProcess;
  /** nbd://127.0.0.1:PORT/NAME */
  uri(exportName: string): string;
  /** Everything the server wrote to stderr (JSON log lines). */
  log(): string;
  /** True while the process is running. */
  alive(): boolean;
  /** SIGTERM (or `signal`) and wait; resolves with the exit code (null if killed by a signal). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

export async function startNbdServerProcess(opts: NbdServerProcessOptions): Promise<NbdServerProcess> {
  const args = [NBD_VAULT_BIN, 'serve', '--listen', '127.0.0.1:0', '--log-level', opts.logLevel ?? 'info'];
  for (const m of opts.memory) args.push('--memory', m);
  if (opts.socketPath) args.push('--socket', opts.socketPath);
  args.push(...(opts.extraArgs ?? []));
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
  let stderr = '';
  let exited = false;
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => ((exited = true), r(code))));
  reapOnExit(child);
  child.stdout!.resume();
  const port = await new Promise<number>((resolvePort, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), opts.startTimeoutMs ?? 15_000);
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const complete = stderr.slice(0, stderr.lastIndexOf('\n') + 1); // whole lines only
      for (const line of complete.split('\n')) {
        if (!line.includes('"listening"') || !line.includes('"port"')) continue;
        clearTimeout(timer);
        resolvePort(JSON.parse(line).port);
        return;
      }
    });
    void exit.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening: ${stderr}`));
    });
  });
  return {
    host: '127.0.0.1',
    port,
    process: child,
    uri: (name) => `nbd://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    log: () => stderr,
    alive: () => !exited,
    stop: async (signal = 'SIGTERM', timeoutMs = 20_000) => {
      if (exited) return exit;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs); // also holds the loop open
      const code = await exit;
      clearTimeout(timer);
      return code;
    },
  };
}

export interface ToolResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion (killed after timeoutMs). Never rejects on a non-zero exit. */
export function runTool(cmd: string, args: readonly string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<ToolResult> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolveRun({ code, stdout, stderr });
    });
    // A tool that exits without reading its stdin (most do) makes the end of stdin fail with
    // EPIPE when the exit wins the race (seen on a loaded machine): the exit code is the verdict.
    child.stdin.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') reject(err);
    });
    child.stdin.end(opts.input ?? '');
  });
}
