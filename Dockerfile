# Build: SQL is checked against .sqlx/, so no database is needed at build time.
FROM rust:1-bookworm AS build
WORKDIR /src

# The dependencies first, in a layer of their own: it is rebuilt only when Cargo.toml or
# Cargo.lock change, not at every change of the source. Empty targets stand in for ours.
COPY Cargo.toml Cargo.lock ./
COPY tests/support/Cargo.toml tests/support/Cargo.toml
RUN mkdir -p src tests/support \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs tests/support/lib.rs \
    && cargo build --release --locked --bin credential-ledger \
    && rm -rf src tests/support/lib.rs

COPY .cargo .cargo
COPY .sqlx .sqlx
COPY migrations migrations
COPY projections projections
COPY src src
COPY tests/support tests/support
# The stand-ins above are newer than nothing cargo knows of: touching ours rebuilds our crate.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin credential-ledger

FROM debian:bookworm-slim
# A numeric user, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
RUN groupadd --system --gid 10001 ledger \
    && useradd --system --uid 10001 --gid 10001 --no-create-home ledger
COPY --from=build /src/target/release/credential-ledger /usr/local/bin/credential-ledger
USER 10001:10001
# LISTEN_ADDR for `serve`; OPS_ADDR for `relay` and `webhook-worker`, which serve no API and
# answer only /livez, /readyz and /metrics. One port, whichever the role: one health check.
ENV LISTEN_ADDR=0.0.0.0:8080 \
    OPS_ADDR=0.0.0.0:8080
EXPOSE 8080
# Liveness: the process answers. bash's /dev/tcp, since the slim image has no HTTP client.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /livez HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["credential-ledger"]
CMD ["serve"]
