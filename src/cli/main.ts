#!/usr/bin/env node
import { Command, Option } from 'commander';
import { ConfigError, loadRuntimeConfig, redactUri } from '../apps/runtime-config.js';
import { createLogger } from '../observability/logger.js';
import { startRuntime } from '../runtime.js';
import { VERSION } from '../version.js';

const program = new Command('mdb-runtime')
  .description('A MongoDB wire-protocol proxy that gives many small apps a safe sandbox on one shared cluster')
  .version(VERSION)
  .showHelpAfterError();

program
  .command('serve')
  .description('run the proxy (MongoDB wire protocol) and its HTTP endpoints')
  .addOption(new Option('-c, --config <dir>', 'config directory holding runtime.yaml and apps/ [env MDB_CONFIG] (default: ./config)'))
  .addOption(new Option('-l, --listen <host:port>', 'MongoDB wire-protocol listen address [env MDB_LISTEN] (default: 127.0.0.1:27100)'))
  .addOption(new Option('--http-listen <host:port>', 'HTTP listen address for health and metrics [env MDB_HTTP_LISTEN] (default: 127.0.0.1:27180)'))
  .addOption(new Option('-u, --upstream <uri>', 'upstream MongoDB connection string [env MDB_UPSTREAM_URI] (default: mongodb://127.0.0.1:27017)'))
  .addOption(new Option('-d, --database <name>', 'shared physical database on the upstream [env MDB_DATABASE] (default: mdb_runtime)'))
  .addOption(new Option('--log-level <level>', 'trace, debug, info, warn, error, fatal or silent [env MDB_LOG_LEVEL] (default: info)'))
  .action(async (opts: { config?: string; listen?: string; httpListen?: string; upstream?: string; database?: string; logLevel?: string }) => {
    const config = loadRuntimeConfig(opts);
    const logger = createLogger(config.logLevel);
    let runtime;
    try {
      runtime = await startRuntime(config, logger);
    } catch (err) {
      throw new Error(`cannot start: ${(err as Error).message} (upstream ${redactUri(config.upstream.uri)})`, { cause: err });
    }
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      if (++signals > 1) {
        logger.warn({ signal }, 'second signal: exiting immediately');
        process.exit(1);
      }
      logger.info({ signal }, 'signal received');
      runtime.stop().then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, 'error during shutdown');
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  const message = err instanceof ConfigError ? `configuration error: ${err.message}` : `error: ${(err as Error).message}`;
  process.stderr.write(`mdb-runtime: ${message}\n`);
  process.exit(1);
});
