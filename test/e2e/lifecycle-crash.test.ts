// A process killed in the middle of snapshot create, snapshot delete, volume delete and resize:
// right after each durable store mutation in turn (put or delete, NBD_VAULT_TEST_FS_CRASH_AT=
// mutation:N in fs-store.ts; sampled at doubling steps once only cleanup is left), until the
// operation completes. After every crash the vault reopens
// consistent: every volume and snapshot authenticates in full, and reads as before or as after
// the operation — never a mix. `nbd-vault verify --all` (the CLI) passes on the crashed states.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInlineCodec } from '../../src/codec';
import { createMasterKey, loadMasterKey } from '../../src/keys';
import type { SecretKey } from '../../src/keys/secret-key';
import { FsStore } from '../../src/store/fs-store';
import { CHUNK_SIZE } from '../../src/volume/chunk-math';
import { collectGarbage } from '../../src/volume/garbage-collector';
import { Vault } from '../../src/volume/vault';
import { verifyManifest } from '../../src/volume/verify';
import { createLogger } from '../../src/util/log';
import { runCommand } from '../helpers/fuse-disk';
import { CLI } from '../helpers/vault-server';

const logger = createLogger('silent');
const DIST = resolve(__dirname, '../..');
const SIZE = 4 * CHUNK_SIZE;
const SHRUNK = 3 * CHUNK_SIZE + 1000;

// The operation, run by a child process over the fs store, as a CLI command would.
const CHILD = `
const { FsStore } = require(${JSON.stringify(join(DIST, 'src/store/fs-store'))});
const { loadMasterKey } = require(${JSON.stringify(join(DIST, 'src/keys'))});
const { createInlineCodec } = require(${JSON.stringify(join(DIST, 'src/codec'))});
const { Vault } = require(${JSON.stringify(join(DIST, 'src/volume/vault'))});
const { createLogger } = require(${JSON.stringify(join(DIST, 'src/util/log'))});
const [dir, keys, state, op] = process.argv.slice(1);
(async () => {
  const vault = await Vault.open(new FsStore(dir), await loadMasterKey(keys), createInlineCodec(), { stateDir: state, logger: createLogger('silent') });
  if (op === 'snapshot-create') await vault.createSnapshot('v', 's1');
  else if (op === 'snapshot-delete') await vault.deleteSnapshot('v', 's0');
  else if (op === 'volume-delete') await vault.deleteVolume('v');
  else if (op === 'resize') await vault.resizeVolume('v', ${SHRUNK}, true);
  console.log('completed');
})().catch((e) => { console.error(e.code, e.message); process.exit(3); });
`;

interface World {
  dir: string;
  keys: string;
  master: SecretKey;
  d0: Buffer; // the volume at snapshot s0
  d1: Buffer; // the live volume
}

async function makeWorld(root: string): Promise<World> {
  const keys = join(root, 'keys');
  await createMasterKey(keys);
  const master = await loadMasterKey(keys);
  const dir = join(root, 'base');
  const vault = await Vault.create(new FsStore(join(dir, 'data')), master, createInlineCodec(), { stateDir: join(dir, 'state'), logger });
  await vault.createVolume('v', SIZE);
  const e = await vault.openEngine('v');
  const d0 = Buffer.alloc(SIZE);
  randomBytes(3 * CHUNK_SIZE + 5000).copy(d0); // chunk 3 partly data
  await e.write(0, d0);
  await e.snapshot('s0');
  const d1 = Buffer.from(d0);
  const fresh = randomBytes(CHUNK_SIZE + 100);
  fresh.copy(d1, 0); // chunk 0 and a bit of chunk 1 change after the snapshot
  await e.write(0, fresh);
  await e.close();
  return { dir, keys, master, d0, d1 };
}

async function readAll(vault: Vault, spec: string, size: number): Promise<Buffer> {
  const [vol, snap] = spec.split('@');
  const e = snap ? await vault.openSnapshotEngine(vol, snap) : await vault.openEngine(vol, { readOnly: true });
  try {
    return await e.read(0, size);
  } finally {
    await e.close();
  }
}

/** Every volume and snapshot authenticates in full (what `verify --all` does). */
async function verifyAll(vault: Vault): Promise<string[]> {
  const specs: string[] = [];
  for (const v of await vault.listVolumes({ strict: true })) {
    specs.push(v.name);
    for (const s of await vault.listSnapshots(v.name)) specs.push(`${v.name}@${s.name}`);
  }
  const checked = new Map<string, string | null>();
  for (const spec of specs) {
    const { manifest, root, objects } = await vault.loadManifestOf(spec);
    const r = await verifyManifest(objects, manifest, root, { checked });
    assert.deepEqual(r.damaged, [], `${spec} is damaged`);
  }
  return specs;
}

const ops = ['snapshot-create', 'snapshot-delete', 'volume-delete', 'resize'] as const;

test('a crash after any store mutation of snapshot create/delete, volume delete or resize leaves a consistent vault', { timeout: 600_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'nbd-vault-lifecycle-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const w = await makeWorld(root);
  for (const op of ops) {
    const outcomes: string[] = [];
    let cliVerified = false;
    // every crash point while the old state may still show; once the new state has shown twice,
    // the rest are cleanup deletes: sample them at doubling steps (keeps the test fast)
    for (let n = 1; ; n = outcomes.slice(-2).filter((o) => o === 'new').length === 2 ? n * 2 : n + 1) {
      assert.ok(n < 200, `${op} never completed`);
      const run = join(root, `${op}-${n}`);
      cpSync(w.dir, run, { recursive: true });
      const data = join(run, 'data');
      const r = spawnSync(process.execPath, ['-e', CHILD, data, w.keys, join(run, 'state'), op], {
        env: { ...process.env, NBD_VAULT_TEST_FS_CRASH_AT: `mutation:${n}` },
        encoding: 'utf8',
        timeout: 60_000,
      });
      const completed = r.status === 0 && /completed/.test(r.stdout);
      assert.ok(completed || r.signal === 'SIGKILL', `${op} at mutation ${n}: ${r.status} ${r.signal} ${r.stdout}${r.stderr}`);

      // Reopen as another process would after the crash (its own state: a restart elsewhere).
      const vault = await Vault.open(new FsStore(data), w.master, createInlineCodec(), { stateDir: join(run, 'state-after'), logger });
      const specs = await verifyAll(vault);
      let state: string;
      if (op === 'snapshot-create') {
        assert.ok((await readAll(vault, 'v', SIZE)).equals(w.d1), 'the volume is unchanged');
        assert.ok((await readAll(vault, 'v@s0', SIZE)).equals(w.d0), 's0 is unchanged');
        const has = specs.includes('v@s1');
        if (has) assert.ok((await readAll(vault, 'v@s1', SIZE)).equals(w.d1), 's1 reads as the volume');
        state = has ? 'new' : 'old';
      } else if (op === 'snapshot-delete') {
        assert.ok((await readAll(vault, 'v', SIZE)).equals(w.d1), 'the volume is unchanged');
        const has = specs.includes('v@s0');
        if (has) assert.ok((await readAll(vault, 'v@s0', SIZE)).equals(w.d0), 's0, while listed, reads whole');
        state = has ? 'old' : 'new';
      } else if (op === 'volume-delete') {
        const has = specs.includes('v');
        if (has) {
          assert.ok((await readAll(vault, 'v', SIZE)).equals(w.d1), 'the volume, while listed, reads whole');
          if (specs.includes('v@s0')) assert.ok((await readAll(vault, 'v@s0', SIZE)).equals(w.d0));
        }
        state = has ? 'old' : 'new';
        if (!has) {
          // a half-erased volume leaves only garbage, and gc removes all of it
          await collectGarbage(vault, { dryRun: false, graceMs: 0 }, logger);
          let left = 0;
          for await (const o of vault.store.list('volumes/')) if (!o.key.endsWith('/lease')) left++;
          assert.equal(left, 0, 'gc removes what the deleted volume left');
        }
      } else {
        const info = await vault.volumeInfo('v');
        const size = Number((info as { size?: number }).size);
        assert.ok(size === SIZE || size === SHRUNK, `size ${size}`);
        const now = await readAll(vault, 'v', size);
        assert.ok(now.equals(w.d1.subarray(0, size)), `the volume reads as before or as after the resize (size ${size})`);
        assert.ok((await readAll(vault, 'v@s0', SIZE)).equals(w.d0), 's0 is unchanged');
        state = size === SHRUNK ? 'new' : 'old';
      }
      outcomes.push(completed ? `done:${state}` : state);
      // the CLI's verify --all on one crashed state per operation (a mid-operation one)
      if (!completed && !cliVerified && n >= 2) {
        const v = await runCommand(process.execPath, [CLI, 'verify', '--all'], {
          env: { ...process.env, NBD_VAULT_STORE: data, NBD_VAULT_KEYS: w.keys, NBD_VAULT_STATE: join(run, 'state-cli'), NBD_VAULT_LOG_LEVEL: 'error' },
          okCodes: [0, 1],
          timeoutMs: 60_000,
        });
        assert.equal(v.code, 0, `verify --all after ${op} crashed at mutation ${n}:\n${v.stdout}${v.stderr}`);
        cliVerified = true;
      }
      rmSync(run, { recursive: true, force: true });
      if (completed) {
        assert.equal(state, 'new', `${op} completed: its effect is there`);
        break;
      }
    }
    t.diagnostic(`${op}: ${outcomes.join(' ')}`);
    // once the effect is there, a later crash point never shows the old state again
    const firstNew = outcomes.findIndex((o) => o.endsWith('new'));
    assert.ok(firstNew >= 0 && outcomes.slice(firstNew).every((o) => o.endsWith('new')), `${op}: ${outcomes.join(' ')}`);
  }
});
