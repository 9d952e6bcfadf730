// The plain TCP relay as a child process: accept, connect to the target, pass bytes both ways, no
// framing, no parsing: the floor for any proxy on this machine (bench/README.md, "End to end").
// It is the tests' WireRelay (src/testing/relay.ts, from the build) started with `record: false`.
//
//   node bench/lib/relay.mjs --target 127.0.0.1:27017 [--host 127.0.0.1] [--port 0]
//   prints one JSON line {"port":N,"pid":P} once listening; SIGTERM stops it.
import { WireRelay } from '../../dist/testing/relay.js';
import { commandLine, isMain, serveAsChild } from './processes.mjs';

if (isMain(import.meta.url)) {
  const { opt } = commandLine();
  const target = opt('--target');
  if (!target) {
    process.stderr.write('usage: node bench/lib/relay.mjs --target host:port [--host 127.0.0.1] [--port 0]\n');
    process.exit(2);
  }
  const i = target.lastIndexOf(':');
  const relay = await WireRelay.start(
    { host: target.slice(0, i), port: Number(target.slice(i + 1)) },
    { record: false, host: opt('--host', '127.0.0.1'), port: Number(opt('--port', '0')) },
  );
  serveAsChild({ port: relay.port, pid: process.pid }, () => relay.close());
}
