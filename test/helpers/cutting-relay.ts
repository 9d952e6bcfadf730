import net from 'node:net';

/**
 * A TCP relay (it records what the proxy sends) between the proxy and the real upstream that can be told to cut the connection carrying
 * the next request for a given command, after the request left the proxy and before the upstream saw
 * it: the "upstream failed mid-request" case, made deterministic.
 */
export class CuttingRelay {
  private readonly server: net.Server;
  private armed: { commands: Set<string>; resolve: () => void } | undefined;
  private readonly sockets = new Set<net.Socket>();
  port = 0;
  /** Every byte the proxy sent upstream through this relay, in order per connection. */
  readonly sentUpstream: Buffer[] = [];

  constructor(private readonly upstreamHost: string, private readonly upstreamPort: number) {
    this.server = net.createServer((client) => this.relay(client));
  }

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  /** Resolves once a request whose command name is in `commands` has been cut. */
  cutNext(...commands: string[]): Promise<void> {
    return new Promise((resolve) => (this.armed = { commands: new Set(commands), resolve }));
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private relay(client: net.Socket): void {
    const upstream = net.connect({ host: this.upstreamHost, port: this.upstreamPort });
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.on('data', (chunk: Buffer) => {
      const armed = this.armed;
      if (armed && armed.commands.has(commandName(chunk))) {
        this.armed = undefined;
        client.destroy();
        upstream.destroy();
        armed.resolve();
        return;
      }
      this.sentUpstream.push(Buffer.from(chunk));
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  }
}

/** The first key of an OP_MSG body at the start of `chunk` (header 16 + flags 4 + kind 1 + size 4 + type 1). */
function commandName(chunk: Buffer): string {
  if (chunk.length < 27 || chunk.readInt32LE(12) !== 2013 || chunk[20] !== 0) return '';
  const start = 26;
  const end = chunk.indexOf(0, start);
  return end > start ? chunk.toString('utf8', start, end) : '';
}
