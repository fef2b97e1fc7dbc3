#!/usr/bin/env bash
# The whole test suite (unit, property, end-to-end, conformance replay).
# Installs the real clients the end-to-end tests drive when they are
# missing: curl, openssl and h2load (Debian packages, needs root), and
# Python's prometheus_client and grpcio (pip). Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
for tool in curl:curl openssl:openssl h2load:nghttp2-client; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: please install: ${missing[*]}" >&2
    exit 1
  fi
fi
python3 -c 'import prometheus_client, grpc' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check prometheus_client grpcio

exec cargo test --locked --workspace "$@"
