// Test helper: a Docker engine for the container test. Uses a running engine when there is one;
// otherwise starts dockerd (Debian's docker.io, installed by scripts/install-test-deps.sh) and
// stops it again afterwards, by the pid it wrote.
import { spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commandExists, killAndWait, runCommand, waitFor } from './fuse-disk';

export interface DockerEngine {
  /** Stops the engine if this helper started it; never throws. */
  stop(): Promise<void>;
}

const DOCKERD_PID_FILE = '/var/run/docker.pid';

/** Why the container test cannot run here, or null if it can. */
export async function dockerUnavailableReason(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'the container test runs as root (dockerd, debootstrap)';
  for (const tool of ['docker', 'debootstrap', 'qemu-img']) {
    if (!(await commandExists(tool))) return `${tool} is not installed (scripts/install-test-deps.sh)`;
  }
  if (!(await dockerReachable()) && !['/usr/sbin/dockerd', '/usr/bin/dockerd'].some(existsSync)) return 'no Docker engine (dockerd) is installed';
  return null;
}

async function dockerReachable(): Promise<boolean> {
  try {
    await runCommand('docker', ['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 20_000 });
    return true;
  } catch {
    return false;
  }
}

export async function startDockerEngine(): Promise<DockerEngine> {
  if (await dockerReachable()) return { stop: async () => {} };
  const dockerd = existsSync('/usr/sbin/dockerd') ? '/usr/sbin/dockerd' : '/usr/bin/dockerd';
  const logPath = join(tmpdir(), `nbd-vault-test-dockerd-${process.pid}.log`);
  const log = openSync(logPath, 'a');
  // Its own session: dockerd outlives nothing of ours by accident, and we stop it by pid.
  const child = spawn(dockerd, [], { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  child.unref();
  const up = await waitFor(dockerReachable, 60_000, 500);
  if (!up) {
    if (child.pid) await killAndWait(child.pid, 20_000);
    throw new Error(`dockerd did not come up in 60 s; its log:\n${readFileSync(logPath, 'utf8').slice(-4000)}`);
  }
  return {
    stop: async () => {
      const pid = child.pid ?? Number(readFileSync(DOCKERD_PID_FILE, 'utf8'));
      // dockerd stops its containers and shims first: give it time before SIGKILL.
      if (pid && !(await killAndWait(pid, 30_000))) console.error(`dockerd (pid ${pid}) did not stop`);
    },
  };
}

/** `docker ARGS…`, bounded in time; rejects with the command and its stderr. */
export function docker(args: string[], timeoutMs = 120_000) {
  return runCommand('docker', args, { timeoutMs });
}
