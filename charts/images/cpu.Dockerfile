# syntax=docker/dockerfile:1.7
# inferd, CPU image: both roles (`inferd serve` on CPU nodes, `inferd gateway`).
#
#   docker build -f charts/images/cpu.Dockerfile -t ghcr.io/inferd/inferd:0.1.0 .
#
# Build context: the repository root. BuildKit reads cpu.Dockerfile.dockerignore next to
# this file, so target/, models/ and .venv/ never enter the context.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# gcc/g++ build the C parts of dependencies (onig, aws-lc); no OpenSSL is used.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p inferd --bin inferd \
 && install -D -m 0755 target/release/inferd /out/inferd

FROM debian:bookworm-slim AS runtime
# CA roots for Bedrock (HTTPS) and the Hugging Face Hub; nothing else.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 inferd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/inferd --create-home inferd
COPY --from=build /out/inferd /usr/local/bin/inferd
USER 10001:10001
# Model downloads land here; mount a volume (the chart does) for a read-only root fs.
ENV HF_HOME=/var/cache/inferd/hf \
    INFERD_HOST=0.0.0.0 \
    INFERD_PORT=8080 \
    INFERD_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/inferd"]
CMD ["serve", "--models", "/etc/inferd/models.toml"]
