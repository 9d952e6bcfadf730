import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { BSONError, Long, deserialize, serialize, type Document } from 'bson';
import type { Logger } from '../observability/logger.js';
import { MsgFlag, OpCode } from '../wire/constants.js';
import { WireError } from '../wire/errors.js';
import { FramingError, MessageFramer } from '../wire/framer.js';
import { RequestIdCounter } from '../wire/header.js';
import { encodeOpMsg, parseOpMsg, readdressOpMsg, type OpMsg } from '../wire/opmsg.js';
import { encodeOpReply, parseOpQuery } from '../wire/opquery.js';
import { decompressMessage } from '../wire/compression.js';
import { BsonType, findElement, firstKey } from '../wire/bson-bytes.js';
import { replyFailed } from '../wire/reply-status.js';
import { hoistDocumentArray } from '../wire/bson-edit.js';
import { lookupCommand, type CommandSpec } from '../policy/commands.js';
import { decodeDocument, encodeDocument } from '../policy/decode.js';
import type { CursorView, ReplyPlan, RewrittenCommand } from '../policy/handler.js';
import { RoleError, authorize, resolveRoles, type ResolvedRoles } from '../policy/rbac.js';
import { rewriteReply } from '../policy/reply.js';
import { rewriteCommand } from '../policy/rewrite.js';
import { makeScope, type AppScope } from '../policy/scope.js';
import { CommandError, commandError, errorReply } from '../policy/errors.js';
import {
  AcquireAbandonedError,
  UpstreamError,
  sessionKey,
  upstreamRequestIds,
  UpstreamTimeoutError,
  type CursorTarget,
  type UpstreamConnection,
} from '../upstream/index.js';
import { fairUpstreamShare, type ProxyContext } from './context.js';
import { ConnectionAuthenticator, type Identity } from './authentication.js';
import { helloReply, runLocalCommand, MAX_POLICY_WIRE_VERSION, type LocalCommandContext } from './local-commands.js';
import type { AppManifest } from '../apps/manifests.js';
import type { AppRegistry } from '../apps/registry.js';
import type { AppUsage } from './app-usage.js';
import { OUTCOME_LABELS, Outcome, UNKNOWN_COMMAND, type AppMeter, type OutcomeCode, type RejectReason } from '../observability/metrics.js';
import { collectionOf, documentsReturned, replyOutcome } from './reply-facts.js';
import {
  LimitError,
  RATE_EXEMPT,
  allowedCollections,
  checkDataAccess,
  documentTooLarge,
  insertedCount,
  oversizeDocument,
  overUpstreamShare,
  rateLimited,
  tooManyCursors,
  restrictListing,
  tooManyDocuments,
} from './app-limits.js';

/** Commands are decoded without promoting values so that a re-encoded command is byte-identical. */
const DECODE_OPTIONS = { promoteValues: false, bsonRegExp: true } as const;
/** Pipelined requests queued beyond this pause reading from the socket. */
const MAX_QUEUED_MESSAGES = 32;
const HANDSHAKE_COMMANDS = new Set(['hello', 'isMaster', 'ismaster']);

/** After its app is removed, how long an idle connection stays open to tell its next request why. */
const DEFAULT_REMOVED_APP_GRACE_MS = 2000;

/** An error answered before the connection closes (its app was removed, or it is over the connection limit). */
class ClosingError extends CommandError {}
/** The request of a connection whose app was removed: answered with this, then the connection closes. */
class RevokedError extends ClosingError {}
/** The upstream could not be reached before anything was sent (the driver may retry). */
class UnreachableError extends CommandError {}
/**
 * The client closed before its request was sent upstream: it is not sent (its reply could never be
 * delivered). For a write this is one of the outcomes the client must already allow for: it saw a
 * network error, so the write's outcome is unknown to it (a retryable write is retried by the driver).
 */
class ClientGoneError extends UnreachableError {
  constructor() {
    super('ClientDisconnect', 'the client closed its connection before the request was sent upstream; it was not sent', 279);
  }
}

/**
 * How far a request got: an error thrown at each stage is counted as what it means (a rejection and its
 * reason, an error of a command that ran, an upstream failure). See classifyError.
 */
const Stage = {
  /** Framing, decoding, the command table, $db, admin-only commands. */
  PARSE: 0,
  /** The identity gate. */
  AUTH: 1,
  /** The app's manifest in force (removed app, roles no longer valid). */
  APP: 2,
  /** A command answered by the proxy (hello, ping, saslStart, ...). */
  LOCAL: 3,
  /** limits.connections and limits.operations_per_second. */
  LIMITS: 4,
  /** The scoping policy (and the command table's own checks). */
  POLICY: 5,
  RBAC: 6,
  /** data_access and the document limits of the manifest. */
  MANIFEST: 7,
  /** Routing and the upstream round trip. */
  FORWARD: 8,
} as const;
type StageCode = (typeof Stage)[keyof typeof Stage];

/** The app a request runs as: the manifest in force now and the identity's roles resolved against it. */
interface LiveApp {
  readonly manifest: AppManifest;
  readonly roles: ResolvedRoles;
}

/** The app's share of the upstream a request runs under (limits.upstream_connections, limits.open_cursors). */
interface UpstreamShare {
  readonly usage: AppUsage;
  readonly connections: number;
  readonly cursors: number;
}

/**
 * One client connection: frames and decodes its messages, answers the handshake, applies the command
 * table and forwards allowed commands upstream, one request at a time (as a server does per connection).
 */
export class ClientConnection {
  private remote: string | undefined;
  private readonly framer: MessageFramer;
  private readonly queue: Buffer[] = [];
  private readonly replyIds = new RequestIdCounter();
  /** The connection's logger (conn, and app_id once authenticated): made when a first line is written. */
  private logCache: Logger | undefined;
  /** The app_id its lines carry: set once the authentication's own line is written (onAuthenticated). */
  private loggedApp: string | undefined;
  private processing = false;
  private draining = false;
  private closed = false;
  /** Aborted when the connection closes: its requests waiting for an upstream connection leave the pool's queue. */
  private abandon: AbortController | undefined;
  /** The client ended its side of the connection (FIN): see onPeerEnd. */
  private peerEnded = false;
  /** Who this connection is (issue 3 item 1): set by the handshake's appName or by saslStart. */
  private readonly auth: ConnectionAuthenticator;
  /** Closes the connection if it stays unauthenticated and silent (DESIGN.md rule 7). */
  private preAuthIdleTimer: NodeJS.Timeout | undefined;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;
  /** The app's usage entry, counted in its connections while this connection is authenticated. */
  private usage: AppUsage | undefined;
  /** Counted in the app's active connections (limits.connections) since its first app command. */
  private active = false;
  /** The manifest the last request ran with, and the roles resolved against it (re-resolved on change). */
  private live: LiveApp | undefined;
  /** Set when the connection's app was removed (or its dev identity no longer allowed): why. */
  private revoked: string | undefined;
  private revokeTimer: NodeJS.Timeout | undefined;

  // ---- Observability (issue 5). The meter counts this connection's requests under its app's label
  // (the unauthenticated one until it authenticates); `instrumented` is the runtime's `metrics` setting;
  // requests are timed when the metrics or a slow-operation line may need it.
  private meter: AppMeter;
  private readonly instrumented: boolean;
  private readonly timed: boolean;
  private readonly debugEnabled: boolean;
  private readonly warnEnabled: boolean;
  // The request being handled (one at a time): plain fields, reset per request, nothing allocated.
  private inRequest = false;
  /** The client's requestId of the message being handled (logged as `req`). */
  private reqId = 0;
  /** A logger with `req` too, made only when a line is written during the request. */
  private reqLog: Logger | undefined;
  private reqStart = 0;
  /** The command label: a canonical name of the command table, or 'unknown'. */
  private reqCommand = UNKNOWN_COMMAND;
  private reqCmd: Document | undefined;
  private reqStage: StageCode = Stage.PARSE;
  private reqOutcome: OutcomeCode = Outcome.OK;
  private reqReason: RejectReason | undefined;
  private reqErrorCode: number | undefined;
  /** Time waiting for upstream replies (ms); < 0: nothing was sent upstream. */
  private reqUpstreamMS = -1;
  /** The upstream reply body (for the documents count of a slow-operation line). */
  private reqReply: Buffer | undefined;
  /** Whether reqReply failed, when the forwarding path already knows (see forward). */
  private reqReplyFailed: boolean | undefined;
  private reqSent = 0;
  private reqSlowMS = 0;
  /** The app's upstream share the request's round trips count against (undefined: not an app's command). */
  private reqShare: UpstreamShare | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly ctx: ProxyContext,
    readonly id: number,
  ) {
    // Until the connection authenticates, only small messages are read (raised in onAuthenticated).
    this.framer = new MessageFramer(ctx.limits.preAuthMaxMessageSize);
    this.meter = ctx.metrics.unauthenticated;
    this.meter.connections++;
    this.instrumented = ctx.metrics.enabled;
    this.warnEnabled = ctx.logger.isLevelEnabled('warn');
    this.debugEnabled = ctx.logger.isLevelEnabled('debug');
    this.timed = this.instrumented || this.warnEnabled;
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

  /** The app this connection acts as, if any. */
  get appSlug(): string | undefined {
    return this.auth.identity?.app.slug;
  }

  /** The authenticated identity (app, sub, roles), if any. */
  get identity(): Identity | undefined {
    return this.auth.identity;
  }

  /**
   * limits.connections counts the app's active connections: those that have sent an app command.
   * Driver monitoring connections (hello only, authenticated by an appName token) do not count. The
   * first app command of a connection beyond the limit is answered AuthenticationFailed (18) with the
   * reason, and the connection closes; a lowered limit leaves the connections already counted open.
   */
  private activate(app: AppManifest, usage: AppUsage): void {
    const limit = app.limits.connections;
    if (limit !== undefined && usage.activeConnections >= limit) {
      usage.refused++;
      throw new ClosingError(
        'AuthenticationFailed',
        `app '${app.slug}' has reached its limit of ${limit} connections (limits.connections); this connection is closed. ` +
          "Close idle clients, or keep the driver's maxPoolSize within the limit",
        18,
      );
    }
    usage.activeConnections++;
    this.active = true;
  }

  /**
   * The app this request runs as: the manifest in force now, looked up by slug (a reload applies to
   * the next request), with the token's roles claim resolved against its roles. Throws RevokedError
   * when the app was removed, Unauthorized when the token's roles no longer exist.
   */
  private liveApp(identity: Identity): LiveApp {
    if (this.revoked) throw new RevokedError('Unauthorized', this.revoked, 13);
    const manifest = this.ctx.apps.current.get(identity.app.slug);
    const gone = this.revocationReason(identity, manifest);
    if (gone !== undefined || manifest === undefined) {
      this.revoke(gone ?? `app '${identity.app.slug}' was removed`);
      throw new RevokedError('Unauthorized', this.revoked!, 13);
    }
    if (this.live?.manifest === manifest) return this.live;
    let roles: ResolvedRoles;
    if (manifest === identity.app) roles = identity.roles;
    else {
      try {
        roles = resolveRoles(manifest.rbac, identity.rolesClaim);
      } catch (err) {
        if (!(err instanceof RoleError)) throw err;
        throw commandError('Unauthorized', `the roles of this connection's token are no longer valid for app '${manifest.slug}': ${err.message}; connect with a new token`);
      }
    }
    this.live = { manifest, roles };
    return this.live;
  }

  /** Why this connection may no longer act as its app under `manifest` (undefined: it may). */
  private revocationReason(identity: Identity, manifest: AppManifest | undefined): string | undefined {
    if (!manifest) return `app '${identity.app.slug}' was removed from the configuration; this connection is closed`;
    if (identity.transport === 'dev' && manifest.authRequired) {
      return `app '${manifest.slug}' now requires authentication (auth_required: true); this connection selected it by appName only and is closed`;
    }
    return undefined;
  }

  /** After a manifest reload: starts closing the connection if its app is gone. */
  appsChanged(registry: AppRegistry): void {
    const identity = this.auth.identity;
    if (!identity || this.closed || this.revoked) return;
    const reason = this.revocationReason(identity, registry.get(identity.app.slug));
    if (reason) this.revoke(reason);
  }

  /**
   * Stops serving the app: the request in progress finishes; the next request is answered with the
   * reason (Unauthorized) and the connection closes; an idle connection closes after a short grace.
   */
  private revoke(reason: string): void {
    if (this.revoked || this.closed) return;
    this.revoked = reason;
    this.rlog.warn({ reason, file: this.auth.identity?.app.file }, `closing connection: ${reason}`);
    this.revokeTimer = setTimeout(() => void this.drain(), this.ctx.limits.removedAppGraceMS ?? DEFAULT_REMOVED_APP_GRACE_MS);
    this.revokeTimer.unref();
  }

  private onAuthenticated(identity: Identity): void {
    // A new identity (re-authentication) resolves its own roles on the next request.
    this.live = undefined;
    if (!this.usage) {
      this.usage = this.ctx.usage.get(identity.app.slug);
      this.usage.connections++;
    }
    if (this.meter === this.ctx.metrics.unauthenticated) {
      this.meter.connections--;
      this.meter = this.ctx.metrics.app(identity.app.slug);
      this.meter.connections++;
    }
    this.framer.maxMessageSize = this.ctx.limits.maxMessageSize;
    clearTimeout(this.preAuthIdleTimer);
    this.preAuthIdleTimer = undefined;
    this.loggedApp = identity.app.slug;
    this.logCache = undefined;
    this.reqLog = undefined;
  }

  /**
   * The logger for a line about this connection (conn, and app_id once authenticated). Child loggers
   * cost (pino serializes their bindings when made), so one is made only when a line is written: most
   * connections write one line, or none.
   */
  private get log(): Logger {
    return (this.logCache ??= this.ctx.logger.child(this.logBindings()));
  }

  /** The logger for a line about this connection: with `req` too while a request is being handled. */
  private get rlog(): Logger {
    if (!this.inRequest) return this.log;
    // One child of the root logger (not a child of the connection's): the same fields, one serialization.
    return (this.reqLog ??= this.ctx.logger.child({ ...this.logBindings(), req: this.reqId }));
  }

  private logBindings(): { conn: number; app_id?: string } {
    const slug = this.loggedApp;
    return slug === undefined ? { conn: this.id } : { conn: this.id, app_id: slug };
  }

  /** What rlog binds, as a fresh object of fields (for the authenticator's lines). */
  private lineFields(): Record<string, unknown> {
    const fields: Record<string, unknown> = this.logBindings();
    if (this.inRequest) fields.req = this.reqId;
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
      this.log.info({ idle_ms: ms }, 'closing a connection that did not authenticate and sent nothing');
      this.close('idle before authentication');
    }, ms);
    this.preAuthIdleTimer.unref();
  }

  /** Resolves when the connection is closed. */
  get done(): Promise<void> {
    return this.closedPromise;
  }

  /**
   * The client ended its side (FIN): a driver does that only when it destroys the socket, so it is
   * treated as a disconnect, as mongod does (its operations are killed with ClientDisconnect once it
   * sees end-of-stream): what is still to be sent upstream is not sent (its request waiting for a pool
   * connection leaves the queue) and is answered ClientDisconnect; a reply already on its way is still
   * written, for a client that only half-closed, but a cursor it opens is killed (see trackCursors).
   * Then the connection closes.
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
    clearTimeout(this.revokeTimer);
    if (this.usage) {
      this.usage.connections--;
      if (this.active) this.usage.activeConnections--;
      this.usage = undefined;
      this.active = false;
    }
    this.meter.connections--;
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
    if (this.debugEnabled) this.rlog.debug({ reason }, 'client connection closed');
    this.resolveClosed();
  }

  private onData(chunk: Buffer): void {
    if (this.closed || this.draining) return;
    let messages: Buffer[];
    try {
      messages = this.framer.push(chunk);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'malformed frame; closing connection');
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
        if (this.socket.writableNeedDrain && !this.closed) {
          await new Promise<void>((resolve) => {
            const done = () => {
              this.socket.off('drain', done);
              this.socket.off('close', done);
              resolve();
            };
            this.socket.on('drain', done);
            this.socket.on('close', done);
          });
        }
      }
    } finally {
      this.processing = false;
      if (this.draining) this.close('drained', true);
    }
  }

  /**
   * One request: handled (never throws), then counted and logged. The metrics get the outcome, the
   * time at the proxy and upstream, and the bytes; the log a debug line per command and a warn line
   * when it was slower than the app's slow_operation_ms.
   */
  private async serve(msg: Buffer): Promise<void> {
    const meter = this.meter;
    this.inRequest = true;
    this.reqId = msg.readInt32LE(4);
    this.reqLog = undefined;
    this.reqCommand = UNKNOWN_COMMAND;
    this.reqCmd = undefined;
    this.reqStage = Stage.PARSE;
    this.reqOutcome = Outcome.OK;
    this.reqReason = undefined;
    this.reqErrorCode = undefined;
    this.reqUpstreamMS = -1;
    this.reqReply = undefined;
    this.reqSent = 0;
    this.reqSlowMS = this.ctx.slowOperationMS;
    this.reqShare = undefined;
    this.reqStart = this.timed ? performance.now() : 0;
    try {
      await this.handleMessage(msg);
      if (this.timed) this.account(meter, msg.length);
    } finally {
      this.inRequest = false;
      this.reqLog = undefined;
      this.reqCmd = undefined;
      this.reqReply = undefined;
      this.reqReplyFailed = undefined;
    }
  }

  /** Counts and logs the request just handled (see serve). */
  private account(meter: AppMeter, received: number): void {
    const end = performance.now();
    const ms = end - this.reqStart;
    const slow = this.reqSlowMS > 0 && ms > this.reqSlowMS && this.warnEnabled;
    let outcome = this.reqOutcome;
    if (outcome === Outcome.OK && this.reqReply && (this.instrumented || this.debugEnabled || slow)) {
      if (this.reqReplyFailed !== undefined) outcome = this.reqReplyFailed ? Outcome.ERROR : Outcome.OK;
      else {
        try {
          outcome = replyOutcome(this.reqReply);
        } catch {
          outcome = Outcome.ERROR;
        }
      }
    }
    if (this.instrumented) {
      meter.bytesReceived += received;
      meter.bytesSent += this.reqSent;
      meter.request(meter.cell(this.reqCommand), outcome, ms, this.reqUpstreamMS, end);
      if (outcome === Outcome.REJECTED && this.reqReason !== undefined) meter.reject(this.reqReason);
    }
    if (this.debugEnabled) {
      this.log.debug(
        {
          req: this.reqId,
          cmd: this.reqCommand,
          collection: collectionOf(this.reqCmd),
          duration_ms: round3(ms),
          ...(this.reqUpstreamMS >= 0 ? { upstream_ms: round3(this.reqUpstreamMS) } : {}),
          outcome: OUTCOME_LABELS[outcome],
          ...(this.reqReason !== undefined ? { reason: this.reqReason } : {}),
          ...(this.reqErrorCode !== undefined ? { code: this.reqErrorCode } : {}),
        },
        'command',
      );
    }
    if (slow) {
      let docs: number | undefined;
      try {
        docs = this.reqReply ? documentsReturned(this.reqReply) : undefined;
      } catch {
        docs = undefined;
      }
      this.log.warn(
        {
          req: this.reqId,
          cmd: this.reqCommand,
          collection: collectionOf(this.reqCmd),
          duration_ms: round3(ms),
          ...(this.reqUpstreamMS >= 0 ? { upstream_ms: round3(this.reqUpstreamMS) } : {}),
          docs,
          outcome: OUTCOME_LABELS[outcome],
          threshold_ms: this.reqSlowMS,
        },
        'slow operation',
      );
    }
  }

  /** What an error thrown while handling the request means for the metrics (outcome, rejection reason). */
  private classifyError(err: unknown): void {
    if (err instanceof CommandError || err instanceof WireError) this.reqErrorCode = err.code;
    if (err instanceof LimitError && err.reason !== undefined) {
      this.reqOutcome = Outcome.REJECTED;
      this.reqReason = err.reason;
      return;
    }
    if (err instanceof UpstreamError || err instanceof UnreachableError) {
      this.reqOutcome = Outcome.FAILED;
      return;
    }
    const stage = this.reqStage;
    if (stage === Stage.LOCAL) {
      this.reqOutcome = Outcome.ERROR;
      return;
    }
    if (stage === Stage.FORWARD) {
      // The only refusal after routing: a cursor the app does not hold (nothing was sent).
      if (err instanceof CommandError && err.code === 43) {
        this.reqOutcome = Outcome.REJECTED;
        this.reqReason = 'cursor_not_found';
      } else this.reqOutcome = Outcome.ERROR;
      return;
    }
    if (!(err instanceof CommandError || err instanceof WireError || err instanceof BSONError)) {
      this.reqOutcome = Outcome.ERROR;
      return;
    }
    this.reqOutcome = Outcome.REJECTED;
    this.reqReason ??= rejectReason(stage, err);
  }

  /** The bytes of a reply to the client (counted for the metrics). */
  private send(bytes: Buffer): void {
    this.reqSent += bytes.length;
    this.socket.write(bytes);
  }

  private async handleMessage(msg: Buffer, compressed = false): Promise<void> {
    const opCode = msg.readInt32LE(12);
    const requestId = msg.readInt32LE(4);
    try {
      switch (opCode) {
        case OpCode.MSG:
          return await this.handleOpMsg(msg);
        case OpCode.QUERY:
          return await this.handleOpQuery(msg);
        case OpCode.COMPRESSED:
          if (compressed) throw new WireError('nested OP_COMPRESSED', 17, 'ProtocolError', 'close');
          // The same limit as the framer's: small before authentication.
          return await this.handleMessage(await decompressMessage(msg, this.framer.maxMessageSize), true);
        default:
          throw new WireError(`unsupported opcode ${opCode}`, 17, 'ProtocolError', 'close');
      }
    } catch (err) {
      this.handleError(err, requestId, opCode, msg);
    }
  }

  private handleError(err: unknown, requestId: number, opCode: number, msg: Buffer): void {
    if (this.timed) this.classifyError(err);
    if (err instanceof UpstreamError) {
      // The request may or may not have run upstream: close so the driver retries on a fresh connection.
      this.rlog.warn({ err: err.message }, 'upstream failed mid-request; closing client connection');
      this.close('upstream failure');
      return;
    }
    let reply: Document;
    let closeAfter = false;
    if (err instanceof WireError) {
      if (err.disposition === 'close') {
        this.rlog.warn({ err: err.message, opCode }, 'malformed message; closing connection');
        this.close(err.message);
        return;
      }
      closeAfter = err.disposition === 'replyAndClose';
      reply = errorReply(err);
    } else if (err instanceof CommandError) {
      reply = errorReply(err);
      if (err instanceof LimitError) Object.assign(reply, err.extra);
      // The app was removed, or the connection is over its app's limit: this answer says so, then it closes.
      if (err instanceof ClosingError) closeAfter = true;
    } else if (err instanceof BSONError) {
      reply = errorReply({ code: 22, codeName: 'InvalidBSON', message: `invalid BSON in command: ${err.message}` });
    } else {
      this.rlog.error({ err }, 'internal error handling a request');
      reply = errorReply({ code: 1, codeName: 'InternalError', message: 'internal error in mdb-runtime' });
    }
    // A moreToCome request gets no reply, even an error.
    const moreToCome = opCode === OpCode.MSG && msg.length >= 20 && (msg.readUInt32LE(16) & MsgFlag.MORE_TO_COME) !== 0;
    if (!moreToCome) this.reply(opCode, requestId, reply);
    if (closeAfter) this.close(err instanceof ClosingError ? err.message : 'fatal message error', true);
  }

  private reply(opCode: number, responseTo: number, doc: Document): void {
    if (this.closed) return;
    const body = serialize(doc);
    const bytes =
      opCode === OpCode.QUERY
        ? encodeOpReply(this.replyIds.take(), responseTo, [body])
        : encodeOpMsg(this.replyIds.take(), responseTo, 0, body);
    this.send(bytes);
  }

  private async handleOpQuery(msg: Buffer): Promise<void> {
    const query = parseOpQuery(msg);
    let cmd: Document = deserialize(query.query, DECODE_OPTIONS);
    if (cmd.$query && typeof cmd.$query === 'object') cmd = cmd.$query as Document;
    const name = Object.keys(cmd)[0] ?? '';
    if (HANDSHAKE_COMMANDS.has(name)) this.reqCommand = 'hello';
    if (query.fullCollectionName !== 'admin.$cmd' || !HANDSHAKE_COMMANDS.has(name)) {
      throw new CommandError(
        'UnsupportedOpQueryCommand',
        `Unsupported OP_QUERY command: ${name || query.fullCollectionName}. The client driver may require an upgrade; mdb-runtime accepts OP_QUERY only for the handshake on admin.$cmd`,
        352,
      );
    }
    this.reqStage = Stage.LOCAL;
    const extra = await this.auth.onHello(cmd);
    this.reply(OpCode.QUERY, query.requestId, { ...helloReply(cmd, name, this.localContext()), ...extra });
  }

  private async handleOpMsg(msg: Buffer): Promise<void> {
    const parsed = withInsertedDocumentsAsSequence(parseOpMsg(msg));
    const moreToCome = (parsed.flags & MsgFlag.MORE_TO_COME) !== 0;
    const cmd = decodeDocument(parsed.body);
    const name = Object.keys(cmd)[0] ?? '';
    const spec = lookupCommand(name);
    this.reqCmd = cmd;
    if (!spec) {
      this.reqReason = 'unknown_command';
      throw commandError('CommandNotFound', `no such command: '${name}'`);
    }
    this.reqCommand = spec.name;
    if (spec.refused) {
      this.reqReason = spec.refused === 'QueryFeatureNotAllowed' ? 'server_js' : 'server_wide';
      throw commandError(spec.refused, `${name} is not allowed by mdb-runtime. ${spec.help}`);
    }
    const db = cmd.$db;
    if (typeof db !== 'string' || db.length === 0) {
      throw new CommandError('Location40571', 'OP_MSG requests require a $db argument', 40571);
    }
    // ---- Identity gate (issue 3 item 1): unauthenticated connections run only pre-auth commands; an
    // expired token gets ReauthenticationRequired (MONGODB-OIDC) or AuthenticationFailed. ----
    this.reqStage = Stage.AUTH;
    this.auth.check(spec.name, spec.preAuth === true);
    // ---- The app as configured now (hot reload): removed → this request is refused and the connection closes.
    const authenticated = this.auth.identity;
    this.reqStage = Stage.APP;
    const live = authenticated ? this.liveApp(authenticated) : undefined;
    if (live) this.reqSlowMS = live.manifest.observability.slowOperationMs ?? this.ctx.slowOperationMS;
    this.reqStage = Stage.PARSE;
    if (spec.adminOnly && db !== 'admin') {
      throw commandError('Unauthorized', `${name} may only be run against the admin database.`);
    }
    this.reqStage = Stage.POLICY;
    spec.check?.(cmd);

    if (spec.local) {
      this.reqStage = Stage.LOCAL;
      let reply: Document;
      if (spec.local === 'sasl') reply = name === 'saslStart' ? await this.auth.saslStart(cmd) : this.auth.saslContinue(cmd);
      else if (spec.local === 'hello') {
        // Handshake fields first (appName, speculativeAuthenticate), then the reply that reflects them.
        const extra = await this.auth.onHello(cmd);
        reply = { ...runLocalCommand('hello', cmd, name, this.localContext()), ...extra };
      } else reply = runLocalCommand(spec.local, cmd, name, this.localContext());
      if (!moreToCome) this.reply(OpCode.MSG, parsed.requestId, reply);
      return;
    }
    const identity = this.auth.identity;
    if (!identity || !live) {
      // The two forwarded commands allowed before authentication: buildInfo holds no app data and goes
      // upstream as sent; endSessions has no app's sessions to end.
      if (spec.name === 'endSessions') {
        if (!moreToCome) this.reply(OpCode.MSG, parsed.requestId, { ok: 1 });
        return;
      }
      // A fresh command, not the client's bytes: nothing of an unauthenticated client (session ids,
      // transaction numbers, kind-1 sections) reaches the upstream.
      this.reqStage = Stage.FORWARD;
      const out = encodeOpMsg(0, 0, parsed.flags & MsgFlag.MORE_TO_COME, encodeDocument({ buildInfo: 1, $db: 'admin' }));
      const reply = await this.roundTrip(await this.routeToPrimary({}, spec), out, moreToCome);
      if (reply && this.timed) this.noteReply(parseOpMsg(reply).body);
      if (reply && !this.closed) this.send(readdressOpMsg(reply, this.replyIds.take(), parsed.requestId));
      return;
    }
    const app = live.manifest;
    const usage = this.usage ?? this.ctx.usage.get(app.slug);
    this.reqStage = Stage.LIMITS;
    if (!this.active) this.activate(app, usage);
    // ---- limits.operations_per_second: one bucket per app, before any work is done for the command.
    const rate = app.limits.operationsPerSecond;
    if (rate !== undefined && !RATE_EXEMPT.has(spec.name)) {
      const wait = usage.admit(rate);
      if (wait > 0) {
        usage.refused++;
        throw rateLimited(app, rate, wait);
      }
    }
    // ---- Scoping (issue 3): the policy layer rewrites the command for the app, RBAC checks what it touches.
    this.reqStage = Stage.POLICY;
    const scope = this.scopeFor(app.slug, app.exposeTag);
    let rewritten = rewriteCommand(scope, spec, name, cmd, parsed.sequences);
    this.reqStage = Stage.RBAC;
    authorize(live.roles, rewritten.access, name);
    // ---- data_access and the document limits of the manifest (issue 4).
    this.reqStage = Stage.MANIFEST;
    try {
      rewritten = this.applyManifestLimits(app, spec, name, cmd, parsed.sequences, rewritten);
      if (app.limits.maxDocumentsPerCollection !== undefined && this.ctx.documentCounts && spec.name === 'insert') {
        await this.admitDocuments(app, scope, cmd, parsed.sequences, rewritten);
      }
    } catch (err) {
      usage.refused++;
      throw err;
    }
    this.reqStage = Stage.FORWARD;
    this.reqShare = {
      usage,
      connections: app.limits.upstreamConnections ?? fairUpstreamShare(this.ctx.limits.upstreamPoolSize, this.ctx.apps.current.size),
      cursors: app.limits.openCursors ?? this.ctx.limits.openCursorsPerApp,
    };
    await this.forward(scope, rewritten, parsed, cmd, spec, moreToCome);
    usage.served(this.timed ? this.reqStart : undefined);
  }

  /** An upstream reply body: its outcome and documents are read from it when the request is counted or logged. */
  private noteReply(body: Buffer, failed?: boolean): void {
    this.reqReply = body;
    this.reqReplyFailed = failed;
  }

  /**
   * data_access (read_only, collections) on what the policy layer says the command touches, then
   * max_document_bytes on the documents the app sent whole, then max_documents_per_collection for
   * inserts (src/session/app-limits.ts). Returns the command, its listing narrowed when the app is
   * restricted to some collections.
   */
  private applyManifestLimits(
    app: AppManifest,
    spec: CommandSpec,
    name: string,
    cmd: Document,
    sequences: OpMsg['sequences'],
    rewritten: RewrittenCommand,
  ): RewrittenCommand {
    checkDataAccess(app, rewritten.access, name);
    const allowed = allowedCollections(app.dataAccess);
    if (allowed && spec.name === 'listCollections') rewritten = { ...rewritten, reply: restrictListing(rewritten.reply, allowed) };
    const { maxDocumentBytes } = app.limits;
    if (maxDocumentBytes !== undefined) {
      const big = oversizeDocument(spec.name, cmd, sequences, maxDocumentBytes);
      if (big) throw documentTooLarge(app, big, maxDocumentBytes);
    }
    return rewritten;
  }

  /** max_documents_per_collection for an insert (asks the document counts: the one asynchronous check). */
  private async admitDocuments(
    app: AppManifest,
    scope: AppScope,
    cmd: Document,
    sequences: OpMsg['sequences'],
    rewritten: RewrittenCommand,
  ): Promise<void> {
    const max = app.limits.maxDocumentsPerCollection;
    const counts = this.ctx.documentCounts;
    if (max === undefined || !counts) return;
    const collection = rewritten.access[0]?.collection;
    const adding = insertedCount(cmd, sequences);
    if (collection !== undefined && adding > 0) {
      const verdict = await counts.admit(scope.prefix + collection, max, adding);
      if (!verdict.ok) throw tooManyDocuments(app, collection, verdict.count, adding, max);
    }
  }

  private scope: AppScope | undefined;

  /** The app's scope, built once per connection (a connection never changes app). */
  private scopeFor(slug: string, exposeTag: boolean): AppScope {
    if (this.scope?.slug !== slug || this.scope.exposeTag !== exposeTag) {
      this.scope = makeScope(slug, this.ctx.scoping.database, this.ctx.scoping.tagField, exposeTag);
    }
    return this.scope;
  }

  private localContext(): LocalCommandContext {
    const identity = this.auth.identity;
    const roles = this.live?.roles ?? identity?.roles;
    const self = this;
    return {
      connectionId: this.id,
      // Only whatsmyuri says it: read then (a getpeername system call otherwise made per connection).
      get remoteAddress() {
        return self.remoteAddress;
      },
      upstreamMaxWireVersion: this.ctx.upstream.topology.maxWireVersion() ?? MAX_POLICY_WIRE_VERSION,
      maxMessageSize: this.ctx.limits.maxMessageSize,
      logicalSessionTimeoutMinutes: this.ctx.limits.logicalSessionTimeoutMinutes,
      authenticatedUser: identity ? { user: identity.sub ?? identity.app.slug, db: '$external' } : undefined,
      authenticatedUserRoles: roles ? roles.names.map((role) => ({ role, db: '$external' })) : [],
    };
  }

  private get owner(): string {
    return this.auth.identity?.app.slug ?? '';
  }

  private async forward(
    scope: AppScope,
    rewritten: RewrittenCommand,
    parsed: OpMsg,
    cmd: Document,
    spec: CommandSpec,
    moreToCome: boolean,
  ): Promise<void> {
    const upstream = this.ctx.upstream;
    let address: string;
    let plan: ReplyPlan = rewritten.reply;
    if (spec.target === 'cursor') {
      if (spec.cursor === 'kills') return this.killCursors(scope, rewritten, parsed, cmd, moreToCome);
      const id = toBigInt(cmd.getMore);
      // Another app's cursor does not exist for this one (DESIGN.md rule 5).
      const entry = id === undefined ? undefined : upstream.cursors.lookup(id, scope.slug);
      if (!entry) throw commandError('CursorNotFound', `cursor id ${String(id ?? cmd.getMore)} not found`);
      address = entry.address;
      plan = { kind: 'cursor', view: entry.view as CursorView, collections: rewritten.reply.collections };
      if (entry.awaitData) this.capAwaitTime(rewritten.body);
    } else {
      address = this.routeNow(cmd, spec) ?? (await this.routeToPrimary(cmd, spec));
    }
    if (spec.name === 'endSessions' || spec.name === 'killSessions') this.endSessionCursors(scope.slug, rewritten.body[spec.name]);

    const out = encodeOpMsg(0, 0, parsed.flags & MsgFlag.MORE_TO_COME, encodeDocument(rewritten.body), rewritten.sequences);
    const reply = await this.roundTrip(address, out, moreToCome, requestTimeout(this.ctx.limits.upstreamRequestTimeoutMS, rewritten.body.maxTimeMS));
    if (!reply) return;
    const replyMsg = parseOpMsg(reply);
    // One walk of the reply's top level tells both the rewrite and the metrics whether it failed.
    const failed = replyFailed(replyMsg.body);
    if (this.timed) this.noteReply(replyMsg.body, failed);
    if (spec.cursor && plan.kind === 'cursor') {
      const lsid = spec.cursor === 'opens' ? rewritten.body.lsid : undefined;
      if (!this.trackCursors(spec, cmd, replyMsg.body, address, scope.slug, plan.view, lsid)) {
        const share = this.reqShare!;
        share.usage.cursorRefusals++;
        share.usage.refused++;
        throw tooManyCursors(scope.slug, share.cursors);
      }
    }
    if (this.closed) return;
    if (spec.name === 'endSessions' && errorCode(replyMsg.body) === 59) {
      // An upstream without sessions (FerretDB v1): the proxy advertises sessions and has ended what it
      // tracks of them (their cursors), so the command succeeded as far as the client can tell.
      this.reqReply = undefined;
      this.reply(OpCode.MSG, parsed.requestId, { ok: 1 });
      return;
    }
    const body = rewriteReply(scope, plan, replyMsg.body, failed);
    this.send(
      body === replyMsg.body
        ? readdressOpMsg(reply, this.replyIds.take(), parsed.requestId)
        : encodeOpMsg(this.replyIds.take(), parsed.requestId, 0, body),
    );
  }

  /**
   * routeToPrimary without a promise when it can answer at once (no transaction to pin, a writable
   * server known): the common case of every request. Undefined: ask routeToPrimary.
   */
  private routeNow(cmd: Document, spec: CommandSpec): string | undefined {
    if (cmd.startTransaction === true || cmd.autocommit === false || spec.transactionControl) return undefined;
    return this.ctx.upstream.selectNow()?.address;
  }

  /**
   * A getMore of an awaitData cursor (tailable, change stream) waits upstream for its maxTimeMS while
   * it holds an upstream connection: the wait is capped (upstream.max_await_time_ms). The server may
   * answer an awaitData getMore early with an empty batch at any time, so drivers just ask again.
   */
  private capAwaitTime(body: Document): void {
    const cap = this.ctx.limits.maxAwaitTimeMS;
    const asked = numeric(body.maxTimeMS);
    if (asked === undefined || asked <= cap) return;
    body.maxTimeMS = cap;
    if (this.reqShare) this.reqShare.usage.awaitCapped++;
  }

  /** The writable server, or the one this command's transaction is pinned to. */
  private async routeToPrimary(cmd: Document, spec: CommandSpec): Promise<string> {
    const upstream = this.ctx.upstream;
    // Only commands of a transaction are pinned or pin: the key (hex of the session id) is made for them alone.
    const inTransaction = cmd.startTransaction === true || cmd.autocommit === false || spec.transactionControl === true;
    const pinKey = inTransaction ? this.transactionKey(cmd) : undefined;
    if (pinKey !== undefined && cmd.startTransaction !== true && (cmd.autocommit === false || spec.transactionControl)) {
      const pinned = upstream.pins.lookup(pinKey);
      if (pinned) return pinned;
    }
    let address: string;
    try {
      address = (await upstream.select()).address;
    } catch (err) {
      throw retryableUnavailable((err as Error).message);
    }
    if (pinKey !== undefined && cmd.startTransaction === true) upstream.pins.pin(pinKey, address);
    return address;
  }

  private transactionKey(cmd: Document): string | undefined {
    const session = sessionKey(cmd.lsid);
    return session === undefined ? undefined : `${this.owner}\0${session}`;
  }

  /**
   * Sends one message to `address` and returns the reply's bytes (undefined for moreToCome), holding
   * one of the app's upstream slots (limits.upstream_connections) and one pooled connection meanwhile.
   * A moreToCome write gives its connection back as soon as it is written: nothing is waited for, and a
   * connection held for the client's next request would let idle clients take the whole pool (the
   * upstream reads a connection's messages in order; a reply FerretDB sends to it is skipped by the
   * next request's round trip). A reply later than `timeoutMS` fails with NetworkTimeout (89) and the
   * upstream connection is closed.
   */
  private async roundTrip(address: string, msg: Buffer, moreToCome: boolean, timeoutMS = this.ctx.limits.upstreamRequestTimeoutMS): Promise<Buffer | undefined> {
    if (this.closed || this.peerEnded) throw new ClientGoneError();
    const share = this.reqShare;
    if (share) {
      const slot = share.usage.takeUpstreamSlot(
        share.connections,
        this.ctx.limits.upstreamWaitQueueTimeoutMS,
        (this.abandon ??= new AbortController()).signal,
        () => overUpstreamShare(share.usage.slug, share.connections, this.ctx.limits.upstreamWaitQueueTimeoutMS),
        () => new ClientGoneError(),
      );
      if (slot !== true) await slot;
    }
    try {
      return await this.roundTripOnPool(address, msg, moreToCome, timeoutMS);
    } finally {
      share?.usage.releaseUpstreamSlot(share.connections);
    }
  }

  private async roundTripOnPool(address: string, msg: Buffer, moreToCome: boolean, timeoutMS: number): Promise<Buffer | undefined> {
    const pool = this.ctx.upstream.pool(address);
    let conn: UpstreamConnection;
    if (this.closed || this.peerEnded) throw new ClientGoneError();
    try {
      // A request whose client closes while it waits in the pool's queue leaves the queue.
      conn = pool.tryAcquire() ?? (await pool.acquire((this.abandon ??= new AbortController()).signal));
    } catch (err) {
      if (err instanceof AcquireAbandonedError) throw new ClientGoneError();
      // Nothing was sent: the client may safely retry, reads and writes alike.
      throw retryableUnavailable((err as Error).message);
    }
    if (this.closed || this.peerEnded) {
      // The client closed while this request waited (for a connection, a route, a document count):
      // nobody could receive its reply, so it is not sent (see ClientGoneError for writes).
      pool.release(conn);
      throw new ClientGoneError();
    }
    const requestId = upstreamRequestIds.take();
    const out = readdressOpMsg(msg, requestId, 0);
    if (moreToCome) {
      try {
        conn.send(out);
      } catch (err) {
        pool.discard(conn);
        throw err;
      }
      pool.release(conn);
      return undefined;
    }
    try {
      const sent = this.timed ? performance.now() : 0;
      const reply = await conn.roundTrip(out, requestId, timeoutMS);
      if (this.timed) this.reqUpstreamMS = Math.max(0, this.reqUpstreamMS) + (performance.now() - sent);
      pool.release(conn);
      return reply;
    } catch (err) {
      pool.discard(conn);
      if (err instanceof UpstreamTimeoutError) {
        if (this.reqShare) this.reqShare.usage.upstreamTimeouts++;
        throw upstreamTimedOut(err.timeoutMS);
      }
      throw err;
    }
  }

  /**
   * endSessions / killSessions: the sessions' cursors are killed upstream and forgotten, as a server
   * does when a session ends (FerretDB v1 has no sessions: its cursors would stay open). `sessions` are
   * the mapped lsids the command carries; the command itself is then forwarded as sent.
   */
  private endSessionCursors(owner: string, sessions: unknown): void {
    if (!Array.isArray(sessions)) return;
    const keys: string[] = [];
    for (const lsid of sessions) {
      const key = sessionKey(lsid);
      if (key !== undefined) keys.push(key);
    }
    const ended = this.ctx.upstream.cursors.endSessions(owner, keys);
    if (ended.length > 0) void this.ctx.upstream.killCursors(ended, 'session_ended');
  }

  /**
   * Records cursors opened by a reply (with their owner, view, namespace and session), and forgets
   * exhausted ones. A cursor opened for a client that closed (or ended its side: onPeerEnd) while the
   * request was upstream is killed at once: nobody knows its id, so nobody could ever continue or kill
   * it. A client that only half-closed still gets the reply; continuing that cursor from another
   * connection would get CursorNotFound (drivers never half-close). A getMore's reply that arrives
   * after its client closed leaves the cursor open: a driver may continue a cursor on any connection
   * of its pool, so the cursor is not the closed connection's to kill (endSessions, killCursors or the
   * idle timeout end it). A cursor beyond the app's limits.open_cursors is killed at once and false
   * returned: the command is answered with that refusal instead of its first batch.
   */
  private trackCursors(
    spec: CommandSpec,
    cmd: Document,
    body: Buffer,
    address: string,
    owner: string,
    view: CursorView,
    lsid?: unknown,
  ): boolean {
    const cursor = findElement(body, 0, 'cursor');
    const cursors = this.ctx.upstream.cursors;
    if (!cursor || cursor.type !== BsonType.DOCUMENT) {
      const code = findElement(body, 0, 'code');
      if (spec.cursor === 'continues' && code?.type === BsonType.INT32 && body.readInt32LE(code.valueStart) === 43) {
        const id = toBigInt(cmd.getMore);
        if (id !== undefined) cursors.remove(id);
      }
      return true;
    }
    const idEl = findElement(body, cursor.valueStart, 'id');
    const id = idEl?.type === BsonType.INT64 ? body.readBigInt64LE(idEl.valueStart) : 0n;
    if (spec.cursor === 'opens' && id !== 0n) {
      const nsEl = findElement(body, cursor.valueStart, 'ns');
      const ns = nsEl?.type === BsonType.STRING ? body.toString('utf8', nsEl.valueStart + 4, nsEl.valueStart + 3 + body.readInt32LE(nsEl.valueStart)) : '';
      if (this.closed || this.peerEnded) {
        if (this.debugEnabled) this.rlog.debug({ cursor: String(id), ns }, 'killing a cursor opened for a client that closed');
        void this.ctx.upstream.killCursors([{ id, address, ns }], 'client_closed');
      } else if (this.reqShare && cursors.countOf(owner) >= this.reqShare.cursors) {
        void this.ctx.upstream.killCursors([{ id, address, ns }], 'open_cursors_limit');
        return false;
      } else {
        // Tailable awaitData cursors and change streams wait upstream on every getMore (capAwaitTime).
        const awaitData = view.kind === 'changeEvents' || (cmd.tailable === true && cmd.awaitData === true);
        cursors.register(id, address, owner, view, ns, sessionKey(lsid), awaitData);
      }
    }
    if (spec.cursor === 'continues' && id === 0n) {
      const requested = toBigInt(cmd.getMore);
      if (requested !== undefined) cursors.remove(requested);
    }
    return true;
  }

  /**
   * killCursors: only cursors the app holds reach the upstream (each on the server that opened it);
   * any other id is reported not found, as if it did not exist.
   */
  private async killCursors(scope: AppScope, rewritten: RewrittenCommand, parsed: OpMsg, cmd: Document, moreToCome: boolean): Promise<void> {
    const ids = Array.isArray(cmd.cursors) ? cmd.cursors : [];
    const registry = this.ctx.upstream.cursors;
    const byAddress = new Map<string, Long[]>();
    const notFound: Long[] = [];
    for (const raw of ids) {
      const id = toBigInt(raw);
      if (id === undefined) continue;
      const entry = registry.lookup(id, scope.slug);
      if (!entry) {
        notFound.push(Long.fromBigInt(id));
        continue;
      }
      const group = byAddress.get(entry.address) ?? [];
      group.push(Long.fromBigInt(id));
      byAddress.set(entry.address, group);
    }
    for (const group of byAddress.values()) for (const id of group) registry.remove(id.toBigInt());

    const merged: Document = { cursorsKilled: [], cursorsNotFound: notFound, cursorsAlive: [], cursorsUnknown: [], ok: 1 };
    for (const [address, group] of byAddress) {
      const body = encodeDocument({ ...rewritten.body, cursors: group });
      let reply: Buffer | undefined;
      try {
        reply = await this.roundTrip(address, encodeOpMsg(0, 0, parsed.flags & MsgFlag.MORE_TO_COME, body), moreToCome);
      } catch (err) {
        // The client closed before its killCursors went out: the cursors, already forgotten, are killed anyway.
        if (err instanceof ClientGoneError) this.killForgotten(byAddress, String(rewritten.body.$db), String(rewritten.body.killCursors));
        throw err;
      }
      byAddress.delete(address);
      if (!reply) continue;
      const doc = decodeDocument(rewriteReply(scope, rewritten.reply, parseOpMsg(reply).body));
      if (Number(doc.ok) !== 1) {
        this.reqOutcome = Outcome.ERROR;
        if (!moreToCome) this.reply(OpCode.MSG, parsed.requestId, doc);
        return;
      }
      for (const key of ['cursorsKilled', 'cursorsNotFound', 'cursorsAlive', 'cursorsUnknown']) {
        if (Array.isArray(doc[key])) (merged[key] as unknown[]).push(...(doc[key] as unknown[]));
      }
    }
    if (!moreToCome) this.reply(OpCode.MSG, parsed.requestId, merged);
  }

  /** The cursors of a killCursors whose client closed before they were sent (`byAddress`): killed by the proxy. */
  private killForgotten(byAddress: Map<string, Long[]>, db: string, collection: string): void {
    const ns = `${db}.${collection}`;
    const targets: CursorTarget[] = [];
    for (const [address, group] of byAddress) for (const id of group) targets.push({ id: id.toBigInt(), address, ns });
    void this.ctx.upstream.killCursors(targets, 'client_closed');
  }
}

/** An error a driver retries (the upstream was not reached, so no command ran). */
function retryableUnavailable(detail: string): CommandError {
  return new UnreachableError('HostUnreachable', `mdb-runtime could not reach the upstream: ${detail}`, 6, ['RetryableWriteError']);
}

/**
 * The upstream did not answer in time: the request may or may not have run there (as after a network
 * timeout), so drivers retry it as they would one (NetworkTimeout is a retryable code).
 */
function upstreamTimedOut(timeoutMS: number): CommandError {
  return new UnreachableError(
    'NetworkTimeout',
    `mdb-runtime: the upstream did not answer within ${timeoutMS} ms (upstream.request_timeout_ms); the request was abandoned and its upstream connection closed`,
    89,
    ['RetryableWriteError'],
  );
}

/** How long a request may wait for its reply: the runtime's bound, or the command's own maxTimeMS and a second. */
function requestTimeout(bound: number, maxTimeMS: unknown): number {
  const asked = numeric(maxTimeMS);
  return asked !== undefined && asked + 1000 > bound ? asked + 1000 : bound;
}

/** A BSON number as decoded without promotion (Int32, Long, Double or a JS number), or undefined. */
function numeric(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (v instanceof Long) return v.toNumber();
  if (v !== null && typeof v === 'object' && 'valueOf' in v) {
    const n = (v as { valueOf(): unknown }).valueOf();
    return typeof n === 'number' ? n : undefined;
  }
  return undefined;
}

/** Why a request refused at `stage` was refused (a fixed label value). */
function rejectReason(stage: StageCode, err: unknown): RejectReason {
  const code = err instanceof CommandError || err instanceof WireError ? err.code : undefined;
  switch (stage) {
    case Stage.AUTH:
      return 'unauthenticated';
    case Stage.APP:
      // Otherwise the token's roles no longer exist in the reloaded manifest.
      return err instanceof RevokedError ? 'app_removed' : 'rbac';
    case Stage.LIMITS:
      return code === 462 ? 'rate_limit' : 'connection_limit';
    case Stage.POLICY:
      return code === 224 ? 'server_js' : 'policy';
    case Stage.RBAC:
      return 'rbac';
    case Stage.MANIFEST:
      return code === 10334 ? 'document_size' : code === 14031 ? 'document_count' : 'data_access';
    default:
      return 'invalid_request';
  }
}

function round3(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** The `code` of an error reply body (int32), if any. */
function errorCode(body: Buffer): number | undefined {
  const code = findElement(body, 0, 'code');
  return code?.type === BsonType.INT32 ? body.readInt32LE(code.valueStart) : undefined;
}

function toBigInt(v: unknown): bigint | undefined {
  if (v instanceof Long) return v.toBigInt();
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  if (v !== null && typeof v === 'object' && '_bsontype' in v) {
    const n = Number(v as unknown as number);
    return Number.isInteger(n) ? BigInt(n) : undefined;
  }
  return undefined;
}

/**
 * An insert whose documents are in the body (the Node driver's form) as the same insert with them in
 * a kind-1 sequence (PyMongo's): the documents are then stamped as bytes instead of being decoded and
 * encoded again, and every occurrence of a duplicated tag key is checked.
 */
function withInsertedDocumentsAsSequence(parsed: OpMsg): OpMsg {
  if (parsed.sequences.length > 0 || firstKey(parsed.body, 0) !== 'insert') return parsed;
  const hoisted = hoistDocumentArray(parsed.body, 'documents');
  return hoisted ? { ...parsed, body: hoisted.body, sequences: [{ identifier: 'documents', documents: hoisted.documents }] } : parsed;
}
