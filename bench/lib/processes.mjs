// The processes a benchmark runs: the proxy (the built CLI), the fast upstream and the relay as child
// processes, and what is measured of them from outside (/proc: CPU time, resident memory). Nothing here
// changes how the proxy runs: it is started exactly as an operator would start it.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
// Shared with the tests: TypeScript in src/testing/, compiled by `npm run build`.
import { freePort } from '../../dist/testing/ports.js';
import { CLI, ROOT, assertBuilt, stopChild, tempConfig } from '../../dist/testing/processes.js';

const LIB = path.dirname(fileURLToPath(import.meta.url));

/** Whether the module at `url` is the script node was started with (a bench/lib module run as a child). */
export function isMain(url) {
  return process.argv[1] !== undefined && fileURLToPath(url) === process.argv[1];
}

/**
 * The child's side of spawnReady: prints `info` as one JSON line, then on SIGTERM, SIGINT or the end of
 * an IPC channel awaits `close()` and exits.
 */
export function serveAsChild(info, close) {
  process.stdout.write(`${JSON.stringify(info)}\n`);
  const stop = () => Promise.resolve(close()).then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('disconnect', stop);
}

/** Runs a node script that prints one JSON line when ready; resolves with that line and the child. */
async function spawnReady(script, args, { timeoutMS = 30_000, nodeArgs = [] } = {}) {
  const child = spawn(process.execPath, [...nodeArgs, script, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  const info = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error(`timed out after ${timeoutMS} ms`)), timeoutMS);
    const fail = (err) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${path.basename(script)} did not start: ${err.message}\n${stderr}`));
    };
    child.once('exit', (code) => fail(new Error(`exited with code ${code}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      try {
        resolve(JSON.parse(out.slice(0, nl)));
      } catch (err) {
        fail(err);
      }
    });
  });
  return { child, info, pid: child.pid, stop: () => stopChild(child) };
}

/** The fast responder (bench/lib/fast-upstream.mjs) in its own process: { uri, port, pid, stop() }. */
export async function startFastUpstreamProcess(options = {}) {
  const args = ['--port', String(options.port ?? 0)];
  if (options.scanSize !== undefined) args.push('--scan-size', String(options.scanSize));
  const r = await spawnReady(path.join(LIB, 'fast-upstream.mjs'), args);
  return { ...r, uri: r.info.uri, port: r.info.port };
}

/** The plain TCP relay (bench/lib/relay.mjs) in its own process, in front of `target` ("host:port"). */
export async function startRelayProcess(target) {
  const r = await spawnReady(path.join(LIB, 'relay.mjs'), ['--target', target]);
  return { ...r, port: r.info.port };
}

// ---- What is measured from outside: /proc/<pid>/stat and /proc/<pid>/status (Linux).
let ticksPerSecond;
function clockTicks() {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/**
 * CPU time (user + system, ms) and memory (resident and peak resident, bytes) of a process, or
 * undefined when /proc cannot tell (not Linux, or the process is gone). CPU has the clock-tick
 * resolution (10 ms at 100 Hz): measure over seconds, not milliseconds.
 */
export function sampleProcess(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces; the fields after it are fixed.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { cpuMS: ((utime + stime) * 1000) / clockTicks(), rssBytes: kb('VmRSS'), hwmBytes: kb('VmHWM'), at: performance.now() };
  } catch {
    return undefined;
  }
}

// ---- The proxy.

/** Whether the built CLI's `serve` knows a flag (e.g. --metrics), read from its --help. */
export function serveSupportsFlag(flag, cli = CLI) {
  const help = execFileSync(process.execPath, [cli, 'serve', '--help'], { cwd: ROOT, encoding: 'utf8' });
  return new RegExp(`(^|[\\s,])${flag.replace(/[-]/g, '\\-')}[\\s=<]`, 'm').test(help);
}

/** A BENCH app that needs no token: clients select it with ?appName=<slug> (local development mode). */
export const BENCH_APP = { slug: 'bench', yaml: 'slug: bench\nname: Benchmark app\nauth_required: false\n' };

/** A temporary config directory: runtime.yaml and apps/<slug>.yaml for each of `apps` ({slug, yaml}). */
export function makeConfigDir({ apps = [BENCH_APP], runtimeYaml = 'shutdown_grace_ms: 2000\n' } = {}) {
  return tempConfig(runtimeYaml, Object.fromEntries(apps.map((a) => [`${a.slug}.yaml`, a.yaml])), 'mdb-bench-config-');
}

/**
 * GET http://127.0.0.1:<port><urlPath>: resolves with { status, body }, status 0 (and the reason in
 * `error`) when nothing answered within `timeoutMS`.
 */
export function httpGet(port, urlPath, timeoutMS = 3000) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, timeout: timeoutMS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', (err) => resolve({ status: 0, body: '', error: err.message }));
    });
    req.on('error', (err) => resolve({ status: 0, body: '', error: err.message }));
    req.on('timeout', () => {
      req.destroy();
      resolve({ status: 0, body: '', error: `no answer within ${timeoutMS} ms` });
    });
  });
}

/**
 * The JSON a GET answers; undefined when nothing answered or the body is not JSON, or with `required`
 * an error saying which.
 */
export async function getJSON(port, urlPath, { timeoutMS = 3000, required = false } = {}) {
  const r = await httpGet(port, urlPath, timeoutMS);
  try {
    return JSON.parse(r.body);
  } catch {
    if (required) throw new Error(`GET ${urlPath} on port ${port}: ${r.error ?? `status ${r.status}, not JSON`}`);
    return undefined;
  }
}

/**
 * Starts `mdb-runtime serve` as a child process on free ports and waits until /readyz answers 200.
 * `args`: further CLI flags (e.g. ['--metrics', 'false', '--log-level', 'silent']); `nodeArgs`: flags
 * for node itself (e.g. ['--cpu-prof', '--cpu-prof-dir=...']). The proxy's stdout (its JSON log) goes
 * to `logFile` (a file, as in production; default a temporary file), not through a pipe to this
 * process. `cli`: the built CLI to run (default dist/cli/main.js; see snapshotBuild). Returns
 * { pid, port, httpPort, uri(appName), logLines(), stop() }.
 */
export async function startProxy({ upstreamUri, configDir, args = [], nodeArgs = [], logFile, env = {}, cli = CLI }) {
  if (!fs.existsSync(cli)) throw new Error(`${cli} is missing: run \`npm run build\` first`);
  const port = await freePort();
  const httpPort = await freePort();
  const ownLog = logFile === undefined;
  const log = logFile ?? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-bench-log-')), 'proxy.log');
  const fd = fs.openSync(log, 'w');
  const child = spawn(
    process.execPath,
    [
      ...nodeArgs,
      cli,
      'serve',
      '--config',
      configDir,
      '--listen',
      `127.0.0.1:${port}`,
      '--http-listen',
      `127.0.0.1:${httpPort}`,
      '--upstream',
      upstreamUri,
      ...args,
    ],
    { cwd: ROOT, stdio: ['ignore', fd, 'pipe'], env: { ...process.env, ...env } },
  );
  fs.closeSync(fd);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`the proxy exited with code ${child.exitCode} at start:\n${stderr}\n${readTail(log)}`);
    }
    if ((await httpGet(httpPort, '/readyz', 2000)).status === 200) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the proxy was not ready within 30 s:\n${stderr}\n${readTail(log)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    pid: child.pid,
    port,
    httpPort,
    logFile: log,
    uri: (appName) => `mongodb://127.0.0.1:${port}/${appName ? `?appName=${encodeURIComponent(appName)}` : ''}`,
    /** The number of lines the proxy logged so far. */
    logLines() {
      try {
        const text = fs.readFileSync(log, 'utf8');
        return text.length === 0 ? 0 : text.split('\n').filter(Boolean).length;
      } catch {
        return 0;
      }
    },
    stderr: () => stderr,
    async stop() {
      await stopChild(child, 10_000);
      if (ownLog) fs.rmSync(path.dirname(log), { recursive: true, force: true });
    },
  };
}

function readTail(file) {
  try {
    return fs.readFileSync(file, 'utf8').slice(-4000);
  } catch {
    return '';
  }
}

/**
 * A copy of the built proxy (dist/ and package.json, with node_modules linked) in a temporary
 * directory, so that a rebuild during a long benchmark (someone running `npm run build`) cannot change
 * the code between two runs being compared. Returns { cli, dir, remove() }.
 */
export function snapshotBuild() {
  assertBuilt();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-bench-build-'));
  fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  return { cli: path.join(dir, 'dist/cli/main.js'), dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** The commit and whether the working tree differs from it (for the results file). */
export function gitState() {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim().length > 0;
    return { commit, dirty };
  } catch {
    return { commit: undefined, dirty: undefined };
  }
}

/** The machine, for the caveats next to every figure. */
export function machine() {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpu_model: cpus[0]?.model,
    memory_gb: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.platform()} ${os.release()}`,
    node: process.version,
    loadavg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/**
 * The next IPC message of `type` from a forked helper process (a load worker, a raw client); rejects on
 * its 'error' message, its exit, or the timeout. `what` names the process in errors.
 */
export function waitForMessage(child, type, timeoutMS, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`${what}: no '${type}' within ${timeoutMS} ms`)), timeoutMS);
    const onMessage = (m) => {
      if (m.type === type) done(undefined, m);
      else if (m.type === 'error') done(new Error(`${what} failed: ${m.message}`));
    };
    const onExit = (code) => done(new Error(`${what} exited with code ${code} while waiting for '${type}'`));
    const done = (err, m) => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(m);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

/** The command line of a benchmark script: `has('--flag')`, `opt('--name', fallback)`. */
export function commandLine(argv = process.argv.slice(2)) {
  return {
    argv,
    has: (name) => argv.includes(name),
    opt: (name, fallback) => {
      const i = argv.indexOf(name);
      return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback;
    },
  };
}
