# reporting-etl container: a production build (no sandbox upstreams), running as a non-root user.
# Build:  docker build -t reporting-etl .
# Run:    docker run --env-file reporting-etl.env -v /etc/reporting-etl:/etc/reporting-etl:ro \
#           reporting-etl run --config /etc/reporting-etl/reporting-etl.toml
# The container has no PostgreSQL binaries: set database.url (REPORTING_ETL__DATABASE__URL).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs rustfmt.toml ./
COPY src src
COPY sandbox sandbox
COPY migrations migrations
COPY schemas schemas
COPY queries queries
COPY benches benches
RUN cargo build --release --locked --no-default-features --bin reporting-etl

FROM debian:bookworm-slim
# rustls verifies upstream certificates against the system bundle.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin reporting-etl
COPY --from=build /src/target/release/reporting-etl /usr/local/bin/reporting-etl
USER 10001:10001
# Health and metrics; bind beyond loopback only inside the container network.
ENV REPORTING_ETL__SERVER__LISTEN=0.0.0.0:9187
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/reporting-etl"]
CMD ["run"]
