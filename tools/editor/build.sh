#!/usr/bin/env bash
# Rebuild the playground's editor bundle (needs npm and the npm registry; users and CI do not:
# the built bundle is committed in netspec/serve/static/editor.js).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
npm run build
