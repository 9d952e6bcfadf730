// Loopback ports for tests and benchmarks (see processes.ts for why this is under src/).
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';

/** A port nothing listens on right now (the OS picks it; free again once this returns). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Whether something accepts a TCP connection on the loopback port now. */
function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Resolves once something accepts TCP connections on the port (polls connect with a growing delay, up
 * to `timeoutMS`); rejects at once when `child` exits first.
 */
export async function waitForPort(port: number, timeoutMS = 30_000, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMS;
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    if (child && child.exitCode !== null) throw new Error(`process exited with code ${child.exitCode} before listening`);
    if (await canConnect(port)) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on port ${port} after ${timeoutMS} ms`);
    await new Promise((r) => setTimeout(r, delay));
  }
}
