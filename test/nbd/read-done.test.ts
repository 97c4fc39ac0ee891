// Export.readDone: the NBD layer tells the export once a read reply has been written, passing the
// very buffer read() returned (the volume engine then reuses the memory under it). Never before the
// reply is written, never for a buffer that was not read()'s result, never twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startNbdServer } from '../../src/nbd';
import { MemoryExport } from '../../src/nbd/memory-export';
import type { Export, ExportProvider } from '../../src/nbd/export';
import { createLogger } from '../../src/util/log';
import { Wire, greet, go, readSimpleReply, request, MIB } from './raw-client';

const NBD_CMD_READ = 0;

class RecordingExport extends MemoryExport {
  readonly returned: Buffer[] = [];
  readonly done: Buffer[] = [];
  override async read(offset: number, length: number): Promise<Buffer> {
    const data = await super.read(offset, length);
    this.returned.push(data);
    return data;
  }
  readDone(data: Buffer): void {
    this.done.push(data);
  }
}

function providerOf(exp: Export): ExportProvider {
  return { defaultName: exp.name, list: async () => [{ name: exp.name, description: '' }], open: async (n) => (n === exp.name ? exp : null), release: async () => {}, closeAll: async () => {} };
}

test('readDone gets each read reply’s buffer once, after the client could read it; not for a reply never written', async () => {
  const exp = new RecordingExport('a', 8 * MIB);
  const server = await startNbdServer({ listen: { host: '127.0.0.1', port: 0 }, provider: providerOf(exp), logger: createLogger('silent') });
  const port = (server.address() as { port: number }).port;
  try {
    const w = new Wire(port);
    await greet(w);
    await go(w, 'a');
    for (let i = 0; i < 4; i++) {
      await w.write(request(NBD_CMD_READ, 0, i + 1, i * 65536, 65536));
      const r = await readSimpleReply(w, 65536);
      assert.equal(r.error, 0);
    }
    // the last callback may run just after the client has the bytes
    for (let i = 0; i < 50 && exp.done.length < 4; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(exp.returned.length, 4);
    const readResults = exp.done.filter((b) => exp.returned.includes(b));
    assert.equal(readResults.length, 4, 'every read result, by identity');
    assert.equal(new Set(readResults).size, 4, 'each once');

    // a client that stops reading: its big replies stay unwritten, and are never "done"
    w.sock.pause();
    const before = exp.done.length;
    for (let i = 0; i < 8; i++) await w.write(request(NBD_CMD_READ, 0, 100 + i, 0, 4 * MIB));
    for (let i = 0; i < 100 && exp.returned.length < 12; i++) await new Promise((r) => setTimeout(r, 10));
    const unsent = exp.returned.slice(4);
    w.destroy();
    await new Promise((r) => setTimeout(r, 200));
    const doneAfter = exp.done.slice(before).filter((b) => unsent.includes(b));
    assert.ok(doneAfter.length < unsent.length, `of ${unsent.length} replies the client never read, ${doneAfter.length} were called done`);
  } finally {
    await server.close();
  }
});
