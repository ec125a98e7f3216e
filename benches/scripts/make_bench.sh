#!/usr/bin/env bash
# `make bench`: serve models.toml with a freshly built inferd on a free port, run a short
# sweep with inferd-bench, write bench-results/<timestamp>/, stop the server.
# Expects both binaries built (the Makefile does it). Extra arguments go to inferd-bench
# (e.g. `make bench BENCH_ARGS="--concurrency 1,8 --num-prompts 64"`).
# Environment: CARGO, MODELS_TOML, BENCH_OUT (output directory), BENCH_PORT.
set -euo pipefail

cargo=${CARGO:-cargo}
models_toml=${MODELS_TOML:-models.toml}
target_dir=$("$cargo" metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/release"
out=${BENCH_OUT:-bench-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
port=${BENCH_PORT:-$("$bin/inferd-bench" free-port)}
url="http://127.0.0.1:$port"

echo "starting inferd on $url (log: $out/server.log)"
"$bin/inferd" serve --models "$models_toml" --host 127.0.0.1 --port "$port" >"$out/server.log" 2>&1 &
pid=$!
stop() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap stop EXIT
"$bin/inferd-bench" wait-ready "$url/ready" --timeout 600 --pid "$pid"

# Short enough for a few minutes on 2 CPU cores; the defaults come first so that
# BENCH_ARGS can override any of them.
"$bin/inferd-bench" \
    --target "inferd=$url/v1" --server-pid "$pid" \
    --concurrency 1,4,16 --num-prompts 32 --warmup 2 \
    --input-len 128 --output-len 64 --slo ttft=500,tpot=100 \
    --out "$out" "$@"
