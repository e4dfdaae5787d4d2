#!/usr/bin/env bash
# Copy the Socket.IO Admin UI pinned in package.json (@socket.io/admin-ui) from node_modules into
# web/static/vendor/admin-ui/, where the replicas serve it at /admin/ (web/routes.py) when
# ADMIN_UI_PASSWORD is set. Its index.html links two stylesheets from CDNs (Google's Roboto, the
# Material Design icons); they are dropped, so the page loads nothing from outside (the UI then
# uses the browser's sans-serif and shows no icon glyphs). Source maps stay out. Run it after
# bumping the version and commit the result; tests/unit/test_admin_ui.py fails until you do.
set -euo pipefail
cd "$(dirname "$0")/.."
source_dir=node_modules/@socket.io/admin-ui/ui/dist
target_dir=web/static/vendor/admin-ui
if [ ! -f "$source_dir/index.html" ]; then
    echo "error: $source_dir/index.html is missing; run 'make install' (npm ci) first" >&2
    exit 1
fi
rm -rf "$target_dir"
mkdir -p "$target_dir"
(cd "$source_dir" && find . -type f ! -name '*.map' -print0) \
    | (cd "$source_dir" && xargs -0 cp --parents -t "$OLDPWD/$target_dir")
sed -E -i 's#<link rel="?stylesheet"? href="?https?://[^>]*>##g' "$target_dir/index.html"
if grep -Eq 'https?://' "$target_dir/index.html"; then
    echo "error: $target_dir/index.html still loads something from outside" >&2
    exit 1
fi
version=$(grep -m1 -o '"version": *"[^"]*"' node_modules/@socket.io/admin-ui/package.json \
    | grep -o '[0-9][^"]*')
echo "$version" > "$target_dir/VERSION"
echo "vendored @socket.io/admin-ui $version into $target_dir/"
