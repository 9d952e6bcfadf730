/**
 * The upstream failed in a way the client cannot be answered about (connection refused, reset, timed
 * out mid-request). The session closes the client's connection so its driver retries elsewhere.
 */
export class UpstreamError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UpstreamError';
  }
}

/** No upstream server or connection could be had before anything was sent: a client may safely retry. */
export class UnreachableError extends Error {
  constructor(readonly detail: string) {
    super(detail);
    this.name = 'UnreachableError';
  }
}

/** The client left before its request was sent upstream: it was not sent (nobody could read its reply). */
export class ClientGoneError extends Error {
  constructor() {
    super('the client closed its connection before the request was sent upstream');
    this.name = 'ClientGoneError';
  }
}
