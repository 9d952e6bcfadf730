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

const CENSOR = '***';
/** The names redacted at the top level (pino's redact: a censor per key, paid only when the key is there). */
const TOP_LEVEL_PATHS = REDACT_PATHS.filter((p) => !p.startsWith('*.'));
/** The names redacted one level down ('*.name'): see censorNested. */
const NESTED_NAMES = REDACT_PATHS.filter((p) => p.startsWith('*.')).map((p) => p.slice(2));

/**
 * The one-level-down part of REDACT_PATHS ('*.password' ...), as pino's log formatter: a line's fields
 * whose value is an object holding one of the names are replaced by a copy with that value censored
 * (the caller's objects are never changed). pino's own redact does this for wildcard paths by running
 * its redactor on every field of every line, strings and numbers included, which was two thirds of the
 * cost of a typical line (≈20 of 30 µs); here a line without objects costs one typeof per field.
 * Child loggers' bindings get the top-level redaction only (they are flat: conn, app_id, req, ...).
 */
export function censorNested(obj: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const key in obj) {
    const value = obj[key];
    if (typeof value !== 'object' || value === null) continue;
    let copy: Record<string, unknown> | undefined;
    for (const name of NESTED_NAMES) {
      if (Object.prototype.hasOwnProperty.call(value, name)) {
        copy ??= copyOf(value);
        copy[name] = CENSOR;
      }
    }
    if (copy) (out ??= copyOf(obj))[key] = copy;
  }
  return out ?? obj;
}

/** A shallow copy keeping the prototype (an Error stays an Error, with its message and stack). */
function copyOf(value: object): Record<string, unknown> {
  const copy = Object.assign(Object.create(Object.getPrototypeOf(value) as object | null) as Record<string, unknown>, value);
  if (value instanceof Error) {
    copy.message = value.message;
    copy.stack = value.stack;
  }
  return copy;
}

/** How log lines are written: human-readable in a terminal, JSON lines otherwise (files, collectors). */
export type LogFormat = 'pretty' | 'json';

/** The format for an output stream: pretty only when it is a TTY. */
export function chooseLogFormat(stream: { isTTY?: boolean | undefined }): LogFormat {
  return stream.isTTY === true ? 'pretty' : 'json';
}

export interface LoggerOptions {
  /** Where lines go when no destination is given (default process.stdout); its isTTY picks the format. */
  stdout?: NodeJS.WritableStream & { isTTY?: boolean | undefined; fd?: number };
  /**
   * `serve --workers N` (N > 1): every line carries `worker`, the worker's number (1..N; 0 is the
   * primary process, which forks and supervises the workers and serves HTTP).
   */
  worker?: number;
}

/**
 * JSON lines to stdout are gathered into writes of about this many bytes (a dozen or more lines), and
 * written at the latest LOG_FLUSH_MS after they were logged: one write syscall per line was a large part
 * of the cost of a new connection (bench/scale.mjs; each logs `connection authenticated` at info).
 */
export const LOG_BUFFER_BYTES = 4096;
export const LOG_FLUSH_MS = 100;

/**
 * The root logger. With a `destination`, JSON lines go there (tests capture them). Otherwise lines go
 * to stdout: JSON, or pino-pretty's human-readable lines when stdout is a terminal. pino-pretty runs
 * as a stream in this thread (not a worker transport), synchronously, so nothing is lost at exit.
 *
 * JSON to the process's stdout goes through pino's asynchronous destination (sonic-boom, as pino's
 * default destination already was) buffering up to LOG_BUFFER_BYTES, flushed every LOG_FLUSH_MS. No
 * line is lost when the process ends: the serve command's exits (signals, shutdown) wait for
 * logger.flush, and pino writes what is left synchronously on process exit (a fatal startup error's
 * process.exit, an uncaught exception).
 */
export function createLogger(level: string, destination?: pino.DestinationStream, options: LoggerOptions = {}): Logger {
  const settings: pino.LoggerOptions = {
    level,
    base: options.worker !== undefined ? { pid: process.pid, worker: options.worker } : { pid: process.pid },
    redact: { paths: [...TOP_LEVEL_PATHS], censor: CENSOR },
    formatters: { log: censorNested },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (destination) return pino(settings, destination);
  const stdout = options.stdout ?? process.stdout;
  if (chooseLogFormat(stdout) === 'pretty') {
    return pino(settings, pretty({ destination: stdout, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }));
  }
  // pino's own destination when stdout is the process's, else the given stream.
  if (stdout !== process.stdout) return pino(settings, stdout);
  const buffered = pino.destination({ dest: process.stdout.fd ?? 1, sync: false, minLength: LOG_BUFFER_BYTES, periodicFlush: LOG_FLUSH_MS });
  return pino(settings, buffered);
}
