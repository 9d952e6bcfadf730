// One load-generating process (forked by bench/lib/load.mjs): a real Node driver MongoClient with
// `connections` pooled connections, and as many loops each running one operation at a time. Driven by
// IPC messages: init → ready; go (warm-up: run, record nothing); measure (start recording);
// stop (stop recording, finish the operations in flight, send the result); exit.
// Progressive workloads (a scan) also report units of work as they go (documents read): those that
// arrive inside the measured window are counted, whether or not their operation completes in it.
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
let units = 0;
let warmupOps = 0;
let firstError;
/** Operations per second for each loop (open loop at a fixed rate); 0: as fast as replies come. */
let loopRate = 0;
let measureStart = 0;
let measureEnd = 0;
const loops = [];
/** How long `exit` lets operations in flight finish (init's exitGraceMS). */
let exitGraceMS = 3000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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
        exitGraceMS = m.exitGraceMS ?? exitGraceMS;
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
        op = workload.op(coll, m.options ?? {}, (n) => {
          if (state === 'measure') units += n;
        });
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
        units = 0;
        measureStart = performance.now();
        state = 'measure';
        break;
      case 'stop':
        measureEnd = performance.now();
        state = 'stopped';
        // The result goes at once: what completes after the window is not counted anyway, and on a
        // slow upstream one operation in flight can take minutes (256 concurrent scans on FerretDB).
        process.send({
          type: 'result',
          ops,
          errors,
          units,
          warmupOps,
          firstError,
          windowMS: measureEnd - measureStart,
          histogram: hist.toJSON(),
        });
        break;
      case 'exit':
        // Let the operations in flight finish (so that the next run does not meet their tail on the
        // server), for a few seconds at most; closing the client then cuts the rest off.
        await Promise.race([Promise.all(loops), sleep(exitGraceMS)]);
        await Promise.race([client?.close().catch(() => undefined), sleep(1000)]);
        process.exit(0);
    }
  } catch (err) {
    process.send({ type: 'error', message: err instanceof Error ? err.stack ?? err.message : String(err) });
  }
});
process.on('disconnect', () => process.exit(0));
