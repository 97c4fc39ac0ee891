// FsStore crash atomicity: a writer process killed (SIGKILL) at each step of a put — temp file
// created, half written, written, fsynced, renamed or linked, directory fsynced — leaves the old
// object or the new one, whole, never a torn or empty one; list never shows the temp file, and the
// store takes the next put. The steps are injected with NBD_VAULT_TEST_FS_CRASH_AT (fs-store.ts).
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { FsStore } from '../../src/store';
import { expectCode } from './conformance';

const tmp = mkdtempSync(path.join(tmpdir(), 'nbdv-fs-crash-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const STORE_MODULE = path.resolve(__dirname, '../../src/store/fs-store'); // not the index: no S3 SDK to load

/** Runs one put in a child process that dies at `step`; returns how it ended. */
function putInChild(dir: string, key: string, body: Buffer, opts: object, step: string) {
  const script = `
    const { FsStore } = require(${JSON.stringify(STORE_MODULE)});
    const body = require('node:fs').readFileSync(0);
    new FsStore(${JSON.stringify(dir)}).put(${JSON.stringify(key)}, body, ${JSON.stringify(opts)})
      .then(() => console.log('put returned'), (e) => { console.log('put failed', e.code); process.exit(3); });`;
  return spawnSync(process.execPath, ['-e', script], {
    input: body,
    env: { ...process.env, NBD_VAULT_TEST_FS_CRASH_AT: step },
    encoding: 'utf8',
    timeout: 30_000,
  });
}

async function listKeys(store: FsStore): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of store.list('')) keys.push(info.key);
  return keys;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name);
}

describe('FsStore: a writer killed mid-put', () => {
  // replacing an object (rename path): before the rename the old object stays, after it the new
  const replaceSteps: Array<[string, 'old' | 'new']> = [
    ['temp-created', 'old'],
    ['temp-half', 'old'],
    ['temp-written', 'old'],
    ['temp-synced', 'old'],
    ['renamed', 'new'],
    ['dir-synced', 'new'],
  ];
  for (const ifMatch of [false, true]) {
    // ifMatch takes the same rename path: its two steps around the rename are enough
    for (const [step, expected] of replaceSteps.filter(([st]) => !ifMatch || st === 'temp-synced' || st === 'renamed')) {
      it(`replace${ifMatch ? ' (ifMatch)' : ''}, killed at ${step}: the ${expected} object, whole`, async () => {
        const dir = path.join(tmp, `replace-${ifMatch}-${step}`);
        const store = new FsStore(dir);
        const oldBody = randomBytes(300_000);
        const newBody = randomBytes(300_000);
        const { etag: oldEtag } = await store.put('volumes/v/chunks/c1', oldBody);
        const r = putInChild(dir, 'volumes/v/chunks/c1', newBody, ifMatch ? { ifMatch: oldEtag } : {}, step);
        assert.equal(r.signal, 'SIGKILL', `the writer died at ${step} (status ${r.status}, ${r.stdout}${r.stderr})`);
        assert.doesNotMatch(r.stdout, /put returned/);
        const got = await store.get('volumes/v/chunks/c1');
        assert.ok(got.body.equals(expected === 'old' ? oldBody : newBody), `the ${expected} bytes, whole`);
        assert.deepEqual(await listKeys(store), ['volumes/v/chunks/c1'], 'list shows the key once, no temp file');
        const head = await store.head('volumes/v/chunks/c1');
        assert.equal(head!.size, expected === 'old' ? oldBody.length : newBody.length);
        assert.equal(head!.etag, got.etag);
        // a temp file may remain before the rename; it never counts as an object
        const leftovers = filesUnder(dir).filter((n) => n.startsWith('~tmp-'));
        assert.equal(leftovers.length, expected === 'old' ? 1 : 0, `leftover temp files: ${leftovers.join(', ')}`);
        // the store goes on: an ifMatch put on what is there now succeeds, and it reads back
        const next = randomBytes(1000);
        await store.put('volumes/v/chunks/c1', next, { ifMatch: got.etag });
        assert.ok((await store.get('volumes/v/chunks/c1')).body.equals(next));
      });
    }
  }

  // creating with ifNoneMatch (link path): before the link there is no object, after it the new one
  const createSteps: Array<[string, 'none' | 'new']> = [
    ['temp-created', 'none'],
    ['temp-half', 'none'],
    ['temp-synced', 'none'],
    ['linked', 'new'],
    ['dir-synced', 'new'],
  ];
  for (const [step, expected] of createSteps) {
    it(`create (ifNoneMatch), killed at ${step}: ${expected === 'none' ? 'no object' : 'the new object, whole'}`, async () => {
      const dir = path.join(tmp, `create-${step}`);
      const store = new FsStore(dir);
      await store.put('volumes/v/root', Buffer.from('other object'));
      const body = randomBytes(100_000);
      const r = putInChild(dir, 'volumes/v/lease', body, { ifNoneMatch: '*' }, step);
      assert.equal(r.signal, 'SIGKILL', `the writer died at ${step} (status ${r.status}, ${r.stdout}${r.stderr})`);
      if (expected === 'none') {
        await expectCode(store.get('volumes/v/lease'), 'ERR_STORE_NOT_FOUND');
        assert.deepEqual(await listKeys(store), ['volumes/v/root']);
        await store.put('volumes/v/lease', Buffer.from('mine'), { ifNoneMatch: '*' }); // the key is free
      } else {
        assert.ok((await store.get('volumes/v/lease')).body.equals(body), 'the new bytes, whole');
        assert.deepEqual(await listKeys(store), ['volumes/v/lease', 'volumes/v/root']);
        await expectCode(store.put('volumes/v/lease', Buffer.from('mine'), { ifNoneMatch: '*' }), 'ERR_STORE_PRECONDITION');
      }
    });
  }

  it('without the hook a child put completes (the harness itself is sound)', () => {
    const dir = path.join(tmp, 'no-crash');
    const r = putInChild(dir, 'k', Buffer.from('x'), {}, 'no-such-step');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /put returned/);
  });
});
