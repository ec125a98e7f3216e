# syntax=docker/dockerfile:1.7
# inferd, CUDA image: `inferd serve` on NVIDIA GPU nodes (docs/cuda.md).
#
#   docker build -f charts/images/cuda.Dockerfile -t ghcr.io/inferd/inferd:0.1.0-cuda .
#   docker build -f charts/images/cuda.Dockerfile --build-arg CUDA_COMPUTE_CAP=80 \
#     -t ghcr.io/inferd/inferd:0.1.0-cuda-sm80 .
#
# Build context: the repository root (cuda.Dockerfile.dockerignore keeps build outputs,
# models and the Python venv out).
#
# CUDA_COMPUTE_CAP is the GPU generation the kernels get SASS for (kernels/build.rs accepts
# 80, 89 and 90; default 90 = H100/H200). The fatbin also carries PTX for the same virtual
# arch, which the driver JIT-compiles for newer GPUs, never for older ones: an sm_90 image
# does not run on an L4 (8.9) or an A100 (8.0); an sm_80 image runs on every 8.x GPU
# (A100, A10G, L4, L40S) and, through PTX, on H100. The build never asks a GPU.
#
# Nothing CUDA is linked: the binary dlopens libcuda.so.1 and libcublasLt.so.13 the first
# time a CUDA device is asked for (cudarc dynamic loading), so the same binary also starts
# where there is no GPU (and then refuses `device = "cuda"` with a message naming the key).
#   - libcuda.so.1 is the node's driver: the NVIDIA container toolkit mounts it into the
#     container at run time (NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES below, or
#     the device plugin's `nvidia.com/gpu` resource on Kubernetes). The image ships none.
#   - cuBLAS/cuBLASLt 13.0 come from NVIDIA's `nvidia-cublas` wheel (PyPI, by package name,
#     pinned version and sha256), unpacked into /opt/nvidia/cublas/lib: two shared libraries
#     on a slim Debian base instead of NVIDIA's multi-gigabyte `runtime` image, pinned the
#     same way as the compiler toolchain. 13.0, not newer: driver 580 is CUDA 13.0.

ARG RUST_VERSION=1.95
ARG DEBIAN_IMAGE=debian:bookworm-slim

# ---- build: the Rust toolchain, the pinned CUDA 13.0 compiler wheels, the `cuda` binary.
FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG CUDA_COMPUTE_CAP=90
# gcc/g++ build the C parts of dependencies (onig, aws-lc) and are nvcc's host compiler;
# python3-pip only downloads the toolkit wheels (nothing is pip-installed).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
# The toolkit layer first: it changes only when the pinned wheels do.
COPY tests/tools/fetch_cuda_toolkit.sh /tmp/fetch_cuda_toolkit.sh
RUN bash /tmp/fetch_cuda_toolkit.sh /opt/cuda-13.0
ENV CUDA_HOME=/opt/cuda-13.0 \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p inferd --features cuda --bin inferd \
 && install -D -m 0755 target/release/inferd /out/inferd

# ---- cublas: libcublas.so.13 + libcublasLt.so.13 from the pinned wheel, verified by pip.
FROM ${DEBIAN_IMAGE} AS cublas
ARG CUBLAS_VERSION=13.0.2.14
ARG CUBLAS_SHA256=0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
RUN echo "nvidia-cublas==${CUBLAS_VERSION} --hash=sha256:${CUBLAS_SHA256}" >/tmp/cublas.txt \
 && python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
      --only-binary=:all: --platform manylinux_2_27_x86_64 --python-version 3.11 \
      -d /tmp/wheels -r /tmp/cublas.txt
RUN python3 - <<'PY'
import glob, os, zipfile
(whl,) = glob.glob("/tmp/wheels/nvidia_cublas-*.whl")
out = "/opt/nvidia/cublas/lib"
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(whl) as z:
    for name in ("libcublas.so.13", "libcublasLt.so.13"):
        with z.open(f"nvidia/cu13/lib/{name}") as src, open(os.path.join(out, name), "wb") as dst:
            dst.write(src.read())
        os.chmod(os.path.join(out, name), 0o755)
PY

# ---- runtime: slim Debian, the binary, cuBLAS; the driver comes from the node.
FROM ${DEBIAN_IMAGE} AS runtime
# CA roots for Bedrock (HTTPS) and the Hugging Face Hub; nothing else.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 inferd \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/inferd --create-home inferd
COPY --from=cublas /opt/nvidia/cublas/lib /opt/nvidia/cublas/lib
COPY --from=build /out/inferd /usr/local/bin/inferd
USER 10001:10001
# libcublasLt.so.13 is found through LD_LIBRARY_PATH; libcuda.so.1 through the loader
# cache the NVIDIA container toolkit updates when it mounts the driver.
ENV LD_LIBRARY_PATH=/opt/nvidia/cublas/lib \
    HF_HOME=/var/cache/inferd/hf \
    INFERD_HOST=0.0.0.0 \
    INFERD_PORT=8080 \
    INFERD_LOG_FORMAT=json \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/inferd"]
CMD ["serve", "--models", "/etc/inferd/models.toml"]
