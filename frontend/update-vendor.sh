#!/usr/bin/env bash
# Refresh the dashboard's vendored front-end packages from npm (needs Node; the Python
# install never does). Checked-in result: host/src/levqor_host/web/dashboard/static/vendor/.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
dest=../host/src/levqor_host/web/dashboard/static/vendor
cp node_modules/chart.js/dist/chart.umd.min.js "$dest/chart.umd.min.js"
echo "chart.js $(node -p "require('chart.js/package.json').version") -> $dest"
