import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { YamlFile } from '../../src/config/source.js';
import { checkManifest, loadManifests, type AppManifest } from '../../src/apps/manifests.js';
import { manifestVersion, migratedSecretEnv } from '../../src/apps/migrations.js';
import { AppRegistry } from '../../src/apps/registry.js';
import { configDirWith, removeConfigDirs } from '../helpers/apps.js';

/**
 * mdb-engine manifests (schema_version "1.0" and "2.0") load through the migration.
 * The fixtures are manifest.json files as mdb-engine apps wrote them: web-app auth, cross-app scopes,
 * index definitions with types and options, AI services, CORS, websockets.
 */

afterAll(() => removeConfigDirs());

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'mdb-engine');
const fixture = (name: string) => fs.readFileSync(path.join(FIXTURES, name), 'utf8');
const SECRET = 'x'.repeat(32);

/** Loads `text` as config/apps/<file> (the position of `needle` in it, for the expected messages). */
function check(file: string, text: string, env: NodeJS.ProcessEnv = {}): { manifest: AppManifest | undefined; problems: string[]; at: (needle: string, key?: boolean) => string } {
  const full = `/cfg/apps/${file}`;
  const result = checkManifest(full, text, { env, configDir: '/cfg' });
  const at = (needle: string, key = true) => {
    const index = text.indexOf(needle);
    if (index < 0) throw new Error(`${needle} is not in ${file}`);
    const before = text.slice(0, index + (key ? 0 : needle.length)).split('\n');
    return `${full}:${before.length}:${before.at(-1)!.length + 1}`;
  };
  return { ...result, at };
}

describe('the mdb-engine 2.0 manifest of a task app', () => {
  const { manifest, problems, at } = check('tasks.json', fixture('tasks.json'), { TASKS_JWT_SECRET: SECRET });
  const m = manifest!;

  it('loads, remembering the version it was written in', () => {
    expect(problems).toEqual([]);
    expect(m).toMatchObject({ slug: 'tasks', name: 'Team Tasks', schemaVersion: 2, exposeTag: false, unavailable: undefined });
  });

  it('authenticates database connections with a JWT whose HS256 secret is <SLUG>_JWT_SECRET', () => {
    expect(migratedSecretEnv('tasks')).toBe('TASKS_JWT_SECRET');
    expect(m.authRequired).toBe(true);
    expect(m.jwt!.keys.map((k) => [k.source, k.algorithms])).toEqual([['secret_env TASKS_JWT_SECRET', ['HS256']]]);
    // mdb-engine's web roles are not database grants: no RBAC, the app is not restricted within itself.
    expect(m.rbac).toBeUndefined();
  });

  it('maps the keyed indexes: ordered keys, options flattened, names as mdb-engine created them', () => {
    expect([...m.managedIndexes.keys()]).toEqual(['tasks', 'activity', 'sites']);
    expect(m.managedIndexes.get('tasks')!.map((i) => [i.name, i.keys, i.options])).toEqual([
      ['tasks_status_due', [['status', 1], ['due_at', -1]], {}],
      ['tasks_ticket_ref', [['ticket_ref', 1]], { unique: true, sparse: true }],
      ['tasks_search', [['title', 'text'], ['body', 'text']], { weights: { title: 10, body: 2 }, default_language: 'english' }],
      ['tasks_open_by_owner', [['owner', 1]], { partialFilterExpression: { status: 'open' } }],
    ]);
    expect(m.managedIndexes.get('activity')!.map((i) => [i.name, i.keys, i.options])).toEqual([
      ['tasks_expire_activity', [['created_at', 1]], { expireAfterSeconds: 2592000 }],
    ]);
    expect(m.managedIndexes.get('sites')!.map((i) => [i.name, i.keys])).toEqual([['tasks_site_location', [['location', '2dsphere']]]]);
  });

  it('warns, with file:line:col, about each section it ignores', () => {
    const expected: [string, string][] = [
      [`${at('{', true)}`, `migrated from mdb-engine schema_version "2.0": clients authenticate with a JWT signed with the HS256 secret in TASKS_JWT_SECRET (mint one with 'mdb-runtime token tasks')`],
      [at('"auth"'), "auth: ignored: mdb-engine's web-app authentication (auth.mode, auth.auth_hub_url, auth.roles, auth.default_role, auth.require_role, auth.public_routes, auth.policy, auth.users, token_management"],
      [at('"shared_catalog"', true).replace(/:\d+:\d+$/, '') , 'data_access.read_scopes: ignored: cross-app reads (shared_catalog) are not possible through mdb-runtime'],
      [at('{ "type": "ttl", "name": "broken_ttl"'), "managed_indexes.activity[1]: index 'broken_ttl' ignored: type 'ttl' needs options.expireAfterSeconds (a positive integer) (mdb-engine skipped it too)"],
      [at('"vectorSearch"'), "managed_indexes.knowledge[0].type: index 'embedding_index' (vectorSearch) ignored: Atlas Search and Vector Search indexes are not managed by mdb-runtime; create it in Atlas on the physical collection tasks_knowledge"],
      [at('"collection_settings"'), 'collection_settings: ignored: validators, capped and time-series collections'],
      [at('"initial_data"'), 'initial_data: ignored: mdb-runtime does not seed collections'],
      [at('"websockets"'), "websockets: ignored: mdb-engine's websocket routes (board: /ws/board) ran in the app's own process"],
      [at('"cors"'), "cors: ignored: CORS is the web app's concern"],
      [at('"observability"'), "observability: ignored: the proxy's /healthz, /readyz, /metrics and JSON logs cover every app"],
      [at('"memory_config"'), "memory_config: ignored: mdb-engine's AI services"],
    ];
    for (const [where, text] of expected) {
      expect(m.warnings.some((w) => w.startsWith(where) && w.includes(text)), `${where} ${text}\n${m.warnings.join('\n')}`).toBe(true);
    }
    // One warning each; embedding_config is disabled, so it is not mentioned; metadata is ignored silently.
    expect(m.warnings).toHaveLength(expected.length);
    expect(m.warnings.join('\n')).not.toMatch(/embedding_config|developer_id|description|"status"|background/);
  });

  it('registers next to other apps and is unavailable, with the reason, while its secret is unset', () => {
    const unset = check('tasks.json', fixture('tasks.json')).manifest!;
    expect(unset.unavailable).toBe(
      `${at('"tasks"', true).replace(/:\d+:\d+$/, '')}:3:11: auth.jwt.secret_env (set by the migration from schema_version 2.0): the environment variable TASKS_JWT_SECRET is not set; set it to a random secret of at least 32 bytes (e.g. openssl rand -base64 32)`,
    );
  });
});

describe('the mdb-engine 1.0 manifest of a notes app', () => {
  it('loads; auth_required: false does not carry over (a token is still required), with a warning', () => {
    const { manifest, problems, at } = check('notes.json', fixture('notes.json'), { NOTES_JWT_SECRET: SECRET });
    expect(problems).toEqual([]);
    const m = manifest!;
    expect(m).toMatchObject({ slug: 'notes', schemaVersion: 1, authRequired: true });
    expect(m.warnings.find((w) => w.startsWith(at('"auth_required"')))).toContain('auth_required: not carried over');
    expect(m.warnings.join('\n')).not.toContain('data_scope'); // ["self"] is what mdb-runtime does anyway
    expect(m.managedIndexes.get('notes')!.map((i) => [i.name, i.keys])).toEqual([
      ['notes_recent', [['updated_at', -1]]],
      // mdb-engine skipped indexes without a name; mdb-runtime names it as the server would.
      ['tags_1_updated_at_-1', [['tags', 1], ['updated_at', -1]]],
    ]);
  });
});

describe('what the migration refuses, with what to do', () => {
  it('encrypted fields: ignoring them would store the fields in plain text', () => {
    const { manifest, problems, at } = check('vault.json', fixture('vault.json'));
    expect(manifest).toBeUndefined();
    expect(problems).toEqual([
      `${at('"encrypted_fields"')}: encrypted_fields: mdb-runtime does not encrypt fields: loading this app would store payments.card_number, payments.cvv in plain text. Keep the app on mdb-engine, or have the app encrypt these fields itself (explicit client-side encryption in its driver) and remove encrypted_fields`,
    ]);
  });

  it('a multi-app manifest', () => {
    const text = JSON.stringify({ schema_version: '2.0', slug: 'hub', name: 'Hub', multi_app: { enabled: true, apps: [{ slug: 'a', manifest: './a.json' }] } }, null, 2);
    const { problems } = check('hub.json', text);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/hub\.json:5:3: multi_app: this is an mdb-engine multi-app manifest.*config\/apps\/<slug>\.json/);
  });

  it('a slug mdb-engine allowed but mdb-runtime cannot take, with the steps to rename it', () => {
    const text = JSON.stringify({ schema_version: '2.0', slug: 'click-tracker', name: 'Clicks' }, null, 2);
    const { problems } = check('click-tracker.json', text);
    expect(problems[0]).toContain("/cfg/apps/click-tracker.json:3:11: slug: 'click-tracker' is a valid mdb-engine slug but not an mdb-runtime one");
    expect(problems[0]).toContain("pick a new slug (e.g. 'click_tracker'), rename the collections to 'click_tracker_<name>'");
  });

  it('an unknown index type', () => {
    const text = JSON.stringify({ schema_version: '2.0', slug: 'x', name: 'X', managed_indexes: { t: [{ type: 'columnstore', name: 'c', keys: { a: 1 } }] } }, null, 2);
    const { problems, at } = check('x.json', text);
    expect(problems).toEqual([
      `${at('"columnstore"')}: managed_indexes.t[0].type: expected one of regular, text, geospatial, ttl, partial, vectorSearch, search, hybrid, found "columnstore" (a string)`,
    ]);
  });
});

describe('problems in migrated content point at the original file', () => {
  it('schema problems name the mdb-engine key path and its position', () => {
    const text = JSON.stringify(
      { schema_version: '2.0', slug: 'x', name: 'X', managed_indexes: { t: [{ type: 'ttl', name: 'e', keys: { at: 1 }, options: { expireAfterSeconds: 5, collation: 'fr' } }] } },
      null,
      2,
    );
    const { problems, at } = check('x.json', text, { X_JWT_SECRET: SECRET });
    expect(problems).toEqual([`${at('"fr"')}: managed_indexes.t[0].options.collation: expected a mapping, found "fr" (a string)`]);
  });

  it('rule problems too (two text indexes)', () => {
    const text = JSON.stringify(
      { schema_version: '2.0', slug: 'x', name: 'X', managed_indexes: { t: [{ type: 'text', name: 'a', keys: { a: 'text' } }, { type: 'text', name: 'b', keys: { b: 'text' } }] } },
      null,
      2,
    );
    const { problems, at } = check('x.json', text, { X_JWT_SECRET: SECRET });
    // The value of the second entry's keys: the mapping that holds "b".
    const value = at('"b": "text"').replace(/:(\d+):\d+$/, (_m, line: string) => `:${Number(line) - 1}:17`);
    expect(problems).toEqual([
      `${value}: managed_indexes.t[1].keys: a collection has at most one text index, and managed_indexes.t[0] is one: put all text fields in one index`,
    ]);
  });
});

describe('versions', () => {
  const yaml = (v: string) => YamlFile.parse('/cfg/apps/x.yaml', `schema_version: ${v}\n`).value as Record<string, unknown>;

  it.each([
    ['"1.0"', { kind: 'ancestor', version: 1 }],
    ['"2.0"', { kind: 'ancestor', version: 2 }],
    ['2', { kind: 'ancestor', version: 2 }],
    ['"2"', { kind: 'ancestor', version: 2 }],
    ['3', { kind: 'current' }],
    ['"4.0"', { kind: 'newer', version: '4.0' }],
    ['[3]', { kind: 'current' }],
  ])('schema_version: %s', (v, expected) => {
    expect(manifestVersion(yaml(v))).toEqual(expected);
  });

  it('absent: the current format', () => {
    expect(manifestVersion({ slug: 'x' })).toEqual({ kind: 'current' });
  });

  it('refuses a newer version, saying to upgrade', () => {
    expect(check('x.yaml', 'slug: x\nschema_version: 4\n').problems).toEqual([
      '/cfg/apps/x.yaml:2:17: schema_version: 4 is a newer format than this mdb-runtime reads (up to 3); upgrade mdb-runtime',
    ]);
  });
});

it('loads a config directory mixing mdb-runtime manifests and mdb-engine ones', () => {
  const dir = configDirWith({
    'apps/tasks.json': fixture('tasks.json'),
    'apps/notes.json': fixture('notes.json'),
    'apps/board.yaml': 'slug: board\nauth_required: false\n',
  });
  const apps = AppRegistry.build(loadManifests(dir, { TASKS_JWT_SECRET: SECRET, NOTES_JWT_SECRET: SECRET }));
  expect(apps.slugs).toEqual(['board', 'notes', 'tasks']);
  expect([...apps].map((m) => m.schemaVersion)).toEqual([3, 1, 2]);
});
