import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CliProcess } from './cli-process.js';
import { ROOT, assertBuilt, tempConfig } from '../../src/testing/processes.js';

/** `mdb-runtime validate [--config DIR]` as a user runs it: the built CLI on good and bad config dirs. */

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
beforeAll(() => assertBuilt());

const ANCESTOR = fs.readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../apps/fixtures/mdb-engine/tasks.json'), 'utf8');

function config(runtime: string, apps: Record<string, string>): string {
  const dir = tempConfig(runtime, apps);
  dirs.push(dir);
  return dir;
}

async function validate(args: string[], env: Record<string, string> = {}) {
  const cli = CliProcess.start(['validate', ...args], env);
  const { code } = await cli.exit();
  return { code, out: cli.stdout, err: cli.stderr, lines: cli.stdout.trimEnd().split('\n') };
}

describe('a valid config directory', () => {
  it('exits 0 with a summary; warnings (a migrated mdb-engine manifest, an unset secret) are printed but do not fail', async () => {
    const dir = config('listen: 127.0.0.1:27111\nindexes:\n  reconcile: replace\n', {
      'board.yaml': 'slug: board\nauth:\n  jwt: { secret_env: BOARD_SECRET }\nmanaged_indexes:\n  cards:\n    - { keys: { lane: 1, rank: 1 }, unique: true }\n',
      'tasks.json': ANCESTOR,
    });
    const { code, lines, err } = await validate(['--config', dir], { TASKS_JWT_SECRET: 's'.repeat(32) });
    expect(err).toBe('');
    expect(code).toBe(0);
    const board = path.join(dir, 'apps', 'board.yaml');
    const tasks = path.join(dir, 'apps', 'tasks.json');
    expect(lines).toContain(
      `${board}:3:22: warning: auth.jwt.secret_env: the environment variable BOARD_SECRET is not set; set it to a random secret of at least 32 bytes (e.g. openssl rand -base64 32); until then app 'board' is unavailable (its clients fail authentication)`,
    );
    expect(lines.filter((l) => l.startsWith(`${tasks}:`) && l.includes(': warning: '))).toHaveLength(11);
    expect(lines.at(-1)).toBe(`${dir}: ok: runtime.yaml and 2 manifests; apps: board, tasks; 12 warnings`);
  });

  it('accepts the example config/ of the repository', async () => {
    const { code, lines } = await validate(['--config', path.join(ROOT, 'config')], { TASK_MANAGER_JWT_SECRET: 'k'.repeat(32) });
    expect(code).toBe(0);
    expect(lines.at(-1)).toBe(`${path.join(ROOT, 'config')}: ok: runtime.yaml and 2 manifests; apps: playground, task_manager; 1 warning`);
  });

  it('reads the directory from MDB_CONFIG like serve does', async () => {
    const dir = config('', { 'dev.yaml': 'slug: dev\nauth_required: false\n' });
    const { code, lines } = await validate([], { MDB_CONFIG: dir });
    expect(code).toBe(0);
    expect(lines.at(-1)).toBe(`${dir}: ok: runtime.yaml and 1 manifest; apps: dev; 1 warning`);
  });
});

describe('a config directory with problems', () => {
  it('prints every problem with file:line:col, key, expected and found, then a summary, and exits 1', async () => {
    const dir = config('listen: 127.0.0.1:1\nupstream:\n  pool:\n    max_sise: 5\nlog_level: loud\n', {
      'shop.yaml': 'slug: shop\nauth_required: false\n',
      'orders.yaml': 'slug: orders\nauth_required: false\nlimits: { connections: 0 }\nmanaged_indexes:\n  orders:\n    - { keys: { total: desc } }\n',
      'shop_admin.yaml': 'slug: shop_admin\nauth_required: false\n',
      'notes.yaml': 'slug: notes\nauth_required: false\nmanaged_indexes:\n  n:\n    - { keys: { a: 1 }, name: x }\n    - { keys: { b: 1 }, name: x }\n',
      'broken.yaml': 'slug: broken\nname: "unterminated\n',
      'typo.yaml': 'slug: typo\nauth_required: false\nindex_polcy: { prune: true }\n',
    });
    const { code, lines } = await validate(['-c', dir]);
    expect(code).toBe(1);
    const runtime = path.join(dir, 'runtime.yaml');
    const app = (f: string) => path.join(dir, 'apps', f);
    const expected = [
      `${runtime}:5:12: log_level: expected one of trace, debug, info, warn, error, fatal, silent, found "loud" (a string)`,
      `${app('broken.yaml')}:2:7: invalid YAML: Missing closing "quote (the value starting here is never closed)`,
      `${app('notes.yaml')}:6:31: managed_indexes.n[1].name: index name 'x' is also the name of managed_indexes.n[0]; index names must be unique within a collection: give one of them another name`,
      `${app('orders.yaml')}:3:24: limits.connections: expected an integer >= 1, found 0`,
      `${app('orders.yaml')}:6:24: managed_indexes.orders[0].keys.total: expected 1 (ascending), -1 (descending), 'text', '2dsphere', '2d' or 'hashed', found "desc" (a string)`,
      `${app('typo.yaml')}:3:1: index_polcy: unknown key (did you mean 'index_policy'?); allowed: schema_version, slug, name, description, auth_required, expose_tag, auth, managed_indexes, index_policy, data_access, websockets, limits, observability`,
      `${app('shop_admin.yaml')}: slug: 'shop_admin' conflicts with 'shop' (${app('shop.yaml')})`,
    ];
    for (const e of expected) expect(lines.some((l) => l.startsWith(e)), `${e}\n---\n${lines.join('\n')}`).toBe(true);
    // The loader's complaint about runtime.yaml (its own words) is not repeated by the schema's list.
    expect(lines.filter((l) => l.includes('max_sise'))).toEqual([
      `${runtime}:4:5: unknown setting 'upstream.pool.max_sise' (did you mean 'upstream.pool.max_size'?); allowed under 'upstream.pool': max_size, max_idle_time_ms, wait_queue_timeout_ms`,
    ]);
    expect(lines.at(-1)).toMatch(new RegExp(`^${dir}: 8 problems, \\d+ warnings? \\(checked runtime\\.yaml and 6 manifests\\)$`));
  });

  it('a config directory that does not exist', async () => {
    const missing = path.join(ROOT, 'no-such-config-dir');
    const { code, lines } = await validate(['--config', missing]);
    expect(code).toBe(1);
    expect(lines[0]).toBe(`--config: config directory ${missing} does not exist`);
    expect(lines.at(-1)).toMatch(/: 1 problem, 0 warnings/);
  });

  it('a bad value from the environment, as serve would see it', async () => {
    const dir = config('', {});
    const { code, lines } = await validate(['--config', dir], { MDB_LISTEN: 'nowhere' });
    expect(code).toBe(1);
    expect(lines[0]).toBe("MDB_LISTEN: expected host:port (e.g. 127.0.0.1:27100) with a port from 0 to 65535, found 'nowhere'");
  });
});

it('--help says what it checks and when it fails', async () => {
  const cli = CliProcess.start(['validate', '--help']);
  const { code } = await cli.exit();
  expect(code).toBe(0);
  expect(cli.stdout).toContain('Usage: mdb-runtime validate [options]');
  expect(cli.stdout).toContain('--config <dir>');
  expect(cli.stdout).toContain('Exits 1 when there is a problem, 0 otherwise (warnings do not fail).');
});
