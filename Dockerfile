# One image for every service: `petstore serve <service>` picks which one runs
# (docker-compose.enhanced.yml), `petstore` alone is the all-in-one.
#
#   docker build -t petstore .
#
# Stages: chef (the Rust toolchain and cargo-chef, pinned) → planner (the recipe: the
# workspace's manifests and Cargo.lock) → build (the dependencies compiled from the recipe in
# a layer of their own, cached until a manifest or Cargo.lock changes; then the workspace)
# → runtime (Debian slim, curl for the health check, a non-root user).

FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.73
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# The binary's default features (kafka, nats, rabbitmq, redis), release profile: the same
# package selection as the build below, so the dependencies are compiled once.
RUN cargo chef cook --release --package petstore --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --package petstore \
    && cp target/release/petstore /usr/local/bin/petstore

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin petstore
WORKDIR /app
COPY --from=build /usr/local/bin/petstore /usr/local/bin/petstore
# config/<PETSTORE_ENV>.yaml overlays and config/flags.json are read relative to /app.
COPY config ./config
USER petstore:petstore
# The all-in-one's port; `petstore serve <service>` listens on services.<service>.port
# (8081–8086).
EXPOSE 8080 8081 8082 8083 8084 8085 8086
# Liveness of whatever runs: the all-in-one on 8080 by default; a single service sets
# PETSTORE_HEALTH_URL to its own port (the compose file checks each service's port itself).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null "${PETSTORE_HEALTH_URL:-http://127.0.0.1:8080/health}" || exit 1
ENTRYPOINT ["petstore"]
