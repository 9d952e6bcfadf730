import type net from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { HttpServer, registerObservabilityRoutes, type HealthSource } from '../../src/observability/http.js';
import { Router, sendJson, type RouteMatch } from '../../src/observability/router.js';

/** The HTTP route table (src/observability/router.ts) and observability's routes on it, over real HTTP. */

const servers: HttpServer[] = [];

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function serve(router: Router): Promise<string> {
  const server = new HttpServer(router);
  servers.push(server);
  const address: net.AddressInfo = await server.listen('127.0.0.1', 0);
  return `http://127.0.0.1:${address.port}`;
}

/** A router whose handlers answer what they matched. */
function echo(router: Router, method: string, pattern: string): Router {
  return router.on(method, pattern, (_req, res, match: RouteMatch) =>
    sendJson(res, 200, { pattern, path: match.path, params: match.params, rest: match.rest, query: Object.fromEntries(match.query) }),
  );
}

async function json(base: string, path: string, init?: RequestInit): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${base}${path}`, init);
  const text = await res.text();
  return { status: res.status, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>), headers: res.headers };
}

describe('Router: exact paths', () => {
  it('answers a registered path, with the query string parsed but not matched', async () => {
    const base = await serve(echo(new Router(), 'GET', '/healthz'));
    const r = await json(base, '/healthz?verbose=1&x=a%20b');
    expect(r.status).toBe(200);
    expect(r.body).toEqual({ pattern: '/healthz', path: '/healthz', params: {}, rest: '', query: { verbose: '1', x: 'a b' } });
  });

  it('answers HEAD on a GET route with the headers and no body', async () => {
    const base = await serve(echo(new Router(), 'GET', '/healthz'));
    const res = await fetch(`${base}/healthz`, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(Number(res.headers.get('content-length'))).toBeGreaterThan(0);
    expect(await res.text()).toBe('');
  });

  it('answers 404 with the path for an unknown path, a trailing slash or another case', async () => {
    const base = await serve(echo(new Router(), 'GET', '/healthz'));
    for (const path of ['/nope', '/healthz/', '/HEALTHZ', '/healthz/more']) {
      const r = await json(base, path);
      expect(r.status, path).toBe(404);
      expect(r.body).toEqual({ error: `no such endpoint: ${path}` });
    }
    // A method no route has does not turn an unknown path into a 405.
    expect((await json(base, '/nope', { method: 'POST' })).status).toBe(404);
  });

  it('answers 405 with Allow when the path has routes but not for the method', async () => {
    const router = echo(new Router(), 'GET', '/readyz');
    echo(router, 'POST', '/hooks');
    echo(router, 'DELETE', '/hooks');
    const base = await serve(router);
    const r = await json(base, '/readyz', { method: 'POST' });
    expect(r.status).toBe(405);
    expect(r.body).toEqual({ error: 'method not allowed' });
    expect(r.headers.get('allow')).toBe('GET, HEAD');
    const hooks = await json(base, '/hooks', { method: 'PUT' });
    expect(hooks.status).toBe(405);
    expect(hooks.headers.get('allow')).toBe('POST, DELETE');
    // HEAD is not implied by routes other than GET.
    expect((await fetch(`${base}/hooks`, { method: 'HEAD' })).status).toBe(405);
    expect((await json(base, '/hooks', { method: 'DELETE' })).body.pattern).toBe('/hooks');
  });
});

describe('Router: prefixes', () => {
  it('matches /apps/<slug>/… with the slug decoded and the rest after the prefix', async () => {
    const base = await serve(echo(new Router(), 'GET', '/apps/:slug/*'));
    expect((await json(base, '/apps/task_manager/live/tasks?since=3')).body).toEqual({
      pattern: '/apps/:slug/*',
      path: '/apps/task_manager/live/tasks',
      params: { slug: 'task_manager' },
      rest: 'live/tasks',
      query: { since: '3' },
    });
    expect((await json(base, '/apps/task_manager/')).body).toMatchObject({ params: { slug: 'task_manager' }, rest: '' });
    expect((await json(base, '/apps/a%20b/x')).body).toMatchObject({ params: { slug: 'a b' }, rest: 'x' });
    // Not under the prefix: the slug alone, an empty slug, the bare /apps.
    for (const path of ['/apps/task_manager', '/apps//x', '/apps', '/apps/']) expect((await json(base, path)).status, path).toBe(404);
  });

  it('answers 400 for a parameter that is not valid percent-encoding', async () => {
    const base = await serve(echo(new Router(), 'GET', '/apps/:slug/*'));
    const r = await json(base, '/apps/%E0%A4%A/x');
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ error: 'malformed path: /apps/%E0%A4%A/x' });
  });

  it('prefers an exact path, then the longer prefix, then a literal segment over a parameter, whatever the order of registration', async () => {
    const router = new Router();
    echo(router, 'GET', '/apps/:slug/*');
    echo(router, 'GET', '/apps/:slug/live/*');
    echo(router, 'GET', '/apps/admin/*');
    echo(router, 'GET', '/apps');
    echo(router, 'GET', '/apps/x/status');
    const base = await serve(router);
    expect((await json(base, '/apps')).body.pattern).toBe('/apps');
    expect((await json(base, '/apps/x/status')).body.pattern).toBe('/apps/x/status');
    expect((await json(base, '/apps/x/status/more')).body.pattern).toBe('/apps/:slug/*');
    expect((await json(base, '/apps/x/live/tasks')).body).toMatchObject({ pattern: '/apps/:slug/live/*', rest: 'tasks' });
    expect((await json(base, '/apps/admin/users')).body).toMatchObject({ pattern: '/apps/admin/*', params: {}, rest: 'users' });
    expect((await json(base, '/apps/x/users')).body).toMatchObject({ pattern: '/apps/:slug/*', params: { slug: 'x' }, rest: 'users' });
  });

  it('lets two parts register other methods on one prefix, and answers 405 with Allow for the rest', async () => {
    const router = new Router();
    echo(router, 'GET', '/apps/:slug/*');
    echo(router, 'POST', '/apps/:slug/*');
    const base = await serve(router);
    expect((await json(base, '/apps/a/b', { method: 'POST' })).body).toMatchObject({ params: { slug: 'a' }, rest: 'b' });
    const r = await json(base, '/apps/a/b', { method: 'PATCH' });
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('GET, POST, HEAD');
    expect(router.routes()).toEqual(['GET /apps/:slug/*', 'POST /apps/:slug/*']);
  });
});

describe('Router: registration', () => {
  it('refuses a route registered twice, malformed patterns and one shape under two parameter names', () => {
    const router = echo(new Router(), 'GET', '/readyz');
    expect(() => echo(router, 'GET', '/readyz')).toThrow('route GET /readyz is registered twice');
    echo(router, 'GET', '/apps/:slug/*');
    expect(() => echo(router, 'POST', '/apps/:app/*')).toThrow('route /apps/:app/* overlaps /apps/:slug/*');
    expect(() => echo(router, 'GET', 'readyz')).toThrow("a pattern starts with '/'");
    expect(() => echo(router, 'GET', '/apps/:slug')).toThrow("':name' segments are for prefix routes");
    expect(() => echo(router, 'GET', '/a//b')).toThrow('an empty segment');
    expect(() => echo(router, 'GET', '/a/*/b')).toThrow("'*' before the end");
    expect(() => echo(router, 'GET', '/*')).toThrow('a prefix needs at least one segment');
    expect(() => echo(router, 'get', '/x')).toThrow("bad method 'get'");
    expect(router.routes()).toEqual(['GET /readyz', 'GET /apps/:slug/*']);
  });
});

describe('Router: failing handlers', () => {
  it('answers 500 for a handler that throws or rejects, and keeps serving', async () => {
    const router = new Router()
      .get('/throws', () => {
        throw new Error('boom');
      })
      .get('/rejects', async () => {
        await Promise.resolve();
        throw new Error('later');
      })
      .get('/ok', (_req, res) => sendJson(res, 200, { ok: true }));
    const base = await serve(router);
    expect(await json(base, '/throws')).toMatchObject({ status: 500, body: { error: 'internal error: boom' } });
    expect(await json(base, '/rejects')).toMatchObject({ status: 500, body: { error: 'internal error: later' } });
    expect(await json(base, '/ok')).toMatchObject({ status: 200, body: { ok: true } });
  });

  it('closes the connection of a handler that fails after starting its answer (no cut answer looks whole)', async () => {
    const router = new Router()
      .get('/half', (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' });
        res.write('part');
        throw new Error('midway');
      })
      .get('/ok', (_req, res) => sendJson(res, 200, { ok: true }));
    const base = await serve(router);
    await expect(fetch(`${base}/half`).then((res) => res.text())).rejects.toThrow();
    expect(await json(base, '/ok')).toMatchObject({ status: 200, body: { ok: true } });
  });
});

describe("observability's routes", () => {
  function source(over: Partial<HealthSource> = {}): HealthSource {
    return {
      readiness: () => Promise.resolve({ ready: true, detail: { upstream: 'primary db:27017' } }),
      apps: () => ({ apps: [{ slug: 'alpha' }] }),
      metrics: () => Promise.resolve({ contentType: 'text/plain; version=0.0.4; charset=utf-8', text: 'mdb_up 1\n' }),
      ...over,
    };
  }

  it('registers the status page, /healthz, /readyz, /apps and /metrics', () => {
    expect(registerObservabilityRoutes(new Router(), source()).routes()).toEqual(['GET /', 'GET /healthz', 'GET /readyz', 'GET /apps', 'GET /metrics']);
    // Without an apps or metrics source there is no such route (404).
    expect(registerObservabilityRoutes(new Router(), { readiness: source().readiness }).routes()).toEqual(['GET /', 'GET /healthz', 'GET /readyz']);
  });

  it('answers each as before: JSON health, 503 when not ready, the documents, the Prometheus text', async () => {
    let ready = true;
    const base = await serve(
      registerObservabilityRoutes(
        new Router(),
        source({ readiness: () => Promise.resolve(ready ? { ready: true, detail: { apps: 2 } } : { ready: false, detail: { reason: 'the upstream did not answer' } }) }),
      ),
    );
    expect(await json(base, '/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await json(base, '/readyz')).toMatchObject({ status: 200, body: { status: 'ready', apps: 2 } });
    ready = false;
    expect(await json(base, '/readyz')).toMatchObject({ status: 503, body: { status: 'not ready', reason: 'the upstream did not answer' } });
    expect(await json(base, '/apps')).toMatchObject({ status: 200, body: { apps: [{ slug: 'alpha' }] } });
    const metrics = await fetch(`${base}/metrics`);
    expect(metrics.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(await metrics.text()).toBe('mdb_up 1\n');
    const head = await fetch(`${base}/metrics`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String('mdb_up 1\n'.length));
    expect(await head.text()).toBe('');
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(await json(base, '/metrics', { method: 'POST' })).toMatchObject({ status: 405, body: { error: 'method not allowed' } });
    expect(await json(base, '/status')).toMatchObject({ status: 404, body: { error: 'no such endpoint: /status' } });
  });

  it('answers 500 with the reason when /apps or /metrics cannot be produced', async () => {
    const base = await serve(
      registerObservabilityRoutes(
        new Router(),
        source({
          apps: () => {
            throw new Error('no worker answered');
          },
          metrics: () => Promise.reject(new Error('registry gone')),
        }),
      ),
    );
    expect(await json(base, '/apps')).toMatchObject({ status: 500, body: { error: 'cannot describe the apps: no worker answered' } });
    expect(await json(base, '/metrics')).toMatchObject({ status: 500, body: { error: 'cannot collect the metrics: registry gone' } });
  });
});
