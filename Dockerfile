# syntax=docker/dockerfile:1
# Shardgate's container image: the two binaries and nothing else.
#   docker build -t ghcr.io/shardgate/shardgate:0.1.0 .
# Needs BuildKit (the default builder since Docker 23) for the cache and bind
# mounts. Both binaries run as the non-root user 65532, the UID the
# Kubernetes manifests (deploy/) run them as.

# The toolchain pinned in rust-toolchain.toml (rustup would fetch it anyway).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shardgate-controlplane -p shardgate-dataplane \
 && mkdir -p /out \
 && cp target/release/shardgate-controlplane target/release/shardgate-dataplane /out/

FROM debian:bookworm-slim
# One layer: install the binaries from the build stage and give the dataplane
# the file capability to bind ports below 1024 as a non-root user (Kubernetes
# does not set ambient capabilities, so `add: [NET_BIND_SERVICE]` alone does
# not reach a non-root process; the pod must still add it so that it is in
# the bounding set). setcap runs here, not in the build stage, because COPY
# does not reliably carry the security.capability attribute. libcap2-bin
# (setcap) is removed again; ca-certificates stays for --kubeconfig files
# that point at publicly signed API servers.
RUN --mount=type=bind,from=build,source=/out,target=/mnt/out \
    set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates libcap2-bin; \
    install -m 0755 /mnt/out/shardgate-controlplane /mnt/out/shardgate-dataplane /usr/local/bin/; \
    setcap cap_net_bind_service=+ep /usr/local/bin/shardgate-dataplane; \
    apt-get purge -y --auto-remove libcap2-bin; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 65532 shardgate; \
    useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin shardgate
USER 65532:65532
# No entrypoint: the manifests name the binary (`command:`); by hand:
#   docker run --rm IMAGE shardgate-dataplane --help
CMD ["shardgate-dataplane", "--help"]
