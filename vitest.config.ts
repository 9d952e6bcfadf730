import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: suites that load the proxy and FerretDB must not all run at once.
    maxWorkers: 2,
    minWorkers: 1,
    reporters: ['default'],
  },
});
