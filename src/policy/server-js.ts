import { Code, DBRef } from 'bson';
import { BsonType, ElementCursor } from '../wire/bson-bytes.js';
import { MAX_COMMAND_DEPTH } from './decode.js';
import { CommandError, ErrorCodes, commandError } from './errors.js';
import { bsonTypeName, isBsonScalar, isDoc } from './scope.js';

/** Operators that run JavaScript on the server (docs/security.md, "Server-side JavaScript"). */
const SERVER_JS_OPERATORS = new Set(['$where', '$function', '$accumulator']);

/** Server-side JavaScript refused (QueryFeatureNotAllowed, 224): its own class, so callers need not read codes. */
export class ServerJavaScriptError extends CommandError {
  constructor(message: string) {
    super('QueryFeatureNotAllowed', message, ErrorCodes.QueryFeatureNotAllowed);
  }
}

function codeRefused(where: string): never {
  throw new ServerJavaScriptError(`${where}: JavaScript code values are not allowed by mdb-runtime`);
}

function operatorRefused(where: string, key: string): never {
  throw new ServerJavaScriptError(`${where}: ${key} is not allowed: mdb-runtime refuses server-side JavaScript`);
}

/**
 * js-bson decodes BSON undefined as a JS undefined and encodes none back (a field holding one
 * disappears): what went upstream would not be what the guards saw.
 */
function undefinedRefused(where: string): never {
  throw commandError('BadValue', `${where}: undefined values (the deprecated BSON type 0x06) are not accepted by mdb-runtime; use null`);
}

function dbPointerRefused(where: string): never {
  throw commandError('BadValue', `${where}: DBPointer values (the deprecated BSON type 0x0C) are not accepted by mdb-runtime`);
}

/**
 * Refuses server-side JavaScript anywhere in `value`: the `$where`, `$function` and `$accumulator`
 * operators at any depth, and BSON Code values (with or without scope). QueryFeatureNotAllowed (224),
 * as a server configured with javascriptEnabled: false answers.
 *
 * Every value of a request passes here (the body, and each statement of a kind-1 sequence that is
 * decoded), so it is also where a value of a shape no guard can classify is refused rather than
 * skipped: what is not a document, an array, code or a scalar type, and the two deprecated types
 * js-bson cannot encode back as they came (undefined, DBPointer) (docs/security.md, "Values that are
 * not what they seem"). The walk is iterative: depth was bounded at the byte level.
 */
export function refuseServerJavaScript(value: unknown, where: string): void {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object') {
      if (v === undefined) undefinedRefused(where);
      if (!isBsonScalar(v)) unclassifiable(v, where);
      continue;
    }
    if (Array.isArray(v)) {
      for (const item of v) stack.push(item);
      continue;
    }
    if (isDoc(v)) {
      // for...in over a decoded document (a plain object, own enumerable keys only): no entries array per level.
      for (const key in v) {
        if (SERVER_JS_OPERATORS.has(key)) operatorRefused(where, key);
        stack.push(v[key]);
      }
      continue;
    }
    if (v instanceof Code) codeRefused(where);
    if (!isBsonScalar(v)) unclassifiable(v, where);
  }
}

function unclassifiable(v: unknown, where: string): never {
  if (v instanceof DBRef) dbPointerRefused(where);
  throw commandError('BadValue', `${where}: a value of type ${bsonTypeName(v)} is not accepted by mdb-runtime`);
}

/**
 * The same check on the bytes of a document that is forwarded without being decoded (an inserted
 * document of a kind-1 sequence): Code and CodeWScope elements and the JavaScript operators as keys
 * at any depth. Its other values go upstream as they came, the deprecated types included. Iterative,
 * bounds-checked, and as deep as a decoded command may be.
 */
export function refuseServerJavaScriptBytes(doc: Buffer, where: string): void {
  const stack: ElementCursor[] = [new ElementCursor(doc, 0)];
  while (stack.length > 0) {
    const el = stack[stack.length - 1]!;
    if (!el.next()) {
      stack.pop();
      continue;
    }
    const type = el.type;
    if (type === BsonType.CODE || type === BsonType.CODE_W_SCOPE) codeRefused(where);
    if (type === BsonType.DOCUMENT || type === BsonType.ARRAY) {
      if (stack.length >= MAX_COMMAND_DEPTH) {
        throw commandError('Overflow', `BSONObj exceeds maximum nested object depth: ${MAX_COMMAND_DEPTH}`);
      }
      stack.push(new ElementCursor(doc, el.valueStart));
    }
    // A `$` key is rare: decode the name only then.
    if (doc[el.nameStart] === 0x24 && SERVER_JS_OPERATORS.has(doc.toString('utf8', el.nameStart, el.nameEnd))) {
      operatorRefused(where, doc.toString('utf8', el.nameStart, el.nameEnd));
    }
  }
}
