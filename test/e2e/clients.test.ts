import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { MongoClient } from 'mongodb';
import { connect, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { WireRelay } from '../helpers/relay.js';
import { runNodeWorkloadAt, WORKLOAD_BATCH_SIZE, WORKLOAD_DOCS, type WorkloadSummary } from './workloads/workload.js';
import {
  expectedWorkloadSummary,
  runMongoshWorkload,
  runPythonWorkload,
  scratchHome,
  uriWithDatabase,
} from './workloads/run.js';

/**
 * Real clients (Node driver, PyMongo, mongosh) run the same workload through the proxy and directly
 * against the upstream; their reports must be equal to each other and to the workload's definition.
 * A wire tap between each client and the proxy proves how the client spoke (kind-1 inserts, getMore).
 */

let proxy: TestProxy;
let tap: WireRelay;
let direct: MongoClient;
let home: string;
const databases: string[] = [];

beforeAll(async () => {
  proxy = await startTestProxy();
  tap = await WireRelay.start({ port: proxy.port });
  direct = await connect(inject('upstreamUri'));
  home = scratchHome();
});

afterAll(async () => {
  for (const db of databases) await direct?.db(db).dropDatabase().catch(() => undefined);
  await direct?.close();
  await tap?.close();
  await proxy?.stop();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

/** Two fresh databases: one the client uses through the proxy, one directly on the upstream. */
function freshDatabases(client: string): { viaProxy: string; viaUpstream: string } {
  tap.messages.length = 0;
  const viaProxy = uniqueDb(`e2e_${client}_proxy`);
  const viaUpstream = uniqueDb(`e2e_${client}_direct`);
  databases.push(viaProxy, viaUpstream);
  return { viaProxy, viaUpstream };
}

/** The proxy, reached through the tap, as the playground app (selected by appName). */
function proxyUri(db = ''): string {
  return `mongodb://127.0.0.1:${tap.port}/${db}?appName=playground`;
}

/**
 * Checks the run's reports and what the clients left behind, and that the client really used kind-1
 * document sequences for insert_many and getMore (batchSize 7) for the big find.
 */
async function checkRun(viaProxy: string, viaUpstream: string, throughProxy: WorkloadSummary, directly: WorkloadSummary): Promise<void> {
  const expected = expectedWorkloadSummary();
  expect(directly).toEqual(expected);
  expect(throughProxy).toEqual(directly);

  // What is in the database afterwards (read directly from the upstream, not through the proxy).
  for (const db of [viaProxy, viaUpstream]) {
    const names = (await direct.db(db).listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name);
    expect(names, `collections left in ${db}`).toEqual(['log']);
    expect(await direct.db(db).collection('log').find({}, { projection: { _id: 0 } }).toArray()).toEqual([
      { step: 'start', client: 'workload' },
    ]);
  }

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
    const { viaProxy, viaUpstream } = freshDatabases('node');
    const [throughProxy, directly] = await Promise.all([
      runNodeWorkloadAt(proxyUri(), viaProxy),
      runNodeWorkloadAt(inject('upstreamUri'), viaUpstream),
    ]);
    await checkRun(viaProxy, viaUpstream, throughProxy, directly);
  });

  it('PyMongo', async () => {
    const python = inject('pythonPath');
    const { viaProxy, viaUpstream } = freshDatabases('py');
    const [throughProxy, directly] = await Promise.all([
      runPythonWorkload(python, proxyUri(), viaProxy),
      runPythonWorkload(python, inject('upstreamUri'), viaUpstream),
    ]);
    await checkRun(viaProxy, viaUpstream, throughProxy, directly);
  });

  it('mongosh', async () => {
    const { viaProxy, viaUpstream } = freshDatabases('mongosh');
    const [throughProxy, directly] = await Promise.all([
      runMongoshWorkload(proxyUri(viaProxy), home),
      runMongoshWorkload(uriWithDatabase(inject('upstreamUri'), viaUpstream), home),
    ]);
    await checkRun(viaProxy, viaUpstream, throughProxy, directly);
  });
});
