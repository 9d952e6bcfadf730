import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/source.js';
import { loadManifests } from '../../src/apps/manifests.js';
import { configDirWith, keyPair, manifestOf, removeConfigDirs, type TestKeyPair } from '../helpers/apps.js';

/** The auth section of manifests: keys, algorithm allow-lists, roles, and the errors for each mistake. */

let rsa: TestKeyPair;
let ec: TestKeyPair;

beforeAll(async () => {
  rsa = await keyPair('RS256');
  ec = await keyPair('ES256');
});
afterAll(() => removeConfigDirs());

/** The ConfigError of loading `files` (one manifest, apps/x.yaml, plus key files). */
function problem(files: Record<string, string>, env: NodeJS.ProcessEnv = {}): { message: string; file: string } {
  const dir = configDirWith(files);
  try {
    loadManifests(dir, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return { message: (err as Error).message, file: path.join(dir, 'apps', 'x.yaml') };
  }
  throw new Error('expected a ConfigError');
}

const SECRET = 's'.repeat(32);

describe('defaults and simple fields', () => {
  it('defaults auth_required to true and expose_tag to false; reads both', () => {
    const m = manifestOf({ 'apps/x.yaml': 'slug: x\nauth:\n  jwt:\n    secret_env: X_SECRET\n' }, { X_SECRET: SECRET });
    expect(m.authRequired).toBe(true);
    expect(m.exposeTag).toBe(false);
    expect(m.rbac).toBeUndefined();
    expect(m.unavailable).toBeUndefined();
    const dev = manifestOf({ 'apps/x.yaml': 'slug: x\nauth_required: false\nexpose_tag: true\n' });
    expect(dev).toMatchObject({ authRequired: false, exposeTag: true, jwt: undefined, unavailable: undefined });
  });

  it('rejects a non-boolean expose_tag with file:line:col', () => {
    const { message, file } = problem({ 'apps/x.yaml': 'slug: x\nauth_required: false\nexpose_tag: 1\n' });
    expect(message).toBe(`${file}:3:13: expose_tag: expected true or false, found 1`);
  });

  it('requires auth.jwt when auth_required is true (the default), saying both ways out', () => {
    const { message, file } = problem({ 'apps/x.yaml': 'slug: x\nname: X\n' });
    expect(message).toMatch(new RegExp(`^${file}:1:1: auth.jwt: missing; an app with auth_required: true \\(the default\\) needs a key`));
    expect(message).toContain('secret_env');
    expect(message).toContain('auth_required: false');
  });
});

describe('secret_env', () => {
  it('reads the secret at load time; default algorithms follow its length (RFC 7518)', () => {
    const load = (secret: string) =>
      manifestOf({ 'apps/x.yaml': 'slug: x\nauth:\n  jwt:\n    secret_env: X_SECRET\n' }, { X_SECRET: secret }).jwt!.keys[0]!;
    expect(load('a'.repeat(32)).algorithms).toEqual(['HS256']);
    expect(load('a'.repeat(48)).algorithms).toEqual(['HS256', 'HS384']);
    expect(load('a'.repeat(64))).toMatchObject({ algorithms: ['HS256', 'HS384', 'HS512'], kind: 'secret', source: 'secret_env X_SECRET' });
  });

  it('makes the app unavailable (not a load error) when the variable is unset, empty or too short', () => {
    const yaml = 'slug: x\nauth:\n  jwt:\n    secret_env: X_SECRET\n';
    const unset = manifestOf({ 'apps/x.yaml': yaml });
    expect(unset.unavailable).toMatch(/apps\/x\.yaml:4:17: auth\.jwt\.secret_env: the environment variable X_SECRET is not set; set it to a random secret of at least 32 bytes/);
    expect(manifestOf({ 'apps/x.yaml': yaml }, { X_SECRET: '' }).unavailable).toContain('X_SECRET is not set');
    expect(manifestOf({ 'apps/x.yaml': yaml }, { X_SECRET: 'short' }).unavailable).toContain('X_SECRET holds 5 bytes; HS256 needs a secret of at least 32 bytes');
    const hs512 = 'slug: x\nauth:\n  jwt:\n    secret_env: X_SECRET\n    algorithms: [HS512]\n';
    expect(manifestOf({ 'apps/x.yaml': hs512 }, { X_SECRET: SECRET }).unavailable).toContain('HS512 needs a secret of at least 64 bytes');
  });

  it('keeps an auth_required: false app selectable when its secret is missing, with a warning', () => {
    const m = manifestOf({ 'apps/x.yaml': 'slug: x\nauth_required: false\nauth:\n  jwt:\n    secret_env: X_SECRET\n' });
    expect(m.unavailable).toBeUndefined();
    expect(m.warnings.join('\n')).toContain('X_SECRET is not set');
  });

  it('with keys: (rotation), a missing rotated-out secret is a warning, not an outage', () => {
    const yaml = 'slug: x\nauth:\n  jwt:\n    keys:\n      - secret_env: NEW\n      - secret_env: OLD\n';
    const m = manifestOf({ 'apps/x.yaml': yaml }, { NEW: SECRET });
    expect(m.unavailable).toBeUndefined();
    expect(m.jwt!.keys.map((k) => k.source)).toEqual(['secret_env NEW']);
    expect(m.warnings).toHaveLength(1);
    expect(m.warnings[0]).toMatch(/x\.yaml:6:21: auth\.jwt\.keys\[1\]\.secret_env: the environment variable OLD is not set/);
    expect(manifestOf({ 'apps/x.yaml': yaml }).unavailable).toMatch(/NEW is not set.*OLD is not set/);
  });
});

describe('algorithm allow-lists are safe by construction', () => {
  it.each([
    ['none with a secret', 'secret_env: X_SECRET', '[none]', "'none' (unsigned tokens) is never accepted"],
    ['HS256 with an RSA public key', 'public_key_file: keys/rsa.pem', '[HS256]', 'HS256 with a public key would let anyone holding the public key sign tokens (algorithm confusion)'],
    ['HS512 with a JWKS', 'jwks_file: keys/k.json', '[RS256, HS512]', 'HS512 with a public key'],
    ['RS256 with a secret', 'secret_env: X_SECRET', '[RS256]', 'RS256 needs a public key (public_key_file or jwks_file)'],
    ['ES256 with an RSA key', 'public_key_file: keys/rsa.pem', '[ES256]', 'expected algorithms for an RSA public key (RS256, RS384, RS512, PS256, PS384, PS512), found "ES256"'],
    ['ES384 with a P-256 key', 'public_key_file: keys/ec.pem', '[ES384]', 'expected algorithms for an EC P-256 public key (ES256), found "ES384"'],
    ['an empty list', 'secret_env: X_SECRET', '[]', 'expected a list of JWS algorithms'],
  ])('refuses %s', (_what, key, algorithms, expected) => {
    const { message, file } = problem(
      {
        'apps/x.yaml': `slug: x\nauth:\n  jwt:\n    ${key}\n    algorithms: ${algorithms}\n`,
        'keys/rsa.pem': rsa.spki,
        'keys/ec.pem': ec.spki,
        'keys/k.json': JSON.stringify({ keys: [rsa.jwk] }),
      },
      { X_SECRET: SECRET },
    );
    expect(message).toContain(`${file}:5:17: auth.jwt.algorithms: `);
    expect(message).toContain(expected);
  });

  it('defaults by key type: RS256 for RSA, ES256 for P-256, EdDSA for Ed25519, the union for a JWKS', async () => {
    const ed = await keyPair('EdDSA');
    const algs = (key: string, files: Record<string, string>) =>
      manifestOf({ 'apps/x.yaml': `slug: x\nauth:\n  jwt:\n    ${key}\n`, ...files }).jwt!.keys[0]!.algorithms;
    expect(algs('public_key_file: keys/k.pem', { 'keys/k.pem': rsa.spki })).toEqual(['RS256']);
    expect(algs('public_key_file: keys/k.pem', { 'keys/k.pem': ec.spki })).toEqual(['ES256']);
    expect(algs('public_key_file: keys/k.pem', { 'keys/k.pem': ed.spki })).toEqual(['EdDSA', 'Ed25519']);
    expect(algs('jwks_file: keys/k.json', { 'keys/k.json': JSON.stringify({ keys: [rsa.jwk, ec.jwk] }) })).toEqual(['RS256', 'ES256']);
    expect(algs('jwks_file: keys/k.json', { 'keys/k.json': JSON.stringify({ keys: [{ ...rsa.jwk, alg: 'PS384' }] }) })).toEqual(['PS384']);
  });
});

describe('key files', () => {
  it('resolves key files relative to the config directory', () => {
    const m = manifestOf({ 'apps/x.yaml': 'slug: x\nauth:\n  jwt:\n    public_key_file: keys/app.pem\n', 'keys/app.pem': rsa.spki });
    expect(m.jwt!.keys[0]).toMatchObject({ kind: 'public', source: 'public_key_file keys/app.pem', algorithms: ['RS256'] });
  });

  it.each([
    ['a missing file', 'public_key_file: keys/nope.pem', {}, /auth\.jwt\.public_key_file: cannot read .*keys\/nope\.pem: ENOENT/],
    ['a private key', 'public_key_file: keys/k.pem', { 'keys/k.pem': 'PRIVATE' }, /holds a private key; give the proxy only the public key/],
    ['garbage', 'public_key_file: keys/k.pem', { 'keys/k.pem': 'hello' }, /is not a PEM public key/],
    ['a JWKS that is not JSON', 'jwks_file: keys/k.json', { 'keys/k.json': '{' }, /is not JSON/],
    ['a JWKS without keys', 'jwks_file: keys/k.json', { 'keys/k.json': '{"keys": []}' }, /is not a JWKS/],
    ['a JWKS with a secret', 'jwks_file: keys/k.json', { 'keys/k.json': '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}' }, /keys\[0\] is a secret \(kty "oct"\); secrets belong in an environment variable/],
    ['a JWKS with alg none', 'jwks_file: keys/k.json', { 'keys/k.json': 'RSA_NONE' }, /keys\[0\] has alg "none"/],
    ['a JWKS with private material', 'jwks_file: keys/k.json', { 'keys/k.json': 'RSA_PRIVATE' }, /keys\[0\] holds private key material/],
  ])('refuses %s', (_what, key, files, expected) => {
    const resolved: Record<string, string> = {};
    for (const [f, t] of Object.entries(files as Record<string, string>)) {
      resolved[f] =
        t === 'PRIVATE' ? rsa.pkcs8 : t === 'RSA_NONE' ? JSON.stringify({ keys: [{ ...rsa.jwk, alg: 'none' }] }) : t === 'RSA_PRIVATE' ? JSON.stringify({ keys: [{ ...rsa.jwk, d: 'AAAA' }] }) : t;
    }
    const { message, file } = problem({ 'apps/x.yaml': `slug: x\nauth:\n  jwt:\n    ${key}\n`, ...resolved });
    expect(message.startsWith(`${file}:4:`)).toBe(true);
    expect(message).toMatch(expected);
  });
});

describe('structure errors', () => {
  it.each([
    ['an unknown key with a suggestion', 'auth:\n  jwt:\n    secret_evn: X\n', ':5:5: auth.jwt.secret_evn: unknown key (did you mean \'secret_env\'?)'],
    ['two key sources in one entry', 'auth:\n  jwt:\n    secret_env: X\n    jwks_file: k.json\n', ':5:5: auth.jwt: has both secret_env and jwks_file'],
    ['no key source', 'auth:\n  jwt:\n    issuer: https://x\n', ':5:5: auth.jwt: missing a key'],
    ['inline keys next to keys:', 'auth:\n  jwt:\n    keys:\n      - secret_env: A\n    secret_env: B\n', ":7:17: auth.jwt.secret_env: with 'keys', put secret_env inside each entry of keys"],
    ['an empty keys list', 'auth:\n  jwt:\n    keys: []\n', ':5:11: auth.jwt.keys: expected a non-empty list of keys'],
    ['a bad key entry', 'auth:\n  jwt:\n    keys:\n      - secret_env: A\n      - 5\n', ':7:9: auth.jwt.keys[1]: expected a mapping'],
    ['auth that is a list', 'auth: [1]\n', ':3:7: auth: expected a mapping with jwt, roles, default_role, found a list'],
    ['an unknown auth key', 'auth:\n  jwt:\n    secret_env: A\n  role: {}\n', ":6:3: auth.role: unknown key (did you mean 'roles'?)"],
  ])('reports %s', (_what, body, expected) => {
    const { message, file } = problem({ 'apps/x.yaml': `slug: x\nauth_required: true\n${body}` });
    expect(message.startsWith(`${file}${expected}`), message).toBe(true);
  });
});

describe('roles', () => {
  it('parses roles and the default role; a single string is a list of one', () => {
    const m = manifestOf({
      'apps/x.yaml':
        "slug: x\nauth_required: false\nauth:\n  roles:\n    reader: { read: '*' }\n    editor: { read: ['*'], write: [tasks], indexes: [tasks] }\n    nobody:\n  default_role: reader\n",
    });
    expect(m.rbac!.defaultRole).toBe('reader');
    expect(Object.fromEntries(m.rbac!.roles)).toEqual({
      reader: { read: ['*'], write: [], indexes: [] },
      editor: { read: ['*'], write: ['tasks'], indexes: ['tasks'] },
      nobody: { read: [], write: [], indexes: [] },
    });
  });

  it.each([
    ['an unknown action', "roles:\n    r: { reed: ['*'] }\n", ":5:10: auth.roles.r.reed: unknown key (did you mean 'read'?)"],
    ['a default role that is not defined', "roles:\n    r: { read: ['*'] }\n  default_role: admin\n", ":6:17: auth.default_role: 'admin' is not a role of auth.roles (r)"],
    ['a default role without roles', 'default_role: admin\n', ':4:17: auth.default_role: is set but auth.roles defines no roles'],
    ['collections that are not strings', 'roles:\n    r: { read: [1] }\n', ":5:16: auth.roles.r.read: expected a list of collection names ('*' = all), found a list"],
    // The position is the bad name itself (the key), not its grants.
    ['a bad role name', "roles:\n    'a b': { read: ['*'] }\n", ":5:5: auth.roles.a b: role names are"],
  ])('reports %s', (_what, body, expected) => {
    const { message, file } = problem({ 'apps/x.yaml': `slug: x\nauth_required: false\nauth:\n  ${body}` });
    expect(message.startsWith(`${file}${expected}`), message).toBe(true);
  });
});
