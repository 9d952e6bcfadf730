import type { Document } from 'bson';
import { MsgFlag, OpCode } from '../../wire/constants.js';
import { WireError } from '../../wire/errors.js';
import { decompressMessage } from '../../wire/compression.js';
import { parseOpMsg, type OpMsg } from '../../wire/opmsg.js';
import { parseOpQuery } from '../../wire/opquery.js';
import { firstKey } from '../../wire/bson-bytes.js';
import { hoistDocumentArray } from '../../wire/bson-edit.js';
import { lookupCommand } from '../../policy/commands.js';
import { decodeDocument } from '../../policy/decode.js';
import { CommandError, commandError } from '../../policy/errors.js';
import { answerHello } from './local.js';
import { Rejected, rejectedAs } from '../rejection.js';
import type { Request } from '../request.js';
import type { StepContext, StepResult } from './step.js';

/** Commands are decoded without promoting values so that a re-encoded command is byte-identical. */

/**
 * Decode: the opcode picks the codec (OP_COMPRESSED unwrapped first); an OP_MSG is decoded and its
 * command looked up in the command table; OP_QUERY is the legacy handshake only, answered here.
 * Malformed input is refused as an invalid request.
 */
export function parse(req: Request, s: StepContext): StepResult | Promise<StepResult> {
  if (req.opCode === OpCode.COMPRESSED) return unwrap(req, s);
  if (req.opCode === OpCode.QUERY) return handshake(req, s);
  if (req.opCode !== OpCode.MSG) throw new Rejected('invalid_request', new WireError(`unsupported opcode ${req.opCode}`, 17, 'ProtocolError', 'close'));
  try {
    decodeOpMsg(req);
  } catch (err) {
    throw rejectedAs('invalid_request', err);
  }
  return 'next';
}

/** OP_COMPRESSED: the message inside it takes its place (decoded with the same limit as the framer's). */
async function unwrap(req: Request, s: StepContext): Promise<StepResult> {
  let inner: Buffer;
  try {
    inner = await decompressMessage(req.msg, s.maxMessageSize);
  } catch (err) {
    throw rejectedAs('invalid_request', err);
  }
  req.msg = inner;
  req.opCode = inner.readInt32LE(12);
  if (req.opCode === OpCode.COMPRESSED) throw new Rejected('invalid_request', new WireError('nested OP_COMPRESSED', 17, 'ProtocolError', 'close'));
  return parse(req, s);
}

function decodeOpMsg(req: Request): void {
  const parsed = withInsertedDocumentsAsSequence(parseOpMsg(req.msg));
  req.parsed = parsed;
  req.moreToCome = (parsed.flags & MsgFlag.MORE_TO_COME) !== 0;
  const cmd = decodeDocument(parsed.body);
  const name = Object.keys(cmd)[0] ?? '';
  req.cmd = cmd;
  req.name = name;
  const spec = lookupCommand(name);
  if (!spec) throw new Rejected('unknown_command', commandError('CommandNotFound', `no such command: '${name}'`));
  req.spec = spec;
  req.command = spec.name;
  if (spec.refused) {
    throw new Rejected(
      spec.refused === 'QueryFeatureNotAllowed' ? 'server_js' : 'server_wide',
      commandError(spec.refused, `${name} is not allowed by mdb-runtime. ${spec.help}`),
    );
  }
  const db = cmd.$db;
  if (typeof db !== 'string' || db.length === 0) {
    throw new CommandError('Location40571', 'OP_MSG requests require a $db argument', 40571);
  }
}

/** OP_QUERY: only the handshake on admin.$cmd, answered with hello's reply. */
async function handshake(req: Request, s: StepContext): Promise<StepResult> {
  let cmd: Document;
  let name: string;
  try {
    const query = parseOpQuery(req.msg);
    // Decoded as every command is (depth checked on the bytes first).
    cmd = decodeDocument(query.query);
    if (cmd.$query && typeof cmd.$query === 'object') cmd = cmd.$query as Document;
    name = Object.keys(cmd)[0] ?? '';
    const handshake = lookupCommand(name)?.local === 'hello';
    if (handshake) req.command = 'hello';
    if (query.fullCollectionName !== 'admin.$cmd' || !handshake) {
      throw new CommandError(
        'UnsupportedOpQueryCommand',
        `Unsupported OP_QUERY command: ${name || query.fullCollectionName}. The client driver may require an upgrade; mdb-runtime accepts OP_QUERY only for the handshake on admin.$cmd`,
        352,
      );
    }
  } catch (err) {
    throw rejectedAs('invalid_request', err);
  }
  s.reply(req, await answerHello(cmd, name, s));
  return 'done';
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
