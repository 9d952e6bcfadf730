/**
 * The hand-written world of test/semantic: three apps with the same logical collections (one of them a
 * look-alike slug of another), and documents planted in the subject's own collections.
 */
import { ObjectId } from 'bson';
import type { World } from '../helpers/mingo-oracle.js';
import type { Doc } from '../helpers/mingo-server.js';

export const SUBJECT = 'app';
/** The others: a look-alike slug (`app` + `2`) and a prefix of the subject's slug. */
export const OTHERS = ['app2', 'ap'] as const;

function tasks(slug: string): Doc[] {
  return [
    { _id: 1, title: `t1 ${slug}`, n: 1, done: false, tags: ['x', 'y'], owner: 1, sub: { app_id: 'nested', k: 1 } },
    { _id: 2, title: 'Alpha', n: 2.5, done: true, tags: ['y'], owner: 2, items: [{ q: 1, app_id: 'in-array' }, { q: 5 }] },
    { _id: 3, title: 'alpha', n: 3, done: false, tags: [], owner: 1, at: new Date('2024-01-02T00:00:00Z') },
    { _id: 4, title: 'beta', n: null, owner: 3, parent: 1, items: [{ q: 2 }, { q: 9 }] },
    { _id: 5, title: 'Gamma', n: -1, done: true, owner: 2, parent: 4, oid: new ObjectId('65a1b2c3d4e5f60718293a4b') },
  ];
}

function users(slug: string): Doc[] {
  return [
    { _id: 1, name: `ann ${slug}`, team: 'red', boss: null },
    { _id: 2, name: 'bob', team: 'blue', boss: 1 },
    { _id: 3, name: 'cy', team: 'red', boss: 2 },
  ];
}

function tags(): Doc[] {
  return [
    { _id: 'x', label: 'X', weight: 1 },
    { _id: 'y', label: 'Y', weight: 2 },
  ];
}

/** Documents written around the proxy into the subject's collections: no tag, another's, other BSON types. */
function planted(coll: string, like: Doc[]): Doc[] {
  const tagsOf: unknown[] = [undefined, 'app2', 'ap', 5, null, { x: SUBJECT }, 'App', `${SUBJECT} `, ['app2'], true];
  return tagsOf.map((tag, i) => {
    const base = { ...like[i % like.length]!, _id: `planted-${coll}-${i}` };
    return tag === undefined ? base : { ...base, app_id: tag };
  });
}

export function world(): World {
  const apps: Record<string, Record<string, Doc[]>> = {};
  for (const slug of [SUBJECT, ...OTHERS]) {
    apps[slug] = { tasks: tasks(slug), users: users(slug), tags: tags(), archive: [{ _id: 1, old: true, title: `old ${slug}` }] };
  }
  return {
    apps,
    planted: {
      tasks: planted('tasks', tasks(SUBJECT)),
      users: planted('users', users(SUBJECT)),
      tags: planted('tags', tags()),
      archive: planted('archive', [{ old: true }]),
    },
  };
}
