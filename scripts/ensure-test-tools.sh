#!/usr/bin/env bash
# The system tools the test suite drives: Chromium (browser tests of the portal, through
# Playwright) and promtool (Prometheus rule checks and unit tests), from Debian's packages.
# Playwright's own browser download does not work here; Debian's Chromium does. iproute2 (`ip`)
# makes the two-host test's network namespaces.
set -euo pipefail

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
test -x /usr/bin/chromium || missing+=(chromium)
command -v ip >/dev/null || missing+=(iproute2)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "missing ${missing[*]}: install them with apt-get (as root): apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
