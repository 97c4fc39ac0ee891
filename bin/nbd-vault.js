#!/usr/bin/env node
'use strict';
// Before anything touches libuv's thread pool (fs, crypto): the fs store keeps many file writes
// and fsyncs in flight, and with the default 4 threads a small, urgent one (the writer session's
// heartbeat) waited behind them for seconds.
process.env.UV_THREADPOOL_SIZE = process.env.UV_THREADPOOL_SIZE || '32';
// serve runs for long under --memory-limit. V8 sizes its young generation from the machine's RAM
// (128 MiB on a 24 GiB machine), and a busy server touches all of it over and over: ~100 MiB of
// resident memory no budget counts. Such flags only act at startup, so serve replaces itself
// (same pid and stdio) with a 16 MiB semi-space: the same throughput measured, peak RSS lower
// (BENCHMARKS.md). A semi-space the user chose (flag or NODE_OPTIONS) is left alone.
const SEMI_SPACE = '--max-semi-space-size';
if (
  process.argv.slice(2).includes('serve') &&
  typeof process.execve === 'function' &&
  !process.execArgv.some((a) => a.startsWith(SEMI_SPACE)) &&
  !(process.env.NODE_OPTIONS || '').includes(SEMI_SPACE)
) {
  try {
    process.execve(process.execPath, [process.execPath, ...process.execArgv, `${SEMI_SPACE}=16`, ...process.argv.slice(1)], process.env);
  } catch {
    // not possible here: serve with V8's default
  }
}
require('../dist/src/cli/main.js').main(process.argv).catch((err) => {
  // main() prints its own errors; this is the last line of defence.
  process.stderr.write(`nbd-vault: ${err && err.message ? err.message : String(err)}\n`);
  process.exit(1);
});
