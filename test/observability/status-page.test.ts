import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MongoClient } from 'mongodb';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it, onTestFinished } from 'vitest';
import { afterEdit, writeManifest } from '../helpers/reload.js';
import { connect, startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { launchChromium, type HeadlessChromium } from './chromium.js';

/**
 * The status page (GET / on the HTTP port) in headless Chromium, against a running proxy with traffic:
 * what it renders must be the server's own numbers, and what it renders from config files must stay text.
 */

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const OUTPUT = path.join(ROOT, 'test-output');
const ferret = inject('upstreamIsFerretDB');
/** The page refreshes every 2 s; every wait on it has this deadline. */
const DEADLINE_MS = 15_000;

/**
 * The little of the DOM that the functions run in the page use (they are typed here: the project's lib
 * has no DOM, and playwright-core's element types need it).
 */
interface PageElement {
  readonly textContent: string | null;
  readonly dataset: Record<string, string | undefined>;
  readonly parentElement: PageElement | null;
  className: string;
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement>;
  appendChild(child: PageElement): void;
  remove(): void;
}
declare const document: { readonly body: PageElement; querySelector(selector: string): PageElement | null; createElement(tag: string): PageElement };
declare function getComputedStyle(element: PageElement): { readonly color: string; readonly backgroundColor: string };

let launched: HeadlessChromium | undefined;
let launchError: Error | undefined;

// A browser that cannot start fails every test that needs it, with the reason (a failing beforeAll
// would only mark them skipped).
beforeAll(async () => {
  try {
    launched = await launchChromium();
  } catch (err) {
    launchError = err as Error;
  }
});

afterAll(async () => {
  await launched?.close();
});

function chromium(): HeadlessChromium {
  if (!launched) throw launchError ?? new Error('Chromium was not launched');
  return launched;
}

/** What one row of the page shows: the raw numbers of its data-value cells, and their text. */
interface RenderedApp {
  slug: string;
  status: string;
  values: Record<string, string>;
  texts: Record<string, string>;
}

async function renderedApps(page: Page): Promise<Map<string, RenderedApp>> {
  const rows = await page.$$eval('tr[data-app]', (trs: PageElement[]) =>
    trs.map((tr) => {
      const values: Record<string, string> = {};
      const texts: Record<string, string> = {};
      for (const cell of tr.querySelectorAll('[data-field]')) {
        const field = cell.getAttribute('data-field') ?? '';
        values[field] = cell.getAttribute('data-value') ?? '';
        texts[field] = cell.textContent ?? '';
      }
      return { slug: tr.getAttribute('data-app') ?? '', status: tr.getAttribute('data-status') ?? '', values, texts };
    }),
  );
  return new Map(rows.map((r) => [r.slug, r]));
}

function refreshes(page: Page): Promise<number> {
  return page.evaluate(() => Number(document.body.dataset.refreshes));
}

/** Waits until the page has completed `count` refreshes in all (event-driven, with the deadline). */
async function untilRefreshes(page: Page, count: number): Promise<void> {
  await page.waitForFunction((n: number) => Number(document.body.dataset.refreshes) >= n, count, { timeout: DEADLINE_MS });
}

// ---- the server's own numbers: Prometheus text from /metrics ----

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) throw new Error(`unparseable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    }
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

function sum(samples: Sample[], name: string, labels: Record<string, string>, filter: (s: Sample) => boolean = () => true): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v) && filter(s))
    .reduce((a, s) => a + s.value, 0);
}

async function scrape(proxy: TestProxy): Promise<Sample[]> {
  const res = await fetch(`http://127.0.0.1:${proxy.httpPort}/metrics`);
  expect(res.status, 'GET /metrics').toBe(200);
  return parsePrometheus(await res.text());
}

/** What /metrics says about one app, in the page's terms. */
interface ServerNumbers {
  ops_total: number;
  errors_total: number;
  connections: number;
  indexes: Record<string, number>;
}

function serverNumbers(samples: Sample[], slug: string): ServerNumbers {
  return {
    ops_total: sum(samples, 'mdb_operations_total', { app: slug }),
    errors_total: sum(samples, 'mdb_operations_total', { app: slug }, (s) => s.labels.outcome !== 'ok'),
    connections: sum(samples, 'mdb_client_connections', { app: slug }),
    indexes: Object.fromEntries(['ok', 'create', 'drift', 'unsupported', 'error'].map((action) => [action, sum(samples, 'mdb_indexes', { app: slug, action })])),
  };
}

/**
 * The bucket of the app's command-duration histogram (all its commands together) that holds the
 * `q` quantile, in ms: (lower, upper].
 */
function histogramBucket(samples: Sample[], slug: string, q: number): { lower: number; upper: number } {
  const cumulative = new Map<number, number>();
  for (const s of samples) {
    if (s.name !== 'mdb_command_duration_seconds_bucket' || s.labels.app !== slug) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    cumulative.set(le, (cumulative.get(le) ?? 0) + s.value);
  }
  const bounds = [...cumulative.keys()].sort((x, y) => x - y);
  const total = cumulative.get(Infinity) ?? 0;
  expect(total, `${slug}: requests in mdb_command_duration_seconds`).toBeGreaterThan(0);
  const rank = Math.max(1, Math.ceil(q * total));
  const i = bounds.findIndex((le) => cumulative.get(le)! >= rank);
  return { lower: i > 0 ? bounds[i - 1]! * 1000 : 0, upper: bounds[i]! * 1000 };
}

// ---- traffic ----

interface Workload {
  inserts: number;
  finds: number;
  failures: number;
}

/**
 * Known traffic for one app until `stopped()`: inserts and finds, and every fifth round a find the
 * upstream fails ($regex with an invalid pattern). Counts what it sent.
 */
async function drive(client: MongoClient, stopped: () => boolean): Promise<Workload> {
  const items = client.db('app').collection<{ i: number }>('items');
  const done: Workload = { inserts: 0, finds: 0, failures: 0 };
  for (let i = 0; !stopped(); i++) {
    await items.insertOne({ i });
    done.inserts++;
    expect(await items.find({ i }).toArray()).toHaveLength(1);
    done.finds++;
    if (i % 5 === 0) {
      await expect(items.find({ name: { $regex: '(' } }).toArray()).rejects.toThrow();
      done.failures++;
    }
  }
  return done;
}

describe('status page', () => {
  let proxy: TestProxy;

  beforeAll(async () => {
    proxy = await startTestProxy({
      apps: {
        'alpha.yaml': 'slug: alpha\nname: Alpha Notes\nauth_required: false\nmanaged_indexes:\n  items:\n    - { keys: { i: 1 }, name: by_i }\n',
        'beta.yaml': 'slug: beta\nname: Beta Board\nauth_required: false\n',
      },
      logLevel: 'info',
    });
  });

  afterAll(async () => {
    await proxy?.stop();
  });

  it('is served with a strict Content-Security-Policy', async () => {
    const res = await fetch(`http://127.0.0.1:${proxy.httpPort}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'(;|$)/);
    expect(csp).toMatch(/style-src 'sha256-[A-Za-z0-9+/=]+'(;|$)/);
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toContain("require-trusted-types-for 'script'");
    expect(csp).not.toContain('unsafe');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const html = await res.text();
    // Self-contained: nothing loaded from anywhere else; the CSP's hashes are those of its inline blocks.
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
    const hash = (tag: string) => {
      const blocks = [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))];
      expect(blocks, tag).toHaveLength(1);
      return `'sha256-${createHash('sha256').update(blocks[0]![1]!).digest('base64')}'`;
    };
    expect(csp).toContain(`script-src ${hash('script')};`);
    expect(csp).toContain(`style-src ${hash('style')};`);
    const head = await fetch(`http://127.0.0.1:${proxy.httpPort}/`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-security-policy')).toBe(csp);
    expect(await head.text()).toBe('');
  });

  it('shows each app with the numbers the proxy reports, refreshing while traffic runs', async () => {
    const { page, errors } = await chromium().newPage();
    // No server monitoring heartbeats during the test: every command counted is one this test sent.
    const clients = await Promise.all(['alpha', 'beta'].map((slug) => connect(proxy.uri(slug), { heartbeatFrequencyMS: 120_000 })));
    onTestFinished(async () => {
      await Promise.all(clients.map((c) => c.close()));
      await page.close();
    });
    let stop = false;
    const traffic = Promise.all(clients.map((c) => drive(c, () => stop)));
    try {
      await page.goto(`http://127.0.0.1:${proxy.httpPort}/`);
      // Live: both apps have served operations and show a request rate while the traffic runs.
      await page.waitForFunction(
        () =>
          ['alpha', 'beta'].every((slug) => {
            const row = document.querySelector(`tr[data-app="${slug}"]`);
            const value = (field: string) => Number(row?.querySelector(`[data-field="${field}"]`)?.getAttribute('data-value') || 0);
            return value('ops_total') >= 20 && value('ops_per_second') > 0;
          }),
        null,
        { timeout: DEADLINE_MS },
      );
      expect(await page.getAttribute('body', 'data-ready')).toBe('true');
    } finally {
      stop = true;
    }
    const [alpha, beta] = await traffic;
    // Quiescent now: the refresh after next fetched /apps after the last operation was counted.
    const before = await scrape(proxy);
    await untilRefreshes(page, (await refreshes(page)) + 2);
    const shown = await renderedApps(page);
    const after = await scrape(proxy);

    fs.mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: path.join(OUTPUT, 'status-page.png'), fullPage: true });

    for (const [slug, sent] of [['alpha', alpha!], ['beta', beta!]] as const) {
      const server = serverNumbers(after, slug);
      expect(serverNumbers(before, slug), `${slug}: /metrics changed without traffic`).toEqual(server);
      const row = shown.get(slug);
      expect(row, `row for ${slug}`).toBeDefined();
      const { values, texts } = row!;
      expect(row!.status).toBe('available');
      // What the page shows is what /metrics says: total operations (every command and outcome),
      // errors (every outcome but ok), open connections, managed indexes by state.
      expect(Number(values.ops_total), `${slug} total operations`).toBe(server.ops_total);
      expect(Number(values.errors_total), `${slug} errors`).toBe(server.errors_total);
      expect(Number(values.connections), `${slug} connections`).toBe(server.connections);
      for (const action of ['ok', 'create', 'drift', 'unsupported', 'error']) {
        expect(Number(values[`indexes_${action}`] ?? 0), `${slug} indexes ${action}`).toBe(server.indexes[action]);
      }
      // ... and /metrics counted the traffic this test sent, the failures as errors.
      const commands = (command: string, outcome?: string) =>
        sum(after, 'mdb_operations_total', { app: slug, command, ...(outcome ? { outcome } : {}) });
      expect(commands('insert', 'ok'), `${slug} inserts`).toBe(sent.inserts);
      expect(commands('find', 'ok'), `${slug} finds`).toBe(sent.finds);
      expect(commands('find', 'error'), `${slug} failed finds`).toBe(sent.failures);
      expect(server.ops_total).toBeGreaterThanOrEqual(sent.inserts + sent.finds + sent.failures);
      expect(server.errors_total).toBe(sent.failures);
      expect(server.connections).toBeGreaterThanOrEqual(1);
      // Latency: the page's p50 and p99 (the proxy's recent-latency window, which holds this whole
      // test) fall in the buckets of the mdb_command_duration_seconds histogram that hold those
      // quantiles (the window's own buckets are exact to about 5%).
      for (const [field, q] of [['latency_p50_ms', 0.5], ['latency_p99_ms', 0.99]] as const) {
        expect(values[field], `${slug} ${field}`).toMatch(/^\d+(\.\d+)?$/);
        const { lower, upper } = histogramBucket(after, slug, q);
        const shownMS = Number(values[field]);
        expect(shownMS, `${slug} ${field} in (${lower}, ${upper}] ms`).toBeGreaterThan(lower / 1.05);
        expect(shownMS, `${slug} ${field} in (${lower}, ${upper}] ms`).toBeLessThanOrEqual(upper * 1.05);
      }
      expect(Number(values.latency_p99_ms)).toBeGreaterThanOrEqual(Number(values.latency_p50_ms));
      // The rate is a recent average: at most what the total allows over its 10 s window.
      expect(Number(values.ops_per_second) * 10).toBeLessThanOrEqual(server.ops_total);
      // Shown as text a person reads: the same number, grouped by thousands.
      expect(texts.ops_total!.replace(/,/g, '')).toBe(values.ops_total);
      expect(texts.status).toBe('available');
    }
    expect(shown.get('alpha')!.values.indexes_ok, "alpha's managed index, reconciled").toBe('1');
    expect(shown.get('beta')!.values.indexes_total, 'beta declares no indexes').toBe('0');
    expect(await page.getAttribute('body', 'data-ready')).toBe('true');
    expect(errors, 'console errors (CSP violations, script errors)').toEqual([]);
  });
});

describe('status page: indexes the upstream cannot build (the example config)', () => {
  // The example config as `npm run dev` serves it (dev.sh makes up the secret the same way).
  const EXAMPLE = path.join(ROOT, 'config/apps');
  let proxy: TestProxy;
  let secretBefore: string | undefined;

  beforeAll(async () => {
    secretBefore = process.env.TASK_MANAGER_JWT_SECRET;
    process.env.TASK_MANAGER_JWT_SECRET = createHash('sha256').update('status page example').digest('base64url');
    proxy = await startTestProxy({
      apps: Object.fromEntries(fs.readdirSync(EXAMPLE).map((f) => [f, fs.readFileSync(path.join(EXAMPLE, f), 'utf8')])),
      logLevel: 'info',
    });
  });

  afterAll(async () => {
    await proxy?.stop();
    if (secretBefore === undefined) delete process.env.TASK_MANAGER_JWT_SECRET;
    else process.env.TASK_MANAGER_JWT_SECRET = secretBefore;
  });

  it('shows no red: the TTL index FerretDB cannot build is a neutral "unsupported" chip with the reason as its tooltip', async () => {
    const { page, errors } = await chromium().newPage();
    onTestFinished(() => page.close());
    await page.goto(`http://127.0.0.1:${proxy.httpPort}/`);
    // Reconciled: the four managed indexes of task_manager all shown in a final state.
    await page.waitForFunction(
      () => {
        const row = document.querySelector('tr[data-app="task_manager"]');
        const n = (field: string) => Number(row?.querySelector(`[data-field="indexes_${field}"]`)?.getAttribute('data-value') || 0);
        return n('ok') + n('unsupported') === 4;
      },
      null,
      { timeout: DEADLINE_MS },
    );
    const shown = await renderedApps(page);
    const tm = shown.get('task_manager')!;
    expect(tm.status).toBe('available');
    expect(shown.get('playground')?.status).toBe('available');
    const server = await scrape(proxy);
    const gauge = (action: string) => sum(server, 'mdb_indexes', { app: 'task_manager', action });
    expect(Number(tm.values.indexes_ok)).toBe(gauge('ok'));
    expect(Number(tm.values.indexes_error)).toBe(0);
    expect(gauge('error')).toBe(0);
    const chip = page.locator('tr[data-app="task_manager"] [data-field="indexes_unsupported"]');
    if (ferret) {
      expect(tm.values.indexes_unsupported).toBe('1');
      expect(gauge('unsupported')).toBe(1);
      expect(await chip.textContent()).toBe('1 unsupported');
      const title = (await chip.getAttribute('title')) ?? '';
      expect(title).toContain('sessions.last_seen_1: the upstream cannot build this index: NotImplemented (238): Index option "expireAfterSeconds" is not implemented yet');
      // Not the error style: another class, and other colours than an error chip's.
      const classes = ((await chip.getAttribute('class')) ?? '').split(' ');
      expect(classes).toContain('limit');
      expect(classes).not.toContain('bad');
      const colours = await page.evaluate(() => {
        const shownChip = document.querySelector('tr[data-app="task_manager"] [data-field="indexes_unsupported"]')!;
        const probe = document.createElement('span');
        probe.className = 'chip bad';
        shownChip.parentElement!.appendChild(probe);
        const of = (e: PageElement) => ({ color: getComputedStyle(e).color, background: getComputedStyle(e).backgroundColor });
        const out = { chip: of(shownChip), error: of(probe) };
        probe.remove();
        return out;
      });
      expect(colours.chip.color).not.toBe(colours.error.color);
      expect(colours.chip.background).not.toBe(colours.error.background);
    } else {
      // A MongoDB builds the TTL index: no unsupported chip at all.
      expect(tm.values.indexes_ok).toBe('4');
      expect(await chip.count()).toBe(0);
    }
    // Nothing on the first screen is red: no error badge or chip, no error text, no health reason.
    expect(await page.locator('.bad, .err, .errors.nonzero, .meta.failed').count()).toBe(0);
    expect(await page.locator('#health-reason').textContent()).toBe('');
    expect(await page.getAttribute('body', 'data-ready')).toBe('true');
    fs.mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: path.join(OUTPUT, 'status-page-example.png'), fullPage: true });
    expect(errors).toEqual([]);
  });
});

describe('status page rendering of config-file text', () => {
  const NAME = `<img src=x onerror="document.body.dataset.pwned='name'"><script>document.body.dataset.pwned='script'</script> & "Q" 'q'`;
  // No double quotes: the error message quotes the value JSON-style, which would escape them.
  const PAYLOAD = `<img src=x onerror=document.body.setAttribute('data-pwned','error')>`;
  let proxy: TestProxy;

  beforeAll(async () => {
    proxy = await startTestProxy({
      apps: { 'evil.json': JSON.stringify({ slug: 'evil', name: NAME, auth_required: false }) },
      logLevel: 'info',
    });
  });

  afterAll(async () => {
    await proxy?.stop();
  });

  it('renders a hostile app name and manifest error as text, not HTML', async () => {
    // A refused edit: the error quotes the bad value, and the last good version keeps serving.
    await afterEdit(
      proxy.runtime.apps,
      () => writeManifest(proxy.configDir, 'evil.json', JSON.stringify({ slug: 'evil', name: NAME, auth_required: false, limits: { connections: PAYLOAD } })),
      (e) => e.refused.length > 0,
    );
    const { page, errors } = await chromium().newPage();
    onTestFinished(() => page.close());
    await page.goto(`http://127.0.0.1:${proxy.httpPort}/`);
    await page.waitForFunction(() => document.querySelector('tr[data-app="evil"] [data-field="last_error"]') !== null, null, {
      timeout: DEADLINE_MS,
    });
    const row = page.locator('tr[data-app="evil"]');
    expect(await row.locator('.name').textContent()).toBe(NAME);
    const error = (await row.locator('[data-field="last_error"]').textContent()) ?? '';
    expect(error).toContain(PAYLOAD);
    // Located (relative to the config dir), and said once.
    expect(error).toMatch(/^apps\/evil\.json:1:\d+: limits\.connections: /);
    expect(await row.textContent()).toContain('serving the last good version');
    // Nothing of it became markup, and nothing ran.
    expect(await page.locator('#apps img, #apps script, #health-reason img').count()).toBe(0);
    expect(await page.getAttribute('body', 'data-pwned')).toBeNull();
    // The manifest problem shows in the health line too (from /readyz), as text.
    expect(await page.locator('#health-reason').textContent()).toContain('evil.json');
    fs.mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: path.join(OUTPUT, 'status-page-escaping.png'), fullPage: true });
    expect(errors).toEqual([]);
  });

  it('says so when the proxy stops answering, keeping the last data', async () => {
    const { page } = await chromium().newPage();
    onTestFinished(() => page.close());
    await page.goto(`http://127.0.0.1:${proxy.httpPort}/`);
    await untilRefreshes(page, 1);
    await proxy.stop();
    await page.waitForFunction(() => document.querySelector('#refreshed.failed') !== null, null, { timeout: DEADLINE_MS });
    expect(await page.locator('#refreshed').textContent()).toMatch(/^refresh failed at \d\d:\d\d:\d\d .*; showing data from \d\d:\d\d:\d\d$/);
    expect(await page.locator('#health').textContent()).toBe('unreachable');
    expect(await page.getAttribute('body', 'data-ready')).toBe('unknown');
    expect(await page.locator('tr[data-app="evil"]').count()).toBe(1);
  });
});
