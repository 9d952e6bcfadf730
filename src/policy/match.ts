import { BSONRegExp } from 'bson';
import { CommandError, commandError, locationError } from './errors.js';
import { compileRegex, type RegexMatch, type SafeRegex } from './regex.js';
import { compareValues, isNumeric, numberOf, rank, stringOf, stringSteps, TYPE_CODES, typeName, valuesEqual, type Meter } from './bson-order.js';
import { isDoc, type Doc } from './scope.js';

/**
 * A bounded evaluator of query filters, for the few places where the proxy itself decides which
 * entries an app sees (listCollections: docs/security.md, "App input evaluated by the proxy"). It is an
 * allow-list: the query operators and expression operators below, nothing else — any other operator is
 * refused with the server's error for an unknown one (BadValue 2 for query operators,
 * InvalidPipelineOperator 168 for expressions), so a filter never means something the proxy did not
 * implement. Every operator's cost is linear in its input (no $map, $reduce, $range, $function...),
 * regular expressions run on RE2 (regex.ts), and the whole evaluation is metered: every node visited
 * for every entry, and every 16 characters of string read, is a step charged to a budget that the
 * caller sets and that throws when it runs out.
 */

export interface MatchLimits {
  /** Nesting of query and expression nodes (the server's query tree limit is 100). */
  readonly maxDepth: number;
  /** Nodes of the filter, array members and regex pattern length included. */
  readonly maxNodes: number;
}

/** A compiled filter: whether one document matches, paying the meter for the work. */
export type Predicate = (doc: Doc, meter: Meter) => boolean;

/** A step budget shared by every evaluation of one command (its getMore batches included). */
export class StepBudget implements Meter {
  used = 0;
  constructor(
    readonly limit: number,
    private readonly exceeded: () => CommandError,
  ) {}

  charge(steps: number): void {
    this.used += steps;
    if (this.used > this.limit) throw this.exceeded();
  }
}

/** Compiles a query filter: parse errors (unknown operators, bad arguments, bad regexes) are thrown now. */
export function compileQuery(filter: Doc, limits: MatchLimits): Predicate {
  return queryDocument({ nodes: 0, limits, regexes: new Map() }, filter, 0, true);
}

interface Compiler {
  nodes: number;
  readonly limits: MatchLimits;
  /** Patterns computed at evaluation time ($regexMatch on a field), compiled once per pattern. */
  readonly regexes: Map<string, SafeRegex>;
}

function enter(c: Compiler, depth: number, nodes = 1): void {
  c.nodes += nodes;
  if (c.nodes > c.limits.maxNodes) {
    throw commandError('BadValue', `the filter is too large for mdb-runtime to evaluate: more than ${c.limits.maxNodes} nodes`);
  }
  if (depth > c.limits.maxDepth) throw commandError('BadValue', `exceeded maximum query tree depth of ${c.limits.maxDepth}`);
}

const all =
  (preds: Predicate[]): Predicate =>
  (doc, m) => {
    for (const p of preds) if (!p(doc, m)) return false;
    return true;
  };

/** A regular expression value: BSON's (commands decoded from the wire), or JavaScript's (in-process callers). */
interface RegexValue {
  readonly pattern: string;
  readonly options: string;
}

function regexOf(v: unknown): RegexValue | undefined {
  if (v instanceof BSONRegExp) return { pattern: v.pattern, options: v.options };
  if (v instanceof RegExp) return { pattern: v.source, options: v.flags.replace(/[^ims]/g, '') };
  return undefined;
}

const own = (doc: Doc, key: string): unknown => (Object.prototype.hasOwnProperty.call(doc, key) ? doc[key] : undefined);

const isOperatorDocument = (v: unknown): v is Doc => {
  if (!isDoc(v) || v instanceof RegExp) return false;
  for (const key in v) return key.startsWith('$');
  return false;
};

/** Query operators of MongoDB this evaluator does not implement: refused by name, rather than as unknown. */
const UNSUPPORTED_QUERY = new Set([
  '$mod', '$bitsAllSet', '$bitsAllClear', '$bitsAnySet', '$bitsAnyClear', '$geoWithin', '$geoIntersects', '$near',
  '$nearSphere', '$within', '$text', '$jsonSchema', '$where', '$alwaysTrue', '$alwaysFalse', '$sampleRate', '$box',
  '$center', '$centerSphere', '$geometry', '$maxDistance', '$minDistance', '$polygon', '$uniqueDocs',
]);

function unsupported(op: string): CommandError {
  return commandError('BadValue', `${op} is not supported by mdb-runtime in this filter (the proxy evaluates it itself and implements a fixed set of operators)`);
}

// ---- Query documents ----

function queryDocument(c: Compiler, filter: Doc, depth: number, topLevel: boolean): Predicate {
  enter(c, depth);
  const preds: Predicate[] = [];
  for (const key of Object.keys(filter)) {
    const value = filter[key];
    if (key.startsWith('$')) {
      const pred = topOperator(c, key, value, depth, topLevel);
      if (pred) preds.push(pred);
    } else {
      preds.push(fieldCondition(c, key, value, depth + 1));
    }
  }
  return all(preds);
}

function topOperator(c: Compiler, op: string, value: unknown, depth: number, topLevel: boolean): Predicate | undefined {
  switch (op) {
    case '$and':
    case '$or':
    case '$nor': {
      if (!Array.isArray(value) || value.length === 0) throw commandError('BadValue', `${op} must be a nonempty array`);
      const subs = value.map((v) => {
        if (!isDoc(v)) throw commandError('BadValue', '$or/$and/$nor entries need to be full objects');
        return queryDocument(c, v, depth + 1, topLevel);
      });
      if (op === '$and') return all(subs);
      if (op === '$or') return (doc, m) => subs.some((p) => p(doc, m));
      return (doc, m) => !subs.some((p) => p(doc, m));
    }
    case '$expr': {
      if (!topLevel) throw commandError('BadValue', '$expr can only be applied to the top-level document');
      const e = expression(c, value, depth + 1);
      return (doc, m) => truthy(e(doc, m));
    }
    case '$comment':
      return undefined;
    default:
      if (UNSUPPORTED_QUERY.has(op)) throw unsupported(op);
      throw commandError(
        'BadValue',
        `unknown top level operator: ${op}. If you have a field name that starts with a '$' symbol, consider using $getField or $setField.`,
      );
  }
}

/**
 * The values a path reaches in a document, as the server's matcher walks it: through embedded
 * documents, across the elements of arrays on the way (and by position for numeric components), and,
 * with `expand`, also into the elements of an array at the end of the path. A missing field is
 * `undefined` (at least one value is always returned).
 */
class Candidates {
  private expanded: unknown[] | undefined;
  private plain: unknown[] | undefined;

  constructor(
    private readonly root: unknown,
    private readonly parts: readonly string[],
  ) {}

  get(expand: boolean, m: Meter): unknown[] {
    const cached = expand ? this.expanded : this.plain;
    if (cached) return cached;
    const out: unknown[] = [];
    walk(this.root, this.parts, 0, expand, out, m);
    if (out.length === 0) out.push(undefined);
    if (expand) this.expanded = out;
    else this.plain = out;
    return out;
  }
}

function isIndex(key: string): boolean {
  if (key.length === 0 || key.length > 9) return false;
  for (let i = 0; i < key.length; i++) {
    const ch = key.charCodeAt(i);
    if (ch < 48 || ch > 57) return false;
  }
  return true;
}

function walk(v: unknown, parts: readonly string[], i: number, expand: boolean, out: unknown[], m: Meter): void {
  m.charge(1);
  if (i === parts.length) {
    out.push(v);
    if (expand && Array.isArray(v)) {
      m.charge(v.length);
      for (const e of v) out.push(e);
    }
    return;
  }
  const key = parts[i]!;
  if (isDoc(v)) return walk(own(v, key), parts, i + 1, expand, out, m);
  if (Array.isArray(v)) {
    if (isIndex(key) && Number(key) < v.length) walk(v[Number(key)], parts, i + 1, expand, out, m);
    for (const e of v) {
      m.charge(1);
      if (isDoc(e)) walk(own(e, key), parts, i + 1, expand, out, m);
    }
    return;
  }
  out.push(undefined);
}

/** One operator of a field condition, over the values its path reaches. */
type FieldTest = (values: Candidates, m: Meter) => boolean;

function fieldCondition(c: Compiler, path: string, cond: unknown, depth: number): Predicate {
  enter(c, depth);
  const parts = path.split('.');
  const tests = conditionTests(c, cond, depth);
  return (doc, m) => {
    const values = new Candidates(doc, parts);
    for (const t of tests) if (!t(values, m)) return false;
    return true;
  };
}

/** The tests of one condition (`{a: <cond>}`, an `$elemMatch` value condition, a `$not` operand). */
function conditionTests(c: Compiler, cond: unknown, depth: number): FieldTest[] {
  const literal = regexOf(cond);
  if (literal) return [regexTest(c, literal.pattern, literal.options)];
  if (!isOperatorDocument(cond)) return [equalityTest(c, cond)];
  const tests: FieldTest[] = [];
  for (const op of Object.keys(cond)) {
    enter(c, depth + 1);
    const v = cond[op];
    switch (op) {
      case '$eq':
        tests.push(equalityTest(c, v));
        break;
      case '$ne': {
        if (regexOf(v)) throw commandError('BadValue', "Can't have regex as arg to $ne");
        const eq = equalityTest(c, v);
        tests.push((values, m) => !eq(values, m));
        break;
      }
      case '$gt':
      case '$gte':
      case '$lt':
      case '$lte':
        tests.push(comparisonTest(op, v));
        break;
      case '$in':
        tests.push(inTest(c, v, op));
        break;
      case '$nin': {
        const isIn = inTest(c, v, op);
        tests.push((values, m) => !isIn(values, m));
        break;
      }
      case '$exists': {
        const want = truthy(v);
        tests.push((values, m) => values.get(false, m).some((x) => x !== undefined) === want);
        break;
      }
      case '$type':
        tests.push(typeTest(v));
        break;
      case '$not': {
        if (!regexOf(v) && isDoc(v) && Object.keys(v).length === 0) throw commandError('BadValue', '$not cannot be empty');
        if (!regexOf(v) && !isOperatorDocument(v)) throw commandError('BadValue', '$not needs a regex or a document');
        const inner = conditionTests(c, v, depth + 1);
        tests.push((values, m) => !inner.every((t) => t(values, m)));
        break;
      }
      case '$regex': {
        const options = cond.$options;
        if (options !== undefined && typeof options !== 'string') throw commandError('BadValue', '$options has to be a string');
        const re = regexOf(v);
        if (re) {
          if (options !== undefined && re.options !== '') throw commandError('BadValue', 'options set in both $regex and $options');
          tests.push(regexTest(c, re.pattern, options ?? re.options));
        } else if (typeof v === 'string') {
          tests.push(regexTest(c, v, options ?? ''));
        } else {
          throw commandError('BadValue', '$regex has to be a string');
        }
        break;
      }
      case '$options':
        if (!('$regex' in cond)) throw commandError('BadValue', '$options needs a $regex');
        break;
      case '$elemMatch':
        tests.push(elemMatchTest(c, v, depth + 1));
        break;
      case '$size': {
        const n = numberOf(v);
        if (n === undefined) throw commandError('BadValue', '$size needs a number');
        if (!Number.isInteger(n)) throw commandError('BadValue', '$size must be a whole number');
        if (n < 0) throw commandError('BadValue', '$size may not be negative');
        tests.push((values, m) => values.get(false, m).some((x) => Array.isArray(x) && x.length === n));
        break;
      }
      case '$all':
        tests.push(allTest(c, v, depth + 1));
        break;
      case '$comment':
        break;
      default:
        if (UNSUPPORTED_QUERY.has(op)) throw unsupported(op);
        throw commandError('BadValue', `unknown operator: ${op}`);
    }
  }
  return tests;
}

const isNullish = (x: unknown): boolean => x === undefined || x === null;

function equalityTest(c: Compiler, v: unknown): FieldTest {
  c.nodes += nodeCount(v);
  if (v === null) return (values, m) => values.get(true, m).some(isNullish);
  return (values, m) => values.get(true, m).some((x) => valuesEqual(x, v, m));
}

/** The nodes a literal value holds (its size counts against the filter's limit). */
function nodeCount(v: unknown): number {
  if (typeof v === 'string') return stringSteps(v.length) - 1;
  if (Array.isArray(v)) return v.reduce<number>((n, e) => n + 1 + nodeCount(e), 0);
  if (isDoc(v)) {
    let n = 0;
    for (const k in v) n += 1 + nodeCount(v[k]);
    return n;
  }
  return 0;
}

function comparisonTest(op: '$gt' | '$gte' | '$lt' | '$lte', v: unknown): FieldTest {
  const accept = (cmp: number): boolean => (op === '$gt' ? cmp > 0 : op === '$gte' ? cmp >= 0 : op === '$lt' ? cmp < 0 : cmp <= 0);
  if (v === null) {
    // Null compares equal to null and missing only; nothing is greater or less than it.
    if (op === '$gt' || op === '$lt') return () => false;
    return (values, m) => values.get(true, m).some(isNullish);
  }
  const t = typeName(v);
  // MinKey and MaxKey bound every type; any other value compares within its own type only.
  const crossType = t === 'minKey' || t === 'maxKey';
  const r = rank(v);
  return (values, m) =>
    values.get(true, m).some((x) => x !== undefined && (crossType || rank(x) === r) && accept(compareValues(x, v, m)));
}

function inTest(c: Compiler, list: unknown, op: string): FieldTest {
  if (!Array.isArray(list)) throw commandError('BadValue', `${op} needs an array`);
  const strings = new Set<string>();
  const regexes: SafeRegex[] = [];
  const others: unknown[] = [];
  let matchesNull = false;
  for (const e of list) {
    c.nodes += 1 + nodeCount(e);
    const re = regexOf(e);
    if (re) regexes.push(compileCounted(c, re.pattern, re.options));
    else if (isOperatorDocument(e)) throw commandError('BadValue', `cannot nest $ under ${op}`);
    else if (typeof e === 'string') strings.add(e);
    else if (e === null) matchesNull = true;
    else others.push(e);
  }
  enter(c, 0, 0);
  return (values, m) =>
    values.get(true, m).some((x) => {
      if (isNullish(x)) return matchesNull;
      const s = typeof x === 'string' ? x : undefined;
      if (s !== undefined) {
        m.charge(stringSteps(s.length));
        if (strings.has(s)) return true;
      }
      const text = stringOf(x);
      if (text !== undefined) {
        for (const re of regexes) {
          m.charge(stringSteps(text.length));
          if (re.test(text)) return true;
        }
      }
      for (const o of others) if (valuesEqual(x, o, m)) return true;
      return false;
    });
}

const TYPE_ALIASES = new Set([...Object.keys(TYPE_CODES), 'number']);
const NAMES_BY_CODE = new Map(Object.entries(TYPE_CODES).map(([name, code]) => [code, name]));

function typeTest(spec: unknown): FieldTest {
  const specs = Array.isArray(spec) ? spec : [spec];
  if (specs.length === 0) throw commandError('BadValue', '$type must match at least one type');
  const names = new Set<string>();
  for (const s of specs) {
    if (typeof s === 'string') {
      if (!TYPE_ALIASES.has(s)) throw commandError('BadValue', `Unknown type name alias: ${s}`);
      names.add(s);
    } else {
      const n = numberOf(s);
      if (n === undefined) throw commandError('TypeMismatch', 'type must be represented as a number or a string');
      const name = NAMES_BY_CODE.get(n);
      if (name === undefined) throw commandError('BadValue', `Invalid numerical type code: ${n}`);
      names.add(name);
    }
  }
  return (values, m) =>
    values.get(true, m).some((x) => x !== undefined && (names.has(typeName(x)) || (names.has('number') && isNumeric(x))));
}

function regexTest(c: Compiler, pattern: string, options: string): FieldTest {
  const re = compileCounted(c, pattern, options);
  return (values, m) =>
    values.get(true, m).some((x) => {
      const s = stringOf(x);
      if (s !== undefined) {
        m.charge(stringSteps(s.length));
        return re.test(s);
      }
      // A stored regular expression matches one written the same way.
      const stored = regexOf(x);
      return stored !== undefined && stored.pattern === pattern && stored.options === options;
    });
}

function compileCounted(c: Compiler, pattern: string, options: string): SafeRegex {
  enter(c, 0, stringSteps(pattern.length));
  return compileRegex(pattern, options);
}

/** `$elemMatch`: an element of the array matches the sub-filter (documents) or the conditions (values). */
function elemMatchTest(c: Compiler, sub: unknown, depth: number): FieldTest {
  if (!isDoc(sub)) throw commandError('BadValue', '$elemMatch needs an Object');
  const keys = Object.keys(sub);
  const valueForm = keys.length > 0 && keys.every((k) => k.startsWith('$') && k !== '$and' && k !== '$or' && k !== '$nor' && k !== '$expr');
  let element: (e: unknown, m: Meter) => boolean;
  if (valueForm) {
    // Conditions on the element itself: no further array traversal.
    const tests = conditionTests(c, sub, depth);
    element = (e, m) => {
      const values = new Candidates(e, []);
      return tests.every((t) => t(values, m));
    };
  } else {
    const pred = queryDocument(c, sub, depth, false);
    element = (e, m) => isDoc(e) && pred(e, m);
  }
  return (values, m) =>
    values.get(false, m).some((x) => {
      if (!Array.isArray(x)) return false;
      for (const e of x) {
        m.charge(1);
        if (element(e, m)) return true;
      }
      return false;
    });
}

function allTest(c: Compiler, list: unknown, depth: number): FieldTest {
  if (!Array.isArray(list)) throw commandError('BadValue', '$all needs an array');
  if (list.length === 0) return () => false;
  const tests = list.map((e): FieldTest => {
    enter(c, depth);
    if (isDoc(e) && Object.keys(e)[0] === '$elemMatch') return elemMatchTest(c, e.$elemMatch, depth + 1);
    const re = regexOf(e);
    if (re) return regexTest(c, re.pattern, re.options);
    if (isOperatorDocument(e)) throw commandError('BadValue', 'no $ expressions in $all');
    return equalityTest(c, e);
  });
  return (values, m) => tests.every((t) => t(values, m));
}

// ---- Aggregation expressions ($expr) ----

type Expr = (root: Doc, m: Meter) => unknown;

/** Truthiness as the server sees it: false, null, missing and zero are false. */
export function truthy(v: unknown): boolean {
  if (v === undefined || v === null || v === false) return false;
  return isNumeric(v) ? numberOf(v) !== 0 : true;
}

/** Expression operators the server has that this evaluator leaves out (cost not linear in the input, or not needed). */
const UNSUPPORTED_EXPRESSIONS = new Set([
  '$map', '$reduce', '$range', '$filter', '$function', '$accumulator', '$let', '$zip', '$concatArrays', '$setUnion',
  '$setIntersection', '$setDifference', '$setEquals', '$setIsSubset', '$anyElementTrue', '$allElementsTrue', '$split',
  '$indexOfCP', '$indexOfBytes', '$indexOfArray', '$replaceOne', '$replaceAll', '$substr', '$substrCP', '$substrBytes',
  '$trim', '$ltrim', '$rtrim', '$sortArray', '$reverseArray', '$objectToArray', '$arrayToObject', '$mergeObjects',
  '$getField', '$setField', '$unsetField', '$first', '$last', '$firstN', '$lastN', '$maxN', '$minN', '$max', '$min',
  '$sum', '$avg', '$stdDevPop', '$stdDevSamp', '$slice', '$toString', '$toInt', '$toLong', '$toDouble', '$toDecimal',
  '$toBool', '$toDate', '$toObjectId', '$convert', '$dateToString', '$dateFromString', '$rand', '$meta', '$pow', '$exp',
  '$ln', '$log', '$log10', '$sqrt', '$ceil', '$floor', '$round', '$trunc', '$binarySize', '$bsonSize', '$strcasecmp',
]);

function expression(c: Compiler, v: unknown, depth: number): Expr {
  enter(c, depth);
  if (typeof v === 'string' && v.startsWith('$')) return counted(fieldPath(v));
  if (regexOf(v)) return () => v;
  if (Array.isArray(v)) {
    const items = v.map((e) => expression(c, e, depth + 1));
    return counted((root, m) => items.map((f) => f(root, m) ?? null));
  }
  if (isDoc(v)) {
    const keys = Object.keys(v);
    const first = keys[0];
    if (first !== undefined && first.startsWith('$')) {
      if (keys.length !== 1) {
        throw locationError(
          15983,
          `an expression specification must contain exactly one field, the name of the expression. Found ${keys.length} fields`,
        );
      }
      return counted(operator(c, first, v[first], depth + 1));
    }
    const fields = keys.map((k): [string, Expr] => {
      if (k.includes('.')) throw locationError(16412, "FieldPath field names may not contain '.'.");
      if (k.startsWith('$')) throw locationError(16410, "FieldPath field names may not start with '$'. Consider using $getField or $setField.");
      return [k, expression(c, v[k], depth + 1)];
    });
    return counted((root, m) => {
      const out: Doc = {};
      for (const [k, f] of fields) {
        const x = f(root, m);
        if (x !== undefined) Object.defineProperty(out, k, { value: x, enumerable: true, writable: true, configurable: true });
      }
      return out;
    });
  }
  c.nodes += nodeCount(v);
  return () => v;
}

const counted =
  (f: Expr): Expr =>
  (root, m) => {
    m.charge(1);
    return f(root, m);
  };

function fieldPath(path: string): Expr {
  if (path === '$') throw locationError(16872, "'$' by itself is not a valid FieldPath");
  let parts: string[];
  if (path.startsWith('$$')) {
    // No $let and no $$NOW: only the document itself (ROOT, CURRENT) and REMOVE.
    const [name, ...rest] = path.slice(2).split('.');
    if (name === 'REMOVE') return () => undefined;
    if (name !== 'ROOT' && name !== 'CURRENT') throw locationError(17276, `Use of undefined variable: ${name}`);
    parts = rest;
  } else {
    parts = path.slice(1).split('.');
  }
  for (const p of parts) {
    if (p.length === 0) throw locationError(15998, 'FieldPath field names may not be empty strings.');
    if (p.startsWith('$')) throw locationError(16410, "FieldPath field names may not start with '$'. Consider using $getField or $setField.");
  }
  return (root, m) => pathValue(root, parts, 0, m);
}

/** A field path's value in aggregation: arrays on the way map to arrays of what their elements hold. */
function pathValue(v: unknown, parts: readonly string[], i: number, m: Meter): unknown {
  if (i === parts.length) return v;
  if (isDoc(v)) return pathValue(own(v, parts[i]!), parts, i + 1, m);
  if (Array.isArray(v)) {
    const out: unknown[] = [];
    for (const e of v) {
      m.charge(1);
      if (isDoc(e)) {
        const x = pathValue(own(e, parts[i]!), parts, i + 1, m);
        if (x !== undefined) out.push(x);
      } else if (Array.isArray(e)) {
        out.push(pathValue(e, parts, i, m));
      }
    }
    return out;
  }
  return undefined;
}

const argsOf = (v: unknown): unknown[] => (Array.isArray(v) ? v : [v]);

function arity(name: string, args: unknown[], n: number): void {
  if (args.length !== n) throw locationError(16020, `Expression ${name} takes exactly ${n} arguments. ${args.length} were passed in.`);
}

function operator(c: Compiler, name: string, arg: unknown, depth: number): Expr {
  const sub = (v: unknown): Expr => expression(c, v, depth + 1);
  const fixed = (n: number): Expr[] => {
    const args = argsOf(arg);
    arity(name, args, n);
    return args.map(sub);
  };
  switch (name) {
    case '$literal':
      c.nodes += nodeCount(arg);
      return () => arg;
    case '$eq':
    case '$ne':
    case '$gt':
    case '$gte':
    case '$lt':
    case '$lte':
    case '$cmp': {
      const [a, b] = fixed(2) as [Expr, Expr];
      return (root, m) => {
        const cmp = compareValues(a(root, m), b(root, m), m);
        switch (name) {
          case '$eq':
            return cmp === 0;
          case '$ne':
            return cmp !== 0;
          case '$gt':
            return cmp > 0;
          case '$gte':
            return cmp >= 0;
          case '$lt':
            return cmp < 0;
          case '$lte':
            return cmp <= 0;
          default:
            return cmp;
        }
      };
    }
    case '$and': {
      const args = argsOf(arg).map(sub);
      return (root, m) => args.every((f) => truthy(f(root, m)));
    }
    case '$or': {
      const args = argsOf(arg).map(sub);
      return (root, m) => args.some((f) => truthy(f(root, m)));
    }
    case '$not': {
      const [a] = fixed(1) as [Expr];
      return (root, m) => !truthy(a(root, m));
    }
    case '$cond':
      return conditional(c, arg, depth);
    case '$ifNull': {
      const args = argsOf(arg).map(sub);
      if (args.length < 2) throw locationError(1257300, `$ifNull needs at least two arguments, had: ${args.length}`);
      return (root, m) => {
        for (let i = 0; i < args.length - 1; i++) {
          const x = args[i]!(root, m);
          if (!isNullish(x)) return x;
        }
        return args[args.length - 1]!(root, m);
      };
    }
    case '$switch':
      return switchExpression(c, arg, depth);
    case '$in': {
      const [a, b] = fixed(2) as [Expr, Expr];
      return (root, m) => {
        const x = a(root, m);
        const list = b(root, m);
        if (!Array.isArray(list)) throw locationError(40081, `$in requires an array as a second argument, found: ${typeName(list)}`);
        return list.some((e) => valuesEqual(x, e, m));
      };
    }
    case '$size': {
      const [a] = fixed(1) as [Expr];
      return (root, m) => {
        const x = a(root, m);
        if (!Array.isArray(x)) throw locationError(17124, `The argument to $size must be an array. Type of argument: ${typeName(x)}`);
        return x.length;
      };
    }
    case '$arrayElemAt': {
      const [a, b] = fixed(2) as [Expr, Expr];
      return (root, m) => {
        const x = a(root, m);
        const i = b(root, m);
        if (isNullish(x) || isNullish(i)) return null;
        if (!Array.isArray(x)) throw locationError(28689, `$arrayElemAt's first argument must be an array, but is ${typeName(x)}`);
        const n = isNumeric(i) ? numberOf(i) : undefined;
        if (n === undefined) throw locationError(28690, `$arrayElemAt's second argument must be a numeric value, but is ${typeName(i)}`);
        if (!Number.isInteger(n) || Math.abs(n) > 2 ** 31) {
          throw locationError(28691, `$arrayElemAt's second argument must be representable as a 32-bit integer: ${n}`);
        }
        return n < 0 ? x[x.length + n] : x[n];
      };
    }
    case '$isArray': {
      const [a] = fixed(1) as [Expr];
      return (root, m) => Array.isArray(a(root, m));
    }
    case '$isNumber': {
      const [a] = fixed(1) as [Expr];
      return (root, m) => isNumeric(a(root, m));
    }
    case '$type': {
      const [a] = fixed(1) as [Expr];
      return (root, m) => typeName(a(root, m));
    }
    case '$concat': {
      const args = argsOf(arg).map(sub);
      return (root, m) => {
        let out = '';
        for (const f of args) {
          const x = f(root, m);
          if (isNullish(x)) return null;
          const s = stringOf(x);
          if (s === undefined) throw locationError(16702, `$concat only supports strings, not ${typeName(x)}`);
          m.charge(stringSteps(s.length));
          out += s;
        }
        return out;
      };
    }
    case '$toLower':
    case '$toUpper': {
      const [a] = fixed(1) as [Expr];
      return (root, m) => {
        const x = a(root, m);
        if (isNullish(x)) return '';
        const s = stringOf(x) ?? (isNumeric(x) ? String(numberOf(x)) : undefined);
        if (s === undefined) throw locationError(16007, `can't convert from BSON type ${typeName(x)} to String`);
        m.charge(stringSteps(s.length));
        return name === '$toLower' ? s.toLowerCase() : s.toUpperCase();
      };
    }
    case '$strLenCP':
    case '$strLenBytes': {
      const [a] = fixed(1) as [Expr];
      return (root, m) => {
        const x = a(root, m);
        const s = stringOf(x);
        if (s === undefined) throw locationError(name === '$strLenCP' ? 34471 : 34473, `${name} requires a string argument, found: ${typeName(x)}`);
        m.charge(stringSteps(s.length));
        return name === '$strLenBytes' ? Buffer.byteLength(s) : codePoints(s, s.length);
      };
    }
    case '$regexMatch':
    case '$regexFind':
    case '$regexFindAll':
      return regexExpression(c, name, arg, depth);
    case '$add':
    case '$multiply': {
      const args = argsOf(arg).map(sub);
      return (root, m) => {
        let acc = name === '$add' ? 0 : 1;
        for (const f of args) {
          const x = f(root, m);
          if (isNullish(x)) return null;
          const n = isNumeric(x) ? numberOf(x) : undefined;
          if (n === undefined) {
            throw name === '$add'
              ? locationError(16554, `$add only supports numeric or date types, not ${typeName(x)}`)
              : locationError(16555, `$multiply only supports numeric types, not ${typeName(x)}`);
          }
          acc = name === '$add' ? acc + n : acc * n;
        }
        return acc;
      };
    }
    case '$subtract':
    case '$divide':
    case '$mod': {
      const [a, b] = fixed(2) as [Expr, Expr];
      return (root, m) => {
        const x = a(root, m);
        const y = b(root, m);
        if (isNullish(x) || isNullish(y)) return null;
        const p = isNumeric(x) ? numberOf(x) : undefined;
        const q = isNumeric(y) ? numberOf(y) : undefined;
        if (p === undefined || q === undefined) {
          if (name === '$subtract') throw locationError(16556, `can't $subtract ${typeName(y)} from ${typeName(x)}`);
          throw locationError(name === '$divide' ? 16609 : 16611, `${name} only supports numeric types, not ${typeName(x)} and ${typeName(y)}`);
        }
        if (name === '$subtract') return p - q;
        if (q === 0) throw name === '$divide' ? commandError('BadValue', "can't $divide by zero") : locationError(16610, "can't $mod by zero");
        return name === '$divide' ? p / q : p % q;
      };
    }
    case '$abs': {
      const [a] = fixed(1) as [Expr];
      return (root, m) => {
        const x = a(root, m);
        if (isNullish(x)) return null;
        const n = isNumeric(x) ? numberOf(x) : undefined;
        if (n === undefined) throw locationError(28765, `$abs only supports numeric types, not ${typeName(x)}`);
        return Math.abs(n);
      };
    }
    default:
      if (UNSUPPORTED_EXPRESSIONS.has(name)) {
        throw new CommandError(
          'InvalidPipelineOperator',
          `Expression '${name}' is not supported by mdb-runtime in this filter (the proxy evaluates it itself and implements a fixed set of operators whose cost is linear in their input)`,
          168,
        );
      }
      throw new CommandError('InvalidPipelineOperator', `Unrecognized expression '${name}'`, 168);
  }
}

function conditional(c: Compiler, arg: unknown, depth: number): Expr {
  let parts: unknown[];
  if (isDoc(arg)) {
    for (const k of Object.keys(arg)) if (k !== 'if' && k !== 'then' && k !== 'else') throw locationError(17083, `Unrecognized parameter to $cond: ${k}`);
    if (!('if' in arg)) throw locationError(17080, "Missing 'if' parameter to $cond");
    if (!('then' in arg)) throw locationError(17081, "Missing 'then' parameter to $cond");
    if (!('else' in arg)) throw locationError(17082, "Missing 'else' parameter to $cond");
    parts = [arg.if, arg.then, arg.else];
  } else {
    parts = argsOf(arg);
    arity('$cond', parts, 3);
  }
  const [test, then, otherwise] = parts.map((p) => expression(c, p, depth + 1)) as [Expr, Expr, Expr];
  return (root, m) => (truthy(test(root, m)) ? then(root, m) : otherwise(root, m));
}

function switchExpression(c: Compiler, arg: unknown, depth: number): Expr {
  if (!isDoc(arg)) throw locationError(40060, `$switch requires an object as an argument, found: ${typeName(arg)}`);
  let branches: [Expr, Expr][] = [];
  let fallback: Expr | undefined;
  for (const [k, v] of Object.entries(arg)) {
    if (k === 'branches') {
      if (!Array.isArray(v)) throw locationError(40061, `$switch expected an array for 'branches', found: ${typeName(v)}`);
      branches = v.map((b): [Expr, Expr] => {
        if (!isDoc(b)) throw locationError(40062, `$switch expected each branch to be an object, found: ${typeName(b)}`);
        for (const bk of Object.keys(b)) if (bk !== 'case' && bk !== 'then') throw locationError(40063, `$switch found an unknown argument to a branch: ${bk}`);
        if (!('case' in b)) throw locationError(40064, "$switch requires each branch have a 'case' expression");
        if (!('then' in b)) throw locationError(40065, "$switch requires each branch have a 'then' expression.");
        return [expression(c, b.case, depth + 1), expression(c, b.then, depth + 1)];
      });
    } else if (k === 'default') {
      fallback = expression(c, v, depth + 1);
    } else {
      throw locationError(40067, `$switch found an unknown argument: ${k}`);
    }
  }
  if (branches.length === 0) throw locationError(40068, '$switch requires at least one branch.');
  return (root, m) => {
    for (const [test, then] of branches) if (truthy(test(root, m))) return then(root, m);
    if (!fallback) throw locationError(40066, '$switch could not find a matching branch for an input, and no default was specified.');
    return fallback(root, m);
  };
}

/** Code points in the first `end` UTF-16 units of `s`. */
function codePoints(s: string, end: number, from = 0): number {
  let n = 0;
  for (let i = from; i < end; i++) {
    const ch = s.charCodeAt(i);
    // The second unit of a surrogate pair is not a code point of its own.
    if (!(ch >= 0xdc00 && ch <= 0xdfff && i > 0 && s.charCodeAt(i - 1) >= 0xd800 && s.charCodeAt(i - 1) <= 0xdbff)) n++;
  }
  return n;
}

function regexExpression(c: Compiler, name: string, arg: unknown, depth: number): Expr {
  if (!isDoc(arg)) throw locationError(51103, `${name} expects an object of named arguments but found: ${typeName(arg)}`);
  for (const k of Object.keys(arg)) if (k !== 'input' && k !== 'regex' && k !== 'options') throw locationError(31024, `${name} found an unknown argument: ${k}`);
  if (!('input' in arg)) throw locationError(31022, `${name} requires 'input' parameter`);
  if (!('regex' in arg)) throw locationError(31023, `${name} requires 'regex' parameter`);
  const input = expression(c, arg.input, depth + 1);
  const regexArg = expression(c, arg.regex, depth + 1);
  const optionsArg = arg.options === undefined ? undefined : expression(c, arg.options, depth + 1);
  const resolve = (root: Doc, m: Meter): SafeRegex | null => {
    const re = regexArg(root, m);
    const options = optionsArg?.(root, m);
    if (options !== undefined && options !== null && typeof options !== 'string') {
      throw locationError(51106, `${name} needs 'options' to be of type string`);
    }
    if (isNullish(re)) return null;
    let pattern: string;
    let flags = typeof options === 'string' ? options : '';
    const literal = regexOf(re);
    if (literal) {
      if (literal.options !== '' && typeof options === 'string' && options !== '') {
        throw locationError(51107, `${name} found regex option(s) specified in both 'regex' and 'option' fields`);
      }
      pattern = literal.pattern;
      flags = literal.options || flags;
    } else if (typeof re === 'string') {
      pattern = re;
    } else {
      throw locationError(51105, `${name} needs 'regex' to be of type string or regex`);
    }
    const key = `${flags}/${pattern}`;
    let compiled = c.regexes.get(key);
    if (!compiled) {
      m.charge(stringSteps(pattern.length));
      compiled = compileRegex(pattern, flags);
      // Patterns computed from entries: a bounded cache (each compile was paid for).
      if (c.regexes.size < 256) c.regexes.set(key, compiled);
    }
    return compiled;
  };
  // A constant pattern is compiled now, so that an invalid one is refused before anything runs.
  if (!isExpressionDynamic(arg.regex) && (arg.options === undefined || !isExpressionDynamic(arg.options))) {
    const constant = regexOf(arg.regex)?.pattern ?? arg.regex;
    enter(c, depth, typeof constant === 'string' ? stringSteps(constant.length) : 1);
    resolve({}, { charge: () => undefined });
  }
  return (root, m) => {
    const x = input(root, m);
    const re = resolve(root, m);
    const empty = name === '$regexMatch' ? false : name === '$regexFind' ? null : [];
    if (isNullish(x)) return empty;
    const s = stringOf(x);
    if (s === undefined) throw locationError(51104, `${name} needs 'input' to be of type string`);
    if (re === null) return empty;
    m.charge(stringSteps(s.length));
    if (name === '$regexMatch') return re.test(s);
    if (name === '$regexFind') {
      const found = re.exec(s);
      return found === null ? null : shown(found, codePoints(s, found.index));
    }
    // Code point indexes, counted incrementally from one match to the next.
    let unit = 0;
    let point = 0;
    return re.execAll(s, () => m.charge(FIND_ALL_MATCH_STEPS)).map((found) => {
      point += codePoints(s, found.index, unit);
      unit = found.index;
      return shown(found, point);
    });
  };
}

/** Each match of $regexFindAll builds a document (and its captures): it costs more than a step. */
const FIND_ALL_MATCH_STEPS = 8;

const shown = (found: RegexMatch, idx: number): Doc => ({ match: found.match, idx, captures: found.captures });

/** Whether an expression argument reads the document (a field path or an operator), rather than being a constant. */
function isExpressionDynamic(v: unknown): boolean {
  if (typeof v === 'string') return v.startsWith('$');
  if (Array.isArray(v)) return v.some(isExpressionDynamic);
  if (isDoc(v)) {
    for (const k in v) if (k.startsWith('$') || isExpressionDynamic(v[k])) return true;
  }
  return false;
}
