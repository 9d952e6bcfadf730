import { Writable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Binary, Double, serialize, type Document } from 'bson';
import { ConnectionAuthenticator, type Identity } from '../../src/session/authentication.js';
import { CommandError } from '../../src/policy/errors.js';
import { createLogger } from '../../src/observability/logger.js';
import type { AppRegistry } from '../../src/apps/registry.js';
import { registryOf, removeConfigDirs, seconds, sign } from '../helpers/apps.js';

/**
 * The per-connection authenticator without sockets: the handshake's appName, SASL PLAIN and
 * MONGODB-OIDC, the pre-auth gate, expiry on a clock the test moves, and what is logged.
 */

const TASKS_SECRET = 't'.repeat(32);
const OTHER_SECRET = 'o'.repeat(32);
const START = Date.UTC(2030, 0, 1);

let apps: AppRegistry;
let clock: number;
let logs: Record<string, unknown>[];
let authenticated: Identity[];

beforeAll(() => {
  apps = registryOf(
    {
      'apps/tasks.yaml':
        "slug: tasks\nauth:\n  jwt:\n    secret_env: TASKS_SECRET\n  roles:\n    reader: { read: ['*'] }\n    editor: { read: ['*'], write: ['*'] }\n  default_role: reader\n",
      'apps/other.yaml': 'slug: other\nauth:\n  jwt:\n    secret_env: OTHER_SECRET\n',
      'apps/dev.yaml': 'slug: dev\nauth_required: false\n',
    },
    { TASKS_SECRET, OTHER_SECRET },
  );
});
afterAll(() => removeConfigDirs());

beforeEach(() => {
  clock = START;
  logs = [];
  authenticated = [];
});

function authenticator(): ConnectionAuthenticator {
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return new ConnectionAuthenticator({
    apps,
    logger: createLogger('info', sink),
    now: () => clock,
    onAuthenticated: (identity) => authenticated.push(identity),
  });
}

const token = (claims: Record<string, unknown>, secret = TASKS_SECRET) => sign({ exp: seconds(START) + 600, ...claims }, 'HS256', secret);
const hello = (appName?: string, extra: Document = {}): Document => ({
  hello: 1,
  ...(appName !== undefined ? { client: { application: { name: appName }, driver: { name: 'test', version: '0' } } } : {}),
  ...extra,
  $db: 'admin',
});
const plain = (user: string, jwt: string, authzid = ''): Document => ({
  saslStart: 1,
  mechanism: 'PLAIN',
  payload: new Binary(Buffer.from(`${authzid}\0${user}\0${jwt}`)),
  autoAuthorize: 1,
  $db: '$external',
});
const oidc = (payload: Document): Document => ({ saslStart: 1, mechanism: 'MONGODB-OIDC', payload: new Binary(serialize(payload)), $db: '$external' });

function refused(fn: () => unknown): CommandError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CommandError);
    return err as CommandError;
  }
  throw new Error('allowed');
}

async function refusedAsync(p: Promise<unknown>): Promise<CommandError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CommandError);
    return err as CommandError;
  }
  throw new Error('allowed');
}

/** The one failed-auth reply: no detail. */
function expectAuthFailed(err: CommandError): void {
  expect({ code: err.code, codeName: err.codeName, message: err.message }).toEqual({ code: 18, codeName: 'AuthenticationFailed', message: 'Authentication failed.' });
}

function warnings(): Record<string, unknown>[] {
  return logs.filter((l) => l.level === 40);
}

describe('before authentication', () => {
  it('allows pre-auth commands and refuses the rest with Unauthorized (13)', () => {
    const auth = authenticator();
    expect(() => auth.check('hello', true)).not.toThrow();
    const err = refused(() => auth.check('find', false));
    expect(err.code).toBe(13);
    // No handshake with an appName: the message says how to pass a token, and why an appName may vanish.
    expect(err.message).toMatch(/^command find requires authentication: this connection presented no token and its handshake carried no appName\. /);
    expect(err.message).toContain('authMechanism=PLAIN');
    expect(err.message).toContain('PyMongo and the Java driver drop a longer appName');
  });

  it('ignores an appName that is neither a token nor a dev app', async () => {
    const auth = authenticator();
    expect(await auth.onHello(hello('mongosh 2.3.1'))).toEqual({});
    expect(await auth.onHello(hello('tasks'))).toEqual({}); // tasks requires a token
    expect(auth.identity).toBeUndefined();
    expect(logs.filter((l) => l.level !== 30)).toEqual([]);
    const err = refused(() => auth.check('find', false));
    expect(err.message).toMatch(/^command find requires authentication: this connection's appName is neither a token nor an app that needs none\. Pass/);
  });

  it('lists PLAIN and MONGODB-OIDC when the client asks saslSupportedMechs', async () => {
    expect(await authenticator().onHello(hello(undefined, { saslSupportedMechs: '$external.tasks' }))).toEqual({ saslSupportedMechs: ['PLAIN', 'MONGODB-OIDC'] });
  });
});

describe('appName', () => {
  it('authenticates with a token as appName', async () => {
    const auth = authenticator();
    await auth.onHello(hello(await token({ app: 'tasks', sub: 'al', roles: ['editor'] })));
    expect(auth.identity).toMatchObject({ sub: 'al', transport: 'appName', expiresAt: (seconds(START) + 600) * 1000 });
    expect(auth.identity!.app.slug).toBe('tasks');
    expect(auth.identity!.roles.names).toEqual(['editor']);
    expect(authenticated).toHaveLength(1);
    expect(() => auth.check('find', false)).not.toThrow();
  });

  it('selects an auth_required: false app by its slug, with its default role', async () => {
    const auth = authenticator();
    await auth.onHello(hello('dev'));
    expect(auth.identity).toMatchObject({ transport: 'dev', sub: undefined, expiresAt: undefined });
    expect(auth.identity!.roles.unrestricted).toBe(true);
  });

  it('reads only the first client metadata', async () => {
    const auth = authenticator();
    await auth.onHello(hello('mongosh'));
    await auth.onHello(hello('dev'));
    expect(auth.identity).toBeUndefined();
  });

  it('a token cut at 128 bytes fails every later command with a clear AuthenticationFailed, never half-works', async () => {
    const long = await token({ app: 'tasks', sub: 'a-rather-long-subject-name@example.com', roles: ['editor'] });
    const cut = long.slice(0, 128);
    const auth = authenticator();
    await auth.onHello(hello(cut));
    expect(auth.identity).toBeUndefined();
    expect(() => auth.check('ping', true)).not.toThrow();
    const err = refused(() => auth.check('find', false));
    expect(err.code).toBe(18);
    expect(err.message).toContain('the token in appName is not valid: it is 128 bytes long, so the driver probably cut it');
    expect(err.message).toContain('authMechanism=PLAIN');
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toMatchObject({ msg: 'authentication failed', mechanism: 'appName' });
    // The cut is inside the payload here, so not even the app claim can be read.
    expect(String(warnings()[0]!.reason)).toMatch(/^malformed token/);
    expect(JSON.stringify(logs)).not.toContain(cut.split('.')[1]!);
  });

  it('a bad shorter token says the token is not valid, and PLAIN afterwards still authenticates', async () => {
    const auth = authenticator();
    await auth.onHello(hello(await token({ app: 'tasks' }, OTHER_SECRET)));
    expect(refused(() => auth.check('find', false)).message).toMatch(/^the token in appName is not valid \(the proxy log says why/);
    await auth.saslStart(plain('tasks', await token({ app: 'tasks' })));
    expect(auth.identity!.transport).toBe('PLAIN');
    expect(() => auth.check('find', false)).not.toThrow();
  });
});

describe('SASL PLAIN', () => {
  it('authenticates with the slug as user name and the token as password', async () => {
    const auth = authenticator();
    const reply = await auth.saslStart(plain('tasks', await token({ app: 'tasks', sub: 'bo' })));
    expect(reply).toEqual({ conversationId: 1, done: true, payload: new Binary(Buffer.alloc(0)), ok: new Double(1) });
    expect(auth.identity).toMatchObject({ sub: 'bo', transport: 'PLAIN' });
    expect(logs.find((l) => l.msg === 'connection authenticated')).toMatchObject({ app_id: 'tasks', transport: 'PLAIN', sub: 'bo', roles: ['reader'] });
  });

  it('accepts an authzid equal to the user name', async () => {
    const auth = authenticator();
    await auth.saslStart(plain('tasks', await token({ app: 'tasks' }), 'tasks'));
    expect(auth.identity?.app.slug).toBe('tasks');
  });

  it.each([
    ["app A's token under app B's name", async () => plain('other', await token({ app: 'tasks' })), /user name 'other' does not match the token's app claim 'tasks'/],
    ['a wrong signature', async () => plain('tasks', await token({ app: 'tasks' }, OTHER_SECRET)), /signature verification failed/],
    ['an authzid naming another app', async () => plain('tasks', await token({ app: 'tasks' }), 'other'), /authzid 'other' differs/],
    ['a payload without two NULs', async () => ({ ...plain('tasks', 'x'), payload: new Binary(Buffer.from('tasks')) }), /malformed PLAIN payload/],
    ['a database other than $external', async () => ({ ...plain('tasks', await token({ app: 'tasks' })), $db: 'admin' }), /must run on \$external/],
    ['a string payload', async () => ({ ...plain('tasks', 'x'), payload: 'abc' }), /payload is not binary/],
    ['SCRAM-SHA-256', async () => ({ ...plain('tasks', 'x'), mechanism: 'SCRAM-SHA-256' }), /mechanism "SCRAM-SHA-256" is not supported; use authMechanism=PLAIN/],
    ['MONGODB-X509', async () => ({ ...plain('tasks', 'x'), mechanism: 'MONGODB-X509' }), /not supported/],
    ['an expired token', async () => plain('tasks', await token({ app: 'tasks', exp: seconds(START) - 60 })), /token expired/],
    ['a role the app does not define', async () => plain('tasks', await token({ app: 'tasks', roles: ['root'] })), /role 'root'/],
  ])('refuses %s with a bare AuthenticationFailed and logs why', async (_what, cmd, reason) => {
    const auth = authenticator();
    const command = await cmd();
    expectAuthFailed(await refusedAsync(auth.saslStart(command)));
    expect(auth.identity).toBeUndefined();
    expect(warnings()).toHaveLength(1);
    expect(String(warnings()[0]!.reason)).toMatch(reason);
    expect(warnings()[0]!.msg).toBe('authentication failed');
  });

  it('never logs the token', async () => {
    const auth = authenticator();
    const bad = await token({ app: 'tasks' }, OTHER_SECRET);
    await refusedAsync(auth.saslStart(plain('tasks', bad)));
    const text = JSON.stringify(logs);
    for (const part of bad.split('.')) expect(text).not.toContain(part);
  });

  it('saslContinue always fails (every conversation ends in saslStart)', () => {
    expectAuthFailed(refused(() => authenticator().saslContinue({ saslContinue: 1, conversationId: 1, payload: new Binary(Buffer.alloc(0)) })));
  });
});

describe('MONGODB-OIDC', () => {
  it('authenticates with the machine flow payload {jwt}', async () => {
    const auth = authenticator();
    expect((await auth.saslStart(oidc({ jwt: await token({ app: 'tasks' }) }))).done).toBe(true);
    expect(auth.identity?.transport).toBe('MONGODB-OIDC');
  });

  it('refuses the human flow (a principal name instead of a jwt)', async () => {
    const auth = authenticator();
    expectAuthFailed(await refusedAsync(auth.saslStart(oidc({ n: 'tasks' }))));
    expect(String(warnings()[0]!.reason)).toMatch(/only the machine flow is supported/);
  });

  it('authenticates in the handshake with speculativeAuthenticate, and ignores a failing one', async () => {
    const auth = authenticator();
    const spec = async (secret: string) => ({
      speculativeAuthenticate: { saslStart: 1, mechanism: 'MONGODB-OIDC', payload: new Binary(serialize({ jwt: await token({ app: 'tasks' }, secret) })), db: '$external' },
    });
    expect(await auth.onHello(hello(undefined, await spec(OTHER_SECRET)))).toEqual({});
    expect(auth.identity).toBeUndefined();
    expect(warnings()[0]).toMatchObject({ msg: 'speculative authentication failed', speculative: true });
    const extra = await auth.onHello(hello(undefined, await spec(TASKS_SECRET)));
    expect(extra.speculativeAuthenticate).toEqual({ conversationId: 1, done: true, payload: new Binary(Buffer.alloc(0)) });
    expect(auth.identity?.transport).toBe('MONGODB-OIDC');
  });
});

describe('expiry and re-authentication', () => {
  it('answers ReauthenticationRequired (391) on an expired MONGODB-OIDC connection, then accepts a new token', async () => {
    const auth = authenticator();
    await auth.saslStart(oidc({ jwt: await token({ app: 'tasks', exp: seconds(START) + 60 }) }));
    clock = START + 60_000 + 30_000; // at exp + the 30 s tolerance: still valid
    expect(() => auth.check('find', false)).not.toThrow();
    clock += 1000;
    const err = refused(() => auth.check('find', false));
    expect([err.code, err.codeName]).toEqual([391, 'ReauthenticationRequired']);
    expect(() => auth.check('saslStart', true)).not.toThrow();
    await auth.saslStart(oidc({ jwt: await token({ app: 'tasks', exp: seconds(clock) + 600 }) }));
    expect(() => auth.check('find', false)).not.toThrow();
    expect(logs.find((l) => l.msg === 'connection re-authenticated')).toMatchObject({ app_id: 'tasks', reauth: true });
  });

  it.each(['PLAIN', 'appName'] as const)('answers AuthenticationFailed "token expired" on an expired %s connection', async (transport) => {
    const auth = authenticator();
    const jwt = await token({ app: 'tasks', exp: seconds(START) + 60 });
    if (transport === 'PLAIN') await auth.saslStart(plain('tasks', jwt));
    else await auth.onHello(hello(jwt));
    clock = START + 3_600_000;
    const err = refused(() => auth.check('insert', false));
    expect(err.code).toBe(18);
    expect(err.message).toMatch(/^token expired at 2030-01-01T00:01:00.000Z; connect again with a new token/);
  });

  it('never lets a connection change app: a token for another app is refused and the identity stays', async () => {
    const auth = authenticator();
    await auth.saslStart(oidc({ jwt: await token({ app: 'tasks' }) }));
    expectAuthFailed(await refusedAsync(auth.saslStart(oidc({ jwt: await token({ app: 'other' }, OTHER_SECRET) }))));
    expect(auth.identity!.app.slug).toBe('tasks');
    expect(String(warnings()[0]!.reason)).toContain("this connection belongs to app 'tasks'");
    expectAuthFailed(await refusedAsync(auth.saslStart(plain('other', await token({ app: 'other' }, OTHER_SECRET)))));
    expect(auth.identity!.app.slug).toBe('tasks');
  });
});
