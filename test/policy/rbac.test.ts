import { describe, expect, it } from 'vitest';
import { CommandError } from '../../src/policy/errors.js';
import { RoleError, UNRESTRICTED, authorize, isAllowed, resolveRoles, type RbacConfig, type RoleDefinition } from '../../src/policy/rbac.js';

const role = (grants: Partial<RoleDefinition>): RoleDefinition => ({ read: [], write: [], indexes: [], ...grants });
const config: RbacConfig = {
  roles: new Map([
    ['reader', role({ read: ['*'] })],
    ['editor', role({ read: ['*'], write: ['tasks'], indexes: ['tasks'] })],
    ['notes_writer', role({ write: ['notes'] })],
  ]),
  defaultRole: 'reader',
};

function denial(fn: () => void): CommandError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CommandError);
    return err as CommandError;
  }
  throw new Error('allowed');
}

describe('resolveRoles', () => {
  it('leaves an app without roles unrestricted, whatever the claim', () => {
    expect(resolveRoles(undefined, undefined)).toBe(UNRESTRICTED);
    expect(resolveRoles(undefined, ['x'])).toBe(UNRESTRICTED);
  });

  it('uses the default role without a claim, and no role for an empty claim', () => {
    expect(resolveRoles(config, undefined).names).toEqual(['reader']);
    const none = resolveRoles(config, []);
    expect(none.names).toEqual([]);
    expect(isAllowed(none, 'read', 'tasks')).toBe(false);
    expect(resolveRoles({ ...config, defaultRole: undefined }, undefined).names).toEqual([]);
  });

  it('adds up the grants of several roles', () => {
    const r = resolveRoles(config, ['editor', 'notes_writer', 'editor']);
    expect(r.names).toEqual(['editor', 'notes_writer']);
    expect(isAllowed(r, 'write', 'notes')).toBe(true);
    expect(isAllowed(r, 'write', 'tasks')).toBe(true);
    expect(isAllowed(r, 'write', 'other')).toBe(false);
  });

  it('refuses a role the manifest does not define', () => {
    expect(() => resolveRoles(config, ['reader', 'admin'])).toThrow(RoleError);
    expect(() => resolveRoles(config, ['admin'])).toThrow("the token names the role 'admin', which the manifest does not define (defined: reader, editor, notes_writer)");
  });
});

describe('authorize', () => {
  const editor = resolveRoles(config, ['editor']);
  const reader = resolveRoles(config, ['reader']);
  const notesOnly = resolveRoles(config, ['notes_writer']);

  it.each([
    ['editor reads anything', editor, 'read', 'whatever', true],
    ['editor writes tasks', editor, 'write', 'tasks', true],
    ['editor writes notes', editor, 'write', 'notes', false],
    ['editor indexes tasks', editor, 'indexes', 'tasks', true],
    ['editor indexes notes', editor, 'indexes', 'notes', false],
    ['reader reads tasks', reader, 'read', 'tasks', true],
    ['reader writes tasks', reader, 'write', 'tasks', false],
    ['write does not imply read', notesOnly, 'read', 'notes', false],
    ['notes_writer writes notes', notesOnly, 'write', 'notes', true],
    ['unrestricted writes anything', UNRESTRICTED, 'write', 'x', true],
  ] as const)('%s → %s', (_what, roles, action, collection, allowed) => {
    const run = () => authorize(roles, [{ action, collection }], 'cmd');
    if (allowed) expect(run).not.toThrow();
    else expect(denial(run).code).toBe(13);
  });

  it('checks every access of a command, and names the first it refuses', () => {
    const err = denial(() =>
      authorize(editor, [{ action: 'read', collection: 'tasks' }, { action: 'write', collection: 'tasks' }, { action: 'write', collection: 'archive' }], 'aggregate'),
    );
    expect(err.code).toBe(13);
    expect(err.codeName).toBe('Unauthorized');
    expect(err.message).toBe('not authorized on archive to execute command aggregate (needs write on archive; roles: editor)');
  });

  it('says when the identity holds no role', () => {
    expect(denial(() => authorize(resolveRoles(config, []), [{ action: 'read', collection: 't' }], 'find')).message).toContain('no role');
  });

  it('allows a command needing no access', () => {
    expect(() => authorize(resolveRoles(config, []), [])).not.toThrow();
  });
});
