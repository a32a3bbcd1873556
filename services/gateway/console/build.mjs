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

const out = join(here, 'dist');
mkdirSync(out, { recursive: true });
await build({
  entryPoints: { console: join(here, 'src/main.js') },
  bundle: true, minify: true, sourcemap: false, format: 'iife', target: 'es2020',
  outdir: out, plugins: [toolbelt], legalComments: 'linked', logLevel: 'warning',
});
copyFileSync(join(here, 'src/index.html'), join(out, 'index.html'));
console.log('console built into', out);
