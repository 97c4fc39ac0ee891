// `nbd-vault export VOL` of a volume the local server is serving while a client writes: the CLI
// reads it through a temporary snapshot the server takes, so the file is one point in time that
// holds every write acknowledged before the export began (flushed or not), and the temporary
// snapshot is gone afterwards. A real client (python3-libnbd) writes; the checker replays its
// write sequence against the exported file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { runCommand } from '../helpers/fuse-disk';
import { CLI, makeTestVault } from '../helpers/vault-server';
import { adminRequest } from '../../src/cli/admin-socket';

const BLOCKS = 16384; // 64 MiB of 4 KiB blocks
// Write i (from 1) puts (i, offset) repeated over a 4 KiB block at a seeded random block, with no
// FLUSH; "wrote N" every 100 writes, until a line arrives on stdin; then "done N".
const WRITER = `
import nbd, sys, random, struct, select
h = nbd.NBD()
h.connect_uri(sys.argv[1])
rng = random.Random(7)
i = 0
while True:
    i += 1
    off = rng.randrange(${BLOCKS}) * 4096
    h.pwrite(struct.pack('<QQ', i, off) * 256, off)
    if i % 100 == 0:
        print("wrote", i, flush=True)
        if select.select([sys.stdin], [], [], 0)[0]:
            break
print("done", i, flush=True)
h.shutdown()
`;
// Reads the file: every block must be zeros or one whole stamp at its own offset; S = the newest
// write found; each block must hold exactly the last of writes 1..S to it. Prints "S <n>".
const CHECKER = `
import sys, random, struct
data = open(sys.argv[1], 'rb').read()
total = int(sys.argv[2])
assert len(data) == ${BLOCKS} * 4096, len(data)
found = []
for b in range(${BLOCKS}):
    blk = data[b * 4096:(b + 1) * 4096]
    if blk == bytes(4096):
        found.append(0); continue
    seq, off = struct.unpack('<QQ', blk[:16])
    if blk != blk[:16] * 256 or off != b * 4096 or not 1 <= seq <= total:
        print("TORN block", b, seq, off); sys.exit(1)
    found.append(seq)
S = max(found)
rng = random.Random(7)
want = [0] * ${BLOCKS}
for i in range(1, S + 1):
    want[rng.randrange(${BLOCKS})] = i
bad = [b for b in range(${BLOCKS}) if want[b] != found[b]]
if bad:
    print("NOT ONE POINT IN TIME: newest write", S, "but block", bad[0], "holds", found[bad[0]], "not", want[bad[0]], "(", len(bad), "blocks)"); sys.exit(1)
print("S", S)
`;

test('export of a served volume under writes: one point in time, with every acknowledged write, through a temporary snapshot', { timeout: 300_000 }, async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vm', '--size', '64M');
  // at rest: read from its root, no snapshot
  const rest = await v.cli('export', 'vm', join(v.dir, 'rest.img'));
  assert.doesNotMatch(rest.stdout, /temporary/);

  const srv = await v.serve();
  t.after(() => srv.kill());
  const writer = spawn('/usr/bin/python3', ['-c', WRITER, srv.uri('vm')], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.after(() => {
    if (writer.exitCode === null) writer.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  writer.stdout.on('data', (d) => (out += d));
  writer.stderr.on('data', (d) => (err += d));
  const writerExit = new Promise<number | null>((r) => writer.once('exit', (c) => r(c)));
  const written = () => Math.max(0, ...[...out.matchAll(/wrote (\d+)\n/g)].map((m) => Number(m[1])));
  const end = Date.now() + 120_000;
  while (written() < 3000) {
    if (writer.exitCode !== null || Date.now() > end) throw new Error(`writer: ${out}${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }

  const before = written(); // acknowledged before the export began
  const file = join(v.dir, 'live.img');
  const exp = await v.cli('export', 'vm', file);
  assert.match(exp.stdout, /exported vm \(64 MiB\) to .* through the temporary snapshot vm@export-\S+ taken by the running server/);
  const duringExport = written();
  writer.stdin.end('stop\n');
  assert.equal(await writerExit, 0, out + err);
  const total = Number(/done (\d+)/.exec(out)![1]);
  assert.ok(duringExport > before, `the client kept writing during the export (${before} → ${duringExport})`);

  const check = await runCommand('/usr/bin/python3', ['-c', CHECKER, file, String(total)], { okCodes: [0, 1], timeoutMs: 120_000 });
  assert.equal(check.code, 0, check.stdout + check.stderr);
  const newest = Number(/S (\d+)/.exec(check.stdout)![1]);
  assert.ok(newest >= before, `the export holds the ${before} writes acknowledged before it began (newest found: ${newest})`);
  assert.ok(newest < total, `and not the writes after it (newest found ${newest} of ${total})`);

  const snaps = JSON.parse((await v.cli('snapshot', 'list', 'vm', '--json')).stdout);
  assert.deepEqual(snaps, [], 'the temporary snapshot is deleted');

  // Ctrl-C mid-export (to a pipe nobody reads: it stalls there) deletes the temporary snapshot too
  const stalled = spawn(process.execPath, [CLI, 'export', 'vm', '-'], { env: v.env, cwd: v.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (stalled.exitCode === null) stalled.kill('SIGKILL');
  });
  let stalledErr = '';
  stalled.stderr.on('data', (d) => (stalledErr += d));
  const stalledExit = new Promise<number | null>((r) => stalled.once('exit', (c) => r(c)));
  const listed = async () => JSON.parse((await v.cli('snapshot', 'list', 'vm', '--json')).stdout) as Array<{ name: string; keep: boolean }>;
  const until = Date.now() + 60_000;
  let during: Array<{ name: string; keep: boolean }> = [];
  while ((during = await listed()).length === 0) {
    assert.ok(stalled.exitCode === null && Date.now() < until, `the export takes its snapshot: ${stalledErr}`);
  }
  assert.match(during[0].name, /^export-/);
  assert.equal(during[0].keep, true, 'kept from retention prunes while the export reads it');
  stalled.kill('SIGINT');
  assert.equal(await stalledExit, 130, stalledErr);
  assert.match(stalledErr, /interrupted: deleting the temporary snapshot vm@export-/);
  assert.deepEqual(await listed(), [], 'the interrupted export deleted its snapshot');

  // SIGKILL mid-export leaves its snapshot (kept, so retention never prunes it): the next export
  // on this machine sees that its process is gone and deletes it
  const killed = spawn(process.execPath, [CLI, 'export', 'vm', '-'], { env: v.env, cwd: v.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (killed.exitCode === null) killed.kill('SIGKILL');
  });
  const killedExit = new Promise<unknown>((r) => killed.once('exit', r));
  const until2 = Date.now() + 60_000;
  let left: Array<{ name: string; keep: boolean }> = [];
  while ((left = await listed()).length === 0) assert.ok(killed.exitCode === null && Date.now() < until2, 'the export takes its snapshot');
  killed.kill('SIGKILL');
  await killedExit;
  assert.deepEqual(await listed(), left, 'a killed export cannot delete its snapshot');
  assert.match(left[0].name, new RegExp(`^export-\\S+-[0-9a-f]{8}-${killed.pid}$`), 'the name says which machine and process read it');
  // another machine's (or a running process's) temporary snapshot is not touched (made as an
  // export makes one, through the server: `snapshot create` refuses names of that form)
  for (const name of ['export-2026-01-01T00-00-00Z-0badc0de-1', `export-2026-01-01T00-00-00Z-${/-([0-9a-f]{8})-\d+$/.exec(left[0].name)![1]}-${process.pid}`]) {
    assert.equal((await adminRequest(join(v.dir, 'state'), { op: 'snapshot', volume: 'vm', name, keep: true }))?.ok, true, name);
  }
  const next = await v.cli('export', 'vm', join(v.dir, 'after-kill.img'));
  const said = next.stderr.split('\n').find((l) => l.includes('deleted the temporary snapshot an export on this machine left when it was killed'));
  assert.ok(said?.includes(left[0].name), `the export says what it deleted: ${next.stderr}`);
  assert.deepEqual(
    (await listed()).map((x) => x.name).sort(),
    ['export-2026-01-01T00-00-00Z-0badc0de-1', `export-2026-01-01T00-00-00Z-${/-([0-9a-f]{8})-\d+$/.exec(left[0].name)![1]}-${process.pid}`],
    'only the killed export\'s snapshot was deleted',
  );

  // so does a prune of the volume on this machine (the volume may never be exported again)
  const foreign = (await listed()).map((x) => x.name).sort();
  const killed2 = spawn(process.execPath, [CLI, 'export', 'vm', '-'], { env: v.env, cwd: v.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (killed2.exitCode === null) killed2.kill('SIGKILL');
  });
  const killed2Exit = new Promise<unknown>((r) => killed2.once('exit', r));
  const until3 = Date.now() + 60_000;
  let left2: string[] = [];
  while ((left2 = (await listed()).map((x) => x.name).filter((n) => !foreign.includes(n))).length === 0) assert.ok(killed2.exitCode === null && Date.now() < until3, 'the export takes its snapshot');
  killed2.kill('SIGKILL');
  await killed2Exit;
  const dry = await v.cli('snapshot', 'prune', 'vm', '--keep-last', '1', '--dry-run');
  assert.ok((await listed()).some((x) => x.name === left2[0]), `a dry run deletes nothing: ${dry.stderr}`);
  const pruned = await v.cli('snapshot', 'prune', 'vm', '--keep-last', '1');
  assert.ok(pruned.stderr.includes(left2[0]), `the prune says what it deleted: ${pruned.stderr}`);
  assert.deepEqual((await listed()).map((x) => x.name).sort(), foreign, 'the prune deleted the killed export\'s snapshot, and kept the others (kept, or not abandoned here)');
  assert.equal(await srv.stop(), 0);
});
