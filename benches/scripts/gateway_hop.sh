#!/usr/bin/env bash
# `make bench-gateway`: what the gateway hop costs. Serves models.toml with one
# `inferd serve` replica, puts `inferd gateway` in front of it (static upstream), and
# measures both targets interleaved in the same run: direct vs through the gateway.
# Extra arguments go to inferd-bench. Environment: CARGO, MODELS_TOML, BENCH_OUT.
set -euo pipefail

cargo=${CARGO:-cargo}
models_toml=${MODELS_TOML:-models.toml}
target_dir=$("$cargo" metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/release"
out=${BENCH_OUT:-bench-results/gateway-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
engine_port=$("$bin/inferd-bench" free-port)
gateway_port=$("$bin/inferd-bench" free-port)
model=$(sed -n 's/^id = "\(.*\)"/\1/p' "$models_toml" | head -1)

# Both targets end at the same engine and send the same prompts: with prefix caching on,
# whichever goes second would find its prompt cached. Turn it off so the only difference
# between the two is the hop. Relative paths are made absolute for the copied catalog.
models_dir=$(cd "$(dirname "$models_toml")" && pwd)
sed -e "s|^path = \"\([^/]\)|path = \"$models_dir/\1|" \
    -e '/^enable_prefix_caching/d' \
    -e 's/^\[\[model\]\]$/[[model]]\nenable_prefix_caching = false/' \
    "$models_toml" >"$out/engine.toml"

cat >"$out/gateway.toml" <<TOML
[[model]]
id = "$model"

[[model.backend]]
type = "replicas"
urls = ["127.0.0.1:$engine_port"]
when_none_ready = "hold"
TOML

"$bin/inferd" serve --models "$out/engine.toml" --host 127.0.0.1 --port "$engine_port" >"$out/engine.log" 2>&1 &
engine=$!
"$bin/inferd" gateway --models "$out/gateway.toml" --host 127.0.0.1 --port "$gateway_port" >"$out/gateway.log" 2>&1 &
gateway=$!
stop() {
    kill -TERM "$gateway" "$engine" 2>/dev/null || true
    wait "$gateway" "$engine" 2>/dev/null || true
}
trap stop EXIT
"$bin/inferd-bench" wait-ready "http://127.0.0.1:$engine_port/ready" --timeout 600 --pid "$engine"
"$bin/inferd-bench" wait-ready "http://127.0.0.1:$gateway_port/ready" --timeout 60 --pid "$gateway"

"$bin/inferd-bench" \
    --target "direct=http://127.0.0.1:$engine_port/v1" \
    --target "gateway=http://127.0.0.1:$gateway_port/v1" \
    --concurrency 1,4 --num-prompts 48 --warmup 4 \
    --input-len 64 --output-len 8 \
    --out "$out" "$@"
