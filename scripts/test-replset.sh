#!/usr/bin/env bash
# Runs the whole test suite against a real three-member MongoDB replica set in Docker, instead of the
# FerretDB upstream (README, "Against a real MongoDB"). Extra arguments go to `npm test` (vitest), e.g.
#   bash scripts/test-replset.sh test/e2e/replica-set.test.ts
#
# Env: MDB_REPLSET_IMAGE (default mongo:8.0), MDB_REPLSET_PORT (first of three host ports, default 27301),
#      MDB_REPLSET_KEEP=1 leaves the container running afterwards (name: mdb-runtime-replset).
#
# The three mongod processes run in one container and publish their ports as the same numbers on the host,
# so the member addresses in the replica set config (127.0.0.1:PORT) are right both inside the container
# and for the tests on the host, on Linux and Docker Desktop alike.
set -euo pipefail
cd "$(dirname "$0")/.."

image="${MDB_REPLSET_IMAGE:-mongo:8.0}"
p0="${MDB_REPLSET_PORT:-27301}"
p1=$((p0 + 1))
p2=$((p0 + 2))
name=mdb-runtime-replset

command -v docker >/dev/null || { echo "test-replset.sh: Docker is required (https://docs.docker.com/get-docker/)" >&2; exit 1; }
for p in "$p0" "$p1" "$p2"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "test-replset.sh: port $p is taken; set MDB_REPLSET_PORT to another first port" >&2
    exit 1
  fi
done

docker rm -f "$name" >/dev/null 2>&1 || true
cleanup() { [ "${MDB_REPLSET_KEEP:-}" = 1 ] || docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "test-replset.sh: starting a three-member replica set ($image) on 127.0.0.1:$p0,$p1,$p2" >&2
docker run -d --name "$name" -p "127.0.0.1:$p0:$p0" -p "127.0.0.1:$p1:$p1" -p "127.0.0.1:$p2:$p2" \
  --entrypoint bash "$image" -c "
    set -e
    for p in $p0 $p1 $p2; do
      mkdir -p /data/rs/\$p
      mongod --replSet rs0 --port \$p --bind_ip_all --dbpath /data/rs/\$p --fork --logpath /data/rs/\$p.log
    done
    exec sleep infinity" >/dev/null

initiate="rs.initiate({_id: 'rs0', members: [
  {_id: 0, host: '127.0.0.1:$p0', priority: 2}, {_id: 1, host: '127.0.0.1:$p1'}, {_id: 2, host: '127.0.0.1:$p2'}]})"
for i in $(seq 1 60); do
  if docker exec "$name" mongosh --quiet --port "$p0" --eval "try { $initiate } catch (e) { if (e.codeName !== 'AlreadyInitialized') throw e }" >/dev/null 2>&1; then
    break
  fi
  [ "$i" = 60 ] && { docker logs "$name" >&2; echo "test-replset.sh: the replica set did not start" >&2; exit 1; }
  sleep 1
done
for i in $(seq 1 60); do
  primary=$(docker exec "$name" mongosh --quiet --port "$p0" --eval 'db.hello().isWritablePrimary' 2>/dev/null || true)
  [ "$primary" = true ] && break
  [ "$i" = 60 ] && { echo "test-replset.sh: no primary was elected within a minute" >&2; exit 1; }
  sleep 1
done

export MDB_TEST_UPSTREAM_URI="mongodb://127.0.0.1:$p0,127.0.0.1:$p1,127.0.0.1:$p2/?replicaSet=rs0"
echo "test-replset.sh: MDB_TEST_UPSTREAM_URI=$MDB_TEST_UPSTREAM_URI npm test $*" >&2
npm test -- "$@"
