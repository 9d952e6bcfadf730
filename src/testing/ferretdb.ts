// FerretDB v1 on SQLite, the test upstream, as a child process: the global test setup, suites that
// need a server of their own (stopped, restarted, with auth or TLS), and the end-to-end benchmark.
// See processes.ts for why this is under src/.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, waitForPort } from './ports.js';
import { ROOT, stopChild } from './processes.js';

/** Builds FerretDB once (minutes; cached outside the repository) and returns the binary's path. */
export function buildFerretDB(): string {
  return execFileSync('bash', [path.join(ROOT, 'scripts/ferretdb.sh'), 'build'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

export interface RunningFerretDB {
  uri: string;
  port: number;
  /** The process id of the server running now (a restart changes it). */
  readonly pid: number | undefined;
  /** Its data directory (SQLite files and state.json). */
  dir: string;
  /** The tail of its stderr (the last 4,000 characters). */
  stderr(): string;
  /** Stops the server (SIGTERM, then SIGKILL) and removes its data directory unless `keepData`. */
  stop(keepData?: boolean): Promise<void>;
  /** Starts it again on the same port and data (after stop(true)). */
  restart(): Promise<void>;
}

export interface FerretDBOptions {
  /** Require SCRAM authentication with this user, created at start. */
  auth?: { username: string; password: string; database: string };
  port?: number;
  /** Listen with TLS only, using this certificate and key (PEM files). */
  tls?: { certFile: string; keyFile: string };
  /** Serve FerretDB's debug HTTP handler (/debug/metrics) on this loopback port (off by default). */
  debugPort?: number;
  /** FerretDB's own log level (default error: quiet; the stderr tail goes into start errors). */
  logLevel?: string;
}

/** Starts FerretDB (SQLite backend) on a free port with its data in a temporary directory. */
export async function startFerretDB(binary: string, options: FerretDBOptions = {}): Promise<RunningFerretDB> {
  const port = options.port ?? (await freePort());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-ferretdb-'));
  const args = [
    '--handler=sqlite',
    `--sqlite-url=file:${dir}/`,
    // FerretDB writes state.json into --state-dir (default: the working directory, the repository).
    `--state-dir=${dir}`,
    ...(options.tls
      ? ['--listen-addr=', `--listen-tls=127.0.0.1:${port}`, `--listen-tls-cert-file=${options.tls.certFile}`, `--listen-tls-key-file=${options.tls.keyFile}`]
      : [`--listen-addr=127.0.0.1:${port}`]),
    '--telemetry=disable',
    `--log-level=${options.logLevel ?? 'error'}`,
    `--debug-addr=${options.debugPort !== undefined ? `127.0.0.1:${options.debugPort}` : '-'}`,
  ];
  if (options.auth) {
    args.push(
      '--test-enable-new-auth',
      `--setup-username=${options.auth.username}`,
      `--setup-password=${options.auth.password}`,
      `--setup-database=${options.auth.database}`,
    );
  }
  let child: ChildProcess;
  let stderr = '';
  const start = async () => {
    child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    try {
      await waitForPort(port, 30_000, child);
    } catch (err) {
      child.kill('SIGKILL');
      throw new Error(`FerretDB did not start: ${(err as Error).message}\n${stderr}`);
    }
  };
  try {
    await start();
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const credentials = options.auth
    ? `${encodeURIComponent(options.auth.username)}:${encodeURIComponent(options.auth.password)}@`
    : '';
  const query = options.auth ? `?authSource=${options.auth.database}&authMechanism=SCRAM-SHA-256` : '';
  return {
    uri: `mongodb://${credentials}127.0.0.1:${port}/${query}`,
    port,
    get pid() {
      return child.pid;
    },
    dir,
    stderr: () => stderr,
    async stop(keepData = false) {
      await stopChild(child, 5000);
      if (!keepData) fs.rmSync(dir, { recursive: true, force: true });
    },
    restart: start,
  };
}
