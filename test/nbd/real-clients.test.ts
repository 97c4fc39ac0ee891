// Real NBD clients against `nbd-vault serve --memory`: qemu-img, qemu-io (pattern writes and
// verified reads, aligned/unaligned/across 4 MiB boundaries), nbdinfo --list/--map, nbdcopy of a
// 256 MiB random file in and out with a byte compare, and fio's nbd engine with verify.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, openSync, writeSync, closeSync, readFileSync } from 'node:fs';
import { randomFillSync, createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTool, startNbdServerProcess, type NbdServerProcess } from '../helpers/nbd-server';

const MIB = 1024 * 1024;
let srv: NbdServerProcess;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'nbd-clients-'));
  srv = await startNbdServerProcess({ memory: ['disk=512M', 'copy=256M', 'fio=64M', 'small=1M:ro'] });
});
after(async () => {
  assert.equal(await srv.stop(), 0, 'graceful exit');
  rmSync(dir, { recursive: true, force: true });
});

async function ok(cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const r = await runTool(cmd, args, { timeoutMs });
  assert.equal(r.code, 0, `${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('qemu-img info reports the size', async () => {
  const out = await ok('qemu-img', ['info', '--output=json', srv.uri('disk')]);
  assert.equal(JSON.parse(out)['virtual-size'], 512 * MIB);
  const ro = await ok('qemu-img', ['info', '--output=json', srv.uri('small')]);
  assert.equal(JSON.parse(ro)['virtual-size'], MIB);
});

test('qemu-io pattern writes and verified reads (aligned, unaligned, across 4 MiB)', async () => {
  const cmds = [
    'write -P 0x11 0 64k',
    'write -P 0x22 4095k 2M', // across the 4 MiB boundary, 1 KiB aligned
    'write -P 0x33 8388605 1000', // unaligned, across 8 MiB
    'write -P 0x44 12582911 4194306', // unaligned, spans two boundaries
    'write -z 12m 4k', // write zeroes
    'discard 20m 1m',
  ];
  const verify = [
    'read -P 0x11 0 64k',
    'read -P 0x22 4095k 2M',
    'read -P 0x33 8388605 1000',
    'read -P 0 8388604 1', // untouched neighbour byte
    'read -P 0x44 12582911 1',
    'read -P 0 12m 4k',
    'read -P 0x44 12587008 4190209',
    'read -P 0 20m 1m',
  ];
  const out = await ok('qemu-io', ['-f', 'raw', ...[...cmds, ...verify].flatMap((c) => ['-c', c]), srv.uri('disk')]);
  assert.doesNotMatch(out, /Pattern verification failed|error/i, out);
  // A verification that must fail proves the check can fail.
  const bad = await runTool('qemu-io', ['-f', 'raw', '-c', 'read -P 0x55 0 4k', srv.uri('disk')]);
  assert.match(bad.stdout + bad.stderr, /Pattern verification failed/);
});

test('nbdinfo --list and --map', async () => {
  const list = await ok('nbdinfo', ['--list', '--json', srv.uri('')]);
  const names = JSON.parse(list).exports.map((e: { 'export-name': string }) => e['export-name']).sort();
  assert.deepEqual(names, ['copy', 'disk', 'fio', 'small']);
  await ok('qemu-io', ['-f', 'raw', '-c', 'write -P 1 1m 128k', '-c', 'discard 0 1m', srv.uri('disk')]);
  const map = JSON.parse(await ok('nbdinfo', ['--map', '--json', srv.uri('disk')]));
  assert.deepEqual(map.slice(0, 2), [
    { offset: 0, length: MIB, type: 3, description: 'hole,zero' },
    { offset: MIB, length: 128 * 1024, type: 0, description: 'data' },
  ]);
});

test('nbdcopy 256 MiB random file in and out, byte compare', async () => {
  const src = join(dir, 'src.img');
  const back = join(dir, 'back.img');
  const fd = openSync(src, 'w');
  const block = Buffer.alloc(16 * MIB);
  for (let i = 0; i < 16; i++) writeSync(fd, randomFillSync(block));
  closeSync(fd);
  await ok('nbdcopy', [src, srv.uri('copy')]);
  await ok('nbdcopy', [srv.uri('copy'), back]);
  const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
  assert.equal(sha(back), sha(src));
});

test('fio nbd engine: random write with verify', async () => {
  const out = await ok('fio', [
    '--name=verify', '--ioengine=nbd', `--uri=${srv.uri('fio')}`, '--rw=randwrite', '--bs=4k', '--bsrange=512-64k',
    '--iodepth=16', '--size=64M', '--io_size=32M', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--verify_state_save=0', '--output-format=json',
  ], 180_000);
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  assert.equal(job.error, 0);
  assert.ok(job.write.io_bytes >= 32 * MIB, `wrote ${job.write.io_bytes}`);
  assert.ok(job.read.io_bytes > 0, 'verify read back');
});
