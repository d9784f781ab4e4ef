# deploybot image: build with the Rust toolchain, run as a non-root user on a slim base.
# Config and the SQLite database live under /data (a volume); secrets come from the environment.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY commands ./commands
COPY standin ./standin
COPY migrations ./migrations
COPY src ./src
# Cargo.toml declares the benches: without their files the manifest does not load.
COPY benches ./benches
RUN cargo build --release --locked --bin deploybot

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin deploybot \
 && mkdir -p /data && chown deploybot /data
COPY --from=build /src/target/release/deploybot /usr/local/bin/deploybot
USER deploybot
WORKDIR /data
VOLUME ["/data"]
EXPOSE 3000
ENV DEPLOYBOT_CONFIG=/data/deploybot.toml
ENTRYPOINT ["/usr/local/bin/deploybot"]
CMD ["run"]
