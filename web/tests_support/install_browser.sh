#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/web/test_browser.py).
# The test drives /usr/bin/chromium through the `playwright` Python package;
# Playwright's own browser download (`playwright install`) is never used.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    /usr/bin/chromium --version 2>/dev/null || true
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

$SUDO apt-get update -q
# A font package keeps page text (and the screenshot artifact) legible.
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version
