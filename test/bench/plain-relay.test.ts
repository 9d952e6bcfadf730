import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { WireRelay } from '../../src/testing/relay.js';

/**
 * The relay the benchmarks measure as their floor (WireRelay with record: false, bench/lib/relay.mjs)
 * passes a driver's traffic through unchanged, keeps no record of it, and refuses the recording-only
 * calls instead of silently doing nothing; the same relay records by default (what the tests use).
 */
describe('WireRelay: plain and recording', () => {
  const uri = inject('upstreamUri');
  let plain: WireRelay;
  let recording: WireRelay;

  beforeAll(async () => {
    plain = await WireRelay.start(WireRelay.firstHost(uri), { record: false });
    recording = await WireRelay.start(WireRelay.firstHost(uri));
  });

  afterAll(async () => {
    await plain?.close();
    await recording?.close();
  });

  async function roundTrip(relay: WireRelay, marker: string): Promise<unknown> {
    const client = new MongoClient(WireRelay.uriThrough(uri, relay.port), { serverSelectionTimeoutMS: 10_000 });
    try {
      const coll = client.db(`plain_relay_${process.pid}`).collection('docs');
      await coll.insertOne({ _id: marker as never, n: 1 });
      const found = await coll.findOne({ _id: marker as never });
      await coll.deleteOne({ _id: marker as never });
      return found;
    } finally {
      await client.close();
    }
  }

  it('plain: a driver inserts and reads back through it; nothing is recorded; it drains when the client goes', async () => {
    expect(plain.recording).toBe(false);
    expect(await roundTrip(plain, 'plain-1')).toEqual({ _id: 'plain-1', n: 1 });
    expect(plain.messages).toEqual([]);
    await plain.drained();
    expect(plain.openConnections).toBe(0);
  });

  it('plain: the recording-only calls throw', () => {
    expect(() => plain.cutNext('find')).toThrow(/needs a recording relay/);
    expect(() => plain.hold()).toThrow(/needs a recording relay/);
    expect(() => plain.stall('x')).toThrow(/needs a recording relay/);
    expect(() => plain.watch('x')).toThrow(/needs a recording relay/);
    expect(() => plain.onMessage(() => undefined)).toThrow(/needs a recording relay/);
    expect(() => plain.commands('find')).toThrow(/needs a recording relay/);
    expect(() => plain.heldMarkedReply()).toThrow(/needs a recording relay/);
  });

  it('recording (the default): the same traffic is recorded message by message', async () => {
    expect(recording.recording).toBe(true);
    expect(await roundTrip(recording, 'recorded-1')).toEqual({ _id: 'recorded-1', n: 1 });
    expect(recording.commands('insert', { collection: 'docs' })).toHaveLength(1);
    expect(recording.commands('find', { collection: 'docs' })).toHaveLength(1);
    expect(recording.commands('delete', { collection: 'docs' })).toHaveLength(1);
  });
});
