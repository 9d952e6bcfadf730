import net from 'node:net';
import tls from 'node:tls';
import { deserialize, serialize, type Document } from 'bson';
import { MessageFramer } from '../wire/framer.js';
import { RequestIdCounter } from '../wire/header.js';
import { encodeOpMsg, parseOpMsg } from '../wire/opmsg.js';
import { OpCode } from '../wire/constants.js';
import { parseAddress } from './address.js';
import { UpstreamError } from './errors.js';
import { authenticate, type UpstreamCredentials } from './auth.js';

export interface UpstreamConnectOptions {
  connectTimeoutMS: number;
  /** TLS options for tls.connect, or undefined for plain TCP. */
  tls?: tls.ConnectionOptions | undefined;
  credentials?: UpstreamCredentials | undefined;
  /** Sent as client.application.name in the upstream handshake. */
  appName: string;
  driverVersion: string;
}

/** Request ids of messages the proxy sends upstream; shared so ids are unique across connections. */
export const upstreamRequestIds = new RequestIdCounter();

interface Pending {
  requestId: number;
  resolve: (reply: Buffer) => void;
  reject: (err: Error) => void;
  /** Fails the request when the reply is late (see roundTrip's timeoutMS). */
  timer: NodeJS.Timeout | undefined;
}

/**
 * One raw connection to an upstream server, already handshaken and authenticated. It carries one
 * request at a time (the wire protocol is strictly request/reply per connection); replies that answer
 * nothing outstanding (a server answering a moreToCome write anyway) are dropped, so the stream
 * never desynchronises.
 */
export class UpstreamConnection {
  private readonly framer = new MessageFramer();
  private pending: Pending | undefined;
  private closedError: Error | undefined;
  lastUsed = Date.now();
  /** The upstream's handshake reply. */
  hello: Document = {};

  private constructor(
    readonly address: string,
    private readonly socket: net.Socket,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new UpstreamError(`upstream ${address}: ${err.message}`, { cause: err })));
    socket.on('close', () => this.fail(new UpstreamError(`upstream ${address} closed the connection`)));
  }

  static async connect(address: string, options: UpstreamConnectOptions): Promise<UpstreamConnection> {
    const { host, port } = parseAddress(address);
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const onError = (err: Error) => {
        clearTimeout(timer);
        s.destroy();
        reject(new UpstreamError(`cannot connect to upstream ${address}: ${err.message}`, { cause: err }));
      };
      const timer = setTimeout(
        () => onError(new Error(`connect timed out after ${options.connectTimeoutMS} ms`)),
        options.connectTimeoutMS,
      );
      const ready = () => {
        clearTimeout(timer);
        s.off('error', onError);
        resolve(s);
      };
      const s = options.tls
        ? tls.connect({ ...options.tls, host, port, servername: options.tls.servername ?? (net.isIP(host) ? undefined : host) }, ready)
        : net.connect({ host, port }, ready);
      s.once('error', onError);
    });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 120_000);
    const conn = new UpstreamConnection(address, socket);
    try {
      const helloCmd: Document = {
        hello: 1,
        $db: 'admin',
        client: {
          application: { name: options.appName },
          driver: { name: 'mdb-runtime', version: options.driverVersion },
          os: { type: process.platform, architecture: process.arch },
          platform: `Node.js ${process.version}`,
        },
      };
      if (options.credentials) helloCmd.saslSupportedMechs = `${options.credentials.source}.${options.credentials.username}`;
      // connectTimeoutMS bounds the handshake and authentication too: a server that accepts the
      // TCP connection and never answers must not hold a pool slot (and a client) forever.
      const handshakeTimer = setTimeout(
        () => conn.fail(new UpstreamError(`upstream ${address} did not complete the handshake within ${options.connectTimeoutMS} ms`)),
        options.connectTimeoutMS,
      );
      try {
        conn.hello = await conn.command(helloCmd);
        if (options.credentials) await authenticate(conn, options.credentials);
      } finally {
        clearTimeout(handshakeTimer);
      }
    } catch (err) {
      conn.destroy();
      throw err instanceof UpstreamError ? err : new UpstreamError(`upstream ${address} handshake failed: ${(err as Error).message}`, { cause: err });
    }
    return conn;
  }

  get isClosed(): boolean {
    return this.closedError !== undefined;
  }

  /**
   * Sends a ready-to-go message (ids already set) and resolves with the matching reply's bytes. With
   * `timeoutMS`, a reply that takes longer rejects with UpstreamTimeoutError and closes the connection
   * (its stream would otherwise deliver the late reply to the next request).
   */
  roundTrip(msg: Buffer, requestId: number, timeoutMS?: number): Promise<Buffer> {
    if (this.closedError) return Promise.reject(this.closedError);
    if (this.pending) return Promise.reject(new UpstreamError('upstream connection already has a request in flight'));
    this.lastUsed = Date.now();
    return new Promise<Buffer>((resolve, reject) => {
      const timer = timeoutMS === undefined ? undefined : setTimeout(this.onLate, timeoutMS, timeoutMS);
      this.pending = { requestId, resolve, reject, timer };
      this.socket.write(msg);
    });
  }

  private readonly onLate = (timeoutMS: number): void => {
    this.fail(new UpstreamTimeoutError(this.address, timeoutMS));
    this.socket.destroy();
  };

  /** Sends a message that expects no reply (moreToCome). */
  send(msg: Buffer): void {
    if (this.closedError) throw this.closedError;
    this.lastUsed = Date.now();
    this.socket.write(msg);
  }

  /** Runs one command document (control traffic: handshake, auth) and returns the decoded reply. */
  async command(cmd: Document): Promise<Document> {
    const requestId = upstreamRequestIds.take();
    const reply = await this.roundTrip(encodeOpMsg(requestId, 0, 0, serialize(cmd)), requestId);
    const doc = deserialize(parseOpMsg(reply).body);
    if (doc.ok !== 1 && doc.ok !== true) {
      const err = new UpstreamCommandError(String(doc.errmsg ?? 'command failed'), Number(doc.code ?? 0), String(doc.codeName ?? ''));
      throw err;
    }
    return doc;
  }

  destroy(): void {
    this.fail(new UpstreamError(`upstream connection to ${this.address} closed by the proxy`));
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    let messages: Buffer[];
    try {
      messages = this.framer.push(chunk);
    } catch (err) {
      this.fail(new UpstreamError(`upstream ${this.address} sent a malformed frame: ${(err as Error).message}`));
      this.socket.destroy();
      return;
    }
    for (const msg of messages) {
      const pending = this.pending;
      if (!pending || msg.readInt32LE(8) !== pending.requestId) continue; // a reply to a moreToCome write
      if (msg.readInt32LE(12) !== OpCode.MSG) {
        this.fail(new UpstreamError(`upstream ${this.address} replied with opcode ${msg.readInt32LE(12)}`));
        this.socket.destroy();
        return;
      }
      this.pending = undefined;
      this.lastUsed = Date.now();
      if (pending.timer) clearTimeout(pending.timer);
      pending.resolve(msg);
    }
  }

  private fail(err: Error): void {
    if (!this.closedError) this.closedError = err;
    const pending = this.pending;
    this.pending = undefined;
    if (pending?.timer) clearTimeout(pending.timer);
    pending?.reject(err);
  }
}

/** The upstream did not answer a request within its time: the connection was closed. */
export class UpstreamTimeoutError extends UpstreamError {
  constructor(
    address: string,
    readonly timeoutMS: number,
  ) {
    super(`upstream ${address} did not answer within ${timeoutMS} ms`);
    this.name = 'UpstreamTimeoutError';
  }
}

/** An upstream command answered ok: 0 during control traffic. */
export class UpstreamCommandError extends Error {
  constructor(
    message: string,
    readonly code: number,
    readonly codeName: string,
  ) {
    super(message);
    this.name = 'UpstreamCommandError';
  }
}
