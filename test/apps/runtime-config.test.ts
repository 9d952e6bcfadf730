import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ConfigError,
  SETTINGS,
  loadRuntimeConfig,
  redactUri,
  type ConfigOverrides,
  type RuntimeConfig,
} from '../../src/config/runtime-config.js';
import { loadManifests } from '../../src/apps/manifests.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A temporary config dir with the given files (relative path → text). */
function configDir(files: Record<string, string> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-config-test-'));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

/** The ConfigError thrown by `fn` (fails the test if it returns or throws something else). */
function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).message;
  }
  throw new Error('expected a ConfigError, but nothing was thrown');
}

/** One distinct valid value per setting, as YAML text, as env/flag text, and as loaded. */
const SAMPLES: Record<string, { yaml: string[]; text: string[]; pick: (c: RuntimeConfig) => unknown }> = {
  listen: { yaml: ['127.0.0.1:1001'], text: ['127.0.0.2:1002', '127.0.0.3:1003'], pick: (c) => c.listen },
  http_listen: { yaml: ['127.0.0.1:2001'], text: ['127.0.0.2:2002', '127.0.0.3:2003'], pick: (c) => c.httpListen },
  'upstream.uri': {
    yaml: ['mongodb://file-host:1'],
    text: ['mongodb://env-host:2', 'mongodb://flag-host:3'],
    pick: (c) => c.upstream.uri,
  },
  'upstream.database': { yaml: ['db_file'], text: ['db_env', 'db_flag'], pick: (c) => c.upstream.database },
  log_level: { yaml: ['warn'], text: ['error', 'debug'], pick: (c) => c.logLevel },
  shutdown_grace_ms: { yaml: ['11'], text: ['12', '13'], pick: (c) => c.shutdownGraceMS },
  workers: { yaml: ['2'], text: ['3', '4'], pick: (c) => c.workers },
  pre_auth_idle_timeout_ms: { yaml: ['14'], text: ['15', '16'], pick: (c) => c.preAuthIdleTimeoutMS },
  tag_field: { yaml: ['tag_file'], text: ['tag_env', 'tag_flag'], pick: (c) => c.tagField },
  slow_operation_ms: { yaml: ['41'], text: ['42', '43'], pick: (c) => c.slowOperationMS },
  metrics: { yaml: ['false'], text: ['true', 'false'], pick: (c) => c.metrics },
  'indexes.reconcile': { yaml: ['replace'], text: ['report', 'replace'], pick: (c) => c.indexes.reconcile },
  'indexes.prune': { yaml: ['true'], text: ['false', 'true'], pick: (c) => c.indexes.prune },
  'indexes.interval_ms': { yaml: ['5001'], text: ['5002', '5003'], pick: (c) => c.indexes.intervalMS },
  'indexes.lease_ttl_ms': { yaml: ['6001'], text: ['6002', '6003'], pick: (c) => c.indexes.leaseTtlMS },
  'upstream.connect_timeout_ms': { yaml: ['21'], text: ['22', '23'], pick: (c) => c.upstream.connectTimeoutMS },
  'upstream.server_selection_timeout_ms': {
    yaml: ['31'],
    text: ['32', '33'],
    pick: (c) => c.upstream.serverSelectionTimeoutMS,
  },
  'upstream.pool.max_size': { yaml: ['41'], text: ['42', '43'], pick: (c) => c.upstream.pool.maxSize },
  'upstream.pool.max_idle_time_ms': { yaml: ['51'], text: ['52', '53'], pick: (c) => c.upstream.pool.maxIdleTimeMS },
  'upstream.pool.wait_queue_timeout_ms': {
    yaml: ['61'],
    text: ['62', '63'],
    pick: (c) => c.upstream.pool.waitQueueTimeoutMS,
  },
  'upstream.request_timeout_ms': { yaml: ['71000'], text: ['72000', '73000'], pick: (c) => c.upstream.requestTimeoutMS },
  'upstream.max_await_time_ms': { yaml: ['81'], text: ['82', '83'], pick: (c) => c.upstream.maxAwaitTimeMS },
};

/** What a sample value loads as: host:port → {host, port}, digits → number, else the string. */
function loaded(text: string): unknown {
  const hp = /^(.+):(\d+)$/.exec(text);
  if (hp && !text.startsWith('mongodb')) return { host: hp[1], port: Number(hp[2]) };
  if (text === 'true' || text === 'false') return text === 'true';
  return /^\d+$/.test(text) ? Number(text) : text;
}

/** runtime.yaml text setting every key to its file sample. */
function fullRuntimeYaml(): string {
  const lines: string[] = [];
  const nested: Record<string, string[]> = { upstream: [], 'upstream.pool': [], indexes: [] };
  for (const s of SETTINGS) {
    const parts = s.key.split('.');
    const leaf = `${parts.at(-1)}: ${SAMPLES[s.key]!.yaml[0]}`;
    if (parts.length === 1) lines.push(leaf);
    else nested[parts.slice(0, -1).join('.')]!.push(leaf);
  }
  return [
    ...lines,
    'upstream:',
    ...nested.upstream!.map((l) => `  ${l}`),
    '  pool:',
    ...nested['upstream.pool']!.map((l) => `    ${l}`),
    'indexes:',
    ...nested.indexes!.map((l) => `  ${l}`),
    '',
  ].join('\n');
}

describe('loadRuntimeConfig', () => {
  it('has a sample for every setting (the table and this test agree)', () => {
    expect(Object.keys(SAMPLES).sort()).toEqual(SETTINGS.map((s) => s.key).sort());
    expect(SETTINGS.map((s) => s.env)).toEqual(
      expect.arrayContaining(['MDB_LISTEN', 'MDB_HTTP_LISTEN', 'MDB_UPSTREAM_URI', 'MDB_DATABASE', 'MDB_LOG_LEVEL']),
    );
  });

  it('uses the documented defaults when there is no runtime.yaml, no env and no flag', () => {
    const dir = configDir();
    const config = loadRuntimeConfig({ config: dir }, {});
    expect(config).toEqual({
      configDir: dir,
      file: undefined,
      listen: { host: '127.0.0.1', port: 27100 },
      httpListen: { host: '127.0.0.1', port: 27180 },
      upstream: {
        uri: 'mongodb://127.0.0.1:27017',
        database: 'mdb_runtime',
        connectTimeoutMS: 10_000,
        serverSelectionTimeoutMS: 30_000,
        pool: { maxSize: 100, maxIdleTimeMS: 60_000, waitQueueTimeoutMS: 30_000 },
        requestTimeoutMS: 120_000,
        maxAwaitTimeMS: 10_000,
      },
      logLevel: 'info',
      shutdownGraceMS: 10_000,
      workers: 1,
      preAuthIdleTimeoutMS: 60_000,
      tagField: 'app_id',
      slowOperationMS: 100,
      metrics: true,
      indexes: { reconcile: 'report', prune: false, intervalMS: 60_000, leaseTtlMS: 30_000 },
    } satisfies RuntimeConfig);
  });

  it('defaults the config dir to ./config, and the example config/ in the repository loads', () => {
    const cwd = process.cwd();
    process.chdir(ROOT);
    try {
      const config = loadRuntimeConfig({}, {});
      expect(config.configDir).toBe(path.join(ROOT, 'config'));
      expect(config.file).toBe(path.join(ROOT, 'config', 'runtime.yaml'));
      expect(config.listen).toEqual({ host: '127.0.0.1', port: 27100 });
      expect(loadManifests(config.configDir).map((m) => m.slug)).toEqual(['playground', 'task_manager']);
    } finally {
      process.chdir(cwd);
    }
  });

  it('reads every setting from runtime.yaml (and runtime.yml)', () => {
    for (const name of ['runtime.yaml', 'runtime.yml']) {
      const dir = configDir({ [name]: fullRuntimeYaml() });
      const config = loadRuntimeConfig({ config: dir }, {});
      expect(config.file).toBe(path.join(dir, name));
      for (const s of SETTINGS) expect(SAMPLES[s.key]!.pick(config), s.key).toEqual(loaded(SAMPLES[s.key]!.yaml[0]!));
    }
  });

  it('lets every env variable override the file, and every flag override the env variable', () => {
    const dir = configDir({ 'runtime.yaml': fullRuntimeYaml() });
    for (const s of SETTINGS) {
      const [envValue, flagValue] = SAMPLES[s.key]!.text as [string, string];
      const env = { [s.env]: envValue };
      expect(SAMPLES[s.key]!.pick(loadRuntimeConfig({ config: dir }, env)), `${s.env} over the file`).toEqual(loaded(envValue));
      const flags: ConfigOverrides = { config: dir, [s.option]: flagValue };
      expect(SAMPLES[s.key]!.pick(loadRuntimeConfig(flags, env)), `${s.flag} over ${s.env}`).toEqual(loaded(flagValue));
      // Only that one setting moved; the others still come from the file.
      const other = SETTINGS.find((o) => o.key !== s.key)!;
      expect(SAMPLES[other.key]!.pick(loadRuntimeConfig(flags, env))).toEqual(loaded(SAMPLES[other.key]!.yaml[0]!));
    }
  });

  it('reads the section-2 variables by their documented names', () => {
    const dir = configDir({ 'runtime.yaml': fullRuntimeYaml() });
    const config = loadRuntimeConfig(
      {},
      {
        MDB_CONFIG: dir,
        MDB_LISTEN: '0.0.0.0:7001',
        MDB_HTTP_LISTEN: '[::1]:7002',
        MDB_UPSTREAM_URI: 'mongodb://u:p@db.example:27018/?replicaSet=rs0',
        MDB_DATABASE: 'shared_db',
        MDB_LOG_LEVEL: 'trace',
      },
    );
    expect(config.configDir).toBe(dir);
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 7001 });
    expect(config.httpListen).toEqual({ host: '::1', port: 7002 });
    expect(config.upstream.uri).toBe('mongodb://u:p@db.example:27018/?replicaSet=rs0');
    expect(config.upstream.database).toBe('shared_db');
    expect(config.logLevel).toBe('trace');
  });

  it('lets --config win over MDB_CONFIG, and treats an empty env variable as unset', () => {
    const fromEnv = configDir({ 'runtime.yaml': 'listen: 127.0.0.1:1\n' });
    const fromFlag = configDir({ 'runtime.yaml': 'listen: 127.0.0.1:2\n' });
    expect(loadRuntimeConfig({}, { MDB_CONFIG: fromEnv }).listen.port).toBe(1);
    expect(loadRuntimeConfig({ config: fromFlag }, { MDB_CONFIG: fromEnv }).listen.port).toBe(2);
    expect(loadRuntimeConfig({ config: fromFlag }, { MDB_LISTEN: '' }).listen.port).toBe(2);
  });

  it('accepts a bare port and an empty value as "not set"', () => {
    const dir = configDir({ 'runtime.yaml': 'listen: 27111\nhttp_listen:\n' });
    const config = loadRuntimeConfig({ config: dir }, {});
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 27111 });
    expect(config.httpListen).toEqual({ host: '127.0.0.1', port: 27180 });
  });

  describe('errors name the file, line:col, key, what was expected and what was found', () => {
    const cases: { name: string; yaml: string; expected: string[] }[] = [
      {
        name: 'negative pool size',
        yaml: 'upstream:\n  pool:\n    max_size: -3\n',
        expected: ['runtime.yaml:3:15: upstream.pool.max_size', 'expected an integer >= 1', 'found -3'],
      },
      {
        name: 'timeout as a quoted string',
        yaml: 'upstream:\n  server_selection_timeout_ms: "soon"\n',
        expected: ['runtime.yaml:2:32: upstream.server_selection_timeout_ms', 'expected an integer >= 1', 'found "soon" (a string)'],
      },
      {
        name: 'bad listen address',
        yaml: 'log_level: info\nlisten: localhost:99999\n',
        expected: ['runtime.yaml:2:9: listen', 'expected host:port', 'found "localhost:99999" (a string)'],
      },
      {
        name: 'listen as a list',
        yaml: 'listen: [1, 2]\n',
        expected: ['runtime.yaml:1:9: listen', 'expected host:port', 'found a list'],
      },
      {
        name: 'unknown log level',
        yaml: '\n\nlog_level: loud\n',
        expected: ['runtime.yaml:3:12: log_level', 'expected one of trace, debug, info, warn, error, fatal, silent', 'found "loud"'],
      },
      {
        name: 'upstream URI with the wrong scheme',
        yaml: 'upstream:\n  uri: http://user:hunter2@db:27017\n',
        expected: ['runtime.yaml:2:8: upstream.uri', 'mongodb://', "found 'http://user:***@db:27017'"],
      },
      {
        name: 'database name with a dot',
        yaml: 'upstream:\n  database: my.db\n',
        expected: ['runtime.yaml:2:13: upstream.database', "1-63 letters, digits, '_' or '-'", 'found "my.db"'],
      },
      {
        name: "tag field starting with '$'",
        yaml: 'log_level: info\ntag_field: $x\n',
        expected: [
          'runtime.yaml:2:12: tag_field',
          'expected a top-level field name of letters, digits and _ (not starting with a digit, not _id), e.g. app_id',
          'found "$x"',
        ],
      },
      {
        name: 'tag field starting with a digit',
        yaml: 'tag_field: 1a\n',
        expected: ['runtime.yaml:1:12: tag_field', 'not starting with a digit', 'found "1a"'],
      },
      {
        name: 'dotted tag field (not a top-level field)',
        yaml: 'tag_field: app.id\n',
        expected: ['runtime.yaml:1:12: tag_field', 'a top-level field name', 'found "app.id"'],
      },
      {
        name: 'section that is not a mapping',
        yaml: 'upstream: mongodb://db:27017\n',
        expected: ['runtime.yaml:1:11: upstream', 'expected a mapping of settings', 'found "mongodb://db:27017" (a string)'],
      },
      {
        name: 'a typo in a key',
        yaml: 'listen: 127.0.0.1:1\nupstream:\n  pool:\n    max_sise: 3\n',
        expected: ['runtime.yaml:4:5', "unknown setting 'upstream.pool.max_sise'", "did you mean 'upstream.pool.max_size'?"],
      },
      {
        name: 'a key at the wrong level',
        yaml: 'uri: mongodb://db:27017\n',
        expected: ['runtime.yaml:1:1', "unknown setting 'uri'", "did you mean 'upstream.uri'?", 'allowed at the top level: listen'],
      },
      {
        name: 'a list instead of a mapping',
        yaml: '- listen: 1\n',
        expected: ['runtime.yaml:1:1', 'expected a mapping of settings', 'found a list'],
      },
      {
        name: 'YAML syntax error (unclosed quote)',
        yaml: 'listen: 127.0.0.1:1\nupstream:\n  uri: "mongodb://db\n',
        expected: ['runtime.yaml:3:8: invalid YAML: Missing closing "quote (the value starting here is never closed)'],
      },
      {
        name: 'YAML syntax error (unclosed flow sequence)',
        yaml: 'upstream:\n  uri: [oops\nlisten: 1\n',
        expected: ['runtime.yaml:2:8: invalid YAML', 'end with a ]'],
      },
      {
        name: 'YAML syntax error (bad indentation)',
        yaml: 'upstream:\n  uri: mongodb://db\n database: x\n',
        expected: ['runtime.yaml:3:1: invalid YAML: All mapping items must start at the same column'],
      },
      {
        name: 'duplicate key',
        yaml: 'listen: 127.0.0.1:1\nlisten: 127.0.0.1:2\n',
        expected: ['runtime.yaml:2:1', 'invalid YAML', 'Map keys must be unique'],
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const dir = configDir({ 'runtime.yaml': c.yaml });
        const message = configError(() => loadRuntimeConfig({ config: dir }, {}));
        expect(message.startsWith(path.join(dir, 'runtime.yaml'))).toBe(true);
        for (const part of c.expected) expect(message).toContain(part);
        expect(message).not.toContain('hunter2');
      });
    }

    it('names the env variable or the flag a bad value came from', () => {
      const dir = configDir({ 'runtime.yaml': 'listen: 127.0.0.1:1\n' });
      expect(configError(() => loadRuntimeConfig({ config: dir }, { MDB_LISTEN: 'nowhere' }))).toBe(
        "MDB_LISTEN: expected host:port (e.g. 127.0.0.1:27100) with a port from 0 to 65535, found 'nowhere'",
      );
      expect(configError(() => loadRuntimeConfig({ config: dir, httpListen: ':x' }, {}))).toMatch(/^--http-listen: expected host:port.*found ':x'$/);
      expect(configError(() => loadRuntimeConfig({ config: dir }, { MDB_LOG_LEVEL: 'verbose' }))).toMatch(
        /^MDB_LOG_LEVEL: expected one of trace, .*found 'verbose'$/,
      );
      expect(configError(() => loadRuntimeConfig({ config: dir }, { MDB_DATABASE: 'a/b' }))).toMatch(/^MDB_DATABASE: expected a database name.*found 'a\/b'$/);
      expect(configError(() => loadRuntimeConfig({ config: dir }, { MDB_TAG_FIELD: '$x' }))).toMatch(/^MDB_TAG_FIELD: expected a top-level field name.*found '\$x'$/);
      expect(configError(() => loadRuntimeConfig({ config: dir, tagField: '1a' }, {}))).toMatch(/^--tag-field: expected a top-level field name.*found '1a'$/);
      // _id as the tag would give every document of an app the same _id.
      expect(configError(() => loadRuntimeConfig({ config: dir, tagField: '_id' }, {}))).toMatch(/^--tag-field: expected .*not _id.*found '_id'$/);
      expect(configError(() => loadRuntimeConfig({ config: dir, poolMaxSize: '0' }, {}))).toBe(
        "--pool-max-size: expected an integer >= 1, found '0'",
      );
      expect(configError(() => loadRuntimeConfig({ config: dir }, { MDB_SHUTDOWN_GRACE_MS: '1.5' }))).toBe(
        "MDB_SHUTDOWN_GRACE_MS: expected an integer >= 0, found '1.5'",
      );
      expect(configError(() => loadRuntimeConfig({ config: dir, workers: '65' }, {}))).toBe("--workers: expected an integer from 1 to 64, found '65'");
      expect(configError(() => loadRuntimeConfig({ config: dir }, { MDB_WORKERS: '0' }))).toBe("MDB_WORKERS: expected an integer from 1 to 64, found '0'");
    });

    it('rejects an unparsable connection string without echoing its password', () => {
      const message = configError(() => loadRuntimeConfig({ config: configDir() }, { MDB_UPSTREAM_URI: 'mongodb://bob:hunter2@h:1:2/' }));
      expect(message).toMatch(/^MDB_UPSTREAM_URI: invalid connection string 'mongodb:\/\/bob:\*\*\*@h:1:2\/'/);
      expect(message).not.toContain('hunter2');
    });

    it('says when a named config directory does not exist', () => {
      const missing = path.join(os.tmpdir(), 'mdb-no-such-dir-' + process.pid);
      expect(configError(() => loadRuntimeConfig({ config: missing }, {}))).toBe(`--config: config directory ${missing} does not exist`);
      expect(configError(() => loadRuntimeConfig({}, { MDB_CONFIG: missing }))).toBe(`MDB_CONFIG: config directory ${missing} does not exist`);
    });

    it('refuses runtime.yaml and runtime.yml side by side', () => {
      const dir = configDir({ 'runtime.yaml': 'listen: 1\n', 'runtime.yml': 'listen: 2\n' });
      expect(configError(() => loadRuntimeConfig({ config: dir }, {}))).toContain('both exist');
    });
  });
});

describe('redactUri', () => {
  it.each([
    ['mongodb://bob:hunter2@db:27017/', 'mongodb://bob:***@db:27017/'],
    ['mongodb+srv://bob:hunter2@cluster0.example.net/app?retryWrites=true', 'mongodb+srv://bob:***@cluster0.example.net/app?retryWrites=true'],
    ['mongodb://bob:p%40ss%2Fword@a:1,b:2/?replicaSet=rs', 'mongodb://bob:***@a:1,b:2/?replicaSet=rs'],
    ['mongodb://bob:unescaped@at@db/', 'mongodb://bob:***@db/'],
    ['mongodb://db/?tls=true&tlsCertificateKeyFilePassword=hunter2&x=1', 'mongodb://db/?tls=true&tlsCertificateKeyFilePassword=***&x=1'],
    ['mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:hunter2', 'mongodb://db/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:***'],
    ['mongodb://bob@db:27017/?authMechanism=MONGODB-X509', 'mongodb://bob@db:27017/?authMechanism=MONGODB-X509'],
    ['mongodb://127.0.0.1:27017', 'mongodb://127.0.0.1:27017'],
    ['http://bob:hunter2@db:27017', 'http://bob:***@db:27017'],
    ['bob:hunter2@db:27017', 'bob:***@db:27017'],
  ])('%s → %s', (uri, redacted) => {
    expect(redactUri(uri)).toBe(redacted);
    expect(redactUri(uri)).not.toContain('hunter2');
  });
});

describe('loadManifests', () => {
  const app = (slug: string, extra = '') => `slug: ${slug}\nname: App ${slug}\n${extra}`;

  it('accepts .yaml, .yml and .json manifests and ignores other files', () => {
    const dir = configDir({
      'apps/alpha.yaml': app('alpha', 'auth_required: false\n'),
      'apps/beta.yml': app('beta', 'auth:\n  jwt:\n    secret_env: BETA_SECRET\n'),
      'apps/gamma.json': JSON.stringify({ slug: 'gamma', name: 'Gamma', auth_required: true, auth: { jwt: { secret_env: 'GAMMA_SECRET' } } }),
      'apps/README.md': '# not a manifest',
      'apps/delta.yaml.bak': 'slug: [broken',
    });
    const manifests = loadManifests(dir, { BETA_SECRET: 'b'.repeat(32) });
    expect(manifests.map(({ slug, name, authRequired }) => ({ slug, name, authRequired }))).toEqual([
      { slug: 'alpha', name: 'App alpha', authRequired: false },
      { slug: 'beta', name: 'App beta', authRequired: true },
      { slug: 'gamma', name: 'Gamma', authRequired: true },
    ]);
    // GAMMA_SECRET is not set: gamma loads, but is unavailable (the proxy starts and logs why).
    expect(manifests[1]!.unavailable).toBeUndefined();
    expect(manifests[2]!.unavailable).toContain('the environment variable GAMMA_SECRET is not set');
    expect(manifests[2]!.file).toBe(path.join(dir, 'apps', 'gamma.json'));
  });

  it('returns no apps when there is no apps/ directory', () => {
    expect(loadManifests(configDir())).toEqual([]);
  });

  it.each([
    ['Upper', 'starts with an upper-case letter'],
    ['9lives', 'starts with a digit'],
    ['a-b', 'has a dash'],
    ['a'.repeat(33), 'is 33 characters long'],
  ])('rejects the slug %s (%s) naming file:line:col, the rule and the value', (slug) => {
    const dir = configDir({ [`apps/${slug}.yaml`]: `name: Bad\nslug: ${slug}\n` });
    const message = configError(() => loadManifests(dir));
    expect(message).toContain(`${path.join(dir, 'apps', `${slug}.yaml`)}:2:7: slug: expected a lowercase name matching ^[a-z][a-z0-9_]{0,31}$`);
    expect(message).toContain(`found "${slug}"`);
  });

  it('rejects a slug that is not a string, and a missing slug with a suggestion', () => {
    const dir = configDir({ 'apps/n.yaml': 'slug: 42\n', 'apps/My-App.yml': 'name: x\n' });
    const message = configError(() => loadManifests(dir));
    expect(message).toContain(`${path.join(dir, 'apps', 'n.yaml')}:1:7: slug: expected a lowercase name`);
    expect(message).toContain('found 42');
    expect(message).toContain(`${path.join(dir, 'apps', 'My-App.yml')}:1:1: slug: missing; add 'slug: my_app'`);
  });

  it('rejects a slug that does not match the file name, saying how to fix it', () => {
    const dir = configDir({ 'apps/tasks.yaml': app('task_manager', 'auth_required: false\n') });
    expect(configError(() => loadManifests(dir))).toBe(
      `${path.join(dir, 'apps', 'tasks.yaml')}:1:7: slug: 'task_manager' must match the file name; rename the file to task_manager.yaml or set 'slug: tasks'`,
    );
  });

  it('reports every problem of a file at once, one per line', () => {
    const dir = configDir({ 'apps/tasks.yaml': app('task_manager') });
    const file = path.join(dir, 'apps', 'tasks.yaml');
    // In file order: the missing auth.jwt is reported at the top of the file.
    expect(configError(() => loadManifests(dir)).split('\n')).toEqual([
      expect.stringMatching(new RegExp(`^${file}:1:1: auth\\.jwt: missing; an app with auth_required: true`)),
      `${file}:1:7: slug: 'task_manager' must match the file name; rename the file to task_manager.yaml or set 'slug: tasks'`,
    ]);
  });

  it('rejects the same slug declared twice (same name, two extensions)', () => {
    const dir = configDir({ 'apps/dup.yaml': app('dup', 'auth_required: false\n'), 'apps/dup.json': '{"slug": "dup", "auth_required": false}' });
    expect(configError(() => loadManifests(dir))).toBe(
      `${path.join(dir, 'apps', 'dup.yaml')}: slug: 'dup' is already declared by ${path.join(dir, 'apps', 'dup.json')}; keep one of the two files`,
    );
  });

  it('names line and column of a bad value and of a syntax error, in YAML and JSON', () => {
    const dir = configDir({
      'apps/flag.yaml': 'slug: flag\nauth_required: "yes"\n',
      'apps/json.json': '{\n  "slug": "json",\n  "name": ["x"]\n}\n',
      'apps/broken.yaml': 'slug: broken\nname: "unterminated\n',
    });
    const message = configError(() => loadManifests(dir));
    // Every problem is reported at once, one per line.
    expect(message.split('\n').filter((l) => l.startsWith(dir))).toHaveLength(3);
    expect(message).toContain(`${path.join(dir, 'apps', 'flag.yaml')}:2:16: auth_required: expected true or false, found "yes" (a string)`);
    expect(message).toContain(`${path.join(dir, 'apps', 'json.json')}:3:11: name: expected a string, found a list`);
    expect(message).toContain(`${path.join(dir, 'apps', 'broken.yaml')}:2:7: invalid YAML: Missing closing "quote`);
  });
});
