import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

/** The root logger: JSON lines on stdout; secrets never reach it (see redact paths). */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: ['password', 'token', 'uri', '*.password', '*.token'], censor: '***' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
