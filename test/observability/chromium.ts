import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

/**
 * Headless Chromium for the status page tests: Debian's `chromium` package (never a downloaded browser).
 * MDB_TEST_CHROMIUM points at another binary (e.g. on macOS). A missing or broken binary is a test
 * failure with what to install, never a skip.
 */
export const CHROMIUM_PATH = process.env.MDB_TEST_CHROMIUM || '/usr/bin/chromium';

const INSTALL_HINT =
  'Install it (Debian/Ubuntu: `sudo apt-get install -y --no-install-recommends chromium`; .ci/run does this) ' +
  'or set MDB_TEST_CHROMIUM to a Chromium binary.';

export interface HeadlessChromium {
  context: BrowserContext;
  /** A new tab that records console errors and page errors (CSP violations show up there). */
  newPage(): Promise<{ page: Page; errors: string[] }>;
  close(): Promise<void>;
}

export async function launchChromium(): Promise<HeadlessChromium> {
  if (!fs.existsSync(CHROMIUM_PATH)) {
    throw new Error(`the status page tests need Chromium, and ${CHROMIUM_PATH} does not exist. ${INSTALL_HINT}`);
  }
  // A fresh profile per run: nothing cached from an earlier run, nothing left behind.
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-chromium-'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM_PATH,
      headless: true,
      timeout: 30_000,
      viewport: { width: 1400, height: 560 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  } catch (err) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw new Error(`Chromium (${CHROMIUM_PATH}) failed to start: ${(err as Error).message}\n${INSTALL_HINT}`, { cause: err });
  }
  return {
    context,
    async newPage() {
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(`console: ${m.text()}`);
      });
      page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
      return { page, errors };
    },
    async close() {
      await context.close();
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}
