// A fake MongoDB server for benchmarks only: a fast upstream responder.
// It speaks OP_MSG (and the legacy OP_QUERY handshake) and answers with canned replies of realistic
// size, so that what is measured is the proxy (or the relay) in front of it, not a database. It stores
// nothing: a find by _id always finds one ~350-byte document, an insert always inserts everything.
//
// Never use it in tests of behaviour: the tests run against a real server (FerretDB, README.md).
//
// In-process:   const up = await startFastUpstream({ port: 0 }); ... up.uri ... await up.close();
// Child process: node bench/lib/fast-upstream.mjs [--host 127.0.0.1] [--port 0] [--scan-size 10000]
//                prints one JSON line {"port":N,"uri":"mongodb://..."} once listening; SIGTERM stops it.
import net from 'node:net';
import { deserialize, serialize } from 'bson';
import { commandLine, isMain, serveAsChild } from './processes.mjs';

const OP_REPLY = 1;
const OP_QUERY = 2004;
const OP_MSG = 2013;
const FLAG_CHECKSUM = 1;
const FLAG_MORE_TO_COME = 2;
const MAX_BSON = 16 * 1024 * 1024;
const DECODE = { useBigInt64: true };

/** A document of a realistic size (~350 bytes with an int _id): what a point read returns. */
function sampleDocument(id, tagField, tag) {
  const doc = {
    _id: id,
    name: 'Ada Lovelace',
    email: 'ada.lovelace@example.com',
    age: 36,
    active: true,
    score: 87.5,
    createdAt: new Date(1_700_000_000_000),
    address: { street: '12 Analytical Engine Way', city: 'London', zip: 'NW1 6XE', country: 'UK' },
    tags: ['mathematics', 'engines', 'poetry'],
    bio: 'Wrote the first published algorithm intended for a machine; a sample document of a realistic size.',
  };
  if (tag !== undefined) doc[tagField] = tag;
  return doc;
}

// ---- A minimal BSON writer for the replies built on every request (cursor batches): the documents
// are serialized once and cached, the envelope is assembled from bytes.
function cstring(name) {
  return Buffer.from(`${name}\0`, 'utf8');
}
function element(type, name, value) {
  return Buffer.concat([Buffer.from([type]), cstring(name), value]);
}
function documentOf(elements) {
  const size = 4 + elements.reduce((n, e) => n + e.length, 0) + 1;
  const out = Buffer.allocUnsafe(size);
  out.writeInt32LE(size, 0);
  let at = 4;
  for (const e of elements) at += e.copy(out, at);
  out[at] = 0;
  return out;
}
function int64(v) {
  const b = Buffer.allocUnsafe(8);
  b.writeBigInt64LE(BigInt(v));
  return b;
}
function string(s) {
  const bytes = Buffer.from(s, 'utf8');
  const b = Buffer.allocUnsafe(4 + bytes.length + 1);
  b.writeInt32LE(bytes.length + 1, 0);
  bytes.copy(b, 4);
  b[b.length - 1] = 0;
  return b;
}
const DOUBLE_ONE = (() => {
  const b = Buffer.allocUnsafe(8);
  b.writeDoubleLE(1);
  return b;
})();
const ARRAY_KEYS = Array.from({ length: 1024 }, (_, i) => cstring(String(i)));
const TYPE_DOC = Buffer.from([3]);

/** `{cursor: {<batchName>: [docs], id, ns}, ok: 1}` from already serialized documents. */
function cursorReply(batchName, docs, id, ns) {
  const parts = [];
  let size = 4 + 1;
  for (let i = 0; i < docs.length; i++) {
    const key = ARRAY_KEYS[i] ?? cstring(String(i));
    parts.push(TYPE_DOC, key, docs[i]);
    size += 1 + key.length + docs[i].length;
  }
  const array = Buffer.allocUnsafe(size);
  array.writeInt32LE(size, 0);
  let at = 4;
  for (const p of parts) at += p.copy(array, at);
  array[at] = 0;
  const cursor = documentOf([element(4, batchName, array), element(0x12, 'id', int64(id)), element(2, 'ns', string(ns))]);
  return documentOf([element(3, 'cursor', cursor), element(1, 'ok', DOUBLE_ONE)]);
}

// ---- Message framing and encoding.
function opMsg(responseTo, requestId, body) {
  const out = Buffer.allocUnsafe(21 + body.length);
  out.writeInt32LE(out.length, 0);
  out.writeInt32LE(requestId, 4);
  out.writeInt32LE(responseTo, 8);
  out.writeInt32LE(OP_MSG, 12);
  out.writeUInt32LE(0, 16);
  out[20] = 0;
  body.copy(out, 21);
  return out;
}
function opReply(responseTo, requestId, body) {
  const out = Buffer.allocUnsafe(36 + body.length);
  out.writeInt32LE(out.length, 0);
  out.writeInt32LE(requestId, 4);
  out.writeInt32LE(responseTo, 8);
  out.writeInt32LE(OP_REPLY, 12);
  out.writeInt32LE(0, 16); // responseFlags
  out.writeBigInt64LE(0n, 20); // cursorID
  out.writeInt32LE(0, 28); // startingFrom
  out.writeInt32LE(1, 32); // numberReturned
  body.copy(out, 36);
  return out;
}

/** The kind-0 body and the kind-1 sections (identifier → number of documents) of an OP_MSG. */
function parseOpMsg(msg) {
  const flags = msg.readUInt32LE(16);
  const end = msg.length - (flags & FLAG_CHECKSUM ? 4 : 0);
  let body;
  const sequences = {};
  for (let at = 20; at < end; ) {
    const kind = msg[at++];
    if (kind === 0) {
      const len = msg.readInt32LE(at);
      body = msg.subarray(at, at + len);
      at += len;
    } else if (kind === 1) {
      const len = msg.readInt32LE(at);
      const stop = at + len;
      const nul = msg.indexOf(0, at + 4);
      const identifier = msg.toString('utf8', at + 4, nul);
      let n = 0;
      for (let d = nul + 1; d < stop; d += msg.readInt32LE(d)) n++;
      sequences[identifier] = n;
      at = stop;
    } else {
      throw new Error(`unknown OP_MSG section kind ${kind}`);
    }
  }
  return { flags, body, sequences };
}

/**
 * Starts the responder. Options: host ('127.0.0.1'), port (0: any free port), scanSize (documents a
 * find without _id or limit returns, in batches: 10,000), defaultBatchSize (101, as a server's first
 * batch), tagField ('app_id': a find whose filter has `{<tagField>: <string>}` at the top level, as the
 * proxy's rewritten commands do, gets documents carrying that tag, as stored documents would).
 */
export async function startFastUpstream(options = {}) {
  const host = options.host ?? '127.0.0.1';
  const scanSize = options.scanSize ?? 10_000;
  const defaultBatchSize = options.defaultBatchSize ?? 101;
  const tagField = options.tagField ?? 'app_id';
  const started = new Date();
  let connectionIds = 0;
  let requestIds = 1;
  let cursorIds = 1_000_000_000n;
  /** Open cursors: id → { tag, ns, next, total }. */
  const cursors = new Map();
  const stats = { requests: 0, commands: {} };

  // Serialized documents, cached: point reads by (tag, _id), scans by (tag) in _id order.
  const pointCache = new Map();
  const scanCache = new Map();
  const pointDocument = (id, tag) => {
    const key = `${tag ?? ''}\0${typeof id === 'object' && id !== null ? String(id) : `${typeof id}:${id}`}`;
    let bytes = pointCache.get(key);
    if (!bytes) {
      if (pointCache.size > 100_000) pointCache.clear();
      bytes = serialize(sampleDocument(id, tagField, tag));
      pointCache.set(key, bytes);
    }
    return bytes;
  };
  const scanDocuments = (tag) => {
    let docs = scanCache.get(tag ?? '');
    if (!docs) {
      docs = Array.from({ length: scanSize }, (_, i) => serialize(sampleDocument(i, tagField, tag)));
      scanCache.set(tag ?? '', docs);
    }
    return docs;
  };

  const helloReply = (cmd, name, connectionId) => {
    const reply = {};
    if (cmd.helloOk === true) reply.helloOk = true;
    if (name === 'hello') reply.isWritablePrimary = true;
    else reply.ismaster = true;
    Object.assign(reply, {
      maxBsonObjectSize: MAX_BSON,
      maxMessageSizeBytes: 48_000_000,
      maxWriteBatchSize: 100_000,
      localTime: new Date(),
      logicalSessionTimeoutMinutes: 30,
      connectionId,
      minWireVersion: 0,
      maxWireVersion: 21,
      readOnly: false,
      ok: 1,
    });
    return serialize(reply);
  };

  /** Opens a cursor over `total` documents (or returns everything in one batch). */
  const openCursor = (ns, tag, total, batchSize, single) => {
    const docs = scanDocuments(tag);
    const first = Math.min(total, batchSize);
    const batch = docs.slice(0, first);
    if (first >= total || single) return cursorReply('firstBatch', batch, 0n, ns);
    const id = cursorIds++;
    if (cursors.size > 10_000) cursors.clear(); // clients that never exhaust nor kill their cursors
    cursors.set(id, { tag, ns, next: first, total });
    return cursorReply('firstBatch', batch, id, ns);
  };

  const toNumber = (v) => (typeof v === 'bigint' ? Number(v) : typeof v === 'number' ? v : undefined);

  /** The reply body (BSON bytes) to one command. */
  const answer = (cmd, sequences, connectionId) => {
    const name = Object.keys(cmd)[0] ?? '';
    stats.commands[name] = (stats.commands[name] ?? 0) + 1;
    const db = typeof cmd.$db === 'string' ? cmd.$db : 'test';
    const ns = typeof cmd[name] === 'string' ? `${db}.${cmd[name]}` : `${db}.$cmd`;
    switch (name) {
      case 'hello':
      case 'isMaster':
      case 'ismaster':
        return helloReply(cmd, name, connectionId);
      case 'buildInfo':
      case 'buildinfo':
        return serialize({
          version: '7.0.0',
          gitVersion: 'fast-upstream',
          versionArray: [7, 0, 0, 0],
          bits: 64,
          maxBsonObjectSize: MAX_BSON,
          ok: 1,
        });
      case 'find': {
        const filter = cmd.filter && typeof cmd.filter === 'object' ? cmd.filter : {};
        const tag = typeof filter[tagField] === 'string' ? filter[tagField] : undefined;
        const limit = Math.abs(toNumber(cmd.limit) ?? 0);
        const id = filter._id;
        if (id !== undefined && (typeof id !== 'object' || id === null || !Object.keys(id).some((k) => k.startsWith('$')) || '$eq' in id)) {
          const value = typeof id === 'object' && id !== null && '$eq' in id ? id.$eq : id;
          return cursorReply('firstBatch', [pointDocument(value, tag)], 0n, ns);
        }
        const total = limit > 0 ? Math.min(limit, scanSize) : scanSize;
        const batchSize = toNumber(cmd.batchSize) || defaultBatchSize;
        return openCursor(ns, tag, total, batchSize, cmd.singleBatch === true);
      }
      case 'aggregate': {
        const pipeline = Array.isArray(cmd.pipeline) ? cmd.pipeline : [];
        const match = pipeline.find((s) => s && typeof s === 'object' && s.$match)?.$match;
        const tag = match && typeof match[tagField] === 'string' ? match[tagField] : undefined;
        const batchSize = toNumber(cmd.cursor?.batchSize) || defaultBatchSize;
        if (pipeline.some((s) => s && typeof s === 'object' && ('$group' in s || '$count' in s))) {
          const groups = Array.from({ length: 20 }, (_, i) => serialize({ _id: `group-${i}`, n: 500, total: 43_750.5 }));
          return cursorReply('firstBatch', groups, 0n, ns);
        }
        const limitStage = pipeline.find((s) => s && typeof s === 'object' && '$limit' in s);
        const total = limitStage ? Math.min(toNumber(limitStage.$limit) ?? scanSize, scanSize) : scanSize;
        return openCursor(ns, tag, total, batchSize, false);
      }
      case 'getMore': {
        const id = typeof cmd.getMore === 'bigint' ? cmd.getMore : BigInt(cmd.getMore ?? 0);
        const cursor = cursors.get(id);
        if (!cursor) return serialize({ ok: 0, errmsg: `cursor id ${id} not found`, code: 43, codeName: 'CursorNotFound' });
        const docs = scanDocuments(cursor.tag);
        const batchSize = toNumber(cmd.batchSize) || Number.MAX_SAFE_INTEGER;
        let end = Math.min(cursor.total, cursor.next + batchSize);
        // A server fills a getMore batch up to 16 MB.
        let bytes = 0;
        for (let i = cursor.next; i < end; i++) {
          bytes += docs[i].length;
          if (bytes > MAX_BSON - 1024) {
            end = i;
            break;
          }
        }
        const batch = docs.slice(cursor.next, end);
        cursor.next = end;
        const done = end >= cursor.total;
        if (done) cursors.delete(id);
        return cursorReply('nextBatch', batch, done ? 0n : id, cursor.ns);
      }
      case 'killCursors': {
        const ids = Array.isArray(cmd.cursors) ? cmd.cursors : [];
        for (const id of ids) cursors.delete(typeof id === 'bigint' ? id : BigInt(id));
        return serialize({ cursorsKilled: ids, cursorsNotFound: [], cursorsAlive: [], cursorsUnknown: [], ok: 1 });
      }
      case 'insert':
        return serialize({ n: sequences.documents ?? (Array.isArray(cmd.documents) ? cmd.documents.length : 0), ok: 1 });
      case 'update': {
        const n = sequences.updates ?? (Array.isArray(cmd.updates) ? cmd.updates.length : 0);
        return serialize({ n, nModified: n, ok: 1 });
      }
      case 'delete':
        return serialize({ n: sequences.deletes ?? (Array.isArray(cmd.deletes) ? cmd.deletes.length : 0), ok: 1 });
      case 'findAndModify':
      case 'findandmodify':
        return serialize({ lastErrorObject: { n: 0, updatedExisting: false }, value: null, ok: 1 });
      case 'count':
        return serialize({ n: scanSize, ok: 1 });
      case 'listIndexes':
        return cursorReply('firstBatch', [serialize({ v: 2, key: { _id: 1 }, name: '_id_' })], 0n, ns);
      case 'createIndexes':
        return serialize({ numIndexesBefore: 1, numIndexesAfter: 1, note: 'all indexes already exist', ok: 1 });
      case 'listCollections':
        return cursorReply('firstBatch', [], 0n, `${db}.$cmd.listCollections`);
      case 'endSessions':
      case 'ping':
      default:
        return serialize({ ok: 1 });
    }
  };

  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    const connectionId = ++connectionIds;
    let pending = null;
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk) => {
      let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
      pending = null;
      let at = 0;
      const out = [];
      while (buf.length - at >= 16) {
        const len = buf.readInt32LE(at);
        if (len < 16 || len > 48_000_000) {
          socket.destroy();
          return;
        }
        if (buf.length - at < len) break;
        const msg = buf.subarray(at, at + len);
        at += len;
        stats.requests++;
        const requestId = msg.readInt32LE(4);
        const opCode = msg.readInt32LE(12);
        try {
          if (opCode === OP_MSG) {
            const { flags, body, sequences } = parseOpMsg(msg);
            const reply = answer(deserialize(body, DECODE), sequences, connectionId);
            if (!(flags & FLAG_MORE_TO_COME)) out.push(opMsg(requestId, requestIds++, reply));
          } else if (opCode === OP_QUERY) {
            // flags(4) fullCollectionName(cstring) skip(4) return(4) query
            const nul = msg.indexOf(0, 20);
            let query = deserialize(msg.subarray(nul + 9), DECODE);
            if (query.$query && typeof query.$query === 'object') query = query.$query;
            out.push(opReply(requestId, requestIds++, answer(query, {}, connectionId)));
          } else {
            socket.destroy();
            return;
          }
        } catch {
          socket.destroy();
          return;
        }
      }
      if (at < buf.length) pending = buf.subarray(at);
      if (out.length === 1) socket.write(out[0]);
      else if (out.length > 1) socket.write(Buffer.concat(out));
    });
  });
  const sockets = new Set();
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: options.port ?? 0 }, resolve);
  });
  const { port } = server.address();
  return {
    host,
    port,
    uri: `mongodb://${host}:${port}/`,
    startedAt: started,
    stats,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

// ---- Child-process mode.
if (isMain(import.meta.url)) {
  const { opt } = commandLine();
  const up = await startFastUpstream({
    host: opt('--host', '127.0.0.1'),
    port: Number(opt('--port', '0')),
    scanSize: Number(opt('--scan-size', '10000')),
  });
  serveAsChild({ port: up.port, uri: up.uri, pid: process.pid }, () => up.close());
}
