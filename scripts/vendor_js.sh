#!/usr/bin/env bash
# Copy the Socket.IO client pinned in package.json from node_modules into web/static/vendor/,
# where the demo page serves it (no CDN). Run `make vendor-js` after bumping the version and
# commit the result; tests/unit/test_vendored_js.py fails until you do.
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir=node_modules/socket.io-client/dist
target_dir=web/static/vendor
if [ ! -f "$source_dir/socket.io.min.js" ]; then
    echo "error: $source_dir/socket.io.min.js is missing; run 'make install' (npm ci) first" >&2
    exit 1
fi
mkdir -p "$target_dir"
cp "$source_dir/socket.io.min.js" "$source_dir/socket.io.min.js.map" "$target_dir/"
version=$(node -p "require('./node_modules/socket.io-client/package.json').version" 2>/dev/null \
    || grep -m1 -o '"version": *"[^"]*"' node_modules/socket.io-client/package.json)
echo "vendored socket.io-client $version into $target_dir/"
