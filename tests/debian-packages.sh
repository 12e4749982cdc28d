#!/usr/bin/env bash
# The Debian packages some tests need, installed when missing: a PostgreSQL server (the
# postgresql:// sink) and Chromium with its driver (the web console in a real browser).
# Without root or apt-get it only says what is missing; those tests then skip.
set -uo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v groff >/dev/null 2>&1 || missing+=(groff)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/debian-packages.sh: not installing ${missing[*]} (needs root and apt-get);" \
         "the tests that need them will skip" >&2
    exit 0
fi
echo "tests/debian-packages.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
