#!/usr/bin/env node
// Builds dist/ (npm run build) when it is missing or older than src/: run by `npm ci` / `npm install`
// in a clone (package.json "prepare"), so that `npx mdb-runtime` works right after, and by
// scripts/dev.mjs. Without TypeScript installed (`npm ci --omit=dev`) it builds nothing and says so:
// such an install runs a dist/ built elsewhere (the Dockerfile's build stage; a published package).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Why dist/ needs a build (a source without an up-to-date output), or undefined when it is current. */
export function staleness(root = ROOT) {
  const src = path.join(root, 'src');
  const walk = (dir) => fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
  for (const file of walk(src)) {
    let out;
    if (file.endsWith('.ts') && !file.endsWith('.d.ts')) out = file.slice(0, -3) + '.js';
    else if (file.endsWith('.html')) out = file;
    else continue;
    out = path.join(root, 'dist', path.relative(src, out));
    let built;
    try {
      built = fs.statSync(out).mtimeMs;
    } catch {
      return `${path.relative(root, out)} is missing`;
    }
    if (fs.statSync(file).mtimeMs > built) return `${path.relative(root, file)} changed since the last build`;
  }
  return undefined;
}

export function typescriptInstalled(root = ROOT) {
  try {
    createRequire(path.join(root, 'package.json')).resolve('typescript/package.json');
    return true;
  } catch {
    return false;
  }
}

/** Runs `npm run build`; resolves with its exit status. Output goes to this process's stdout/stderr. */
export function runBuild(root = ROOT) {
  // Under npm, the npm that runs us (npm_execpath); otherwise the one on the PATH.
  const npmCli = process.env.npm_execpath;
  const [cmd, args] = npmCli && /npm-cli\.js$/.test(npmCli) ? [process.execPath, [npmCli]] : ['npm', []];
  const child = spawn(cmd, [...args, 'run', 'build', '--silent'], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  return new Promise((resolve) => {
    child.once('error', () => resolve(127));
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (!fs.existsSync(path.join(ROOT, 'src'))) process.exit(0);
  const reason = staleness();
  if (reason === undefined) process.exit(0);
  if (!typescriptInstalled()) {
    process.stderr.write('mdb-runtime prepare: TypeScript is not installed (npm ci --omit=dev?): dist/ is not built here\n');
    process.exit(0);
  }
  process.stderr.write(`mdb-runtime prepare: building dist/ (${reason})\n`);
  process.exit(await runBuild());
}
