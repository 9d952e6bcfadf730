import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { base64url } from 'jose';
import { APPNAME_MAX_BYTES, TokenError, looksLikeJwt, mintToken, verifyAppToken, type VerifiedToken } from '../../src/apps/tokens.js';
import type { AppRegistry } from '../../src/apps/registry.js';
import { SECRET_64, keyPair, registryOf, removeConfigDirs, seconds, sign, type TestKeyPair } from '../helpers/apps.js';

/**
 * Token verification with keys generated here, for every algorithm family, and the attacks on it:
 * alg none, HS signed with an RSA public key, expiry and skew, issuer/audience, app claim tricks, cuts.
 */

const NOW = Date.UTC(2030, 0, 1);
const EXP = seconds(NOW) + 3600;

let pairs: Record<string, TestKeyPair>;
let apps: AppRegistry;

beforeAll(async () => {
  pairs = {};
  for (const alg of ['RS256', 'PS256', 'ES256', 'ES384', 'ES512', 'EdDSA']) pairs[alg] = await keyPair(alg);
  const jwks = JSON.stringify({
    keys: [
      { ...pairs.RS256!.jwk, kid: 'rsa-1' },
      { ...pairs.ES256!.jwk, kid: 'ec-1' },
    ],
  });
  const pemApp = (slug: string, file: string, extra = '') => `slug: ${slug}\nauth:\n  jwt:\n    public_key_file: keys/${file}\n${extra}`;
  apps = registryOf(
    {
      'apps/hs.yaml': 'slug: hs\nauth:\n  jwt:\n    secret_env: HS_SECRET\n',
      'apps/only256.yaml': 'slug: only256\nauth:\n  jwt:\n    secret_env: HS_SECRET\n    algorithms: [HS256]\n',
      'apps/rsa.yaml': pemApp('rsa', 'rsa.pem'),
      'apps/pss.yaml': pemApp('pss', 'pss.pem', '    algorithms: [PS256]\n'),
      'apps/ec256.yaml': pemApp('ec256', 'ec256.pem'),
      'apps/ec384.yaml': pemApp('ec384', 'ec384.pem'),
      'apps/ec521.yaml': pemApp('ec521', 'ec521.pem'),
      'apps/ed.yaml': pemApp('ed', 'ed.pem'),
      'apps/jwks.yaml': 'slug: jwks\nauth:\n  jwt:\n    jwks_file: keys/app.jwks.json\n',
      'apps/claims.yaml':
        'slug: claims\nauth:\n  jwt:\n    secret_env: HS_SECRET\n    issuer: https://id.example.com\n    audience: [claims_api, other]\n',
      'apps/rotated.yaml': 'slug: rotated\nauth:\n  jwt:\n    keys:\n      - secret_env: NEW_SECRET\n      - secret_env: OLD_SECRET\n',
      'apps/roles.yaml':
        "slug: roles\nauth:\n  jwt:\n    secret_env: HS_SECRET\n  roles:\n    reader: { read: ['*'] }\n    editor: { read: ['*'], write: [tasks] }\n  default_role: reader\n",
      'apps/other.yaml': 'slug: other\nauth:\n  jwt:\n    secret_env: OTHER_SECRET\n',
      'apps/gone.yaml': 'slug: gone\nauth:\n  jwt:\n    secret_env: GONE_SECRET\n',
      'apps/dev.yaml': 'slug: dev\nauth_required: false\n',
      'keys/rsa.pem': pairs.RS256!.spki,
      'keys/pss.pem': pairs.PS256!.spki,
      'keys/ec256.pem': pairs.ES256!.spki,
      'keys/ec384.pem': pairs.ES384!.spki,
      'keys/ec521.pem': pairs.ES512!.spki,
      'keys/ed.pem': pairs.EdDSA!.spki,
      'keys/app.jwks.json': jwks,
    },
    { HS_SECRET: SECRET_64, NEW_SECRET: 'n'.repeat(32), OLD_SECRET: 'o'.repeat(32), OTHER_SECRET: 'x'.repeat(32) },
  );
});

afterAll(() => removeConfigDirs());

const verify = (token: string, options: { expectedApp?: string; now?: number } = {}): Promise<VerifiedToken> =>
  verifyAppToken(token, apps, { now: NOW, ...options });

/** The TokenError message of a refused token. */
async function refusal(token: string, options: { expectedApp?: string; now?: number } = {}): Promise<string> {
  try {
    await verify(token, options);
  } catch (err) {
    expect(err).toBeInstanceOf(TokenError);
    expect((err as Error).message).not.toContain(token);
    return (err as Error).message;
  }
  throw new Error('the token was accepted');
}

describe('accepts each algorithm family with its own key', () => {
  it.each(['HS256', 'HS384', 'HS512'])('%s with the secret from secret_env', async (alg) => {
    const v = await verify(await sign({ app: 'hs', sub: 'alice', exp: EXP }, alg, SECRET_64));
    expect(v.app.slug).toBe('hs');
    expect(v.sub).toBe('alice');
    expect(v.alg).toBe(alg);
    expect(v.expiresAt).toBe(EXP * 1000);
  });

  it.each([
    ['rsa', 'RS256'],
    ['pss', 'PS256'],
    ['ec256', 'ES256'],
    ['ec384', 'ES384'],
    ['ec521', 'ES512'],
    ['ed', 'EdDSA'],
  ])('%s: %s with public_key_file', async (app, alg) => {
    const v = await verify(await sign({ app, exp: EXP }, alg, pairs[alg]!.privateKey));
    expect(v.app.slug).toBe(app);
    expect(v.alg).toBe(alg);
  });

  it.each([
    ['RS256', 'rsa-1'],
    ['ES256', 'ec-1'],
  ])('%s from a JWKS, selected by kid %s', async (alg, kid) => {
    const v = await verify(await sign({ app: 'jwks', exp: EXP }, alg, pairs[alg]!.privateKey, { kid }));
    expect(v.app.slug).toBe('jwks');
  });

  it('selects a key by kid when both the key and the token name one', async () => {
    const kidApps = registryOf(
      { 'apps/k.yaml': 'slug: k\nauth:\n  jwt:\n    keys:\n      - { secret_env: A, kid: new }\n      - { secret_env: B, kid: old }\n' },
      { A: 'a'.repeat(32), B: 'b'.repeat(32) },
    );
    const v = (t: string) => verifyAppToken(t, kidApps, { now: NOW });
    expect((await v(await sign({ app: 'k', exp: EXP }, 'HS256', 'b'.repeat(32), { kid: 'old' }))).app.slug).toBe('k');
    expect((await v(await sign({ app: 'k', exp: EXP }, 'HS256', 'b'.repeat(32)))).app.slug).toBe('k');
    await expect(v(await sign({ app: 'k', exp: EXP }, 'HS256', 'b'.repeat(32), { kid: 'new' }))).rejects.toThrow(/signature verification failed/);
    await expect(v(await sign({ app: 'k', exp: EXP }, 'HS256', 'b'.repeat(32), { kid: 'gone' }))).rejects.toThrow(`no key of app 'k' has kid "gone" (keys: new, old)`);
  });

  it('every key listed under keys: (rotation)', async () => {
    for (const secret of ['n'.repeat(32), 'o'.repeat(32)]) {
      expect((await verify(await sign({ app: 'rotated', exp: EXP }, 'HS256', secret))).app.slug).toBe('rotated');
    }
    expect(await refusal(await sign({ app: 'rotated', exp: EXP }, 'HS256', 'z'.repeat(32)))).toMatch(/signature verification failed/);
  });
});

describe('refuses algorithm tricks', () => {
  it("refuses alg 'none' (an unsigned token)", async () => {
    const enc = (o: object) => base64url.encode(JSON.stringify(o));
    for (const alg of ['none', 'None', 'NONE']) {
      const token = `${enc({ alg })}.${enc({ app: 'hs', exp: EXP })}.`;
      expect(await refusal(token)).toMatch(/is not allowed for app 'hs'/);
    }
  });

  it('refuses an HS256 token signed with the RSA public key as the HMAC secret (algorithm confusion)', async () => {
    const forged = await sign({ app: 'rsa', exp: EXP }, 'HS256', pairs.RS256!.spki);
    expect(await refusal(forged)).toBe(`alg "HS256" is not allowed for app 'rsa' (allowed: RS256)`);
    // Same with the JWKS app and its JWK serialisation as the secret.
    const forgedJwks = await sign({ app: 'jwks', exp: EXP }, 'HS256', JSON.stringify(pairs.RS256!.jwk));
    expect(await refusal(forgedJwks)).toMatch(/alg "HS256" is not allowed for app 'jwks'/);
  });

  it('refuses an algorithm outside the allow-list, even one the key could verify', async () => {
    expect(await refusal(await sign({ app: 'only256', exp: EXP }, 'HS512', SECRET_64))).toBe(
      `alg "HS512" is not allowed for app 'only256' (allowed: HS256)`,
    );
    expect(await refusal(await sign({ app: 'rsa', exp: EXP }, 'PS256', pairs.PS256!.privateKey))).toMatch(/alg "PS256" is not allowed for app 'rsa'/);
  });

  it("refuses a token signed by another key of the same type", async () => {
    const stranger = await keyPair('ES256');
    expect(await refusal(await sign({ app: 'ec256', exp: EXP }, 'ES256', stranger.privateKey))).toMatch(/signature verification failed/);
  });
});

describe('checks time claims with 30 s of skew', () => {
  const now = seconds(NOW);
  it.each([
    ['exp 29 s ago', { exp: now - 29 }, true],
    ['exp 31 s ago', { exp: now - 31 }, false],
    ['nbf in 29 s', { nbf: now + 29, exp: now + 600 }, true],
    ['nbf in 31 s', { nbf: now + 31, exp: now + 600 }, false],
    ['no exp at all', {}, true],
  ])('%s → accepted: %s', async (_what, claims, ok) => {
    const token = await sign({ app: 'hs', ...claims }, 'HS256', SECRET_64);
    if (ok) expect((await verify(token)).app.slug).toBe('hs');
    else expect(await refusal(token)).toMatch(/expired|claim 'nbf'/);
  });

  it('says the token expired', async () => {
    expect(await refusal(await sign({ app: 'hs', exp: seconds(NOW) - 3600 }, 'HS256', SECRET_64))).toBe(`token expired (exp ${seconds(NOW) - 3600})`);
  });
});

describe('checks issuer and audience when the manifest sets them', () => {
  it('accepts the configured issuer and one of the audiences', async () => {
    const ok = await sign({ app: 'claims', iss: 'https://id.example.com', aud: 'other', exp: EXP }, 'HS256', SECRET_64);
    expect((await verify(ok)).app.slug).toBe('claims');
  });

  it.each([
    ['a wrong issuer', { iss: 'https://evil.example.com', aud: 'claims_api' }, /claim 'iss'/],
    ['no issuer', { aud: 'claims_api' }, /claim 'iss'/],
    ['a wrong audience', { iss: 'https://id.example.com', aud: 'someone_else' }, /claim 'aud'/],
    ['no audience', { iss: 'https://id.example.com' }, /claim 'aud'/],
  ])('refuses %s', async (_what, claims, reason) => {
    expect(await refusal(await sign({ app: 'claims', ...claims, exp: EXP }, 'HS256', SECRET_64))).toMatch(reason);
  });
});

describe('checks the app claim', () => {
  it('refuses a token without app, or naming an unregistered app', async () => {
    expect(await refusal(await sign({ sub: 'x', exp: EXP }, 'HS256', SECRET_64))).toBe("the token has no 'app' claim (the app's slug)");
    expect(await refusal(await sign({ app: 'nobody', exp: EXP }, 'HS256', SECRET_64))).toBe("the token names app 'nobody', which is not registered");
  });

  it("refuses a token claiming another app but signed with this app's key", async () => {
    // Signed with hs's secret, claiming 'other': other's key does not verify it.
    expect(await refusal(await sign({ app: 'other', exp: EXP }, 'HS256', SECRET_64))).toMatch(/signature verification failed/);
  });

  it("refuses app A's token presented under app B's name (PLAIN user name)", async () => {
    const tokenA = await sign({ app: 'hs', exp: EXP }, 'HS256', SECRET_64);
    expect(await refusal(tokenA, { expectedApp: 'other' })).toBe("the user name 'other' does not match the token's app claim 'hs'");
    expect((await verify(tokenA, { expectedApp: 'hs' })).app.slug).toBe('hs');
  });

  it('refuses tokens for an unavailable app and for an app without keys', async () => {
    const err = await refusal(await sign({ app: 'gone', exp: EXP }, 'HS256', SECRET_64));
    expect(err).toMatch(/^app 'gone' is unavailable: .*GONE_SECRET is not set/);
    expect(await refusal(await sign({ app: 'dev', exp: EXP }, 'HS256', SECRET_64))).toMatch(/app 'dev' accepts no tokens/);
  });

  it('refuses a non-string sub and a roles claim that is not a list of strings', async () => {
    expect(await refusal(await sign({ app: 'hs', sub: 5 as unknown as string, exp: EXP }, 'HS256', SECRET_64))).toMatch(/'sub'/);
    expect(await refusal(await sign({ app: 'roles', roles: 'editor', exp: EXP }, 'HS256', SECRET_64))).toMatch(/'roles' claim is not a list/);
  });
});

describe('resolves roles', () => {
  it('uses the roles claim, the default role without one, and refuses an undefined role', async () => {
    const editor = await verify(await sign({ app: 'roles', roles: ['editor'], exp: EXP }, 'HS256', SECRET_64));
    expect(editor.roles.names).toEqual(['editor']);
    expect([...editor.roles.allowed.write]).toEqual(['tasks']);
    const byDefault = await verify(await sign({ app: 'roles', exp: EXP }, 'HS256', SECRET_64));
    expect(byDefault.roles.names).toEqual(['reader']);
    expect(await refusal(await sign({ app: 'roles', roles: ['admin'], exp: EXP }, 'HS256', SECRET_64))).toBe(
      "the token names the role 'admin', which the manifest does not define (defined: reader, editor)",
    );
  });

  it('leaves an app without roles unrestricted', async () => {
    const v = await verify(await sign({ app: 'hs', roles: ['anything'], exp: EXP }, 'HS256', SECRET_64));
    expect(v.roles.unrestricted).toBe(true);
  });
});

describe('cut and malformed tokens', () => {
  it('refuses a token cut at 128 bytes, as the Node driver cuts appName', async () => {
    const long = await sign({ app: 'hs', sub: 'someone-with-a-long-subject@example.com', exp: EXP }, 'HS256', SECRET_64);
    expect(Buffer.byteLength(long)).toBeGreaterThan(APPNAME_MAX_BYTES);
    const cut = long.slice(0, APPNAME_MAX_BYTES);
    expect(looksLikeJwt(cut)).toBe(true);
    expect(await refusal(cut)).toMatch(/malformed token|signature verification failed/);
  });

  it('refuses a token whose signature was cut short by a few characters', async () => {
    const token = await sign({ app: 'hs', exp: EXP }, 'HS256', SECRET_64);
    expect(await refusal(token.slice(0, -3))).toMatch(/signature verification failed|malformed/);
  });

  it.each(['', 'abc', 'a.b.c', 'eyJ.eyJ.', 'playground'])('refuses %j', async (token) => {
    await expect(verify(token)).rejects.toBeInstanceOf(TokenError);
  });

  it('recognises what looks like a (possibly cut) JWT', () => {
    expect(looksLikeJwt('eyJhbGciOiJIUzI1NiJ9.eyJhcHAiOiJ4In0.sig')).toBe(true);
    expect(looksLikeJwt('eyJhbGciOiJIUzI1NiJ9.eyJhcH')).toBe(true);
    expect(looksLikeJwt('playground')).toBe(false);
    expect(looksLikeJwt('mongosh 2.3.1')).toBe(false);
  });
});

describe('mintToken', () => {
  it('mints compact HS256 tokens ({"alg":"HS256"}, no typ, no iat) that verify', async () => {
    const { token, alg, expiresAt } = await mintToken(apps.get('hs')!, { ttlSeconds: 600, now: NOW });
    expect(alg).toBe('HS256');
    expect(expiresAt).toBe((seconds(NOW) + 600) * 1000);
    const [header, payload] = token.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>);
    expect(header).toEqual({ alg: 'HS256' });
    expect(payload).toEqual({ app: 'hs', exp: seconds(NOW) + 600 });
    expect(Buffer.byteLength(token)).toBeLessThanOrEqual(APPNAME_MAX_BYTES);
    expect((await verify(token)).app.slug).toBe('hs');
  });

  it('includes sub, roles, iss and aud when given or configured', async () => {
    const { token } = await mintToken(apps.get('claims')!, { ttlSeconds: 60, sub: 'bob', roles: ['x'], now: NOW });
    const v = await verify(token);
    expect(v.sub).toBe('bob');
  });

  it('signs with a private key for public-key apps, choosing the algorithm of the key', async () => {
    const { createPrivateKey } = await import('node:crypto');
    const { token, alg } = await mintToken(apps.get('ec384')!, { ttlSeconds: 60, privateKey: createPrivateKey(pairs.ES384!.pkcs8), now: NOW });
    expect(alg).toBe('ES384');
    expect((await verify(token)).app.slug).toBe('ec384');
    await expect(mintToken(apps.get('rsa')!, { ttlSeconds: 60, now: NOW })).rejects.toThrow(/pass the private key with --key-file/);
  });
});
