import { createHash } from 'node:crypto';
import { Binary } from 'bson';
import { commandError } from './errors.js';
import { isDoc, type AppScope, type Doc } from './scope.js';

/**
 * Logical session ids are per app (docs/security.md): the id a driver sends is replaced by a digest of
 * (app, id), so two apps that pick the same id never share a session, and no app can name another's.
 * The mapping is deterministic, so every proxy process maps a session the same way (a driver may move
 * between proxies behind a load balancer), and needs no state or secret: reaching another app's
 * session would need a SHA-256 collision.
 */
export function mapSessionId(scope: AppScope, id: Binary): Binary {
  const bytes = id.read(0, id.length());
  // Drivers reuse a handful of pooled session ids for every command: remember their mappings.
  const key = `${scope.slug}\0${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')}`;
  const known = mapped.get(key);
  if (known) return known;
  const result = digestId(scope, bytes);
  if (mapped.size >= MAPPED_SESSIONS_CACHED) mapped.delete(mapped.keys().next().value!);
  mapped.set(key, result);
  return result;
}

/** Bounded memo of session-id mappings (oldest dropped first). */
const MAPPED_SESSIONS_CACHED = 10_000;
const mapped = new Map<string, Binary>();

function digestId(scope: AppScope, bytes: Uint8Array): Binary {
  const digest = createHash('sha256').update(scope.slug).update('\0').update(bytes).digest();
  // Keep it a well-formed UUID (version 4, RFC 4122 variant): servers expect lsid.id to be a UUID.
  digest[6] = (digest[6]! & 0x0f) | 0x40;
  digest[8] = (digest[8]! & 0x3f) | 0x80;
  return new Binary(digest.subarray(0, 16), Binary.SUBTYPE_UUID);
}

/** Maps an `lsid` document ({id: UUID}); the server-side `uid` is never accepted from a client. */
export function mapLsid(scope: AppScope, lsid: unknown, field: string): Doc {
  if (!isDoc(lsid) || !(lsid.id instanceof Binary) || lsid.id.sub_type !== Binary.SUBTYPE_UUID || lsid.id.length() !== 16) {
    throw commandError('TypeMismatch', `${field}: a logical session id must be {id: UUID}`);
  }
  for (const key of Object.keys(lsid)) {
    if (key !== 'id') throw commandError('Unauthorized', `${field}.${key}: only the session's id may be given`);
  }
  return { id: mapSessionId(scope, lsid.id) };
}
