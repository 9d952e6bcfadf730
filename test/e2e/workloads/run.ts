import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Document } from 'bson';
import { WORKLOAD_DOCS, workloadDoc, type WorkloadSummary } from './workload.js';

/**
 * Runs the client workloads as child processes (the proxy runs inside the test process, so a child
 * must never be waited for synchronously) and computes what every workload must report.
 */

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../../..');
const MARKER = 'WORKLOAD_RESULT ';

function run(file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMS: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, timeout: timeoutMS, maxBuffer: 32 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`${path.basename(file)} ${args.join(' ')} failed: ${err.message}\nstdout:\n${stdout.slice(-3000)}\nstderr:\n${stderr.slice(-3000)}`));
        return;
      }
      resolve(stdout);
    });
  });
}

function parseSummary(stdout: string, who: string): WorkloadSummary {
  const line = stdout.split('\n').find((l) => l.startsWith(MARKER));
  if (!line) throw new Error(`${who} printed no ${MARKER.trim()} line:\n${stdout.slice(-3000)}`);
  return JSON.parse(line.slice(MARKER.length)) as WorkloadSummary;
}

/** Runs workload.py with the PyMongo virtual environment's python. */
export async function runPythonWorkload(python: string, uri: string, db: string): Promise<WorkloadSummary> {
  const stdout = await run(python, [path.join(HERE, 'workload.py'), uri, db], { ...process.env, PYTHONUNBUFFERED: '1' }, 45_000);
  return parseSummary(stdout, 'workload.py');
}

/**
 * Runs workload.mongosh.js with the mongosh from npm. `uri` must name the workload's database in its
 * path (see uriWithDatabase). HOME points at a scratch directory so the shell's logs and config stay
 * out of the user's home; telemetry is off.
 */
export async function runMongoshWorkload(uri: string, home: string): Promise<WorkloadSummary> {
  const mongosh = path.join(ROOT, 'node_modules/.bin/mongosh');
  const stdout = await run(
    mongosh,
    [uri, '--quiet', '--norc', '--file', path.join(HERE, 'workload.mongosh.js')],
    { ...process.env, HOME: home, DO_NOT_TRACK: '1', MONGOSH_NO_TELEMETRY: '1' },
    45_000,
  );
  return parseSummary(stdout, 'mongosh');
}

/** A scratch HOME for mongosh; remove with fs.rmSync when done. */
export function scratchHome(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-mongosh-home-'));
}

/**
 * `uri` with its database path set to `db` (mongosh takes the database from there). Credentials
 * without an explicit authSource keep authenticating against the original path database.
 */
export function uriWithDatabase(uri: string, db: string): string {
  const q = uri.indexOf('?');
  const base = q < 0 ? uri : uri.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : uri.slice(q + 1));
  const hostsStart = base.indexOf('://') + 3;
  const slash = base.indexOf('/', hostsStart);
  const authority = slash < 0 ? base : base.slice(0, slash);
  const originalDb = slash < 0 ? '' : decodeURIComponent(base.slice(slash + 1));
  if (authority.slice(hostsStart).includes('@') && !params.has('authSource')) params.set('authSource', originalDb || 'admin');
  const query = params.toString();
  return `${authority}/${encodeURIComponent(db)}${query ? `?${query}` : ''}`;
}

/**
 * What every workload must report, computed from the workload's definition (not from any server), so
 * that "proxy equals direct" cannot pass with both sides equally wrong.
 */
export function expectedWorkloadSummary(): WorkloadSummary {
  const docs = Array.from({ length: WORKLOAD_DOCS }, (_, i) => workloadDoc(i));
  const afterUpdate = docs.map((d) => (d.group === 1 ? { ...d, flag: true, value: (d.value as number) + 1000 } : d));
  const afterDelete = afterUpdate.filter((d) => d.i !== 0);
  const finalDocs = afterDelete.map((d) => (d.i === 1 ? { ...d, status: 'done', value: (d.value as number) + 1 } : d));
  const totals = new Map<number, number>();
  for (const d of finalDocs) {
    if ((d.i as number) >= 10) totals.set(d.group as number, (totals.get(d.group as number) ?? 0) + (d.value as number));
  }
  const aggregate: Document[] = [...totals.entries()].sort(([a], [b]) => a - b).map(([id, total]) => ({ _id: id, total }));
  const counts = new Map<string, number>();
  for (const d of finalDocs) if (d.flag !== true) counts.set(d.tag as string, (counts.get(d.tag as string) ?? 0) + 1);
  const aggregateCounts: Document[] = [...counts.entries()].sort(([a], [b]) => (a < b ? 1 : -1)).map(([id, n]) => ({ _id: id, n }));
  return {
    ping: 1,
    inserted: WORKLOAD_DOCS,
    found: docs,
    updateMany: { matched: WORKLOAD_DOCS / 5, modified: WORKLOAD_DOCS / 5 },
    deleteOne: { deleted: 1 },
    findOneAndUpdate: finalDocs.find((d) => d.i === 1),
    countAll: WORKLOAD_DOCS - 1,
    countFlagged: WORKLOAD_DOCS / 5,
    countRange: 100,
    distinctTags: ['t0', 't1', 't2'],
    distinctGroupsFlagged: [1],
    aggregate,
    aggregateCounts,
    createIndex: 'tag_i',
    indexes: [
      { name: '_id_', key: { _id: 1 }, unique: false },
      { name: 'tag_i', key: { tag: 1, i: -1 }, unique: false },
    ],
    collections: ['items', 'log'],
    finalDocs,
    collectionsAfterDrop: ['log'],
    countAfterDrop: 0,
  };
}
