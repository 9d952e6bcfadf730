import type net from 'node:net';
import { BSONError, Binary, Long, deserialize, serialize, type Document } from 'bson';
import type { Logger } from '../observability/logger.js';
import { MsgFlag, OpCode } from '../wire/constants.js';
import { WireError } from '../wire/errors.js';
import { FramingError, MessageFramer } from '../wire/framer.js';
import { RequestIdCounter } from '../wire/header.js';
import { encodeOpMsg, parseOpMsg, readdressOpMsg, type OpMsg } from '../wire/opmsg.js';
import { encodeOpReply, parseOpQuery } from '../wire/opquery.js';
import { decompressMessage } from '../wire/compression.js';
import { BsonType, findElement } from '../wire/bson-bytes.js';
import { lookupCommand, type CommandSpec } from '../policy/commands.js';
import { CommandError, commandError, errorReply } from '../policy/errors.js';
import { UpstreamError, upstreamRequestIds, type ConnectionPool, type UpstreamConnection } from '../upstream/index.js';
import type { AppManifest } from '../apps/manifests.js';
import type { ProxyContext } from './context.js';
import { helloReply, runLocalCommand, MAX_POLICY_WIRE_VERSION, type LocalCommandContext } from './local-commands.js';

/** Commands are decoded without promoting values so that a re-encoded command is byte-identical. */
const DECODE_OPTIONS = { promoteValues: false, bsonRegExp: true } as const;
/** Pipelined requests queued beyond this pause reading from the socket. */
const MAX_QUEUED_MESSAGES = 32;
const HANDSHAKE_COMMANDS = new Set(['hello', 'isMaster', 'ismaster']);

/** An upstream connection held across requests so a client's moreToCome writes stay ordered. */
interface HeldConnection {
  conn: UpstreamConnection;
  pool: ConnectionPool;
  address: string;
}

/**
 * One client connection: frames and decodes its messages, answers the handshake, applies the command
 * table and forwards allowed commands upstream, one request at a time (as a server does per connection).
 */
export class ClientConnection {
  readonly remoteAddress: string;
  private readonly framer: MessageFramer;
  private readonly queue: Buffer[] = [];
  private readonly replyIds = new RequestIdCounter();
  private log: Logger;
  private processing = false;
  private draining = false;
  private closed = false;
  private held: HeldConnection | undefined;
  private app: AppManifest | undefined;
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  constructor(
    private readonly socket: net.Socket,
    private readonly ctx: ProxyContext,
    readonly id: number,
  ) {
    this.remoteAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.framer = new MessageFramer(ctx.limits.maxMessageSize);
    this.log = ctx.logger.child({ conn: id });
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // The client half-closed: finish what it sent, then close.
    socket.on('end', () => this.drain());
    socket.on('error', (err) => this.close(`socket error: ${err.message}`));
    socket.on('close', () => this.close('client closed the connection'));
  }

  /** The app this connection acts as, if any. */
  get appSlug(): string | undefined {
    return this.app?.slug;
  }

  /** Resolves when the connection is closed. */
  get done(): Promise<void> {
    return this.closedPromise;
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
    if (this.held) {
      this.held.pool.release(this.held.conn);
      this.held = undefined;
    }
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
    this.log.debug({ reason }, 'client connection closed');
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
        await this.handleMessage(msg);
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

  private async handleMessage(msg: Buffer, compressed = false): Promise<void> {
    const opCode = msg.readInt32LE(12);
    const requestId = msg.readInt32LE(4);
    try {
      switch (opCode) {
        case OpCode.MSG:
          return await this.handleOpMsg(msg);
        case OpCode.QUERY:
          return this.handleOpQuery(msg);
        case OpCode.COMPRESSED:
          if (compressed) throw new WireError('nested OP_COMPRESSED', 17, 'ProtocolError', 'close');
          return await this.handleMessage(await decompressMessage(msg, this.ctx.limits.maxMessageSize), true);
        default:
          throw new WireError(`unsupported opcode ${opCode}`, 17, 'ProtocolError', 'close');
      }
    } catch (err) {
      this.handleError(err, requestId, opCode, msg);
    }
  }

  private handleError(err: unknown, requestId: number, opCode: number, msg: Buffer): void {
    if (err instanceof UpstreamError) {
      // The request may or may not have run upstream: close so the driver retries on a fresh connection.
      this.log.warn({ err: err.message }, 'upstream failed mid-request; closing client connection');
      this.close('upstream failure');
      return;
    }
    let reply: Document;
    let closeAfter = false;
    if (err instanceof WireError) {
      if (err.disposition === 'close') {
        this.log.warn({ err: err.message, opCode }, 'malformed message; closing connection');
        this.close(err.message);
        return;
      }
      closeAfter = err.disposition === 'replyAndClose';
      reply = errorReply(err);
    } else if (err instanceof CommandError) {
      reply = errorReply(err);
    } else if (err instanceof BSONError) {
      reply = errorReply({ code: 22, codeName: 'InvalidBSON', message: `invalid BSON in command: ${err.message}` });
    } else {
      this.log.error({ err }, 'internal error handling a request');
      reply = errorReply({ code: 1, codeName: 'InternalError', message: 'internal error in mdb-runtime' });
    }
    // A moreToCome request gets no reply, even an error.
    const moreToCome = opCode === OpCode.MSG && msg.length >= 20 && (msg.readUInt32LE(16) & MsgFlag.MORE_TO_COME) !== 0;
    if (!moreToCome) this.reply(opCode, requestId, reply);
    if (closeAfter) this.close('fatal message error', true);
  }

  private reply(opCode: number, responseTo: number, doc: Document): void {
    if (this.closed) return;
    const body = serialize(doc);
    const bytes =
      opCode === OpCode.QUERY
        ? encodeOpReply(this.replyIds.take(), responseTo, [body])
        : encodeOpMsg(this.replyIds.take(), responseTo, 0, body);
    this.socket.write(bytes);
  }

  private handleOpQuery(msg: Buffer): void {
    const query = parseOpQuery(msg);
    let cmd: Document = deserialize(query.query, DECODE_OPTIONS);
    if (cmd.$query && typeof cmd.$query === 'object') cmd = cmd.$query as Document;
    const name = Object.keys(cmd)[0] ?? '';
    if (query.fullCollectionName !== 'admin.$cmd' || !HANDSHAKE_COMMANDS.has(name)) {
      throw new CommandError(
        'UnsupportedOpQueryCommand',
        `Unsupported OP_QUERY command: ${name || query.fullCollectionName}. The client driver may require an upgrade; mdb-runtime accepts OP_QUERY only for the handshake on admin.$cmd`,
        352,
      );
    }
    this.noteClientMetadata(cmd);
    this.reply(OpCode.QUERY, query.requestId, helloReply(cmd, name, this.localContext()));
  }

  private async handleOpMsg(msg: Buffer): Promise<void> {
    const parsed = parseOpMsg(msg);
    const moreToCome = (parsed.flags & MsgFlag.MORE_TO_COME) !== 0;
    const cmd = deserialize(parsed.body, DECODE_OPTIONS);
    const name = Object.keys(cmd)[0] ?? '';
    const spec = lookupCommand(name);
    if (!spec) throw commandError('CommandNotFound', `no such command: '${name}'`);
    const db = cmd.$db;
    if (typeof db !== 'string' || db.length === 0) {
      throw new CommandError('Location40571', 'OP_MSG requests require a $db argument', 40571);
    }
    if (spec.adminOnly && db !== 'admin') {
      throw commandError('Unauthorized', `${name} may only be run against the admin database.`);
    }
    spec.check?.(cmd);
    this.log.debug({ cmd: spec.name, db, req: parsed.requestId }, 'command');

    if (spec.local) {
      if (spec.local === 'hello') this.noteClientMetadata(cmd);
      const reply = runLocalCommand(spec.local, cmd, name, this.localContext());
      if (!moreToCome) this.reply(OpCode.MSG, parsed.requestId, reply);
      return;
    }
    await this.forward(msg, parsed, cmd, spec, moreToCome);
  }

  /** The client's handshake metadata stays here: it selects a dev app by appName, nothing more. */
  private noteClientMetadata(cmd: Document): void {
    const client = cmd.client as Document | undefined;
    const appName = (client?.application as Document | undefined)?.name;
    if (this.app === undefined && typeof appName === 'string') {
      const app = this.ctx.findApp(appName);
      if (app && !app.authRequired) {
        this.app = app;
        this.log = this.log.child({ app_id: app.slug });
        this.log.info({ app_id: app.slug }, 'connection acts as app (selected by appName)');
      }
    }
  }

  private localContext(): LocalCommandContext {
    return {
      connectionId: this.id,
      remoteAddress: this.remoteAddress,
      upstreamMaxWireVersion: this.ctx.upstream.topology.maxWireVersion() ?? MAX_POLICY_WIRE_VERSION,
      maxMessageSize: this.ctx.limits.maxMessageSize,
      logicalSessionTimeoutMinutes: this.ctx.limits.logicalSessionTimeoutMinutes,
      authenticatedUser: undefined,
    };
  }

  private get owner(): string {
    return this.app?.slug ?? '';
  }

  private async forward(msg: Buffer, parsed: OpMsg, cmd: Document, spec: CommandSpec, moreToCome: boolean): Promise<void> {
    const upstream = this.ctx.upstream;
    let address: string;
    if (spec.target === 'cursor') {
      if (spec.cursor === 'kills') return this.killCursors(msg, parsed, cmd, moreToCome);
      const id = toBigInt(cmd.getMore);
      const entry = id === undefined ? undefined : upstream.cursors.lookup(id, this.owner);
      if (!entry) throw commandError('CursorNotFound', `cursor id ${String(id ?? cmd.getMore)} not found`);
      address = entry.address;
    } else {
      address = await this.routeToPrimary(cmd, spec);
    }

    const reply = await this.roundTrip(address, msg, moreToCome);
    if (!reply) return;
    if (spec.cursor) this.trackCursors(spec, cmd, reply, address);
    if (this.closed) return;
    this.socket.write(readdressOpMsg(reply, this.replyIds.take(), parsed.requestId));
  }

  /** The writable server, or the one this command's transaction is pinned to. */
  private async routeToPrimary(cmd: Document, spec: CommandSpec): Promise<string> {
    const upstream = this.ctx.upstream;
    const pinKey = this.transactionKey(cmd);
    if (pinKey !== undefined && cmd.startTransaction !== true && (cmd.autocommit === false || spec.transactionControl)) {
      const pinned = upstream.pins.lookup(pinKey);
      if (pinned) return pinned;
    }
    if (this.held) return this.held.address;
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
    const id = (cmd.lsid as Document | undefined)?.id;
    if (!(id instanceof Binary)) return undefined;
    return `${this.owner}\0${Buffer.from(id.read(0, id.length())).toString('hex')}`;
  }

  /**
   * Sends one message to `address` and returns the reply's bytes (undefined for moreToCome). A client's
   * moreToCome write keeps its upstream connection for the client's next request, so that its writes
   * and the reads after them stay in order, as on a direct connection.
   */
  private async roundTrip(address: string, msg: Buffer, moreToCome: boolean): Promise<Buffer | undefined> {
    let held = this.held;
    this.held = undefined;
    if (held && held.address !== address) {
      held.pool.release(held.conn);
      held = undefined;
    }
    const pool = held?.pool ?? this.ctx.upstream.pool(address);
    let conn: UpstreamConnection;
    if (held) conn = held.conn;
    else {
      try {
        conn = await pool.acquire();
      } catch (err) {
        // Nothing was sent: the client may safely retry, reads and writes alike.
        throw retryableUnavailable((err as Error).message);
      }
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
      if (this.closed) pool.release(conn);
      else this.held = { conn, pool, address };
      return undefined;
    }
    try {
      const reply = await conn.roundTrip(out, requestId);
      pool.release(conn);
      return reply;
    } catch (err) {
      pool.discard(conn);
      throw err;
    }
  }

  /** Records cursors opened by a reply, and forgets those a reply says are exhausted. */
  private trackCursors(spec: CommandSpec, cmd: Document, reply: Buffer, address: string): void {
    const body = parseOpMsg(reply).body;
    const cursor = findElement(body, 0, 'cursor');
    const cursors = this.ctx.upstream.cursors;
    if (!cursor || cursor.type !== BsonType.DOCUMENT) {
      const code = findElement(body, 0, 'code');
      if (spec.cursor === 'continues' && code?.type === BsonType.INT32 && body.readInt32LE(code.valueStart) === 43) {
        const id = toBigInt(cmd.getMore);
        if (id !== undefined) cursors.remove(id);
      }
      return;
    }
    const idEl = findElement(body, cursor.valueStart, 'id');
    const id = idEl?.type === BsonType.INT64 ? body.readBigInt64LE(idEl.valueStart) : 0n;
    if (spec.cursor === 'opens' && id !== 0n) cursors.register(id, address, this.owner);
    if (spec.cursor === 'continues' && id === 0n) {
      const requested = toBigInt(cmd.getMore);
      if (requested !== undefined) cursors.remove(requested);
    }
  }

  /**
   * killCursors for cursors this connection's owner holds goes to the servers that opened them; ids it
   * does not hold are reported not found without reaching the upstream.
   */
  private async killCursors(msg: Buffer, parsed: OpMsg, cmd: Document, moreToCome: boolean): Promise<void> {
    const ids = Array.isArray(cmd.cursors) ? cmd.cursors : [];
    const registry = this.ctx.upstream.cursors;
    const byAddress = new Map<string, Long[]>();
    const notFound: Long[] = [];
    for (const raw of ids) {
      const id = toBigInt(raw);
      const entry = id === undefined ? undefined : registry.lookup(id, this.owner);
      if (!entry || id === undefined) {
        if (raw instanceof Long) notFound.push(raw);
        else if (id !== undefined) notFound.push(Long.fromBigInt(id));
        continue;
      }
      const group = byAddress.get(entry.address) ?? [];
      group.push(raw instanceof Long ? raw : Long.fromBigInt(id));
      byAddress.set(entry.address, group);
    }
    for (const group of byAddress.values()) for (const id of group) registry.remove(id.toBigInt());

    const merged: Document = { cursorsKilled: [], cursorsNotFound: notFound, cursorsAlive: [], cursorsUnknown: [], ok: 1 };
    const untouched = notFound.length === 0 && byAddress.size === 1;
    for (const [address, group] of byAddress) {
      const out = untouched ? msg : encodeOpMsg(0, 0, parsed.flags, serialize({ ...cmd, cursors: group }), parsed.sequences);
      const reply = await this.roundTrip(address, out, moreToCome);
      if (!reply) continue;
      if (untouched) {
        if (!this.closed) this.socket.write(readdressOpMsg(reply, this.replyIds.take(), parsed.requestId));
        return;
      }
      const doc = deserialize(parseOpMsg(reply).body, DECODE_OPTIONS);
      if (Number(doc.ok) !== 1) {
        if (!moreToCome) this.reply(OpCode.MSG, parsed.requestId, doc);
        return;
      }
      for (const key of ['cursorsKilled', 'cursorsNotFound', 'cursorsAlive', 'cursorsUnknown']) {
        if (Array.isArray(doc[key])) (merged[key] as unknown[]).push(...(doc[key] as unknown[]));
      }
    }
    if (!moreToCome) this.reply(OpCode.MSG, parsed.requestId, merged);
  }
}

/** An error a driver retries (the upstream was not reached, so no command ran). */
function retryableUnavailable(detail: string): CommandError {
  return commandError('HostUnreachable', `mdb-runtime could not reach the upstream: ${detail}`, ['RetryableWriteError']);
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
