import { Binary, Double, Int32 } from 'bson';
import { describe, expect, it } from 'vitest';
import { commandHelp, lookupCommand } from '../../src/policy/commands.js';
import { CommandError } from '../../src/policy/errors.js';
import type { CommandHandler } from '../../src/policy/handler.js';
import { explainHandler } from '../../src/policy/handlers/explain.js';
import { MAX_POLICY_WIRE_VERSION, runLocalCommand, type LocalAnswerContext, type SyncLocalHandler } from '../../src/policy/local/index.js';
import { makeScope, type Doc } from '../../src/policy/scope.js';
import { guardUpdate, isReplacement } from '../../src/policy/update.js';

const scope = makeScope('app1', 'mdb_runtime', 'app_id');

const context: LocalAnswerContext = {
  connectionId: 42,
  remoteAddress: '10.0.0.7:50123',
  upstreamMaxWireVersion: 25,
  upstreamStandalone: false,
  maxMessageSize: 48_000_000,
  logicalSessionTimeoutMinutes: 30,
  authenticatedUser: { user: 'app1', db: '$external' },
  authenticatedUserRoles: [{ role: 'editor', db: 'app1' }],
  now: new Date('2026-01-02T03:04:05Z'),
  host: { hostname: 'proxy-1', cpuAddrSize: 64, memSizeMB: 2048, numCores: 2, cpuArch: 'x64', osType: 'Linux', osVersion: '6.1' },
};

function thrown(f: () => unknown): CommandError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(CommandError);
    return err as CommandError;
  }
  throw new Error('expected a CommandError');
}

describe('local answers, from the registry entries', () => {
  it('reaches every local entry (sasl excepted) through runLocalCommand', () => {
    const local = commandHelp()
      .map(({ name }) => lookupCommand(name)!)
      .filter((spec) => spec.local !== undefined && spec.local !== 'sasl');
    expect(local.map((s) => s.name).sort()).toEqual(['connectionStatus', 'hello', 'hostInfo', 'ping', 'whatsmyuri']);
    for (const spec of local) {
      const reply = runLocalCommand(spec.local as SyncLocalHandler, { [spec.name]: 1 }, spec.name, context);
      // A double, as a server sends it (not an int32).
      expect(reply.ok, spec.name).toEqual(new Double(1));
      expect(reply, spec.name).toEqual(spec.answer!({ [spec.name]: 1 }, spec.name, context));
    }
  });

  it('answers hello from the context alone: the clock, the connection, the capped wire version', () => {
    const reply = runLocalCommand('hello', { hello: 1, helloOk: true }, 'hello', context);
    expect(reply).toMatchObject({
      helloOk: true,
      isWritablePrimary: true,
      msg: 'isdbgrid',
      maxMessageSizeBytes: 48_000_000,
      localTime: context.now,
      logicalSessionTimeoutMinutes: 30,
      connectionId: 42,
      maxWireVersion: MAX_POLICY_WIRE_VERSION,
      ok: new Double(1),
    });
    // Before a standalone upstream it presents itself as one (no msg): drivers neither retry writes nor pin.
    const standalone = runLocalCommand('hello', { hello: 1 }, 'hello', { ...context, upstreamStandalone: true });
    expect(standalone.msg).toBeUndefined();
    expect(standalone).toMatchObject({ isWritablePrimary: true, logicalSessionTimeoutMinutes: 30 });
    expect(reply.ismaster).toBeUndefined();
    const legacy = runLocalCommand('hello', { isMaster: 1 }, 'isMaster', { ...context, upstreamMaxWireVersion: 13 });
    expect(legacy.ismaster).toBe(true);
    expect(legacy.isWritablePrimary).toBeUndefined();
    expect(legacy.helloOk).toBeUndefined();
    expect(legacy.maxWireVersion).toBe(13);
  });

  it('answers hostInfo, connectionStatus and whatsmyuri with what the context says', () => {
    const host = runLocalCommand('hostInfo', { hostInfo: 1 }, 'hostInfo', context);
    expect(host.system).toMatchObject({ currentTime: context.now, hostname: 'proxy-1', memSizeMB: 2048, numCores: 2, cpuArch: 'x64' });
    expect(host.os).toEqual({ type: 'Linux', name: 'Linux', version: '6.1' });
    const status = runLocalCommand('connectionStatus', { connectionStatus: 1, showPrivileges: true }, 'connectionStatus', context);
    expect(status.authInfo).toEqual({
      authenticatedUsers: [{ user: 'app1', db: '$external' }],
      authenticatedUserRoles: [{ role: 'editor', db: 'app1' }],
      authenticatedUserPrivileges: [],
    });
    const anonymous = runLocalCommand('connectionStatus', { connectionStatus: 1 }, 'connectionStatus', { ...context, authenticatedUser: undefined });
    expect(anonymous.authInfo).toEqual({ authenticatedUsers: [], authenticatedUserRoles: [{ role: 'editor', db: 'app1' }] });
    expect(runLocalCommand('whatsmyuri', { whatsmyuri: 1 }, 'whatsmyuri', context)).toEqual({ you: '10.0.0.7:50123', ok: new Double(1) });
  });
});

describe('explain, given the registry rather than importing it', () => {
  const input = (body: Doc) => ({ scope, name: 'explain', body, appDb: 'x', sequences: [] });

  it('explains with the handler the lookup it was given returns', () => {
    const seen: string[] = [];
    const fake: CommandHandler = {
      fields: new Set(['filter']),
      rewrite: (i) => {
        seen.push(i.name);
        return { body: { find: 'p_c', $db: 'x' }, sequences: [], access: [{ action: 'write', collection: 'c' }], reply: { kind: 'plain', appDb: 'x', collections: ['c'] } };
      },
    };
    const handler = explainHandler((name) => (name === 'find' ? { name: 'find', handler: fake } : undefined));
    const out = handler.rewrite(input({ explain: { find: 'c', filter: {} }, $db: 'x' }));
    expect(seen).toEqual(['find']);
    expect(out.body.explain).toEqual({ find: 'p_c' });
    expect(out.access).toEqual([{ action: 'read', collection: 'c' }]);
    expect(thrown(() => handler.rewrite(input({ explain: { count: 'c' }, $db: 'x' }))).code).toBe(13);
  });

  it('refuses what the registry has no handler for, or what is not a read or write of the app', () => {
    const explain = lookupCommand('explain')!.handler!;
    for (const inner of [{ hello: 1 }, { insert: 'c', documents: [] }, { explain: { find: 'c' } }, { nope: 1 }]) {
      expect(thrown(() => explain.rewrite(input({ explain: inner, $db: 'x' }))).code, JSON.stringify(inner)).toBe(13);
    }
    expect(explain.rewrite(input({ explain: { find: 'c' }, $db: 'x' })).body.explain).toMatchObject({ find: 'app1_c' });
  });
});

describe('isReplacement: the one test of a replacement against operators or a pipeline', () => {
  it.each([
    [{}, true],
    [{ a: 1 }, true],
    [{ a: 1, $set: { b: 1 } }, true],
    [{ _bsontype: 'Int32', value: 1 }, true],
    [{ $set: { a: 1 } }, false],
    [{ $set: { a: 1 }, a: 1 }, false],
    [[{ $set: { a: 1 } }], false],
    [new Int32(1), false],
    [new Binary(Buffer.alloc(2)), false],
    [null, false],
    ['a', false],
  ])('%j → %s', (u, expected) => {
    expect(isReplacement(u)).toBe(expected);
  });

  it('is what the update guard acts on: replacements are stamped, operators guarded', () => {
    expect(guardUpdate(scope, { a: 1 }, 'u')).toEqual({ a: 1, app_id: 'app1' });
    expect(guardUpdate(scope, { $set: { a: 1 } }, 'u')).toEqual({ $set: { a: 1 } });
    expect(thrown(() => guardUpdate(scope, { $set: { app_id: 'app2' } }, 'u')).code).toBe(66);
    expect(thrown(() => guardUpdate(scope, { $set: { a: 1 }, b: 2 }, 'u')).code).toBe(9);
    expect(thrown(() => guardUpdate(scope, 5, 'u')).code).toBe(9);
  });
});
