import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { closest, describeValue, type KeyPath, type Locator } from './source.js';

/**
 * Validation of configuration values against the JSON Schemas (schema/*.schema.json),
 * with ajv's errors turned into messages a person can act on:
 *
 *   <file>:<line>:<col>: <key path>: expected <what the schema wants>, found <what the file has>
 *   <file>:<line>:<col>: <key path>: unknown key (did you mean 'x'?); allowed: a, b, c
 *   <file>:<line>:<col>: <key path>: missing; <hint>
 *
 * Positions come from the file's Locator (YAML positions; a migrated manifest maps its paths back to the
 * file it came from). The schemas are compiled once, on first use.
 */

/** A JSON Schema (draft 2020-12) as a plain object: the manifest's and runtime.yaml's. */
export type JsonSchema = { [keyword: string]: unknown };

/** Annotation keywords of our schemas (see src/apps/manifest-schema.ts); ajv keeps them as annotations. */
export const ANNOTATIONS = ['x-expected', 'x-message', 'x-unknown-hints', 'x-required-hints', 'x-doc', 'x-type', 'x-env', 'x-flag', 'x-kind'];

export interface SchemaProblem {
  /** `file:line:col` */
  readonly at: string;
  readonly path: KeyPath;
  /** The whole line: `file:line:col: key.path: expected ..., found ...`. */
  readonly message: string;
}

export interface ProblemOptions {
  /** A hint for a missing required key (e.g. the slug suggested from the file name). */
  requiredHint?: (path: KeyPath, key: string) => string | undefined;
}

let ajv: Ajv2020 | undefined;
const compiled = new Map<JsonSchema, ValidateFunction>();

function validatorFor(schema: JsonSchema): ValidateFunction {
  let validate = compiled.get(schema);
  if (!validate) {
    if (!ajv) {
      ajv = new Ajv2020({ allErrors: true, verbose: true, strict: true, allowUnionTypes: true });
      ajv.addVocabulary(ANNOTATIONS);
    }
    validate = ajv.compile(schema);
    compiled.set(schema, validate);
  }
  return validate;
}

/** Validates `value` against `schema`; every problem, in file order. */
export function schemaProblems(schema: JsonSchema, value: unknown, locator: Locator, options: ProblemOptions = {}): SchemaProblem[] {
  const validate = validatorFor(schema);
  if (validate(value)) return [];
  const ctx: Context = { root: value, locator, options, schema };
  const problems = explain([...(validate.errors ?? [])], ctx);
  const seen = new Set<string>();
  return inFileOrder(problems.filter((p) => !seen.has(p.message) && seen.add(p.message)), (p) => p.at);
}

/** `items` sorted by the line and column of their `file:line:col` (stable; no position sorts first). */
export function inFileOrder<T>(items: readonly T[], at: (item: T) => string): T[] {
  return items
    .map((item, i) => ({ item, i, pos: position(at(item)) }))
    .sort((a, b) => a.pos[0] - b.pos[0] || a.pos[1] - b.pos[1] || a.i - b.i)
    .map(({ item }) => item);
}

interface Context {
  root: unknown;
  locator: Locator;
  options: ProblemOptions;
  schema: JsonSchema;
}

/** Turns ajv's errors into problems: alternatives (anyOf/oneOf) first, outermost first. */
function explain(errors: ErrorObject[], ctx: Context): SchemaProblem[] {
  const problems: SchemaProblem[] = [];
  for (;;) {
    const alternatives = errors
      .filter((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf')
      .sort((a, b) => a.schemaPath.length - b.schemaPath.length)[0];
    if (!alternatives) break;
    const prefix = `${alternatives.schemaPath}/`;
    // The same schema location is checked for every value it applies to: keep to this value's errors.
    const isInside = (e: ErrorObject) =>
      e.schemaPath.startsWith(prefix) && (e.instancePath === alternatives.instancePath || e.instancePath.startsWith(`${alternatives.instancePath}/`));
    const inside = errors.filter(isInside);
    errors = errors.filter((e) => e !== alternatives && !isInside(e));
    const node = schemaOf(alternatives);
    const branches = (node[alternatives.keyword] as JsonSchema[] | undefined) ?? [];
    if (typeof node['x-expected'] === 'string') {
      problems.push(mismatch(alternatives, node['x-expected'], ctx));
      continue;
    }
    // A branch whose type does not fit the value is not what the person meant; if one branch is left,
    // its own errors are the precise ones.
    const byBranch = new Map<number, ErrorObject[]>();
    for (const e of inside) {
      const index = Number(e.schemaPath.slice(prefix.length).split('/')[0]);
      byBranch.set(index, [...(byBranch.get(index) ?? []), e]);
    }
    const fitting = [...byBranch.entries()].filter(
      ([, errs]) => !errs.some((e) => e.keyword === 'type' && e.instancePath === alternatives.instancePath),
    );
    if (fitting.length === 1) {
      errors.push(...fitting[0]![1]);
      continue;
    }
    problems.push(mismatch(alternatives, branches.map(describeSchema).join(' or '), ctx));
  }
  for (const e of errors) {
    const p = problem(e, ctx);
    if (p) problems.push(p);
  }
  return problems;
}

function problem(e: ErrorObject, ctx: Context): SchemaProblem | undefined {
  const { locator } = ctx;
  const path = pointerToPath(e.instancePath, ctx.root);
  const node = schemaOf(e);
  if (e.keyword === 'propertyNames') return undefined; // reported by the error about the name itself
  if (e.propertyName !== undefined) {
    const full = [...path, e.propertyName];
    const at = locator.at(full, 'key');
    const what =
      typeof node['x-message'] === 'string'
        ? node['x-message']
        : `expected ${typeof node['x-expected'] === 'string' ? node['x-expected'] : keywordExpectation(e, node)}, found ${describeValue(e.propertyName)}`;
    return { at, path: full, message: `${at}: ${locator.label(full)}: ${what}` };
  }
  if (e.keyword === 'additionalProperties') {
    const key = String((e.params as { additionalProperty: string }).additionalProperty);
    const full = [...path, key];
    const at = locator.at(full, 'key');
    const allowed = Object.keys((node.properties as JsonSchema | undefined) ?? {});
    const hints = (node['x-unknown-hints'] as Record<string, string> | undefined) ?? {};
    const hint = Object.hasOwn(hints, key) ? hints[key]!.replaceAll('{key}', key) : undefined;
    const typo = closest(key, allowed);
    const elsewhere = typo ? undefined : findElsewhere(ctx.schema, key, path);
    const didYouMean = typo ? ` (did you mean '${typo}'?)` : elsewhere ? ` (did you mean '${elsewhere}'?)` : '';
    return {
      at,
      path: full,
      message: `${at}: ${locator.label(full)}: unknown key${didYouMean}; ${hint ? `${hint}; ` : ''}allowed: ${allowed.join(', ')}`,
    };
  }
  if (e.keyword === 'required') {
    const key = String((e.params as { missingProperty: string }).missingProperty);
    const full = [...path, key];
    const at = locator.at(path);
    const hints = (node['x-required-hints'] as Record<string, string> | undefined) ?? {};
    const hint = ctx.options.requiredHint?.(path, key) ?? (Object.hasOwn(hints, key) ? hints[key] : undefined);
    return { at, path: full, message: `${at}: ${locator.label(full)}: missing${hint ? `; ${hint}` : ''}` };
  }
  if (typeof node['x-message'] === 'string') {
    const at = locator.at(path);
    return { at, path, message: `${at}: ${prefix(locator, path)}${node['x-message']}` };
  }
  if (e.keyword === 'uniqueItems') {
    const { i, j } = e.params as { i: number; j: number };
    const [first, second] = [Math.min(i, j), Math.max(i, j)];
    const items = e.data as unknown[];
    const at = locator.at([...path, second]);
    return {
      at,
      path: [...path, second],
      message: `${at}: ${locator.label(path)}: expected a list without duplicates, found ${describeValue(items[second])} twice (items ${first} and ${second})`,
    };
  }
  const expected = typeof node['x-expected'] === 'string' ? node['x-expected'] : keywordExpectation(e, node);
  return mismatch(e, expected, ctx);
}

function mismatch(e: ErrorObject, expected: string, ctx: Context): SchemaProblem {
  const path = pointerToPath(e.instancePath, ctx.root);
  const at = ctx.locator.at(path);
  return { at, path, message: `${at}: ${prefix(ctx.locator, path)}expected ${expected}, found ${describeValue(e.data)}` };
}

function prefix(locator: Locator, path: KeyPath): string {
  return path.length === 0 ? '' : `${locator.label(path)}: `;
}

/** The schema object holding the failing keyword (ajv's `parentSchema` in verbose mode). */
function schemaOf(e: ErrorObject): JsonSchema {
  const s = e.parentSchema;
  return typeof s === 'object' && s !== null ? (s as JsonSchema) : {};
}

/** What a keyword wants, in words, when the schema gives no `x-expected`. */
function keywordExpectation(e: ErrorObject, node: JsonSchema): string {
  const p = e.params as Record<string, unknown>;
  const noun = typeNoun(node.type);
  const bounded = (): string => {
    if (typeof node.minimum === 'number' && typeof node.maximum === 'number') return `${noun} from ${node.minimum} to ${node.maximum}`;
    if (typeof node.minimum === 'number') return `${noun} >= ${node.minimum}`;
    if (typeof node.maximum === 'number') return `${noun} <= ${node.maximum}`;
    return noun;
  };
  switch (e.keyword) {
    case 'type': {
      const types = (Array.isArray(node.type) ? node.type : [node.type]).filter((t) => t !== 'null');
      return types.length === 1 && (types[0] === 'integer' || types[0] === 'number') ? bounded() : describeTypes(node.type);
    }
    case 'enum':
      return `one of ${(p.allowedValues as unknown[]).map(String).join(', ')}`;
    case 'const':
      return JSON.stringify(p.allowedValue);
    case 'minimum':
    case 'maximum':
      return bounded();
    case 'exclusiveMinimum':
      return `${noun} > ${String(p.limit)}`;
    case 'exclusiveMaximum':
      return `${noun} < ${String(p.limit)}`;
    case 'pattern':
      return `a string matching ${String(p.pattern)}`;
    case 'minLength':
      return p.limit === 1 ? 'a non-empty string' : `a string of at least ${String(p.limit)} characters`;
    case 'maxLength':
      return `a string of at most ${String(p.limit)} characters`;
    case 'minItems':
      return p.limit === 1 ? 'a non-empty list' : `a list of at least ${String(p.limit)} items`;
    case 'maxItems':
    case 'items':
      return `a list of at most ${String(p.limit)} items`;
    case 'minProperties':
      return p.limit === 1 ? 'a non-empty mapping' : `a mapping with at least ${String(p.limit)} keys`;
    case 'uniqueItems':
      return 'a list without duplicates';
    default:
      return describeSchema(node);
  }
}

/** A schema in words, for alternatives: its `x-expected`, else its type. */
export function describeSchema(schema: JsonSchema): string {
  if (typeof schema['x-expected'] === 'string') return schema['x-expected'];
  if ('const' in schema) return JSON.stringify(schema.const);
  if (Array.isArray(schema.enum)) return `one of ${schema.enum.map(String).join(', ')}`;
  return describeTypes(schema.type);
}

function describeTypes(type: unknown): string {
  const types = (Array.isArray(type) ? type : [type]).filter((t) => t !== 'null');
  const words: Record<string, string> = {
    boolean: 'true or false',
    integer: 'an integer',
    number: 'a number',
    string: 'a string',
    object: 'a mapping',
    array: 'a list',
  };
  return types.map((t) => words[String(t)] ?? String(t)).join(' or ') || 'a value';
}

function typeNoun(type: unknown): string {
  const types = Array.isArray(type) ? type : [type];
  return types.includes('integer') ? 'an integer' : 'a number';
}

/** `/managed_indexes/tasks/0/keys` as a key path: list indexes as numbers (looked up in the value). */
function pointerToPath(pointer: string, root: unknown): (string | number)[] {
  if (pointer === '') return [];
  const path: (string | number)[] = [];
  let cur = root;
  for (const raw of pointer.slice(1).split('/')) {
    const segment = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (Array.isArray(cur)) {
      const i = Number(segment);
      path.push(i);
      cur = cur[i];
    } else {
      path.push(segment);
      cur = typeof cur === 'object' && cur !== null ? (cur as Record<string, unknown>)[segment] : undefined;
    }
  }
  return path;
}

/** Where else in the schema a key of this name is allowed (`limits.connections`), for "did you mean". */
function findElsewhere(schema: JsonSchema, key: string, here: KeyPath): string | undefined {
  const found: string[] = [];
  const walk = (node: unknown, at: string[]) => {
    if (typeof node !== 'object' || node === null || at.length > 4) return;
    const s = node as JsonSchema;
    const props = s.properties as Record<string, unknown> | undefined;
    for (const [name, sub] of Object.entries(props ?? {})) {
      if (name === key) found.push([...at, name].join('.'));
      walk(sub, [...at, name]);
    }
  };
  walk(schema, []);
  const hereName = here.filter((s) => typeof s === 'string').join('.');
  return found.find((f) => f !== (hereName ? `${hereName}.${key}` : key));
}

function position(at: string): [number, number] {
  const m = /^[^\n]*?:(\d+):(\d+)(?::|$)/.exec(at);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}
