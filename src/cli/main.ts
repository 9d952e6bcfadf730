#!/usr/bin/env node
import cluster from 'node:cluster';
import { Command, Option } from 'commander';
import { CONFIG_DIR_SETTING, ConfigError, SETTINGS, loadRuntimeConfig, type ConfigOverrides } from '../config/runtime-config.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { StartupError, startRuntime, type RunningRuntime } from '../runtime.js';
import { CliError, addTokenCommand } from './token.js';
import { addIndexesCommand } from './indexes.js';
import { addValidateCommand } from './validate.js';
import { VERSION } from '../version.js';
import { ClusterPrimary } from '../cluster/primary.js';
import { runWorker } from '../cluster/worker.js';

const program = new Command('mdb-runtime')
  .description('A MongoDB wire-protocol proxy that gives many small apps a safe sandbox on one shared cluster')
  .version(VERSION)
  .showHelpAfterError();

/** The settings table of --help: each env variable with its flag and runtime.yaml key. */
function settingsHelp(): string {
  const rows: [string, string, string][] = [
    ['variable', 'flag', 'runtime.yaml key'],
    [CONFIG_DIR_SETTING.env, CONFIG_DIR_SETTING.flag, `(config directory, default ${CONFIG_DIR_SETTING.default})`],
    ...SETTINGS.map((s): [string, string, string] => [s.env, s.flag, `${s.key} (default ${s.default})`]),
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  return [
    '',
    'Environment variables (precedence: flag > environment variable > runtime.yaml > default;',
    'an empty variable counts as unset):',
    ...rows.map(([env, flag, key]) => `  ${env.padEnd(w0)}  ${flag.padEnd(w1)}  ${key}`),
    '',
    'Exits 0 after a clean shutdown on SIGTERM or SIGINT (stops accepting, finishes requests in',
    'progress for up to shutdown_grace_ms, closes upstream connections); a second signal exits at once.',
    'Exits 1 on a configuration error or when the upstream cannot be reached at start.',
    '',
    'With --workers N (N > 1) the primary process forks N workers sharing the wire port and serves',
    'the HTTP endpoints for all of them (metrics summed); a worker that dies is restarted with a backoff.',
  ].join('\n');
}

const serve = program
  .command('serve')
  .description('run the proxy (MongoDB wire protocol) and its HTTP endpoints')
  .addOption(
    new Option(`${CONFIG_DIR_SETTING.short}, ${CONFIG_DIR_SETTING.flag} <dir>`, `config directory holding runtime.yaml and apps/ (default: ${CONFIG_DIR_SETTING.default})`),
  );
for (const s of SETTINGS) {
  serve.addOption(new Option(`${s.short ? `${s.short}, ` : ''}${s.flag} ${s.arg}`, `${s.help} (default: ${s.default})`));
}
serve.addHelpText('after', settingsHelp()).action(async (opts: ConfigOverrides) => {
  const config = loadRuntimeConfig(opts);
  if (config.workers > 1) {
    if (cluster.isWorker) return runWorker(config);
    return servePrimary(config);
  }
  const logger = createLogger(config.logLevel);

  // Signals are handled from the start: during startup there is nothing in flight, so a signal then
  // exits at once; once running, the first signal drains and the second one exits immediately.
  let runtime: RunningRuntime | undefined;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (!runtime || signals > 1) {
      logger.warn({ signal }, runtime ? 'second signal: exiting without finishing requests' : 'signal during startup: exiting');
      exit(logger, runtime ? 1 : 0);
      return;
    }
    logger.info({ signal }, 'signal received');
    runtime.stop().then(
      () => exit(logger, 0),
      (err: unknown) => {
        logger.error({ err }, 'error during shutdown');
        exit(logger, 1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  runtime = await startRuntime(config, logger);
});

/** `serve --workers N`, the primary: forks and supervises the workers, serves HTTP (src/cluster/primary.ts). */
async function servePrimary(config: ReturnType<typeof loadRuntimeConfig>): Promise<void> {
  const logger = createLogger(config.logLevel, undefined, { worker: 0 });
  const primary = new ClusterPrimary(config, logger);
  let running = false;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (!running || signals > 1) {
      logger.warn({ signal }, running ? 'second signal: killing the workers without finishing requests' : 'signal during startup: exiting');
      primary.kill();
      exit(logger, running ? 1 : 0);
      return;
    }
    logger.info({ signal }, 'signal received');
    primary.stop().then(
      (code) => exit(logger, code),
      (err: unknown) => {
        logger.error({ err }, 'error during shutdown');
        exit(logger, 1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  await primary.start();
  running = true;
}

addTokenCommand(program);
addIndexesCommand(program);
addValidateCommand(program);

/** Exits once the log lines written so far are flushed (or after 2 s if stdout does not drain). */
function exit(logger: Logger, code: number): void {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 2000).unref();
  logger.flush(() => process.exit(code));
}

program.parseAsync(process.argv).catch((err: unknown) => {
  let message: string;
  if (err instanceof ConfigError) message = `configuration error: ${err.message}`;
  else if (err instanceof StartupError) message = `cannot start: ${err.message}`;
  else if (err instanceof CliError) message = err.message;
  else message = `error: ${err instanceof Error ? err.message : String(err)}`;
  process.stderr.write(`mdb-runtime: ${message}\n`);
  process.exit(1);
});
