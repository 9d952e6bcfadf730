"""The end-to-end client workload, PyMongo edition.

Usage: python workload.py <mongodb-uri> <database>

Runs the same sequence of driver calls as workload.ts (Node driver) and workload.mongosh.js (mongosh)
and prints one line "WORKLOAD_RESULT <json>" with what each call returned. ObjectIds are left out so
that a run through the proxy and a run directly against the upstream can be compared for equality.
"""

import sys

from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS
from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument

N = 500


def make_doc(i):
    return {
        "i": i,
        "group": i % 5,
        "tag": "t%d" % (i % 3),
        "value": i * 2,
        "name": "item-%03d" % i,
        "nested": {"even": i % 2 == 0, "square": i * i},
    }


def normalise_index(ix):
    return {"name": ix["name"], "key": dict(ix["key"]), "unique": bool(ix.get("unique", False))}


def main():
    uri, db_name = sys.argv[1], sys.argv[2]
    client = MongoClient(uri, serverSelectionTimeoutMS=10000)
    try:
        db = client[db_name]
        items = db["items"]
        log = db["log"]
        out = {}

        out["ping"] = db.command("ping")["ok"]
        log.insert_one({"step": "start", "client": "workload"})

        res = items.insert_many([make_doc(i) for i in range(N)])
        out["inserted"] = len(res.inserted_ids)

        found = list(items.find({}, {"_id": 0}).sort("i", ASCENDING).batch_size(7))
        out["found"] = found

        res = items.update_many({"group": 1}, {"$set": {"flag": True}, "$inc": {"value": 1000}})
        out["updateMany"] = {"matched": res.matched_count, "modified": res.modified_count}

        res = items.delete_one({"i": 0})
        out["deleteOne"] = {"deleted": res.deleted_count}

        # No projection: FerretDB v1 does not implement findAndModify "fields"; _id is removed here.
        after = items.find_one_and_update(
            {"i": 1},
            {"$set": {"status": "done"}, "$inc": {"value": 1}},
            return_document=ReturnDocument.AFTER,
        )
        after.pop("_id")
        out["findOneAndUpdate"] = after

        out["countAll"] = items.count_documents({})
        out["countFlagged"] = items.count_documents({"flag": True})
        out["countRange"] = items.count_documents({"i": {"$gte": 100, "$lt": 200}})

        out["distinctTags"] = sorted(items.distinct("tag"))
        out["distinctGroupsFlagged"] = sorted(items.distinct("group", {"flag": True}))

        # One accumulator per $group: FerretDB v1 computes only the first accumulator of a $group.
        out["aggregate"] = list(
            items.aggregate(
                [
                    {"$match": {"i": {"$gte": 10}}},
                    {"$group": {"_id": "$group", "total": {"$sum": "$value"}}},
                    {"$sort": {"_id": 1}},
                ]
            )
        )
        out["aggregateCounts"] = list(
            items.aggregate(
                [
                    {"$match": {"flag": {"$ne": True}}},
                    {"$group": {"_id": "$tag", "n": {"$sum": 1}}},
                    {"$sort": {"_id": -1}},
                ]
            )
        )

        out["createIndex"] = items.create_index([("tag", ASCENDING), ("i", DESCENDING)], name="tag_i")
        out["indexes"] = sorted((normalise_index(ix) for ix in items.list_indexes()), key=lambda ix: ix["name"])

        out["collections"] = sorted(db.list_collection_names())

        out["finalDocs"] = list(items.find({}, {"_id": 0}).sort("i", ASCENDING))

        items.drop()
        out["collectionsAfterDrop"] = sorted(db.list_collection_names())
        out["countAfterDrop"] = items.count_documents({})
    finally:
        client.close()

    print("WORKLOAD_RESULT " + json_util.dumps(out, json_options=RELAXED_JSON_OPTIONS))


if __name__ == "__main__":
    main()
