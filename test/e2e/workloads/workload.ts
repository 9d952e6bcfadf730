import { EJSON, type Document } from 'bson';
import { MongoClient, ReturnDocument } from 'mongodb';

/**
 * The end-to-end client workload, Node driver edition. The same sequence of calls as workload.py
 * (PyMongo) and workload.mongosh.js (mongosh); the summary has the same shape, with ObjectIds left out,
 * so runs through the proxy and directly against the upstream (and across clients) compare equal.
 */

export const WORKLOAD_DOCS = 500;
export const WORKLOAD_BATCH_SIZE = 7;

/** What every workload prints (as JSON, relaxed Extended JSON numbers). */
export type WorkloadSummary = Record<string, unknown>;

export function workloadDoc(i: number): Document {
  return {
    i,
    group: i % 5,
    tag: `t${i % 3}`,
    value: i * 2,
    name: `item-${String(i).padStart(3, '0')}`,
    nested: { even: i % 2 === 0, square: i * i },
  };
}

function normaliseIndex(ix: Document): Document {
  return { name: ix.name as string, key: ix.key as Document, unique: ix.unique === true };
}

/** Runs the workload with an already configured client on database `dbName`. */
export async function runNodeWorkload(client: MongoClient, dbName: string): Promise<WorkloadSummary> {
  const db = client.db(dbName);
  const items = db.collection('items');
  const log = db.collection('log');
  const out: Document = {};

  out.ping = (await db.command({ ping: 1 })).ok;
  await log.insertOne({ step: 'start', client: 'workload' });

  const docs = Array.from({ length: WORKLOAD_DOCS }, (_, i) => workloadDoc(i));
  const inserted = await items.insertMany(docs);
  out.inserted = inserted.insertedCount;

  out.found = await items
    .find({}, { projection: { _id: 0 } })
    .sort({ i: 1 })
    .batchSize(WORKLOAD_BATCH_SIZE)
    .toArray();

  const updated = await items.updateMany({ group: 1 }, { $set: { flag: true }, $inc: { value: 1000 } });
  out.updateMany = { matched: updated.matchedCount, modified: updated.modifiedCount };

  const deleted = await items.deleteOne({ i: 0 });
  out.deleteOne = { deleted: deleted.deletedCount };

  // No projection: FerretDB v1 does not implement findAndModify `fields`; _id is removed here.
  const after = await items.findOneAndUpdate(
    { i: 1 },
    { $set: { status: 'done' }, $inc: { value: 1 } },
    { returnDocument: ReturnDocument.AFTER },
  );
  if (after) {
    const { _id: _ignored, ...rest } = after;
    out.findOneAndUpdate = rest;
  } else {
    out.findOneAndUpdate = after;
  }

  out.countAll = await items.countDocuments({});
  out.countFlagged = await items.countDocuments({ flag: true });
  out.countRange = await items.countDocuments({ i: { $gte: 100, $lt: 200 } });

  out.distinctTags = ((await items.distinct('tag')) as string[]).sort();
  out.distinctGroupsFlagged = ((await items.distinct('group', { flag: true })) as number[]).sort((a, b) => a - b);

  // One accumulator per $group: FerretDB v1 computes only the first accumulator of a $group.
  out.aggregate = await items
    .aggregate([{ $match: { i: { $gte: 10 } } }, { $group: { _id: '$group', total: { $sum: '$value' } } }, { $sort: { _id: 1 } }])
    .toArray();
  out.aggregateCounts = await items
    .aggregate([{ $match: { flag: { $ne: true } } }, { $group: { _id: '$tag', n: { $sum: 1 } } }, { $sort: { _id: -1 } }])
    .toArray();

  out.createIndex = await items.createIndex({ tag: 1, i: -1 }, { name: 'tag_i' });
  out.indexes = (await items.listIndexes().toArray())
    .map(normaliseIndex)
    .sort((a, b) => String(a.name).localeCompare(String(b.name)));

  out.collections = (await db.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).sort();

  out.finalDocs = await items.find({}, { projection: { _id: 0 } }).sort({ i: 1 }).toArray();

  await items.drop();
  out.collectionsAfterDrop = (await db.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).sort();
  out.countAfterDrop = await items.countDocuments({});

  // The same normalisation the other clients' JSON output goes through.
  return JSON.parse(EJSON.stringify(out, { relaxed: true })) as WorkloadSummary;
}

/** Connects to `uri`, runs the workload and closes the client. */
export async function runNodeWorkloadAt(uri: string, dbName: string): Promise<WorkloadSummary> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000 });
  try {
    await client.connect();
    return await runNodeWorkload(client, dbName);
  } finally {
    await client.close();
  }
}
