# kuiperbelt container image: one static binary on an empty base.
#
#   docker build -t kuiperbelt .
#   docker run --rm -p 9180:9180 \
#     -v "$PWD/config.yml:/etc/kuiperbelt/config.yml:ro" kuiperbelt
#
# Image contents: /usr/local/bin/kuiperbelt (static, x86_64-unknown-linux-musl)
# and its default config /etc/kuiperbelt/config.yml, and nothing else: no
# shell, no libc, no CA store (callbacks are plain http).
# User:    65532:65532 (numeric, non-root; works with runAsNonRoot and a
#          read-only root filesystem: kuiperbelt writes no files).
# Config:  /etc/kuiperbelt/config.yml. Without a mount it is
#          docker/config_by_env.yml, driven by the Go image's EKBO_* variables
#          (docker run -e EKBO_CONNECT_CALLBACK_URL=http://app/connect IMAGE);
#          a mounted file replaces it. KUIPERBELT_* variables override either;
#          `docker run IMAGE -version` and `docker run IMAGE --check-config`
#          work as usual.
# Ports:   9180 public: /connect (WebSocket), /ping, /healthz, /readyz
#               (and the push API too unless `api.listen` is set);
#          9181 push/admin API when `api.listen: 127.0.0.1:9181` (localhost
#               only: reached from the app in the same pod, not published);
#          9182 /metrics when `metrics.listen: 0.0.0.0:9182`.
#
# CI, which cannot pull the Rust image, builds the binary on the host, imports
# it as an image holding /out/kuiperbelt, and builds only the final stage from
# it (BuildKit skips the unused `build` stage):
#   tar -C DIR -c out/kuiperbelt | docker import - kuiperbelt-prebuilt:local
#   DOCKER_BUILDKIT=1 docker build --target runtime \
#     --build-arg BINARY_FROM=kuiperbelt-prebuilt:local -t kuiperbelt .

ARG RUST_VERSION=1.95
# Where /out/kuiperbelt comes from: the `build` stage below, or an image.
ARG BINARY_FROM=build

# musl-gcc compiles ring's C code (the TLS crypto of cluster mode's NATS
# client); Rust links the musl target with its self-contained start files.
FROM rust:${RUST_VERSION}-slim AS build
WORKDIR /src
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
ENV CC_x86_64_unknown_linux_musl=musl-gcc
COPY . .
RUN CARGO_PROFILE_RELEASE_STRIP=symbols \
      cargo build --release --locked --target x86_64-unknown-linux-musl --bin kuiperbelt \
 && mkdir -p /out \
 && cp target/x86_64-unknown-linux-musl/release/kuiperbelt /out/kuiperbelt

FROM ${BINARY_FROM} AS binary

FROM scratch AS runtime
LABEL org.opencontainers.image.title="kuiperbelt" \
      org.opencontainers.image.description="WebSocket <-> HTTP/1.1 bridge" \
      org.opencontainers.image.source="https://github.com/kuiperbelt/kuiperbelt" \
      org.opencontainers.image.licenses="MIT"
COPY --from=binary /out/kuiperbelt /usr/local/bin/kuiperbelt
COPY docker/config_by_env.yml /etc/kuiperbelt/config.yml
# The default -config (config.yml) resolves here, so flags alone work too
# (`docker run IMAGE --check-config`), as with the Go image.
WORKDIR /etc/kuiperbelt
USER 65532:65532
EXPOSE 9180
ENTRYPOINT ["/usr/local/bin/kuiperbelt"]
CMD ["-config=/etc/kuiperbelt/config.yml"]
