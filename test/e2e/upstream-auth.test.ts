import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient, MongoServerError } from 'mongodb';
import { startFerretDB, type RunningFerretDB } from '../../src/testing/ferretdb.js';
import { connect, runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { expectNothingUnderLogicalNames, physicalCollectionsOf, readPhysical, sandboxOf } from '../helpers/physical.js';
import { runNodeWorkloadAt } from './workloads/workload.js';
import { expectedWorkloadSummary } from './workloads/run.js';

/**
 * The upstream requires SCRAM-SHA-256 credentials (a FerretDB started with its setup-user flags, or
 * MDB_TEST_UPSTREAM_URI when that URI carries credentials). The proxy's data plane authenticates its
 * own raw upstream connections from the credentials in the upstream URI; clients of the proxy never
 * see or send them.
 */

const USER = 'mdb_proxy';
const PASSWORD = 'S3cret pass/wörd';
const AUTH_DB = 'admin';

/** Splits `scheme://user:pass@rest` (undefined when the URI carries no credentials). */
function splitCredentials(uri: string): { scheme: string; user: string; password: string; rest: string } | undefined {
  const m = /^(mongodb(?:\+srv)?:\/\/)([^@/]+)@(.*)$/.exec(uri);
  if (!m) return undefined;
  const [user, password = ''] = m[2]!.split(':');
  return { scheme: m[1]!, user: user!, password, rest: m[3]! };
}

/** The URI without credentials or auth options: what an anonymous client would use. */
function anonymousUri(uri: string): string {
  const creds = splitCredentials(uri)!;
  const [hostsAndPath, query = ''] = creds.rest.split('?');
  const params = new URLSearchParams(query);
  for (const key of [...params.keys()]) if (/^auth/i.test(key)) params.delete(key);
  const rest = params.size > 0 ? `${hostsAndPath}?${params.toString()}` : hostsAndPath!;
  return `${creds.scheme}${rest}`;
}

let ferret: RunningFerretDB | undefined;
/** The credentialed upstream URI. */
let upstreamUri: string;
let proxy: TestProxy | undefined;
let admin: MongoClient;
const databases: string[] = [];

beforeAll(async () => {
  const shared = inject('upstreamUri');
  if (!inject('upstreamIsFerretDB') && splitCredentials(shared)) {
    upstreamUri = shared;
  } else {
    ferret = await startFerretDB(inject('ferretdbBinary'), { auth: { username: USER, password: PASSWORD, database: AUTH_DB } });
    upstreamUri = ferret.uri;
  }
  admin = await connect(upstreamUri);
});

afterAll(async () => {
  for (const db of databases) await admin?.db(db).dropDatabase().catch(() => undefined);
  await admin?.close();
  await proxy?.stop();
  await ferret?.stop();
});

describe('upstream requiring SCRAM-SHA-256', () => {
  it('refuses a direct connection without credentials', async () => {
    const anonymous = new MongoClient(anonymousUri(upstreamUri), { serverSelectionTimeoutMS: 10_000 });
    const db = uniqueDb('e2e_auth_anon');
    databases.push(db);
    try {
      const write = anonymous.db(db).collection('c').insertOne({ sneaky: true });
      await expect(write).rejects.toBeInstanceOf(MongoServerError);
      const err = (await write.catch((e: unknown) => e)) as MongoServerError;
      expect([13, 18]).toContain(err.code); // Unauthorized / AuthenticationFailed
      await expect(anonymous.db(db).collection('c').find({}).toArray()).rejects.toBeInstanceOf(MongoServerError);
    } finally {
      await anonymous.close();
    }
    // Nothing was written.
    expect(await admin.db(db).collection('c').countDocuments({})).toBe(0);
  });

  it('the proxy authenticates its upstream connections and serves the full workload', async () => {
    // The proxy's own physical database: the upstream may be shared (MDB_TEST_UPSTREAM_URI).
    const physical = uniqueDb('e2e_auth_physical');
    const viaProxy = uniqueDb('e2e_auth_proxy');
    const viaUpstream = uniqueDb('e2e_auth_direct');
    databases.push(physical, viaProxy, viaUpstream);
    proxy = await startTestProxy({ upstreamUri, runtimeYaml: runtimeYamlWithDatabase(physical) });
    const sandbox = sandboxOf(proxy, 'playground');

    // The client of the proxy sends no credentials at all.
    const clientUri = proxy.uri('playground');
    expect(splitCredentials(clientUri)).toBeUndefined();
    const [throughProxy, directly] = await Promise.all([
      runNodeWorkloadAt(clientUri, viaProxy),
      runNodeWorkloadAt(upstreamUri, viaUpstream),
    ]);
    expect(directly).toEqual(expectedWorkloadSummary());
    expect(throughProxy).toEqual(directly);

    // The data plane's own raw connections did the work (the driver only monitors), so they authenticated.
    const pools = [...proxy.runtime.upstream.pools.values()];
    expect(pools.reduce((n, p) => n + p.size, 0)).toBeGreaterThan(0);

    // What the proxy's writes left in the upstream, read with the credentials: the app's log in its
    // physical collection, every document tagged, and nothing under the names the client used.
    expect(await readPhysical(admin, sandbox, 'log', { withoutId: true })).toEqual([{ step: 'start', client: 'workload' }]);
    expect(await physicalCollectionsOf(admin, sandbox)).toEqual(['log']);
    await expectNothingUnderLogicalNames(admin, sandbox, viaProxy, ['items', 'log']);
  });

  it('a wrong upstream password makes proxy startup fail with a clear error', async () => {
    const creds = splitCredentials(upstreamUri)!;
    const wrong = `${creds.scheme}${creds.user}:${encodeURIComponent('not-the-password')}@${creds.rest}`;
    const started = startTestProxy({ upstreamUri: wrong });
    await expect(started).rejects.toThrow(/auth/i);
    const err = (await started.catch((e: unknown) => e)) as Error;
    // The error names the cause and where to fix it, and never echoes the password.
    expect(err.message).toMatch(/Authentication failed/i);
    expect(err.message).toMatch(/upstream/i);
    expect(err.message).not.toContain('not-the-password');
  });
});
