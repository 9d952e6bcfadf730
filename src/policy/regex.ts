import { RE2JS, RE2JSException } from 're2js';
import { locationError } from './errors.js';

/**
 * Regular expressions an app sends that the proxy itself runs (docs/security.md, "App input evaluated
 * by the proxy"): compiled with RE2 (the `re2js` port), whose matching time is linear in the input
 * whatever the pattern, never with JavaScript's backtracking RegExp. Patterns RE2 cannot compile
 * (backreferences, lookaround, possessive quantifiers, `\Z`...) are refused with the server's code for
 * an invalid regular expression (51091) instead of being run some other way.
 */

/** The server's limit on a pattern's length. */
export const MAX_PATTERN_LENGTH = 32761;

/** The options the server accepts and what they mean to RE2 (`x` is applied to the pattern, `u` is RE2's default). */
const OPTION_FLAGS: Readonly<Record<string, number>> = {
  i: RE2JS.CASE_INSENSITIVE,
  m: RE2JS.MULTILINE,
  s: RE2JS.DOTALL,
  x: 0,
  u: 0,
};

/** One match: the text, its UTF-16 index in the input, and its groups (null when a group took no part). */
export interface RegexMatch {
  readonly match: string;
  readonly index: number;
  readonly captures: (string | null)[];
}

/** A compiled pattern: every method runs in time linear in its input. */
export interface SafeRegex {
  readonly pattern: string;
  readonly options: string;
  test(input: string): boolean;
  /** The first match, or null. */
  exec(input: string): RegexMatch | null;
  /** Every match, left to right; `each` is called once per match (and may throw to stop). */
  execAll(input: string, each: () => void): RegexMatch[];
}

/**
 * Compiles `pattern` with the server's `options` letters. Throws the server's errors: 51108 for an
 * unknown option, 51109/51110 for a NUL byte, 51091 for a pattern that is too long or that RE2 cannot
 * compile.
 */
export function compileRegex(pattern: string, options: string): SafeRegex {
  if (pattern.includes('\0')) throw locationError(51109, 'Regular expression cannot contain an embedded null byte');
  if (options.includes('\0')) throw locationError(51110, 'Regular expression options string cannot contain an embedded null byte');
  let flags = 0;
  for (const letter of options) {
    const flag = OPTION_FLAGS[letter];
    if (flag === undefined) throw locationError(51108, `invalid flag in regex options: ${letter}`);
    flags |= flag;
  }
  if (pattern.length > MAX_PATTERN_LENGTH) throw locationError(51091, 'Regular expression is invalid: pattern string is too long');
  const source = options.includes('x') ? stripExtended(pattern) : pattern;
  let re: RE2JS;
  try {
    re = RE2JS.compile(source, flags);
  } catch (err) {
    if (!(err instanceof RE2JSException)) throw err;
    throw locationError(
      51091,
      `Regular expression is invalid: ${err.message} (mdb-runtime runs app regular expressions with RE2: no backreferences, lookaround or possessive quantifiers)`,
    );
  }
  return {
    pattern,
    options,
    test: (input) => re.test(input),
    exec(input) {
      const m = re.exec(input);
      return m === null ? null : toMatch(m);
    },
    execAll(input, each) {
      const out: RegexMatch[] = [];
      for (const m of re.matchAll(input)) {
        each();
        out.push(toMatch(m));
      }
      return out;
    },
  };
}

function toMatch(m: ArrayLike<string | undefined> & { index?: number }): RegexMatch {
  const captures: (string | null)[] = [];
  for (let i = 1; i < m.length; i++) captures.push(m[i] ?? null);
  return { match: m[0] ?? '', index: m.index ?? 0, captures };
}

/** PCRE's extended mode (option `x`), which RE2 lacks: unescaped whitespace and `#` comments outside classes go. */
function stripExtended(pattern: string): string {
  let out = '';
  let inClass = false;
  let i = 0;
  while (i < pattern.length) {
    const c = pattern[i]!;
    if (c === '\\') {
      if (!inClass && pattern[i + 1] === 'Q') {
        // \Q...\E is literal text, whitespace included.
        const end = pattern.indexOf('\\E', i + 2);
        const literal = end < 0 ? pattern.slice(i) : pattern.slice(i, end + 2);
        out += literal;
        i += literal.length;
        continue;
      }
      out += pattern.slice(i, i + 2);
      i += 2;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      out += c;
      i++;
      continue;
    }
    if (c === '[') {
      inClass = true;
      out += c;
      i++;
      // A ']' right after '[' or '[^' is a literal member of the class.
      if (pattern[i] === '^') out += pattern[i++];
      if (pattern[i] === ']') out += pattern[i++];
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v') {
      i++;
      continue;
    }
    if (c === '#') {
      const nl = pattern.indexOf('\n', i);
      i = nl < 0 ? pattern.length : nl + 1;
      continue;
    }
    out += c;
    i++;
  }
  return out;
}
