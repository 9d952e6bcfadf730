// A plain TCP relay: accept, connect to the target, pass bytes both ways. No framing, no parsing: the
// floor for any proxy on this machine (DESIGN.md section 5, issue 6 item 1).
//
// In-process:    const relay = await startRelay({ target: '127.0.0.1:27017' }); ... relay.port ...
// Child process: node bench/lib/relay.mjs --target 127.0.0.1:27017 [--host 127.0.0.1] [--port 0]
//                prints one JSON line {"port":N,"pid":P} once listening; SIGTERM stops it.
import net from 'node:net';
import { fileURLToPath } from 'node:url';

/** Starts the relay; `target` is "host:port". */
export async function startRelay({ target, host = '127.0.0.1', port = 0 }) {
  const i = target.lastIndexOf(':');
  const targetHost = target.slice(0, i);
  const targetPort = Number(target.slice(i + 1));
  const sockets = new Set();
  const track = (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: targetHost, port: targetPort });
    track(client);
    track(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    const both = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', both);
    upstream.on('error', both);
    client.on('close', both);
    upstream.on('close', both);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, resolve);
  });
  const address = server.address();
  return {
    host,
    port: address.port,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : fallback;
  };
  const target = arg('--target');
  if (!target) {
    process.stderr.write('usage: node bench/lib/relay.mjs --target host:port [--host 127.0.0.1] [--port 0]\n');
    process.exit(2);
  }
  const relay = await startRelay({ target, host: arg('--host', '127.0.0.1'), port: Number(arg('--port', '0')) });
  process.stdout.write(`${JSON.stringify({ port: relay.port, pid: process.pid })}\n`);
  const stop = () => relay.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
