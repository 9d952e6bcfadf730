// One load-generating process (forked by bench/lib/load.mjs): a real Node driver MongoClient with
// `connections` pooled connections, and as many loops each running one operation at a time. Driven by
// IPC messages: init → ready; go (warm-up: run, record nothing); measure (start recording);
// stop (stop recording, finish the operations in flight, send the result); exit.
import { MongoClient } from 'mongodb';
import { LatencyHistogram } from './stats.mjs';
import { WORKLOADS } from './workloads.mjs';

let client;
let op;
let connections = 1;
let state = 'idle';
let hist = new LatencyHistogram();
let ops = 0;
let errors = 0;
let warmupOps = 0;
let firstError;
/** Operations per second for each loop (open loop at a fixed rate); 0: as fast as replies come. */
let loopRate = 0;
let measureStart = 0;
let measureEnd = 0;
const loops = [];

async function loop(index) {
  const interval = loopRate > 0 ? 1000 / loopRate : 0;
  // Loops start spread over one interval so that a fixed rate does not arrive in bursts.
  let next = performance.now() + (interval * index) / connections;
  while (state !== 'stopped') {
    if (interval > 0) {
      const wait = next - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      next = Math.max(next + interval, performance.now() - interval); // behind: catch up by one at most
    }
    const t0 = performance.now();
    try {
      await op();
      if (state === 'measure') {
        hist.record((performance.now() - t0) * 1000);
        ops++;
      } else warmupOps++;
    } catch (err) {
      if (state === 'measure') errors++;
      firstError ??= err instanceof Error ? err.message : String(err);
      // An error storm (the target refusing everything) must not spin the CPU the target needs.
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

process.on('message', async (m) => {
  try {
    switch (m.type) {
      case 'init': {
        connections = m.connections;
        loopRate = m.rate > 0 ? m.rate / connections : 0;
        const workload = WORKLOADS[m.workload];
        if (!workload) throw new Error(`unknown workload ${m.workload}`);
        client = new MongoClient(m.uri, {
          maxPoolSize: connections,
          minPoolSize: connections,
          serverSelectionTimeoutMS: 15_000,
          ...(m.clientOptions ?? {}),
        });
        await client.connect();
        const coll = client.db(m.db).collection(m.collection ?? workload.collection);
        op = workload.op(coll, m.options ?? {});
        process.send({ type: 'ready' });
        break;
      }
      case 'go':
        state = 'warmup';
        for (let i = 0; i < connections; i++) loops.push(loop(i));
        break;
      case 'measure':
        hist = new LatencyHistogram();
        ops = 0;
        errors = 0;
        measureStart = performance.now();
        state = 'measure';
        break;
      case 'stop':
        measureEnd = performance.now();
        state = 'stopped';
        await Promise.all(loops);
        process.send({
          type: 'result',
          ops,
          errors,
          warmupOps,
          firstError,
          windowMS: measureEnd - measureStart,
          histogram: hist.toJSON(),
        });
        break;
      case 'exit':
        await client?.close().catch(() => undefined);
        process.exit(0);
    }
  } catch (err) {
    process.send({ type: 'error', message: err instanceof Error ? err.stack ?? err.message : String(err) });
  }
});
process.on('disconnect', () => process.exit(0));
