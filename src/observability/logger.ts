import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger } from 'pino';

/**
 * Fields that may hold a secret wherever they appear (top level or one level down): their values are
 * replaced before a line is written. The proxy never logs tokens, passwords or document contents on
 * purpose (see the tests in test/observability); this is the net under that rule.
 */
export const REDACT_PATHS: readonly string[] = [
  'password',
  'token',
  'jwt',
  'secret',
  'payload',
  'authorization',
  'uri',
  'filter',
  'documents',
  'speculativeAuthenticate',
  '*.password',
  '*.token',
  '*.jwt',
  '*.secret',
  '*.payload',
  '*.authorization',
  '*.uri',
  '*.filter',
  '*.documents',
  '*.speculativeAuthenticate',
];

/** How log lines are written: human-readable in a terminal, JSON lines otherwise (files, collectors). */
export type LogFormat = 'pretty' | 'json';

/** The format for an output stream: pretty only when it is a TTY. */
export function chooseLogFormat(stream: { isTTY?: boolean | undefined }): LogFormat {
  return stream.isTTY === true ? 'pretty' : 'json';
}

export interface LoggerOptions {
  /** Where lines go when no destination is given (default process.stdout); its isTTY picks the format. */
  stdout?: NodeJS.WritableStream & { isTTY?: boolean | undefined; fd?: number };
}

/**
 * The root logger. With a `destination`, JSON lines go there (tests capture them). Otherwise lines go
 * to stdout: JSON, or pino-pretty's human-readable lines when stdout is a terminal. pino-pretty runs
 * as a stream in this thread (not a worker transport), synchronously, so nothing is lost at exit.
 */
export function createLogger(level: string, destination?: pino.DestinationStream, options: LoggerOptions = {}): Logger {
  const settings: pino.LoggerOptions = {
    level,
    base: { pid: process.pid },
    redact: { paths: [...REDACT_PATHS], censor: '***' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (destination) return pino(settings, destination);
  const stdout = options.stdout ?? process.stdout;
  if (chooseLogFormat(stdout) === 'pretty') {
    return pino(settings, pretty({ destination: stdout, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }));
  }
  // pino's own stdout destination when stdout is the process's (as before), else the given stream.
  return stdout === process.stdout ? pino(settings) : pino(settings, stdout);
}
