#!/usr/bin/env python3
"""The GPU check's one Markdown report (scripts/gpu-check.sh, step f).

    report.py RUN_DIR [--out REPORT.md]

Reads what gpu-check.sh left in RUN_DIR (env.json, steps.tsv, parity.txt + parity.rc,
<shape>/config.json, <shape>/agreement.json, bench/<shape>-<server>-c<N>/results.json)
and writes report.md: the device, driver and software, the kernel parity result, greedy
agreement per model, the throughput figures of inferd and of the transformers peer with
their ratios, each figure's share of the memory-bandwidth roofline, and the issue's
targets as PASS/FAIL lines. Exits 1 when a target fails or was not measured.

Roofline: decoding is bound by reading memory. One decode step of c sequences reads every
bf16 weight once (embedding: one row per token; the LM head in full, tied or not) and each
sequence's KV cache, so at concurrency c with a mean context of T tokens it yields at most
    c x BW / (W + c x T x KV)  tokens/s,
W = weight bytes read per step, KV = KV-cache bytes per token (K and V, every layer),
BW = 4.3e12 B/s (what the H200 was measured to copy). For batch 1 the issue takes the
weights alone: BW / W. Decode rates are c / TPOT (the bench's mean time per output token).

Pure Python, standard library only (the CPU tests run it on made-up results).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BANDWIDTH = 4.3e12  # B/s, H200 device-to-device copy as measured
BF16 = 2
LEVELS = (1, 16, 64)
INPUT_LEN, OUTPUT_LEN = 512, 128
# (shape, label, batch-1 decode target in tok/s)
DECODE_TARGETS = (("8b", "Llama-3.1-8B-shaped", 200.0), ("1b", "Llama-3.2-1B-shaped", 800.0))
PEER_RATIO_TARGET = 2.0  # inferd output tok/s at c=64 over the transformers peer's
SERVERS = ("inferd", "hf")


# ---------------------------------------------------------------- the math


def _dims(cfg: dict[str, Any]) -> tuple[int, int, int, int, int, int, int]:
    h, i, v, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    return h, i, v, n, cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd, hd


def weight_bytes_per_token(cfg: dict[str, Any], dtype_bytes: int = BF16) -> int:
    """Bytes of weights one decode step reads: every layer's projections and norms, the
    final norm, the LM head (vocab x hidden, whether tied or not) and one embedding row."""
    h, i, v, n, q, kv, _ = _dims(cfg)
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    return dtype_bytes * (n * per_layer + h + v * h + h)


def kv_bytes_per_token(cfg: dict[str, Any], dtype_bytes: int = BF16) -> int:
    """KV-cache bytes of one token: K and V of every layer."""
    _, _, _, n, _, kv, _ = _dims(cfg)
    return 2 * n * kv * dtype_bytes


def roofline_tok_s(cfg: dict[str, Any], concurrency: int = 1, context: float = 0.0, bandwidth: float = BANDWIDTH) -> float:
    """Decode tokens/s memory bandwidth allows (see the module doc); context 0 = weights only."""
    w = weight_bytes_per_token(cfg)
    return concurrency * bandwidth / (w + concurrency * context * kv_bytes_per_token(cfg))


def decode_tok_s(summary: dict[str, Any], concurrency: int) -> float | None:
    """concurrency / mean TPOT: the decode rate of the level's streams together."""
    tpot = (summary.get("tpot_ms") or {}).get("mean")
    if not tpot or tpot <= 0:
        return None
    return concurrency * 1000.0 / tpot


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


# ---------------------------------------------------------------- reading a run


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def bench_summary(run: Path, shape: str, server: str, level: int) -> dict[str, Any] | None:
    data = read_json(run / "bench" / f"{shape}-{server}-c{level}" / "results.json")
    if not data or not data.get("results"):
        return None
    return data["results"][0]["summary"]


def parse_parity(text: str, rc: int | None) -> dict[str, Any]:
    """Counts of libtest's output (`test result: ok. 3 passed; 0 failed; ...`, one line per
    test binary) and the names under its `failures:` list."""
    import re

    passed = failed = 0
    seen = False
    for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed", text):
        seen = True
        passed += int(m.group(1))
        failed += int(m.group(2))
    failures: list[str] = []
    blocks = text.split("\nfailures:\n")
    if len(blocks) > 1:
        for line in blocks[-1].splitlines():
            if line.startswith("    ") and line.strip() and " " not in line.strip():
                failures.append(line.strip())
            elif line.strip().startswith("test result:"):
                break
    return {"rc": rc, "passed": passed, "failed": failed if seen else None, "failures": failures, "ran": seen}


def parity(run: Path) -> dict[str, Any] | None:
    path = run / "parity.txt"
    if not path.exists():
        return None
    rc_path = run / "parity.rc"
    rc = int(rc_path.read_text().strip()) if rc_path.exists() and rc_path.read_text().strip() else None
    return parse_parity(path.read_text(errors="replace"), rc)


def steps(run: Path) -> list[list[str]]:
    path = run / "steps.tsv"
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- the report


def fmt(x: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{unit}"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def verdicts(run: Path, configs: dict[str, dict[str, Any]]) -> list[tuple[bool, str]]:
    out: list[tuple[bool, str]] = []
    p = parity(run)
    if p is None:
        out.append((False, "kernel parity: not run"))
    else:
        ok = p["rc"] == 0 and p["failed"] == 0 and p["passed"] > 0
        failed = "?" if p["failed"] is None else p["failed"]
        out.append((ok, f"kernel parity: {p['passed']} passed, {failed} failed (exit {p['rc']})"))
    for shape, label, _ in DECODE_TARGETS:
        agreement = read_json(run / shape / "agreement.json")
        if agreement is None:
            out.append((False, f"{label} greedy agreement: not measured"))
        else:
            seq, con = agreement["sequential"], agreement["concurrent"]
            out.append(
                (
                    bool(agreement["ok"]),
                    f"{label} greedy agreement ({seq['prompts']} prompts, one at a time and all at once): "
                    f"first-step max |dlogprob| {seq['first_step_max_diff']:.4f} / {con['first_step_max_diff']:.4f} "
                    f"≤ {seq['tolerance']:.4f}, {seq['steps_compared']}/{seq['steps_total']} and "
                    f"{con['steps_compared']}/{con['steps_total']} greedy steps equal",
                )
            )
    for shape, label, target in DECODE_TARGETS:
        s = bench_summary(run, shape, "inferd", 1)
        rate = decode_tok_s(s, 1) if s else None
        cfg = configs.get(shape)
        roof = roofline_tok_s(cfg) if cfg else None
        if rate is None:
            out.append((False, f"{label} batch-1 decode ≥ {target:.0f} tok/s: not measured"))
        else:
            out.append(
                (
                    rate >= target,
                    f"{label} batch-1 decode {rate:.1f} tok/s ≥ {target:.0f} "
                    f"({pct(ratio(rate, roof))} of the {fmt(roof)} tok/s roofline)",
                )
            )
    for shape, label, _ in DECODE_TARGETS:
        a, b = bench_summary(run, shape, "inferd", 64), bench_summary(run, shape, "hf", 64)
        r = ratio(a and a.get("output_throughput"), b and b.get("output_throughput"))
        if r is None:
            out.append((False, f"{label} c=64 output tok/s ≥ {PEER_RATIO_TARGET:.0f}× the transformers peer: not measured"))
        else:
            out.append(
                (
                    r >= PEER_RATIO_TARGET,
                    f"{label} c=64 output {a['output_throughput']:.1f} tok/s = {r:.2f}× the transformers peer's "
                    f"{b['output_throughput']:.1f} (≥ {PEER_RATIO_TARGET:.0f}×)",
                )
            )
    return out


def throughput_table(run: Path, shape: str, cfg: dict[str, Any] | None) -> list[str]:
    rows = [
        "| c | server | done/failed | out tok/s | decode tok/s (c/TPOT) | TTFT p50 ms | TPOT p50 ms | ITL p99 ms "
        "| inferd ÷ peer (out tok/s) | share of roofline |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in LEVELS:
        mine = bench_summary(run, shape, "inferd", level)
        peer = bench_summary(run, shape, "hf", level)
        for server, s in (("inferd", mine), ("transformers", peer)):
            if s is None:
                rows.append(f"| {level} | {server} | not measured | | | | | | | |")
                continue
            rate = decode_tok_s(s, level)
            if cfg is None:
                roof = None
            elif level == 1:
                roof = roofline_tok_s(cfg)
            else:
                roof = roofline_tok_s(cfg, level, INPUT_LEN + OUTPUT_LEN / 2)
            r = ""
            if server == "inferd":
                r = fmt(ratio(s.get("output_throughput"), peer and peer.get("output_throughput")), ".2f", "×")
            rows.append(
                f"| {level} | {server} | {s['completed']}/{s['failed']} | {fmt(s.get('output_throughput'))} "
                f"| {fmt(rate)} | {fmt((s.get('ttft_ms') or {}).get('p50'))} | {fmt((s.get('tpot_ms') or {}).get('p50'), '.2f')} "
                f"| {fmt((s.get('itl_ms') or {}).get('p99'), '.2f')} | {r} | {pct(ratio(rate, roof))} |"
            )
    return rows


def render(run: Path) -> tuple[str, bool]:
    env = read_json(run / "env.json") or {}
    configs = {shape: c for shape, _, _ in DECODE_TARGETS if (c := read_json(run / shape / "config.json"))}
    v = verdicts(run, configs)
    ok = all(passed for passed, _ in v)
    lines = ["# inferd GPU check", ""]
    gpu = env.get("gpu") or {}
    lines += [
        f"- when: {env.get('date', '?')}; inferd commit: {env.get('commit', '?')}",
        f"- device: {gpu.get('name', '?')} ({gpu.get('memory', '?')}, compute capability {gpu.get('compute_cap', '?')}); "
        f"driver {gpu.get('driver', '?')}, CUDA {gpu.get('cuda', '?')}",
        f"- host: {env.get('cpu', '?')}, {env.get('cores', '?')} cores; Python {env.get('python', '?')}, "
        f"torch {env.get('torch', '?')}, transformers {env.get('transformers', '?')}",
        f"- RoPE scaling of the models: {env.get('rope_scaling', '?')}",
        "",
        f"## Result: {'PASS' if ok else 'FAIL'}",
        "",
    ]
    lines += [f"- {'PASS' if passed else 'FAIL'} {text}" for passed, text in v]
    lines += ["", "## Kernel parity (CUDA vs the CPU reference)", ""]
    p = parity(run)
    if p:
        lines.append(f"`cuda_parity`: exit {p['rc']}, {p['passed']} passed, {p['failed']} failed.")
        for name in p["failures"]:
            lines.append(f"- failed: `{name}`")
    else:
        lines.append("not run")
    lines += ["", "## Greedy agreement with transformers (bf16, same GPU)", ""]
    lines.append(
        "| model | mode | ok | prompts | first-step max \\|Δ logprob\\| | tolerance | greedy steps equal / compared of |"
    )
    lines.append("|---|---|---|---:|---:|---:|---|")
    for shape, label, _ in DECODE_TARGETS:
        a = read_json(run / shape / "agreement.json")
        if not a:
            lines.append(f"| {label} | – | not measured | | | | |")
            continue
        for mode in ("sequential", "concurrent"):
            r = a[mode]
            lines.append(
                f"| {label} | {mode} | {'yes' if r['ok'] else 'NO'} | {r['prompts']} | {r['first_step_max_diff']:.4f} "
                f"| {r['tolerance']:.4f} | {r['steps_compared']} of {r['steps_total']} |"
            )
        ref = a.get("reference", {})
        lines.append("")
        lines.append(
            f"{label}: tolerance = max({ref.get('tol_factor', '?')} × {fmt(ref.get('calibration_bf16_vs_fp32'), '.4f')} "
            f"(bf16 vs fp32 transformers), 2^-7 × {fmt(ref.get('max_abs_logit'), '.2f')} (largest logit)); tokens are "
            "compared up to the first step whose reference top-2 margin is below it."
        )
        lines.append("")
    lines += [
        "## Throughput (inferd-bench, /v1/completions, 512 prompt tokens, 128 output tokens, ignore_eos)",
        "",
    ]
    for shape, label, _ in DECODE_TARGETS:
        cfg = configs.get(shape)
        lines.append(f"### {label}")
        lines.append("")
        if cfg:
            lines.append(
                f"Weights read per decode step: {weight_bytes_per_token(cfg) / 1e9:.3f} GB (bf16); KV cache "
                f"{kv_bytes_per_token(cfg) / 1024:.0f} KiB per token; batch-1 roofline {roofline_tok_s(cfg):.1f} tok/s at "
                f"{BANDWIDTH / 1e12:.1f} TB/s; at c=16/64 the roofline adds each stream's KV cache at a mean context of "
                f"{INPUT_LEN + OUTPUT_LEN // 2} tokens ({roofline_tok_s(cfg, 16, INPUT_LEN + OUTPUT_LEN / 2):.0f} / "
                f"{roofline_tok_s(cfg, 64, INPUT_LEN + OUTPUT_LEN / 2):.0f} tok/s)."
            )
            lines.append("")
        lines += throughput_table(run, shape, cfg)
        lines.append("")
    lines += ["## Steps", "", "| step | status | seconds | note |", "|---|---|---:|---|"]
    for row in steps(run):
        row = (row + ["", "", "", ""])[:4]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    lines.append("")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="gpu-check.sh's output folder")
    ap.add_argument("--out", type=Path, help="default: RUN/report.md")
    args = ap.parse_args(argv)
    text, ok = render(args.run)
    out = args.out or args.run / "report.md"
    out.write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
