#!/usr/bin/env bash
# Re-vendors the web UI's front-end library from the npm registry at pinned versions, checking each
# tarball against the registry's published sha512 integrity. The result is committed; nothing runs at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=services/core-api/src/nexus/core_api/ui/static/vendor
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fetch() {  # package version integrity file-in-package target
  local url="https://registry.npmjs.org/$1/-/${1##*/}-$2.tgz"
  curl -sSf "$url" -o "$tmp/$1.tgz"
  local got="sha512-$(openssl dgst -sha512 -binary "$tmp/$1.tgz" | base64 -w0)"
  [ "$got" = "$3" ] || { echo "vendor-ui: $1@$2 integrity mismatch" >&2; exit 1; }
  mkdir -p "$tmp/$1" && tar xzf "$tmp/$1.tgz" -C "$tmp/$1"
  cp "$tmp/$1/package/$4" "$dest/$5"
  cp "$tmp/$1/package/LICENSE" "$dest/$5.LICENSE"
}
fetch htmx.org 2.0.4 'sha512-HLxMCdfXDOJirs3vBZl/ZLoY+c7PfM4Ahr2Ad4YXh6d22T5ltbTXFFkpx9Tgb2vvmWFMbIc3LqN2ToNkZJvyYQ==' dist/htmx.min.js htmx-2.0.4.min.js
fetch htmx-ext-sse 2.2.2 'sha512-MTnKkBzA2t4sI8gOXrRiPaceTlkUbrw3+3qOy1BfuBNIPBalsJiT4qxUGd6W48ggOkfe2akOnB8uxICJKw+Dsg==' sse.js htmx-ext-sse-2.2.2.js
echo "vendor-ui: $(ls "$dest")"
