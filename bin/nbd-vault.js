#!/usr/bin/env node
'use strict';
// Before anything touches libuv's thread pool (fs, crypto): the fs store keeps many file writes
// and fsyncs in flight, and with the default 4 threads a small, urgent one (the writer session's
// heartbeat) waited behind them for seconds.
process.env.UV_THREADPOOL_SIZE = process.env.UV_THREADPOOL_SIZE || '32';
require('../dist/src/cli/main.js').main(process.argv).catch((err) => {
  // main() prints its own errors; this is the last line of defence.
  process.stderr.write(`nbd-vault: ${err && err.message ? err.message : String(err)}\n`);
  process.exit(1);
});
