import type { Command } from 'commander';
import { CONFIG_DIR_SETTING } from '../config/runtime-config.js';
import { formatReport, validateConfigDir } from '../apps/validate.js';
import { devEnvironment } from './dev-state.js';

/** `mdb-runtime validate [--config DIR]`: checks runtime.yaml and every manifest, prints each problem. */
export function addValidateCommand(program: Command): void {
  program
    .command('validate')
    .description('check runtime.yaml and every app manifest (schema, rules, slug conflicts) without starting the proxy')
    .option(`${CONFIG_DIR_SETTING.short}, ${CONFIG_DIR_SETTING.flag} <dir>`, `config directory holding runtime.yaml and apps/ (default: ${CONFIG_DIR_SETTING.default})`)
    .addHelpText(
      'after',
      [
        '',
        'Prints each problem as file:line:col: key: what was expected, what was found; then warnings',
        "(the proxy would start, e.g. an app whose secret_env is not set here, a migrated mdb-engine",
        'manifest) and a summary. runtime.yaml is checked as `serve` would read it, with the MDB_*',
        'environment variables applied.',
        '',
        'Exits 1 when there is a problem, 0 otherwise (warnings do not fail).',
        'Reference: docs/manifest-reference.md, docs/runtime-reference.md.',
      ].join('\n'),
    )
    .action((opts: { config?: string }) => {
      // Beside `npm run dev`: its config directory, settings and generated secrets, unless named here.
      const { text, status } = formatReport(validateConfigDir(opts.config, devEnvironment(opts)));
      process.stdout.write(text);
      process.exitCode = status;
    });
}
