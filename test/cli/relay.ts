import { EventEmitter } from 'node:events';
import net from 'node:net';

interface Pair {
  down: net.Socket;
  up: net.Socket;
  /** True once the downstream side (the proxy) sent bytes containing the watched marker. */
  sawMarker: boolean;
  held: Buffer[];
}

/**
 * A TCP relay in front of the upstream that can hold the upstream's replies: with `hold()`, bytes from
 * the upstream are kept until `release()`. The request has then run upstream but its reply has not reached
 * the proxy, which is exactly "a request in flight". Events: 'held' (pair) when a held reply arrives on a
 * connection that carried the marker given to `watch()`.
 */
export class HoldingRelay extends EventEmitter {
  private readonly pairs = new Set<Pair>();
  private holding = false;
  private marker: Buffer | undefined;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {
    super();
  }

  static async start(target: { host: string; port: number }): Promise<HoldingRelay> {
    let relay!: HoldingRelay;
    const server = net.createServer((down) => relay.accept(down, target));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    relay = new HoldingRelay(server, (server.address() as net.AddressInfo).port);
    return relay;
  }

  /** The upstream URI rewritten to go through the relay (directConnection, so discovery stays on it). */
  static uriThrough(upstreamUri: string, port: number): string {
    const m = /^mongodb:\/\/((?:[^@/]*@)?)([^/?]+)(\/[^?]*)?(\?.*)?$/.exec(upstreamUri);
    if (!m) throw new Error(`cannot relay ${upstreamUri} (only mongodb:// URIs)`);
    const query = m[4] ? `${m[4]}&directConnection=true` : '?directConnection=true';
    return `mongodb://${m[1]}127.0.0.1:${port}${m[3] ?? '/'}${query}`;
  }

  /** The first host of a mongodb:// URI (what the relay forwards to). */
  static firstHost(upstreamUri: string): { host: string; port: number } {
    const m = /^mongodb:\/\/(?:[^@/]*@)?([^/?,]+)/.exec(upstreamUri);
    if (!m) throw new Error(`cannot relay ${upstreamUri} (only mongodb:// URIs)`);
    const [host = '127.0.0.1', port = '27017'] = m[1]!.split(':');
    return { host, port: Number(port) };
  }

  get openConnections(): number {
    return this.pairs.size;
  }

  /** Remember connections whose requests contain `marker` (e.g. a unique _id). */
  watch(marker: string): void {
    this.marker = Buffer.from(marker);
  }

  hold(): void {
    this.holding = true;
  }

  release(): void {
    this.holding = false;
    for (const p of this.pairs) {
      for (const chunk of p.held.splice(0)) p.down.write(chunk);
    }
  }

  /** Resolves once a reply to a request carrying the watched marker is being held. */
  heldMarkedReply(): Promise<void> {
    for (const p of this.pairs) if (p.sawMarker && p.held.length > 0) return Promise.resolve();
    return new Promise((resolve) => this.once('held', () => resolve()));
  }

  /** Resolves when no relayed connection is open any more. */
  async drained(): Promise<void> {
    while (this.pairs.size > 0) await new Promise((resolve) => this.once('pairClosed', resolve));
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.down.destroy();
      p.up.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(down: net.Socket, target: { host: string; port: number }): void {
    const up = net.connect(target);
    const pair: Pair = { down, up, sawMarker: false, held: [] };
    this.pairs.add(pair);
    down.on('data', (chunk: Buffer) => {
      if (this.marker && chunk.includes(this.marker)) pair.sawMarker = true;
      up.write(chunk);
    });
    up.on('data', (chunk: Buffer) => {
      if (!this.holding) {
        down.write(chunk);
        return;
      }
      pair.held.push(chunk);
      if (pair.sawMarker) this.emit('held', pair);
    });
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      down.destroy();
      up.destroy();
      this.pairs.delete(pair);
      this.emit('pairClosed');
    };
    for (const s of [down, up]) {
      s.on('error', close);
      s.on('close', close);
    }
  }
}
