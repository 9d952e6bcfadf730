import { HEADER_SIZE } from './constants.js';

export interface MessageHeader {
  messageLength: number;
  requestId: number;
  responseTo: number;
  opCode: number;
}

export function readHeader(msg: Buffer): MessageHeader {
  return {
    messageLength: msg.readInt32LE(0),
    requestId: msg.readInt32LE(4),
    responseTo: msg.readInt32LE(8),
    opCode: msg.readInt32LE(12),
  };
}

export function writeHeader(target: Buffer, length: number, requestId: number, responseTo: number, opCode: number): void {
  target.writeInt32LE(length, 0);
  target.writeInt32LE(requestId, 4);
  target.writeInt32LE(responseTo, 8);
  target.writeInt32LE(opCode, 12);
}

/** Request ids are int32 and wrap; 0 is avoided because responseTo 0 means "not a reply". */
export class RequestIdCounter {
  private next = 1;
  take(): number {
    const id = this.next;
    this.next = this.next >= 0x7fffffff ? 1 : this.next + 1;
    return id;
  }
}

export { HEADER_SIZE };
