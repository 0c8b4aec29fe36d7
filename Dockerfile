# oidc-bff container image (docs/deployment.md).
#
#   docker build -t oidc-bff .
#   docker run --rm -p 127.0.0.1:8080:8080 -v "$PWD/bff.toml:/etc/oidc-bff/bff.toml:ro" oidc-bff
#
# Stages: chef (the Rust toolchain + cargo-chef from crates.io) -> planner (recipe.json: the
# dependency graph only) -> builder (dependencies compiled in their own layer, cached until
# Cargo.toml/Cargo.lock change; then the crate) -> runtime (distroless cc: glibc, libgcc,
# CA certificates, no shell, uid 65532).
#
# The builder is Debian 12 (bookworm) like the runtime, so the binary's glibc matches.
# Distroless publishes no versioned tags (only latest, nonroot, debug, debug-nonroot): pin the
# runtime by digest in your registry mirror or with Renovate/Dependabot
# (gcr.io/distroless/cc-debian12:nonroot@sha256:...).

FROM rust:1.95.0-slim-bookworm AS chef
WORKDIR /src
RUN cargo install cargo-chef --version 0.1.77 --locked

FROM chef AS planner
WORKDIR /src
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
WORKDIR /src
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only, with the release profile of Cargo.toml (fat LTO, one codegen unit).
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
    && ./target/release/oidc-bff --version

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="oidc-bff" \
      org.opencontainers.image.description="Backend-for-frontend OpenID Connect token proxy for browser single-page apps" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /src/target/release/oidc-bff /usr/local/bin/oidc-bff
# serve, check-config and healthcheck read the configuration from here unless --config is given.
ENV BFF_CONFIG=/etc/oidc-bff/bff.toml
# 65532 = "nonroot" in distroless; numeric so that runAsNonRoot can verify it.
USER 65532:65532
# 8080: the public listener (server.listen); 9090: the admin listener for /metrics
# (server.admin_listen), only when configured.
EXPOSE 8080 9090
# GET http://127.0.0.1:<port of server.listen>/healthz; exit 0 when it answers 200.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/oidc-bff", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/oidc-bff"]
CMD ["serve"]
