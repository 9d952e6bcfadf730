import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import { fileURLToPath } from 'node:url';
import type { Router } from './router.js';

/**
 * GET / on the HTTP port: the status page, one self-contained HTML file (status-page.html beside this
 * module; `npm run build` copies it into dist/observability/). It fetches /readyz and /apps itself.
 *
 * The Content-Security-Policy allows nothing but the file's own inline style and script blocks (by
 * SHA-256 hash, computed here from the file as loaded, so the page can be edited without touching this
 * code), fetches to this origin and a data: favicon. Trusted Types are required with no policy, so the
 * page cannot reach an HTML sink (innerHTML and friends) even by mistake: what it renders (app names,
 * manifest errors, from config files) goes in as text.
 */
export const STATUS_PAGE_FILE = fileURLToPath(new URL('./status-page.html', import.meta.url));

export interface StatusPage {
  body: Buffer;
  headers: Record<string, string>;
}

let cached: StatusPage | undefined;

/** The page and its headers (the file is read once). Throws when the file is missing. */
export function loadStatusPage(file = STATUS_PAGE_FILE): StatusPage {
  if (file === STATUS_PAGE_FILE && cached) return cached;
  const body = fs.readFileSync(file);
  const page: StatusPage = { body, headers: statusPageHeaders(body.toString('utf8')) };
  if (file === STATUS_PAGE_FILE) cached = page;
  return page;
}

/** The response headers for `html`: the CSP with the hashes of its inline blocks, and the usual hardening. */
export function statusPageHeaders(html: string): Record<string, string> {
  return {
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': contentSecurityPolicy(html),
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-resource-policy': 'same-origin',
    'cache-control': 'no-store',
  };
}

export function contentSecurityPolicy(html: string): string {
  const scripts = inlineBlocks(html, 'script').map(hashSource);
  const styles = inlineBlocks(html, 'style').map(hashSource);
  return [
    "default-src 'none'",
    `script-src ${scripts.length > 0 ? scripts.join(' ') : "'none'"}`,
    `style-src ${styles.length > 0 ? styles.join(' ') : "'none'"}`,
    "connect-src 'self'",
    'img-src data:',
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
  ].join('; ');
}

/** The text of each `<tag …>…</tag>` block: the page's inline code, which the CSP allows by hash. */
function inlineBlocks(html: string, tag: 'script' | 'style'): string[] {
  const re = new RegExp(`<${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</${tag}>`, 'g');
  return [...html.matchAll(re)].map((m) => m[1] ?? '');
}

function hashSource(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;
}

/** Writes the page (HEAD: headers only, which node does by itself), or a 500 saying what is missing. */
export function serveStatusPage(res: http.ServerResponse): void {
  let page: StatusPage;
  try {
    page = loadStatusPage();
  } catch (err) {
    const text = JSON.stringify({
      error: `status page unavailable: cannot read ${STATUS_PAGE_FILE} (${(err as Error).message}); npm run build copies it into dist/observability/`,
    });
    res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
    return;
  }
  res.writeHead(200, { ...page.headers, 'content-length': page.body.length });
  res.end(page.body);
}

/** GET / */
export function registerStatusPageRoute(router: Router): void {
  router.get('/', (_req, res) => serveStatusPage(res));
}
