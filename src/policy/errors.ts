import { Double, type Document } from 'bson';

/** The server error codes the proxy itself produces (src/mongo/base/error_codes.yml). */
export const ErrorCodes = {
  BadValue: 2,
  HostUnreachable: 6,
  FailedToParse: 9,
  Unauthorized: 13,
  TypeMismatch: 14,
  Overflow: 15,
  ProtocolError: 17,
  AuthenticationFailed: 18,
  IllegalOperation: 20,
  InvalidBSON: 22,
  CursorNotFound: 43,
  CommandNotFound: 59,
  ImmutableField: 66,
  InvalidOptions: 72,
  InvalidNamespace: 73,
  NamespaceNotFound: 26,
  OperationNotSupportedInTransaction: 263,
  ShutdownInProgress: 91,
  FailedToSatisfyReadPreference: 133,
  QueryFeatureNotAllowed: 224,
  UnsupportedOpQueryCommand: 352,
  ReauthenticationRequired: 391,
} as const;

export type ErrorCodeName = keyof typeof ErrorCodes;

/** `ok` as a server sends it: a double (1.0 or 0.0), never an int32. */
export const OK = new Double(1);
export const NOT_OK = new Double(0);

/** An error answered to the client in the server's shape: `{ ok: 0, errmsg, code, codeName }`. */
export class CommandError extends Error {
  readonly code: number;
  constructor(
    readonly codeName: string,
    message: string,
    code?: number,
    readonly errorLabels?: string[],
  ) {
    super(message);
    this.name = 'CommandError';
    this.code = code ?? ErrorCodes[codeName as ErrorCodeName] ?? 8;
  }
}

export const commandError = (codeName: ErrorCodeName, message: string, errorLabels?: string[]): CommandError =>
  new CommandError(codeName, message, ErrorCodes[codeName], errorLabels);

/** An error the server raises by assertion number, whose codeName is "Location<code>". */
export const locationError = (code: number, message: string): CommandError => new CommandError(`Location${code}`, message, code);

/** An unknown top-level field, in the shape of the server's IDL parser (code 40415). */
export const unknownFieldError = (command: string, field: string): CommandError =>
  new CommandError('Location40415', `BSON field '${command}.${field}' is an unknown field.`, 40415);

export function errorReply(err: { code: number; codeName: string; message: string; errorLabels?: string[] | undefined }): Document {
  const reply: Document = { ok: NOT_OK, errmsg: err.message, code: err.code, codeName: err.codeName };
  if (err.errorLabels?.length) reply.errorLabels = err.errorLabels;
  return reply;
}
