import { MAX_MESSAGE_SIZE, MIN_MESSAGE_SIZE } from './constants.js';
import { WireError } from './errors.js';

/**
 * A length outside the allowed range: the stream cannot be resynchronised. `complete` holds the whole
 * messages that preceded the bad length in the same push, which a server reading message by message
 * would still have answered.
 */
export class FramingError extends WireError {
  constructor(
    message: string,
    readonly complete: Buffer[],
  ) {
    super(message, 17, 'ProtocolError', 'close');
    this.name = 'FramingError';
  }
}

/**
 * Cuts a byte stream into whole wire messages. Messages that arrive inside one chunk are returned as
 * views of that chunk (no copy); a message split across chunks is joined once, when its last byte arrives.
 * A length outside [16, maxMessageSize] throws a FramingError (a fatal WireError).
 */
export class MessageFramer {
  private parts: Buffer[] = [];
  private buffered = 0;
  /** Length of the message being accumulated, once its first 4 bytes are known. */
  private expected = -1;

  constructor(public maxMessageSize: number = MAX_MESSAGE_SIZE) {}

  /** Bytes received but not yet part of a whole message. */
  get pendingBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let data = chunk;
    if (this.buffered > 0) {
      this.parts.push(chunk);
      this.buffered += chunk.length;
      if (this.expected < 0 && this.buffered >= 4) {
        const head = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.buffered);
        this.expected = this.checkLength(head.readInt32LE(0), out);
      }
      if (this.expected < 0 || this.buffered < this.expected) return out;
      data = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.buffered);
      this.parts = [];
      this.buffered = 0;
      this.expected = -1;
    }
    let offset = 0;
    while (data.length - offset >= 4) {
      const length = this.checkLength(data.readInt32LE(offset), out);
      if (data.length - offset < length) break;
      out.push(data.subarray(offset, offset + length));
      offset += length;
    }
    if (offset < data.length) {
      const rest = data.subarray(offset);
      this.parts = [rest];
      this.buffered = rest.length;
      this.expected = rest.length >= 4 ? rest.readInt32LE(0) : -1;
    }
    return out;
  }

  private checkLength(length: number, complete: Buffer[]): number {
    if (length < MIN_MESSAGE_SIZE || length > this.maxMessageSize) {
      throw new FramingError(
        `message length ${length} is outside the allowed range [${MIN_MESSAGE_SIZE}, ${this.maxMessageSize}]`,
        complete,
      );
    }
    return length;
  }
}
