#!/usr/bin/env bash
# Set up and run mdb-runtime on the example config (config/), for trying it out on a fresh machine:
# builds the TypeScript, and unless MDB_UPSTREAM_URI is set, starts a local FerretDB upstream (built
# once with Go, cached in ~/.cache/mdb-runtime, data in ./.ferretdb-data) on a free port.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build --silent
if [ -z "${MDB_UPSTREAM_URI:-}" ]; then
  port=${MDB_DEV_UPSTREAM_PORT:-27217}
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "dev.sh: port $port is taken; set MDB_DEV_UPSTREAM_PORT, or MDB_UPSTREAM_URI to use that server" >&2
    exit 1
  fi
  bash scripts/ferretdb.sh run "$port" ./.ferretdb-data &
  upstream_pid=$!
  trap 'kill $upstream_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$upstream_pid" 2>/dev/null || { echo "dev.sh: FerretDB failed to start" >&2; exit 1; }
    sleep 0.2
  done
  export MDB_UPSTREAM_URI="mongodb://127.0.0.1:$port"
fi
# The example task_manager app verifies tokens with TASK_MANAGER_JWT_SECRET: make one up for this run
# (unless set) and print a token, so a client can connect as that app right away.
if [ -z "${TASK_MANAGER_JWT_SECRET:-}" ]; then
  TASK_MANAGER_JWT_SECRET=$(node -e "process.stdout.write(require('crypto').randomBytes(32).toString('base64url'))")
  export TASK_MANAGER_JWT_SECRET
fi
node dist/cli/main.js serve --config ./config "$@" &
proxy_pid=$!
token=$(node dist/cli/main.js token task_manager --config ./config --ttl 8h 2>/dev/null || true)
if [ -n "$token" ]; then
  echo "dev.sh: connect as task_manager (token valid 8 h, for this run's secret):" >&2
  echo "  mongodb://task_manager:$token@127.0.0.1:27100/?authMechanism=PLAIN&authSource=%24external" >&2
  echo "dev.sh: or as the playground app (no token): mongodb://127.0.0.1:27100/?appName=playground" >&2
fi
trap 'kill -TERM $proxy_pid 2>/dev/null || true; wait $proxy_pid 2>/dev/null || true; kill ${upstream_pid:-} 2>/dev/null || true' EXIT INT TERM
wait $proxy_pid
