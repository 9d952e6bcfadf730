import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ConfigError, YamlFile } from '../../src/config/source.js';
import { checkManifest } from '../../src/apps/manifests.js';
import { MANIFEST_SCHEMA, manifestSchemaProblems, type JsonSchema } from '../../src/apps/manifest-schema.js';
import { runtimeSchema, runtimeSchemaProblems } from '../../src/config/runtime-schema.js';
import { LOG_LEVELS, SETTINGS, loadRuntimeConfig, runtimeFileProblems } from '../../src/config/runtime-config.js';
import { ANNOTATIONS } from '../../src/config/schema.js';
import { configDirWith, removeConfigDirs } from '../helpers/apps.js';

/** The JSON Schemas (schema/*.schema.json) and the messages made of ajv's errors. */

afterAll(() => removeConfigDirs());

const FILE = '/cfg/apps/x.yaml';

/** Every problem of a manifest text (schema and rules), as loaded from /cfg/apps/<name>. */
function problems(text: string, file = FILE): string[] {
  return checkManifest(file, text, { env: {}, configDir: '/cfg' }).problems;
}

const open = 'slug: x\nauth_required: false\n';

describe('the schemas are valid JSON Schema 2020-12 and compile in strict mode', () => {
  it.each([
    ['manifest', MANIFEST_SCHEMA],
    ['runtime', runtimeSchema()],
  ])('%s', (_name, schema) => {
    const ajv = new Ajv2020({ strict: true, allowUnionTypes: true });
    ajv.addVocabulary(ANNOTATIONS);
    expect(ajv.validateSchema(schema), JSON.stringify(ajv.errors)).toBe(true);
    expect(() => ajv.compile(schema)).not.toThrow();
  });

  it('rejects unknown keys everywhere: every object schema closes its keys', () => {
    const open: string[] = [];
    const walk = (node: unknown, at: string) => {
      if (typeof node !== 'object' || node === null) return;
      const s = node as JsonSchema;
      if (s.properties && s.additionalProperties !== false) open.push(at);
      for (const [k, v] of Object.entries(s)) walk(v, `${at}/${k}`);
    };
    walk(MANIFEST_SCHEMA, '#');
    walk(runtimeSchema(), '#');
    // collation's options are the server's to check (locale is required; the rest pass through)
    expect(open).toEqual(['#/properties/managed_indexes/additionalProperties/items/properties/collation']);
  });
});

describe('manifest problems name file:line:col, the key path, what was expected and what was found', () => {
  it.each([
    ['a wrong type', `${open}expose_tag: yes please\n`, `${FILE}:3:13: expose_tag: expected true or false, found "yes please" (a string)`],
    ['an enum', `${open}index_policy: { reconcile: always }\n`, `${FILE}:3:28: index_policy.reconcile: expected one of report, replace, found "always" (a string)`],
    ['a minimum', `${open}limits:\n  connections: 0\n`, `${FILE}:4:16: limits.connections: expected an integer >= 1, found 0`],
    ['an integer', `${open}limits:\n  operations_per_second: 2.5\n`, `${FILE}:4:26: limits.operations_per_second: expected an integer >= 1, found 2.5`],
    ['a range', `${open}limits: { max_document_bytes: 20000000 }\n`, `${FILE}:3:31: limits.max_document_bytes: expected an integer from 1 to 16777216, found 20000000`],
    [
      'an index kind',
      `${open}managed_indexes:\n  tasks:\n    - keys: { status: asc }\n`,
      `${FILE}:5:23: managed_indexes.tasks[0].keys.status: expected 1 (ascending), -1 (descending), 'text', '2dsphere', '2d' or 'hashed', found "asc" (a string)`,
    ],
    [
      'a kind in the list form',
      `${open}managed_indexes:\n  tasks:\n    - keys: [[a, 1], [b, 2]]\n`,
      `${FILE}:5:26: managed_indexes.tasks[0].keys[1][1]: expected 1 (ascending), -1 (descending), 'text', '2dsphere', '2d' or 'hashed', found 2`,
    ],
    [
      'keys that are neither form',
      `${open}managed_indexes:\n  tasks:\n    - keys: status\n`,
      `${FILE}:5:13: managed_indexes.tasks[0].keys: expected a mapping of field: kind, in order (e.g. { status: 1, created_at: -1 }) or a list of [field, kind] pairs (e.g. [[status, 1], [created_at, -1]]), found "status" (a string)`,
    ],
    [
      'a bad collection name (a key)',
      `${open}managed_indexes:\n  system.users: []\n`,
      `${FILE}:4:3: managed_indexes.system.users: expected a collection name: not empty, without '$' or NUL, not starting with 'system.', found "system.users" (a string)`,
    ],
    [
      'a field starting with $',
      `${open}managed_indexes:\n  t:\n    - keys: { $where: 1 }\n`,
      `${FILE}:5:15: managed_indexes.t[0].keys.$where: expected a field path (dotted, no empty part, no part starting with '$'), or a wildcard: '$**' or 'path.$**', found "$where" (a string)`,
    ],
    ['a missing key', `${open}managed_indexes:\n  t:\n    - name: x\n`, `${FILE}:5:7: managed_indexes.t[0].keys: missing; e.g. keys: { status: 1, created_at: -1 }`],
    ['a missing websocket collection', `${open}websockets:\n  - path: /live\n`, `${FILE}:4:5: websockets[0].collection: missing; the collection whose changes the endpoint streams`],
    ['a duplicate in a list', `${open}data_access:\n  collections: [a, b, a]\n`, `${FILE}:4:23: data_access.collections: expected a list without duplicates, found "a" (a string) twice (items 0 and 2)`],
    ['a bad websocket path', `${open}websockets:\n  - { path: live, collection: t }\n`, `${FILE}:4:13: websockets[0].path: expected an URL path starting with '/' (letters, digits, '.', '_', '~', '-', '/'), found "live" (a string)`],
    ['the version', `slug: x\nschema_version: "3.0"\n`, `${FILE}:2:17: schema_version: expected 3 (the current format; "1.0" and "2.0" are mdb-engine manifests, migrated on load), found "3.0" (a string)`],
  ])('%s', (_what, text, expected) => {
    expect(problems(text)).toEqual([expected]);
  });

  describe('unknown keys: where, the allowed keys, and a hint', () => {
    it('suggests the closest allowed key', () => {
      expect(problems(`${open}limits: { conections: 5 }\n`)).toEqual([
        `${FILE}:3:11: limits.conections: unknown key (did you mean 'connections'?); allowed: connections, operations_per_second, max_document_bytes, max_documents_per_collection, upstream_connections, open_cursors`,
      ]);
    });

    it('points to where a key belongs when it is at the wrong level', () => {
      expect(problems(`${open}prune: true\n`)[0]).toMatch(new RegExp(`^${FILE}:3:1: prune: unknown key \\(did you mean 'index_policy\\.prune'\\?\\); allowed: schema_version, slug,`));
      expect(problems(`${open}slow_operation_ms: 5\n`)[0]).toContain("(did you mean 'observability.slow_operation_ms'?)");
    });

    it('explains index entries written the mdb-engine way', () => {
      const [message] = problems(`${open}managed_indexes:\n  t:\n    - { keys: { a: 1 }, options: { unique: true } }\n`);
      expect(message).toMatch(new RegExp(`^${FILE}:5:25: managed_indexes\\.t\\[0\\]\\.options: unknown key; put index options directly in the entry`));
      expect(problems(`${open}managed_indexes:\n  t:\n    - { keys: { a: 1 }, type: regular }\n`)[0]).toContain('the kind of an index follows from its keys');
    });

    it('recognizes an mdb-engine manifest without its schema_version and says how to load it', () => {
      const [message] = problems(`${open}cors: { enabled: true }\n`);
      expect(message).toContain(`${FILE}:3:1: cors: unknown key; 'cors' is a key of mdb-engine's manifest.json`);
      expect(message).toContain("give it its version (schema_version: '2.0')");
    });
  });

  it('reports every schema problem of a file, in file order', () => {
    const text = `${open}limits: { connections: 0 }\nobservability: { slow_operation_ms: -1 }\nexpose_tag: 3\n`;
    expect(problems(text).map((p) => p.split(': ')[0])).toEqual([`${FILE}:3:24`, `${FILE}:4:37`, `${FILE}:5:13`]);
  });

  it('gives positions in JSON manifests too', () => {
    const text = '{\n  "slug": "x",\n  "auth_required": false,\n  "limits": {\n    "connections": "many"\n  }\n}\n';
    expect(problems(text, '/cfg/apps/x.json')).toEqual([`/cfg/apps/x.json:5:20: limits.connections: expected an integer >= 1, found "many" (a string)`]);
  });

  it('says what a whole file should be', () => {
    expect(problems('- slug: x\n')).toEqual([`${FILE}:1:1: expected a mapping with at least 'slug: <slug>', found a list`]);
    expect(problems('')).toEqual([`${FILE}: expected a mapping with at least 'slug: <slug>', found an empty value`]);
  });

  it('validates values directly, with any Locator', () => {
    const yaml = YamlFile.parse(FILE, 'slug: 5\n');
    expect(manifestSchemaProblems(yaml.value, yaml).map((p) => ({ at: p.at, path: p.path }))).toEqual([{ at: `${FILE}:1:7`, path: ['slug'] }]);
  });
});

describe('runtime.schema.json agrees with SETTINGS', () => {
  const schema = runtimeSchema();
  const at = (key: string): JsonSchema => {
    let node = schema;
    for (const part of key.split('.')) node = (node.properties as Record<string, JsonSchema>)[part]!;
    return node;
  };

  it.each(SETTINGS.map((s) => [s.key, s]))('%s: type, default, bounds, env and flag', (_key, spec) => {
    const node = at(spec.key);
    expect(node.default).toEqual(spec.default);
    expect(node['x-env']).toBe(spec.env);
    expect(node['x-flag']).toBe(spec.flag);
    expect(node.description).toBe(spec.help);
    const types = (node.type as string[] | undefined) ?? [];
    switch (spec.kind) {
      case 'int':
        expect(types).toEqual(['integer', 'null']);
        expect(node.minimum).toBe(spec.min ?? 0);
        break;
      case 'bool':
        expect(types).toEqual(['boolean', 'null']);
        break;
      case 'enum':
        expect(node.enum).toEqual([...spec.values!, null]);
        break;
      case 'logLevel':
        expect(node.enum).toEqual([...LOG_LEVELS, null]);
        break;
      case 'hostport':
        expect(types).toEqual(['string', 'integer', 'null']);
        break;
      default:
        expect(types).toEqual(['string', 'null']);
    }
    // The default itself is valid, and so is an empty value ("not set").
    const value: Record<string, unknown> = {};
    let cur = value;
    const parts = spec.key.split('.');
    for (const p of parts.slice(0, -1)) cur = (cur[p] = {}) as Record<string, unknown>;
    const yaml = YamlFile.parse('/cfg/runtime.yaml', '{}');
    cur[parts.at(-1)!] = spec.default;
    expect(runtimeSchemaProblems(value, yaml)).toEqual([]);
    cur[parts.at(-1)!] = null;
    expect(runtimeSchemaProblems(value, yaml)).toEqual([]);
  });

  it('has exactly the SETTINGS keys (and their sections)', () => {
    const leaves: string[] = [];
    const walk = (node: JsonSchema, prefix: string) => {
      for (const [k, v] of Object.entries((node.properties as Record<string, JsonSchema>) ?? {})) {
        const key = prefix ? `${prefix}.${k}` : k;
        if (v.properties) walk(v, key);
        else leaves.push(key);
      }
    };
    walk(schema, '');
    expect(leaves.sort()).toEqual(SETTINGS.map((s) => s.key).sort());
  });

  it('accepts the example config/runtime.yaml and rejects what the loader rejects', () => {
    expect(runtimeFileProblems(path.resolve('config'))).toEqual([]);
    const dir = configDirWith({ 'runtime.yaml': 'listen: [1]\nupstream:\n  pool:\n    max_sise: 3\n  database: a.b\n' });
    const file = path.join(dir, 'runtime.yaml');
    expect(runtimeFileProblems(dir)).toEqual([
      `${file}:1:9: listen: expected host:port (e.g. 127.0.0.1:27100) with a port from 0 to 65535, found a list`,
      `${file}:4:5: upstream.pool.max_sise: unknown key (did you mean 'max_size'?); allowed: max_size, max_idle_time_ms, wait_queue_timeout_ms`,
      `${file}:5:13: upstream.database: expected a database name of 1-63 letters, digits, '_' or '-', found "a.b" (a string)`,
    ]);
  });

  it('makes the loader refuse a quoted number in runtime.yaml (a string in YAML), after its own checks', () => {
    const dir = configDirWith({ 'runtime.yaml': 'upstream:\n  pool:\n    max_size: "10"\n' });
    let message = '';
    try {
      loadRuntimeConfig({ config: dir }, {});
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      message = (err as Error).message;
    }
    expect(message).toBe(`${path.join(dir, 'runtime.yaml')}:3:15: upstream.pool.max_size: expected an integer >= 1, found "10" (a string)`);
    // As text from the environment, digits are the way to write a number.
    expect(loadRuntimeConfig({ config: configDirWith({}) }, { MDB_POOL_MAX_SIZE: '10' }).upstream.pool.maxSize).toBe(10);
  });

  it('is written to schema/runtime.schema.json', () => {
    const file = JSON.parse(fs.readFileSync(path.resolve('schema/runtime.schema.json'), 'utf8')) as unknown;
    expect(file).toEqual(schema);
  });
});
