import net from 'node:net';
import { deserialize, serialize, type Document } from 'bson';
import { MessageFramer } from '../wire/framer.js';
import { encodeOpMsg, parseOpMsg, type DocumentSequence } from '../wire/opmsg.js';
import { OpCode } from '../wire/constants.js';

let nextRequestId = 1000;

/** Encodes a command as an OP_MSG (body + optional kind-1 sequences). */
export function opMsg(
  doc: Document,
  options: { requestId?: number; flags?: number; sequences?: { identifier: string; documents: Document[] }[] } = {},
): Buffer {
  const sequences: DocumentSequence[] = (options.sequences ?? []).map((s) => ({
    identifier: s.identifier,
    documents: s.documents.map((d) => Buffer.from(serialize(d))),
  }));
  return encodeOpMsg(options.requestId ?? nextRequestId++, 0, options.flags ?? 0, serialize(doc), sequences);
}

/**
 * A client speaking raw wire protocol to the proxy: for tests that send bytes no driver would, and for
 * the scale benchmark, which holds thousands of connections at a fraction of a driver's memory (see
 * processes.ts for why this is under src/). One request at a time per connection. Every wait is on an
 * event (a message, the close); timeouts only turn a hang into a failure.
 */
export class RawClient {
  private readonly framer = new MessageFramer(64 * 1024 * 1024);
  private readonly messages: Buffer[] = [];
  private waiter: (() => void) | undefined;
  private isClosed = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.isClosed = true;
        this.waiter?.();
        resolve();
      });
    });
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      for (const m of this.framer.push(chunk)) this.messages.push(Buffer.from(m));
      this.waiter?.();
    });
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port, noDelay: true }, () => {
        s.off('error', reject);
        resolve(new RawClient(s));
      });
      s.once('error', reject);
    });
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  send(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** The next whole message from the proxy; rejects if the connection closes first. */
  async nextMessage(timeoutMS = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMS;
    while (this.messages.length === 0) {
      if (this.isClosed) throw new Error('connection closed before a reply');
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no reply within ${timeoutMS} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiter = () => {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve();
        };
      });
    }
    return this.messages.shift()!;
  }

  /** The next reply decoded: OP_MSG body or the first OP_REPLY document. */
  async nextReply(timeoutMS?: number): Promise<{ opCode: number; responseTo: number; doc: Document }> {
    const msg = await this.nextMessage(timeoutMS);
    const opCode = msg.readInt32LE(12);
    const responseTo = msg.readInt32LE(8);
    if (opCode === OpCode.MSG) return { opCode, responseTo, doc: deserialize(parseOpMsg(msg).body) };
    if (opCode === OpCode.REPLY) return { opCode, responseTo, doc: deserialize(msg.subarray(36)) };
    throw new Error(`unexpected reply opcode ${opCode}`);
  }

  /** Sends a command and returns the decoded reply body. */
  async command(doc: Document, options: Parameters<typeof opMsg>[1] = {}): Promise<Document> {
    this.send(opMsg(doc, options));
    return (await this.nextReply()).doc;
  }

  /** Half-closes: the proxy sees end-of-stream after what was sent. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}
