#!/usr/bin/env bash
# Scenario 8 (core scaling) and scenario 1 on a many-core machine that has
# no Rust toolchain and no network (the 16-core device machine described in
# ../shared/device/README.md).
#
#   bench/device-scaling.sh prepare   # here: release binaries, stripped, into .devbin/;
#                                     # Debian's nginx and HAProxy unpacked into .peers/root
#   bench/device-scaling.sh run       # there, from the repository root, with .devbin and
#                                     # .peers carried; the report goes to $OUT (or bench/results)
#
# Layout on 16 cores: proxies on 0-7 (k = 1, 2, 4, 8 workers), the load
# generator on 8-13 (6 threads), the backend on 14-15. 2 runs of 5 s per
# contender and step keep the whole call near 6 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
  cargo build --release --locked --bins -p shardgate-bench -p shardgate-controlplane -p shardgate-dataplane
  mkdir -p .devbin
  for b in shardgate-bench shardgate-controlplane shardgate-dataplane; do
    strip -o ".devbin/$b" "target/release/$b"
  done
  bash ../shared/device/prepare-peers.sh "$PWD/.peers" >/dev/null
  for d in /.devbin/ /.peers/; do
    grep -qxF "$d" .git/info/exclude || echo "$d" >>.git/info/exclude
  done
  du -sh .devbin .peers
  ;;
run)
  R=$PWD/.peers/root
  export LD_LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu:$R/lib/x86_64-linux-gnu
  export PATH=$R/usr/sbin:$R/usr/bin:$PATH
  # Debian's nginx looks for its compiled-in directories before reading
  # any configuration.
  mkdir -p /var/lib/nginx /var/log/nginx
  ulimit -n 20000 2>/dev/null || true
  nproc
  uname -r
  grep -m1 "model name" /proc/cpuinfo
  out=${OUT:-bench/results/device}
  .devbin/shardgate-bench run --bin-dir .devbin --scenarios 1,8 \
    --proxy-cores 0-7 --load-cores 8-13 --backend-cores 14-15 \
    --connections 256 --runs 2 --seconds 5 --warmup 1 --out "$out"
  ;;
*)
  echo "usage: $0 prepare|run" >&2
  exit 2
  ;;
esac
