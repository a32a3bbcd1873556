// Builds the console: src/ (ES modules, npm packages) -> dist/console.js + console.css + index.html.
// The Toolbelt completion list is derived from the toolbelt typings at build time.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const typings = join(here, '../../../libs/runtimes/node/lp-faas-toolbelt/index.d.ts');

// `static Name(args): Type;` inside `export class Toolbelt { … }`, with the /** doc */ before it.
export function toolbeltMembers(text) {
  const body = /export class Toolbelt \{([\s\S]*?)\n\}/.exec(text);
  if (!body) throw new Error('class Toolbelt not found in ' + typings);
  const members = [];
  let doc = '';
  for (const line of body[1].split('\n')) {
    const comment = /\/\*\*\s*(.*?)\s*\*\//.exec(line);
    if (comment) { doc = comment[1]; continue; }
    const m = /^\s*static (\w+)\((.*)\):\s*(.+);\s*$/.exec(line);
    if (m) { members.push({ name: m[1], signature: `(${m[2]}): ${m[3]}`, doc }); doc = ''; }
  }
  return members;
}

const toolbelt = {
  name: 'toolbelt',
  setup(b) {
    b.onResolve({ filter: /^virtual:toolbelt$/ }, () => ({ path: 'toolbelt', namespace: 'toolbelt' }));
    b.onLoad({ filter: /.*/, namespace: 'toolbelt' }, () => ({
      contents: 'export const TOOLBELT = ' + JSON.stringify(toolbeltMembers(readFileSync(typings, 'utf8'))) + ';',
      loader: 'js', watchFiles: [typings],
    }));
  },
};

// The bundle's esbuild options; outdir defaults to dist/.
export const options = (outdir = join(here, 'dist')) => ({
  entryPoints: { console: join(here, 'src/main.js') },
  bundle: true, minify: true, sourcemap: false, format: 'iife', target: 'es2020',
  outdir, plugins: [toolbelt], legalComments: 'linked', logLevel: 'warning',
});

export async function buildConsole(outdir = join(here, 'dist')) {
  mkdirSync(outdir, { recursive: true });
  await build(options(outdir));
  copyFileSync(join(here, 'src/index.html'), join(outdir, 'index.html'));
}

// The pure helpers of the pages as one ES module (for the unit tests, run by Node).
export async function buildHelpers(outfile) {
  const contents = [
    "export { parseRoute } from './src/route.js';",
    "export { failureLine } from './src/code-editor.js';",
    "export { rollbackChoices } from './src/deployments.js';",
    "export { toSeries } from './src/home.js';",
    "export { samplePayload } from './src/editor.js';",
    "export { parseJson, duration } from './src/ui.js';",
    "export { TOOLBELT } from 'virtual:toolbelt';",
  ].join('\n');
  await build({ stdin: { contents, resolveDir: here, loader: 'js' }, bundle: true, format: 'esm',
                platform: 'neutral', mainFields: ['module', 'main'], outfile, plugins: [toolbelt],
                loader: { '.css': 'empty' }, logLevel: 'warning' });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const outdir = process.argv[2] || join(here, 'dist');
  await buildConsole(outdir);
  console.log('console built into', outdir);
}
