// FerretDB v1.24.2 on SQLite, the test upstream (DESIGN.md section 5), started for a benchmark: the
// cached binary that `scripts/ferretdb.sh build` builds, on a free port, its data in a temporary
// directory removed at stop. The same flags as test/helpers/ferretdb.ts (which is TypeScript for the
// tests; the benchmarks are plain .mjs run by node, so this is a small copy, not an import).
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ROOT, freePort, stopChild } from './processes.mjs';

/** The binary's path, building it on first use (minutes, once; cached outside the repository). */
export function buildFerretDB() {
  return execFileSync('bash', [path.join(ROOT, 'scripts/ferretdb.sh'), 'build'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Starts FerretDB (SQLite backend) as a child process. Returns { uri, port, pid, dir, stop() }.
 * `logLevel`: FerretDB's own (error: quiet; its stderr tail is kept for the error message).
 */
export async function startFerretDB({ binary = buildFerretDB(), logLevel = 'error' } = {}) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-bench-ferretdb-'));
  const child = spawn(
    binary,
    [
      '--handler=sqlite',
      `--sqlite-url=file:${dir}/`,
      // FerretDB writes state.json into --state-dir (default: the working directory, the repository).
      `--state-dir=${dir}`,
      `--listen-addr=127.0.0.1:${port}`,
      '--telemetry=disable',
      `--log-level=${logLevel}`,
      '--debug-addr=-',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  const deadline = Date.now() + 30_000;
  for (let delay = 20; !(await canConnect(port)); delay = Math.min(delay * 2, 250)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
      throw new Error(`FerretDB did not start (${child.exitCode !== null ? `exit ${child.exitCode}` : 'timeout'}):\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, delay));
  }
  return {
    uri: `mongodb://127.0.0.1:${port}/`,
    port,
    pid: child.pid,
    dir,
    stderr: () => stderr,
    async stop() {
      await stopChild(child, 5000);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
