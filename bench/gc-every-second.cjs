'use strict';
// An experiment's launcher, not a setting: the CLI with V8's collector run every second, to see
// how much of the server's peak memory is garbage waiting for it (BENCHMARKS.md, "Compaction no
// longer fills the read cache"). Usage as memory-phases.sh's CLI: "gc1s|X=1||bench/gc-every-second.cjs"
const v8 = require('node:v8');
v8.setFlagsFromString('--expose-gc');
const gc = require('node:vm').runInNewContext('gc');
setInterval(() => gc(), 1000).unref();
require('../bin/nbd-vault.js');
