# One image for every service: `petstore serve <service>` picks which one runs.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p petstore && cp target/release/petstore /usr/local/bin/petstore

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /usr/local/bin/petstore /usr/local/bin/petstore
COPY config ./config
USER nobody
ENTRYPOINT ["petstore"]
