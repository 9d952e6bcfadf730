import { describe, expect, it } from 'vitest';
import { COMMANDS, commandHelp, lookupCommand } from '../../src/policy/commands.js';
import { ErrorCodes } from '../../src/policy/errors.js';
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
    ['serverStatus', 13], ['currentOp', 13], ['killOp', 13], ['listDatabases', 13], ['dropDatabase', 13], ['dbHash', 13],
    ['dbStats', 13], ['profile', 13], ['createUser', 13], ['dropUser', 13], ['grantRolesToUser', 13], ['createRole', 13],
    ['usersInfo', 13], ['rolesInfo', 13], ['applyOps', 13], ['fsync', 13], ['setParameter', 13], ['getParameter', 13],
    ['getLog', 13], ['shutdown', 13], ['replSetGetStatus', 13], ['authenticate', 13], ['logout', 13], ['getCmdLineOpts', 13],
    ['compact', 13], ['validate', 13], ['killAllSessions', 13], ['collStats', 13],
    ['mapReduce', 224], ['mapreduce', 224], ['eval', 224], ['$eval', 224],
  ])('refuses %s with code %i', (name, code) => {
    const spec = lookupCommand(name as string);
    expect(spec?.refused).toBeDefined();
    expect(ErrorCodes[spec!.refused!]).toBe(code);
  });

  it.each(['sasl', 'SaslStart', 'collMod', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'ServerStatus', ''])(
    'does not know %s (CommandNotFound)',
    (name) => {
      expect(lookupCommand(name)).toBeUndefined();
    },
  );

  it('holds in each entry exactly one way to answer: a policy handler, a local answer, the authenticator or a refusal', () => {
    const ways = { handler: 0, answer: 0, sasl: 0, refused: 0 };
    for (const { name } of commandHelp()) {
      const spec = lookupCommand(name)!;
      const forwarded = !spec.local && !spec.refused;
      expect(spec.handler !== undefined, name).toBe(forwarded);
      expect(spec.answer !== undefined, name).toBe(spec.local !== undefined && spec.local !== 'sasl');
      if (spec.handler) ways.handler++;
      if (spec.answer) ways.answer++;
      if (spec.local === 'sasl') ways.sasl++;
      if (spec.refused) ways.refused++;
    }
    expect(ways).toEqual({ handler: 24, answer: 5, sasl: 2, refused: commandHelp().length - 31 });
  });

  it('names every entry with help text, once', () => {
    const help = commandHelp();
    expect(help.length).toBeGreaterThanOrEqual(25);
    for (const h of help) expect(h.help.length, h.name).toBeGreaterThan(10);
    const names = help.flatMap((h) => [h.name, ...h.aliases]);
    expect(new Set(names).size).toBe(names.length);
    expect(names.sort()).toEqual([...COMMANDS.keys()].sort());
  });

  it('lets exactly hello/isMaster, ping, buildInfo, saslStart, saslContinue and endSessions run before auth (docs/security.md)', () => {
    const preAuth = [...COMMANDS.keys()].filter((n) => lookupCommand(n)!.preAuth).sort();
    expect(preAuth).toEqual(['buildInfo', 'buildinfo', 'endSessions', 'hello', 'isMaster', 'ismaster', 'ping', 'saslContinue', 'saslStart']);
  });

  it('answers SASL in the proxy (never forwarded)', () => {
    expect(lookupCommand('saslStart')!.local).toBe('sasl');
    expect(lookupCommand('saslContinue')!.local).toBe('sasl');
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
