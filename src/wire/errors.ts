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

export const fatalWireError = (message: string): WireError => new WireError(message, 17, 'ProtocolError', 'close');
