// Policy-layer micro-benchmark: commands per second through the pure rewrite
// functions, no I/O. Run: npm run bench:policy. Prints one line per case; numbers are this machine's.
import { Long, serialize } from 'bson';
import { lookupCommand } from '../dist/policy/commands.js';
import { rewriteCommand } from '../dist/policy/rewrite.js';
import { rewriteReply } from '../dist/policy/reply.js';
import { decodeDocument, encodeDocument } from '../dist/policy/decode.js';
import { makeScope } from '../dist/policy/scope.js';
import { encodeOpMsg } from '../dist/wire/opmsg.js';

const scope = makeScope('task_manager', 'mdb_runtime', 'app_id');
const seconds = Number(process.env.BENCH_SECONDS ?? 2);

/** Runs `fn` repeatedly for `seconds` after a warm-up; returns operations per second. */
function measure(fn) {
  const warm = Date.now() + 300;
  while (Date.now() < warm) fn();
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(Math.round(seconds * 1e9));
  let now = start;
  while (now < end) {
    for (let i = 0; i < 50; i++) fn();
    n += 50;
    now = process.hrtime.bigint();
  }
  return n / (Number(now - start) / 1e9);
}

/** The full request path of the policy layer: decode the body, rewrite, encode the message. */
function requestPath(body, sequences = []) {
  const bytes = Buffer.from(serialize(body));
  const name = Object.keys(body)[0];
  const spec = lookupCommand(name);
  return () => {
    const cmd = decodeDocument(bytes);
    const out = rewriteCommand(scope, spec, name, cmd, sequences);
    return encodeOpMsg(1, 0, 0, encodeDocument(out.body), out.sequences);
  };
}

const docs = Array.from({ length: 1000 }, (_, i) => Buffer.from(serialize({ _id: i, title: `task ${i}`, done: i % 2 === 0, tags: ['a', 'b'], at: new Date(0) })));
const batch = Array.from({ length: 101 }, (_, i) => ({ _id: i, title: `task ${i}`, done: false, app_id: 'task_manager' }));
const findReply = Buffer.from(serialize({ cursor: { firstBatch: batch, id: Long.fromNumber(12345), ns: 'mdb_runtime.task_manager_tasks' }, ok: 1 }));

const cases = [
  ['find (decode + rewrite + encode)', requestPath({ find: 'tasks', filter: { done: false, owner: 'x' }, sort: { at: -1 }, limit: 20, $db: 'app', lsid: { id: new (await import('bson')).UUID() } })],
  ['insert of 1000 documents, kind-1 (stamp at the byte level)', requestPath({ insert: 'tasks', ordered: true, $db: 'app' }, [{ identifier: 'documents', documents: docs }])],
  [
    'aggregate with $lookup',
    requestPath({
      aggregate: 'tasks',
      pipeline: [
        { $match: { done: false } },
        { $lookup: { from: 'users', localField: 'owner', foreignField: '_id', as: 'owner' } },
        { $group: { _id: '$owner', n: { $sum: 1 } } },
        { $sort: { n: -1 } },
      ],
      cursor: {},
      $db: 'app',
    }),
  ],
  ['find reply of 101 documents (ns + strip tag, byte level)', () => rewriteReply(scope, { kind: 'cursor', view: { kind: 'documents', appDb: 'app' }, collections: ['tasks'] }, findReply)],
];

console.log(`policy layer, ${seconds}s per case (node ${process.version})`);
for (const [name, fn] of cases) {
  const ops = measure(fn);
  console.log(`${name.padEnd(62)} ${Math.round(ops).toLocaleString('en-US').padStart(10)} ops/s  ${(1e6 / ops).toFixed(1).padStart(8)} µs/op`);
}
