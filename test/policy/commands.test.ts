import { describe, expect, it } from 'vitest';
import { COMMANDS, commandHelp, lookupCommand } from '../../src/policy/commands.js';
import { CommandError } from '../../src/policy/errors.js';

const REQUIRED: Record<string, { local?: string; cursor?: string; target?: string }> = {
  hello: { local: 'hello' },
  isMaster: { local: 'hello' },
  ismaster: { local: 'hello' },
  ping: { local: 'ping' },
  connectionStatus: { local: 'connectionStatus' },
  hostInfo: { local: 'hostInfo' },
  buildInfo: {},
  buildinfo: {},
  endSessions: {},
  insert: {},
  find: { cursor: 'opens' },
  getMore: { cursor: 'continues', target: 'cursor' },
  killCursors: { cursor: 'kills', target: 'cursor' },
  update: {},
  delete: {},
  findAndModify: {},
  findandmodify: {},
  count: {},
  distinct: {},
  aggregate: { cursor: 'opens' },
  createIndexes: {},
  listIndexes: { cursor: 'opens' },
  dropIndexes: {},
  create: {},
  listCollections: { cursor: 'opens' },
  drop: {},
  renameCollection: {},
};

describe('command table', () => {
  it.each(Object.entries(REQUIRED))('allows %s with the expected routing', (name, expected) => {
    const spec = lookupCommand(name);
    expect(spec, name).toBeDefined();
    expect(spec!.local).toBe(expected.local);
    expect(spec!.cursor).toBe(expected.cursor);
    expect(spec!.target).toBe(expected.target);
  });

  it('resolves aliases to their canonical spec', () => {
    expect(lookupCommand('findandmodify')).toBe(lookupCommand('findAndModify'));
    expect(lookupCommand('ismaster')).toBe(lookupCommand('hello'));
    expect(lookupCommand('isMaster')).toBe(lookupCommand('hello'));
    expect(lookupCommand('buildinfo')).toBe(lookupCommand('buildInfo'));
    expect(lookupCommand('deleteIndexes')).toBe(lookupCommand('dropIndexes'));
  });

  it.each(['Find', 'INSERT', 'FindAndModify', 'Hello', 'isMASTER', 'getmore', 'killcursors'])(
    'is case-sensitive: %s is not a command',
    (name) => {
      expect(lookupCommand(name)).toBeUndefined();
    },
  );

  it.each([
    'serverStatus', 'currentOp', 'killOp', 'listDatabases', 'dropDatabase', 'dbHash', 'dbStats', 'profile',
    'createUser', 'dropUser', 'grantRolesToUser', 'createRole', 'mapReduce', 'eval', '$eval', 'applyOps',
    'fsync', 'setParameter', 'getParameter', 'getLog', 'shutdown', 'replSetGetStatus', 'saslStart',
    'authenticate', 'logout', 'getCmdLineOpts', 'collMod', 'compact', 'validate', 'explain', '__proto__',
    'constructor', 'toString', 'hasOwnProperty', '',
  ])('does not allow %s', (name) => {
    expect(lookupCommand(name)).toBeUndefined();
  });

  it('names every entry with help text, once', () => {
    const help = commandHelp();
    expect(help.length).toBeGreaterThanOrEqual(25);
    for (const h of help) expect(h.help.length, h.name).toBeGreaterThan(10);
    const names = help.flatMap((h) => [h.name, ...h.aliases]);
    expect(new Set(names).size).toBe(names.length);
    expect(names.sort()).toEqual([...COMMANDS.keys()].sort());
  });

  it('only lets the handshake, ping, buildInfo, endSessions and introspection run before auth', () => {
    const preAuth = commandHelp()
      .map((h) => h.name)
      .filter((n) => lookupCommand(n)!.preAuth)
      .sort();
    expect(preAuth).toEqual(['buildInfo', 'connectionStatus', 'endSessions', 'hello', 'ping', 'whatsmyuri']);
  });
});

describe('renameCollection', () => {
  const check = lookupCommand('renameCollection')!.check!;

  it('accepts a rename within one database', () => {
    expect(() => check({ renameCollection: 'app.a', to: 'app.b' })).not.toThrow();
  });

  it.each([
    [{ renameCollection: 'app.a', to: 'other.b' }, 13],
    [{ renameCollection: 'a', to: 'app.b' }, 13],
    [{ renameCollection: 'app.a', to: 'b' }, 13],
    [{ renameCollection: 'app.a' }, 14],
    [{ renameCollection: 5, to: 'app.b' }, 14],
  ])('refuses %j with code %i', (cmd, code) => {
    let caught: unknown;
    try {
      check(cmd);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(CommandError);
    expect((caught as CommandError).code).toBe(code);
  });
});
