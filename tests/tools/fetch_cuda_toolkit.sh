#!/usr/bin/env bash
# Installs the CUDA 13.0 compiler toolchain inferd's `cuda` feature builds with (nvcc, ptxas,
# fatbinary, cicc/libnvvm, headers, CCCL), from pinned PyPI wheels by package name, verified by
# sha256, into one folder (default ~/.cache/inferd/cuda-13.0, outside the clone), laid out as a
# CUDA_HOME: bin/nvcc, include/, lib/, nvvm/. Idempotent: a complete install is left as is.
# 13.0, not newer: the GPU hosts run driver 580 (CUDA 13.0), which cannot load code from a
# newer toolkit.
set -euo pipefail
dest=${1:-$HOME/.cache/inferd/cuda-13.0}
python=${PYTHON:-python3}
stamp="$dest/.inferd-toolkit-v1"

# package version sha256 of the manylinux x86_64 wheel
WHEELS=(
  "nvidia-cuda-nvcc 13.0.88 56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
  "nvidia-nvvm 13.0.88 c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
  "nvidia-cuda-crt 13.0.88 2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
  "nvidia-cuda-runtime 13.0.96 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-cccl 13.0.85 e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
)

if [ -f "$stamp" ] && [ -x "$dest/bin/nvcc" ]; then
  echo "CUDA toolkit: $dest (cached)"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
reqs="$tmp/requirements.txt"
for w in "${WHEELS[@]}"; do
  read -r pkg ver sha <<<"$w"
  echo "$pkg==$ver --hash=sha256:$sha" >>"$reqs"
done
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 --python-version 3.11 \
  -d "$tmp/wheels" -r "$reqs"

rm -rf "$dest.part"
mkdir -p "$dest.part"
# Every wheel puts its files under nvidia/cu13/; merge them into one CUDA_HOME.
"$python" - "$tmp/wheels" "$dest.part" <<'PY'
import os, stat, sys, zipfile, glob
wheels, target = sys.argv[1:3]
prefix = "nvidia/cu13/"
for whl in sorted(glob.glob(os.path.join(wheels, "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            out = os.path.join(target, info.filename[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                dst.write(src.read())
            mode = (info.external_attr >> 16) & 0o777
            if mode & 0o111 or "/bin/" in "/" + info.filename[len(prefix):]:
                os.chmod(out, mode | 0o755)
PY
# nvcc finds libnvvm as lib64/ in some layouts; the wheels ship lib/.
[ -e "$dest.part/lib64" ] || ln -s lib "$dest.part/lib64"
"$dest.part/bin/nvcc" --version >/dev/null
rm -rf "$dest"
mv "$dest.part" "$dest"
touch "$stamp"
echo "CUDA toolkit: $dest ($("$dest/bin/nvcc" --version | tail -1))"
