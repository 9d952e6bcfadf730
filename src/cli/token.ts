import crypto, { type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { CONFIG_DIR_SETTING, formatHostPort, loadRuntimeConfig } from '../config/runtime-config.js';
import { SLUG_PATTERN } from '../apps/manifests.js';
import { loadApps } from '../apps/registry.js';
import { APPNAME_MAX_BYTES, mintToken, verifyAppToken } from '../apps/tokens.js';
import { devEnvironment } from './dev-state.js';

/** A problem the person running the command can fix; printed as is, exit 1. */
export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}

interface TokenOptions {
  sub?: string;
  roles?: string;
  ttl: string;
  config?: string;
  keyFile?: string;
}

/** `mdb-runtime token <slug>`: mints a token, prints it on stdout and how to connect with it on stderr. */
export function addTokenCommand(program: Command): void {
  program
    .command('token')
    .description("mint a JWT for an app (signed with the app's secret_env secret, or --key-file for public-key apps)")
    .argument('<slug>', 'the app, as named by its manifest (config/apps/<slug>.yaml)')
    .option('--sub <subject>', "the token's sub claim (who, within the app)")
    .option('--roles <list>', 'comma-separated role names from the manifest (default: the manifest\'s default_role)')
    .option('--ttl <duration>', 'lifetime: seconds, or a number with s, m, h or d', '1h')
    .option(`${CONFIG_DIR_SETTING.short}, ${CONFIG_DIR_SETTING.flag} <dir>`, `config directory holding apps/ (default: ${CONFIG_DIR_SETTING.default})`)
    .option('--key-file <pem>', 'private key (PKCS#8 PEM) for apps verified by public_key_file or jwks_file')
    .addHelpText(
      'after',
      [
        '',
        'The token is printed alone on stdout; stderr says whether it fits in appName (<= 128 bytes)',
        'and the connection string to use. Example:',
        '  TOKEN=$(mdb-runtime token task_manager --sub alice --ttl 8h)',
        '  mongosh "mongodb://task_manager:$TOKEN@127.0.0.1:27100/?authMechanism=PLAIN&authSource=%24external"',
      ].join('\n'),
    )
    .action(async (slug: string, opts: TokenOptions) => {
      process.stdout.write(`${await runToken(slug, opts, (line) => process.stderr.write(`${line}\n`))}\n`);
    });
}

/** Mints the token (returned) and reports on `note`. Throws CliError or ConfigError. */
export async function runToken(slug: string, opts: TokenOptions, note: (line: string) => void): Promise<string> {
  const ttlSeconds = parseTtl(opts.ttl);
  // Beside `npm run dev`: its config, listen address and generated secrets, unless named here.
  const env = devEnvironment(opts, process.env, note);
  const config = loadRuntimeConfig(opts.config !== undefined ? { config: opts.config } : {}, env);
  if (!SLUG_PATTERN.test(slug)) throw new CliError(`'${slug}' is not an app slug (${SLUG_PATTERN.source}); see ${path.join(config.configDir, 'apps')}`);
  const apps = loadApps(config.configDir, env);
  const app = apps.get(slug);
  if (!app) {
    const known = apps.slugs.join(', ') || 'none';
    throw new CliError(`no app '${slug}' in ${path.join(config.configDir, 'apps')} (apps: ${known}); pass --config <dir> if it lives elsewhere`);
  }
  if (app.unavailable) throw new CliError(`app '${slug}' cannot sign tokens here: ${app.unavailable}`);
  if (!app.jwt || app.jwt.keys.length === 0) {
    throw new CliError(
      `app '${slug}' has no auth.jwt key in ${app.file}` +
        (app.authRequired ? '' : `; it needs no token: clients select it with appName=${slug} (auth_required: false)`),
    );
  }

  const roles = opts.roles === undefined ? undefined : opts.roles.split(',').map((r) => r.trim()).filter((r) => r !== '');
  if (roles && app.rbac) {
    const unknown = roles.filter((r) => !app.rbac!.roles.has(r));
    if (unknown.length) throw new CliError(`--roles: ${unknown.join(', ')} not defined by ${app.file} (roles: ${[...app.rbac.roles.keys()].join(', ')})`);
  } else if (roles) {
    note(`note: ${app.file} defines no roles, so the roles claim has no effect (every identity of '${slug}' may do everything)`);
  }

  let privateKey: KeyObject | undefined;
  if (opts.keyFile !== undefined) privateKey = readPrivateKey(opts.keyFile);
  else if (!app.jwt.keys.some((k) => k.kind === 'secret')) {
    throw new CliError(`app '${slug}' is verified by public keys (${app.jwt.keys.map((k) => k.source).join(', ')}); pass its private key with --key-file <pem>`);
  }

  let minted: Awaited<ReturnType<typeof mintToken>>;
  try {
    minted = await mintToken(app, { sub: opts.sub, roles, ttlSeconds, privateKey });
  } catch (err) {
    throw new CliError((err as Error).message);
  }
  // The proxy must accept what this printed: verify it as the proxy would (catches a --key-file whose
  // public half is not in the manifest).
  try {
    await verifyAppToken(minted.token, apps);
  } catch (err) {
    const what = opts.keyFile !== undefined ? `the key in ${path.resolve(opts.keyFile)} does not match the keys of app '${slug}'` : 'the minted token does not verify';
    throw new CliError(`${what}: ${(err as Error).message}`);
  }
  const bytes = Buffer.byteLength(minted.token);
  const listen = formatHostPort(config.listen);
  note(`token for app '${slug}' (${minted.alg}, expires ${new Date(minted.expiresAt).toISOString()}), ${bytes} bytes`);
  const plain = `mongodb://${slug}:<token>@${listen}/?authMechanism=PLAIN&authSource=%24external`;
  if (bytes <= APPNAME_MAX_BYTES) {
    note(`fits in appName (${bytes} <= ${APPNAME_MAX_BYTES} bytes): mongodb://${listen}/?appName=<token>`);
    note(`or with SASL PLAIN (any driver, any token size): ${plain}`);
  } else {
    note(
      `does not fit in appName (${bytes} > ${APPNAME_MAX_BYTES} bytes: drivers cut or refuse longer names; ` +
        `${minted.alg === 'HS256' ? 'drop --sub/--roles or use a shorter slug to fit' : 'only compact HS256 tokens fit'}).`,
    );
    note(`connect with SASL PLAIN, the token as password: ${plain}`);
  }
  return minted.token;
}

/** `3600`, `90s`, `15m`, `8h`, `7d` → seconds. */
export function parseTtl(text: string): number {
  const m = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
  const seconds = m ? Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'] : NaN;
  if (!Number.isSafeInteger(seconds) || seconds <= 0) {
    throw new CliError(`--ttl: expected a positive duration such as 3600, 90s, 15m, 8h or 7d, found '${text}'`);
  }
  return seconds;
}

function readPrivateKey(file: string): KeyObject {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new CliError(`--key-file: cannot read ${path.resolve(file)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return crypto.createPrivateKey(text);
  } catch (err) {
    throw new CliError(`--key-file: ${path.resolve(file)} is not a PEM private key (PKCS#8 "BEGIN PRIVATE KEY"): ${(err as Error).message}`);
  }
}
