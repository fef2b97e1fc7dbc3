#!/usr/bin/env bash
# Runs the built-in standalone demo: two echo backends on 127.0.0.1:18081 and
# :18082, and Shardgate (controlplane + dataplane) serving the Gateway in
# examples/quickstart on 127.0.0.1:8080 with a 90/10 split between them.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")"

echo "building release binaries (first time: a few minutes)..."
cargo build --release --locked --workspace --bins --quiet
bin=target/release

"$bin/shardgate-echo" \
  --serve '127.0.0.1:18081,pod=echo-v1-0-0,namespace=demo' \
  --serve '127.0.0.1:18082,pod=echo-v2-0-0,namespace=demo' >/dev/null &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true' EXIT

cat <<'MSG'

Shardgate demo starting. In another terminal, try:

  curl -i http://127.0.0.1:8080/hello
  for i in $(seq 100); do curl -s http://127.0.0.1:8080/ | grep -o '"pod": "[^"]*"'; done | sort | uniq -c
  curl -s http://127.0.0.1:9901/snapshot
  target/release/shardgate status

Edit examples/quickstart/route.yaml (weights, paths) and the change is live
within milliseconds. Ctrl-C drains and stops.

MSG
"$bin/shardgate" run --config-dir examples/quickstart --bind-address 127.0.0.1 "$@"
