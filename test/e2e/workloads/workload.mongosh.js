// The end-to-end client workload, mongosh edition.
//
// Usage: mongosh '<mongodb-uri>/<database>?...' --quiet --file workload.mongosh.js
// (the database comes from the connection string, so `db` is the workload's database).
//
// Runs the same sequence of calls as workload.py (PyMongo) and workload.ts (Node driver) with the
// shell's own helpers, and prints one line "WORKLOAD_RESULT <json>" with what each call returned.
// ObjectIds are left out so runs through the proxy and directly against the upstream compare equal.

const N = 500;

function makeDoc(i) {
  return {
    i,
    group: i % 5,
    tag: 't' + (i % 3),
    value: i * 2,
    name: 'item-' + String(i).padStart(3, '0'),
    nested: { even: i % 2 === 0, square: i * i },
  };
}

function normaliseIndex(ix) {
  return { name: ix.name, key: ix.key, unique: ix.unique === true };
}

const out = {};

out.ping = db.runCommand({ ping: 1 }).ok;
db.log.insertOne({ step: 'start', client: 'workload' });

const docs = [];
for (let i = 0; i < N; i++) docs.push(makeDoc(i));
out.inserted = Object.keys(db.items.insertMany(docs).insertedIds).length;

out.found = db.items.find({}, { _id: 0 }).sort({ i: 1 }).batchSize(7).toArray();

const updated = db.items.updateMany({ group: 1 }, { $set: { flag: true }, $inc: { value: 1000 } });
out.updateMany = { matched: updated.matchedCount, modified: updated.modifiedCount };

out.deleteOne = { deleted: db.items.deleteOne({ i: 0 }).deletedCount };

// No projection: FerretDB v1 does not implement findAndModify `fields`; _id is removed here.
const after = db.items.findOneAndUpdate({ i: 1 }, { $set: { status: 'done' }, $inc: { value: 1 } }, { returnDocument: 'after' });
if (after) delete after._id;
out.findOneAndUpdate = after;

out.countAll = db.items.countDocuments({});
out.countFlagged = db.items.countDocuments({ flag: true });
out.countRange = db.items.countDocuments({ i: { $gte: 100, $lt: 200 } });

out.distinctTags = db.items.distinct('tag').sort();
out.distinctGroupsFlagged = db.items.distinct('group', { flag: true }).sort((a, b) => a - b);

// One accumulator per $group: FerretDB v1 computes only the first accumulator of a $group.
out.aggregate = db.items
  .aggregate([{ $match: { i: { $gte: 10 } } }, { $group: { _id: '$group', total: { $sum: '$value' } } }, { $sort: { _id: 1 } }])
  .toArray();
out.aggregateCounts = db.items
  .aggregate([{ $match: { flag: { $ne: true } } }, { $group: { _id: '$tag', n: { $sum: 1 } } }, { $sort: { _id: -1 } }])
  .toArray();

out.createIndex = db.items.createIndex({ tag: 1, i: -1 }, { name: 'tag_i' });
out.indexes = db.items
  .getIndexes()
  .map(normaliseIndex)
  .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

out.collections = db.getCollectionNames().sort();

out.finalDocs = db.items.find({}, { _id: 0 }).sort({ i: 1 }).toArray();

db.items.drop();
out.collectionsAfterDrop = db.getCollectionNames().sort();
out.countAfterDrop = db.items.countDocuments({});

print('WORKLOAD_RESULT ' + EJSON.stringify(out, { relaxed: true }));
