import { BSONError, type Document } from 'bson';
import { MsgFlag, OpCode } from '../../wire/constants.js';
import { WireError } from '../../wire/errors.js';
import { CommandError, errorReply } from '../../policy/errors.js';
import { UpstreamError } from '../../upstream/index.js';
import { LimitError } from '../app-limits.js';
import { ClosingError, Rejected, verdictOf } from '../rejection.js';
import type { Request } from '../request.js';
import type { StepContext } from './step.js';

/**
 * A request that ended in an error: counted as what the error says (a rejection and its reason, an
 * error of a command that ran, an upstream failure), then answered in the server's shape for it;
 * wire errors and upstream failures mid-request close the connection (src/wire/errors.ts).
 */
export function answerError(req: Request, s: StepContext, thrown: unknown): void {
  if (s.timed) {
    const v = verdictOf(thrown);
    req.outcome = v.outcome;
    req.reason = v.reason;
    if (v.code !== undefined) req.errorCode = v.code;
  }
  const err = thrown instanceof Rejected ? thrown.error : thrown;
  if (err instanceof UpstreamError) {
    // The request may or may not have run upstream: close so the driver retries on a fresh connection.
    s.log().warn({ err: err.message }, 'upstream failed mid-request; closing client connection');
    s.close('upstream failure');
    return;
  }
  let reply: Document;
  let closeAfter = false;
  if (err instanceof WireError) {
    if (err.disposition === 'close') {
      s.log().warn({ err: err.message, opCode: req.opCode }, 'malformed message; closing connection');
      s.close(err.message);
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
    s.log().error({ err }, 'internal error handling a request');
    reply = errorReply({ code: 1, codeName: 'InternalError', message: 'internal error in mdb-runtime' });
  }
  // A moreToCome request gets no reply, even an error.
  const msg = req.msg;
  const moreToCome = req.opCode === OpCode.MSG && msg.length >= 20 && (msg.readUInt32LE(16) & MsgFlag.MORE_TO_COME) !== 0;
  if (!moreToCome) s.reply(req, reply);
  if (closeAfter) s.close(err instanceof ClosingError ? err.message : 'fatal message error', true);
}
