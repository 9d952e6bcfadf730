"""Escape attempts by app `alpha`, written with PyMongo (test/e2e/isolation-*.test.ts).

Usage: isolation-attacks.py <uri of alpha through the proxy> <alpha's database>
Reads one JSON request per line ({"id", "attack", "args"}) and answers each with one JSON line:
{"id", "ok": true, "result"} or {"id", "ok": false, "code", "codeName", "message", "details"}.
"""
import json
import sys

from bson import json_util
from pymongo import InsertOne, MongoClient, UpdateOne
from pymongo.errors import BulkWriteError, OperationFailure

client = MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000)
db = client[sys.argv[2]]

ATTACKS = {
    # Forged tags and writes touching the tag.
    "insert_one with beta's tag": lambda: str(db.py_forged.insert_one({"app_id": "beta", "x": 1}).inserted_id),
    "insert_many (kind-1) with beta's tag in the second document": lambda: [
        str(i) for i in db.py_forged.insert_many([{"x": 1}, {"x": 2, "app_id": "beta"}]).inserted_ids
    ],
    "update_many $set of the tag": lambda: db.shared.update_many({}, {"$set": {"app_id": "beta"}}).raw_result,
    "replace_one with beta's tag": lambda: db.shared.replace_one({"_id": 1}, {"app_id": "beta", "mine": "stolen"}).raw_result,
    "find_one_and_update $unset of the tag": lambda: db.shared.find_one_and_update({"_id": 1}, {"$unset": {"app_id": ""}}),
    "update_one upsert with beta's tag in the filter": lambda: db.py_upsert.update_one(
        {"app_id": "beta", "k": "py"}, {"$set": {"v": 1}}, upsert=True
    ).raw_result,
    "bulk_write $rename of the tag": lambda: db.py_forged.bulk_write(
        [UpdateOne({"_id": 2}, {"$rename": {"app_id": "was"}}), InsertOne({"x": "py-bulk"})]
    ).bulk_api_result,
    # Reads.
    "find with $or on beta's tag": lambda: list(db.shared.find({"$or": [{"app_id": "beta"}, {"n": {"$gte": 0}}]})),
    "find on beta's physical name": lambda: list(db["beta_shared"].find()),
    "find through beta's logical database": lambda: list(client["betadb"]["shared"].find()),
    "count_documents with beta's tag": lambda: db.shared.count_documents({"app_id": "beta"}),
    "distinct over the shared name": lambda: db.shared.distinct("secret"),
    "list_collection_names": lambda: db.list_collection_names(),
    "list_database_names": lambda: client.list_database_names(),
    "dbStats": lambda: db.command("dbStats"),
    "serverStatus": lambda: client.admin.command("serverStatus"),
    "database-wide watch()": lambda: db.watch().try_next(),
    "find with $where": lambda: list(db.shared.find({"$where": "true"})),
    "find_one on system.users": lambda: db["system.users"].find_one(),
}


def run(attack, args):
    try:
        return {"ok": True, "result": ATTACKS[attack](*args)}
    except BulkWriteError as e:
        errors = e.details.get("writeErrors", [])
        first = errors[0] if errors else {}
        return {"ok": False, "code": first.get("code", e.code), "message": str(e), "details": e.details}
    except OperationFailure as e:
        details = e.details or {}
        return {"ok": False, "code": e.code, "codeName": details.get("codeName"), "message": str(e), "details": details}


for line in sys.stdin:
    request = json.loads(line)
    out = run(request["attack"], request.get("args", []))
    out["id"] = request["id"]
    print(json_util.dumps(out), flush=True)
