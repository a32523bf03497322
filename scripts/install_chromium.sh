#!/usr/bin/env bash
# Debian's Chromium, for the browser tests (tests/test_html.py) and scripts/screenshot.py.
# Idempotent: does nothing where /usr/bin/chromium exists. Needs root or sudo, and apt-get.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_chromium.sh: no apt-get here; install Chromium with your package manager and set ATTRIBOT_CHROMIUM to its path" >&2
    exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    as_root=(sudo)
fi
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
/usr/bin/chromium --version
