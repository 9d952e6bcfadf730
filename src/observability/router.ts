import type http from 'node:http';

/**
 * The HTTP port's route table. Each part registers its own routes on one Router (observability: the
 * status page, /healthz, /readyz, /apps, /metrics; see docs/architecture.md), and HttpServer hands every
 * request to it.
 *
 * A route is a method and a path pattern:
 * - an exact path, `/readyz`;
 * - a prefix, a pattern ending in `/*`: `/apps/:slug/*` answers `/apps/<slug>/<anything>`, with the
 *   slug (one non-empty path segment, percent-decoded) in `params.slug` and what follows the prefix in
 *   `rest` (`''` for `/apps/<slug>/`).
 * An exact path beats every prefix; among prefixes the one with more segments wins, then the one whose
 * first differing segment is literal. The query string plays no part in matching.
 *
 * No route for the path: 404. A route for the path but not for the method: 405 with `Allow`. A GET route
 * answers HEAD too (node leaves the body out). A handler that throws gets a 500 (or, once it has started
 * its answer, the connection closed): a request never takes the process down.
 */

export interface RouteMatch {
  /** The request's path, without the query string. */
  readonly path: string;
  /** The query string, parsed. */
  readonly query: URLSearchParams;
  /** The values of the pattern's `:name` segments. */
  readonly params: Readonly<Record<string, string>>;
  /** For a prefix route: the rest of the path after the prefix (no leading '/'); '' for an exact route. */
  readonly rest: string;
}

export type RouteHandler = (req: http.IncomingMessage, res: http.ServerResponse, match: RouteMatch) => void | Promise<void>;

type Segment = { readonly literal: string } | { readonly param: string };

interface Pattern {
  /** As registered (`/apps/:slug/*`). */
  readonly text: string;
  /** Its shape: what makes two patterns the same route. */
  readonly key: string;
  readonly segments: readonly Segment[];
  readonly prefix: boolean;
  readonly handlers: Map<string, RouteHandler>;
}

const METHOD = /^[A-Z]+$/;

export class Router {
  private readonly exact = new Map<string, Pattern>();
  /** Prefix patterns, most specific first. */
  private prefixes: Pattern[] = [];

  /** GET (and so HEAD) `pattern`. */
  get(pattern: string, handler: RouteHandler): this {
    return this.on('GET', pattern, handler);
  }

  /** `method` on `pattern` (an exact path, or a prefix ending in `/*`). Registering one twice throws. */
  on(method: string, pattern: string, handler: RouteHandler): this {
    if (!METHOD.test(method)) throw new Error(`route ${pattern}: bad method '${method}'`);
    const entry = this.pattern(pattern);
    if (entry.handlers.has(method)) throw new Error(`route ${method} ${pattern} is registered twice`);
    entry.handlers.set(method, handler);
    return this;
  }

  /** Every registered route as `METHOD pattern`, in registration order per pattern (for tests and logs). */
  routes(): string[] {
    return [...this.exact.values(), ...this.prefixes].flatMap((p) => [...p.handlers.keys()].map((m) => `${m} ${p.text}`));
  }

  /** Answers one request: its route's handler, or 400/404/405/500 as JSON. Never rejects. */
  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const found = this.match(path);
    if (found === undefined) return sendJson(res, 404, { error: `no such endpoint: ${path}` });
    if (found === 'malformed') return sendJson(res, 400, { error: `malformed path: ${path}` });
    const { pattern, params, rest } = found;
    const method = req.method ?? 'GET';
    const handler = pattern.handlers.get(method) ?? (method === 'HEAD' ? pattern.handlers.get('GET') : undefined);
    if (!handler) {
      const allowed = [...pattern.handlers.keys()];
      if (allowed.includes('GET') && !allowed.includes('HEAD')) allowed.push('HEAD');
      return sendJson(res, 405, { error: 'method not allowed' }, { allow: allowed.join(', ') });
    }
    try {
      await handler(req, res, { path, query: new URLSearchParams(q < 0 ? '' : url.slice(q + 1)), params, rest });
    } catch (err) {
      if (!res.headersSent) sendJson(res, 500, { error: `internal error: ${err instanceof Error ? err.message : String(err)}` });
      else res.destroy();
    }
  }

  private pattern(text: string): Pattern {
    if (!text.startsWith('/')) throw new Error(`route ${text}: a pattern starts with '/'`);
    const prefix = text.endsWith('/*');
    const body = prefix ? text.slice(1, -2) : text.slice(1);
    const segments = (body === '' ? [] : body.split('/')).map((s): Segment => {
      if (s === '' || s.includes('*')) throw new Error(`route ${text}: an empty segment, or '*' before the end`);
      return s.startsWith(':') && s.length > 1 ? { param: s.slice(1) } : { literal: s };
    });
    if (!prefix && segments.some((s) => 'param' in s)) throw new Error(`route ${text}: ':name' segments are for prefix routes (ending in /*)`);
    if (prefix && segments.length === 0) throw new Error(`route ${text}: a prefix needs at least one segment`);
    // Two prefixes of one shape are one route whatever their parameters are called.
    const key = prefix ? `${segments.map((s) => ('param' in s ? ':' : s.literal)).join('/')}/*` : text;
    const existing = prefix ? this.prefixes.find((p) => p.key === key) : this.exact.get(key);
    if (existing) {
      if (existing.text !== text) throw new Error(`route ${text} overlaps ${existing.text}: use the same parameter names`);
      return existing;
    }
    const entry: Pattern = { text, key, segments, prefix, handlers: new Map() };
    if (prefix) this.prefixes = [...this.prefixes, entry].sort(moreSpecific);
    else this.exact.set(key, entry);
    return entry;
  }

  private match(path: string): { pattern: Pattern; params: Record<string, string>; rest: string } | 'malformed' | undefined {
    const exact = this.exact.get(path);
    if (exact) return { pattern: exact, params: {}, rest: '' };
    const parts = path.split('/').slice(1);
    for (const pattern of this.prefixes) {
      const n = pattern.segments.length;
      if (parts.length <= n) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < n && ok; i++) {
        const s = pattern.segments[i]!;
        const part = parts[i]!;
        if ('literal' in s) {
          ok = part === s.literal;
        } else if (part === '') {
          ok = false;
        } else {
          try {
            params[s.param] = decodeURIComponent(part);
          } catch {
            return 'malformed';
          }
        }
      }
      if (ok) return { pattern, params, rest: parts.slice(n).join('/') };
    }
    return undefined;
  }
}

/** Prefixes with more segments first; at the first difference, a literal segment before a parameter. */
function moreSpecific(a: Pattern, b: Pattern): number {
  if (a.segments.length !== b.segments.length) return b.segments.length - a.segments.length;
  for (let i = 0; i < a.segments.length; i++) {
    const la = 'literal' in a.segments[i]!;
    const lb = 'literal' in b.segments[i]!;
    if (la !== lb) return la ? -1 : 1;
  }
  return 0;
}

/** Writes `body` as JSON with `status` (HEAD: node leaves the body out). */
export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
