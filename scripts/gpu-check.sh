#!/usr/bin/env bash
# The GPU check of inferd's CUDA engine (issue 11), in one command on a GPU host:
#
#   ./gpu-check.sh [OUT_DIR]          # in the folder scripts/pack-gpu-check.sh made
#
# Needs on the host: an NVIDIA driver with CUDA 13.0 (580+) and a GPU, Python 3 with torch,
# transformers 5.x and tokenizers (the venv's nvidia cuBLAS 13 wheel for libcublasLt.so.13);
# no network, no Rust toolchain: the binaries come prebuilt in the pack. Within about 8
# minutes on an H200 it
#   a) runs the kernel parity tests (cuda_parity: every CUDA kernel vs its CPU spec);
#   b) builds random-weight Llama-3.2-1B- and Llama-3.1-8B-shaped models (bf16, seed 0,
#      save_pretrained) and transformers' greedy reference on this GPU (make_model.py);
#   c) serves each with the CUDA inferd (device = "cuda") and waits for /ready;
#   d) checks greedy agreement with the reference (greedy_agreement.py);
#   e) runs inferd-bench at concurrency 1, 16, 64 (512 prompt / 128 output tokens,
#      ignore_eos) against inferd and against transformers' continuous batching on the
#      same model (hf_peer.py), one server at a time, the same requests for both;
#   f) writes OUT_DIR/report.md (report.py): device, driver, parity, agreement, figures,
#      ratios, roofline shares and the issue's targets as PASS/FAIL lines.
# Exit status: 0 when every step ran and every target passed; 1 otherwise (the report
# says which); 1 at once, before anything else, when no NVIDIA GPU is visible.
#
# OUT_DIR: the argument, else $OUT, else ./gpu-check-out. The models (~19 GB) go to
# $GPU_CHECK_WORK (default ${TMPDIR:-/tmp}/inferd-gpu-check) and are removed at the end
# unless GPU_CHECK_KEEP=1. Other knobs: PYTHON (python3), GPU_CHECK_BUDGET (seconds for
# the whole run, default 470: later steps are skipped, and reported so, past it),
# GPU_CHECK_MODELS ("1b 8b"), GPU_CHECK_ROPE_SCALING (llama3, or none for a build whose
# loader refuses rope_scaling), GPU_CHECK_SKIP ("parity", "peer", ... steps to skip).
set -euo pipefail

case ${1:-} in
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac
start_s=$SECONDS
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-${OUT:-$PWD/gpu-check-out}}
python=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET:-470}
models=${GPU_CHECK_MODELS:-1b 8b}
rope=${GPU_CHECK_ROPE_SCALING:-llama3}
skip=" ${GPU_CHECK_SKIP:-} "
work=${GPU_CHECK_WORK:-${TMPDIR:-/tmp}/inferd-gpu-check}

mkdir -p "$out"
out=$(cd "$out" && pwd)

die() {
    echo "gpu-check: $*" >&2
    printf '# inferd GPU check\n\n## Result: FAIL\n\n- FAIL %s\n' "$*" >"$out/report.md"
    exit 1
}

# ---- 0. A GPU, first of all: nothing below can pass without one.
command -v nvidia-smi >/dev/null 2>&1 \
    || die "no NVIDIA GPU visible: nvidia-smi is not on PATH (no NVIDIA driver on this host, or not mounted into this container)"
if ! gpu_csv=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1) \
    || [ -z "$gpu_csv" ] || ! grep -q ',' <<<"$gpu_csv"; then
    die "no NVIDIA GPU visible: nvidia-smi found no GPU ($gpu_csv)"
fi
gpu_line=$(head -n1 <<<"$gpu_csv")
echo "gpu-check: GPU 0: $gpu_line"

# ---- The pack's layout (scripts/pack-gpu-check.sh), or a checkout's.
if [ -d "$here/py" ]; then
    py="$here/py"
    words="$here/data/words.txt"
    bin_src=${GPU_CHECK_BIN:-$here/bin}
else
    py="$here/../tests/gpu"
    words="$here/../benches/data/words.txt"
    bin_src=${GPU_CHECK_BIN:-$here/../dist/gpu-check/bin}
fi
[ -f "$py/make_model.py" ] || die "tests/gpu/*.py not found beside $0 (run scripts/pack-gpu-check.sh)"
[ -f "$words" ] || die "$words not found"

mkdir -p "$work/bin" "$out/logs" "$out/bench"
bin="$work/bin"
for name in inferd inferd-bench cuda_parity; do
    if [ -x "$bin_src/$name" ]; then
        cp "$bin_src/$name" "$bin/$name"
    elif [ -f "$bin_src/$name.xz" ]; then
        if command -v xz >/dev/null 2>&1; then
            xz -dc "$bin_src/$name.xz" >"$bin/$name"
        else
            "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                "$bin_src/$name.xz" "$bin/$name"
        fi
    else
        die "$bin_src/$name(.xz) not found: pack the binaries with scripts/pack-gpu-check.sh"
    fi
    chmod +x "$bin/$name"
done

# ---- LD_LIBRARY_PATH: the driver's libcuda.so.1 and the venv's libcublasLt.so.13.
ldcache() { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true; }
driver_dir=$(ldcache | awk '/libcuda\.so\.1 /{print $NF; exit}' | xargs -r dirname)
if [ -z "$driver_dir" ]; then
    for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/lib/wsl/lib /usr/lib; do
        if [ -e "$d/libcuda.so.1" ]; then driver_dir=$d; break; fi
    done
fi
[ -n "$driver_dir" ] || die "libcuda.so.1 (the NVIDIA driver's library) not found"
"$python" -c 'import torch, transformers, tokenizers' 2>"$out/logs/python.log" \
    || die "$python cannot import torch, transformers and tokenizers: $(tail -n1 "$out/logs/python.log")"
lib_dirs=$("$python" - <<'PY'
import glob, os
dirs = []
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
import torch
roots.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
for root in roots:
    for lib in sorted(glob.glob(os.path.join(root, "**", "lib*.so*"), recursive=True)):
        d = os.path.dirname(lib)
        if d not in dirs:
            dirs.append(d)
# the cuBLAS 13 directory first
dirs.sort(key=lambda d: not glob.glob(os.path.join(d, "libcublasLt.so.13")))
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH="${lib_dirs:+$lib_dirs:}$driver_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cublas=""
IFS=: read -r -a ld_dirs <<<"$LD_LIBRARY_PATH"
for d in "${ld_dirs[@]}"; do
    if [ -e "$d/libcublasLt.so.13" ]; then cublas="$d/libcublasLt.so.13"; break; fi
done
if [ -z "$cublas" ]; then
    cublas=$(ldcache | awk '/libcublasLt\.so\.13 /{print $NF; exit}')
fi
[ -n "$cublas" ] || die "libcublasLt.so.13 not found (pip's nvidia-cublas 13.x wheel, as torch's CUDA 13 build brings)"
"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || die "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
echo "gpu-check: libcuda from $driver_dir, cuBLASLt $cublas"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
unset INFERD_DEVICE

# ---- Book-keeping: every step is a row of steps.tsv; the report is written on any exit.
: >"$out/steps.tsv"
pids=()
left() { echo $((budget - (SECONDS - start_s))); }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$out/steps.tsv"; }
failures=0

# step NAME TIMEOUT CMD...: run CMD with its output in logs/NAME.log, within the budget.
step() {
    local name=$1 limit=$2 t0 rc
    shift 2
    if [[ $skip == *" $name "* || $skip == *" ${name%%-*} "* ]]; then
        record "$name" skipped 0 "GPU_CHECK_SKIP"
        return 1
    fi
    local remaining
    remaining=$(($(left) - 15))
    if [ "$remaining" -lt 20 ]; then
        record "$name" skipped 0 "out of time (GPU_CHECK_BUDGET=$budget s)"
        failures=$((failures + 1))
        return 1
    fi
    [ "$limit" -le "$remaining" ] || limit=$remaining
    echo "gpu-check: $name (up to ${limit}s)"
    t0=$SECONDS
    rc=0
    timeout --kill-after=10 "$limit" "$@" >"$out/logs/$name.log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        record "$name" ok $((SECONDS - t0)) "$(tail -n1 "$out/logs/$name.log" | cut -c1-200)"
        return 0
    fi
    local why="exit $rc"
    [ "$rc" -eq 124 ] && why="timed out after ${limit}s"
    record "$name" failed $((SECONDS - t0)) "$why: $(tail -n1 "$out/logs/$name.log" | cut -c1-200)"
    echo "gpu-check: $name failed ($why); see logs/$name.log" >&2
    failures=$((failures + 1))
    return 1
}

stop_servers() {
    local pid
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}

finish() {
    local rc=$?
    stop_servers
    [ "${GPU_CHECK_KEEP:-0}" = 1 ] || rm -rf "${work:?}/1b" "${work:?}/8b" "${work:?}/bin"
    for log in "$out"/logs/*.log; do
        if [ -f "$log" ] && [ "$(stat -c %s "$log")" -gt 2000000 ]; then
            tail -c 2000000 "$log" >"$log.tail"
            mv "$log.tail" "$log"
        fi
    done
    local report_rc=0
    "$python" "$py/report.py" "$out" >/dev/null || report_rc=$?
    echo "gpu-check: report: $out/report.md ($((SECONDS - start_s)) s)"
    sed -n '/^## Result/,/^## Kernel/p' "$out/report.md" | sed '$d'
    if [ "$rc" -ne 0 ] || [ "$report_rc" -ne 0 ] || [ "$failures" -ne 0 ]; then
        exit 1
    fi
    exit 0
}
trap finish EXIT

# ---- What the report says about the run.
commit=unknown
[ -f "$here/MANIFEST.txt" ] && commit=$(awk '/^commit /{print $2; exit}' "$here/MANIFEST.txt")
[ "$commit" = unknown ] && commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
cuda_version=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n1)
GPU_LINE="$gpu_line" CUDA_VERSION="$cuda_version" COMMIT="$commit" ROPE="$rope" "$python" - "$out/env.json" <<'PY'
import json, os, platform, sys, time
import torch, transformers
name, driver, memory, cap = [x.strip() for x in os.environ["GPU_LINE"].split(",")][:4]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
env = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "commit": os.environ["COMMIT"],
    "gpu": {"name": name, "driver": driver, "memory": memory, "compute_cap": cap, "cuda": os.environ["CUDA_VERSION"]},
    "cpu": cpu,
    "cores": os.cpu_count(),
    "python": platform.python_version(),
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "rope_scaling": os.environ["ROPE"],
    "ld_library_path": os.environ.get("LD_LIBRARY_PATH", ""),
}
json.dump(env, open(sys.argv[1], "w"), indent=2)
PY

# ---- a) kernel parity.
parity_rc=0
t0=$SECONDS
if [[ $skip == *" parity "* ]]; then
    record parity skipped 0 GPU_CHECK_SKIP
else
    echo "gpu-check: parity"
    timeout --kill-after=10 150 "$bin/cuda_parity" >"$out/parity.txt" 2>&1 || parity_rc=$?
    echo "$parity_rc" >"$out/parity.rc"
    status=ok
    [ "$parity_rc" -eq 0 ] || { status=failed; failures=$((failures + 1)); }
    record parity "$status" $((SECONDS - t0)) "$(grep 'test result' "$out/parity.txt" | tail -n1)"
fi

name_of() { case $1 in 1b) echo llama-3.2-1b-random ;; 8b) echo llama-3.1-8b-random ;; esac; }

# ---- b) the models and transformers' reference.
for shape in $models; do
    mkdir -p "$out/$shape"
    if step "make-$shape" 240 "$python" "$py/make_model.py" --shape "$shape" --out "$work/$shape" \
        --words "$words" --rope-scaling "$rope" --reference "$out/$shape/reference.json"; then
        cp "$work/$shape/config.json" "$out/$shape/config.json"
    fi
done

port=$("$bin/inferd-bench" free-port)

# serve NAME SHAPE CMD...: start a server in the background, wait until it answers.
serve() {
    local name=$1 ready=$2 limit=$3
    shift 3
    echo "gpu-check: start $name"
    "$@" >"$out/logs/$name.log" 2>&1 &
    pids+=("$!")
    step "$name-ready" "$limit" "$bin/inferd-bench" wait-ready "$ready" --timeout "$limit" --pid "$!"
}

# bench SHAPE SERVER URL PID: the three levels; the same seed (requests) for both servers.
bench() {
    local shape=$1 server=$2 url=$3 pid=$4 c n
    for c in 1 16 64; do
        case $c in 1) n=8 ;; 16) n=32 ;; *) n=64 ;; esac
        step "bench-$shape-$server-c$c" 150 "$bin/inferd-bench" --target "$server=$url,pid=$pid" \
            --endpoint completions --input-len 512 --output-len 128 --ignore-eos true \
            --temperature 0 --concurrency "$c" --num-prompts "$n" --warmup 2 --seed "$c" \
            --timeout 120 --no-progress --out "$out/bench/$shape-$server-c$c" || true
    done
}

# ---- c), d), e) inferd: one model at a time, alone on the GPU.
for shape in $models; do
    if [ ! -d "$work/$shape" ] || [ ! -f "$out/$shape/reference.json" ]; then
        record "inferd-$shape" skipped 0 "no model (make-$shape did not finish)"
        failures=$((failures + 1))
        continue
    fi
    id=$(name_of "$shape")
    cat >"$work/$shape.toml" <<EOF
[[model]]
id = "$id"
path = "$work/$shape"
device = "cuda"
max_model_len = 2048
max_num_seqs = 64
max_num_batched_tokens = 8192
EOF
    cp "$work/$shape.toml" "$out/$shape/models.toml"
    if serve "inferd-$shape" "http://127.0.0.1:$port/ready" 240 \
        "$bin/inferd" serve --models "$work/$shape.toml" --host 127.0.0.1 --port "$port" --drain-timeout-secs 5; then
        pid=${pids[-1]}
        step "agreement-$shape" 120 "$python" "$py/greedy_agreement.py" compare --url "http://127.0.0.1:$port/v1" \
            --model-id "$id" --model-dir "$work/$shape" --reference "$out/$shape/reference.json" \
            --out "$out/$shape/agreement.json" || true
        bench "$shape" inferd "http://127.0.0.1:$port/v1" "$pid"
    fi
    stop_servers
done

# ---- e) the transformers peer on the same models and requests.
for shape in $models; do
    [[ $skip == *" peer "* ]] && { record "peer-$shape" skipped 0 GPU_CHECK_SKIP; continue; }
    [ -d "$work/$shape" ] || continue
    if serve "peer-$shape" "http://127.0.0.1:$port/health" 240 \
        "$python" "$py/hf_peer.py" --model "$work/$shape" --port "$port" --served-name "$(name_of "$shape")"; then
        bench "$shape" hf "http://127.0.0.1:$port/v1" "${pids[-1]}"
    fi
    stop_servers
done
# f) report.md: written by finish() on the way out.
