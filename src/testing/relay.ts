import { EventEmitter } from 'node:events';
import net from 'node:net';
import { deserialize, type Document } from 'bson';
import { MessageFramer, MsgFlag, OpCode, parseOpMsg, parseOpQuery } from '../wire/index.js';

/**
 * A TCP relay placed in front of a target (the proxy, or the upstream), for the tests and the
 * benchmarks (see processes.ts for why this is under src/). It accepts connections, opens one to the
 * target for each, and passes bytes both ways.
 *
 * Recording (the default, what tests use): on the way to the target it cuts the stream into wire
 * messages (src/wire's MessageFramer), forwards them whole and records each one decoded, so a test can
 * check what was really sent (how a driver spoke, what the proxy forwarded). Optional behaviour, all
 * off until asked for:
 *  - `cutNext(...commands)`: drop the connection carrying the next request for one of those commands,
 *    before the target sees it (a connection that fails mid-request, made deterministic);
 *  - `hold()` / `release()`: keep the target's replies until released (a request in flight), with
 *    `watch(marker)` + `heldMarkedReply()` to know a reply to a marked request is being held;
 *  - `stall(marker)`: a request containing `marker` gets no reply until `release()` (an upstream stuck on
 *    one request while it serves the others), with `stalled` counting such requests in flight;
 *  - `onMessage`, `destroyAll`, `resetAll`: act on connections like a crashing client.
 * Messages that fail framing (a length below 16) close the connection: relays here sit between
 * well-behaved peers, and the bad-input suites talk to the proxy directly.
 *
 * `record: false` is the plain relay, the benchmarks' floor for any proxy (bench/README.md): both
 * directions are piped as bytes, nothing is framed or decoded; only the connection-level calls
 * (`openConnections`, `drained`, `destroyAll`, `resetAll`, `close`) work, the others throw.
 */

/** One client→target message as the relay forwarded it. */
export interface RelayedMessage {
  /** Which relayed connection (accept order, from 1). */
  connection: number;
  opCode: number;
  requestId: number;
  /** OP_MSG flags (0 for other opcodes). */
  flags: number;
  moreToCome: boolean;
  /** First key of the OP_MSG body or OP_QUERY query ('' for other opcodes or undecodable messages). */
  command: string;
  /** That body or query, decoded ($query unwrapped); empty for other opcodes. */
  body: Document;
  /** The OP_MSG kind-1 sections: identifier and number of documents. */
  sequences: { identifier: string; count: number }[];
  /** The message's bytes exactly as forwarded. */
  raw: Buffer;
}

export interface RelayedConnection {
  readonly id: number;
  /** Closes both sockets at once, without a goodbye: the other ends see end-of-stream (FIN). */
  destroy(): void;
  /** Like a crashed host: both sockets are reset (RST), so the other ends see ECONNRESET. */
  reset(): void;
}

export interface RelayOptions {
  /** Frame, record and allow the optional behaviour (default true); false: the plain relay. */
  record?: boolean;
  /** Where to listen (default 127.0.0.1, a free port). */
  host?: string;
  port?: number;
}

/** Called after a message was forwarded and recorded; may cut that connection. */
export type MessageListener = (message: RelayedMessage, connection: RelayedConnection) => void;

interface Pair extends RelayedConnection {
  client: net.Socket;
  /** True once a message to the target contained the watched marker. */
  sawMarker: boolean;
  /** Target bytes kept back while holding. */
  held: Buffer[];
  /** Its request in flight contains the stall marker: replies are kept back until release(). */
  stalled: boolean;
}

export class WireRelay {
  /** Every client→target message, in forwarding order across connections (none for a plain relay). */
  readonly messages: RelayedMessage[] = [];
  private readonly pairs = new Set<Pair>();
  private readonly listeners: MessageListener[] = [];
  /** 'held' (a marked connection's reply is being held) and 'pairClosed'. */
  private readonly events = new EventEmitter();
  private nextId = 1;
  private cut: { commands: Set<string>; done: () => void } | undefined;
  private holding = false;
  private marker: Buffer | undefined;
  private stallMarker: Buffer | undefined;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    /** False: the plain relay (bytes piped, nothing framed or recorded). */
    readonly recording: boolean,
  ) {}

  /**
   * Listens (default: a free loopback port) and relays each connection to `target`. `record: false`
   * makes it the plain relay (see the class comment).
   */
  static async start(target: { host?: string; port: number }, options: RelayOptions = {}): Promise<WireRelay> {
    let relay!: WireRelay;
    const server = net.createServer((client) => relay.accept(client, target.host ?? '127.0.0.1', target.port));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
    });
    relay = new WireRelay(server, (server.address() as net.AddressInfo).port, options.record ?? true);
    return relay;
  }

  /** The first host of a mongodb:// URI (what to relay to). */
  static firstHost(uri: string): { host: string; port: number } {
    const m = /^mongodb:\/\/(?:[^@/]*@)?([^/?,]+)/.exec(uri);
    if (!m) throw new Error(`cannot relay ${uri} (only mongodb:// URIs)`);
    const [host = '127.0.0.1', port = '27017'] = m[1]!.split(':');
    return { host, port: Number(port) };
  }

  /** `uri` pointed at a relay on `port`: credentials, path and query kept, directConnection=true added. */
  static uriThrough(uri: string, port: number): string {
    const m = /^mongodb:\/\/((?:[^@/]*@)?)([^/?]+)(\/[^?]*)?(\?.*)?$/.exec(uri);
    if (!m) throw new Error(`cannot relay ${uri} (only mongodb:// URIs)`);
    const query = m[4] ? `${m[4]}&directConnection=true` : '?directConnection=true';
    return `mongodb://${m[1]}127.0.0.1:${port}${m[3] ?? '/'}${query}`;
  }

  get openConnections(): number {
    return this.pairs.size;
  }

  /**
   * Recorded requests with this command name, optionally only those on database `db` and collection
   * `collection` (getMore names its collection in `collection`, others in their first field).
   */
  commands(name: string, where: { db?: string; collection?: string } = {}): RelayedMessage[] {
    this.needsRecording('commands');
    return this.messages.filter((m) => {
      if (m.command !== name) return false;
      if (where.db !== undefined && m.body.$db !== where.db) return false;
      if (where.collection === undefined) return true;
      return (name === 'getMore' ? m.body.collection : m.body[name]) === where.collection;
    });
  }

  /** Adds a listener for forwarded messages; returns its remover. */
  onMessage(listener: MessageListener): () => void {
    this.needsRecording('onMessage');
    this.listeners.push(listener);
    return () => {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /** Resolves once the connection carrying the next request for one of `commands` was closed instead of forwarding it. */
  cutNext(...commands: string[]): Promise<void> {
    this.needsRecording('cutNext');
    return new Promise((done) => (this.cut = { commands: new Set(commands), done }));
  }

  /** Marks connections whose requests to the target contain `marker` (e.g. a unique _id). */
  watch(marker: string): void {
    this.needsRecording('watch');
    this.marker = Buffer.from(marker);
  }

  /** From now on, keeps the target's replies instead of passing them on. */
  hold(): void {
    this.needsRecording('hold');
    this.holding = true;
  }

  /** From now on, the replies to requests containing `marker` are kept back (until release()). */
  stall(marker: string): void {
    this.needsRecording('stall');
    this.stallMarker = Buffer.from(marker);
  }

  /** Open connections whose request in flight is stalled. */
  get stalled(): number {
    let n = 0;
    for (const p of this.pairs) if (p.stalled) n++;
    return n;
  }

  /** Resolves once `n` stalled requests are in flight. */
  async stalledRequests(n: number): Promise<void> {
    this.needsRecording('stalledRequests');
    while (this.stalled < n) await new Promise((resolve) => this.events.once('stalled', resolve));
  }

  /** Passes on the held replies and stops holding (and stalling). */
  release(): void {
    this.holding = false;
    this.stallMarker = undefined;
    for (const p of this.pairs) {
      p.stalled = false;
      for (const chunk of p.held.splice(0)) p.client.write(chunk);
    }
  }

  /** Resolves once a reply on a connection that carried the watched marker is being held. */
  heldMarkedReply(): Promise<void> {
    this.needsRecording('heldMarkedReply');
    for (const p of this.pairs) if (p.sawMarker && p.held.length > 0) return Promise.resolve();
    return new Promise((resolve) => this.events.once('held', () => resolve()));
  }

  /** Resolves when no relayed connection is open any more. */
  async drained(): Promise<void> {
    while (this.pairs.size > 0) await new Promise((resolve) => this.events.once('pairClosed', resolve));
  }

  destroyAll(): void {
    for (const p of [...this.pairs]) p.destroy();
  }

  resetAll(): void {
    for (const p of [...this.pairs]) p.reset();
  }

  async close(): Promise<void> {
    this.destroyAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private needsRecording(what: string): void {
    if (!this.recording) throw new Error(`WireRelay.${what}() needs a recording relay (started with record: false)`);
  }

  /** The core: one target connection per client connection, closed together. */
  private accept(client: net.Socket, host: string, port: number): void {
    const target = net.connect({ host, port });
    client.setNoDelay(true);
    target.setNoDelay(true);
    const end = (how: (s: net.Socket) => void) => {
      for (const s of [client, target]) if (!s.destroyed) how(s);
      if (this.pairs.delete(pair)) this.events.emit('pairClosed');
    };
    const pair: Pair = {
      id: this.nextId++,
      client,
      sawMarker: false,
      held: [],
      stalled: false,
      destroy: () => end((s) => s.destroy()),
      reset: () => end((s) => s.resetAndDestroy()),
    };
    this.pairs.add(pair);
    for (const s of [client, target]) {
      s.on('error', pair.destroy);
      s.on('close', pair.destroy);
    }
    if (!this.recording) {
      // The plain relay: streams piped as they are (with their backpressure), no per-message work.
      client.pipe(target);
      target.pipe(client);
      return;
    }

    // Target → client: bytes as they come, unless holding.
    target.on('data', (chunk: Buffer) => {
      if (!this.holding && !pair.stalled) {
        if (!client.destroyed) client.write(chunk);
        return;
      }
      pair.held.push(chunk);
      if (pair.sawMarker) this.events.emit('held');
    });

    // Client → target: message by message, each forwarded (or cut), recorded, then shown to listeners.
    const framer = new MessageFramer(0x7fffffff);
    client.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try {
        frames = framer.push(chunk);
      } catch {
        pair.destroy();
        return;
      }
      for (const frame of frames) {
        const message = decode(pair.id, Buffer.from(frame));
        if (this.cut?.commands.has(message.command)) {
          const { done } = this.cut;
          this.cut = undefined;
          pair.destroy();
          done();
          return;
        }
        target.write(message.raw);
        this.messages.push(message);
        if (this.marker && message.raw.includes(this.marker)) pair.sawMarker = true;
        if (this.stallMarker && message.raw.includes(this.stallMarker)) {
          pair.stalled = true;
          this.events.emit('stalled');
        }
        for (const listener of [...this.listeners]) listener(message, pair);
        if (client.destroyed) return;
      }
    });
  }
}

/** Decodes one whole message with src/wire; anything it cannot parse is recorded with no command. */
function decode(connection: number, raw: Buffer): RelayedMessage {
  const opCode = raw.readInt32LE(12);
  const message: RelayedMessage = {
    connection,
    opCode,
    requestId: raw.readInt32LE(4),
    flags: 0,
    moreToCome: false,
    command: '',
    body: {},
    sequences: [],
    raw,
  };
  try {
    if (opCode === OpCode.MSG) {
      const msg = parseOpMsg(raw);
      message.flags = msg.flags;
      message.moreToCome = (msg.flags & MsgFlag.MORE_TO_COME) !== 0;
      message.body = deserialize(msg.body);
      message.sequences = msg.sequences.map((s) => ({ identifier: s.identifier, count: s.documents.length }));
    } else if (opCode === OpCode.QUERY) {
      const query = deserialize(parseOpQuery(raw).query);
      message.body = query.$query && typeof query.$query === 'object' ? (query.$query as Document) : query;
    }
  } catch {
    // Not a message src/wire accepts: recorded and forwarded as is, for the target to judge.
  }
  message.command = Object.keys(message.body)[0] ?? '';
  return message;
}
