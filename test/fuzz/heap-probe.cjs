/**
 * Preloaded into a node under test (NODE_OPTIONS=--require=<this file>,
 * HEAP_PROBE_FILE=<path>): on SIGUSR2 it collects garbage and writes
 * process.memoryUsage() to HEAP_PROBE_FILE. Live heap after a full
 * collection tells retained objects from memory the allocators keep, without
 * a hook in the product. Test-only; changes nothing else in the process.
 */
'use strict';
const { writeFileSync, renameSync } = require('node:fs');
const { setFlagsFromString } = require('node:v8');
const { runInNewContext } = require('node:vm');

const file = process.env.HEAP_PROBE_FILE;
if (file) {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc');
  process.on('SIGUSR2', () => {
    gc();
    gc();
    // Written whole, then renamed: the reader never sees half a file.
    writeFileSync(`${file}.tmp`, JSON.stringify(process.memoryUsage()));
    renameSync(`${file}.tmp`, file);
  });
}
