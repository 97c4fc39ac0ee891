// Push mode: qemu backs up a disk that is NOT on nbd-vault into a vault volume, with
// contrib/qemu-push-backup.py over QMP — a full blockdev-backup with a persistent dirty bitmap
// started in the same transaction (snapshot b1), then two incrementals of only the dirty clusters
// (b2, b3). nbd-vault restarts between the backups, and qemu stops after each one (the bitmap
// lives in the qcow2 image). Restores of every backup equal the source disk at that point.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileSha256, runCommand } from '../helpers/fuse-disk';
import { CLI, makeTestVault } from '../helpers/vault-server';
import { SYSTEM_PYTHON, REPO_ROOT } from '../helpers/nbd-server';
import { reapOnExit } from '../helpers/child-reaper';

const M = 2 ** 20;
const SCRIPT = join(REPO_ROOT, 'contrib/qemu-push-backup.py');

/** qemu-system-x86_64 with no guest at all: a block node and a QMP socket. */
let starts = 0;

async function startQemu(dir: string, image: string): Promise<{ socket: string; hmp(cmd: string): Promise<string>; quit(): Promise<void> }> {
  // two monitors: one for the test (the guest's writes, quit), one for the backup script
  // (a QMP socket serves one client at a time)
  const sock = join(dir, `qmp-${++starts}.sock`);
  const scriptSock = join(dir, `qmp-${starts}-backup.sock`);
  const child = spawn('qemu-system-x86_64', ['-nodefaults', '-machine', 'none', '-display', 'none', '-qmp', `unix:${sock},server=on,wait=off`, '-qmp', `unix:${scriptSock},server=on,wait=off`, '-blockdev', `driver=file,node-name=file0,filename=${image}`, '-blockdev', 'driver=qcow2,node-name=drive0,file=file0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  reapOnExit(child);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  // The socket file appears at bind(), a moment before qemu listens: connect until it answers.
  const deadline = Date.now() + 30_000;
  let conn: net.Socket | null = null;
  while (!conn) {
    if (child.exitCode !== null) throw new Error(`qemu exited: ${log}`);
    if (Date.now() > deadline) throw new Error(`qemu QMP socket did not answer: ${log}`);
    if (existsSync(sock) && existsSync(scriptSock)) {
      conn = await new Promise<net.Socket | null>((resolve) => {
        const c = net.connect(sock);
        c.once('connect', () => resolve(c));
        c.once('error', () => resolve(null));
      });
    }
    if (!conn) await new Promise((r) => setTimeout(r, 50));
  }
  let buf = '';
  const waiting: Array<(msg: any) => void> = [];
  conn.on('data', (d) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const msg = JSON.parse(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      if (!('event' in msg) && !('QMP' in msg)) waiting.shift()?.(msg);
    }
  });
  // qemu gone: every waiting command fails instead of hanging
  conn.on('close', () => waiting.splice(0).forEach((w) => w({ error: { desc: 'QMP connection closed' } })));
  conn.on('error', () => {});
  const command = (execute: string, args?: object) =>
    new Promise<any>((resolve, reject) => {
      waiting.push((msg) => (msg.error ? reject(new Error(`${execute}: ${msg.error.desc}`)) : resolve(msg.return)));
      conn!.write(JSON.stringify({ execute, arguments: args }) + '\n');
    });
  await command('qmp_capabilities');
  return {
    socket: scriptSock,
    // the guest's writes, as qemu-io on the node (they reach the dirty bitmap like a guest's)
    hmp: async (cmd) => {
      const out: string = await command('human-monitor-command', { 'command-line': cmd });
      if (/error/i.test(out)) throw new Error(`${cmd}: ${out}`);
      return out;
    },
    quit: async () => {
      const keepAlive = setTimeout(() => {}, 60_000); // the reaper unrefs the child: hold the loop open
      await command('quit').catch(() => {}); // qemu may close before answering
      await exited;
      clearTimeout(keepAlive);
      conn!.destroy();
    },
  };
}

test('qemu push-mode backups: full + persistent bitmap, two incrementals across restarts, restores equal the source', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const src = join(v.dir, 'src.qcow2');
  await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', src, '64M']);
  await runCommand('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 10M', '-c', 'write -P 0x22 30M 3M', '-c', 'write -P 0x33 60M 4M', src]);
  await v.cli('volume', 'create', 'vm01', '--size', '64M');
  let srv = await v.serve();
  t.after(() => srv.kill());

  let qemu: Awaited<ReturnType<typeof startQemu>>;
  const backup = async (mode: '--full' | '--incremental', snap: string) => {
    const r = await runCommand(SYSTEM_PYTHON, [SCRIPT, '--qmp', qemu.socket, '--node', 'drive0', '--target', srv.uri('vm01'), mode, '--snapshot', snap, '--nbd-vault', `${process.execPath} ${CLI}`], { env: v.env, timeoutMs: 300_000, okCodes: [0, 1] });
    assert.equal(r.code, 0, `qemu-push-backup.py ${mode} failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, new RegExp(`created snapshot vm01@${snap}`));
    return Number(/backup of drive0 .*: (\d+) bytes/.exec(r.stdout)?.[1]);
  };
  const runQemu = () => startQemu(v.dir, src);
  const sourceSha = async (name: string) => {
    const raw = join(v.dir, `${name}.src.raw`);
    await runCommand('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', src, raw]);
    return fileSha256(raw);
  };

  // b1: full, the bitmap starts here
  qemu = await runQemu();
  const full = await backup('--full', 'b1');
  assert.equal(full, 64 * M);
  await qemu.hmp('qemu-io drive0 "write -P 0x44 5M 64k"'); // after the backup: recorded for b2
  await qemu.quit();
  const truth: Record<string, string> = {};

  // nbd-vault restarts; qemu restarts with the bitmap from the image
  assert.equal(await srv.stop(), 0);
  srv = await v.serve();
  qemu = await runQemu();
  await qemu.hmp('qemu-io drive0 "write -P 0x55 40M 8M"');
  await qemu.hmp('qemu-io drive0 "write -z 30M 1M"');
  const inc1 = await backup('--incremental', 'b2');
  assert.equal(inc1, 64 * 1024 + 8 * M + 1 * M, 'only the dirty clusters were copied');
  await qemu.quit();
  truth.b2 = await sourceSha('b2');

  qemu = await runQemu();
  await qemu.hmp('qemu-io drive0 "write -P 0x66 62M 128k"');
  const inc2 = await backup('--incremental', 'b3');
  assert.equal(inc2, 128 * 1024);
  await qemu.quit();
  truth.b3 = await sourceSha('b3');

  // b1's truth: the source as it was, i.e. b2's source without the writes made after b1
  const b1raw = join(v.dir, 'b1.src.raw');
  await runCommand('qemu-img', ['create', '-q', '-f', 'raw', b1raw, '64M']);
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 10M', '-c', 'write -P 0x22 30M 3M', '-c', 'write -P 0x33 60M 4M', b1raw]);
  truth.b1 = await fileSha256(b1raw);

  for (const snap of ['b1', 'b2', 'b3']) {
    const out = join(v.dir, `${snap}.restored.raw`);
    await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri(`vm01@${snap}`), out], { timeoutMs: 120_000 });
    assert.equal(await fileSha256(out), truth[snap], `restore of vm01@${snap} equals the source at that point`);
  }
  assert.notEqual(truth.b1, truth.b2);
  assert.notEqual(truth.b2, truth.b3);
  // the vault sees exactly the chunks qemu pushed: 4 MiB chunks 1 (5M), 7 (30M), 10-11 (40-48M); then 15
  const d12 = JSON.parse((await v.cli('diff', 'vm01@b1', 'vm01@b2', '--json')).stdout);
  assert.deepEqual(d12.ranges, [
    { offset: 4 * M, length: 4 * M },
    { offset: 28 * M, length: 4 * M },
    { offset: 40 * M, length: 8 * M },
  ]);
  const map = JSON.parse((await runCommand('nbdinfo', ['--json', '--map=qemu:dirty-bitmap:b2', srv.uri('vm01@b3')])).stdout);
  assert.deepEqual(map.filter((e: any) => e.type === 1).map((e: any) => [e.offset, e.length]), [[60 * M, 4 * M]]);
  assert.equal(await srv.stop(), 0);
});
