import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Builds FerretDB once (cached outside the repo) and returns the binary's path. */
export function buildFerretDB(): string {
  return execFileSync('bash', [path.join(ROOT, 'scripts/ferretdb.sh'), 'build'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

export interface RunningFerretDB {
  uri: string;
  port: number;
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
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on the port (polls connect, up to `timeoutMS`). */
export async function waitForPort(port: number, timeoutMS = 30_000, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMS;
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    if (child && child.exitCode !== null) throw new Error(`process exited with code ${child.exitCode} before listening`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on port ${port} after ${timeoutMS} ms`);
    await new Promise((r) => setTimeout(r, delay));
  }
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
    '--log-level=error',
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
  const start = async () => {
    child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    try {
      await waitForPort(port, 30_000, child);
    } catch (err) {
      child.kill('SIGKILL');
      throw new Error(`FerretDB did not start: ${(err as Error).message}\n${stderr}`);
    }
  };
  await start();
  const credentials = options.auth
    ? `${encodeURIComponent(options.auth.username)}:${encodeURIComponent(options.auth.password)}@`
    : '';
  const query = options.auth ? `?authSource=${options.auth.database}&authMechanism=SCRAM-SHA-256` : '';
  return {
    uri: `mongodb://${credentials}127.0.0.1:${port}/${query}`,
    port,
    async stop(keepData = false) {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      if (!keepData) fs.rmSync(dir, { recursive: true, force: true });
    },
    restart: start,
  };
}
