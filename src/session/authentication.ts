import { Binary, deserialize, type Document } from 'bson';
import type { Logger } from '../observability/logger.js';
import type { AppManifest } from '../apps/manifests.js';
import {
  APPNAME_MAX_BYTES,
  CLOCK_TOLERANCE_SECONDS,
  TokenError,
  looksLikeJwt,
  verifyAppToken,
  type AppLookup,
  type VerifiedToken,
  type VerifiedTokenCache,
} from '../apps/tokens.js';
import { resolveRoles, type ResolvedRoles } from '../policy/rbac.js';
import { CommandError, OK, commandError } from '../policy/errors.js';
import { isDoc } from '../policy/scope.js';
import type { AuthReason } from '../observability/metrics.js';

/**
 * Per-connection authentication (README "How an app connects"). A connection belongs to at most one app, chosen by
 * a verified JWT given in one of three ways:
 *   - appName:      `client.application.name` in the handshake is a compact token;
 *   - PLAIN:        saslStart on $external, payload "\0<slug>\0<token>";
 *   - MONGODB-OIDC: saslStart (or the handshake's speculativeAuthenticate) with payload BSON {jwt}.
 * An app whose manifest says auth_required: false is also selected by `appName=<slug>` alone ("dev").
 *
 * Failed authentications answer AuthenticationFailed with no detail; the reason goes to the log (never
 * the token). Before authentication only the pre-auth commands of the command table run.
 */

export type Transport = 'appName' | 'PLAIN' | 'MONGODB-OIDC' | 'dev';

export interface Identity {
  /** The app's manifest when the connection authenticated (requests resolve the current one by slug). */
  readonly app: AppManifest;
  readonly sub: string | undefined;
  /** The roles resolved at authentication (requests re-resolve `rolesClaim` when the manifest changes). */
  readonly roles: ResolvedRoles;
  /** The token's `roles` claim as verified (undefined when absent, and for dev identities). */
  readonly rolesClaim: readonly string[] | undefined;
  /** Milliseconds since the epoch (the token's exp); undefined for dev identities and tokens without exp. */
  readonly expiresAt: number | undefined;
  readonly transport: Transport;
}

export interface AuthenticatorOptions {
  apps: AppLookup;
  logger: Logger;
  /**
   * Fields every line of this authenticator carries before its own (the connection's conn, app_id and
   * req): given as fields rather than bound in a child logger, which would cost more to make than the
   * one line a connection usually writes.
   */
  logFields?: () => Record<string, unknown>;
  /** The clock (milliseconds since the epoch); tests move it to expire tokens. */
  now: () => number;
  /** Verifications shared by the runtime's connections (src/apps/tokens.ts); none: every token is verified. */
  tokenCache?: VerifiedTokenCache | undefined;
  /** Called each time the connection (re)authenticates. */
  onAuthenticated?: (identity: Identity) => void;
  /**
   * Called for every attempt (metrics): `mechanism` as the client named it (appName, PLAIN,
   * MONGODB-OIDC, dev, or what an unsupported saslStart said), and why it failed ('ok' on success).
   */
  onAttempt?: (success: boolean, mechanism: string, reason: AuthReason) => void;
}

/** The one reply to every failed authentication: the server's, with no detail. */
const AUTH_FAILED = (): CommandError => commandError('AuthenticationFailed', 'Authentication failed.');
const EXTERNAL_DB = '$external';
/** How a connection presents its app's token (README, "How an app connects"): said to one that did not. */
const HOW_TO_AUTHENTICATE =
  "Pass the app's token as the password with SASL PLAIN (mongodb://<slug>:<token>@host/?authMechanism=PLAIN&authSource=%24external)";
const NO_APP_NAME =
  `: this connection presented no token and its handshake carried no appName. ${HOW_TO_AUTHENTICATE}, ` +
  'or as appName=<token> when it fits in 128 bytes (PyMongo and the Java driver drop a longer appName with only a warning)';
const APP_NAME_NOT_A_TOKEN = `: this connection's appName is neither a token nor an app that needs none. ${HOW_TO_AUTHENTICATE}`;
export const SUPPORTED_MECHANISMS = ['PLAIN', 'MONGODB-OIDC'] as const;

/** A failed attempt, with what the log and the metrics need. */
class AuthFailure extends Error {
  constructor(
    message: string,
    readonly reason: AuthReason,
    readonly app?: string,
  ) {
    super(message);
  }
}

/**
 * The metrics reason of a refused token (TokenError messages, src/apps/tokens.ts; test/session covers
 * each pattern with a real refusal). Anything unmatched is 'invalid_token'.
 */
const TOKEN_REASONS: readonly [RegExp, AuthReason][] = [
  [/^token expired/, 'expired'],
  [/^malformed token|^token longer than|has no 'app' claim/, 'malformed_token'],
  [/which is not registered$/, 'unknown_app'],
  [/^app '[^']*' (is unavailable|accepts no tokens)/, 'app_unavailable'],
  [/does not match the token's app claim/, 'app_mismatch'],
  [/^signature verification failed|^no key of app|^alg .* is not allowed/, 'bad_signature'],
  [/^claim '|claim is not|^the verified app claim|role/, 'invalid_claims'],
];

export function tokenFailureReason(message: string): AuthReason {
  for (const [pattern, reason] of TOKEN_REASONS) if (pattern.test(message)) return reason;
  return 'invalid_token';
}

export class ConnectionAuthenticator {
  private current: Identity | undefined;
  /** Set when the handshake's appName carried a token that failed: later commands say so. */
  private appNameError: string | undefined;
  private sawClientMetadata = false;
  /** The handshake's client metadata named an application (a token or a slug in appName). */
  private sawAppName = false;

  constructor(private readonly options: AuthenticatorOptions) {}

  get identity(): Identity | undefined {
    return this.current;
  }

  /**
   * The handshake (hello/isMaster, OP_MSG or OP_QUERY): reads appName (first client metadata only) and
   * speculativeAuthenticate. Returns the fields to add to the hello reply.
   */
  async onHello(cmd: Document): Promise<Document> {
    const extra: Document = {};
    if (typeof cmd.saslSupportedMechs === 'string') extra.saslSupportedMechs = [...SUPPORTED_MECHANISMS];
    const client = cmd.client;
    if (!this.sawClientMetadata && isDoc(client)) {
      this.sawClientMetadata = true;
      const appName = isDoc(client.application) ? client.application.name : undefined;
      this.sawAppName = typeof appName === 'string';
      if (typeof appName === 'string' && !this.current) await this.fromAppName(appName);
    }
    const speculative = cmd.speculativeAuthenticate;
    if (isDoc(speculative)) {
      // Only MONGODB-OIDC completes in one step; anything else is left to the saslStart that follows.
      // A failed speculative attempt is not an error: the reply just omits the field and the driver
      // authenticates normally (and its saslStart gets the AuthenticationFailed).
      if (speculative.mechanism === 'MONGODB-OIDC' && speculative.saslStart !== undefined) {
        try {
          await this.authenticate('MONGODB-OIDC', typeof speculative.db === 'string' ? speculative.db : '', speculative.payload);
          extra.speculativeAuthenticate = saslDone();
        } catch (err) {
          this.logFailure(err, 'MONGODB-OIDC', true);
        }
      }
    }
    return extra;
  }

  /** saslStart: PLAIN or MONGODB-OIDC (machine flow), both done in one step. */
  async saslStart(cmd: Document): Promise<Document> {
    const mechanism = typeof cmd.mechanism === 'string' ? cmd.mechanism : '';
    try {
      await this.authenticate(mechanism, typeof cmd.$db === 'string' ? cmd.$db : '', cmd.payload);
    } catch (err) {
      this.logFailure(err, mechanism, false);
      throw AUTH_FAILED();
    }
    return { ...saslDone(), ok: OK };
  }

  /** Every supported conversation ends in saslStart, so there is never one to continue. */
  saslContinue(_cmd: Document): Document {
    this.logFailure(new AuthFailure('saslContinue without a conversation (PLAIN and MONGODB-OIDC complete in saslStart)', 'unsupported_mechanism'), 'saslContinue', false);
    throw AUTH_FAILED();
  }

  /**
   * The gate before every command: throws unless `commandName` may run now. Pre-auth commands always
   * may; the others need an identity whose token has not expired.
   */
  check(commandName: string, preAuth: boolean): void {
    if (preAuth) return;
    const identity = this.current;
    if (!identity) {
      if (this.appNameError) throw new CommandError('AuthenticationFailed', this.appNameError, 18);
      throw commandError('Unauthorized', `command ${commandName} requires authentication${this.sawAppName ? APP_NAME_NOT_A_TOKEN : NO_APP_NAME}`);
    }
    if (identity.expiresAt !== undefined && this.options.now() > identity.expiresAt + CLOCK_TOLERANCE_SECONDS * 1000) {
      // MONGODB-OIDC drivers answer 391 by re-authenticating on this connection and retrying.
      if (identity.transport === 'MONGODB-OIDC') {
        throw commandError('ReauthenticationRequired', 'the token of this connection expired; re-authenticate (MONGODB-OIDC)');
      }
      throw commandError(
        'AuthenticationFailed',
        `token expired at ${new Date(identity.expiresAt).toISOString()}; connect again with a new token (or use MONGODB-OIDC, whose drivers refresh tokens)`,
      );
    }
  }

  private async fromAppName(appName: string): Promise<void> {
    if (looksLikeJwt(appName)) {
      try {
        this.accept(await this.verify(appName), 'appName');
      } catch (err) {
        this.logFailure(err, 'appName', false);
        this.appNameError =
          Buffer.byteLength(appName) >= APPNAME_MAX_BYTES
            ? `the token in appName is not valid: it is ${APPNAME_MAX_BYTES} bytes long, so the driver probably cut it ` +
              `(appName is limited to ${APPNAME_MAX_BYTES} bytes); mint a shorter one with \`mdb-runtime token\`, or use ` +
              'authMechanism=PLAIN (the token as password) for longer tokens'
            : `the token in appName is not valid (the proxy log says why; appName is limited to ${APPNAME_MAX_BYTES} bytes, ` +
              'use authMechanism=PLAIN for longer tokens)';
      }
      return;
    }
    const app = this.options.apps.get(appName);
    if (app && !app.authRequired) {
      this.accept({ app, sub: undefined, roles: resolveRoles(app.rbac, undefined), expiresAt: undefined, alg: 'none', rolesClaim: undefined }, 'dev');
    }
  }

  /** Runs one mechanism; throws AuthFailure or TokenError. */
  private async authenticate(mechanism: string, db: string, payload: unknown): Promise<void> {
    if (!(SUPPORTED_MECHANISMS as readonly string[]).includes(mechanism)) {
      throw new AuthFailure(
        `mechanism ${JSON.stringify(mechanism)} is not supported; use authMechanism=PLAIN&authSource=$external (the token as password) or MONGODB-OIDC`,
        'unsupported_mechanism',
      );
    }
    if (db !== EXTERNAL_DB) throw new AuthFailure(`${mechanism} must run on $external (authSource=$external), not on ${JSON.stringify(db)}`, 'bad_request');
    if (!(payload instanceof Binary)) throw new AuthFailure('the SASL payload is not binary data', 'bad_request');
    const bytes = Buffer.from(payload.read(0, payload.length()));
    if (mechanism === 'PLAIN') {
      // RFC 4616: [authzid] NUL authcid NUL passwd; the user name is the slug, the password the token.
      const parts = bytes.toString('utf8').split('\0');
      if (parts.length !== 3) throw new AuthFailure('malformed PLAIN payload (expected authzid\\0user\\0token)', 'bad_request');
      const [authzid, user, token] = parts as [string, string, string];
      if (authzid !== '' && authzid !== user) throw new AuthFailure(`PLAIN authzid '${authzid}' differs from the user name '${user}'`, 'app_mismatch', user);
      this.accept(await this.verify(token, user), 'PLAIN');
      return;
    }
    let jwt: unknown;
    try {
      jwt = deserialize(bytes).jwt;
    } catch {
      throw new AuthFailure('the MONGODB-OIDC payload is not a BSON document', 'bad_request');
    }
    if (typeof jwt !== 'string') {
      throw new AuthFailure(
        'MONGODB-OIDC payload has no jwt: only the machine flow is supported (a callback returning the token, e.g. OIDC_CALLBACK)',
        'bad_request',
      );
    }
    this.accept(await this.verify(jwt), 'MONGODB-OIDC');
  }

  private verify(token: string, expectedApp?: string): Promise<VerifiedToken> {
    const { apps, tokenCache } = this.options;
    return verifyAppToken(token, apps, {
      now: this.options.now(),
      ...(expectedApp !== undefined ? { expectedApp } : {}),
      ...(tokenCache ? { cache: tokenCache } : {}),
    });
  }

  /**
   * Sets the identity; a connection never changes app (re-authentication must name the same one). The
   * verified roles claim is kept so that a changed manifest can resolve it again.
   */
  private accept(verified: VerifiedToken, transport: Transport): void {
    const previous = this.current;
    if (previous && previous.app.slug !== verified.app.slug) {
      throw new AuthFailure(
        `this connection belongs to app '${previous.app.slug}'; a token for '${verified.app.slug}' cannot take it over`,
        'app_mismatch',
        verified.app.slug,
      );
    }
    const identity: Identity = {
      app: verified.app,
      sub: verified.sub,
      roles: verified.roles,
      rolesClaim: verified.rolesClaim,
      expiresAt: verified.expiresAt,
      transport,
    };
    this.current = identity;
    this.appNameError = undefined;
    this.options.logger.info(
      this.lineFields({ app_id: identity.app.slug, transport, sub: identity.sub, roles: identity.roles.names, reauth: previous !== undefined }),
      previous ? 'connection re-authenticated' : 'connection authenticated',
    );
    this.options.onAttempt?.(true, transport, 'ok');
    this.options.onAuthenticated?.(identity);
  }

  /** A line's fields after the connection's (logFields); an undefined field leaves the connection's. */
  private lineFields(own: Record<string, unknown>): Record<string, unknown> {
    const base = this.options.logFields?.();
    if (!base) return own;
    for (const key of Object.keys(own)) if (own[key] !== undefined) base[key] = own[key];
    return base;
  }

  private logFailure(err: unknown, mechanism: string, speculative: boolean): void {
    if (!(err instanceof AuthFailure || err instanceof TokenError)) throw err;
    const cause = err instanceof AuthFailure ? err.reason : tokenFailureReason(err.message);
    this.options.logger.warn(
      this.lineFields({ app_id: err.app, mechanism, reason: err.message, cause, ...(speculative ? { speculative: true } : {}) }),
      speculative ? 'speculative authentication failed' : 'authentication failed',
    );
    this.options.onAttempt?.(false, mechanism, cause);
  }
}

function saslDone(): Document {
  return { conversationId: 1, done: true, payload: new Binary(Buffer.alloc(0)) };
}

