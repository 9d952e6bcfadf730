#!/usr/bin/env bash
# Builds (once, cached outside the repo) and runs FerretDB v1.24.2 with its SQLite backend: the test
# upstream, and a local upstream for trying mdb-runtime without a MongoDB.
#
#   scripts/ferretdb.sh build              print the path of the cached binary, building it if needed
#   scripts/ferretdb.sh run [PORT] [DIR]   run it on 127.0.0.1:PORT (27017) with data in DIR (./.ferretdb-data)
#
# Env: MDB_CACHE_DIR (default ~/.cache/mdb-runtime).
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

build() {
  if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
    echo "$BIN"
    return
  fi
  command -v go >/dev/null || { echo "ferretdb.sh: Go is required to build FerretDB (https://go.dev/dl/)" >&2; exit 1; }
  mkdir -p "$OUT"
  exec 9>"$OUT/.lock"
  flock 9
  if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then echo "$BIN"; return; fi
  local work="$OUT/wrapper"
  rm -rf "$work"
  mkdir -p "$work"
  (
    cd "$work"
    export GOFLAGS=-mod=mod
    go mod init mdb-runtime/ferretdb-wrapper >/dev/null 2>&1
    echo "building FerretDB $VERSION into $BIN (first run only; takes a few minutes)" >&2
    go get "github.com/FerretDB/FerretDB@$VERSION" >&2
    local src
    src=$(go list -m -f '{{.Dir}}' github.com/FerretDB/FerretDB)
    cp -r "$src" ./ferretdb-src
    chmod -R u+w ./ferretdb-src
    echo "$VERSION" > ./ferretdb-src/build/version/version.txt
    go mod edit -replace "github.com/FerretDB/FerretDB=./ferretdb-src"
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/FerretDB/FerretDB/cmd/ferretdb"\n' > tools.go
    go mod tidy >&2
    if ! go build -o "$BIN.tmp" github.com/FerretDB/FerretDB/cmd/ferretdb 2>build.log; then
      if grep -q 'linkname' build.log; then
        go build -ldflags=-checklinkname=0 -o "$BIN.tmp" github.com/FerretDB/FerretDB/cmd/ferretdb >&2
      else
        cat build.log >&2
        exit 1
      fi
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
    dir="${3:-./.ferretdb-data}"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    echo "FerretDB $VERSION on 127.0.0.1:$port (SQLite data in $dir)" >&2
    exec "$bin" --handler=sqlite --sqlite-url="file:$dir/" --listen-addr="127.0.0.1:$port" --telemetry=disable --log-level=warn
    ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
