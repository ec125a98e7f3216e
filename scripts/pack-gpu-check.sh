#!/usr/bin/env bash
# Pack what scripts/gpu-check.sh needs on a GPU host that has no Rust and no network:
#
#   scripts/pack-gpu-check.sh [OUT_DIR]     # default dist/gpu-check; `make gpu-pack` builds first
#
# Builds nothing: the binaries come from $TARGET_DIR (default ${CARGO_TARGET_DIR:-target}):
#   release/inferd-cuda             -> bin/inferd        (make build-cuda)
#   release/inferd-bench            -> bin/inferd-bench  (make gpu-pack)
#   release/deps/cuda_parity-<hash> -> bin/cuda_parity   (make gpu-pack; the newest one;
#                                      CUDA_PARITY_BIN=PATH names it instead)
# Each is stripped (when `strip` is on PATH and the file is ELF) and, by default, compressed
# with `xz -9` (gpu-check.sh unpacks bin/NAME.xz with xz, or Python's lzma without it).
# PACK_XZ=always (default) | auto (only when the pack would pass ~60 MiB) | never.
# Beside them: gpu-check.sh, py/ (tests/gpu/*.py but the CPU tests), data/words.txt and
# MANIFEST.txt (commit, date, size and sha256 of every file). Fails when a binary is
# missing, naming it and the make target that builds it, and when the pack passes 64 MiB
# (PACK_LIMIT_MIB): what may travel to the GPU host.
set -euo pipefail

case ${1:-} in
-h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${TARGET_DIR:-${CARGO_TARGET_DIR:-target}}
case $target in /*) ;; *) target="$root/$target" ;; esac
out=${1:-$root/dist/gpu-check}
mode=${PACK_XZ:-always}
limit_mib=${PACK_LIMIT_MIB:-64}
auto_mib=60

die() {
    echo "pack-gpu-check: $*" >&2
    exit 1
}

case $mode in always | auto | never) ;; *) die "PACK_XZ=$mode: expected always, auto or never" ;; esac
command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found"
if [ "$mode" != never ]; then
    command -v xz >/dev/null 2>&1 || die "xz not found (PACK_XZ=never packs uncompressed)"
fi

# ---- The three binaries, before anything is written.
need() { # need PATH MAKE_TARGET
    local also=""
    [ "$2" = gpu-pack ] || also=" (\`make gpu-pack\` builds all three and packs them)"
    if [ ! -f "$1" ] || [ ! -x "$1" ]; then
        die "$1 not found (or not executable): build it with \`make $2\`$also"
    fi
}
inferd_src="$target/release/inferd-cuda"
bench_src="$target/release/inferd-bench"
need "$inferd_src" build-cuda
need "$bench_src" gpu-pack
if [ -n "${CUDA_PARITY_BIN:-}" ]; then
    parity_src=$CUDA_PARITY_BIN
else
    parity_src=""
    if [ -d "$target/release/deps" ]; then
        # the newest executable regular file cuda_parity-<hash> (not the .d dep-info file)
        parity_src=$(find "$target/release/deps" -maxdepth 1 -type f -name 'cuda_parity-*' ! -name '*.*' \
            -perm -u+x -printf '%T@ %p\n' | sort -n | tail -n1 | cut -d' ' -f2-)
    fi
    [ -n "$parity_src" ] || parity_src="$target/release/deps/cuda_parity-<hash>"
fi
need "$parity_src" gpu-pack

# ---- A fresh folder (only ever one this script made, or an empty one, is replaced).
if [ -e "$out" ]; then
    [ -d "$out" ] || die "$out exists and is not a folder"
    if [ -n "$(ls -A "$out")" ] && [ ! -f "$out/MANIFEST.txt" ]; then
        die "$out is not empty and holds no MANIFEST.txt: not a pack, not replacing it"
    fi
    rm -rf "${out:?}"
fi
mkdir -p "$out/bin" "$out/py" "$out/data"
out=$(cd "$out" && pwd)

is_elf() { [ "$(head -c4 "$1" | od -An -c | tr -d ' ')" = "177ELF" ]; }

# Stripped copies first, to decide on compression from their sizes.
for pair in "inferd:$inferd_src" "inferd-bench:$bench_src" "cuda_parity:$parity_src"; do
    name=${pair%%:*}
    src=${pair#*:}
    dst="$out/bin/$name"
    if is_elf "$src" && command -v strip >/dev/null 2>&1; then
        strip -o "$dst" "$src" || { echo "pack-gpu-check: strip failed on $src; packing it unstripped" >&2; cp "$src" "$dst"; }
    else
        cp "$src" "$dst"
    fi
    chmod 755 "$dst"
    echo "pack-gpu-check: bin/$name <- $src ($(stat -c %s "$src") B, $(stat -c %s "$dst") B stripped)"
done

cp "$root/scripts/gpu-check.sh" "$out/gpu-check.sh"
chmod 755 "$out/gpu-check.sh"
for f in "$root"/tests/gpu/*.py; do
    case $(basename "$f") in test_*.py | conftest.py) continue ;; esac
    cp "$f" "$out/py/"
done
[ -f "$out/py/make_model.py" ] || die "tests/gpu/make_model.py not found"
[ -f "$root/benches/data/words.txt" ] || die "$root/benches/data/words.txt not found"
cp "$root/benches/data/words.txt" "$out/data/words.txt"

total_bytes() { find "$out" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }

compress=0
case $mode in
always) compress=1 ;;
auto) [ "$(total_bytes)" -le $((auto_mib * 1024 * 1024)) ] || compress=1 ;;
esac
if [ "$compress" = 1 ]; then
    for name in inferd inferd-bench cuda_parity; do
        echo "pack-gpu-check: xz -9 bin/$name"
        xz -9 -c "$out/bin/$name" >"$out/bin/$name.xz"
        rm "$out/bin/$name"
    done
fi

# ---- MANIFEST.txt: gpu-check.sh reads the `commit` line into its report.
commit=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit-dirty"
fi
{
    echo "commit $commit"
    echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "target $target"
    echo "xz $compress"
    echo "# sha256  bytes  path"
    (cd "$out" && find . -type f ! -name MANIFEST.txt -printf '%P\n' | LC_ALL=C sort | while read -r f; do
        printf '%s  %s  %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"
    done)
} >"$out/MANIFEST.txt"

total=$(total_bytes)
mib=$(awk -v b="$total" 'BEGIN {printf "%.1f", b / 1048576}')
if [ "$total" -gt $((limit_mib * 1024 * 1024)) ]; then
    die "the pack $out is $mib MiB ($total B), over the $limit_mib MiB that may travel to the GPU host"
fi
echo "pack-gpu-check: $out: $mib MiB ($total B) in all, commit $commit"
