import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { MongoClient } from 'mongodb';
import { buildFerretDB, startFerretDB, type RunningFerretDB } from '../src/testing/ferretdb.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

declare module 'vitest' {
  export interface ProvidedContext {
    /** The upstream every suite uses: MDB_TEST_UPSTREAM_URI, or the FerretDB started here. */
    upstreamUri: string;
    /** True when the upstream is FerretDB (feature gaps apply: docs/security.md, "Known limits"). */
    upstreamIsFerretDB: boolean;
    /**
     * True when the upstream is a standalone server (FerretDB; a lone mongod): the proxy then presents
     * itself as a standalone and refuses transaction numbers, as mongod does (README, "How an app connects").
     */
    upstreamIsStandalone: boolean;
    /** The FerretDB binary (built even with MDB_TEST_UPSTREAM_URI, for suites needing their own server). */
    ferretdbBinary: string;
    /** The python of the virtual environment holding PyMongo. */
    pythonPath: string;
  }
}

let ferret: RunningFerretDB | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const ferretdbBinary = buildFerretDB();
  const pythonPath = execFileSync('bash', [path.join(ROOT, 'scripts/python-env.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
  let upstreamUri = process.env.MDB_TEST_UPSTREAM_URI;
  if (!upstreamUri) {
    ferret = await startFerretDB(ferretdbBinary);
    upstreamUri = ferret.uri;
  }
  project.provide('upstreamUri', upstreamUri);
  project.provide('upstreamIsFerretDB', ferret !== undefined);
  project.provide('upstreamIsStandalone', await isStandalone(upstreamUri));
  project.provide('ferretdbBinary', ferretdbBinary);
  project.provide('pythonPath', pythonPath);
  return async () => {
    await ferret?.stop();
  };
}

/** Whether the server at `uri` is a standalone (no replica set name, not a mongos). */
async function isStandalone(uri: string): Promise<boolean> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 30_000 });
  try {
    const hello = await client.db('admin').command({ hello: 1 });
    return typeof hello.setName !== 'string' && hello.msg !== 'isdbgrid';
  } finally {
    await client.close();
  }
}
