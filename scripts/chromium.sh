#!/usr/bin/env bash
# Debian's Chromium for the report's browser tests (driven by the playwright package; no browser download).
# Installs the 'chromium' package when /usr/bin/chromium is missing (root: apt-get; otherwise it says what to run).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "the report's browser tests need Debian's chromium: run 'sudo apt-get install chromium'" >&2
    exit 1
fi
echo "installing Chromium from Debian packages (for the report's browser tests)..." >&2
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
echo "Chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}') installed in $((SECONDS - start))s" >&2
