import { afterAll, describe, expect, it } from 'vitest';
import { CLOCK_TOLERANCE_SECONDS, TokenError, VerifiedTokenCache, verifyAppToken, type AppLookup } from '../../src/apps/tokens.js';
import type { AppRegistry } from '../../src/apps/registry.js';
import { registryOf, removeConfigDirs, seconds, sign } from '../helpers/apps.js';

/**
 * The verified-token cache: a token verified once answers from the cache, but only
 * under the very manifest it was verified with and only until it expires; bounded, least recently used
 * out first.
 */

const NOW = Date.UTC(2030, 0, 1);
const OLD = 'old-secret-'.padEnd(40, 'o');
const NEW = 'new-secret-'.padEnd(40, 'n');
const MANIFEST = 'slug: tasks\nauth:\n  jwt:\n    secret_env: TASKS_SECRET\n';

const registry = (secret: string): AppRegistry => registryOf({ 'apps/tasks.yaml': MANIFEST }, { TASKS_SECRET: secret });

/** A registry that can be swapped as a reload does (ProxyContext.apps.current). */
function live(initial: AppRegistry): AppLookup & { current: AppRegistry } {
  return {
    current: initial,
    get(slug) {
      return this.current.get(slug);
    },
  };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(TokenError);
    return (err as Error).message;
  }
  throw new Error('the token was accepted');
}

afterAll(() => removeConfigDirs());

describe('VerifiedTokenCache', () => {
  it('a second verification of the same token returns the cached identity', async () => {
    const apps = live(registry(OLD));
    const cache = new VerifiedTokenCache();
    const token = await sign({ app: 'tasks', sub: 'bo', roles: ['reader'], exp: seconds(NOW) + 3600 }, 'HS256', OLD);
    const first = await verifyAppToken(token, apps, { now: NOW, cache });
    expect(cache.size).toBe(1);
    const second = await verifyAppToken(token, apps, { now: NOW + 1000, cache, expectedApp: 'tasks' });
    expect(second).toBe(first);
    expect(second).toMatchObject({ sub: 'bo', rolesClaim: ['reader'], expiresAt: (seconds(NOW) + 3600) * 1000 });
    expect(second.app).toBe(apps.get('tasks'));
  });

  it('refuses an expired token that is in the cache (with the clock tolerance of a full verification)', async () => {
    const apps = live(registry(OLD));
    const cache = new VerifiedTokenCache();
    const exp = seconds(NOW) + 60;
    const token = await sign({ app: 'tasks', exp }, 'HS256', OLD);
    await verifyAppToken(token, apps, { now: NOW, cache });
    // Within the tolerance: still the cached answer.
    await expect(verifyAppToken(token, apps, { now: exp * 1000 + (CLOCK_TOLERANCE_SECONDS - 1) * 1000, cache })).resolves.toBeDefined();
    expect(await refusal(verifyAppToken(token, apps, { now: exp * 1000 + (CLOCK_TOLERANCE_SECONDS + 1) * 1000, cache }))).toMatch(/^token expired/);
    expect(cache.size).toBe(0);
  });

  it('after a reload with a new secret, a cached token signed with the old one is refused', async () => {
    const apps = live(registry(OLD));
    const cache = new VerifiedTokenCache();
    const token = await sign({ app: 'tasks', exp: seconds(NOW) + 3600 }, 'HS256', OLD);
    await verifyAppToken(token, apps, { now: NOW, cache });
    expect(cache.size).toBe(1);
    apps.current = registry(NEW);
    expect(await refusal(verifyAppToken(token, apps, { now: NOW, cache }))).toMatch(/^signature verification failed/);
    // And a token of the new secret is accepted (and cached under the new manifest).
    const fresh = await sign({ app: 'tasks', exp: seconds(NOW) + 3600 }, 'HS256', NEW);
    const verified = await verifyAppToken(fresh, apps, { now: NOW, cache });
    expect(verified.app).toBe(apps.get('tasks'));
  });

  it('a reload that re-reads the manifest (same secret) verifies the token again under the new manifest', async () => {
    const apps = live(registry(OLD));
    const cache = new VerifiedTokenCache();
    const token = await sign({ app: 'tasks', exp: seconds(NOW) + 3600 }, 'HS256', OLD);
    const first = await verifyAppToken(token, apps, { now: NOW, cache });
    apps.current = registry(OLD);
    const second = await verifyAppToken(token, apps, { now: NOW, cache });
    expect(second).not.toBe(first);
    expect(second.app).toBe(apps.get('tasks'));
  });

  it('refuses a cached token once its app is removed', async () => {
    const apps = live(registry(OLD));
    const cache = new VerifiedTokenCache();
    const token = await sign({ app: 'tasks', exp: seconds(NOW) + 3600 }, 'HS256', OLD);
    await verifyAppToken(token, apps, { now: NOW, cache });
    apps.current = registryOf({ 'apps/other.yaml': 'slug: other\nauth_required: false\n' });
    expect(await refusal(verifyAppToken(token, apps, { now: NOW, cache }))).toMatch(/not registered$/);
  });

  it('a cached token presented under another PLAIN user name is refused as a full verification would', async () => {
    const apps = live(registry(OLD));
    const cache = new VerifiedTokenCache();
    const token = await sign({ app: 'tasks', exp: seconds(NOW) + 3600 }, 'HS256', OLD);
    await verifyAppToken(token, apps, { now: NOW, cache });
    expect(await refusal(verifyAppToken(token, apps, { now: NOW, cache, expectedApp: 'other' }))).toMatch(/does not match the token's app claim/);
  });

  it('never caches a refused token', async () => {
    const apps = live(registry(OLD));
    const cache = new VerifiedTokenCache();
    const forged = await sign({ app: 'tasks', exp: seconds(NOW) + 3600 }, 'HS256', NEW);
    await refusal(verifyAppToken(forged, apps, { now: NOW, cache }));
    expect(cache.size).toBe(0);
  });

  it('is bounded: the least recently used token goes first', async () => {
    const apps = live(registry(OLD));
    const cache = new VerifiedTokenCache(3);
    const tokens = await Promise.all([1, 2, 3, 4, 5].map((i) => sign({ app: 'tasks', sub: `u${i}`, exp: seconds(NOW) + 3600 }, 'HS256', OLD)));
    const first: unknown[] = [];
    for (const t of tokens.slice(0, 3)) first.push(await verifyAppToken(t, apps, { now: NOW, cache }));
    // Use the first token again: the second is now the least recently used.
    expect(await verifyAppToken(tokens[0]!, apps, { now: NOW, cache })).toBe(first[0]);
    await verifyAppToken(tokens[3]!, apps, { now: NOW, cache });
    await verifyAppToken(tokens[4]!, apps, { now: NOW, cache });
    expect(cache.size).toBe(3);
    expect(cache.get(tokens[0]!, apps, undefined, NOW)).toBe(first[0]);
    expect(cache.get(tokens[1]!, apps, undefined, NOW)).toBeUndefined();
    expect(cache.get(tokens[2]!, apps, undefined, NOW)).toBeUndefined();
    expect(cache.get(tokens[4]!, apps, undefined, NOW)).toBeDefined();
  });

  it('does not keep very long tokens', async () => {
    const apps = live(registry(OLD));
    const cache = new VerifiedTokenCache();
    const token = await sign({ app: 'tasks', pad: 'p'.repeat(VerifiedTokenCache.MAX_TOKEN_LENGTH), exp: seconds(NOW) + 3600 }, 'HS256', OLD);
    await verifyAppToken(token, apps, { now: NOW, cache });
    expect(cache.size).toBe(0);
  });
});
