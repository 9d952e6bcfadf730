import net from 'node:net';
import type { AppRegistry } from '../apps/registry.js';
import type { ProxyContext } from './context.js';
import { ClientConnection } from './client-connection.js';

/** The listening socket and the set of live client connections. */
export class ProxyServer {
  private readonly server: net.Server;
  private readonly connections = new Set<ClientConnection>();
  private nextConnectionId = 1;

  constructor(private readonly ctx: ProxyContext) {
    this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
    // A failure to listen is reported by listen()'s rejection (and by the CLI, once); log only errors
    // of a listener that is up.
    this.server.on('error', (err) => {
      if (this.server.listening) ctx.logger.error({ err }, 'listener error');
    });
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** After a manifest reload: connections whose app was removed start closing (ClientConnection.appsChanged). */
  appsChanged(registry: AppRegistry): void {
    for (const c of this.connections) c.appsChanged(registry);
  }

  listen(host: string, port: number): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen({ host, port }, () => {
        this.server.off('error', onError);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  /** Stops accepting, lets each connection finish its request in progress, then closes them. */
  async shutdown(graceMS: number): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const drained = Promise.all([...this.connections].map((c) => c.drain()));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMS)));
    const finished = await Promise.race([drained.then(() => true), timeout.then(() => false)]);
    clearTimeout(timer);
    if (!finished && this.connections.size > 0) {
      this.ctx.logger.warn(
        { connections: this.connections.size, grace_ms: graceMS },
        'shutdown grace period over: closing connections whose requests have not finished',
      );
    }
    for (const c of this.connections) c.close('shutdown');
    await stopped;
  }

  private accept(socket: net.Socket): void {
    const id = this.nextConnectionId++;
    const conn = new ClientConnection(socket, this.ctx, id);
    this.connections.add(conn);
    void conn.done.then(() => this.connections.delete(conn));
  }
}
