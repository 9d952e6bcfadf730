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
