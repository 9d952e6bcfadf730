// Helpers shared by the tests (vitest runs this TypeScript) and the benchmarks (plain node, importing
// the build's dist/testing/): the repository's paths, stopping a child process, a temporary config
// directory. They live under src/ so that `npm run build` compiles them for the benchmarks.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository (src/testing and dist/testing are both two levels below it). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The built command line, run as an operator would run it. */
export const CLI = path.join(ROOT, 'dist/cli/main.js');

/** Fails with a clear message when the CLI was not built (CLI tests and benchmarks run the build). */
export function assertBuilt(): void {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
}

/** Stops a child: SIGTERM, then SIGKILL after `graceMS`; resolves once it exited. */
export function stopChild(child: ChildProcess, graceMS = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMS);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** A temporary config directory: runtime.yaml and apps/<file> manifests (file name → YAML text). */
export function tempConfig(runtimeYaml: string, apps: Record<string, string> = {}, prefix = 'mdb-config-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.writeFileSync(path.join(dir, 'runtime.yaml'), runtimeYaml);
  fs.mkdirSync(path.join(dir, 'apps'));
  for (const [file, text] of Object.entries(apps)) fs.writeFileSync(path.join(dir, 'apps', file), text);
  return dir;
}
