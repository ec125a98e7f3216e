"""report.py on made-up runs: the roofline math, libtest parsing and the PASS/FAIL lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import report

# Llama-3.2-1B's and Llama-3.1-8B's shapes (as make_model.py builds them).
CFG_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "vocab_size": 128256,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
}
CFG_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
}


def test_weight_bytes_match_the_published_parameter_counts() -> None:
    # Llama-3.2-1B: 1.236e9 parameters with the embedding tied to the LM head; a decode step
    # reads all of them once plus one embedding row.
    w = report.weight_bytes_per_token(CFG_1B)
    assert w % 2 == 0
    assert w / 2 == 1_235_814_400 + 2048
    # Llama-3.1-8B: 8_030_261_248 parameters, the embedding untied (the step reads one row).
    assert report.weight_bytes_per_token(CFG_8B) / 2 == 8_030_261_248 - 128256 * 4096 + 4096


def test_kv_bytes_per_token() -> None:
    assert report.kv_bytes_per_token(CFG_1B) == 32 * 1024  # 2 x 16 layers x 512 x bf16
    assert report.kv_bytes_per_token(CFG_8B) == 128 * 1024
    assert report.kv_bytes_per_token(CFG_8B, dtype_bytes=1) == 64 * 1024


def test_roofline() -> None:
    w = report.weight_bytes_per_token(CFG_1B)
    assert report.roofline_tok_s(CFG_1B) == pytest.approx(4.3e12 / w)
    assert report.roofline_tok_s(CFG_1B, bandwidth=1e12) == pytest.approx(1e12 / w)
    kv = report.kv_bytes_per_token(CFG_1B)
    assert report.roofline_tok_s(CFG_1B, 16, 576) == pytest.approx(16 * 4.3e12 / (w + 16 * 576 * kv))
    # more streams: more tokens per second, each slower
    assert report.roofline_tok_s(CFG_1B, 64, 576) > report.roofline_tok_s(CFG_1B, 16, 576)
    assert report.roofline_tok_s(CFG_1B, 64, 576) / 64 < report.roofline_tok_s(CFG_1B)


def test_decode_rate_and_ratio() -> None:
    assert report.decode_tok_s({"tpot_ms": {"mean": 5.0}}, 16) == pytest.approx(3200.0)
    assert report.decode_tok_s({"tpot_ms": {"mean": 0}}, 1) is None
    assert report.decode_tok_s({"tpot_ms": None}, 1) is None
    assert report.decode_tok_s({}, 1) is None
    assert report.ratio(3.0, 1.5) == 2.0
    assert report.ratio(None, 1.0) is None and report.ratio(1.0, None) is None and report.ratio(1.0, 0.0) is None


LIBTEST_FAILED = """
running 3 tests
test attention::decode ... ok
test linear::bf16 ... FAILED
test rmsnorm::basic ... ok

failures:

---- linear::bf16 stdout ----
thread 'linear::bf16' panicked at kernels/tests/cuda_parity/linear.rs:10:5:
max diff 0.5 > 0.01

failures:
    linear::bf16

test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.52s
"""


def test_parse_parity() -> None:
    p = report.parse_parity(LIBTEST_FAILED, 101)
    assert p == {"rc": 101, "passed": 2, "failed": 1, "failures": ["linear::bf16"], "ran": True}
    ok = "test result: ok. 5 passed; 0 failed; 0 ignored\ntest result: ok. 2 passed; 0 failed; 0 ignored\n"
    assert report.parse_parity(ok, 0) == {"rc": 0, "passed": 7, "failed": 0, "failures": [], "ran": True}
    crashed = report.parse_parity("error while loading shared libraries: libcuda.so.1\n", 127)
    assert crashed["ran"] is False and crashed["failed"] is None and crashed["passed"] == 0


# ---------------------------------------------------------------- a whole made-up run


def summary(out_tok_s: float, tpot_ms: float, completed: int = 8) -> dict[str, Any]:
    return {
        "completed": completed,
        "failed": 0,
        "output_throughput": out_tok_s,
        "tpot_ms": {"mean": tpot_ms, "p50": tpot_ms},
        "ttft_ms": {"p50": 40.0},
        "itl_ms": {"p99": tpot_ms * 2},
    }


def agreement(ok: bool = True) -> dict[str, Any]:
    mode = {"ok": ok, "prompts": 16, "first_step_max_diff": 0.02, "tolerance": 0.05, "steps_compared": 500, "steps_total": 512}
    return {
        "ok": ok,
        "model": "x",
        "reference": {"tol_factor": 2.0, "calibration_bf16_vs_fp32": 0.025, "max_abs_logit": 3.0},
        "sequential": mode,
        "concurrent": mode,
    }


def write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def passing_run(run: Path) -> None:
    write(run / "env.json", {"date": "today", "commit": "abc123", "gpu": {"name": "NVIDIA H200", "memory": "143771 MiB"}})
    write(run / "steps.tsv", "parity\tok\t3\ttest result: ok\nmake-1b\tok\t20\tsaved | done\n")
    write(run / "parity.txt", "test result: ok. 12 passed; 0 failed; 0 ignored\n")
    write(run / "parity.rc", "0\n")
    # batch-1 decode: 1b at 1 ms/token (1000 tok/s >= 800), 8b at 4 ms (250 >= 200)
    for shape, cfg, tpot1 in (("1b", CFG_1B, 1.0), ("8b", CFG_8B, 4.0)):
        write(run / shape / "config.json", cfg)
        write(run / shape / "agreement.json", agreement())
        for level in report.LEVELS:
            for server, out_tok_s in (("inferd", 3000.0 * level), ("hf", 1000.0 * level)):
                s = summary(out_tok_s, tpot1 * (1 if server == "inferd" else 3))
                write(run / "bench" / f"{shape}-{server}-c{level}" / "results.json", {"results": [{"summary": s}]})


def test_render_a_passing_run(tmp_path: Path) -> None:
    passing_run(tmp_path)
    text, ok = report.render(tmp_path)
    assert ok, text
    assert "## Result: PASS" in text and "FAIL" not in text
    assert "kernel parity: 12 passed, 0 failed (exit 0)" in text
    assert "Llama-3.2-1B-shaped batch-1 decode 1000.0 tok/s ≥ 800" in text
    assert "Llama-3.1-8B-shaped batch-1 decode 250.0 tok/s ≥ 200" in text
    assert "= 3.00× the transformers peer's" in text
    assert "NVIDIA H200" in text and "abc123" in text
    assert "saved \\| done" in text  # a | in a step's note does not break the table
    roof = report.roofline_tok_s(CFG_1B)
    assert f"{100 * 1000.0 / roof:.1f} % of the {roof:.1f} tok/s roofline" in text


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda run: (run / "parity.rc").write_text("101\n"), "FAIL kernel parity"),
        (lambda run: (run / "parity.txt").unlink(), "FAIL kernel parity: not run"),
        (lambda run: write(run / "8b" / "agreement.json", agreement(ok=False)), "FAIL Llama-3.1-8B-shaped greedy agreement"),
        (lambda run: (run / "1b" / "agreement.json").unlink(), "FAIL Llama-3.2-1B-shaped greedy agreement: not measured"),
        (
            lambda run: write(
                run / "bench" / "8b-inferd-c1" / "results.json", {"results": [{"summary": summary(100.0, 10.0)}]}
            ),
            "FAIL Llama-3.1-8B-shaped batch-1 decode 100.0 tok/s ≥ 200",
        ),
        (
            lambda run: write(run / "bench" / "1b-hf-c64" / "results.json", {"results": []}),
            "FAIL Llama-3.2-1B-shaped c=64 output tok/s ≥ 2× the transformers peer: not measured",
        ),
        (
            lambda run: write(
                run / "bench" / "1b-hf-c64" / "results.json", {"results": [{"summary": summary(150000.0, 3.0)}]}
            ),
            "FAIL Llama-3.2-1B-shaped c=64 output",
        ),
    ],
    ids=["parity-exit", "parity-missing", "agreement-failed", "agreement-missing", "decode-slow", "peer-missing", "peer-ratio"],
)
def test_render_fails_each_target(tmp_path: Path, breakage: Any, expected: str) -> None:
    passing_run(tmp_path)
    breakage(tmp_path)
    text, ok = report.render(tmp_path)
    assert not ok
    assert "## Result: FAIL" in text
    assert expected in text, text


def test_main_writes_report_md_and_exits_1_on_an_empty_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path)]) == 1
    text = (tmp_path / "report.md").read_text()
    assert "## Result: FAIL" in text and "not measured" in text and "not run" in text
    passing_run(tmp_path)
    assert report.main([str(tmp_path), "--out", str(tmp_path / "r.md")]) == 0
    assert "## Result: PASS" in (tmp_path / "r.md").read_text()
    assert "## Result: PASS" in capsys.readouterr().out
