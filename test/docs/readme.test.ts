import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SETTINGS, CONFIG_DIR_SETTING } from '../../src/config/runtime-config.js';
import { commandHelp, lookupCommand } from '../../src/policy/commands.js';

const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
const ci = fs.readFileSync(new URL('../../.ci/run', import.meta.url), 'utf8');

describe('README stays true to the code', () => {
  it.each(SETTINGS.map((s) => [s.key, s.env, s.flag, String(s.default)]))('documents %s (%s, %s, default %s)', (key, env, flag, def) => {
    const row = readme.split('\n').find((l) => l.startsWith('|') && l.includes(`\`${env}\``));
    expect(row, env).toBeDefined();
    expect(row).toContain(`\`${flag}\``);
    expect(row).toContain(`\`${def}\``);
    expect(row).toContain(`\`${key}\``);
  });

  it('documents the config dir setting', () => {
    expect(readme).toContain(`\`${CONFIG_DIR_SETTING.env}\``);
    expect(readme).toContain(`\`${CONFIG_DIR_SETTING.flag}\``);
  });

  it('names every allowed command', () => {
    for (const { name, aliases } of commandHelp().filter((c) => !lookupCommand(c.name)!.refused)) {
      for (const n of [name, ...aliases]) expect(readme, n).toContain(`\`${n}\``);
    }
  });

  it('gives the two commands, and CI runs the test one', () => {
    expect(readme).toContain('npm ci && npm run dev');
    expect(readme).toContain('npm ci && npm test');
    expect(pkg.scripts.dev).toBeDefined();
    expect(pkg.scripts.test).toContain('vitest run');
    expect(ci).toMatch(/^npm test$/m);
  });
});
