#!/usr/bin/env bash
# The first screen of a run's HTML report as a PNG (the README's picture), at 1280 x 720, with headless Chromium:
#   bash scripts/report_screenshot.sh RUN_DIR [OUT.png]     (default OUT: docs/report.png)
# The README's picture is of `mathtune demo`'s run: bash scripts/report_screenshot.sh runs/demo
set -euo pipefail
run=${1:?usage: scripts/report_screenshot.sh RUN_DIR [OUT.png]}
out=${2:-docs/report.png}
[ -f "$run/report.html" ] || { echo "no report.html in $run" >&2; exit 1; }
chromium=$(command -v chromium || command -v chromium-browser) || { echo "needs chromium (make installs it as root)" >&2; exit 1; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$out")"
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --screenshot="$out" --window-size=1280,720 \
  "file://$(realpath "$run")/report.html" >/dev/null 2>&1
[ -s "$out" ] || { echo "chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
