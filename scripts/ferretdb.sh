#!/usr/bin/env bash
# Builds (once, cached outside the repo) and runs FerretDB v1.24.2 with its SQLite backend: the test
# upstream, and a local upstream for trying mdb-runtime without a MongoDB.
#
#   scripts/ferretdb.sh build              print the path of the cached binary, building it if needed
#   scripts/ferretdb.sh run [PORT] [DIR]   run it on 127.0.0.1:PORT (27017); DIR (default $CACHE/upstream)
#                                          holds its SQLite data (DIR/data) and state file (DIR/state)
#
# Env: MDB_CACHE_DIR (the cache, $CACHE; default ~/.cache/mdb-runtime).
#
# The build writes Go's output to $CACHE/ferretdb-v1.24.2/build.log and, on stderr, one line per step
# ("ferretdb.sh: step: go build"; scripts/dev.mjs shows them as its progress line); when a step fails
# it prints the tail of that log and its path, and exits 1.
#
# Why the build is not `go install …/cmd/ferretdb@v1.24.2`: FerretDB reads its version from an embedded
# build/version/version.txt that the module does not ship; a binary built from the module panics at
# start. We build against a copy of the module source with that file written (a `replace` directive in
# a small wrapper module). With Go >= 1.23 its old SQLite library may need -checklinkname=0 to link.
set -euo pipefail

VERSION=v1.24.2
CACHE="${MDB_CACHE_DIR:-$HOME/.cache/mdb-runtime}"
OUT="$CACHE/ferretdb-$VERSION"
BIN="$OUT/ferretdb"
LOG="$OUT/build.log"

# Runs one build step with its output appended to the log; on failure prints the log's tail and exits.
step() {
  local name=$1
  shift
  echo "ferretdb.sh: step: $name" >&2
  echo "### $name: $*" >>"$LOG"
  local status=0
  "$@" >>"$LOG" 2>&1 || status=$?
  [ "$status" -eq 0 ] || fail "$name" "$status"
}

fail() {
  echo "ferretdb.sh: building FerretDB $VERSION failed at step '$1' (exit $2); the last lines of $LOG:" >&2
  tail -n 25 "$LOG" | sed 's/^/  /' >&2
  exit 1
}

build() {
  if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
    echo "$BIN"
    return
  fi
  command -v go >/dev/null || {
    echo "ferretdb.sh: Go is required to build FerretDB $VERSION, and 'go' is not on the PATH (https://go.dev/dl/)" >&2
    exit 1
  }
  mkdir -p "$OUT"
  exec 9>"$OUT/.lock"
  if ! flock -n 9; then
    echo "ferretdb.sh: waiting for another build of FerretDB (lock $OUT/.lock)" >&2
    flock 9
  fi
  if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then echo "$BIN"; return; fi
  local work="$OUT/wrapper"
  rm -rf "$work"
  mkdir -p "$work"
  : >"$LOG"
  echo "ferretdb.sh: building FerretDB $VERSION into $BIN (first run only; takes a few minutes); Go's output goes to $LOG" >&2
  (
    cd "$work"
    export GOFLAGS=-mod=mod
    step "go mod init" go mod init mdb-runtime/ferretdb-wrapper
    step "go get" go get "github.com/FerretDB/FerretDB@$VERSION"
    local src
    src=$(go list -m -f '{{.Dir}}' github.com/FerretDB/FerretDB 2>>"$LOG") || fail "go list" $?
    cp -r "$src" ./ferretdb-src
    chmod -R u+w ./ferretdb-src
    echo "$VERSION" > ./ferretdb-src/build/version/version.txt
    go mod edit -replace "github.com/FerretDB/FerretDB=./ferretdb-src"
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/FerretDB/FerretDB/cmd/ferretdb"\n' > tools.go
    step "go mod tidy" go mod tidy
    # -v lists each package as it is compiled: the progress that scripts/dev.mjs shows.
    echo "ferretdb.sh: step: go build" >&2
    echo "### go build" >>"$LOG"
    local status=0
    go build -v -o "$BIN.tmp" github.com/FerretDB/FerretDB/cmd/ferretdb >>"$LOG" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
      grep -q 'linkname' "$LOG" || fail "go build" "$status"
      step "go build -ldflags=-checklinkname=0" go build -v -ldflags=-checklinkname=0 -o "$BIN.tmp" github.com/FerretDB/FerretDB/cmd/ferretdb
    fi
  )
  mv "$BIN.tmp" "$BIN"
  "$BIN" --version >/dev/null
  rm -rf "$work"
  echo "$BIN"
}

case "${1:-}" in
  build) build ;;
  run)
    bin=$(build)
    port="${2:-27017}"
    dir="${3:-$CACHE/upstream}"
    mkdir -p "$dir/data" "$dir/state"
    dir=$(cd "$dir" && pwd)
    echo "FerretDB $VERSION on 127.0.0.1:$port (SQLite data in $dir/data)" >&2
    # --state-dir: FerretDB writes state.json there (default: the working directory); --debug-addr=-:
    # no debug HTTP handler (its default, 127.0.0.1:8088, fails the start when that port is taken).
    cd "$dir/state"
    exec "$bin" --handler=sqlite --sqlite-url="file:$dir/data/" --state-dir="$dir/state" --listen-addr="127.0.0.1:$port" \
      --debug-addr=- --telemetry=disable --log-level=warn
    ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
