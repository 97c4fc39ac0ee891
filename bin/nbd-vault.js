#!/usr/bin/env node
'use strict';
require('../dist/src/cli/main.js').main(process.argv).catch((err) => {
  // main() prints its own errors; this is the last line of defence.
  process.stderr.write(`nbd-vault: ${err && err.message ? err.message : String(err)}\n`);
  process.exit(1);
});
