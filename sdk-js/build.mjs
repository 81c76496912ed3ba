#!/usr/bin/env node
// One command from a JavaScript module to a Berth plugin component:
//
//     node sdk-js/build.mjs <kind> <plugin.js> <out.wasm>
//
// <kind> is the plugin kind (admission-policy, auth-policy, cleanup-policy, notification-sink);
// the world is `<kind>-plugin` from Berth's wit/ (package berth:plugin@0.1.0). The component
// gets no WASI capabilities beyond what the world needs: clocks, random, stdio and HTTP are
// left out, so a plugin cannot reach the network or read the clock except through the host.
// The output is written only when the build succeeds; an up-to-date output (newer than the
// source, the WIT and this script) is left alone, so a test run builds each plugin once.
import { componentize } from '@bytecodealliance/componentize-js';
import { readdir, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const KINDS = ['admission-policy', 'auth-policy', 'cleanup-policy', 'notification-sink'];
const here = dirname(fileURLToPath(import.meta.url));
const wit = process.env.BERTH_WIT_DIR ? resolve(process.env.BERTH_WIT_DIR) : resolve(here, '..', 'wit');

const [kind, source, out] = process.argv.slice(2);
if (!KINDS.includes(kind) || !source || !out) {
  console.error(`usage: node build.mjs <${KINDS.join('|')}> <plugin.js> <out.wasm>`);
  process.exit(2);
}

async function mtime(p) {
  try { return (await stat(p)).mtimeMs; } catch { return 0; }
}

async function newestInput() {
  let newest = Math.max(await mtime(source), await mtime(fileURLToPath(import.meta.url)));
  for (const f of await readdir(wit)) newest = Math.max(newest, await mtime(join(wit, f)));
  return newest;
}

if (!process.env.BERTH_REBUILD && (await mtime(out)) > (await newestInput())) {
  console.log(`${out}: up to date`);
  process.exit(0);
}
const started = Date.now();
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: wit,
  worldName: `${kind}-plugin`,
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await writeFile(`${out}.tmp`, component);
await rename(`${out}.tmp`, out);
console.log(`${out}: ${kind}-plugin, ${component.length} bytes, built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
