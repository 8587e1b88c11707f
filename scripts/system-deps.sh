#!/usr/bin/env sh
# Debian packages the test suite needs: a real redis-server for the RedisStore tests, and a
# real Prometheus server that scrapes the gateway's /metrics in the tracing tests.
# Installs only what is missing; uses sudo when not root.
set -eu
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v prometheus >/dev/null 2>&1 || missing="$missing prometheus"
if [ -z "$missing" ]; then
    exit 0
fi
as_root=""
[ "$(id -u)" -eq 0 ] || as_root="sudo"
$as_root apt-get update -qq
# The Debian prometheus package starts its own service where an init system runs; the tests
# start their own server on a free port and never use it.
if ! command -v redis-server >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq redis-server >/dev/null
fi
# Prometheus is wanted, not required: where it cannot be installed, its one test skips and
# says why, and the rest of the suite still runs.
if ! command -v prometheus >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq prometheus >/dev/null ||
        echo "system-deps: prometheus could not be installed; the Prometheus scrape test will skip" >&2
fi
