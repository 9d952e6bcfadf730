#!/usr/bin/env bash
# Creates (once, cached outside the repo) the Python virtual environment the end-to-end tests run
# PyMongo from, and prints its python path. Env: MDB_CACHE_DIR (default ~/.cache/mdb-runtime).
set -euo pipefail
PYMONGO=4.15.0
CACHE="${MDB_CACHE_DIR:-$HOME/.cache/mdb-runtime}"
VENV="$CACHE/venv-pymongo-$PYMONGO"
PY="$VENV/bin/python"
if [ -x "$PY" ] && "$PY" -c 'import pymongo' 2>/dev/null; then echo "$PY"; exit 0; fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.venv.lock"
flock 9
if [ -x "$PY" ] && "$PY" -c 'import pymongo' 2>/dev/null; then echo "$PY"; exit 0; fi
rm -rf "$VENV"
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "pymongo==$PYMONGO" >&2
echo "$PY"
