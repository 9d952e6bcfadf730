import net from 'node:net';
import { deserialize, type Document } from 'bson';

/**
 * A transparent TCP relay placed between a real client and the proxy (or an upstream). It forwards every
 * byte unchanged and records what the client sent, so an end-to-end test can prove how a driver spoke
 * (kind-1 document sequences, moreToCome, getMore batch sizes) without trusting the driver's own report.
 * It can also cut a client's connection abruptly at a chosen message, like a crashing client.
 *
 * Self-contained on purpose (its own framing and OP_MSG section walk): it checks the proxy's wire layer
 * rather than reusing it.
 */

const OP_MSG = 2013;
const OP_QUERY = 2004;
const MORE_TO_COME = 1 << 1;
const CHECKSUM_PRESENT = 1 << 0;

export interface TappedSequence {
  identifier: string;
  count: number;
}

/** One client→server message as the tap saw it. */
export interface TappedMessage {
  /** Which client connection (accept order, from 1). */
  connection: number;
  opCode: number;
  requestId: number;
  flags: number;
  moreToCome: boolean;
  /** First key of the kind-0 body or OP_QUERY query ('' for other opcodes). */
  command: string;
  /** The kind-0 body or the OP_QUERY query, decoded (empty for other opcodes). */
  body: Document;
  sequences: TappedSequence[];
}

/** Called after a client message was forwarded; may cut that connection. */
export type TapListener = (message: TappedMessage, connection: TappedConnection) => void;

export interface TappedConnection {
  readonly id: number;
  /** Closes both sockets at once, without a goodbye: the other ends see end-of-stream (FIN). */
  destroy(): void;
  /** Like a crashed host: both sockets are reset (RST), so the other ends see ECONNRESET. */
  reset(): void;
}

export class WireTap {
  readonly messages: TappedMessage[] = [];
  private readonly listeners: TapListener[] = [];
  private readonly open = new Set<TappedConnection>();
  private nextConnection = 1;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /** Listens on a free loopback port and relays each connection to `target`. */
  static async start(targetPort: number, targetHost = '127.0.0.1'): Promise<WireTap> {
    let tap: WireTap | undefined;
    const server = net.createServer((client) => tap!.accept(client, targetHost, targetPort));
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    });
    tap = new WireTap(server, port);
    return tap;
  }

  get connectionCount(): number {
    return this.open.size;
  }

  onMessage(listener: TapListener): () => void {
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /**
   * Recorded OP_MSG requests with this command name, optionally only those on database `db` and
   * collection `collection` (getMore names its collection in `collection`, others in their first field).
   */
  commands(name: string, where: { db?: string; collection?: string } = {}): TappedMessage[] {
    return this.messages.filter((m) => {
      if (m.command !== name) return false;
      if (where.db !== undefined && m.body.$db !== where.db) return false;
      if (where.collection === undefined) return true;
      const target = name === 'getMore' ? m.body.collection : m.body[name];
      return target === where.collection;
    });
  }

  destroyAll(): void {
    for (const c of [...this.open]) c.destroy();
  }

  resetAll(): void {
    for (const c of [...this.open]) c.reset();
  }

  async close(): Promise<void> {
    this.destroyAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket, host: string, port: number): void {
    const id = this.nextConnection++;
    const upstream = net.connect({ host, port });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const conn: TappedConnection = {
      id,
      destroy: () => {
        client.destroy();
        upstream.destroy();
        this.open.delete(conn);
      },
      reset: () => {
        if (!client.destroyed) client.resetAndDestroy();
        if (!upstream.destroyed) upstream.resetAndDestroy();
        this.open.delete(conn);
      },
    };
    this.open.add(conn);
    const finish = () => conn.destroy();
    client.on('error', finish);
    upstream.on('error', finish);
    client.on('close', finish);
    upstream.on('close', finish);

    // Server → client: untouched.
    upstream.on('data', (chunk: Buffer) => {
      if (!client.destroyed) client.write(chunk);
    });

    // Client → server: framed, recorded, forwarded message by message.
    let pending: Buffer = Buffer.alloc(0);
    client.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 4) {
        const length = pending.readInt32LE(0);
        if (length < 16) {
          // Not a frame we can follow: pass the rest through and stop recording this connection.
          upstream.write(pending);
          pending = Buffer.alloc(0);
          return;
        }
        if (pending.length < length) break;
        const frame = pending.subarray(0, length);
        pending = pending.subarray(length);
        upstream.write(frame);
        const message = decode(id, frame);
        this.messages.push(message);
        for (const listener of [...this.listeners]) listener(message, conn);
        if (client.destroyed) return;
      }
    });
  }
}

function decode(connection: number, frame: Buffer): TappedMessage {
  const opCode = frame.readInt32LE(12);
  const requestId = frame.readInt32LE(4);
  const message: TappedMessage = {
    connection,
    opCode,
    requestId,
    flags: 0,
    moreToCome: false,
    command: '',
    body: {},
    sequences: [],
  };
  if (opCode === OP_QUERY && frame.length > 29) {
    // Legacy handshake: flags, full collection name, skip, return, then the query document.
    const nameEnd = frame.indexOf(0, 20);
    const query = deserialize(frame.subarray(nameEnd + 9));
    message.body = query.$query && typeof query.$query === 'object' ? (query.$query as Document) : query;
    message.command = Object.keys(message.body)[0] ?? '';
    return message;
  }
  if (opCode !== OP_MSG || frame.length < 21) return message;
  const flags = frame.readUInt32LE(16);
  message.flags = flags;
  message.moreToCome = (flags & MORE_TO_COME) !== 0;
  const end = flags & CHECKSUM_PRESENT ? frame.length - 4 : frame.length;
  let p = 20;
  while (p < end) {
    const kind = frame[p++];
    const size = frame.readInt32LE(p);
    if (kind === 0) {
      message.body = deserialize(frame.subarray(p, p + size));
      message.command = Object.keys(message.body)[0] ?? '';
    } else if (kind === 1) {
      const nameEnd = frame.indexOf(0, p + 4);
      const identifier = frame.toString('utf8', p + 4, nameEnd);
      let count = 0;
      for (let q = nameEnd + 1; q < p + size; q += frame.readInt32LE(q)) count++;
      message.sequences.push({ identifier, count });
    } else {
      break;
    }
    p += size;
  }
  return message;
}
