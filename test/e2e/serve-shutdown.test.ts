// `serve` stopped (SIGTERM) while compaction folds what fio's random writes journaled: the step in
// flight stops and is waited for before the lease goes and the codec threads end. Before, a step
// ran on past "volume flushed and closed" and logged one "journal read failed" error per frame
// it still wanted (341 in one shutdown), after storing objects no root would name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCommand } from '../helpers/fuse-disk';
import { makeTestVault } from '../helpers/vault-server';

const count = (log: string, msg: string) => log.split(`"msg":"${msg}"`).length - 1;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('serve stops cleanly while compaction folds a random-write burst: exit 0, no warning or error, no work after the close', async (t) => {
  const v = await makeTestVault();
  t.after(() => v.cleanup());
  await v.cli('volume', 'create', 'w', '--size', '1G');
  let stoppedMidStep = 0;
  for (let round = 1; round <= 3 && stoppedMidStep === 0; round++) {
    const srv = await v.serve(['--log-level', 'debug']);
    t.after(() => srv.kill());
    const fio = await runCommand(
      'fio',
      ['--name=burst', '--ioengine=nbd', `--uri=${srv.uri('w')}`, '--rw=randwrite', '--bs=4k', '--size=1G', '--iodepth=32', '--runtime=5', '--time_based', '--norandommap', '--randrepeat=0', '--end_fsync=1', '--output-format=json'],
      { timeoutMs: 120_000 },
    );
    assert.equal(JSON.parse(fio.stdout.slice(fio.stdout.indexOf('{'))).jobs[0].error, 0);
    // SIGTERM while a compaction step is in flight (started, not yet ended)
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && count(srv.log(), 'compaction step started') <= count(srv.log(), 'compaction step')) await sleep(5);
    assert.equal(await srv.stop(), 0, `round ${round}: exit code`);
    const log = srv.log();
    const afterSignal = log.slice(log.indexOf('"msg":"signal received"'));
    const problems = afterSignal.split('\n').filter((l) => /"level":(40|50|60)/.test(l));
    assert.deepEqual(problems, [], `round ${round}: no warning or error while stopping`);
    const afterClose = log.slice(log.indexOf('"msg":"volume flushed and closed"'));
    assert.doesNotMatch(afterClose, /compaction|journal read failed/, `round ${round}: no compaction after the volume closed`);
    stoppedMidStep += count(afterSignal, 'compaction stopped: the volume is closing (the journals stay)');
  }
  assert.ok(stoppedMidStep > 0, 'a shutdown met a compaction step in flight (else this test proved nothing)');
  // the next server serves what the bursts wrote: every journal is still named and readable
  const srv = await v.serve();
  t.after(() => srv.kill());
  await runCommand('nbdcopy', [srv.uri('w'), 'null:'], { timeoutMs: 120_000 });
  assert.equal(await srv.stop(), 0);
  assert.doesNotMatch(srv.log(), /"level":(40|50|60)/);
});
