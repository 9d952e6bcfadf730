import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { loadRuntimeConfig } from '../../src/config/runtime-config.js';
import { ROOT } from '../../src/testing/processes.js';

/*
 * There is no Docker engine on the test machines, so the image is never built here. These checks read
 * the Dockerfile statically: stages, user, ports, entrypoint, what is copied, and that the image's
 * config + environment load with the real config loader. They do not prove that `docker build` succeeds.
 */

interface Instruction {
  op: string;
  args: string;
}

/** Instructions of a Dockerfile: comments dropped, `\` continuations joined. */
function instructions(text: string): Instruction[] {
  const joined = text
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n')
    .replace(/\\\n/g, ' ');
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const [op = '', ...rest] = l.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(' ') };
    });
}

/** The stages: each FROM and the instructions up to the next one. */
function stages(all: Instruction[]): { from: string; name: string | undefined; body: Instruction[] }[] {
  const out: { from: string; name: string | undefined; body: Instruction[] }[] = [];
  for (const ins of all) {
    if (ins.op === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)!;
      out.push({ from: m[1]!, name: m[2], body: [] });
    } else out.at(-1)?.body.push(ins);
  }
  return out;
}

/** .dockerignore semantics for plain names and `*`: last matching pattern wins, parents count. */
function ignored(patterns: string[], file: string): boolean {
  let result = false;
  const parts = file.replace(/^\.\//, '').replace(/\/$/, '').split('/');
  for (const raw of patterns) {
    const negate = raw.startsWith('!');
    const glob = new RegExp(`^${(negate ? raw.slice(1) : raw).replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`);
    for (let i = 1; i <= parts.length; i++) if (glob.test(parts.slice(0, i).join('/'))) result = !negate;
  }
  return result;
}

const dockerfile = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');
const all = instructions(dockerfile);
const [build, runtime] = [stages(all).at(0)!, stages(all).at(-1)!];
const ops = (body: Instruction[], op: string) => body.filter((i) => i.op === op).map((i) => i.args);

describe('Dockerfile (static checks; no Docker engine here)', () => {
  it('is multi-stage: a build stage compiles, the final stage installs production dependencies only', () => {
    expect(stages(all).length).toBeGreaterThanOrEqual(2);
    expect(build.name).toBeDefined();
    expect(ops(build.body, 'RUN').join('\n')).toMatch(/npm ci\b/);
    expect(ops(build.body, 'RUN').join('\n')).toMatch(/npm run build\b/);
    expect(runtime.from).not.toBe(build.name);
    const runtimeRuns = ops(runtime.body, 'RUN').join('\n');
    expect(runtimeRuns).toMatch(/npm ci\b[^\n]*--omit=dev/);
    expect(runtimeRuns).not.toMatch(/npm run build|npm (ci|install)(?![^\n]*--omit=dev)/);
    // The compiled code comes from the build stage; no TypeScript sources in the final image.
    expect(ops(runtime.body, 'COPY')).toContain(`--from=${build.name} /app/dist ./dist`);
    expect(ops(runtime.body, 'COPY').some((a) => /\bsrc\b/.test(a))).toBe(false);
  });

  it('runs as a non-root user from before the entrypoint to the end', () => {
    const users = ops(runtime.body, 'USER');
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)).not.toMatch(/^(root|0)(:|$)/);
    const lastUser = runtime.body.map((i) => i.op).lastIndexOf('USER');
    expect(lastUser).toBeLessThan(runtime.body.findIndex((i) => i.op === 'ENTRYPOINT'));
  });

  it('exposes 27100 and 27180 and runs `node dist/cli/main.js serve --config /app/config` from /app', () => {
    expect(ops(runtime.body, 'EXPOSE').join(' ').split(/\s+/).sort()).toEqual(['27100', '27180']);
    expect(ops(runtime.body, 'WORKDIR').at(-1)).toBe('/app');
    expect(JSON.parse(ops(runtime.body, 'ENTRYPOINT').at(-1)!)).toEqual(['node', 'dist/cli/main.js']);
    expect(JSON.parse(ops(runtime.body, 'CMD').at(-1)!)).toEqual(['serve', '--config', '/app/config']);
    expect(ops(runtime.body, 'COPY')).toContain('config ./config');
    expect(fs.existsSync(path.join(ROOT, 'src/cli/main.ts'))).toBe(true);
  });

  it('listens on 0.0.0.0 through MDB_LISTEN / MDB_HTTP_LISTEN, which the real loader accepts with the baked-in config', () => {
    const env: Record<string, string> = {};
    for (const args of ops(runtime.body, 'ENV')) {
      for (const m of args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[m[1]!] = m[2]!.replace(/^"|"$/g, '');
    }
    expect(env).toMatchObject({ MDB_LISTEN: '0.0.0.0:27100', MDB_HTTP_LISTEN: '0.0.0.0:27180' });
    const config = loadRuntimeConfig({ config: path.join(ROOT, 'config') }, env);
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 27100 });
    expect(config.httpListen).toEqual({ host: '0.0.0.0', port: 27180 });
  });

  it('copies only files that exist and that .dockerignore lets into the build context', () => {
    const patterns = fs
      .readFileSync(path.join(ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    const sources = [...ops(build.body, 'COPY'), ...ops(runtime.body, 'COPY')]
      .filter((a) => !a.startsWith('--from='))
      .flatMap((a) => a.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const src of sources) {
      expect(fs.existsSync(path.join(ROOT, src)), `${src} exists`).toBe(true);
      expect(ignored(patterns, src), `${src} is in the build context`).toBe(false);
    }
    for (const secretish of ['node_modules', 'dist', '.git', 'test', '.env']) expect(ignored(patterns, secretish), secretish).toBe(true);
  });

  it('has a HEALTHCHECK command that passes on a 200 from /healthz and fails when nothing answers', async () => {
    const healthcheck = ops(runtime.body, 'HEALTHCHECK').at(-1)!;
    const argv = JSON.parse(healthcheck.slice(healthcheck.indexOf('CMD') + 3).trim()) as string[];
    expect(argv[0]).toBe('node');
    const server = http.createServer((req, res) => {
      res.writeHead(req.url === '/healthz' ? 200 : 404);
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const run = (env: Record<string, string>) =>
      promisify(execFile)(process.execPath, argv.slice(1), { cwd: ROOT, env: { ...process.env, ...env }, timeout: 10_000 });
    try {
      await expect(run({ MDB_HTTP_LISTEN: `0.0.0.0:${port}` })).resolves.toBeDefined();
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    await expect(run({ MDB_HTTP_LISTEN: `0.0.0.0:${port}` })).rejects.toMatchObject({ code: 1 });
  });
});
