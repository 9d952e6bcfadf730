/**
 * What to do with a message the proxy cannot accept:
 * - `reply`: answer with the server's error shape, keep the connection;
 * - `replyAndClose`: answer, then close (the server's ConnectionFatalMessageParseError category);
 * - `close`: the stream cannot be trusted any more (bad length, unknown opcode): close without answering.
 */
export type WireErrorDisposition = 'reply' | 'replyAndClose' | 'close';

export class WireError extends Error {
  constructor(
    message: string,
    readonly code: number,
    readonly codeName: string,
    readonly disposition: WireErrorDisposition,
  ) {
    super(message);
    this.name = 'WireError';
  }
}

/**
 * A document carries a field the proxy stamps (see `stampField` in bson-edit.ts) with a value other than
 * the stamped one. A WireError answered as BadValue (2) by default, so an uncaught one still gets the
 * insert's error shape; callers may map it to another code (ImmutableField for updates). Carries the field
 * name and a short description of what was found, never the document itself.
 */
export class FieldConflictError extends WireError {
  constructor(
    /** The field name, as given to the stamping function. */
    readonly field: string,
    /** What the conflicting occurrence holds: `a string "other"`, `an int32`, `null`... */
    readonly found: string,
    /** How many top-level fields of that name the document has (duplicate keys are legal in raw BSON). */
    readonly occurrences = 1,
    /** Position of the document in its batch, when stamping a batch. */
    readonly index?: number,
  ) {
    super(
      `${index === undefined ? '' : `document ${index}: `}field '${field}' holds ${found}` +
        `${occurrences > 1 ? ` (the field appears ${occurrences} times)` : ''}, which conflicts with the value the proxy stamps`,
      2,
      'BadValue',
      'reply',
    );
    this.name = 'FieldConflictError';
  }
}

export const fatalWireError = (message: string): WireError => new WireError(message, 17, 'ProtocolError', 'close');
