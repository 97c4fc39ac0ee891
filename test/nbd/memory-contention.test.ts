// Clients that hold the process memory budget and stop moving while others wait for it: a WRITE
// payload that stops coming is dropped after CONTENDED_STALL_MS (15 s) of contention, and the
// other clients go on (trickling payloads locked them out for good). Replies never read: the
// same rule, in reply-writer.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startNbdServerProcess } from '../helpers/nbd-server';
import { MIB, Wire, go, greet, readSimpleReply, request } from './raw-client';

const CMD_WRITE = 1;

async function serve(t: { after(fn: () => Promise<unknown>): void }) {
  // 128 MiB, the least: all of it for connections (four 32 MiB payloads)
  const srv = await startNbdServerProcess({ memory: ['disk=64M'], extraArgs: ['--memory-limit', '128M'] });
  t.after(() => srv.stop());
  return srv;
}

async function client(port: number): Promise<Wire> {
  const w = new Wire(port);
  await greet(w);
  await go(w, 'disk');
  return w;
}

test('WRITE payloads that stop coming are dropped once others wait for their memory; a slow one that moves, and the others, go on', async (t) => {
  const srv = await serve(t);
  // first a slow client that moves (1.5 MiB every 5 s of a 32 MiB payload): slow, not stalled
  const slow = await client(srv.port);
  t.after(() => slow.destroy());
  const slowData = Buffer.alloc(32 * MIB, 0x5c);
  await slow.write(request(CMD_WRITE, 0, 3, 0, 32 * MIB));
  const step = 1.5 * MIB;
  let sentSlow = step;
  await slow.write(slowData.subarray(0, step));
  const slowly = setInterval(() => {
    if (sentSlow < 12 * MIB) void slow.write(slowData.subarray(sentSlow, (sentSlow += step)));
  }, 5_000);
  t.after(() => clearInterval(slowly));
  // then three that send 1 KiB of 32 MiB and nothing more: with the slow one, the whole budget
  const tricklers: Wire[] = [];
  for (let i = 0; i < 3; i++) {
    const w = await client(srv.port);
    await w.write(request(CMD_WRITE, 0, 1, 0, 32 * MIB, Buffer.alloc(1024, 0xee)));
    tricklers.push(w);
  }
  t.after(() => tricklers.forEach((w) => w.destroy()));
  await new Promise((r) => setTimeout(r, 500));
  const good = await client(srv.port);
  t.after(() => good.destroy());
  const started = Date.now();
  await good.write(request(CMD_WRITE, 0, 7, 60 * MIB, 4096, Buffer.alloc(4096, 0x11)));
  const reply = await readSimpleReply(good, 0, 45_000); // it waited for good
  assert.equal(reply.error, 0);
  assert.equal(reply.handle, 7);
  const waited = Date.now() - started;
  assert.ok(waited < 40_000, `answered after ${waited} ms`);
  assert.match(srv.log(), /client stopped sending a request's payload/);
  assert.ok(await tricklers[0].closedWithin(5_000), 'the first trickler was dropped');
  clearInterval(slowly);
  await slow.write(slowData.subarray(sentSlow)); // the rest at once
  const slowReply = await readSimpleReply(slow, 0, 30_000);
  assert.deepEqual([slowReply.error, slowReply.handle], [0, 3], 'the slow writer was served');
});
