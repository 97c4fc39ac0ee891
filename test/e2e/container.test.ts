// The container image for real: the project's Dockerfile is built with Docker, the image serves a
// vault over NBD to qemu-img on the host, data written through it reads back, and a new container
// on the same volumes (after a graceful stop) serves the same data with the same key.
// No image registry is reachable in CI: scripts/make-node-image.sh makes the base image from
// Debian's mirror and the npm registry, and the build picks it with --build-arg NODE_IMAGE.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { freeLoopbackPort, runCommand, waitFor } from '../helpers/fuse-disk';
import { docker, dockerUnavailableReason, startDockerEngine } from '../helpers/docker';
import { REPO } from '../helpers/vault-server';

const BASE_IMAGE = 'nbd-vault-test/node:24-bookworm-slim';
const IMAGE = 'nbd-vault-test/nbd-vault:latest';
/** the port the image's own command listens on (Dockerfile CMD) */
const DEFAULT_PORT = 10809;

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '0.0.0.0', () => probe.close(() => resolve(true)));
  });
}

test('the Dockerfile builds; its container serves qemu-img over NBD and keeps the data across a restart', async (t) => {
  const unavailable = await dockerUnavailableReason();
  if (unavailable) {
    if (process.env.NBD_VAULT_REQUIRE_ALL === '1') assert.fail(unavailable);
    return t.skip(unavailable);
  }
  // One after-hook, last in first out: the containers and volumes go before the engine does.
  const cleanups: (() => Promise<void>)[] = [];
  t.after(async () => {
    for (const f of cleanups.reverse()) await f();
  });
  const engine = await startDockerEngine();
  cleanups.push(() => engine.stop());
  const timings: Record<string, number> = {};
  const timed = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
    const started = Date.now();
    try {
      return await f();
    } finally {
      timings[what] = Math.round((Date.now() - started) / 100) / 10;
    }
  };

  await timed('base image', () => runCommand('bash', [join(REPO, 'scripts/make-node-image.sh'), BASE_IMAGE], { timeoutMs: 900_000 }));
  await timed('docker build', () =>
    runCommand('docker', ['build', '--quiet', '--network', 'host', '--build-arg', `NODE_IMAGE=${BASE_IMAGE}`, '-t', IMAGE, REPO], { timeoutMs: 1_200_000 }),
  );

  const id = randomBytes(4).toString('hex');
  const volumes = ['keys', 'data', 'state'].map((v) => `nbd-vault-test-${id}-${v}:/${v}`);
  const containers: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'nbd-vault-container-'));
  cleanups.push(async () => {
    for (const c of containers) await docker(['rm', '-f', c]).catch((err) => console.error(err.message));
    await docker(['volume', 'rm', ...volumes.map((v) => v.split(':')[0])]).catch((err) => console.error(err.message));
    rmSync(dir, { recursive: true, force: true });
  });
  const port = await freeLoopbackPort();
  const uri = `nbd://127.0.0.1:${port}/default`;

  /** Starts a container on the test's volumes, waits until it listens; returns its name. */
  const serve = async (n: number): Promise<string> => {
    const name = `nbd-vault-test-${id}-${n}`;
    containers.push(name);
    const vflags = volumes.flatMap((v) => ['-v', v]);
    await docker(['run', '-d', '--init', '--network', 'host', '--name', name, ...vflags, IMAGE, 'serve', '--listen', `127.0.0.1:${port}`]);
    let logs = '';
    const listening = await waitFor(
      async () => {
        const r = await docker(['logs', name]);
        logs = r.stdout + r.stderr;
        if (/"msg":"listening"/.test(logs)) return true;
        const state = (await docker(['inspect', '-f', '{{.State.Status}}', name])).stdout.trim();
        if (state !== 'running') throw new Error(`container ${name} is ${state}:\n${logs}`);
        return false;
      },
      90_000,
      250,
    );
    assert.ok(listening, `container ${name} did not listen in 90 s:\n${logs}`);
    return name;
  };
  const stop = async (name: string): Promise<string> => {
    await docker(['stop', '-t', '60', name], 90_000);
    const exitCode = (await docker(['inspect', '-f', '{{.State.ExitCode}}', name])).stdout.trim();
    const r = await docker(['logs', name]);
    assert.equal(exitCode, '0', `container ${name} exited ${exitCode}:\n${r.stderr}`);
    assert.match(r.stderr, /"msg":"stopped"/, 'a graceful stop (SIGTERM through --init) flushes and logs "stopped"');
    return r.stdout + r.stderr;
  };
  const readBack = async (file: string) => {
    await runCommand('qemu-img', ['dd', '-f', 'raw', '-O', 'raw', 'bs=1M', 'count=6', `if=${uri}`, `of=${file}`], { timeoutMs: 120_000 });
    return readFileSync(file);
  };

  const first = await timed('first run', async () => {
    const c1 = await serve(1);
    const info = JSON.parse((await runCommand('qemu-img', ['info', '--output=json', uri])).stdout);
    assert.equal(info['virtual-size'], 10 * 2 ** 30, 'a first run creates the 10 GiB volume "default"');
    assert.equal((await docker(['exec', c1, 'id', '-u'])).stdout.trim(), '1000', 'the server runs as the unprivileged user node');
    // 6 MiB of random bytes from offset 0: a whole 4 MiB chunk and part of the next one
    const data = randomBytes(6 * 2 ** 20);
    writeFileSync(join(dir, 'data.bin'), data);
    await runCommand('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', join(dir, 'data.bin'), uri], { timeoutMs: 120_000 });
    assert.ok((await readBack(join(dir, 'back1.bin'))).equals(data), 'read back through the same container');
    const logs = await stop(c1);
    assert.match(logs, /created a new master key/);
    return data;
  });

  await timed('restart', async () => {
    const c2 = await serve(2);
    assert.ok((await readBack(join(dir, 'back2.bin'))).equals(first), 'a new container on the same volumes serves the same data');
    const logs = await stop(c2);
    assert.doesNotMatch(logs, /created a new (master key|vault)/, 'the restart opened the kept key and vault');
  });
  // The image's own command (the README's `docker run`): it listens on every address, so without
  // TLS it refuses to start and says how to go on; with NBD_VAULT_INSECURE_NO_TLS=1 it serves.
  await timed('default command', async () => {
    const vflags = volumes.flatMap((v) => ['-v', v]);
    const refused = await docker(['run', '--rm', '--init', '--network', 'host', ...vflags, IMAGE]).then(
      () => null,
      (err: Error) => err.message,
    );
    assert.ok(refused !== null, 'the default command without TLS must not serve');
    assert.match(refused, /--insecure-no-tls/, refused);
    if (!(await portFree(DEFAULT_PORT))) {
      console.log(`port ${DEFAULT_PORT} is taken on this host: the default command was not run to serve`);
      return;
    }
    const name = `nbd-vault-test-${id}-default`;
    containers.push(name);
    await docker(['run', '-d', '--init', '--network', 'host', '--name', name, '-e', 'NBD_VAULT_INSECURE_NO_TLS=1', ...vflags, IMAGE]);
    const defaultUri = `nbd://127.0.0.1:${DEFAULT_PORT}/default`;
    const up = await waitFor(async () => (await runCommand('qemu-img', ['info', defaultUri]).then(() => true, () => false)), 90_000, 500);
    assert.ok(up, `the default command did not serve in 90 s:\n${(await docker(['logs', name])).stderr}`);
    await runCommand('qemu-img', ['dd', '-f', 'raw', '-O', 'raw', 'bs=1M', 'count=6', `if=${defaultUri}`, `of=${join(dir, 'back3.bin')}`], { timeoutMs: 120_000 });
    assert.ok(readFileSync(join(dir, 'back3.bin')).equals(first), 'the default command serves the same data');
    const logs = await stop(name);
    assert.match(logs, /serving WITHOUT TLS on a non-loopback address/);
  });
  console.log(`container test timings (s): ${JSON.stringify(timings)}`);
});
