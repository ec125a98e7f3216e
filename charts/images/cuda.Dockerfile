# syntax=docker/dockerfile:1.7
# inferd, CUDA image: `inferd serve` on NVIDIA GPU nodes.
#
#   docker build -f charts/images/cuda.Dockerfile --build-arg CUDA_COMPUTE_CAP=89 \
#     -t ghcr.io/inferd/inferd:0.1.0-cuda .
#
# CUDA_COMPUTE_CAP picks the GPU generation the kernels are compiled for (75 T4, 80 A100,
# 86 A10G, 89 L4/L40S, 90 H100); the build never queries a GPU. The runtime stage is
# NVIDIA's `runtime` image (cuBLAS and the CUDA runtime, no compiler); the node's driver
# comes in through the NVIDIA container toolkit.

ARG CUDA_VERSION=12.4.1
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu22.04 AS build
ARG RUST_VERSION=1.95.0
ARG CUDA_COMPUTE_CAP=89
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:${PATH}
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain ${RUST_VERSION}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p inferd --bin inferd --features cuda \
 && install -D -m 0755 target/release/inferd /out/inferd

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu22.04 AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 inferd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/inferd --create-home inferd
COPY --from=build /out/inferd /usr/local/bin/inferd
USER 10001:10001
ENV HF_HOME=/var/cache/inferd/hf \
    INFERD_HOST=0.0.0.0 \
    INFERD_PORT=8080 \
    INFERD_LOG_FORMAT=json \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/inferd"]
CMD ["serve", "--models", "/etc/inferd/models.toml"]
