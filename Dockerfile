# Build: SQL is checked against .sqlx/, so no database is needed at build time.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin credential-ledger

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 ledger
COPY --from=build /src/target/release/credential-ledger /usr/local/bin/credential-ledger
USER ledger
ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["credential-ledger"]
CMD ["serve"]
