import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { serialize, type Document } from 'bson';
import type { Logger } from '../observability/logger.js';
import type { AppEntry } from './app-usage.js';
import { OpCode } from '../wire/constants.js';
import { FramingError, MessageFramer } from '../wire/framer.js';
import { RequestIdCounter } from '../wire/header.js';
import { encodeOpMsg } from '../wire/opmsg.js';
import { encodeOpReply } from '../wire/opquery.js';
import { Exchange, type ClientSide } from '../upstream/index.js';
import type { AppRegistry } from '../apps/registry.js';
import type { ProxyContext } from './context.js';
import { ConnectionAuthenticator, type Identity } from './authentication.js';
import { AppBinding, type BindingHost } from './app-binding.js';
import { Request } from './request.js';
import { observe, run, type Observer, type StepContext } from './steps/index.js';

/** Pipelined requests queued beyond this pause reading from the socket. */
const MAX_QUEUED_MESSAGES = 32;

/**
 * One client connection: reads and frames its messages and hands them, one at a time (as a server
 * does per connection), to the request path (src/session/steps/), with backpressure, drain and close.
 */
export class ClientConnection implements StepContext, Observer, BindingHost, ClientSide {
  private remote: string | undefined;
  private readonly framer: MessageFramer;
  private readonly queue: Buffer[] = [];
  private readonly replyIds = new RequestIdCounter();
  /** The connection's logger (conn, and app_id once authenticated): made when a first line is written. */
  private logCache: Logger | undefined;
  /** The slug its lines carry as app_id: set once the authentication's own line is written. */
  private slug: string | undefined;
  private processing = false;
  private draining = false;
  closed = false;
  /** Aborted when the connection closes: its requests waiting for an upstream connection leave the pool's queue. */
  private abandon: AbortController | undefined;
  /** The client ended its side of the connection (FIN): see onPeerEnd. */
  private peerEnded = false;
  /** Who this connection is: set by the handshake's appName or by saslStart. */
  readonly auth: ConnectionAuthenticator;
  readonly binding: AppBinding;
  readonly exchange: Exchange;
  /** Closes the connection if it stays unauthenticated and silent (docs/security.md). */
  private preAuthIdleTimer: NodeJS.Timeout | undefined;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;
  /** The app's entry in the per-app table (the unauthenticated one until the connection authenticates). */
  private entry: AppEntry;
  readonly instrumented: boolean;
  readonly timed: boolean;
  readonly debugEnabled: boolean;
  readonly warnEnabled: boolean;
  /** The request being handled (one at a time), and its logger (with `req`), made when a line is written. */
  private current: Request | undefined;
  private reqLog: Logger | undefined;

  constructor(
    private readonly socket: net.Socket,
    readonly ctx: ProxyContext,
    readonly id: number,
  ) {
    // Until the connection authenticates, only small messages are read (raised in onAuthenticated).
    this.framer = new MessageFramer(ctx.limits.preAuthMaxMessageSize);
    this.entry = ctx.usage.unauthenticated;
    this.entry.meter.connections++;
    this.instrumented = ctx.metrics.enabled;
    this.warnEnabled = ctx.logger.isLevelEnabled('warn');
    this.debugEnabled = ctx.logger.isLevelEnabled('debug');
    this.timed = this.instrumented || this.warnEnabled;
    this.binding = new AppBinding(ctx, this);
    this.exchange = new Exchange(ctx.upstream, this, this.timed);
    this.auth = new ConnectionAuthenticator({
      apps: { get: (slug) => ctx.apps.current.get(slug) },
      // The root logger, and the connection's fields (conn, app_id once authenticated, req) read per line.
      logger: ctx.logger,
      logFields: () => this.lineFields(),
      now: ctx.now,
      tokenCache: ctx.tokenCache,
      onAuthenticated: (identity) => this.onAuthenticated(identity),
      onAttempt: (success, mechanism, reason) => ctx.metrics.authentication(success, mechanism, reason),
    });
    this.armPreAuthIdleTimer();
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // The client half-closed: finish what it sent, then close (see onPeerEnd).
    socket.on('end', () => this.onPeerEnd());
    socket.on('error', (err) => this.close(`socket error: ${err.message}`));
    socket.on('close', () => this.close('client closed the connection'));
  }

  /** The client's address and port: asked of the socket (a system call) only when needed, then kept. */
  get remoteAddress(): string {
    return (this.remote ??= `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? 0}`);
  }

  /** The client closed, or ended its side: nothing more is sent upstream for it. */
  get gone(): boolean {
    return this.closed || this.peerEnded;
  }

  /** Aborts when the connection closes (made when a request first waits). */
  get signal(): AbortSignal {
    return (this.abandon ??= new AbortController()).signal;
  }

  get maxMessageSize(): number {
    return this.framer.maxMessageSize;
  }

  /** Resolves when the connection is closed. */
  get done(): Promise<void> {
    return this.closedPromise;
  }

  /** After a manifest reload: starts closing the connection if its app is gone. */
  appsChanged(registry: AppRegistry): void {
    this.binding.appsChanged(this.auth.identity, registry);
  }

  private onAuthenticated(identity: Identity): void {
    if (this.entry === this.ctx.usage.unauthenticated) {
      this.entry.meter.connections--;
      this.entry = this.ctx.usage.get(identity.app.slug);
      this.entry.meter.connections++;
    }
    this.binding.bind(this.entry);
    this.framer.maxMessageSize = this.ctx.limits.maxMessageSize;
    clearTimeout(this.preAuthIdleTimer);
    this.preAuthIdleTimer = undefined;
    this.slug = identity.app.slug;
    this.logCache = undefined;
    this.reqLog = undefined;
  }

  /**
   * The logger for a line about this connection (with `req` during a request). Child loggers cost (pino
   * serializes their bindings when made): one is made only when a line is written.
   */
  log(): Logger {
    if (!this.current) return (this.logCache ??= this.ctx.logger.child(this.logBindings()));
    // One child of the root logger (not a child of the connection's): the same fields, one serialization.
    return (this.reqLog ??= this.ctx.logger.child({ ...this.logBindings(), req: this.current.id }));
  }

  warn(fields: Record<string, unknown>, message: string): void {
    this.log().warn(fields, message);
  }

  private logBindings(): { conn: number; app_id?: string } {
    return this.slug === undefined ? { conn: this.id } : { conn: this.id, app_id: this.slug };
  }

  /** What log() binds, as a fresh object of fields (for the authenticator's lines). */
  private lineFields(): Record<string, unknown> {
    const fields: Record<string, unknown> = this.logBindings();
    if (this.current) fields.req = this.current.id;
    return fields;
  }

  /**
   * (Re)starts the pre-auth idle timer. Driver monitoring connections never authenticate but send a
   * hello every heartbeat (10 s by default), so any whole message counts as activity.
   */
  private armPreAuthIdleTimer(): void {
    const ms = this.ctx.limits.preAuthIdleTimeoutMS;
    if (ms <= 0 || this.auth.identity || this.closed) return;
    clearTimeout(this.preAuthIdleTimer);
    this.preAuthIdleTimer = setTimeout(() => {
      this.log().info({ idle_ms: ms }, 'closing a connection that did not authenticate and sent nothing');
      this.close('idle before authentication');
    }, ms);
    this.preAuthIdleTimer.unref();
  }

  /**
   * The client ended its side (FIN): a driver does that only when it destroys the socket, so it is a
   * disconnect, as for mongod: nothing more goes upstream (answered ClientDisconnect); a reply already
   * on its way is still written, but a cursor it opens is killed. Then the connection closes.
   */
  private onPeerEnd(): void {
    this.peerEnded = true;
    this.abandon?.abort();
    void this.drain();
  }

  /** Stops taking requests: closes now if idle, or after the request in progress is answered. */
  drain(): Promise<void> {
    this.draining = true;
    if (!this.processing) this.close('draining', true);
    return this.closedPromise;
  }

  /**
   * Closes the connection. `graceful` lets replies already written reach the client first (after a
   * drain, or an error reply the server follows with a close); otherwise the socket is dropped at once.
   */
  close(reason: string, graceful = false): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    clearTimeout(this.preAuthIdleTimer);
    this.binding.release();
    this.entry.meter.connections--;
    this.abandon?.abort();
    if (graceful && this.socket.writable) {
      const socket = this.socket;
      const force = setTimeout(() => socket.destroy(), 5000);
      force.unref();
      socket.end(() => {
        clearTimeout(force);
        socket.destroy();
      });
    } else {
      this.socket.destroy();
    }
    if (this.debugEnabled) this.log().debug({ reason }, 'client connection closed');
    this.resolveClosed();
  }

  private onData(chunk: Buffer): void {
    if (this.closed || this.draining) return;
    let messages: Buffer[];
    try {
      messages = this.framer.push(chunk);
    } catch (err) {
      this.log().warn({ err: (err as Error).message }, 'malformed frame; closing connection');
      // Requests received before the bad length (in flight, queued, or whole in this chunk) are answered
      // first, then the connection closes, as a server reading message by message does.
      messages = err instanceof FramingError ? err.complete : [];
      this.draining = true;
      if (messages.length === 0 && !this.processing) {
        this.close('malformed frame');
        return;
      }
    }
    if (messages.length === 0) return;
    if (this.preAuthIdleTimer) this.armPreAuthIdleTimer();
    this.queue.push(...messages);
    if (this.queue.length > MAX_QUEUED_MESSAGES) this.socket.pause();
    if (!this.processing) void this.pump();
  }

  private async pump(): Promise<void> {
    this.processing = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const msg = this.queue.shift()!;
        if (this.queue.length <= MAX_QUEUED_MESSAGES / 2 && this.socket.isPaused()) this.socket.resume();
        await this.serve(msg);
        if (this.socket.writableNeedDrain && !this.closed) await drained(this.socket);
      }
    } finally {
      this.processing = false;
      if (this.draining) this.close('drained', true);
    }
  }

  /** One request: through the request path (never throws), then metered and logged under the meter it started with. */
  private async serve(msg: Buffer): Promise<void> {
    const meter = this.entry.meter;
    const req = new Request(msg, this.ctx.slowOperationMS, this.timed ? performance.now() : 0);
    this.current = req;
    this.reqLog = undefined;
    try {
      await run(req, this);
    } finally {
      this.current = undefined;
      this.reqLog = undefined;
    }
    // Lines of the connection's logger: the request's fields are in the line itself.
    if (this.timed) observe(req, this, meter, msg.length);
  }

  /** The bytes of a reply to the client (counted in the request's bytes sent). */
  send(req: Request, bytes: Buffer): void {
    req.sent += bytes.length;
    this.socket.write(bytes);
  }

  reply(req: Request, doc: Document): void {
    if (this.closed) return;
    const body = serialize(doc);
    this.send(req, req.opCode === OpCode.QUERY ? encodeOpReply(this.replyIds.take(), req.id, [body]) : encodeOpMsg(this.replyIds.take(), req.id, 0, body));
  }

  nextReplyId(): number {
    return this.replyIds.take();
  }
}

/** Resolves when the socket's write buffer has drained (or it closed): replies wait for a slow reader. */
function drained(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}
