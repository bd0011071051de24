#!/usr/bin/env bash
# Copy the LHC-Forms renderer (npm `lforms`, pinned by webapp/package-lock.json) into the Python
# package, where the SMART app under /app/ serves it (no CDN). The copied files are committed, so a
# fresh clone runs the app without Node; this script is how they were made, and --check (run by
# scripts/test.sh) proves the committed copy is byte for byte what the lockfile installs.
#
#   scripts/vendor-app.sh           npm ci in webapp/, then copy into service/assessment/static/vendor/
#   scripts/vendor-app.sh --check   npm ci, then compare; exit 1 if the committed copy differs
set -euo pipefail
cd "$(dirname "$0")/.."

VENDOR=service/assessment/static/vendor/lforms
DIST=webapp/node_modules/lforms/dist/lforms
# What the web component needs (lforms README: zone.js, the element, its styles, the FHIR support).
FILES=(
  webcomponent/assets/lib/zone.min.js
  webcomponent/lhc-forms.js
  webcomponent/styles.css
  webcomponent/down_arrow_gray_10_10.png
  webcomponent/magnifying_glass.png
  fhir/R4/lformsFHIR.min.js
  LICENSE.md
)

# npm ci (lockfile only, no install scripts), skipped when node_modules was installed from this very lockfile.
stamp=webapp/node_modules/.calf-cds-lockfile.sha256
if ! sha256sum --status -c "$stamp" 2>/dev/null; then
  (cd webapp && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  sha256sum webapp/package-lock.json > "$stamp"
fi
version=$(node -p 'require("./webapp/node_modules/lforms/package.json").version')

target=$VENDOR
if [ "${1:-}" = "--check" ]; then
  target=$(mktemp -d)
  trap 'rm -rf "$target"' EXIT
fi
mkdir -p "$target"
for file in "${FILES[@]}"; do
  # The source-map comment points at a file we do not ship; drop it so browsers do not ask.
  sed '/^\/\/# sourceMappingURL=/d' "$DIST/$file" > "$target/$(basename "$file")" 2>/dev/null \
    || cp "$DIST/$file" "$target/$(basename "$file")"
done
echo "$version" > "$target/VERSION"

if [ "${1:-}" = "--check" ]; then
  if ! diff -r "$target" "$VENDOR" >/dev/null; then
    echo "service/assessment/static/vendor/lforms differs from lforms $version in webapp/package-lock.json:"
    diff -rq "$target" "$VENDOR" || true
    echo "run scripts/vendor-app.sh and commit the result"
    exit 1
  fi
  echo "vendored lforms $version matches webapp/package-lock.json"
fi
