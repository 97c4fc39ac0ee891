// Graceful shutdown (SIGINT/SIGTERM: in-flight requests answered, later ones left for the client to replay, exports
// flushed, exit 0) and serving over a Unix socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTool, startNbdServerProcess } from '../helpers/nbd-server';
import { Wire, greet, go, readSimpleReply, request } from './raw-client';

test('SIGINT with requests in flight: what was in flight answered with success, the rest unanswered, exit 0', async (t) => {
  const srv = await startNbdServerProcess({ memory: ['disk=64M'] });
  const w = new Wire(srv.port);
  await greet(w);
  await go(w, 'disk');
  const N = 400;
  const payload = Buffer.alloc(65536, 0x77);
  await w.write(Buffer.concat(Array.from({ length: N }, (_, i) => request(1, 0, i + 1, (i % 512) * 65536, 65536, payload))));
  const stopped = srv.stop('SIGINT');
  const errors = new Map<number, number>();
  const handles: number[] = [];
  for (let i = 0; i < N; i++) {
    let r;
    try {
      r = await readSimpleReply(w);
    } catch (err) {
      // The server may close once everything it accepted is answered: only a close on a reply
      // boundary is fine; a torn reply, bad magic or a timeout fails the test.
      if (!/connection closed with 0\/16 bytes/.test((err as Error).message)) throw err;
      break;
    }
    handles.push(r.handle);
    errors.set(r.error, (errors.get(r.error) ?? 0) + 1);
  }
  assert.equal(await stopped, 0, 'exit code 0');
  for (const code of errors.keys()) assert.equal(code, 0, `no error reply (a reconnecting client replays what is unanswered), got errno ${code}`);
  assert.ok(handles.length > 0, 'in-flight requests were answered');
  // The server starts requests in the order it reads them, so what it answered is exactly the first N, once each.
  assert.deepEqual([...handles].sort((a, b) => a - b), Array.from({ length: handles.length }, (_, i) => i + 1), 'answered handles are exactly 1..n, once each');
  t.diagnostic(`${handles.length}/${N} answered`);
  assert.ok(await w.closedWithin(2000), 'connection closed by the server');
  assert.match(srv.log(), /all exports flushed and closed/);
});

test('SIGTERM on an idle server exits 0', async () => {
  const srv = await startNbdServerProcess({ memory: ['disk=1M'] });
  assert.equal(await srv.stop('SIGTERM'), 0, srv.log());
});

test('Unix socket: qemu-io writes and reads back over nbd+unix', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nbd-sock-'));
  const sock = join(dir, 'nbd.sock');
  const srv = await startNbdServerProcess({ memory: ['disk=8M'], socketPath: sock });
  try {
    const uri = `nbd+unix:///disk?socket=${sock}`;
    const r = await runTool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 1m 1m', '-c', 'read -P 0x3c 1m 1m', uri]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /verification failed/);
    const info = await runTool('nbdinfo', ['--size', uri]);
    assert.equal(info.stdout.trim(), String(8 * 1024 * 1024));
    // A second server on the same path is refused: taking it orphaned this one's socket, and this
    // one's stop then deleted the second's.
    await assert.rejects(startNbdServerProcess({ memory: ['other=4M'], socketPath: sock }), /a running server listens there/);
    assert.equal((await runTool('nbdinfo', ['--size', uri])).stdout.trim(), String(8 * 1024 * 1024), 'the first server still answers on its path');
  } finally {
    assert.equal(await srv.stop(), 0);
  }
  try {
    // its socket file, left as by a kill -9 (bound, never unlinked): a new server takes the path
    const bound = await runTool('/usr/bin/python3', ['-c', 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', sock]);
    assert.equal(bound.code, 0, bound.stderr);
    assert.ok(existsSync(sock), 'a stale socket file is there');
    const next = await startNbdServerProcess({ memory: ['disk=8M'], socketPath: sock });
    assert.equal((await runTool('nbdinfo', ['--size', `nbd+unix:///disk?socket=${sock}`])).stdout.trim(), String(8 * 1024 * 1024));
    assert.equal(await next.stop(), 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
