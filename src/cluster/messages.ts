/**
 * The IPC messages between the primary and the workers of `serve --workers N` (node:cluster's channel,
 * JSON). Every message of ours carries `mdb`; prom-client's own metric requests (AggregatorRegistry)
 * travel on the same channel with their own `type`.
 */

/** worker → primary: the runtime is up (the wire port is shared and listening). */
export interface ReadyMessage {
  mdb: 'ready';
  worker: number;
  pid: number;
  listen: string;
  upstream: string;
  database: string;
  topology: string;
  apps: string[];
  manifestErrors: string[];
  config: string;
}

/** worker → primary: startRuntime failed; `kind` says which error the primary reports (and how: exit 1). */
export interface FatalMessage {
  mdb: 'fatal';
  kind: 'config' | 'startup' | 'error';
  message: string;
}

/** primary → worker: answer `what` (readiness: the /readyz result and connection count; apps: /apps). */
export interface RequestMessage {
  mdb: 'request';
  id: number;
  what: 'readiness' | 'apps';
}

/** worker → primary: the answer to a request. */
export interface ReplyMessage {
  mdb: 'reply';
  id: number;
  value?: unknown;
  error?: string;
}

/** primary → worker: drain and exit (shutdown_grace_ms semantics), exit code 0 when clean. */
export interface ShutdownMessage {
  mdb: 'shutdown';
}

export type WorkerMessage = ReadyMessage | FatalMessage | ReplyMessage;
export type PrimaryMessage = RequestMessage | ShutdownMessage;

/** What a worker answers to 'readiness'. */
export interface WorkerReadiness {
  ready: boolean;
  detail: Record<string, unknown>;
  /** Open client connections of this worker. */
  connections: number;
}

/** The environment variable carrying a worker's number (1..N) to the forked process. */
export const WORKER_ID_ENV = 'MDB_WORKER_ID';

export function isOurs(m: unknown): m is { mdb: string } {
  return typeof m === 'object' && m !== null && typeof (m as { mdb?: unknown }).mdb === 'string';
}
