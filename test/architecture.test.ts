// House rule 1 (../shared/STYLE.md): data flows one way, cli → nbd, volume → codec, store; keys
// beside codec. A lower layer never imports a higher one; codec and store never import each
// other. The protocol core owns the Export contract (nbd/export.ts) and imports nothing from
// volume/; volume/ imports nothing from nbd/; both share the leaf block-io.ts (as errors.ts);
// cli/ wires engines in as Exports. This test reads every import in src/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';

const SRC = resolve(__dirname, '../../src');
const ALLOWED: Record<string, string[]> = {
  cli: ['cli', 'nbd', 'volume', 'codec', 'store', 'keys', 'util', 'errors', 'block-io'],
  nbd: ['nbd', 'util', 'errors', 'block-io'],
  volume: ['volume', 'codec', 'store', 'keys', 'util', 'errors', 'block-io'],
  codec: ['codec', 'keys', 'util', 'errors'],
  store: ['store', 'util', 'errors'],
  keys: ['keys', 'util', 'errors'],
  util: ['util', 'errors'],
};

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

test('no import crosses the layers upwards', () => {
  const violations: string[] = [];
  let checked = 0;
  for (const file of tsFiles(SRC)) {
    const layer = relative(SRC, file).split('/')[0];
    const allowed = ALLOWED[layer];
    if (!allowed) continue; // errors.ts: a leaf everyone may use
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:import|export)[^'"]*?from\s+'(\.[^']+)'|import\('(\.[^']+)'\)/g)) {
      const spec = m[1] ?? m[2];
      const target = relative(SRC, resolve(dirname(file), spec));
      checked++;
      const ok = allowed.some((a) => target === a || target.startsWith(`${a}/`));
      if (!ok) violations.push(`${relative(SRC, file)} imports ${target}`);
    }
  }
  assert.ok(checked > 100, `read the imports (${checked})`);
  assert.deepEqual(violations, []);
});
