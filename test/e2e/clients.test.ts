import fs from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { MongoClient } from 'mongodb';
import { connect, runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import {
  expectNothingUnderLogicalNames,
  physicalCollectionsOf,
  physicalName,
  readPhysical,
  sandboxOf,
  type Sandbox,
} from '../helpers/physical.js';
import { WireRelay } from '../../src/testing/relay.js';
import { runNodeWorkloadAt, WORKLOAD_BATCH_SIZE, WORKLOAD_DOCS, type WorkloadSummary } from './workloads/workload.js';
import {
  expectedWorkloadSummary,
  runMongoshWorkload,
  runPythonWorkload,
  scratchHome,
  uriWithDatabase,
} from './workloads/run.js';

/**
 * Real clients (Node driver, PyMongo, mongosh) run the same workload through the proxy, as the
 * playground app, and directly against a fresh database of the upstream; their reports must be equal
 * to each other and to the workload's definition (the transparency test). A wire tap
 * between each client and the proxy proves how the client spoke (kind-1 inserts, getMore), and the
 * upstream is read directly afterwards: the app's data is in its physical collections, tagged, and
 * nothing is stored under the names the app used.
 */

let direct: MongoClient;
let home: string;
const databases: string[] = [];

/** One run's proxy (with its own physical database, so the app's sandbox starts empty) and tap. */
interface ProxyRun {
  proxy: TestProxy;
  tap: WireRelay;
  sandbox: Sandbox;
}
let current: ProxyRun | undefined;

beforeAll(async () => {
  direct = await connect(inject('upstreamUri'));
  home = scratchHome();
});

afterEach(async () => {
  await current?.tap.close();
  await current?.proxy.stop();
  current = undefined;
});

afterAll(async () => {
  for (const db of databases) await direct?.db(db).dropDatabase().catch(() => undefined);
  await direct?.close();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

/**
 * A fresh run: a proxy whose shared physical database is new (a fresh sandbox for the playground app,
 * as the direct run gets a fresh database), a tap in front of it, the logical database the client
 * names through the proxy, and the database the direct run uses.
 */
async function freshRun(client: string): Promise<ProxyRun & { viaProxy: string; viaUpstream: string }> {
  const physical = uniqueDb(`e2e_${client}_physical`);
  const viaProxy = uniqueDb(`e2e_${client}_proxy`);
  const viaUpstream = uniqueDb(`e2e_${client}_direct`);
  databases.push(physical, viaProxy, viaUpstream);
  const proxy = await startTestProxy({ runtimeYaml: runtimeYamlWithDatabase(physical) });
  const tap = await WireRelay.start({ port: proxy.port });
  current = { proxy, tap, sandbox: sandboxOf(proxy, 'playground') };
  expect(current.sandbox.database).toBe(physical);
  return { ...current, viaProxy, viaUpstream };
}

/** The proxy, reached through the tap, as the playground app (selected by appName). */
function proxyUri(tap: WireRelay, db = ''): string {
  return `mongodb://127.0.0.1:${tap.port}/${db}?appName=playground`;
}

/**
 * Checks the run's reports and what the clients left behind, and that the client really used kind-1
 * document sequences for insert_many and getMore (batchSize 7) for the big find.
 */
async function checkRun(
  run: ProxyRun & { viaProxy: string; viaUpstream: string },
  throughProxy: WorkloadSummary,
  directly: WorkloadSummary,
): Promise<void> {
  const { tap, sandbox, viaProxy, viaUpstream } = run;
  const expected = expectedWorkloadSummary();
  expect(directly).toEqual(expected);
  expect(throughProxy).toEqual(directly);

  // What is in the databases afterwards (read directly from the upstream, not through the proxy).
  // Direct run: the workload's database holds its log, untagged.
  const leftDirectly = (await direct.db(viaUpstream).listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name);
  expect(leftDirectly, `collections left in ${viaUpstream}`).toEqual(['log']);
  expect(await direct.db(viaUpstream).collection('log').find({}, { projection: { _id: 0 } }).toArray()).toEqual([
    { step: 'start', client: 'workload' },
  ]);
  // Proxy run: the same, in the app's physical collections, every document tagged as the app ...
  expect(await physicalCollectionsOf(direct, sandbox)).toEqual(['log']);
  expect(await readPhysical(direct, sandbox, 'log', { withoutId: true })).toEqual([{ step: 'start', client: 'workload' }]);
  // ... and nothing at all under the names the client used.
  await expectNothingUnderLogicalNames(direct, sandbox, viaProxy, ['items', 'log']);
  const physicalNames = (await direct.db(sandbox.database).listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name);
  expect(physicalNames, `collections in ${sandbox.database}`).toEqual([physicalName(sandbox.app, 'log')]);

  // How the client spoke to the proxy.
  const inserts = tap.commands('insert', { db: viaProxy, collection: 'items' });
  expect(inserts).toHaveLength(1);
  expect(inserts[0]!.sequences).toEqual([{ identifier: 'documents', count: WORKLOAD_DOCS }]);
  expect(inserts[0]!.body.documents).toBeUndefined();
  const getMores = tap.commands('getMore', { db: viaProxy, collection: 'items' });
  const bigFindGetMores = getMores.filter((m) => Number(m.body.batchSize) === WORKLOAD_BATCH_SIZE);
  // 500 documents, 7 per batch: the find's first batch plus 71 getMores.
  expect(bigFindGetMores).toHaveLength(Math.ceil(WORKLOAD_DOCS / WORKLOAD_BATCH_SIZE) - 1);
  // Only OP_MSG (and OP_QUERY, which drivers may use for the first hello): nothing compressed.
  expect(tap.messages.filter((m) => m.opCode !== 2013 && m.opCode !== 2004)).toEqual([]);
  // The client named the playground app in its handshake.
  const appNames = tap.messages
    .filter((m) => ['hello', 'isMaster', 'ismaster'].includes(m.command))
    .map((m) => (m.body.client as { application?: { name?: string } } | undefined)?.application?.name);
  expect(appNames).toContain('playground');
}

describe('real clients through the proxy give the same results as directly against the upstream', () => {
  it('Node driver', async () => {
    const run = await freshRun('node');
    const [throughProxy, directly] = await Promise.all([
      runNodeWorkloadAt(proxyUri(run.tap), run.viaProxy),
      runNodeWorkloadAt(inject('upstreamUri'), run.viaUpstream),
    ]);
    await checkRun(run, throughProxy, directly);
  });

  it('PyMongo', async () => {
    const python = inject('pythonPath');
    const run = await freshRun('py');
    const [throughProxy, directly] = await Promise.all([
      runPythonWorkload(python, proxyUri(run.tap), run.viaProxy),
      runPythonWorkload(python, inject('upstreamUri'), run.viaUpstream),
    ]);
    await checkRun(run, throughProxy, directly);
  });

  it('mongosh', async () => {
    const run = await freshRun('mongosh');
    const [throughProxy, directly] = await Promise.all([
      runMongoshWorkload(proxyUri(run.tap, run.viaProxy), home),
      runMongoshWorkload(uriWithDatabase(inject('upstreamUri'), run.viaUpstream), home),
    ]);
    await checkRun(run, throughProxy, directly);
  });
});
