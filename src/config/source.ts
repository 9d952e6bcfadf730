import YAML, { LineCounter, isMap, isNode, isScalar, isSeq, visit, type Document } from 'yaml';

/**
 * A configuration problem a person can act on: the message says where (file:line:col, env variable or
 * flag), which key, what was expected and what was found.
 */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** A key path into a configuration value: map keys and list indexes (`['auth', 'jwt', 'keys', 1]`). */
export type KeyPath = readonly (string | number)[];

/**
 * Where the values of a configuration file came from, for messages: `file:line:col` of a key path, and
 * the key path as the person wrote it. A YamlFile is one; a migrated manifest maps its paths back to the
 * file it was migrated from.
 */
export interface Locator {
  readonly file: string;
  /** `file:line:col` of the value at `path` (or of its key with `which: 'key'`). */
  at(path: KeyPath, which?: 'value' | 'key'): string;
  /** The key path as written in the file: `auth.jwt.keys[1].secret_env`. */
  label(path: KeyPath): string;
}

/** `auth.jwt.keys[1].secret_env` for `['auth', 'jwt', 'keys', 1, 'secret_env']`. */
export function keyPathName(path: KeyPath): string {
  return path.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? k : `.${k}`)).join('');
}

/** A parsed YAML (or JSON) file that remembers where each value came from, for error messages. */
export class YamlFile implements Locator {
  private constructor(
    readonly file: string,
    readonly value: unknown,
    private readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
  ) {}

  /** Parses `text`; a syntax error becomes a ConfigError naming `file:line:col`. */
  static parse(file: string, text: string): YamlFile {
    const lines = new LineCounter();
    // JSON is YAML too, so .json manifests go through the same parser and get the same positions.
    const doc = YAML.parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
    const err = doc.errors[0];
    if (err) {
      let pos = err.linePos?.[0];
      // The yaml library appends "at line L, column C:" and a code frame; keep the frame, drop the repeat.
      const [first = '', ...frame] = err.message.split('\n');
      let summary = first.replace(/ at line \d+, column \d+:?$/, '');
      let excerpt = frame.filter((l) => l.trim() !== '').join('\n');
      // An unclosed quote, [ or { is reported where the parser gave up (often the end of the file);
      // point at the value that was left open instead.
      const unclosed = err.code === 'MISSING_CHAR' || /end with an? [\]}]/.test(first);
      const open = unclosed ? openValueAt(doc, err.pos[0]) : undefined;
      if (open !== undefined) {
        pos = lines.linePos(open);
        summary += ' (the value starting here is never closed)';
        excerpt = `${text.split('\n')[pos.line - 1] ?? ''}\n${' '.repeat(pos.col - 1)}^`;
      }
      throw new ConfigError(
        `${file}${pos ? `:${pos.line}:${pos.col}` : ''}: invalid YAML: ${summary}${excerpt ? `\n${excerpt}` : ''}`,
      );
    }
    return new YamlFile(file, doc.toJS() as unknown, doc, lines);
  }

  /**
   * `file:line:col` of the value at `path` (map keys and list indexes; or of its key with `which: 'key'`);
   * when the path does not
   * exist, the position of the nearest ancestor that does; `file` alone for an empty document.
   */
  at(path: KeyPath, which: 'value' | 'key' = 'value'): string {
    let node: unknown = this.doc.contents;
    let offset = rangeStart(node);
    for (let i = 0; i < path.length; i++) {
      const segment = path[i];
      // A number indexes a list (`keys[1]`).
      if (typeof segment === 'number') {
        if (!isSeq(node) || segment >= node.items.length) break;
        node = node.items[segment];
        offset = rangeStart(node) ?? offset;
        continue;
      }
      if (!isMap(node)) break;
      const pair = node.items.find((p) => scalarKey(p.key) === path[i]);
      if (!pair) break;
      const last = i === path.length - 1;
      offset = (last && which === 'key' ? undefined : rangeStart(pair.value)) ?? rangeStart(pair.key) ?? offset;
      node = pair.value;
    }
    if (offset === undefined) return this.file;
    const { line, col } = this.lines.linePos(offset);
    return `${this.file}:${line}:${col}`;
  }

  label(path: KeyPath): string {
    return keyPathName(path);
  }

  /**
   * The keys of the mapping at `path` in the order the file gives them (a JavaScript object puts
   * integer-like keys first, which would reorder an index's keys); undefined when it is not a mapping.
   */
  keysAt(path: KeyPath): string[] | undefined {
    let node: unknown = this.doc.contents;
    for (const segment of path) {
      if (typeof segment === 'number') {
        if (!isSeq(node)) return undefined;
        node = node.items[segment];
      } else {
        if (!isMap(node)) return undefined;
        node = node.items.find((p) => scalarKey(p.key) === segment)?.value;
      }
    }
    if (!isMap(node)) return undefined;
    return node.items.map((p) => scalarKey(p.key));
  }
}

function scalarKey(key: unknown): string {
  return String(isScalar(key) ? key.value : key);
}

/** The start of the innermost scalar or flow collection that runs up to `offset` (the end of the file). */
function openValueAt(doc: Document.Parsed, offset: number): number | undefined {
  let best: number | undefined;
  visit(doc, (_key, node) => {
    if (!isNode(node) || !node.range) return;
    const flow = isScalar(node) ? node.type === 'QUOTE_DOUBLE' || node.type === 'QUOTE_SINGLE' : 'flow' in node && node.flow === true;
    const [start, , end] = node.range;
    if (flow && start < offset && end >= offset && (best === undefined || start > best)) best = start;
  });
  return best;
}

function rangeStart(node: unknown): number | undefined {
  if (node === null || typeof node !== 'object' || !('range' in node)) return undefined;
  const range = (node as { range?: unknown }).range;
  return Array.isArray(range) && typeof range[0] === 'number' ? range[0] : undefined;
}

/** A found value for an error message: `"abc" (a string)`, `-3`, `a list`, `nothing`. */
/** A YAML (or JSON) mapping as parsed: not a list, not a date. */
export function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

export function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'an empty value';
  if (typeof v === 'string') return `${JSON.stringify(v)} (a string)`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v)) return 'a list';
  if (v instanceof Date) return `a date (${v.toISOString()})`;
  return 'a mapping';
}

/** The closest of `candidates` to `word` if it is a plausible typo (edit distance <= 2). */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}
