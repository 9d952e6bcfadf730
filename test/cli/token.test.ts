import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient } from 'mongodb';
import { decodeProtectedHeader, jwtVerify, importSPKI } from 'jose';
import { startTestProxy, uniqueDb } from '../helpers/proxy.js';
import { keyPair, type TestKeyPair } from '../helpers/apps.js';
import { CliProcess } from './cli-process.js';
import { assertBuilt, tempConfig } from '../../src/testing/processes.js';

/** `mdb-runtime token`, as a user runs it: the built CLI as a child process. */

const SECRET = 'cli-token-secret-'.padEnd(40, 'z');
const TASKS =
  "slug: tasks\nauth:\n  jwt:\n    secret_env: CLI_TASKS_SECRET\n  roles:\n    reader: { read: ['*'] }\n    editor: { read: ['*'], write: ['*'] }\n  default_role: editor\n";

let dir: string;
let ec: TestKeyPair;
let stranger: TestKeyPair;

beforeAll(async () => {
  assertBuilt();
  ec = await keyPair('ES256');
  stranger = await keyPair('ES256');
  dir = tempConfig('listen: 127.0.0.1:27555\n', {
    'tasks.yaml': TASKS,
    'signed.yaml': 'slug: signed\nauth:\n  jwt:\n    public_key_file: keys/signed.pem\n',
    'dev.yaml': 'slug: dev\nauth_required: false\n',
  });
  fs.mkdirSync(path.join(dir, 'keys'));
  fs.writeFileSync(path.join(dir, 'keys', 'signed.pem'), ec.spki);
  fs.writeFileSync(path.join(dir, 'keys', 'signed.key'), ec.pkcs8);
  fs.writeFileSync(path.join(dir, 'keys', 'stranger.key'), stranger.pkcs8);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function token(args: string[], env: Record<string, string> = { CLI_TASKS_SECRET: SECRET }) {
  const cli = CliProcess.start(['token', ...args, '--config', dir], env);
  const { code } = await cli.exit();
  return { code, stdout: cli.stdout, stderr: cli.stderr };
}

describe('mdb-runtime token', () => {
  it('mints a compact HS256 token that fits in appName, prints it alone on stdout, and the proxy accepts it', async () => {
    const { code, stdout, stderr } = await token(['tasks', '--ttl', '15m']);
    expect(code, stderr).toBe(0);
    const minted = stdout.trim();
    expect(stdout).toBe(`${minted}\n`);
    expect(decodeProtectedHeader(minted)).toEqual({ alg: 'HS256' });
    const { payload } = await jwtVerify(minted, new TextEncoder().encode(SECRET));
    expect(payload.app).toBe('tasks');
    expect(payload.exp! - Math.floor(Date.now() / 1000)).toBeGreaterThan(14 * 60);
    expect(payload.exp! - Math.floor(Date.now() / 1000)).toBeLessThanOrEqual(15 * 60);
    expect(stderr).toContain(`fits in appName (${Buffer.byteLength(minted)} <= 128 bytes): mongodb://127.0.0.1:27555/?appName=<token>`);
    expect(stderr).not.toContain(minted);

    // The proxy, with the same manifest and secret, accepts it as appName.
    process.env.CLI_TASKS_SECRET = SECRET;
    const proxy = await startTestProxy({ apps: { 'tasks.yaml': TASKS } });
    const client = new MongoClient(`mongodb://127.0.0.1:${proxy.port}/?appName=${minted}`, { serverSelectionTimeoutMS: 10_000 });
    const db = uniqueDb('cli_token');
    try {
      await client.db(db).collection('t').insertOne({ ok: true });
      expect(await client.db(db).collection('t').countDocuments()).toBe(1);
    } finally {
      await client.close();
      await proxy.stop();
      delete process.env.CLI_TASKS_SECRET;
      const direct = new MongoClient(inject('upstreamUri'), { serverSelectionTimeoutMS: 5000 });
      await direct.db(db).dropDatabase().catch(() => undefined);
      await direct.close();
    }
  });

  it('says when a token does not fit in appName and gives the PLAIN connection string', async () => {
    const { code, stdout, stderr } = await token(['tasks', '--sub', 'alice@example.com', '--roles', 'reader,editor', '--ttl', '2h']);
    expect(code, stderr).toBe(0);
    const { payload } = await jwtVerify(stdout.trim(), new TextEncoder().encode(SECRET));
    expect(payload).toMatchObject({ app: 'tasks', sub: 'alice@example.com', roles: ['reader', 'editor'] });
    expect(stderr).toMatch(/does not fit in appName \(\d+ > 128 bytes/);
    expect(stderr).toContain('mongodb://tasks:<token>@127.0.0.1:27555/?authMechanism=PLAIN&authSource=%24external');
  });

  it('signs with --key-file for a public-key app, and refuses a key that is not the app\'s', async () => {
    const ok = await token(['signed', '--key-file', path.join(dir, 'keys', 'signed.key')]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(decodeProtectedHeader(ok.stdout.trim())).toEqual({ alg: 'ES256' });
    expect((await jwtVerify(ok.stdout.trim(), await importSPKI(ec.spki, 'ES256'))).payload.app).toBe('signed');

    const wrong = await token(['signed', '--key-file', path.join(dir, 'keys', 'stranger.key')]);
    expect(wrong.code).toBe(1);
    expect(wrong.stdout).toBe('');
    expect(wrong.stderr).toContain(`the key in ${path.join(dir, 'keys', 'stranger.key')} does not match the keys of app 'signed'`);

    const none = await token(['signed']);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("app 'signed' is verified by public keys (public_key_file keys/signed.pem); pass its private key with --key-file <pem>");
  });

  it.each([
    ['an unknown app', ['nope'], "no app 'nope' in", 'apps: dev, signed, tasks'],
    ['a bad slug', ['Nope!'], "'Nope!' is not an app slug", '^[a-z][a-z0-9_]{0,31}$'],
    ['a bad ttl', ['tasks', '--ttl', '3 weeks'], "--ttl: expected a positive duration such as 3600, 90s, 15m, 8h or 7d, found '3 weeks'", ''],
    ['an undefined role', ['tasks', '--roles', 'admin'], '--roles: admin not defined by', '(roles: reader, editor)'],
    ['an app without keys', ['dev'], "app 'dev' has no auth.jwt key", 'clients select it with appName=dev'],
    ['a missing key file', ['signed', '--key-file', '/nonexistent/key.pem'], '--key-file: cannot read /nonexistent/key.pem: ENOENT', ''],
  ])('exits 1 on %s with an actionable message', async (_what, args, first, second) => {
    const { code, stdout, stderr } = await token(args);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toContain(first);
    expect(stderr).toContain(second);
  });

  it('exits 1 when the secret variable is missing, naming it, the file and the line', async () => {
    const { code, stderr } = await token(['tasks'], {});
    expect(code).toBe(1);
    expect(stderr).toContain(`app 'tasks' cannot sign tokens here: ${path.join(dir, 'apps', 'tasks.yaml')}:4:17: auth.jwt.secret_env: the environment variable CLI_TASKS_SECRET is not set`);
  });

  it('documents its options in --help', async () => {
    const cli = CliProcess.start(['token', '--help']);
    expect((await cli.exit()).code).toBe(0);
    for (const option of ['--sub', '--roles', '--ttl', '--config', '--key-file', 'appName', 'authMechanism=PLAIN']) expect(cli.stdout).toContain(option);
  });
});
