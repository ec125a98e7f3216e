"""What CI checks of the GPU check without a GPU (`make gpu-check-dry`).

scripts/gpu-check.sh on a host with no GPU: it stops at once, says why, and leaves a FAIL
report. scripts/pack-gpu-check.sh on fake binaries: the layout gpu-check.sh expects, the
MANIFEST, the newest parity binary, and clear failures. Nothing here needs a GPU, torch,
Rust or the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU_CHECK = ROOT / "scripts" / "gpu-check.sh"
PACK = ROOT / "scripts" / "pack-gpu-check.sh"
BASH = shutil.which("bash") or "/bin/bash"

# What the two scripts call, linked into a PATH of their own (so nvidia-smi is on it only
# when a test puts it there).
TOOLS = (
    "bash sh env dirname basename mkdir rm cp mv chmod cat head tail sed grep awk cut tr od "
    "sort find stat date xargs ldconfig git sha256sum strip timeout ls seq sleep"
).split()


def tool_path(tmp: Path, *, xz: bool = True, nvidia_smi: str | None = None) -> str:
    """A PATH holding only TOOLS (+ xz when asked, + a fake nvidia-smi with this body)."""
    bindir = Path(tempfile.mkdtemp(prefix="path-bin-", dir=tmp))
    for name in TOOLS + (["xz"] if xz else []):
        found = shutil.which(name)
        if found:
            (bindir / name).symlink_to(found)
    assert not (bindir / "nvidia-smi").exists()
    if nvidia_smi is not None:
        fake = bindir / "nvidia-smi"
        fake.write_text("#!/bin/sh\n" + nvidia_smi + "\n")
        fake.chmod(0o755)
    return str(bindir)


def run(cmd: list[str], env: dict[str, str], timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return res, time.monotonic() - t0


def base_env(tmp: Path, path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR")}
    env["PATH"] = path
    env["GPU_CHECK_WORK"] = str(tmp / "work")
    env["PYTHON"] = sys.executable
    return env


# ---------------------------------------------------------------- gpu-check.sh, no GPU


def test_help_exits_0_and_prints_the_header(tmp_path: Path) -> None:
    res, _ = run([BASH, str(GPU_CHECK), "--help"], base_env(tmp_path, tool_path(tmp_path)))
    assert res.returncode == 0, res.stderr
    assert "The GPU check of inferd's CUDA engine" in res.stdout
    assert "./gpu-check.sh [OUT_DIR]" in res.stdout
    assert "set -euo" not in res.stdout
    assert not (tmp_path / "work").exists()


def assert_no_gpu_failure(res: subprocess.CompletedProcess[str], seconds: float, out: Path, why: str) -> None:
    assert res.returncode != 0, res.stdout + res.stderr
    assert seconds < 15, f"took {seconds:.1f} s to say there is no GPU"
    assert "no NVIDIA GPU visible" in res.stderr
    assert why in res.stderr
    report = (out / "report.md").read_text()
    assert "## Result: FAIL" in report
    assert "no NVIDIA GPU visible" in report
    # stopped before anything else: no step ran, no model or binary was made
    assert not (out / "steps.tsv").exists()
    assert not (out / "logs").exists()


def test_no_nvidia_smi_on_path_fails_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res, seconds = run([BASH, str(GPU_CHECK), str(out)], base_env(tmp_path, tool_path(tmp_path)))
    assert_no_gpu_failure(res, seconds, out, "nvidia-smi is not on PATH")
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    "body",
    [
        "exit 0",  # prints nothing
        "exit 1",
        "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9",
        "echo 'No devices were found'",  # exit 0, no CSV
    ],
    ids=["silent", "exit-1", "driver-error", "no-devices"],
)
def test_nvidia_smi_without_a_gpu_fails_at_once(tmp_path: Path, body: str) -> None:
    out = tmp_path / "out"
    env = base_env(tmp_path, tool_path(tmp_path, nvidia_smi=body))
    res, seconds = run([BASH, str(GPU_CHECK), str(out)], env)
    assert_no_gpu_failure(res, seconds, out, "nvidia-smi found no GPU")


def test_out_dir_from_env_and_default(tmp_path: Path) -> None:
    env = base_env(tmp_path, tool_path(tmp_path))
    env["OUT"] = str(tmp_path / "from-env")
    res, _ = run([BASH, str(GPU_CHECK)], env)
    assert res.returncode != 0
    assert "## Result: FAIL" in (tmp_path / "from-env" / "report.md").read_text()
    del env["OUT"]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = subprocess.run([BASH, str(GPU_CHECK)], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "## Result: FAIL" in (cwd / "gpu-check-out" / "report.md").read_text()


# ---------------------------------------------------------------- pack-gpu-check.sh


def fake_exe(path: Path, text: str, mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {text}\n")
    path.chmod(0o755)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def fake_target(tmp: Path) -> Path:
    """A target dir as `make gpu-pack` leaves it: two parity builds (the newer wins), their
    .d files and an rlib-ish neighbour that must not be taken."""
    target = tmp / "target"
    now = time.time()
    fake_exe(target / "release" / "inferd-cuda", "inferd-cuda")
    fake_exe(target / "release" / "inferd", "cpu-inferd")
    fake_exe(target / "release" / "inferd-bench", "inferd-bench")
    deps = target / "release" / "deps"
    fake_exe(deps / "cuda_parity-0000000000000old", "parity-old", now - 100)
    fake_exe(deps / "cuda_parity-000000000000new", "parity-new", now - 50)
    (deps / "cuda_parity-000000000000new.d").write_text("deps\n")
    os.utime(deps / "cuda_parity-000000000000new.d", (now, now))
    (deps / "libcuda_parity-000000000000new.rmeta").write_text("rmeta\n")
    return target


def pack(tmp: Path, target: Path, out: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = base_env(tmp, tool_path(tmp))
    env["TARGET_DIR"] = str(target)
    env.update(extra)
    res, _ = run([BASH, str(PACK), str(out)], env, timeout=120)
    return res


def unpacked(binary: Path) -> bytes:
    if binary.exists():
        return binary.read_bytes()
    return lzma.open(binary.with_name(binary.name + ".xz")).read()


def check_layout(out: Path, xz: bool) -> None:
    names = ("inferd", "inferd-bench", "cuda_parity")
    for name in names:
        plain, packed = out / "bin" / name, out / "bin" / f"{name}.xz"
        assert packed.exists() == xz and plain.exists() != xz, sorted(p.name for p in (out / "bin").iterdir())
        if not xz:
            assert os.access(plain, os.X_OK)
    assert sorted(p.name for p in (out / "bin").iterdir()) == sorted(n + (".xz" if xz else "") for n in names)
    assert b"echo inferd-cuda" in unpacked(out / "bin" / "inferd")
    assert b"echo inferd-bench" in unpacked(out / "bin" / "inferd-bench")
    assert b"echo parity-new" in unpacked(out / "bin" / "cuda_parity")
    assert os.access(out / "gpu-check.sh", os.X_OK)
    assert (out / "gpu-check.sh").read_bytes() == GPU_CHECK.read_bytes()
    assert (out / "data" / "words.txt").read_bytes() == (ROOT / "benches" / "data" / "words.txt").read_bytes()
    py = sorted(p.name for p in (out / "py").iterdir())
    for helper in ("make_model.py", "greedy_agreement.py", "hf_peer.py", "report.py"):
        assert helper in py
    assert not [p for p in py if p.startswith("test_")], py

    manifest = (out / "MANIFEST.txt").read_text().splitlines()
    commit = [line.split() for line in manifest if line.startswith("commit ")]
    assert len(commit) == 1 and len(commit[0]) == 2
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:
        assert commit[0][1].removesuffix("-dirty") == head
    assert any(line.startswith("date ") for line in manifest)
    listed = {}
    for line in manifest:
        parts = line.split("  ")
        if len(parts) == 3 and not line.startswith("#"):
            listed[parts[2]] = (parts[0], int(parts[1]))
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "MANIFEST.txt"}
    assert set(listed) == files
    for rel, (digest, size) in listed.items():
        data = (out / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest and len(data) == size, rel


def test_pack_layout_xz(tmp_path: Path) -> None:
    out = tmp_path / "pack"
    res = pack(tmp_path, fake_target(tmp_path), out)
    assert res.returncode == 0, res.stderr
    check_layout(out, xz=True)
    assert "MiB" in res.stdout and str(out) in res.stdout


def test_pack_layout_plain_and_repack(tmp_path: Path) -> None:
    out = tmp_path / "pack"
    target = fake_target(tmp_path)
    assert pack(tmp_path, target, out).returncode == 0
    (out / "stale").write_text("from the last pack\n")
    res = pack(tmp_path, target, out, PACK_XZ="never")
    assert res.returncode == 0, res.stderr
    check_layout(out, xz=False)
    assert not (out / "stale").exists()


def test_pack_auto_stays_plain_when_small(tmp_path: Path) -> None:
    out = tmp_path / "pack"
    res = pack(tmp_path, fake_target(tmp_path), out, PACK_XZ="auto")
    assert res.returncode == 0, res.stderr
    check_layout(out, xz=False)


def test_pack_explicit_parity_binary(tmp_path: Path) -> None:
    target = fake_target(tmp_path)
    chosen = tmp_path / "elsewhere" / "cuda_parity-chosen"
    fake_exe(chosen, "parity-new")  # check_layout expects this text
    shutil.rmtree(target / "release" / "deps")
    res = pack(tmp_path, target, tmp_path / "pack", CUDA_PARITY_BIN=str(chosen))
    assert res.returncode == 0, res.stderr
    check_layout(tmp_path / "pack", xz=True)


@pytest.mark.parametrize(
    "missing, named, make_target",
    [
        ("release/inferd-cuda", "release/inferd-cuda", "make build-cuda"),
        ("release/inferd-bench", "release/inferd-bench", "make gpu-pack"),
        ("release/deps", "cuda_parity", "make gpu-pack"),
    ],
)
def test_pack_missing_binary_fails_naming_it(tmp_path: Path, missing: str, named: str, make_target: str) -> None:
    target = fake_target(tmp_path)
    victim = target / missing
    if victim.is_dir():
        shutil.rmtree(victim)
    else:
        victim.unlink()
    out = tmp_path / "pack"
    res = pack(tmp_path, target, out)
    assert res.returncode != 0
    assert named in res.stderr and make_target in res.stderr, res.stderr
    assert not out.exists()


def test_pack_parity_d_file_alone_is_missing(tmp_path: Path) -> None:
    target = fake_target(tmp_path)
    for p in (target / "release" / "deps").glob("cuda_parity-*"):
        if p.suffix != ".d":
            p.unlink()
    res = pack(tmp_path, target, tmp_path / "pack")
    assert res.returncode != 0
    assert "cuda_parity" in res.stderr and "make gpu-pack" in res.stderr


def test_pack_over_the_limit_fails(tmp_path: Path) -> None:
    res = pack(tmp_path, fake_target(tmp_path), tmp_path / "pack", PACK_LIMIT_MIB="0")
    assert res.returncode != 0
    assert "over the 0 MiB" in res.stderr


def test_pack_refuses_to_replace_a_folder_that_is_not_a_pack(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("precious\n")
    res = pack(tmp_path, fake_target(tmp_path), out)
    assert res.returncode != 0
    assert "not a pack" in res.stderr
    assert (out / "keep.txt").read_text() == "precious\n"


# ---------------------------------------------------------------- the pack's gpu-check.sh


def test_packed_gpu_check_help_and_no_gpu(tmp_path: Path) -> None:
    out = tmp_path / "pack"
    assert pack(tmp_path, fake_target(tmp_path), out).returncode == 0
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = base_env(run_dir, tool_path(run_dir))
    res, _ = run([BASH, str(out / "gpu-check.sh"), "--help"], env)
    assert res.returncode == 0 and "The GPU check of inferd's CUDA engine" in res.stdout
    res, seconds = run([BASH, str(out / "gpu-check.sh"), str(tmp_path / "report")], env)
    assert_no_gpu_failure(res, seconds, tmp_path / "report", "nvidia-smi is not on PATH")


@pytest.mark.parametrize("xz", [True, False], ids=["xz", "python-lzma"])
def test_packed_gpu_check_unpacks_the_binaries(tmp_path: Path, xz: bool) -> None:
    """Past the GPU test (a fake nvidia-smi that names one) gpu-check.sh unpacks the pack's
    binaries, with xz or, without it, Python's lzma, then stops for want of the driver's
    library or torch (neither is here), with a FAIL report."""
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is importable here: gpu-check.sh would go on past the unpacking")
    out = tmp_path / "pack"
    assert pack(tmp_path, fake_target(tmp_path), out).returncode == 0
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = base_env(run_dir, tool_path(run_dir, xz=xz, nvidia_smi="echo 'NVIDIA H200, 580.95.05, 143771 MiB, 9.0'"))
    res, _ = run([BASH, str(out / "gpu-check.sh"), str(run_dir / "out")], env)
    assert res.returncode != 0
    assert "GPU 0: NVIDIA H200" in res.stdout
    assert "## Result: FAIL" in (run_dir / "out" / "report.md").read_text()
    assert "libcuda.so.1" in res.stderr or "cannot import torch" in res.stderr, res.stderr
    work_bin = run_dir / "work" / "bin"
    for name, text in (("inferd", "inferd-cuda"), ("inferd-bench", "inferd-bench"), ("cuda_parity", "parity-new")):
        assert os.access(work_bin / name, os.X_OK)
        assert subprocess.run([str(work_bin / name)], capture_output=True, text=True).stdout.strip() == text
