// The CLI as scripts use it: exit codes, --json, messages, progress only on a terminal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync, readdirSync, statSync, utimesSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createConnection } from 'node:net';
import { execFileSync } from 'node:child_process';
import { CLI, makeTestVault } from '../helpers/vault-server';
import { fillFilesystem, smallTmpfs } from '../helpers/small-tmpfs';
import { runCommand } from '../helpers/fuse-disk';

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? files(join(dir, n)) : [join(dir, n)]));
}

test('volume commands: JSON output, exit codes 0/1/2, clear messages', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const created = JSON.parse((await v.cli('volume', 'create', 'a', '--size', '1G', '--json')).stdout);
  assert.equal(created.size, 2 ** 30);
  const list = JSON.parse((await v.cli('volume', 'list', '--json')).stdout);
  assert.deepEqual(list.map((x: any) => [x.name, x.size, x.allocated, x.snapshots]), [['a', 2 ** 30, 0, 0]]);
  const dup = await v.cliResult('volume', 'create', 'a', '--size', '1G');
  assert.equal(dup.code, 1);
  assert.match(dup.stderr, /a volume named "a" exists already/);
  const usage = await v.cliResult('volume', 'create', 'b');
  assert.equal(usage.code, 2, 'a missing option is a usage error');
  const badSize = await v.cliResult('volume', 'create', 'b', '--size', 'huge');
  assert.equal(badSize.code, 2);
  assert.match(badSize.stderr, /not a size: "huge"/);
  // petabytes were accepted, and such a volume then could not be opened or even listed
  const tooBig = await v.cliResult('volume', 'create', 'b', '--size', '257T');
  assert.equal(tooBig.code, 2);
  assert.match(tooBig.stderr, /over the largest a volume may have, 256 TiB/);
  const growTooBig = await v.cliResult('volume', 'resize', 'a', '--size', '1P');
  assert.equal(growTooBig.code, 2);
  assert.match(growTooBig.stderr, /256 TiB/);
  const missing = await v.cliResult('volume', 'info', 'nope');
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no volume named "nope"/);
  const shrink = await v.cliResult('volume', 'resize', 'a', '--size', '512M');
  assert.equal(shrink.code, 2);
  assert.match(shrink.stderr, /add --force/);
  await v.cli('volume', 'resize', 'a', '--size', '2G');
  assert.equal(JSON.parse((await v.cli('volume', 'info', 'a', '--json')).stdout).size, 2 * 2 ** 30);
  const said: Record<string, RegExp> = { '--handshake-timeout': /from 1 to 3600/, '--snapshot-every': /from 1s to 366d/, '--default-volume': /--default-volume names no volume: "nosuch" \(the vault has a\)/ };
  for (const [flag, value] of [['--handshake-timeout', '3000000'], ['--handshake-timeout', '0'], ['--snapshot-every', '30000d'], ['--default-volume', 'nosuch']]) {
    // a timeout past 24.8 days was a 1 ms timer that dropped every client; an unknown default
    // volume was served as the default export, which nothing could open
    const r = await v.cliResult('serve', flag, value);
    assert.equal(r.code, 2, `serve ${flag} ${value}`);
    assert.match(r.stderr, said[flag]);
  }
  const noYes = await v.cliResult('volume', 'delete', 'a');
  assert.equal(noYes.code, 2, 'delete without --yes in a pipe refuses');
  assert.match(noYes.stderr, /add --yes/);
});

test('import, export, verify, diff and gc from the command line; quiet in pipes', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'd', '--size', '32M');
  const img = Buffer.alloc(20 * 2 ** 20);
  randomBytes(6 * 2 ** 20).copy(img, 2 ** 20);
  writeFileSync(join(v.dir, 'in.img'), img);
  const noImage = await v.cliResult('import', join(v.dir, 'no-such.img'), 'd');
  assert.equal(noImage.code, 1);
  assert.equal(noImage.stderr.trim(), `nbd-vault: cannot read ${join(v.dir, 'no-such.img')}: no such file [ERR_NOT_FOUND]`);
  // a qcow2 image is no raw disk: refused, unless --raw says to take its bytes as they are
  await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', join(v.dir, 'vm.qcow2'), '16M']);
  const qcow = await v.cliResult('import', join(v.dir, 'vm.qcow2'), 'd');
  assert.equal(qcow.code, 2);
  assert.match(qcow.stderr, /is a qcow2 \(or qcow\) image, not a raw disk: .*qemu-img convert -O raw/);
  assert.match((await v.cli('import', join(v.dir, 'vm.qcow2'), 'd', '--raw')).stdout, /imported 192(\.0)? KiB from .*vm.qcow2 into d/);
  const imp = await v.cli('import', join(v.dir, 'in.img'), 'd');
  assert.match(imp.stdout, /imported 20 MiB .* into d \(\d+ zero chunks skipped\)/);
  assert.doesNotMatch(imp.stderr, /\[#|%/, 'no progress bar when stderr is not a terminal');
  await v.cli('snapshot', 'd', 'one');
  await v.cli('export', 'd@one', join(v.dir, 'out.img'));
  const out = readFileSync(join(v.dir, 'out.img'));
  assert.equal(out.length, 32 * 2 ** 20);
  assert.ok(out.subarray(0, img.length).equals(img) && out.subarray(img.length).every((b) => b === 0));
  const diff0 = JSON.parse((await v.cli('diff', 'd@one', 'd', '--json')).stdout);
  // one live volume alone is no diff (it compared the volume with itself: "0 ranges", exit 0)
  const alone = await v.cliResult('diff', 'd');
  assert.equal(alone.code, 2);
  assert.match(alone.stderr, /diff compares two states: .*diff d@SNAP/);
  // --json beside another --format asked for two shapes: it printed JSON and said nothing
  const twoShapes = await v.cliResult('diff', 'd@one', 'd', '--json', '--format', 'text');
  assert.equal(twoShapes.code, 2);
  assert.match(twoShapes.stderr, /--json and --format text ask for two shapes/);
  assert.deepEqual(JSON.parse((await v.cli('diff', 'd@one', 'd', '--json', '--format', 'json')).stdout), diff0);
  assert.equal(diff0.changedBytes, 0);

  const ok = JSON.parse((await v.cli('verify', '--all', '--json')).stdout);
  assert.equal(ok.ok, true);
  // a typo is a typo, not damage
  for (const [spec, said] of [['dd', 'no volume named "dd"'], ['d@nosuch', 'volume "d" has no snapshot named "nosuch"']]) {
    const typo = await v.cliResult('verify', spec);
    assert.equal(typo.code, 1);
    assert.equal(typo.stderr.trim(), `nbd-vault: ${said} [ERR_NOT_FOUND]`);
    assert.doesNotMatch(typo.stdout, /DAMAGED/);
  }
  // a source and --all: one of them was not meant (it used to verify everything, silently)
  const both = await v.cliResult('verify', 'd@one', '--all');
  assert.equal(both.code, 2);
  assert.match(both.stderr, /or use --all, not both/);
  // damage one chunk object on disk: verify names its byte range and exits 1
  const victim = files(join(v.dir, 'data')).find((p) => p.includes('/chunks/'))!;
  const bytes = readFileSync(victim);
  bytes[bytes.length - 5] ^= 0x80;
  writeFileSync(victim, bytes);
  const bad = await v.cliResult('verify', 'd');
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /d: DAMAGED 1 of 2 chunks\n {2}bytes \d+-\d+ \(chunk \d\): .*authentication failed/);
  const gc = await v.cli('gc', '--dry-run', '--grace', '0');
  assert.match(gc.stdout, /would remove 0 unreferenced objects/);
  for (const grace of ['soon', '', ' ', '0x10', '-5']) {
    const badGrace = await v.cliResult('gc', '--grace', grace);
    assert.equal(badGrace.code, 2, `--grace ${JSON.stringify(grace)}: ${badGrace.stdout}`);
    assert.match(badGrace.stderr, /--grace wants a number of minutes/);
  }
});

test('resize and delete refuse while a server serves the vault; snapshot goes through it', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'live', '--size', '64M');
  const srv = await v.serve();
  t.after(() => srv.kill());
  const r = await v.cliResult('volume', 'resize', 'live', '--size', '128M');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /a server is serving this vault/);
  const d = await v.cliResult('volume', 'delete', 'live', '--yes');
  assert.equal(d.code, 1);
  const i = await v.cliResult('import', join(v.dir, 'nothing.img'), 'live');
  assert.equal(i.code, 1);
  const s = await v.cli('snapshot', 'live');
  assert.match(s.stdout, /created snapshot live@\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ .* through the running server/);
  // the server's refusals read like the CLI's own: the message, then the code once
  await v.cli('snapshot', 'live', 'twice');
  const again = await v.cliResult('snapshot', 'live', 'twice');
  assert.equal(again.code, 1);
  assert.equal(again.stderr.trim(), 'nbd-vault: volume "live" has a snapshot named "twice" already [ERR_EXISTS]');
  const none = await v.cliResult('snapshot', 'nosuch', 'x');
  assert.equal(none.stderr.trim(), 'nbd-vault: no volume named "nosuch" [ERR_NOT_FOUND]');
  assert.equal(await srv.stop(), 0);
  await v.cli('volume', 'resize', 'live', '--size', '128M');
});

test('export to a filesystem too small for the data fails (exit 1), never a file with zeros where the data was', async (t) => {
  // write(2) writes what fits and returns a short count without an error: unchecked, the export
  // exited 0 with the rest of the chunk missing (zeros in a sparse file).
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const small = smallTmpfs(t, '2m', join(v.dir, 'small'));
  if (!small) return;
  await v.cli('volume', 'create', 'e', '--size', '8M');
  writeFileSync(join(v.dir, 'one-chunk.img'), randomBytes(4 * 2 ** 20)); // one chunk of data, 4 MiB: more than fits
  await v.cli('import', join(v.dir, 'one-chunk.img'), 'e');
  const r = await v.cliResult('export', 'e', join(small, 'out.img'));
  assert.equal(r.code, 1, `exit code (stdout: ${r.stdout.trim()})`);
  assert.match(r.stderr, /ENOSPC|no space|short write/i);
});

test('a full directory store is relieved with the tool: a read, then a snapshot delete, free room', async (t) => {
  // Each command puts a session (and the delete records) before it can read or delete anything:
  // without the store's reserve (space-reserve.ts) both failed with ENOSPC, and only gc ran.
  const v = await makeTestVault({ init: false });
  t.after(() => v.cleanup());
  const data = smallTmpfs(t, '24m', join(v.dir, 'data'));
  if (!data) return;
  await v.cli('keys', 'init');
  await v.cli('init');
  await v.cli('volume', 'create', 'a', '--size', '16M');
  const [first, second] = [randomBytes(8 * 2 ** 20), randomBytes(8 * 2 ** 20)];
  for (const [name, bytes] of [['first.img', first], ['second.img', second]] as const) writeFileSync(join(v.dir, name), bytes);
  await v.cli('import', join(v.dir, 'first.img'), 'a');
  await v.cli('snapshot', 'a', 'old');
  await v.cli('import', join(v.dir, 'second.img'), 'a'); // the snapshot alone holds the first 8 MiB
  fillFilesystem(data);
  const free = () => Number(/\s(\d+)\s+\d+%/.exec(execFileSync('df', ['-k', data], { encoding: 'utf8' }))![1]) * 1024;
  assert.equal(free(), 0, 'the store\'s filesystem is full');

  const exported = await v.cliResult('export', 'a', join(v.dir, 'out.img'));
  assert.equal(exported.code, 0, exported.stderr);
  assert.ok(readFileSync(join(v.dir, 'out.img')).subarray(0, second.length).equals(second), 'a full store still reads back');

  const deleted = await v.cliResult('snapshot', 'delete', 'a', 'old', '--json');
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.ok(JSON.parse(deleted.stdout).freedObjects >= 2, 'the snapshot\'s two chunks went (and its own objects)');
  assert.ok(free() >= 6 * 2 ** 20, `room came back (${free()} bytes)`);
  assert.equal(statSync(join(data, '~reserve')).size, 2 ** 20, 'and the reserve with it');
  await v.cli('volume', 'create', 'b', '--size', '8M');
  writeFileSync(join(v.dir, 'third.img'), first.subarray(0, 4 * 2 ** 20));
  await v.cli('import', join(v.dir, 'third.img'), 'b'); // writes fit again
});

test('a second server refused at startup says why, and nothing else: no volume is reported unreadable', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  for (const name of ['a', 'b', 'c', 'd']) await v.cli('volume', 'create', name, '--size', '64M');
  const srv = await v.serve();
  for (let round = 0; round < 3; round++) {
    const second = await v.cliResult('serve', '--listen', '127.0.0.1:0');
    assert.equal(second.code, 1, second.stderr);
    assert.match(second.stderr, /another nbd-vault server is running with state directory/);
    // the startup scan of other writers' leases read volume keys after the master key was wiped
    assert.doesNotMatch(second.stderr, /cannot be read|ERR_WRONG_KEY|is wrapped by master key/);
  }
  assert.equal(await srv.stop(), 0);
});

test('import reads a block device whole, and a pipe or standard input to its end (an image whose length is known only then)', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'v', '--size', '16M');
  const img = randomBytes(12 * 2 ** 20);
  writeFileSync(join(v.dir, 'img'), img);
  const loop = (await runCommand('losetup', ['-f', '--show', join(v.dir, 'img')])).stdout.trim();
  t.after(() => runCommand('losetup', ['-d', loop]).catch(() => {}));
  const exported = async () => {
    await v.cli('export', 'v', join(v.dir, 'out.img'));
    return readFileSync(join(v.dir, 'out.img'));
  };
  // stat says 0 bytes for a block device: this imported nothing and zeroed the volume, exit 0
  const r = await v.cli('import', loop, 'v');
  assert.match(r.stdout, /^imported 12 MiB from \/dev\/loop\d+ into v/);
  assert.ok((await exported()).subarray(0, img.length).equals(img), 'the device\'s bytes');
  const shell = (line: string) => runCommand('bash', ['-c', line], { env: { ...v.env, CLI, NODE: process.execPath }, cwd: v.dir, okCodes: [0, 1, 2] });
  // standard input, in pieces of a pipe's size, 6 MiB + 100 bytes, with --size: the rest of the volume reads as zeros
  const small = randomBytes(6 * 2 ** 20 + 100);
  writeFileSync(join(v.dir, 'small'), small);
  const piped = await shell(`cat small | "$NODE" "$CLI" import - v --size ${small.length}`);
  assert.equal(piped.code, 0, piped.stderr);
  assert.match(piped.stdout, /^imported 6(\.0)? MiB from standard input into v \(0 zero chunks skipped\); the 10(\.0)? MiB past its end now read as zeros/);
  const afterPipe = await exported();
  assert.ok(afterPipe.subarray(0, small.length).equals(small), 'the piped bytes');
  assert.ok(afterPipe.subarray(small.length).every((b) => b === 0), 'zeros after them: the device\'s bytes are gone');
  // a named pipe, without --size: the volume past the stream keeps what it held
  await runCommand('mkfifo', [join(v.dir, 'fifo')]);
  const head = randomBytes(4 * 2 ** 20);
  writeFileSync(join(v.dir, 'head'), head);
  const fromFifo = await shell('cat head > fifo & "$NODE" "$CLI" import fifo v; wait');
  assert.equal(fromFifo.code, 0, fromFifo.stderr);
  assert.match(fromFifo.stdout, /the 12(\.0)? MiB past its end are as they were \(--size makes them zeros\)/);
  const afterFifo = await exported();
  assert.ok(afterFifo.subarray(0, head.length).equals(head), 'the bytes of the named pipe');
  assert.ok(afterFifo.subarray(head.length, small.length).equals(small.subarray(head.length)), 'and what was there after them');
  // a producer that failed: nothing came (an ssh that did not log in), or less than --size said
  const empty = await shell('true | "$NODE" "$CLI" import - v');
  assert.equal(empty.code, 2, empty.stderr);
  assert.match(empty.stderr, /standard input ended before its first byte: nothing imported, volume "v" is unchanged/);
  const cut = await shell(`head -c 1048576 small | "$NODE" "$CLI" import - v --size ${small.length}`);
  assert.equal(cut.code, 1, cut.stderr);
  assert.match(cut.stderr, /standard input ended after 1048576 of the 6291556 bytes --size announced/);
  const afterCut = await exported();
  assert.ok(afterCut.subarray(head.length, small.length).equals(small.subarray(head.length)), 'nothing past what came was zeroed');
  assert.equal((await v.cliResult('import', join(v.dir, 'small'), 'v', '--size', '1M')).code, 2, '--size is for streams');
  // a qcow2 image on standard input is refused before anything is written
  await runCommand('qemu-img', ['create', '-q', '-f', 'qcow2', join(v.dir, 'vm.qcow2'), '16M']);
  const qcow = await shell('"$NODE" "$CLI" import - v < vm.qcow2');
  assert.equal(qcow.code, 2);
  assert.match(qcow.stderr, /standard input is a qcow2 \(or qcow\) image, not a raw disk/);
  assert.ok((await exported()).equals(afterCut), 'the volume is untouched');
  // more than the volume holds: a clear error, exit 1, and the volume holds the stream's first 16 MiB
  const big = randomBytes(20 * 2 ** 20);
  writeFileSync(join(v.dir, 'big'), big);
  const tooBig = await shell('cat big | "$NODE" "$CLI" import - v');
  assert.equal(tooBig.code, 1, tooBig.stderr);
  assert.match(tooBig.stderr, /standard input holds more than volume "v" \(16777216 bytes\): the volume now holds its first 16(\.0)? MiB over its earlier content, the rest is not imported/);
  assert.doesNotMatch(tooBig.stderr, /\n\s+at /, 'no stack trace');
  assert.ok((await exported()).equals(big.subarray(0, 16 * 2 ** 20)), 'what the message says');
  // a pipe nobody writes to, and a volume that does not exist: the error, and the command ends
  const noVolume = await shell('timeout 20 "$NODE" "$CLI" import fifo nope; echo "exit $?" >&2');
  assert.match(noVolume.stderr, /no volume named "nope"|volume "nope"/);
  assert.doesNotMatch(noVolume.stderr, /exit 124/, 'it did not hang on the open of the pipe');
  // export writes sparse files: a device is refused with the way to do it (it failed with EINVAL on ftruncate)
  const toDevice = await v.cliResult('export', 'v', loop);
  assert.equal(toDevice.code, 2);
  assert.match(toDevice.stderr, /is not a regular file: export writes a sparse file/);
});

test('import refuses VHD (dynamic and fixed), VMDK and VDI images unless --raw', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'v', '--size', '16M');
  const cases: Array<[string, string[], RegExp]> = [
    ['dyn.vhd', ['-f', 'vpc'], /is a VHD \(dynamic\) image/],
    ['fixed.vhd', ['-f', 'vpc', '-o', 'subformat=fixed'], /is a VHD \(fixed\) image/],
    ['d.vmdk', ['-f', 'vmdk'], /is a VMDK image/],
    ['flat.vmdk', ['-f', 'vmdk', '-o', 'subformat=monolithicFlat'], /is a VMDK descriptor image/],
    ['d.vdi', ['-f', 'vdi'], /is a VDI image/],
  ];
  for (const [name, args, message] of cases) {
    await runCommand('qemu-img', ['create', '-q', ...args, join(v.dir, name), '8M']);
    const r = await v.cliResult('import', join(v.dir, name), 'v');
    assert.equal(r.code, 2, `${name}: ${r.stderr}`);
    assert.match(r.stderr, message, name);
  }
  // a raw image that merely holds such bytes further in is raw
  const raw = Buffer.alloc(8 * 2 ** 20);
  raw.write('conectix', 4096, 'latin1');
  writeFileSync(join(v.dir, 'raw.img'), raw);
  assert.match((await v.cli('import', join(v.dir, 'raw.img'), 'v')).stdout, /^imported 8(\.0)? MiB/);
  assert.match((await v.cli('import', join(v.dir, 'fixed.vhd'), 'v', '--raw')).stdout, /^imported 8(\.0)? MiB/);
});

test('snapshot keep and delete take VOLUME NAME or the export name VOLUME@NAME that snapshot list prints', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 's', '--size', '8M');
  await v.cli('snapshot', 's', 'one');
  await v.cli('snapshot', 's', 'two');
  await v.cli('snapshot', 's', 'a-much-longer-name', '--keep');
  const listed = (await v.cli('snapshot', 'list', 's')).stdout;
  assert.match(listed, /^s@one /m);
  // a table: a header, and every column starts at the same place on every line
  const lines = listed.trimEnd().split('\n');
  assert.match(lines[0], /^EXPORT +CREATED +SIZE +KEEP$/);
  assert.equal(lines.length, 4);
  for (const col of ['CREATED', 'SIZE']) {
    const at = lines[0].indexOf(col);
    for (const l of lines.slice(1)) assert.match(l.slice(at - 2, at + 1), /^  \S$/, `column ${col} aligned in ${JSON.stringify(l)}`);
  }
  assert.match(lines.find((l) => l.startsWith('s@a-much-longer-name'))!, / keep$/);
  await v.cli('snapshot', 'keep', 's@a-much-longer-name', '--clear');
  await v.cli('snapshot', 'delete', 's@a-much-longer-name');
  await v.cli('snapshot', 'keep', 's@one');
  const kept = JSON.parse((await v.cli('snapshot', 'list', 's', '--json')).stdout);
  assert.deepEqual(kept.map((x: any) => [x.name, x.keep]), [['one', true], ['two', false]]);
  assert.deepEqual(JSON.parse((await v.cli('snapshot', 'keep', 's', 'one', '--clear', '--json')).stdout), { volume: 's', snapshot: 'one', keep: false });
  const deleted = JSON.parse((await v.cli('snapshot', 'delete', 's@two', '--json')).stdout);
  assert.deepEqual([deleted.volume, deleted.snapshot, typeof deleted.freedObjects], ['s', 'two', 'number']);
  await v.cli('snapshot', 'delete', 's', 'one');
  assert.match((await v.cli('snapshot', 'list', 's')).stdout, /volume s has no snapshots/);
  for (const args of [['s'], ['s@one', 'one'], ['s@'], ['@one']]) {
    const r = await v.cliResult('snapshot', 'delete', ...args);
    assert.equal(r.code, 2, `snapshot delete ${args.join(' ')} is a usage error`);
    assert.match(r.stderr, /usage: nbd-vault snapshot delete VOLUME NAME \(or VOLUME@NAME\)/);
  }
});

test('a malformed admin request gets an error and stores nothing (a snapshot named "undefined" made every snapshot listing fail)', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'live', '--size', '8M');
  const srv = await v.serve();
  t.after(() => srv.kill());
  const ask = (line: string) =>
    new Promise<any>((resolve, reject) => {
      const sock = createConnection(join(v.dir, 'state', 'admin.sock'));
      let buf = '';
      sock.setEncoding('utf8');
      sock.on('connect', () => sock.write(line + '\n'));
      sock.on('data', (d: string) => (buf += d));
      sock.on('end', () => resolve(JSON.parse(buf)));
      sock.on('error', reject);
    });
  for (const [line, said] of [
    ['{"op":"snapshot","volume":"live"}', /"name" must be a non-empty string/],
    ['{"op":"snapshot","volume":"live","name":12345}', /"name" must be a non-empty string/],
    // "" named the default export (live, here): a snapshot of it, reported as "@x"
    ['{"op":"snapshot","volume":"","name":"x"}', /"volume" must be a non-empty string/],
    ['{"op":"snapshot","volume":"live","name":""}', /"name" must be a non-empty string/],
    ['{"op":"snapshot","volume":"live","name":"x","keep":"yes"}', /"keep" must be true or false/],
    ['{"op":"cacheWarm"}', /"volume" must be a non-empty string/],
    ['{"op":"format"}', /unknown op "format"/],
    ['[1]', /not an object/],
    ['nonsense', /one line of JSON/],
  ] as const) {
    const reply = await ask(line);
    assert.equal(reply.ok, false, line);
    assert.equal(reply.code, 'ERR_INVALID_ARGUMENT', line);
    assert.match(reply.message, said, line);
  }
  for (const args of [['snapshot', 'create', '', 'y'], ['snapshot', 'create', 'live', '']]) {
    const r = await v.cliResult(...args);
    assert.equal(r.code, 2, `${JSON.stringify(args)}: a usage error: ${r.stderr}`);
  }
  const listed = await v.cli('snapshot', 'list', 'live');
  assert.match(listed.stdout, /volume live has no snapshots/);
  assert.equal((await ask('{"op":"snapshot","volume":"live","name":"fine"}')).ok, true);
  assert.match((await v.cli('snapshot', 'list', 'live')).stdout, /^live@fine /m);
});

test('export of a served volume that fails leaves no temporary snapshot; a reader that closes the pipe early is no crash', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'live', '--size', '16M');
  for (const name of ['a', 'b', 'c']) await v.cli('snapshot', 'live', name);
  writeFileSync(join(v.dir, 'in.img'), randomBytes(16 * 2 ** 20));
  await v.cli('import', join(v.dir, 'in.img'), 'live');
  const srv = await v.serve();
  t.after(() => srv.kill());
  const snapshots = async () => JSON.parse((await v.cli('snapshot', 'list', 'live', '--json')).stdout).map((s: { name: string }) => s.name);
  const shell = (line: string) => runCommand('bash', ['-c', line], { env: { ...v.env, CLI, NODE: process.execPath }, cwd: v.dir, okCodes: [0, 1, 2] });

  const device = await v.cliResult('export', 'live', '/dev/null');
  assert.equal(device.code, 2);
  assert.match(device.stderr, /not a regular file/);
  const nodir = await v.cliResult('export', 'live', join(v.dir, 'no', 'such', 'x.img'));
  assert.equal(nodir.code, 1);
  assert.match(nodir.stderr, /cannot write .*x\.img: no such directory/);
  // export to a pipe its reader closes after 1 MiB: a clear error, exit 1, no stack trace
  const cut = await shell('"$NODE" "$CLI" export live - | head -c 1048576 > /dev/null; echo "exit ${PIPESTATUS[0]}" >&2');
  assert.match(cut.stderr, /exit 1/);
  assert.match(cut.stderr, /standard output was closed before all the data was written/);
  assert.doesNotMatch(cut.stderr, /\n\s+at /, 'no stack trace');
  assert.deepEqual(await snapshots(), ['a', 'b', 'c'], 'no export-… snapshot left behind, with its keep flag');
  // a listing cut short by head: exit 0, no stack trace
  const head = await shell('"$NODE" "$CLI" snapshot list live | head -2; echo "exit ${PIPESTATUS[0]}" >&2');
  assert.match(head.stdout, /^EXPORT .*\nlive@a /);
  assert.match(head.stderr, /exit 0/);
  assert.doesNotMatch(head.stderr, /EPIPE|\n\s+at /);
});

test('after a shrink to a size that is no multiple of 4 MiB, allocated is never more than the size', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'rz', '--size', '16M');
  writeFileSync(join(v.dir, 'full.img'), randomBytes(16 * 2 ** 20));
  await v.cli('import', join(v.dir, 'full.img'), 'rz');
  await v.cli('volume', 'resize', 'rz', '--size', '6M', '--force');
  const info = JSON.parse((await v.cli('volume', 'info', 'rz', '--json')).stdout);
  assert.deepEqual([info.size, info.allocated], [6 * 2 ** 20, 6 * 2 ** 20]);
});

test('a command on a replica, from the state directory of the source\'s running server, acts on the replica', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vol', '--size', '8M');
  await v.cli('snapshot', 'vol', 's1');
  const replica = join(v.dir, 'replica');
  await v.cli('sync', '--to', replica);
  const srv = await v.serve();
  t.after(() => srv.kill());
  // the replica has the source's vault id: the server used to take the command for its own
  // (the replica's root is older than what this state directory saw of the source: hence
  // --accept-rollback, as the README's restore says of a shared state directory)
  const made = await v.cli('snapshot', 'vol', 'onrep', '--store', replica, '--accept-rollback');
  assert.match(made.stdout, /created snapshot vol@onrep .* on the store/);
  const names = async (...store: string[]) => JSON.parse((await v.cli('snapshot', 'list', 'vol', '--json', ...store)).stdout).map((s: { name: string }) => s.name);
  assert.deepEqual(await names('--store', replica, '--accept-rollback'), ['s1', 'onrep']);
  // and on the source, the running server still takes it
  assert.match((await v.cli('snapshot', 'vol', 'here')).stdout, /through the running server/);
});

test('sync: a snapshot name taken again at the source fails the run (exit 1, with the fix) until --prune replaces the replica\'s one', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vol', '--size', '8M');
  const first = randomBytes(8 * 2 ** 20);
  const second = randomBytes(8 * 2 ** 20);
  writeFileSync(join(v.dir, 'a.img'), first);
  writeFileSync(join(v.dir, 'b.img'), second);
  await v.cli('import', join(v.dir, 'a.img'), 'vol');
  await v.cli('snapshot', 'vol', 'daily');
  // a directory that is no vault but holds files (a mistyped path) is refused, and left as it was
  const elsewhere = join(v.dir, 'photos');
  mkdirSync(elsewhere);
  writeFileSync(join(elsewhere, 'beach.jpg'), 'not ours');
  const wrongDir = await v.cliResult('sync', '--to', elsewhere);
  assert.equal(wrongDir.code, 1);
  assert.match(wrongDir.stderr, /photos is not empty \(it holds "beach.jpg", and no vault\)/);
  assert.deepEqual(readdirSync(elsewhere), ['beach.jpg']);
  // but a disk mounted for backups (lost+found at its root) is taken, as is an empty directory
  const disk = join(v.dir, 'backup-disk');
  mkdirSync(join(disk, 'lost+found'), { recursive: true });
  assert.equal((await v.cliResult('sync', '--to', disk)).code, 0);
  const replica = join(v.dir, 'replica');
  await v.cli('sync', '--to', replica);
  assert.match((await v.cli('sync', '--to', replica)).stdout, new RegExp(`^synced to fs\\(${replica}\\)`), 'the store as named, without its wrappers');
  await v.cli('snapshot', 'delete', 'vol@daily');
  await v.cli('import', join(v.dir, 'b.img'), 'vol');
  await v.cli('snapshot', 'vol', 'daily');
  const refused = await v.cliResult('sync', '--to', replica);
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(refused.stdout, /FAILED +vol@daily \(name-taken\): the replica has another snapshot of this name .*sync --prune replaces it/);
  const state2 = join(v.dir, 'state-replica');
  let exports = 0;
  const exportOf = async (name: string) => {
    const out = join(v.dir, `export-${++exports}.img`);
    await v.cli('export', name, out, '--store', replica, '--state', state2);
    return readFileSync(out);
  };
  assert.ok((await exportOf('vol@daily')).equals(first), 'the replica still has the old one, whole');
  const replaced = await v.cliResult('sync', '--to', replica, '--prune', '--json');
  assert.equal(replaced.code, 0, replaced.stderr);
  const r = JSON.parse(replaced.stdout);
  assert.deepEqual([r.snapshots.map((s: { status: string }) => s.status), r.pruned], [['copied'], ['vol@daily']]);
  assert.ok((await exportOf('vol@daily')).equals(second), 'the replica\'s vol@daily is the new one');
});

test('gc sweeps the temporary files of puts cut off by a kill (older than a day), never a fresh one', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'vol', '--size', '8M');
  const chunkFile = files(join(v.dir, 'data')).find((p) => p.includes('/volumes/'))!;
  const dir = dirname(chunkFile);
  const stale = join(dir, '~tmp-4242-0123456789ab');
  const fresh = join(dir, '~tmp-4243-ba9876543210');
  writeFileSync(stale, randomBytes(3 * 2 ** 20));
  writeFileSync(fresh, randomBytes(2 ** 20));
  const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
  utimesSync(stale, twoDaysAgo, twoDaysAgo);
  const dry = JSON.parse((await v.cli('gc', '--dry-run', '--json')).stdout);
  assert.deepEqual([dry.temporaryFiles, dry.temporaryBytes], [1, 3 * 2 ** 20]);
  assert.ok(existsSync(stale), 'a dry run removes nothing');
  const run = await v.cli('gc');
  assert.match(run.stdout, /removed 1 temporary files \(3 MiB\) of writes cut off more than a day ago/);
  assert.deepEqual([existsSync(stale), existsSync(fresh)], [false, true]);
  const again = JSON.parse((await v.cli('gc', '--json')).stdout);
  assert.equal(again.temporaryFiles, 0);
});

test('gc removes the empty directories a deleted volume left once they are a day old, never a live volume\'s or a fresh one', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const volumes = join(v.dir, 'data', 'volumes');
  const ids = () => readdirSync(volumes).sort();
  await v.cli('volume', 'create', 'live', '--size', '8M');
  const [live] = ids();
  await v.cli('volume', 'create', 'old', '--size', '8M');
  const old = ids().find((d) => d !== live)!;
  await v.cli('volume', 'delete', 'old', '--yes');
  await v.cli('volume', 'create', 'fresh', '--size', '8M');
  const fresh = ids().find((d) => d !== live && d !== old)!;
  await v.cli('volume', 'delete', 'fresh', '--yes');
  assert.deepEqual(files(join(volumes, old)), [], 'the deleted volume left directories only');
  // every directory of the deleted volume, and an empty one inside the live volume, two days old
  const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
  const age = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) age(join(dir, e.name));
    utimesSync(dir, twoDaysAgo, twoDaysAgo);
  };
  age(join(volumes, old));
  mkdirSync(join(volumes, live, 'idle~'));
  age(join(volumes, live));
  const dry = JSON.parse((await v.cli('gc', '--dry-run', '--json')).stdout);
  assert.equal(dry.emptyVolumeDirs, 1);
  assert.ok(existsSync(join(volumes, old)), 'a dry run removes nothing');
  const run = await v.cli('gc');
  assert.match(run.stdout, /removed the empty directories of 1 volumes deleted more than a day ago/);
  assert.deepEqual(ids(), [live, fresh].sort(), 'the old deleted volume\'s tree is gone; the fresh one and the live one stay');
  assert.ok(existsSync(join(volumes, live, 'idle~')), 'nothing inside a live volume is touched');
  assert.match((await v.cli('volume', 'list')).stdout, /live/);
});

test('a volume whose metadata another tool overwrote: verify --all and volume list say so and exit 1, the other volumes still listed', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'good', '--size', '8M');
  await v.cli('volume', 'create', 'lost', '--size', '8M');
  const id = JSON.parse((await v.cli('volume', 'info', 'lost', '--json')).stdout).id;
  const metaFile = files(join(v.dir, 'data')).find((p) => p.includes(id) && p.endsWith('/meta'))!;
  const header = readFileSync(metaFile).subarray(0, 24); // the fs store's file header stays valid
  writeFileSync(metaFile, Buffer.concat([header, Buffer.from('overwritten by another tool')]));
  const verify = await v.cliResult('verify', '--all');
  assert.equal(verify.code, 1, verify.stdout);
  assert.match(verify.stdout, new RegExp(`volume id ${id}: DAMAGED manifest: its metadata cannot be read: .*malformed`));
  assert.match(verify.stdout, /^good: ok/m);
  const json = JSON.parse((await v.cliResult('verify', '--all', '--json')).stdout);
  assert.equal(json.ok, false);
  const list = await v.cliResult('volume', 'list');
  assert.equal(list.code, 1);
  assert.match(list.stdout, new RegExp(`volume id ${id}: UNREADABLE metadata`));
  assert.match(list.stdout, /^good +8 MiB/m);
});

test('verify --all goes on past a volume whose root is damaged: that volume is reported, the others are verified; --json too', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'good', '--size', '8M');
  await v.cli('snapshot', 'good', 's');
  await v.cli('volume', 'create', 'broken', '--size', '8M');
  const id = JSON.parse((await v.cli('volume', 'info', 'broken', '--json')).stdout).id;
  const rootFile = files(join(v.dir, 'data')).find((p) => p.includes(id) && p.endsWith('/root'))!;
  const bytes = readFileSync(rootFile);
  bytes[bytes.length - 5] ^= 1;
  writeFileSync(rootFile, bytes);
  const verify = await v.cliResult('verify', '--all');
  assert.equal(verify.code, 1, verify.stderr);
  assert.match(verify.stdout, /^broken(@\*)?: DAMAGED manifest: /m);
  assert.match(verify.stdout, /^good: ok/m);
  assert.match(verify.stdout, /^good@s: ok/m);
  const json = JSON.parse((await v.cliResult('verify', '--all', '--json')).stdout);
  assert.equal(json.ok, false);
  assert.deepEqual(json.results.filter((r: { error?: string }) => !r.error).map((r: { source: string }) => r.source).sort(), ['good', 'good@s']);
});

test('export of a volume a server elsewhere writes (another state directory): it says the copy holds what that server has stored', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'live', '--size', '8M');
  const srv = await v.serve();
  t.after(() => srv.kill());
  await runCommand('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', srv.uri('live')]); // (flushed at its close)
  const out = join(v.dir, 'elsewhere.img');
  const r = await v.cliResult('export', 'live', out, '--state', join(v.dir, 'state-elsewhere'));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /a server elsewhere is writing this volume: the export holds what it has stored \(FLUSHed writes\)/);
  const img = readFileSync(out);
  assert.ok(img.subarray(0, 2 ** 20).every((b) => b === 0x5a) && img.subarray(2 ** 20).every((b) => b === 0), 'the flushed write is there');
  // through the server's own state directory: through a snapshot, no warning
  const here = await v.cliResult('export', 'live', join(v.dir, 'here.img'));
  assert.doesNotMatch(here.stderr, /a server elsewhere/);
});

test('serve --memory refuses vault flags beside it (they were silently ignored)', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  const r = await v.cliResult('serve', '--memory', 'm=1M', '--listen', '127.0.0.1:0', '--store', join(v.dir, 'elsewhere'), '--default-volume', 'x');
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--memory serves in-memory exports, not a vault: --store, --default-volume do not apply/);
});
