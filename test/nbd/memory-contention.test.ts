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
  // 128 MiB: what connections may hold is ~90 MiB (three 32 MiB payloads)
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

test('WRITE payloads that stop coming are dropped once others wait for their memory; the others go on', async (t) => {
  const srv = await serve(t);
  const tricklers: Wire[] = [];
  for (let i = 0; i < 6; i++) {
    const w = await client(srv.port);
    await w.write(request(CMD_WRITE, 0, 1, 0, 32 * MIB, Buffer.alloc(1024, 0xee))); // 1 KiB of 32 MiB, then nothing
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
});
