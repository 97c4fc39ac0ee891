#!/usr/bin/env node
'use strict';
// Before anything touches libuv's thread pool (fs, crypto): the fs store keeps many file writes
// and fsyncs in flight, and with the default 4 threads a small, urgent one (the writer session's
// heartbeat) waited behind them for seconds.
process.env.UV_THREADPOOL_SIZE = process.env.UV_THREADPOOL_SIZE || '32';
// serve: a SIGHUP (`systemctl reload`) before the server's own handler is in (modules load first)
// must not end it: its default action would. This listener does nothing; the server's reloads.
if (process.argv[2] === 'serve') process.on('SIGHUP', () => {});
// serve runs for long under --memory-limit, and three process settings that only act at startup
// keep it near that limit or cut its CPU (BENCHMARKS.md, peak RSS by phase; stop 40):
// - V8 sizes its young generation from the machine's RAM (128 MiB on a 24 GiB machine), and a busy
//   server touches all of it over and over: a 16 MiB semi-space instead, same throughput measured;
// - glibc gives every thread that allocates an arena of its own (up to 8 per core), each keeping
//   what it freed: MALLOC_ARENA_MAX=2, ~70 MiB less at the peak, same throughput measured;
// - every 4 KiB page of fresh memory (a chunk decoded or received) costs a page fault, and a fault
//   is dear in a VM: GLIBC_TUNABLES=glibc.malloc.hugetlb=1 lets glibc ask for transparent huge
//   pages where the kernel leaves that to madvise, half the faults of a cold export and a seventh
//   of an import's main thread, ~0.6 CPU-s less for each of the 1 GiB corpus, same peak.
// So serve replaces itself (same pid, stdio and environment otherwise) with them, unless the user
// chose them already (a semi-space flag or NODE_OPTIONS, MALLOC_ARENA_MAX, GLIBC_TUNABLES), NBD_VAULT_REEXEC=0
// says not to, a parent talks to it over IPC (lost across exec), or this Node cannot.
const SEMI_SPACE = '--max-semi-space-size';
const dashed = (s) => s.replace(/_/g, '-');
const semiChosen = process.execArgv.some((a) => dashed(a).startsWith(SEMI_SPACE)) || dashed(process.env.NODE_OPTIONS || '').includes(SEMI_SPACE);
const extraArgs = semiChosen ? [] : [`${SEMI_SPACE}=16`];
const arenaChosen = process.env.MALLOC_ARENA_MAX !== undefined;
const tunablesChosen = process.env.GLIBC_TUNABLES !== undefined;
if (
  process.argv[2] === 'serve' &&
  (extraArgs.length > 0 || !arenaChosen || !tunablesChosen) &&
  process.env.NBD_VAULT_REEXEC !== '0' &&
  typeof process.execve === 'function' &&
  !process.channel &&
  canExecute(process.execPath)
) {
  try {
    const env = { ...process.env };
    if (!arenaChosen) env.MALLOC_ARENA_MAX = '2';
    if (!tunablesChosen) env.GLIBC_TUNABLES = 'glibc.malloc.hugetlb=1';
    process.execve(process.execPath, [process.execPath, ...process.execArgv, ...extraArgs, ...process.argv.slice(1)], env);
  } catch {
    // refused before the exec (no exec here): serve with the defaults
  }
}

function canExecute(file) {
  const fs = require('node:fs');
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
require('../dist/src/cli/main.js').main(process.argv).catch((err) => {
  // main() prints its own errors; this is the last line of defence.
  process.stderr.write(`nbd-vault: ${err && err.message ? err.message : String(err)}\n`);
  process.exit(1);
});
