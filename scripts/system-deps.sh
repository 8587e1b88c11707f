#!/usr/bin/env sh
# Debian packages the test suite needs: a real redis-server for the RedisStore tests.
# Installs only what is missing; uses sudo when not root.
set -eu
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
as_root=""
[ "$(id -u)" -eq 0 ] || as_root="sudo"
$as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq redis-server >/dev/null
