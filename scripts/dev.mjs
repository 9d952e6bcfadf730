#!/usr/bin/env node
// `npm run dev`: runs mdb-runtime on the example config (config/) for trying it out on a fresh machine.
//
//  1. builds dist/ when it is older than src/ (scripts/prepare.mjs);
//  2. checks, before starting anything, that the ports it needs are free: the wire port (MDB_LISTEN), the
//     HTTP port (MDB_HTTP_LISTEN) and, unless MDB_UPSTREAM_URI names an upstream, the dev upstream's
//     port (MDB_DEV_UPSTREAM_PORT, default 27217); a taken one is named with the variable that moves it;
//  3. without MDB_UPSTREAM_URI: builds FerretDB (scripts/ferretdb.sh: once, minutes, cached in
//     ${MDB_CACHE_DIR:-~/.cache/mdb-runtime}) with a progress line, and starts it with its data, state
//     and log under the cache's dev-upstream/ (never in the working tree);
//  4. gives every app secret the manifests read (secret_env) the exported value, or generates one and
//     prints the `export NAME='…'` line;
//  5. starts `mdb-runtime serve` (its log on this terminal), waits until its wire port accepts and
//     /readyz answers 200, writes the dev state file (src/cli/dev-state.ts: `mdb-runtime token`,
//     `indexes` and `validate` beside this run use it), and prints the connection strings last, shell-
//     quoted, then the status page URL.
//
// The children run in their own process groups, so a Ctrl-C reaches this process only: it sends the
// proxy one SIGTERM (the proxy drains, src/cli/main.ts), then stops FerretDB, removes the state file and
// exits 130 (0 after SIGTERM). Arguments are passed to `serve` (npm run dev -- --log-level debug).
// MDB_DEV_NO_BUILD=1 uses dist/ as it is (the tests run the build they test).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT, runBuild, staleness, typescriptInstalled } from './prepare.mjs';

const FERRETDB_VERSION = 'v1.24.2';
const DEFAULT_UPSTREAM_PORT = 27217;
const TOKEN_TTL = '8h';
const t0 = Date.now();
process.chdir(ROOT);

// ---- output: messages on stderr, one progress line rewritten in place on a terminal ----

const tty = process.stderr.isTTY === true;
let statusLine = '';
function clearStatus() {
  if (tty && statusLine) process.stderr.write('\r\x1b[2K');
  statusLine = '';
}
function status(text) {
  if (!tty) return;
  const width = Math.max(20, (process.stderr.columns || 100) - 1);
  statusLine = text.length > width ? `${text.slice(0, width - 1)}…` : text;
  process.stderr.write(`\r\x1b[2K${statusLine}`);
}
function say(line) {
  clearStatus();
  process.stderr.write(`dev: ${line}\n`);
}
function elapsed(ms = Date.now() - t0) {
  const s = Math.floor(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}
/** Single-quoted for sh/bash/zsh (also a string literal in JavaScript and Python). */
function shq(text) {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}
function tail(file, lines = 20) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).map((l) => `  ${l}`).join('\n');
  } catch {
    return '  (no log)';
  }
}

// ---- signals: this process owns them; the children never see the terminal's ----

const children = new Set();
let stopSignal;
let firstSignalAt = 0;
let resolveStop;
const stopped = new Promise((resolve) => (resolveStop = resolve));
function onSignal(signal) {
  if (stopSignal) {
    // The same Ctrl-C can arrive twice (the terminal's process group, and npm passing it on); a later
    // one means "now": no more waiting for the proxy to drain.
    if (Date.now() - firstSignalAt > 1000) {
      say('stopping at once');
      for (const c of children) killGroup(c, 'SIGKILL');
    }
    return;
  }
  stopSignal = signal;
  firstSignalAt = Date.now();
  clearStatus();
  resolveStop();
}
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, onSignal);

function killGroup(child, signal) {
  if (ended(child)) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}
const ended = (child) => child.exitCode !== null || child.signalCode !== null || child.spawnError !== undefined;
function exitOf(child) {
  if (ended(child)) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}
/** Spawns in a new process group (detached), so that a Ctrl-C on the terminal does not reach it. */
function start(cmd, args, options) {
  const child = spawn(cmd, args, { ...options, detached: true });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.once('error', (err) => {
    // Could not be started (ENOENT, EACCES): counts as an exit.
    child.spawnError = err;
    children.delete(child);
    child.emit('exit', 127, null);
  });
  return child;
}
/**
 * SIGTERM, then SIGKILL after `graceMS`; resolves once it exited. `group`: to its whole process group
 * (the build: bash and the go processes under it); the proxy gets its signal alone, and with
 * --workers its primary stops the workers itself.
 */
async function stop(child, graceMS, { group = false } = {}) {
  if (!child || ended(child)) return;
  const exited = exitOf(child);
  if (group) killGroup(child, 'SIGTERM');
  else child.kill('SIGTERM');
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), graceMS);
  await exited;
  clearTimeout(timer);
}

let devState;
let proxy;
let upstream;
/** Stops everything that was started, removes the state file, exits. */
async function finish(code) {
  clearStatus();
  if (proxy) await stop(proxy, (devState?.shutdownGraceMS ?? 10_000) + 5000);
  if (upstream) await stop(upstream, 5000);
  for (const c of [...children]) await stop(c, 2000, { group: true });
  if (devState) devState.module.removeDevState(process.pid);
  process.exit(code);
}
const signalCode = () => (stopSignal === 'SIGINT' ? 130 : 0);

// ---- ports ----

/** undefined when `host:port` can be listened on, else the error code (EADDRINUSE, EACCES, ...). */
function bindError(host, port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', (err) => resolve(err.code ?? err.message));
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve(undefined)));
  });
}
async function freeNear(host, port, avoid) {
  for (let p = port + 1; p < Math.min(port + 200, 65536); p++) if (!avoid.has(p) && (await bindError(host, p)) === undefined) return p;
  return undefined;
}
/** Every needed port that cannot be listened on, as messages naming it and what moves it. */
async function portProblems(needs) {
  const problems = [];
  const ports = new Set(needs.map((n) => n.port));
  for (const [i, n] of needs.entries()) {
    if (n.port === 0) {
      problems.push(`${n.what} is set to port 0 (any free port); npm run dev needs a fixed port: set ${n.moveWith}`);
      continue;
    }
    const clash = needs.slice(0, i).find((m) => m.port === n.port);
    if (clash) {
      problems.push(`port ${n.port} is named twice: by ${clash.moveWith} (${clash.what}) and by ${n.moveWith} (${n.what}); move one of them`);
      continue;
    }
    const err = await bindError(n.host, n.port);
    if (err === undefined) continue;
    const free = await freeNear(n.host, n.port, ports);
    const why = err === 'EADDRINUSE' ? 'is taken' : `cannot be listened on (${err})`;
    problems.push(
      `port ${n.port} ${why} (${n.host}:${n.port}, ${n.what}); move it with ${n.moveWith}${n.example && free !== undefined ? `, e.g. ${n.example(free)}` : ''}${n.alternative ? ` (${n.alternative})` : ''}`,
    );
  }
  return problems;
}

function canConnect(host, port) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
function getJson(host, port, urlPath) {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: urlPath, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode, body: JSON.parse(body) });
        } catch {
          resolve({ status: res.statusCode, body: undefined });
        }
      });
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', () => resolve(undefined));
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Where a client connects for a listen address: a wildcard address means this machine. */
function connectHost(host) {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::' || host === '[::]') return '::1';
  return host;
}
const hostPort = (host, port) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

/** Resolves `what` once `probe` is true; rejects when `child` exits first. Stops waiting on a signal. */
async function until(probe, child, what) {
  for (let delay = 25; ; delay = Math.min(delay * 2, 250)) {
    if (stopSignal) return false;
    if (child && ended(child)) {
      throw Object.assign(new Error(`${what}: exited (${child.exitCode !== null ? `code ${child.exitCode}` : child.signalCode})`), { exited: true });
    }
    if (await probe()) return true;
    await Promise.race([sleep(delay), stopped]);
  }
}

// ---- the FerretDB build, with progress ----

/** Runs `scripts/ferretdb.sh build`; resolves with the binary's path, or exits with the reason. */
async function buildFerretDB(cache) {
  const child = start('bash', [path.join(ROOT, 'scripts/ferretdb.sh'), 'build'], {
    env: { ...process.env, MDB_CACHE_DIR: cache },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let log;
  let step;
  let building = false;
  let lastPlain = 0;
  let logOffset = 0;
  let logLine = '';
  const begun = Date.now();
  child.stdout.on('data', (d) => (stdout += d));
  let partial = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    partial += d;
    const lines = partial.split('\n');
    partial = lines.pop();
    for (const line of lines) {
      const m = /^ferretdb\.sh: step: (.*)$/.exec(line);
      if (m) {
        step = m[1];
        if (!tty) say(`building FerretDB ${FERRETDB_VERSION}: ${elapsed(Date.now() - begun)}: ${step}`);
        lastPlain = Date.now();
        continue;
      }
      const b = /Go's output goes to (\S+)$/.exec(line);
      if (b) {
        building = true;
        log = b[1];
        say(`building FerretDB ${FERRETDB_VERSION}, the dev upstream (first run only: minutes; Go's output: ${log})`);
        continue;
      }
      if (/waiting for another build/.test(line)) {
        step = 'waiting for another build of FerretDB to finish';
        say(line.replace(/^ferretdb\.sh: /, ''));
      }
    }
  });
  // The newest line of Go's output (a package being compiled, a module being downloaded).
  const readLog = () => {
    if (!log) return;
    try {
      const fd = fs.openSync(log, 'r');
      const size = fs.fstatSync(fd).size;
      if (size < logOffset) logOffset = 0;
      if (size > logOffset) {
        const start = Math.max(logOffset, size - 4096);
        const buf = Buffer.alloc(size - start);
        fs.readSync(fd, buf, 0, buf.length, start);
        logOffset = size;
        const last = buf.toString('utf8').trimEnd().split('\n').pop();
        if (last && !last.startsWith('###')) logLine = last.trim();
      }
      fs.closeSync(fd);
    } catch {
      // not there yet
    }
  };
  const ticker = setInterval(() => {
    if (!building && !step) return;
    readLog();
    const text = `building FerretDB ${FERRETDB_VERSION}: ${elapsed(Date.now() - begun)}${step ? `, ${step}` : ''}${logLine ? `: ${logLine}` : ''}`;
    if (tty) status(text);
    else if (Date.now() - lastPlain >= 30_000) {
      lastPlain = Date.now();
      say(text);
    }
  }, 500);
  const result = await Promise.race([exitOf(child), stopped.then(() => undefined)]);
  clearInterval(ticker);
  clearStatus();
  if (result === undefined) {
    await stop(child, 2000, { group: true });
    return undefined;
  }
  if (result.code !== 0) {
    const lines = stderr
      .trimEnd()
      .split('\n')
      .filter((l) => !/^ferretdb\.sh: (step: |building FerretDB v\S+ into)/.test(l))
      .join('\n');
    say(
      `could not build FerretDB ${FERRETDB_VERSION}, the dev upstream${step ? ` (step: ${step})` : ''}:\n${lines || `scripts/ferretdb.sh build exited with code ${result.code}`}\n` +
        (log && !lines.includes(log) ? `The whole build log: ${log}\n` : '') +
        "Fix the cause and run npm run dev again, or use a MongoDB you have: MDB_UPSTREAM_URI='mongodb://…' npm run dev",
    );
    return null;
  }
  if (building) say(`built FerretDB ${FERRETDB_VERSION} in ${elapsed(Date.now() - begun)}`);
  return stdout.trim().split('\n').pop();
}

// ---- arguments: the settings flags of `serve`, to know its ports and config like it will ----

function overridesFromArgs(args, SETTINGS, CONFIG_DIR_SETTING) {
  const specs = [{ flag: CONFIG_DIR_SETTING.flag, short: CONFIG_DIR_SETTING.short, option: 'config' }, ...SETTINGS];
  const overrides = {};
  for (let i = 0; i < args.length; i++) {
    const [name, inline] = args[i].startsWith('--') && args[i].includes('=') ? [args[i].slice(0, args[i].indexOf('=')), args[i].slice(args[i].indexOf('=') + 1)] : [args[i], undefined];
    const spec = specs.find((s) => s.flag === name || (s.short && s.short === name));
    if (!spec) continue;
    const value = inline ?? args[++i];
    if (value !== undefined) overrides[spec.option] = value;
  }
  return overrides;
}

// ---- main ----

async function main() {
  const args = process.argv.slice(2);

  // 1. dist/
  if (process.env.MDB_DEV_NO_BUILD !== '1') {
    const reason = staleness();
    if (reason !== undefined) {
      if (!typescriptInstalled()) {
        say('TypeScript is not installed: run npm ci (with the dev dependencies) first');
        return finish(1);
      }
      say(`building the TypeScript (${reason})`);
      const code = await runBuild();
      if (stopSignal) return finish(signalCode());
      if (code !== 0) {
        say(`npm run build failed (exit ${code}): see its messages above`);
        return finish(1);
      }
    }
  }
  const dist = (p) => import(pathToFileURL(path.join(ROOT, 'dist', p)).href);
  const rc = await dist('config/runtime-config.js');
  const ds = await dist('cli/dev-state.js');
  const { runToken } = await dist('cli/token.js');
  const { checkManifestDir } = await dist('apps/manifests.js');
  const { SETTINGS, CONFIG_DIR_SETTING, loadRuntimeConfig, formatHostPort, redactUri } = rc;

  // 2. one runner per cache (its upstream's data lives there); leftovers of a runner that died
  const cache = ds.cacheDir();
  const previous = ds.readDevStateFile();
  if (previous) {
    if (ds.processAlive(previous.pid, 'dev.mjs')) {
      say(
        `another npm run dev (pid ${previous.pid}) is running with the cache ${cache}; stop it first, ` +
          'or give this one its own cache (and ports): MDB_CACHE_DIR=/tmp/mdb-dev-2 MDB_LISTEN=… npm run dev',
      );
      return finish(1);
    }
    const leftovers = [
      [previous.upstream?.pid, 'ferretdb'],
      [previous.proxyPid, 'dist/cli/main.js'],
    ].filter(([pid, marker]) => pid && ds.processAlive(pid, marker));
    for (const [pid] of leftovers) {
      say(`stopping pid ${pid}, left running by an earlier npm run dev (pid ${previous.pid}) that did not exit cleanly`);
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
    for (let i = 0; i < 50 && leftovers.some(([pid, m]) => ds.processAlive(pid, m)); i++) await sleep(100);
    fs.rmSync(ds.devStateFile(), { force: true });
  }

  // 3. the configuration serve will use, and the ports it needs
  const overrides = overridesFromArgs(args, SETTINGS, CONFIG_DIR_SETTING);
  const userUpstream = overrides.upstream ?? (process.env.MDB_UPSTREAM_URI || undefined);
  let upstreamPort;
  if (userUpstream === undefined) {
    const text = process.env.MDB_DEV_UPSTREAM_PORT || String(DEFAULT_UPSTREAM_PORT);
    upstreamPort = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!(upstreamPort >= 1 && upstreamPort <= 65535)) {
      say(`MDB_DEV_UPSTREAM_PORT: expected a port from 1 to 65535, found '${text}'`);
      return finish(1);
    }
    process.env.MDB_UPSTREAM_URI = `mongodb://127.0.0.1:${upstreamPort}`;
  }
  let config;
  try {
    config = loadRuntimeConfig(overrides);
  } catch (err) {
    say(err instanceof rc.ConfigError ? `configuration error: ${err.message}` : String(err));
    return finish(1);
  }
  const moveWith = (option, variable) => (overrides[option] !== undefined ? `the ${SETTINGS.find((s) => s.option === option).flag} argument` : variable);
  const needs = [
    {
      what: "the proxy's wire port, where apps connect",
      host: config.listen.host,
      port: config.listen.port,
      moveWith: moveWith('listen', 'MDB_LISTEN'),
      example: overrides.listen === undefined ? (p) => `MDB_LISTEN=${hostPort(config.listen.host, p)} npm run dev` : undefined,
    },
    {
      what: "the proxy's HTTP port: status page, /readyz, /metrics",
      host: config.httpListen.host,
      port: config.httpListen.port,
      moveWith: moveWith('httpListen', 'MDB_HTTP_LISTEN'),
      example: overrides.httpListen === undefined ? (p) => `MDB_HTTP_LISTEN=${hostPort(config.httpListen.host, p)} npm run dev` : undefined,
    },
  ];
  if (upstreamPort !== undefined) {
    needs.push({
      what: 'the dev upstream, FerretDB',
      host: '127.0.0.1',
      port: upstreamPort,
      moveWith: 'MDB_DEV_UPSTREAM_PORT',
      alternative: 'or set MDB_UPSTREAM_URI to use a MongoDB you have',
      example: (p) => `MDB_DEV_UPSTREAM_PORT=${p} npm run dev`,
    });
  }
  const checkPorts = async () => {
    const problems = await portProblems(needs);
    for (const p of problems) say(p);
    return problems.length === 0;
  };
  if (!(await checkPorts())) return finish(1);

  // 4. app secrets
  const generated = {};
  const exported = [];
  for (const name of ds.secretVariables(config.configDir)) {
    if (process.env[name]) exported.push(name);
    else process.env[name] = generated[name] = ds.generateSecret();
  }
  // The manifests as serve will load them (with the secrets): which apps serve, which need a token.
  const manifests = checkManifestDir(config.configDir).flatMap((c) => (c.manifest ? [c.manifest] : []));

  // 5. the upstream
  const upstreamDir = path.join(cache, 'dev-upstream');
  const upstreamLog = path.join(upstreamDir, 'ferretdb.log');
  if (upstreamPort !== undefined) {
    const binary = await buildFerretDB(cache);
    if (binary === undefined) return finish(signalCode());
    if (binary === null) return finish(1);
    // The build may have taken minutes: the ports again, just before starting.
    if (!(await checkPorts())) return finish(1);
    fs.mkdirSync(path.join(upstreamDir, 'data'), { recursive: true });
    fs.mkdirSync(path.join(upstreamDir, 'state'), { recursive: true });
    const logFd = fs.openSync(upstreamLog, 'w');
    upstream = start(
      binary,
      [
        '--handler=sqlite',
        `--sqlite-url=file:${path.join(upstreamDir, 'data')}/`,
        // FerretDB writes state.json into --state-dir (by default, its working directory).
        `--state-dir=${path.join(upstreamDir, 'state')}`,
        `--listen-addr=127.0.0.1:${upstreamPort}`,
        // No debug HTTP handler: its default address (127.0.0.1:8088) would be one more port to be taken.
        '--debug-addr=-',
        '--telemetry=disable',
        '--log-level=warn',
      ],
      { cwd: path.join(upstreamDir, 'state'), stdio: ['ignore', logFd, logFd] },
    );
    fs.closeSync(logFd);
    try {
      if (!(await until(() => canConnect('127.0.0.1', upstreamPort), upstream, 'FerretDB'))) return finish(signalCode());
    } catch {
      say(`FerretDB exited before it listened on 127.0.0.1:${upstreamPort}; the last lines of its log ${upstreamLog}:\n${tail(upstreamLog)}`);
      return finish(1);
    }
  }

  // 6. the proxy
  const cli = path.join(ROOT, 'dist/cli/main.js');
  proxy = start(process.execPath, [cli, 'serve', '--config', config.configDir, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
  const stateEnv = {
    MDB_UPSTREAM_URI: config.upstream.uri,
    MDB_LISTEN: formatHostPort(config.listen),
    MDB_HTTP_LISTEN: formatHostPort(config.httpListen),
  };
  for (const [option, variable] of [
    ['database', 'MDB_DATABASE'],
    ['tagField', 'MDB_TAG_FIELD'],
  ]) {
    const value = overrides[option] ?? (process.env[variable] || undefined);
    if (value !== undefined) stateEnv[variable] = value;
  }
  const state = {
    version: 1,
    pid: process.pid,
    startedAt: new Date(t0).toISOString(),
    configDir: config.configDir,
    upstreamUri: config.upstream.uri,
    ...(upstream ? { upstream: { port: upstreamPort, pid: upstream.pid, dir: upstreamDir, log: upstreamLog } } : {}),
    proxyPid: proxy.pid,
    listen: stateEnv.MDB_LISTEN,
    httpListen: stateEnv.MDB_HTTP_LISTEN,
    env: { ...stateEnv, ...generated },
    generatedSecrets: Object.keys(generated),
  };
  const stateFile = ds.writeDevState(state);
  devState = { module: ds, shutdownGraceMS: config.shutdownGraceMS };

  const wire = { host: connectHost(config.listen.host), port: config.listen.port };
  const web = { host: connectHost(config.httpListen.host), port: config.httpListen.port };
  let notReadySaid = false;
  try {
    const ready = await until(
      async () => {
        if (!(await canConnect(wire.host, wire.port))) return false;
        const r = await getJson(web.host, web.port, '/readyz');
        if (r?.status === 200) return true;
        if (!notReadySaid && Date.now() - t0 > 15_000 && r) {
          notReadySaid = true;
          say(`the proxy is not ready yet (/readyz: ${r.body?.reason ?? r.status}); waiting`);
        }
        return false;
      },
      proxy,
      'the proxy',
    );
    if (!ready) return finish(signalCode());
    // The first index reconciliation logs a line per index: let it finish (5 s at most) so that the
    // connection strings come after it.
    const settleBy = Date.now() + 5000;
    await until(
      async () => {
        const r = await getJson(web.host, web.port, '/apps');
        const apps = Array.isArray(r?.body?.apps) ? r.body.apps : [];
        return Date.now() > settleBy || !apps.some((a) => a?.indexes && ['idle', 'reconciling'].includes(a.indexes.phase));
      },
      proxy,
      'the proxy',
    );
  } catch {
    say(`the proxy exited (${proxy.exitCode !== null ? `code ${proxy.exitCode}` : proxy.signalCode}) before it was ready; its messages are above`);
    return finish(proxy.exitCode || 1);
  }
  if (stopSignal) return finish(signalCode());
  // The proxy writes JSON log lines in batches, at the latest LOG_FLUSH_MS after logging them: past
  // that, its startup lines are out and what follows comes last.
  const { LOG_FLUSH_MS } = await dist('observability/logger.js');
  await Promise.race([sleep(LOG_FLUSH_MS + 50), stopped]);
  if (stopSignal) return finish(signalCode());

  // 7. what to connect with, last
  const lines = [''];
  lines.push(`mdb-runtime is ready (npm run dev, ${elapsed()})`);
  if (upstream) {
    lines.push(`  upstream: FerretDB ${FERRETDB_VERSION} on 127.0.0.1:${upstreamPort}, data in ${path.join(upstreamDir, 'data')}`);
    lines.push(`            its log: ${upstreamLog}`);
  } else {
    lines.push(`  upstream: ${redactUri(config.upstream.uri)}`);
  }
  lines.push(`  config:   ${config.configDir}`);
  for (const name of exported) lines.push(`  ${name}: the value exported in this shell (export it too where you run \`npx mdb-runtime token\`)`);
  for (const [name, value] of Object.entries(generated)) {
    lines.push(`  ${name} was not set: this run generated it (the proxy and \`npx mdb-runtime token\` use it); to keep it:`);
    lines.push(`    export ${name}=${shq(value)}`);
  }
  lines.push(`  \`npx mdb-runtime token|indexes|validate\` in another terminal use this run's upstream, config and secrets (${stateFile})`);
  lines.push(`  Ctrl-C stops the proxy${upstream ? ' and the upstream' : ''}.`);
  lines.push('');
  lines.push('Connection strings (paste one after `npx mongosh`, or give it to a driver):');
  const listen = hostPort(wire.host, wire.port);
  for (const app of [...manifests].sort((a, b) => a.slug.localeCompare(b.slug))) {
    if (!app.authRequired) {
      lines.push(`  ${app.slug} (no token: auth_required: false):`);
      lines.push(`    ${shq(`mongodb://${listen}/?appName=${app.slug}`)}`);
      continue;
    }
    let token;
    try {
      token = await runToken(app.slug, { ttl: TOKEN_TTL, config: config.configDir }, () => undefined);
    } catch (err) {
      lines.push(`  ${app.slug}: no token minted here: ${err.message}`);
      continue;
    }
    lines.push(`  ${app.slug} (a token valid ${TOKEN_TTL}; SASL PLAIN):`);
    lines.push(`    ${shq(`mongodb://${app.slug}:${token}@${listen}/?authMechanism=PLAIN&authSource=%24external`)}`);
  }
  lines.push('');
  lines.push(`Status page: http://${hostPort(web.host, web.port)}/`);
  clearStatus();
  process.stdout.write(`${lines.join('\n')}\n`);

  // 8. until a signal, or a child ends on its own
  const ended = await Promise.race([
    stopped.then(() => 'signal'),
    exitOf(proxy).then(() => 'proxy'),
    ...(upstream ? [exitOf(upstream).then(() => 'upstream')] : []),
  ]);
  if (ended === 'signal') return finish(signalCode());
  if (ended === 'proxy') {
    say(`the proxy exited (${proxy.exitCode !== null ? `code ${proxy.exitCode}` : proxy.signalCode}); stopping the upstream`);
    return finish(proxy.exitCode || 1);
  }
  say(`the upstream FerretDB exited (${upstream.exitCode !== null ? `code ${upstream.exitCode}` : upstream.signalCode}); the last lines of ${upstreamLog}:\n${tail(upstreamLog)}`);
  return finish(1);
}

main().catch(async (err) => {
  say(`error: ${err?.stack ?? err}`);
  await finish(1);
});
