#!/usr/bin/env bash
# Install what the browser test needs (Debian chromium, playwright-core from npm) if missing, then run it.
# Playwright never downloads browsers here: it drives /usr/bin/chromium (override with CHROMIUM_PATH).
set -euo pipefail
cd "$(dirname "$0")"

export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ ! -x "$CHROMIUM_PATH" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing at $CHROMIUM_PATH; install it as root: apt-get update && apt-get install -y chromium" >&2
    exit 1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

if [ ! -f node_modules/playwright-core/package.json ]; then
  npm ci --no-audit --no-fund
fi

exec node --test widget_browser.test.mjs
