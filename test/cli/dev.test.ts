import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../../src/testing/ports.js';
import { CLI, ROOT, assertBuilt } from '../../src/testing/processes.js';

/*
 * `npm run dev` (scripts/dev.mjs) as a newcomer runs it: real processes (npm, the runner, FerretDB, the
 * proxy), the CLI beside it, the Node driver and mongosh against what it prints. Each run gets its own
 * cache directory (MDB_CACHE_DIR) holding a link to the FerretDB binary the suite built, and free ports
 * moved by the variables. MDB_DEV_NO_BUILD=1: the runner uses the dist/ under test as it is.
 */

const run = promisify(execFile);
const DEV = path.join(ROOT, 'scripts/dev.mjs');
const FERRETDB_DIR = 'ferretdb-v1.24.2';

/** The environment without the caller's MDB_* and app secrets, plus `extra`. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MDB_') && !/_JWT_SECRET$/.test(k)) env[k] = v;
  return { ...env, npm_config_update_notifier: 'false', MDB_DEV_NO_BUILD: '1', ...extra };
}

/** A cache directory with the suite's FerretDB binary in place (so no build), or empty. */
function tempCache(withFerretDB: boolean): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-dev-cache-'));
  if (withFerretDB) {
    fs.mkdirSync(path.join(dir, FERRETDB_DIR));
    fs.symlinkSync(inject('ferretdbBinary'), path.join(dir, FERRETDB_DIR, 'ferretdb'));
  }
  return dir;
}

/** True while `pid` runs (a zombie, dead but not yet reaped by its new parent, does not count). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** A process group leader (detached) with its output, waited on by events (lines, exit). */
class Run {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly waiters = new Set<() => void>();

  constructor(cmd: string, args: string[], env: NodeJS.ProcessEnv, stdin: 'ignore' | 'pipe' = 'ignore') {
    this.child = spawn(cmd, args, { cwd: ROOT, env, detached: true, stdio: [stdin, 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => {
      this.stdout += d.toString();
      this.notify();
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      this.notify();
    });
    this.exited = new Promise((resolve) =>
      this.child.once('close', (code, signal) => {
        this.notify();
        resolve({ code, signal });
      }),
    );
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  output(): string {
    return `--- stdout ---\n${this.stdout}\n--- stderr ---\n${this.stderr}`;
  }

  /** Resolves once `probe` holds (checked on every output and at exit); fails on exit or timeout. */
  waitFor(probe: () => boolean, what: string, timeoutMS = 60_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`no ${what} within ${timeoutMS} ms\n${this.output()}`)), timeoutMS);
      const check = () => {
        if (probe()) done();
        else if (!this.running) done(new Error(`exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}\n${this.output()}`));
      };
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      this.waiters.add(check);
      check();
    });
  }

  async exit(timeoutMS = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.exited,
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still running after ${timeoutMS} ms\n${this.output()}`)), timeoutMS))),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The whole process group, as a terminal's Ctrl-C does. */
  signalGroup(signal: NodeJS.Signals): void {
    process.kill(-this.child.pid!, signal);
  }

  async kill(): Promise<void> {
    if (!this.running) return;
    try {
      process.kill(-this.child.pid!, 'SIGKILL');
    } catch {
      // gone
    }
    await this.exited;
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** Resolves once `file` exists (fs.watch on its directory; the fake go writes it with a rename). */
function fileAppears(file: string, timeoutMS = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const watcher = fs.watch(path.dirname(file), () => check());
    const timer = setTimeout(() => done(new Error(`${file} did not appear within ${timeoutMS} ms`)), timeoutMS);
    const done = (err?: Error) => {
      clearTimeout(timer);
      watcher.close();
      if (err) reject(err);
      else resolve();
    };
    const check = () => {
      if (fs.existsSync(file)) done();
    };
    check();
  });
}

/** The state file the runner writes (src/cli/dev-state.ts). */
interface DevStateFile {
  pid: number;
  proxyPid: number;
  upstream: { port: number; pid: number; dir: string; log: string };
  env: Record<string, string>;
}

/** `mdb-runtime <args>` run beside the runner: a clean environment naming only the cache directory. */
async function cli(args: string[], cache: string, extra: Record<string, string> = {}) {
  const started = Date.now();
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { cwd: ROOT, env: cleanEnv({ MDB_CACHE_DIR: cache, ...extra }), timeout: 20_000 });
    return { code: 0, stdout, stderr, ms: Date.now() - started };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string; killed?: boolean };
    if (e.killed) throw new Error(`mdb-runtime ${args.join(' ')} did not finish within 20 s\n${e.stdout}\n${e.stderr}`);
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '', ms: Date.now() - started };
  }
}

beforeAll(() => assertBuilt());

describe('npm run dev, with FerretDB already built, on ports moved by the variables', () => {
  let cache: string;
  let dev: Run;
  let ports: { wire: number; http: number; upstream: number };
  /** Files of the working tree FerretDB used to write into, with their mtime before the run (or -1). */
  const before = new Map<string, number>();
  const treeFiles = ['state.json', '.ferretdb-data', 'config/state.json', 'scripts/state.json'].map((f) => path.join(ROOT, f));
  const mtime = (f: string) => (fs.existsSync(f) ? fs.statSync(f).mtimeMs : -1);
  let state: DevStateFile;
  let uris: string[];

  beforeAll(async () => {
    cache = tempCache(true);
    ports = { wire: await freePort(), http: await freePort(), upstream: await freePort() };
    for (const f of treeFiles) before.set(f, mtime(f));
    dev = new Run('npm', ['run', 'dev'], cleanEnv({
      MDB_CACHE_DIR: cache,
      MDB_LISTEN: `127.0.0.1:${ports.wire}`,
      MDB_HTTP_LISTEN: `127.0.0.1:${ports.http}`,
      MDB_DEV_UPSTREAM_PORT: String(ports.upstream),
    }));
    await dev.waitFor(() => /^Status page: .*\n/m.test(dev.stdout), 'the status page line');
    state = JSON.parse(fs.readFileSync(path.join(cache, 'dev-state.json'), 'utf8')) as DevStateFile;
    uris = [...dev.stdout.matchAll(/^ {4}'(mongodb:\/\/[^']*)'$/gm)].map((m) => m[1]!);
  });
  afterAll(async () => {
    await dev?.kill();
    for (const pid of [state?.upstream.pid, state?.proxyPid]) if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
    fs.rmSync(cache, { recursive: true, force: true });
  });

  it('prints the connection strings last (after the proxy started), shell-quoted, then the status page URL', async () => {
    const lines = dev.stdout.trimEnd().split('\n');
    expect(lines.at(-1)).toBe(`Status page: http://127.0.0.1:${ports.http}/`);
    // Above it: the connection strings, one per app, each single-quoted, nothing from the proxy between.
    const banner = lines.lastIndexOf('Connection strings (paste one after `npx mongosh`, or give it to a driver):');
    expect(banner, dev.output()).toBeGreaterThan(0);
    expect(lines.slice(banner + 1, -2)).toEqual([
      '  playground (no token: auth_required: false):',
      `    'mongodb://127.0.0.1:${ports.wire}/?appName=playground'`,
      '  task_manager (a token valid 8h; SASL PLAIN):',
      expect.stringMatching(new RegExp(`^    'mongodb://task_manager:[\\w-]+\\.[\\w-]+\\.[\\w-]+@127\\.0\\.0\\.1:${ports.wire}/\\?authMechanism=PLAIN&authSource=%24external'$`)),
    ]);
    expect(uris).toHaveLength(2);
    // The proxy's startup line came before the banner.
    const listening = lines.findIndex((l) => l.includes(`listening on 127.0.0.1:${ports.wire}`));
    expect(listening, dev.output()).toBeGreaterThanOrEqual(0);
    expect(listening).toBeLessThan(lines.indexOf(lines.find((l) => l.startsWith('mdb-runtime is ready'))!));
    // Pasted into a shell, a quoted string arrives whole (the & does not background anything).
    const line = lines[banner + 4]!.trim();
    const { stdout } = await run('bash', ['-c', `printf '%s' ${line}`]);
    expect(stdout).toBe(uris[1]);
    // The status page answers at the printed URL.
    const page = await fetch(`http://127.0.0.1:${ports.http}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
  });

  it("sends FerretDB's log to a file under the cache, whose path it prints, not to the terminal", () => {
    expect(state.upstream.log.startsWith(cache + path.sep)).toBe(true);
    expect(dev.stdout).toContain(`its log: ${state.upstream.log}`);
    expect(fs.existsSync(state.upstream.log)).toBe(true);
    // FerretDB's console format: "2026-...Z\tWARN\tclientconn/conn.go:624\t..."
    expect(`${dev.stdout}\n${dev.stderr}`).not.toMatch(/^\d{4}-\d\d-\d\dT\S+\t(DEBUG|INFO|WARN|ERROR)\t/m);
  });

  it('prints the generated secret as an export line, and the state file holds it (mode 0600)', () => {
    const m = /^ {4}export TASK_MANAGER_JWT_SECRET='([\w-]+)'$/m.exec(dev.stdout);
    expect(m, dev.output()).not.toBeNull();
    expect(state.env.TASK_MANAGER_JWT_SECRET).toBe(m![1]);
    expect(fs.statSync(path.join(cache, 'dev-state.json')).mode & 0o777).toBe(0o600);
  });

  it('the printed PLAIN URI works with the Node driver and with mongosh (insert + find)', async () => {
    const plain = uris.find((u) => u.includes('authMechanism=PLAIN'))!;
    const client = new MongoClient(plain, { serverSelectionTimeoutMS: 10_000 });
    try {
      const coll = client.db('devtest').collection('node_notes');
      await coll.insertOne({ title: 'from the Node driver', n: 1 });
      expect(await coll.find({}, { projection: { _id: 0 } }).toArray()).toEqual([{ title: 'from the Node driver', n: 1 }]);
    } finally {
      await client.close();
    }
    const mongosh = path.join(ROOT, 'node_modules/.bin/mongosh');
    const script = "db.mongosh_notes.insertOne({ title: 'from mongosh' }); print(JSON.stringify(db.mongosh_notes.find({}, { _id: 0 }).toArray()))";
    const { stdout } = await run(mongosh, [plain, '--quiet', '--norc', '--eval', script], { cwd: os.tmpdir(), timeout: 60_000 });
    expect(JSON.parse(stdout.trim().split('\n').pop()!)).toEqual([{ title: 'from mongosh' }]);
  });

  it('mdb-runtime token beside it mints a token the dev proxy accepts (a token signed otherwise is refused)', async () => {
    const minted = await cli(['token', 'task_manager', '--sub', 'bob'], cache);
    expect(minted.code, minted.stderr).toBe(0);
    expect(minted.stderr).toContain(`using the dev upstream of \`npm run dev\` (pid ${state.pid})`);
    const uri = (t: string) => `mongodb://task_manager:${t}@127.0.0.1:${ports.wire}/?authMechanism=PLAIN&authSource=%24external`;
    const client = new MongoClient(uri(minted.stdout.trim()), { serverSelectionTimeoutMS: 10_000 });
    try {
      const status = await client.db('devtest').command({ connectionStatus: 1 });
      expect(status.authInfo.authenticatedUsers).toEqual([{ user: 'bob', db: '$external' }]);
      await client.db('devtest').collection('tasks').insertOne({ by: 'bob' });
      expect(await client.db('devtest').collection('tasks').countDocuments({ by: 'bob' })).toBe(1);
    } finally {
      await client.close();
    }
    // Without the runner's state (another cache) and with a secret of its own, the CLI's token is refused.
    const elsewhere = tempCache(false);
    try {
      const other = await cli(['token', 'task_manager'], elsewhere, { TASK_MANAGER_JWT_SECRET: 'x'.repeat(48) });
      expect(other.code, other.stderr).toBe(0);
      expect(other.stderr).not.toContain('using the dev upstream');
      const refused = new MongoClient(uri(other.stdout.trim()), { serverSelectionTimeoutMS: 10_000 });
      try {
        await expect(refused.db('devtest').command({ ping: 1 })).rejects.toMatchObject({ code: 18 });
      } finally {
        await refused.close();
      }
    } finally {
      fs.rmSync(elsewhere, { recursive: true, force: true });
    }
  });

  it('mdb-runtime indexes and validate beside it find the dev upstream and config without flags', async () => {
    const indexes = await cli(['indexes'], cache);
    expect(indexes.stderr).toContain(`using the dev upstream of \`npm run dev\` (pid ${state.pid})`);
    expect(indexes.stdout.split('\n')[0]).toBe(`database mdb_runtime on mongodb://127.0.0.1:${ports.upstream}`);
    expect(indexes.stdout).toMatch(/^task_manager +tasks +status_sort +ok\b/m);
    expect(indexes.stdout).toMatch(/^playground +notes +recent_first +ok\b/m);
    expect(indexes.ms).toBeLessThan(15_000);

    const validate = await cli(['validate'], cache);
    expect(validate.code, validate.stdout + validate.stderr).toBe(0);
    expect(validate.stderr).toContain(`using the dev upstream of \`npm run dev\` (pid ${state.pid})`);
    expect(validate.stdout).toContain(`${path.join(ROOT, 'config')}: ok`);
    expect(validate.stdout).not.toContain('TASK_MANAGER_JWT_SECRET');

    // Without the runner's state file the same commands see runtime.yaml's upstream and no secret.
    const elsewhere = tempCache(false);
    try {
      const plain = await cli(['indexes'], elsewhere, { MDB_SERVER_SELECTION_TIMEOUT_MS: '300' });
      expect(plain.stdout + plain.stderr).toContain('mongodb://127.0.0.1:27017');
      expect(plain.stderr).not.toContain('using the dev upstream');
      const unset = await cli(['validate'], elsewhere);
      expect(unset.stdout).toContain('TASK_MANAGER_JWT_SECRET is not set');
    } finally {
      fs.rmSync(elsewhere, { recursive: true, force: true });
    }
  });

  it("keeps FerretDB's state and data under the cache, nothing in the working tree", () => {
    expect(fs.existsSync(path.join(state.upstream.dir, 'state', 'state.json'))).toBe(true);
    expect(fs.readdirSync(path.join(state.upstream.dir, 'data')).some((f) => f.endsWith('.sqlite'))).toBe(true);
    for (const f of treeFiles) expect(mtime(f), f).toBe(before.get(f));
  });

  it('Ctrl-C (SIGINT to the process group) stops everything once: no second signal, upstream gone, state removed', async () => {
    expect(alive(state.upstream.pid) && alive(state.proxyPid)).toBe(true);
    dev.signalGroup('SIGINT');
    const { code, signal } = await dev.exit(30_000);
    // npm re-raises the signal its script ended with (a shell shows 130).
    expect(code === 130 || signal === 'SIGINT', `code ${code}, signal ${signal}`).toBe(true);
    const all = `${dev.stdout}\n${dev.stderr}`;
    expect(all).not.toContain('second signal');
    expect(all.match(/"msg":"signal received"/g)).toHaveLength(1);
    expect(all).toContain('"msg":"mdb-runtime stopped"');
    expect(alive(state.proxyPid)).toBe(false);
    expect(alive(state.upstream.pid)).toBe(false);
    expect(fs.existsSync(path.join(cache, 'dev-state.json'))).toBe(false);
    expect(await new Promise((resolve) => net.connect(ports.upstream, '127.0.0.1').once('connect', () => resolve('open')).once('error', () => resolve('closed')))).toBe('closed');
  });
});

describe('npm run dev refuses a taken port before starting anything', () => {
  it.each(['MDB_LISTEN', 'MDB_HTTP_LISTEN', 'MDB_DEV_UPSTREAM_PORT'])('%s: names the port and the variable, exits 1', async (variable) => {
    const cache = tempCache(true);
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = (blocker.address() as net.AddressInfo).port;
    const env: Record<string, string> = {
      MDB_CACHE_DIR: cache,
      MDB_LISTEN: `127.0.0.1:${await freePort()}`,
      MDB_HTTP_LISTEN: `127.0.0.1:${await freePort()}`,
      MDB_DEV_UPSTREAM_PORT: String(await freePort()),
    };
    env[variable] = variable === 'MDB_DEV_UPSTREAM_PORT' ? String(taken) : `127.0.0.1:${taken}`;
    try {
      const dev = new Run(process.execPath, [DEV], cleanEnv(env));
      const { code } = await dev.exit(30_000);
      expect(code, dev.output()).toBe(1);
      expect(dev.stderr).toMatch(new RegExp(`port ${taken} is taken .*move it with ${variable}, e\\.g\\. ${variable}=\\S+ npm run dev`));
      expect(fs.existsSync(path.join(cache, 'dev-state.json'))).toBe(false);
      expect(fs.existsSync(path.join(cache, 'dev-upstream'))).toBe(false);
      expect(dev.stdout).not.toContain('listening on');
    } finally {
      blocker.close();
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });
});

describe('npm run dev when FerretDB must be built (empty cache)', () => {
  const fakeGo = (body: string) => {
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-fake-go-'));
    fs.writeFileSync(path.join(bin, 'go'), `#!/bin/sh\ncase "$1" in\n  mod) [ "$2" = init ] && printf 'module %s\\n' "$3" > go.mod; exit 0 ;;\n  get) ${body} ;;\nesac\nexit 1\n`, { mode: 0o755 });
    return bin;
  };
  const ports = async () => ({
    MDB_LISTEN: `127.0.0.1:${await freePort()}`,
    MDB_HTTP_LISTEN: `127.0.0.1:${await freePort()}`,
    MDB_DEV_UPSTREAM_PORT: String(await freePort()),
  });

  it('a failed build says why: the step, the tail of the build log and its path; nothing starts', async () => {
    const cache = tempCache(false);
    const bin = fakeGo('echo "go: downloading github.com/FerretDB/FerretDB v1.24.2" >&2; echo "go: fake failure: the module proxy is unreachable" >&2; exit 1');
    try {
      const dev = new Run(process.execPath, [DEV], cleanEnv({ MDB_CACHE_DIR: cache, PATH: `${bin}:${process.env.PATH}`, ...(await ports()) }));
      const { code } = await dev.exit(60_000);
      expect(code, dev.output()).toBe(1);
      const log = path.join(cache, FERRETDB_DIR, 'build.log');
      expect(dev.stderr).toContain('dev: could not build FerretDB v1.24.2, the dev upstream (step: go get)');
      expect(dev.stderr).toContain(`the last lines of ${log}:`);
      expect(dev.stderr).toContain('  go: fake failure: the module proxy is unreachable');
      expect(dev.stderr).toContain("MDB_UPSTREAM_URI='mongodb://…' npm run dev");
      // Progress, as plain lines (stderr is not a terminal here): the steps it went through.
      expect(dev.stderr).toMatch(/^dev: building FerretDB v1\.24\.2: \d+s: go get$/m);
      expect(fs.readFileSync(log, 'utf8')).toContain('go: fake failure: the module proxy is unreachable');
      expect(fs.existsSync(path.join(cache, 'dev-state.json'))).toBe(false);
      expect(dev.stdout).toBe('');
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });

  it('without Go on the PATH it says so, and how to use another upstream', async () => {
    const cache = tempCache(false);
    const path_ = (process.env.PATH ?? '').split(':').filter((d) => d && !fs.existsSync(path.join(d, 'go'))).join(':');
    try {
      const dev = new Run(process.execPath, [DEV], cleanEnv({ MDB_CACHE_DIR: cache, PATH: path_, ...(await ports()) }));
      const { code } = await dev.exit(30_000);
      expect(code, dev.output()).toBe(1);
      expect(dev.stderr).toContain("Go is required to build FerretDB v1.24.2, and 'go' is not on the PATH");
      expect(dev.stderr).toContain('MDB_UPSTREAM_URI');
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });

  it('shows the build as one line rewritten in place on a terminal, and Ctrl-C stops the build', async () => {
    const cache = tempCache(false);
    const pidFile = path.join(cache, 'go.pid');
    const bin = fakeGo(`echo "go: downloading example.com/slow v1.0.0" >&2; echo $$ > ${pidFile}.tmp; mv ${pidFile}.tmp ${pidFile}; exec sleep 120`);
    try {
      // script(1) runs the runner on a pseudo-terminal: its output is what a terminal shows, and a ^C
      // written to it is turned into SIGINT for the terminal's foreground process group, as a keyboard's.
      const env = cleanEnv({ MDB_CACHE_DIR: cache, PATH: `${bin}:${process.env.PATH}`, ...(await ports()) });
      const dev = new Run('script', ['-qfec', `${JSON.stringify(process.execPath)} ${JSON.stringify(DEV)}`, '/dev/null'], env, 'pipe');
      // The line is rewritten in place (carriage return, erase line), no newline between two updates.
      await dev.waitFor(() => /(\r\x1b\[2Kbuilding FerretDB v1\.24\.2: \d+s, go get: go: downloading example\.com\/slow v1\.0\.0){2}/.test(dev.stdout), 'two updates of the progress line');
      await fileAppears(pidFile);
      const goPid = Number(fs.readFileSync(pidFile, 'utf8'));
      expect(alive(goPid)).toBe(true);
      dev.child.stdin!.write('\x03');
      expect((await dev.exit(30_000)).code, dev.output()).toBe(130);
      expect(alive(goPid)).toBe(false);
      expect(fs.existsSync(path.join(cache, 'dev-state.json'))).toBe(false);
      expect(dev.stdout).not.toContain('could not build');
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });

  it('Ctrl-C during the build, run directly with node: exit status 130', async () => {
    const cache = tempCache(false);
    const pidFile = path.join(cache, 'go.pid');
    const bin = fakeGo(`echo $$ > ${pidFile}.tmp; mv ${pidFile}.tmp ${pidFile}; exec sleep 120`);
    try {
      const dev = new Run(process.execPath, [DEV], cleanEnv({ MDB_CACHE_DIR: cache, PATH: `${bin}:${process.env.PATH}`, ...(await ports()) }));
      await fileAppears(pidFile);
      const goPid = Number(fs.readFileSync(pidFile, 'utf8'));
      dev.signalGroup('SIGINT');
      const { code } = await dev.exit(30_000);
      expect(code, dev.output()).toBe(130);
      expect(alive(goPid)).toBe(false);
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });
});
