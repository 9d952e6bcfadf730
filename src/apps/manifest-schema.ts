import { schemaProblems, type JsonSchema, type ProblemOptions, type SchemaProblem } from '../config/schema.js';
import type { Locator } from '../config/source.js';
import { ACTIONS } from '../policy/rbac.js';
import { MANIFEST_SCHEMA_VERSION } from './manifest-types.js';

/**
 * The JSON Schema (draft 2020-12) of an app manifest, `config/apps/<slug>.yaml`.
 *
 * This object is the source: `schema/manifest.schema.json` and `docs/manifest-reference.md` are
 * generated from it (`npm run docs`; a test fails when they are stale), and manifestSchemaProblems below
 * validates every manifest with it (src/config/schema.ts) before the semantic checks of manifests.ts.
 *
 * Annotations besides the standard keywords (ignored by other validators, used for messages and docs):
 * - `x-expected`: what a person should write here, used in "expected ..., found ..." messages in place
 *   of the generated wording (and for every failure of the value itself, including its alternatives);
 * - `x-message`: the whole message for a failure of this value (rules that "expected" reads badly for);
 * - `x-unknown-hints`: for an object, hints shown when one of these (unknown) keys is used;
 * - `x-required-hints`: for an object, hints shown when one of its required keys is missing;
 * - `x-doc`: longer text for the reference page only; `x-type`: the type column of the reference page.
 */
export type { JsonSchema };

/** Where a manifest path or key name comes from in the ancestor's manifest.json (a v3 file using one). */
const ANCESTOR_HINT =
  "'{key}' is a key of mdb-engine's manifest.json; this file is read as an mdb-runtime manifest (schema_version 3). " +
  "To load an mdb-engine manifest as it is, give it its version (schema_version: '2.0'); see docs/manifest-reference.md";

const ANCESTOR_KEYS = [
  'status',
  'developer_id',
  'pip_deps',
  'data_scope',
  'collection_settings',
  'initial_data',
  'token_management',
  'embedding_config',
  'memory_config',
  'llm_config',
  'cors',
  'multi_app',
  'encrypted_fields',
  'encryption_config',
  'auth_policy',
  'sub_auth',
];

/** Collection names the proxy's namespace resolver accepts (src/policy/namespace.ts). */
export const COLLECTION_NAME_PATTERN = '^(?!system\\.)[^$\\u0000]+$';
const COLLECTION_NAME_RULE = "a collection name: not empty, without '$' or NUL, not starting with 'system.'";

/** A dotted field path (no empty part, no part starting with '$'), or a wildcard: `$**`, `path.$**`. */
export const INDEX_FIELD_PATTERN = '^(?:\\$\\*\\*|[^$.\\u0000][^.\\u0000]*(?:\\.[^$.\\u0000][^.\\u0000]*)*(?:\\.\\$\\*\\*)?)$';
const INDEX_FIELD_RULE =
  "a field path (dotted, no empty part, no part starting with '$'), or a wildcard: '$**' or 'path.$**'";

export const INDEX_KINDS = [1, -1, 'text', '2dsphere', '2d', 'hashed'] as const;

const collectionName: JsonSchema = { type: 'string', pattern: COLLECTION_NAME_PATTERN, 'x-expected': COLLECTION_NAME_RULE };

const indexKind: JsonSchema = {
  enum: [...INDEX_KINDS],
  'x-expected': "1 (ascending), -1 (descending), 'text', '2dsphere', '2d' or 'hashed'",
};

const indexField: JsonSchema = { type: 'string', pattern: INDEX_FIELD_PATTERN, 'x-expected': INDEX_FIELD_RULE };

const collectionList = (what: string): JsonSchema => ({
  anyOf: [
    { type: 'string', minLength: 1 },
    { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
  ],
  'x-expected': "a list of collection names ('*' = all)",
  description: `Collections the role may ${what} (the app's own names; '*' = all). A single name counts as a list of one.`,
});

const keyEntryProperties: Record<string, JsonSchema> = {
  secret_env: {
    type: 'string',
    minLength: 1,
    'x-expected': 'the name of an environment variable',
    description:
      'The environment variable holding an HMAC secret (HS256/384/512; at least 32, 48 or 64 bytes). An unset or short secret makes the app unavailable (not a load error).',
  },
  public_key_file: {
    type: 'string',
    minLength: 1,
    'x-expected': 'a file path (relative to the config directory)',
    description: 'An SPKI PEM public key (RSA, EC P-256/384/521, Ed25519), relative to the config directory.',
  },
  jwks_file: {
    type: 'string',
    minLength: 1,
    'x-expected': 'a file path (relative to the config directory)',
    description: 'A local JWKS of public keys, relative to the config directory.',
  },
  algorithms: {
    anyOf: [
      { type: 'string', minLength: 1 },
      { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
    ],
    'x-expected': 'a list of JWS algorithms (e.g. [HS256])',
    description:
      "Allowed `alg` values (default: by key type). Never 'none', never HS* with a public key; checked against the key when it is loaded.",
  },
  kid: { type: 'string', minLength: 1, 'x-expected': 'a non-empty string', description: 'Only tokens whose header names this kid (or none) are tried with this key.' },
};

const keyEntry: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  properties: keyEntryProperties,
  'x-expected': `a mapping with ${Object.keys(keyEntryProperties).join(', ')}`,
};

const jwt: JsonSchema = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: {
    ...keyEntryProperties,
    keys: {
      type: 'array',
      minItems: 1,
      items: keyEntry,
      'x-expected': 'a non-empty list of keys (each with secret_env, public_key_file or jwks_file)',
      description:
        'Several keys (rotation): each entry has one of secret_env, public_key_file, jwks_file, with its own algorithms and kid; a token verifies if one of them accepts it. Not together with an inline key.',
    },
    issuer: { type: 'string', minLength: 1, 'x-expected': 'a non-empty string', description: 'When set, the token `iss` must equal it.' },
    audience: {
      anyOf: [
        { type: 'string', minLength: 1 },
        { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
      ],
      'x-expected': 'a string or a list of strings',
      description: 'When set, the token `aud` must name it (or one of them).',
    },
  },
  'x-expected': `a mapping with ${[...Object.keys(keyEntryProperties), 'keys', 'issuer', 'audience'].join(', ')}`,
  description:
    'How tokens are verified: one key inline (secret_env, public_key_file or jwks_file) or several under keys. Required when auth_required is true.',
};

const role: JsonSchema = {
  type: ['object', 'null'],
  description: 'One role: the collections it may read, write and manage indexes of. An empty role grants nothing.',
  additionalProperties: false,
  properties: Object.fromEntries(ACTIONS.map((a) => [a, collectionList(a === 'indexes' ? 'manage indexes of' : a)])),
  'x-expected': `a mapping with ${ACTIONS.join(', ')}`,
};

const auth: JsonSchema = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: {
    jwt,
    roles: {
      type: ['object', 'null'],
      propertyNames: {
        type: 'string',
        pattern: '^[A-Za-z0-9_.:-]{1,64}$',
        'x-message': "role names are 1-64 letters, digits, '_', '.', ':' or '-'",
      },
      additionalProperties: role,
      'x-expected': "a mapping of role names to grants (e.g. reader: { read: ['*'] })",
      description:
        "Roles by name, each granting read, write and indexes on collections. A token's roles claim selects them; without the claim the connection gets default_role. Without roles the app is not restricted.",
    },
    default_role: { type: ['string', 'null'], minLength: 1, 'x-expected': 'a role name', description: 'The role of a token without a roles claim; one of roles.' },
  },
  'x-expected': 'a mapping with jwt, roles, default_role',
  description: 'Token verification keys and roles.',
};

const indexOptions: Record<string, JsonSchema> = {
  unique: { type: 'boolean', description: 'Refuse documents that repeat the indexed value(s) (within the app: every app has its own collections).' },
  sparse: { type: 'boolean', description: 'Index only documents that have the indexed field(s).' },
  expireAfterSeconds: {
    type: 'integer',
    minimum: 0,
    maximum: 2147483647,
    description: 'TTL: documents expire this many seconds after the date in the (single) indexed field.',
  },
  partialFilterExpression: {
    type: 'object',
    description: "Index only documents matching this filter (the app's field names; the reconciler scopes it like any filter).",
  },
  collation: {
    type: 'object',
    required: ['locale'],
    properties: { locale: { type: 'string', minLength: 1 } },
    'x-required-hints': { locale: "e.g. collation: { locale: 'en', strength: 2 }" },
    description: 'Language-aware string comparison, e.g. `{ locale: en, strength: 2 }` (case-insensitive).',
  },
  weights: {
    type: 'object',
    additionalProperties: { type: 'integer', minimum: 1, maximum: 99999 },
    description: 'Text indexes: the weight of each field (1-99999; default 1).',
  },
  default_language: { type: 'string', minLength: 1, description: "Text indexes: the language for stemming and stop words (default 'english')." },
  language_override: { type: 'string', minLength: 1, description: "Text indexes: the document field naming a document's language (default 'language')." },
  textIndexVersion: { enum: [1, 2, 3], description: 'Text indexes: the text index version (default: the server\'s).' },
  '2dsphereIndexVersion': { enum: [1, 2, 3], description: '2dsphere indexes: the index version (default: the server\'s).' },
  bits: { type: 'integer', minimum: 1, maximum: 32, description: '2d indexes: the geohash precision (default 26).' },
  min: { type: 'number', description: '2d indexes: the lower bound of coordinates (default -180).' },
  max: { type: 'number', description: '2d indexes: the upper bound of coordinates (default 180).' },
  wildcardProjection: {
    type: 'object',
    minProperties: 1,
    additionalProperties: { enum: [0, 1, true, false] },
    description: "Wildcard indexes on '$**': the fields to include (1) or exclude (0).",
  },
  hidden: { type: 'boolean', description: 'Build and maintain the index but hide it from the query planner.' },
};

/** The createIndexes options a managed index may set (besides keys and name). */
export const INDEX_OPTION_NAMES: readonly string[] = Object.keys(indexOptions);

const managedIndex: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['keys'],
  properties: {
    keys: {
      oneOf: [
        {
          type: 'object',
          minProperties: 1,
          propertyNames: indexField,
          additionalProperties: indexKind,
          'x-expected': 'a mapping of field: kind, in order (e.g. { status: 1, created_at: -1 })',
          'x-type': 'mapping of field: kind',
        },
        {
          type: 'array',
          minItems: 1,
          items: {
            type: 'array',
            prefixItems: [indexField, indexKind],
            minItems: 2,
            maxItems: 2,
            items: false,
            'x-expected': 'a [field, kind] pair (e.g. [status, 1])',
          },
          'x-expected': 'a list of [field, kind] pairs (e.g. [[status, 1], [created_at, -1]])',
          'x-type': 'list of [field, kind] pairs',
        },
      ],
      description:
        "The index keys in order: a mapping `{ status: 1, created_at: -1 }` or a list of pairs `[[status, 1], [created_at, -1]]`. Kinds: 1, -1, 'text', '2dsphere', '2d', 'hashed'; a wildcard index is `{ '$**': 1 }` or `{ 'path.$**': 1 }`.",
    },
    name: {
      type: 'string',
      minLength: 1,
      'x-expected': 'an index name',
      description: 'The index name. Default: generated from the keys as the server does (`status_1_created_at_-1`).',
    },
    ...indexOptions,
  },
  'x-unknown-hints': {
    options: "put index options directly in the entry (e.g. { keys: { email: 1 }, unique: true }), not under 'options'",
    type: "the kind of an index follows from its keys ('text', '2dsphere', '2d', 'hashed', '$**') and options (expireAfterSeconds for TTL, partialFilterExpression)",
    background: 'remove it: MongoDB 4.2 and later ignore background (every build is online)',
    key: "the keys of an index go under 'keys'",
  },
  'x-required-hints': { keys: 'e.g. keys: { status: 1, created_at: -1 }' },
  'x-expected': 'an index: a mapping with keys (and optional name, unique, expireAfterSeconds, ...)',
};

/** The manifest schema, version MANIFEST_SCHEMA_VERSION. */
export const MANIFEST_SCHEMA: JsonSchema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'https://github.com/mdb-runtime/mdb-runtime/schema/manifest.schema.json',
  title: 'mdb-runtime app manifest',
  description:
    'One app of mdb-runtime: config/apps/<slug>.yaml (.yml and .json too). Unknown keys are errors. Files written for mdb-engine (schema_version "1.0" or "2.0") are migrated when loaded.',
  type: 'object',
  additionalProperties: false,
  required: ['slug'],
  properties: {
    schema_version: {
      const: MANIFEST_SCHEMA_VERSION,
      'x-expected': `${MANIFEST_SCHEMA_VERSION} (the current format; "1.0" and "2.0" are mdb-engine manifests, migrated on load)`,
      description: `The manifest format. Absent means ${MANIFEST_SCHEMA_VERSION}, the current one. mdb-engine's manifest.json versions "1.0" and "2.0" are migrated when loaded (see "Migration" below).`,
    },
    slug: {
      type: 'string',
      pattern: '^[a-z][a-z0-9_]{0,31}$',
      'x-expected': "a lowercase name matching ^[a-z][a-z0-9_]{0,31}$ (a letter, then up to 31 letters, digits or '_')",
      description:
        "The app's identity: its tokens carry `app: <slug>`, its collections are stored as `<slug>_<name>`. Must equal the file name. No slug may be another slug + '_' + anything, and slugs must differ once case and '_' are ignored.",
    },
    name: { type: ['string', 'null'], 'x-expected': 'a string', description: 'A human-readable name. Default: the slug.' },
    description: { type: ['string', 'null'], 'x-expected': 'a string', description: 'Free text for the people who run the app; not used by the proxy.' },
    auth_required: {
      type: ['boolean', 'null'],
      'x-expected': 'true or false',
      default: true,
      description: 'Connections need a verified token. `false` lets a client select the app with `appName=<slug>` alone (local development; the proxy warns at start).',
    },
    expose_tag: { type: ['boolean', 'null'], 'x-expected': 'true or false', default: false, description: 'Reads show the tag field (`app_id`); by default it is hidden.' },
    auth,
    managed_indexes: {
      type: ['object', 'null'],
      propertyNames: collectionName,
      additionalProperties: {
        type: ['array', 'null'],
        items: managedIndex,
        'x-expected': 'a list of indexes',
        description:
          "The indexes of one collection (the app's name for it). An empty list still makes the collection managed: with prune, its other indexes are dropped.",
      },
      'x-expected': 'a mapping of collection names to lists of indexes',
      description:
        "Indexes the proxy keeps on the app's collections (the app's own names), reconciled in the background on start and on every change. Within a collection, index names and key patterns must be unique.",
      'x-doc':
        'Each index: `keys` (required) and optionally `name` and the createIndexes options below, written exactly as the server takes them.',
    },
    index_policy: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: {
        reconcile: {
          enum: ['report', 'replace'],
          description: "A managed index whose keys or options drifted: 'report' it, or 'replace' it (drop and rebuild). Default: runtime.yaml indexes.reconcile.",
        },
        prune: {
          type: 'boolean',
          description: 'Drop indexes of managed collections that the manifest does not list (never `_id_`). Default: runtime.yaml indexes.prune.',
        },
      },
      'x-expected': 'a mapping with reconcile, prune',
      description: "How the reconciler treats this app's drifted and unmanaged indexes (overrides runtime.yaml).",
    },
    data_access: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: {
        read_only: { type: 'boolean', default: false, description: 'Refuse every write of the app (Unauthorized).' },
        collections: {
          type: 'array',
          uniqueItems: true,
          items: collectionName,
          'x-expected': 'a list of collection names',
          description:
            'When set, the only collections the app may use (its own names); others are Unauthorized. managed_indexes and websockets must stay within it.',
        },
      },
      'x-expected': 'a mapping with read_only, collections',
      description: 'What the app may do with its own data. (Other apps\' data is never reachable.)',
    },
    websockets: {
      type: ['array', 'null'],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['path', 'collection'],
        properties: {
          path: {
            type: 'string',
            pattern: '^/[A-Za-z0-9._~/-]*$',
            'x-expected': "an URL path starting with '/' (letters, digits, '.', '_', '~', '-', '/')",
            description: 'The endpoint path on the HTTP port; unique within the app.',
          },
          collection: { ...collectionName, description: 'The collection whose changes the endpoint streams.' },
          filter: { type: 'object', description: 'Only changes to documents matching this filter (scoped like any filter).' },
        },
        'x-required-hints': { collection: 'the collection whose changes the endpoint streams' },
        'x-expected': 'a mapping with path, collection and optional filter',
      },
      'x-expected': 'a list of endpoints (each with path and collection)',
      description: 'Realtime endpoints served on the HTTP port.',
    },
    limits: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: {
        connections: { type: 'integer', minimum: 1, description: 'Concurrent authenticated client connections of the app.' },
        operations_per_second: {
          type: 'integer',
          minimum: 1,
          description: "Commands per second across the app's connections (a token bucket holding one second's worth).",
        },
        max_document_bytes: {
          type: 'integer',
          minimum: 1,
          maximum: 16777216,
          description: 'The largest document the app may write, in bytes (inserts and replacements; the server\'s own limit is 16 MiB).',
        },
        max_documents_per_collection: {
          type: 'integer',
          minimum: 1,
          description: 'The most documents one collection of the app may hold (checked against a periodically refreshed count).',
        },
        upstream_connections: {
          type: 'integer',
          minimum: 1,
          description:
            "Upstream connections the app's requests may hold at once; further requests wait (up to upstream.pool.wait_queue_timeout_ms) for one of the app's own. Default: upstream.pool.max_size divided among the registered apps, but at least a quarter of it (and at least 2).",
        },
        open_cursors: {
          type: 'integer',
          minimum: 1,
          description: 'Upstream cursors the app may keep open at once; a command that would open one more is refused and its cursor killed. Default: 1000.',
        },
      },
      'x-expected':
        'a mapping with connections, operations_per_second, max_document_bytes, max_documents_per_collection, upstream_connections, open_cursors',
      description: 'Resource limits of the app; an absent key means no limit (upstream_connections and open_cursors always have one).',
    },
    observability: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: {
        slow_operation_ms: {
          type: 'integer',
          minimum: 0,
          description: "Log the app's operations slower than this at warn (0: none). Default: runtime.yaml slow_operation_ms.",
        },
      },
      'x-expected': 'a mapping with slow_operation_ms',
      description: 'Logging of the app\'s operations.',
    },
  },
  'x-unknown-hints': Object.fromEntries(ANCESTOR_KEYS.map((k) => [k, ANCESTOR_HINT])),
  'x-expected': "a mapping with at least 'slug: <slug>'",
};

/** The problems of a manifest value (the schema-level ones; manifests.ts adds the semantic ones). */
export function manifestSchemaProblems(value: unknown, locator: Locator, options: ProblemOptions = {}): SchemaProblem[] {
  return schemaProblems(MANIFEST_SCHEMA, value, locator, options);
}
