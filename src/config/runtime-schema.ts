import { schemaProblems, type JsonSchema, type SchemaProblem } from './schema.js';
import { LOG_LEVELS, SETTINGS, expectation, type SettingSpec } from './settings.js';
import type { Locator } from './source.js';

/**
 * The JSON Schema of runtime.yaml, generated from the SETTINGS table (settings.ts), which also drives
 * the loader, the flags, --help and the README. `schema/runtime.schema.json` is this object
 * written out by `npm run docs`; a test fails when the file is stale or disagrees with SETTINGS.
 *
 * Every setting may be empty (`listen:` means "not set": the env variable, flag or default applies).
 * `x-env` and `x-flag` name the overrides of each setting (flag > env > file > default).
 */

/** The sections of runtime.yaml (keys holding settings), described for the reference page. */
export const SECTION_HELP: Readonly<Record<string, string>> = {
  upstream: 'The upstream MongoDB deployment and the shared physical database.',
  'upstream.pool': 'The raw connection pool kept per upstream server.',
  indexes: "Index reconciliation defaults (an app's index_policy may override reconcile and prune).",
};

const HOST_PORT_PATTERN = '^(?:\\[[^\\]]+\\]|[^:]*):\\d+$|^\\d+$';

function settingSchema(spec: SettingSpec): JsonSchema {
  const common: JsonSchema = {
    description: spec.help,
    default: spec.default,
    'x-env': spec.env,
    'x-flag': spec.flag,
    'x-kind': spec.kind,
    'x-expected': expectation(spec),
  };
  switch (spec.kind) {
    case 'hostport':
      return { type: ['string', 'integer', 'null'], pattern: HOST_PORT_PATTERN, minimum: 0, maximum: 65535, ...common };
    case 'uri':
      return { type: ['string', 'null'], pattern: '^mongodb(\\+srv)?://', ...common };
    case 'database':
      return { type: ['string', 'null'], pattern: '^[A-Za-z0-9_-]{1,63}$', ...common };
    case 'logLevel':
      return { enum: [...LOG_LEVELS, null], ...common };
    case 'int':
      return { type: ['integer', 'null'], minimum: spec.min ?? 0, ...(spec.max !== undefined ? { maximum: spec.max } : {}), ...common };
    case 'fieldName':
      return { type: ['string', 'null'], pattern: '^[A-Za-z_][A-Za-z0-9_]{0,63}$', not: { const: '_id' }, ...common };
    case 'bool':
      return { type: ['boolean', 'null'], ...common };
    case 'enum':
      return { enum: [...(spec.values ?? []), null], ...common };
  }
}

function section(description: string | undefined): JsonSchema {
  return {
    type: ['object', 'null'],
    additionalProperties: false,
    properties: {},
    'x-expected': 'a mapping of settings',
    ...(description ? { description } : {}),
  };
}

/** The runtime.yaml schema (a new object each call). */
export function runtimeSchema(): JsonSchema {
  const root: JsonSchema = {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'https://github.com/mdb-runtime/mdb-runtime/schema/runtime.schema.json',
    $comment: 'Generated from SETTINGS (src/config/settings.ts) by `npm run docs`; do not edit.',
    title: 'mdb-runtime runtime.yaml',
    description:
      'The settings of the proxy itself: config/runtime.yaml (or runtime.yml). Every setting can be overridden by an environment variable and a `serve` flag (flag > env > file > default). Unknown keys are errors.',
    ...section(undefined),
    'x-expected': 'a mapping of settings (e.g. "listen: 127.0.0.1:27100")',
  };
  for (const spec of SETTINGS) {
    const parts = spec.key.split('.');
    let node = root;
    for (let i = 0; i < parts.length - 1; i++) {
      const props = node.properties as Record<string, JsonSchema>;
      const name = parts.slice(0, i + 1).join('.');
      props[parts[i]!] ??= section(SECTION_HELP[name]);
      node = props[parts[i]!]!;
    }
    (node.properties as Record<string, JsonSchema>)[parts.at(-1)!] = settingSchema(spec);
  }
  return root;
}

let cachedSchema: JsonSchema | undefined;

/** The problems of a runtime.yaml value. */
export function runtimeSchemaProblems(value: unknown, locator: Locator): SchemaProblem[] {
  cachedSchema ??= runtimeSchema();
  return schemaProblems(cachedSchema, value, locator, {});
}
