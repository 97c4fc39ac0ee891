// Incremental backup reads over standard NBD, with real clients against `nbd-vault serve`:
// qemu:dirty-bitmap:S1 on VOL@S2 and on the live VOL (nbdinfo --map, nbdinfo --list --json,
// qemu-img map with x-dirty-bitmap, python3-libnbd with two contexts at once), `nbd-vault diff`
// agreeing with them, an incremental restore that copies only the dirty extents, allocation
// depth on a clone, and refusals (unknown names, another volume's snapshot, no structured
// replies) after which the connection goes on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileSha256, runCommand } from '../helpers/fuse-disk';
import { makeTestVault } from '../helpers/vault-server';
import { SYSTEM_PYTHON, REPO_ROOT } from '../helpers/nbd-server';
import { Wire, greet, go, option, readOptionReply } from '../nbd/raw-client';

const M = 2 ** 20;
const CHUNK = 4 * M;
const NBD_REP_META_CONTEXT = 4;
const NBD_REP_ERR_INVALID = 0x80000003;

/** Chunk indexes with the given flag in `nbdinfo --map --json` output. */
function chunksOf(map: Array<{ offset: number; length: number; type: number }>, type: number): number[] {
  const out: number[] = [];
  for (const e of map) if (e.type === type) for (let i = e.offset / CHUNK; i < (e.offset + e.length) / CHUNK; i++) out.push(i);
  return out;
}

function metaPayload(exportName: string, queries: string[]): Buffer {
  const parts = [Buffer.alloc(4), Buffer.from(exportName), Buffer.alloc(4)];
  parts[0].writeUInt32BE(parts[1].length);
  parts[2].writeUInt32BE(queries.length);
  for (const q of queries) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(Buffer.byteLength(q));
    parts.push(len, Buffer.from(q));
  }
  return Buffer.concat(parts);
}

test('qemu:dirty-bitmap and allocation-depth contexts through nbdinfo, qemu-img, libnbd; incremental restore from dirty extents', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vm', '--size', '64M');
  await v.cli('volume', 'create', 'other', '--size', '8M');
  const srv = await v.serve();
  t.after(() => srv.kill());
  const io = (uri: string, ...cmds: string[]) => runCommand('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri], { timeoutMs: 60_000 });
  const vm = srv.uri('vm');

  // S1: chunks 0-1, 4, 8, 12, 15 hold data
  await io(vm, 'write -P 0x11 0 8M', 'write -P 0x22 16M 4M', 'write -P 0x33 32M 4M', 'write -P 0x44 48M 4M', 'write -P 0x55 60M 4M', 'flush');
  await v.cli('snapshot', 'vm', 's1');
  await io(srv.uri('other'), 'write -P 0x66 0 4M', 'flush');
  await v.cli('snapshot', 'other', 'x');
  // between S1 and S2: rewrite part of chunk 1, write chunk 5 (new), trim chunk 8, zero chunk 12,
  // write zeros over a zero chunk (10: no change), rewrite chunk 15 with the same bytes
  await io(vm, 'write -P 0x77 5M 64k', 'write -P 0x88 20M 4M', 'discard 32M 4M', 'write -z 48M 4M', 'write -z 40M 4M', 'write -P 0x55 60M 4M', 'flush');
  await v.cli('snapshot', 'vm', 's2');
  const dirty = [1, 5, 8, 12, 15];
  // after S2, on the live volume only: chunk 3, never flushed (nbdsh disconnects without FLUSH)
  await runCommand('nbdsh', ['-u', vm, '-c', `h.pwrite(b'\\x99' * 4096, ${12 * M})`]);

  // nbdinfo --list --json: the contexts each export offers
  const list = JSON.parse((await runCommand('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${srv.port}`])).stdout);
  const contextsOf = (name: string) => list.exports.find((e: any) => e['export-name'] === name)?.contexts;
  assert.deepEqual(contextsOf('vm'), ['base:allocation', 'qemu:allocation-depth', 'qemu:dirty-bitmap:s1', 'qemu:dirty-bitmap:s2']);
  assert.deepEqual(contextsOf('vm@s2'), ['base:allocation', 'qemu:allocation-depth', 'qemu:dirty-bitmap:s1']);
  assert.deepEqual(contextsOf('vm@s1'), ['base:allocation', 'qemu:allocation-depth']);

  // nbdinfo --map on VOL@S2, and `nbd-vault diff --format nbdinfo` gives the very same map
  const map = JSON.parse((await runCommand('nbdinfo', ['--json', '--map=qemu:dirty-bitmap:s1', srv.uri('vm@s2')])).stdout);
  assert.deepEqual(chunksOf(map, 1), dirty, 'dirty chunks on vm@s2');
  assert.equal(map.reduce((n: number, e: any) => n + e.length, 0), 64 * M);
  assert.ok(map.every((e: any) => e.type === 0 || e.type === 1));
  const diff = JSON.parse((await v.cli('diff', 'vm@s1', 'vm@s2', '--format', 'nbdinfo')).stdout);
  assert.deepEqual(diff, map.map((e: any) => ({ offset: e.offset, length: e.length, type: e.type, description: e.description })), 'diff = the context');
  const diffJson = JSON.parse((await v.cli('diff', 'vm@s1', 'vm@s2', '--json')).stdout);
  assert.equal(diffJson.changedBytes, dirty.length * CHUNK);

  // the live volume: changed since s1 includes the unflushed write to chunk 3
  const liveMap = JSON.parse((await runCommand('nbdinfo', ['--json', '--map=qemu:dirty-bitmap:s1', vm])).stdout);
  assert.deepEqual(chunksOf(liveMap, 1), [1, 3, 5, 8, 12, 15]);
  const since2 = JSON.parse((await runCommand('nbdinfo', ['--json', '--map=qemu:dirty-bitmap:s2', vm])).stdout);
  assert.deepEqual(chunksOf(since2, 1), [3]);

  // qemu-img map with x-dirty-bitmap (qemu reads the bitmap as base:allocation: dirty = data false)
  const opts = `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${srv.port},export=vm@s2,x-dirty-bitmap=qemu:dirty-bitmap:s1`;
  const qmap = JSON.parse((await runCommand('qemu-img', ['map', '--output=json', '--image-opts', opts])).stdout);
  const qdirty: number[] = [];
  for (const e of qmap) if (!e.data) for (let i = e.start / CHUNK; i < (e.start + e.length) / CHUNK; i++) qdirty.push(i);
  assert.deepEqual(qdirty, dirty, 'qemu-img map sees the same dirty chunks');

  // python3-libnbd: LIST queries, two contexts at once, REQ_ONE, refusals
  const py = await runCommand(SYSTEM_PYTHON, [join(REPO_ROOT, 'test/e2e/py/dirty_contexts.py'), String(srv.port), 'vm', 's1', 's2', 'other@x', dirty.join(',')], { timeoutMs: 120_000, okCodes: [0, 1] });
  assert.equal(py.code, 0, `dirty_contexts.py failed:\n${py.stdout}\n${py.stderr}`);
  assert.match(py.stdout, /^PASS \d+ checks/m);

  // incremental restore: s1 in full, then only the dirty extents of s2 (contrib/nbd-apply-changes.py)
  const restore = join(v.dir, 'restore.img');
  await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('vm@s1'), restore], { timeoutMs: 60_000 });
  const s1sha = await fileSha256(restore);
  const apply = await runCommand(SYSTEM_PYTHON, [join(REPO_ROOT, 'contrib/nbd-apply-changes.py'), srv.uri('vm@s2'), 's1', restore], { timeoutMs: 120_000 });
  assert.match(apply.stdout, new RegExp(`copied ${dirty.length * CHUNK} of ${64 * M} bytes in ${dirty.length} dirty extents`));
  await runCommand('nbdcopy', [srv.uri('vm@s2'), join(v.dir, 's2.img')], { timeoutMs: 60_000 });
  const s2sha = await fileSha256(join(v.dir, 's2.img'));
  assert.notEqual(s1sha, s2sha, 'the two snapshots differ (the comparison can fail)');
  assert.equal(await fileSha256(restore), s2sha, 's1 restore + dirty extents of s2 = s2');
  const wrongBase = await runCommand(SYSTEM_PYTHON, [join(REPO_ROOT, 'contrib/nbd-apply-changes.py'), srv.uri('vm@s1'), 's2', restore], { okCodes: [1] });
  assert.match(wrongBase.stderr, /offers no context qemu:dirty-bitmap:s2/);

  // unknown context: nbdinfo says the server does not offer it
  const unknown = await runCommand('nbdinfo', ['--map=qemu:dirty-bitmap:x', srv.uri('vm@s2')], { okCodes: [1] });
  assert.match(unknown.stderr, /does not support metadata context/);

  // raw: META_CONTEXT before STRUCTURED_REPLY is ERR_INVALID and the session continues; SET with
  // an unknown name and another volume's snapshot selects only what exists
  const w = new Wire(srv.port);
  t.after(() => w.destroy());
  await greet(w);
  await w.write(option(9, metaPayload('vm@s2', ['qemu:dirty-bitmap:s1'])));
  assert.equal((await readOptionReply(w)).type, NBD_REP_ERR_INVALID);
  await w.write(option(8));
  assert.equal((await readOptionReply(w)).type, 1);
  await w.write(option(10, metaPayload('vm@s2', ['qemu:dirty-bitmap:nope', 'qemu:dirty-bitmap:other@x', 'qemu:dirty-bitmap:s1', 'base:allocation'])));
  const replies: Array<{ type: number; data: Buffer }> = [];
  for (let r = await readOptionReply(w); r.type !== 1; r = await readOptionReply(w)) replies.push(r);
  assert.deepEqual(
    replies.map((r) => [r.type, r.data.readUInt32BE(0), r.data.toString('utf8', 4)]),
    [
      [NBD_REP_META_CONTEXT, 1, 'base:allocation'],
      [NBD_REP_META_CONTEXT, 2, 'qemu:dirty-bitmap:s1'],
    ],
  );
  assert.equal(await go(w, 'vm@s2'), 64 * M);

  // a clone of vm@s2: allocation depth 2 where it shares the origin's chunks, 1 where it wrote
  await v.cli('clone', 'vm@s2', 'vm-clone');
  await io(srv.uri('vm-clone'), 'write -P 0xaa 0 4k', 'flush');
  const depth = JSON.parse((await runCommand('nbdinfo', ['--json', '--map=qemu:allocation-depth', srv.uri('vm-clone')])).stdout);
  assert.deepEqual(chunksOf(depth, 1), [0]);
  assert.deepEqual(chunksOf(depth, 2), [1, 4, 5, 15]);
  const cloneDirty = JSON.parse((await runCommand('nbdinfo', ['--json', '--map=qemu:dirty-bitmap:vm@s2', srv.uri('vm-clone')])).stdout);
  assert.deepEqual(chunksOf(cloneDirty, 1), [0], 'a clone: changed since its origin snapshot');
  // diff says the same for the clone and for a snapshot of it; another volume's snapshot is refused
  assert.deepEqual(JSON.parse((await v.cli('diff', 'vm@s2', 'vm-clone', '--format', 'nbdinfo')).stdout), cloneDirty.map((e: Record<string, unknown>) => ({ offset: e.offset, length: e.length, type: e.type, description: e.description })));
  await v.cli('snapshot', 'vm-clone', 'c1');
  assert.deepEqual(JSON.parse((await v.cli('diff', 'vm@s2', 'vm-clone@c1', '--json')).stdout).ranges, [{ offset: 0, length: 4 * M }]);
  const refused = await v.cliResult('diff', 'vm@s1', 'vm-clone');
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /vm-clone is no clone of vm@s1/);
  assert.equal(await srv.stop(), 0);
});

test('nbd-apply-changes.py across resizes (grown, then shrunk) restores each snapshot exactly; a missing image is a message, not a traceback', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const { randomBytes } = await import('node:crypto');
  const { writeFileSync } = await import('node:fs');
  await v.cli('volume', 'create', 'b', '--size', `${10 * M + 512}`);
  const img = (size: number) => {
    const b = randomBytes(size);
    b.fill(0, 2 * M, 5 * M); // some zeros
    return b;
  };
  writeFileSync(join(v.dir, 'r1.img'), img(10 * M + 512));
  await v.cli('import', join(v.dir, 'r1.img'), 'b');
  await v.cli('snapshot', 'create', 'b', 'r1');
  await v.cli('volume', 'resize', 'b', '--size', '20M');
  writeFileSync(join(v.dir, 'r2.img'), img(20 * M));
  await v.cli('import', join(v.dir, 'r2.img'), 'b');
  await v.cli('snapshot', 'create', 'b', 'r2');
  await v.cli('volume', 'resize', 'b', '--size', `${7 * M + 4096}`, '--force');
  await v.cli('snapshot', 'create', 'b', 'r3');
  // a clone of b@r1, grown and written: its base is its origin snapshot, named ORIGIN@SNAP
  await v.cli('clone', 'b@r1', 'bc');
  await v.cli('volume', 'resize', 'bc', '--size', '24M');
  writeFileSync(join(v.dir, 'c1.img'), img(24 * M));
  await v.cli('import', join(v.dir, 'c1.img'), 'bc');
  await v.cli('snapshot', 'create', 'bc', 'q1');
  const srv = await v.serve();
  t.after(() => srv.kill());
  const restore = join(v.dir, 'restore.img');
  await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('b@r1'), restore], { timeoutMs: 60_000 });
  for (const [snap, base] of [['r2', 'r1'], ['r3', 'r2']]) {
    const apply = await runCommand(SYSTEM_PYTHON, [join(REPO_ROOT, 'contrib/nbd-apply-changes.py'), srv.uri(`b@${snap}`), base, restore], { timeoutMs: 120_000 });
    assert.match(apply.stdout, new RegExp(`resized from \\d+ to \\d+ bytes, as the volume was between ${base} and the export`));
    await runCommand('nbdcopy', [srv.uri(`b@${snap}`), join(v.dir, `${snap}.out`)], { timeoutMs: 60_000 });
    assert.equal(await fileSha256(restore), await fileSha256(join(v.dir, `${snap}.out`)), `restore + dirty extents = b@${snap}`);
  }
  await runCommand('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', srv.uri('b@r1'), restore], { timeoutMs: 60_000 });
  const fromOrigin = await runCommand(SYSTEM_PYTHON, [join(REPO_ROOT, 'contrib/nbd-apply-changes.py'), srv.uri('bc@q1'), 'b@r1', restore], { timeoutMs: 120_000, okCodes: [0, 1] });
  assert.equal(fromOrigin.code, 0, fromOrigin.stderr); // (it asked for the export "bc@b@r1")
  assert.equal(await fileSha256(restore), await fileSha256(join(v.dir, 'c1.img')), 'b@r1 + dirty extents of bc@q1 = bc@q1');
  // an image that is neither the base nor the export's size: refused, left alone
  const wrong = join(v.dir, 'wrong.img');
  writeFileSync(wrong, Buffer.alloc(3 * M));
  const refused = await runCommand(SYSTEM_PYTHON, [join(REPO_ROOT, 'contrib/nbd-apply-changes.py'), srv.uri('b@r2'), 'r1', wrong], { okCodes: [1] });
  assert.match(refused.stderr, /wrong\.img is 3145728 bytes, but r1 is 10486272 and the export 20971520: restore the base snapshot first/);
  const missing = await runCommand(SYSTEM_PYTHON, [join(REPO_ROOT, 'contrib/nbd-apply-changes.py'), srv.uri('b@r2'), 'r1', join(v.dir, 'nope.img')], { okCodes: [1] });
  assert.match(missing.stderr, /^nbd-apply-changes: \[Errno 2\] No such file or directory/m);
  assert.doesNotMatch(missing.stderr, /Traceback/);
});
