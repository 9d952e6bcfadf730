import crypto from 'node:crypto';
import { promisify } from 'node:util';
import { Binary, type Document } from 'bson';
import { saslprep } from '@mongodb-js/saslprep';
import { UpstreamError } from './errors.js';

const pbkdf2 = promisify(crypto.pbkdf2);

export type UpstreamMechanism = 'SCRAM-SHA-256' | 'SCRAM-SHA-1' | 'PLAIN' | 'MONGODB-X509' | 'DEFAULT';

/** Credentials the proxy uses towards the upstream, from the upstream URI. */
export interface UpstreamCredentials {
  username: string;
  password: string;
  source: string;
  mechanism: UpstreamMechanism;
}

/** The part of a connection authentication needs: one command at a time. */
export interface CommandRunner {
  hello: Document;
  command(cmd: Document): Promise<Document>;
}

export async function authenticate(conn: CommandRunner, creds: UpstreamCredentials): Promise<void> {
  let mechanism = creds.mechanism;
  if (mechanism === 'DEFAULT') {
    const offered = conn.hello.saslSupportedMechs;
    mechanism = Array.isArray(offered) && !offered.includes('SCRAM-SHA-256') ? 'SCRAM-SHA-1' : 'SCRAM-SHA-256';
  }
  try {
    switch (mechanism) {
      case 'SCRAM-SHA-256':
      case 'SCRAM-SHA-1':
        return await scram(conn, creds, mechanism);
      case 'PLAIN':
        await conn.command({
          saslStart: 1,
          mechanism: 'PLAIN',
          payload: new Binary(Buffer.from(`\0${creds.username}\0${creds.password}`, 'utf8')),
          autoAuthorize: 1,
          $db: creds.source,
        });
        return;
      case 'MONGODB-X509':
        await conn.command({ authenticate: 1, mechanism: 'MONGODB-X509', ...(creds.username ? { user: creds.username } : {}), $db: '$external' });
        return;
    }
  } catch (err) {
    if (err instanceof UpstreamError) throw err;
    throw new UpstreamError(`upstream authentication (${mechanism}) as '${creds.username}' failed: ${(err as Error).message}`, { cause: err });
  }
}

/** Salted passwords are cached: PBKDF2 costs milliseconds and every new pooled connection authenticates. */
const saltedPasswords = new Map<string, Buffer>();

async function scram(conn: CommandRunner, creds: UpstreamCredentials, mechanism: 'SCRAM-SHA-256' | 'SCRAM-SHA-1'): Promise<void> {
  const hash = mechanism === 'SCRAM-SHA-256' ? 'sha256' : 'sha1';
  const keyLength = mechanism === 'SCRAM-SHA-256' ? 32 : 20;
  const password =
    mechanism === 'SCRAM-SHA-256'
      ? saslprep(creds.password)
      : crypto.createHash('md5').update(`${creds.username}:mongo:${creds.password}`, 'utf8').digest('hex');
  const user = creds.username.replace(/=/g, '=3D').replace(/,/g, '=2C');
  const clientNonce = crypto.randomBytes(24).toString('base64');
  const clientFirstBare = `n=${user},r=${clientNonce}`;

  const first = await conn.command({
    saslStart: 1,
    mechanism,
    payload: new Binary(Buffer.from(`n,,${clientFirstBare}`, 'utf8')),
    autoAuthorize: 1,
    options: { skipEmptyExchange: true },
    $db: creds.source,
  });
  const serverFirst = payloadText(first.payload);
  const fields = parseScram(serverFirst);
  const serverNonce = fields.get('r');
  const salt = fields.get('s');
  const iterations = Number(fields.get('i'));
  if (!serverNonce?.startsWith(clientNonce) || !salt || !Number.isInteger(iterations) || iterations < 4096) {
    throw new UpstreamError(`upstream sent an invalid ${mechanism} challenge`);
  }
  const cacheKey = `${mechanism}\0${creds.username}\0${password}\0${salt}\0${iterations}`;
  let salted = saltedPasswords.get(cacheKey);
  if (!salted) {
    salted = await pbkdf2(password, Buffer.from(salt, 'base64'), iterations, keyLength, hash);
    saltedPasswords.set(cacheKey, salted);
  }
  const hmac = (key: Buffer, text: string) => crypto.createHmac(hash, key).update(text).digest();
  const clientKey = hmac(salted, 'Client Key');
  const storedKey = crypto.createHash(hash).update(clientKey).digest();
  const withoutProof = `c=biws,r=${serverNonce}`;
  const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
  const signature = hmac(storedKey, authMessage);
  const proof = Buffer.alloc(clientKey.length);
  for (let i = 0; i < proof.length; i++) proof[i] = clientKey[i]! ^ signature[i]!;
  const serverSignature = hmac(hmac(salted, 'Server Key'), authMessage).toString('base64');

  let reply = await conn.command({
    saslContinue: 1,
    conversationId: first.conversationId,
    payload: new Binary(Buffer.from(`${withoutProof},p=${proof.toString('base64')}`, 'utf8')),
    $db: creds.source,
  });
  const final = parseScram(payloadText(reply.payload));
  if (final.get('v') !== serverSignature) throw new UpstreamError(`upstream ${mechanism} server signature mismatch`);
  while (!reply.done) {
    reply = await conn.command({ saslContinue: 1, conversationId: first.conversationId, payload: new Binary(Buffer.alloc(0)), $db: creds.source });
  }
}

function payloadText(payload: unknown): string {
  if (payload instanceof Binary) return Buffer.from(payload.read(0, payload.length())).toString('utf8');
  if (payload instanceof Uint8Array) return Buffer.from(payload).toString('utf8');
  throw new UpstreamError('upstream SASL reply carries no payload');
}

function parseScram(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) out.set(part.slice(0, eq), part.slice(eq + 1));
  }
  return out;
}
