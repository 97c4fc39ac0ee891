// The paper recovery key: round trip, and every kind of typo found and its line named.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { formatRecoveryKey, masterKeyId, parseRecoveryKey } from '../../src/keys';
import { SecretKey } from '../../src/keys/secret-key';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

function keyLines(text: string): string[] {
  return text.trimEnd().split('\n');
}

test('a recovery key round-trips, survives case, dashes, O/I/L and a missing header', () => {
  for (let k = 0; k < 20; k++) {
    const master = new SecretKey(randomBytes(32), 'master');
    const text = formatRecoveryKey(master);
    const lines = keyLines(text);
    assert.equal(lines.length, 5);
    assert.match(lines[0], new RegExp(`^nbd-vault recovery key v1 \\(master key id ${masterKeyId(master).toString('hex')}\\)$`));
    for (let n = 1; n <= 4; n++) assert.match(lines[n], new RegExp(`^${n}: [${ALPHABET}]{4}( [${ALPHABET}]{4}){3}  [${ALPHABET}]{2}$`));
    assert.ok(!text.includes(master.bytes.toString('hex')));
    assert.ok(parseRecoveryKey(text).bytes.equals(master.bytes));
    // typed sloppily: lower case, dashes, 0 as o and 1 as l, no header, lines shuffled, CRLF
    const sloppy = [3, 1, 4, 2].map((n) => lines[n].slice(0, 3) + lines[n].slice(3).toLowerCase().replace(/ /g, '-').replace(/0/g, 'o').replace(/1/g, 'l'));
    assert.ok(parseRecoveryKey(sloppy.join('\r\n')).bytes.equals(master.bytes));
    // no space after the number's separator, or none at all between the groups; or "2." and "3)"
    const tight = [1, 2, 3, 4].map((n) => `${n}${[':', '.', ')', ':'][n - 1]}${lines[n].slice(3).replace(/ /g, '')}`);
    assert.ok(parseRecoveryKey(tight.join('\n')).bytes.equals(master.bytes), tight.join(' | '));
  }
});

test('every single-character typo is detected and its line named', () => {
  const master = new SecretKey(randomBytes(32), 'master');
  const lines = keyLines(formatRecoveryKey(master));
  let tried = 0;
  for (let n = 1; n <= 4; n++) {
    const line = lines[n];
    for (let pos = 3; pos < line.length; pos++) {
      if (line[pos] === ' ') continue;
      for (const c of [ALPHABET[(ALPHABET.indexOf(line[pos]) + 1) % 32], ALPHABET[(ALPHABET.indexOf(line[pos]) + 17) % 32]]) {
        const typo = [...lines];
        typo[n] = line.slice(0, pos) + c + line.slice(pos + 1);
        // 10 check bits: a typo slips through a line check 1 time in 1024, then the 64-bit key id catches it
        assert.throws(() => parseRecoveryKey(typo.join('\n')), (err: Error) => new RegExp(`line ${n}|does not match its key id`).test(err.message), `typo at line ${n} pos ${pos}`);
        tried++;
      }
    }
  }
  assert.equal(tried, 4 * 18 * 2);
});

test('missing, extra, repeated and foreign lines are refused with a clear message', () => {
  const a = keyLines(formatRecoveryKey(new SecretKey(randomBytes(32), 'master')));
  const b = keyLines(formatRecoveryKey(new SecretKey(randomBytes(32), 'master')));
  const err = (lines: string[]) => {
    try {
      parseRecoveryKey(lines.join('\n'));
    } catch (e) {
      return (e as Error).message;
    }
    return 'no error';
  };
  assert.match(err([a[0], a[1], a[2], a[4]]), /line 3 missing/);
  assert.match(err([a[1], a[2], a[2], a[3], a[4]]), /line 2 is given twice/);
  assert.match(err([...a, '5: AAAA AAAA AAAA AAAA  AA']), /there is no line 5/);
  assert.match(err([a[1], a[2].slice(0, -5) + a[2].slice(-4), a[3], a[4]]), /line 2 has 17 characters, expected 18/);
  assert.match(err([a[1], a[2].replace(/^2: ./, '2: U'), a[3], a[4]]), /line 2, character 1 is not a recovery-key character/);
  assert.match(err([a[1], a[2], b[3], a[4]]), /does not match its key id/);
  assert.match(err([b[0], ...a.slice(1)]), /does not match its key id/); // header of another key
  assert.match(err([a[0].replace('v1', 'v2'), ...a.slice(1)]), /format v2 is not supported/);
  assert.match(err(['hello', ...a.slice(1)]), /must start with its number/);
  for (const l of a.slice(1)) assert.ok(!err([l]).includes(l.slice(3, 10)), 'an error never echoes key characters');
});
