// Raw wire-protocol connections for the scale benchmark (bench/scale.mjs): the tests' RawClient
// (src/testing/wire-client.ts, from the build: OP_MSG over a plain socket, BSON from the `bson`
// package). Each does what a driver's connection does when it opens (hello with client metadata, then
// SASL PLAIN with the app's JWT on $external, one step) at a tiny fraction of a driver's memory, so that
// one load process can hold thousands of connections.
//
// As a forked child (`fork('bench/lib/raw-client.mjs')`) it serves the benchmark over IPC:
//   {type:'open', host, port, slug, token, count, inFlight}  → opens and holds `count` authenticated
//       connections (`inFlight` at a time) → {type:'opened', opened, failed, ms, first_error}
//   {type:'ping', sample}   → a ping on `sample` of the held connections (all when 0) → {type:'pinged', ok, failed, first_error}
//   {type:'churn', host, port, slug, token, inFlight, warmupMS, durationMS} → opens, authenticates and
//       closes connections continuously, `inFlight` at a time; counts those completed in the window
//       → {type:'churned', completed, failed, window_ms, first_error, latency: {p50_us, p99_us}}
//   {type:'close'}          → closes every held connection → {type:'closed'}
import { Binary } from 'bson';
import { RawClient } from '../../dist/testing/wire-client.js';
import { isMain } from './processes.mjs';

const CLIENT_METADATA = {
  driver: { name: 'mdb-runtime-bench-raw', version: '1.0' },
  os: { type: process.platform, architecture: process.arch },
  platform: `Node.js ${process.version}`,
};

/**
 * Opens a connection as a driver does: hello (with client metadata), then saslStart PLAIN on $external
 * with "\0<slug>\0<token>" (done in one step). Resolves with the connection; rejects (and closes it) on
 * any failure.
 */
export async function openAuthenticated({ host = '127.0.0.1', port, slug, token }) {
  const conn = await RawClient.connect(port, host);
  try {
    const hello = await conn.command({ hello: 1, helloOk: true, client: CLIENT_METADATA, $db: 'admin' });
    if (hello.ok !== 1) throw new Error(`hello failed: ${hello.errmsg}`);
    const sasl = await conn.command({
      saslStart: 1,
      mechanism: 'PLAIN',
      payload: new Binary(Buffer.from(`\0${slug}\0${token}`)),
      autoAuthorize: 1,
      $db: '$external',
    });
    if (sasl.ok !== 1 || sasl.done !== true) throw new Error(`authentication failed: ${sasl.errmsg ?? JSON.stringify(sasl)}`);
    return conn;
  } catch (err) {
    conn.destroy();
    throw err;
  }
}

/** Runs `task(i)` for i in [0, count) with at most `inFlight` at a time. */
async function pooled(count, inFlight, task) {
  let next = 0;
  const lane = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(inFlight, count)) }, lane));
}

function percentile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

// ---- The forked child.
async function serveParent() {
  const held = [];
  const reply = (m) => process.send(m);
  process.on('message', async (m) => {
    try {
      if (m.type === 'open') {
        let failed = 0;
        let firstError;
        const t0 = performance.now();
        await pooled(m.count, m.inFlight ?? 64, async () => {
          try {
            held.push(await openAuthenticated(m));
          } catch (err) {
            failed++;
            firstError ??= err.message;
          }
        });
        reply({ type: 'opened', opened: held.length, failed, ms: performance.now() - t0, first_error: firstError });
      } else if (m.type === 'ping') {
        const targets = m.sample > 0 && m.sample < held.length ? held.filter((_, i) => i % Math.ceil(held.length / m.sample) === 0) : held;
        let ok = 0;
        let failed = 0;
        let firstError;
        await pooled(targets.length, 256, async (i) => {
          try {
            const r = await targets[i].command({ ping: 1, $db: 'admin' });
            if (r.ok === 1) ok++;
            else throw new Error(r.errmsg);
          } catch (err) {
            failed++;
            firstError ??= err.message;
          }
        });
        reply({ type: 'pinged', ok, failed, first_error: firstError });
      } else if (m.type === 'churn') {
        let measuring = false;
        let stop = false;
        let completed = 0;
        let failed = 0;
        let firstError;
        const latencies = [];
        const lane = async () => {
          while (!stop) {
            const t0 = performance.now();
            try {
              const c = await openAuthenticated(m);
              c.destroy();
              if (measuring) {
                completed++;
                latencies.push(performance.now() - t0);
              }
            } catch (err) {
              if (measuring) failed++;
              firstError ??= err.message;
            }
          }
        };
        const lanes = Array.from({ length: m.inFlight }, lane);
        await new Promise((r) => setTimeout(r, m.warmupMS));
        measuring = true;
        const w0 = performance.now();
        await new Promise((r) => setTimeout(r, m.durationMS));
        measuring = false;
        const windowMS = performance.now() - w0;
        stop = true;
        await Promise.all(lanes);
        latencies.sort((a, b) => a - b);
        reply({
          type: 'churned',
          completed,
          failed,
          window_ms: windowMS,
          first_error: firstError,
          latency: { p50_us: Math.round(percentile(latencies, 0.5) * 1000), p99_us: Math.round(percentile(latencies, 0.99) * 1000) },
        });
      } else if (m.type === 'close') {
        for (const c of held.splice(0)) c.destroy();
        reply({ type: 'closed' });
      }
    } catch (err) {
      reply({ type: 'error', message: err.message });
    }
  });
  reply({ type: 'ready' });
}

if (process.send && isMain(import.meta.url)) void serveParent();
