#!/usr/bin/env python3
"""Greedy agreement of inferd with transformers on the GPU (scripts/gpu-check.sh, step d).

The reference (`compute_reference`, run by make_model.py on the model it just built): for
each prompt (token ids), transformers' bf16 forward on the GPU, greedy for `steps` tokens
with its KV cache; per step the chosen token and the top-2 margin of the logits; the
first step's log-probabilities. The bf16 tolerance is calibrated on the same model: the
largest difference between the first-step log-probabilities of the bf16 model and of the
same weights in fp32, times `TOL_FACTOR` (2: if inferd's bf16 is as accurate as
transformers', both are within that error of fp32, so within twice it of each other),
never below one bf16 ulp of the largest logit (2^-7 |logit|max).

The check (`compare`): the same prompts through inferd's /v1/completions (prompt as token
ids, temperature 0, ignore_eos, logprobs 20), once one request at a time and once all at
once (ragged batches). Per prompt:
- first step: every one of inferd's 20 top log-probabilities within the tolerance of the
  reference's log-probability of the same token;
- tokens: equal to the reference's up to (not including) the first step whose top-2
  margin in the reference is below the tolerance; from there the two may legitimately
  diverge, so nothing after is compared.

`first_step_max_diff` and `token_agreement` are pure Python (tested on the CPU).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import random
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

TOL_FACTOR = 2.0
BF16_ULP = 2.0**-7  # relative spacing of bf16 at its coarsest
TOP_KEEP = 512  # reference log-probabilities kept per prompt (the rest are below the floor)
LOGPROBS = 20  # inferd's (and vLLM's) maximum
PROMPT_LENGTHS = [1, 2, 5, 15, 16, 17, 33, 64, 100, 127, 128, 255, 300, 513, 700, 1000]


# ---------------------------------------------------------------- the rule (pure Python)


def tolerance(calibration: float, max_abs_logit: float, factor: float = TOL_FACTOR) -> float:
    """The bf16 tolerance: `factor` x the bf16-vs-fp32 difference measured on the model,
    at least one bf16 ulp of the largest logit."""
    if calibration < 0 or max_abs_logit < 0 or not math.isfinite(calibration):
        raise ValueError("calibration and max_abs_logit must be finite and >= 0")
    return max(factor * calibration, BF16_ULP * max_abs_logit)


def first_step_max_diff(
    ref_top: dict[int, float],
    ref_floor: float,
    got_top: Iterable[tuple[list[int], float]],
) -> float:
    """Largest |inferd - reference| first-step log-probability over inferd's candidates.

    `ref_top`: the reference's best log-probabilities by id; every other id has one at most
    `ref_floor`. `got_top`: inferd's (ids the token text may stand for, log-probability);
    a text standing for several ids is compared with the closest of them. A candidate none
    of whose ids the reference kept differs by at least `lp - ref_floor` (0 if inferd
    puts it below the floor too)."""
    worst = 0.0
    for ids, lp in got_top:
        known = [ref_top[i] for i in ids if i in ref_top]
        if known:
            diff = min(abs(lp - r) for r in known)
        else:
            diff = max(0.0, lp - ref_floor)
        worst = max(worst, diff)
    return worst


def token_agreement(
    ref_tokens: list[Any], ref_margins: list[float], got_tokens: list[Any], tol: float
) -> dict[str, Any]:
    """Compare greedy tokens up to the first step whose reference top-2 margin is below
    `tol`. Returns ok, compared (steps checked), stop ("margin" at that step, "end"), and
    the first mismatch (step, reference, got) when not ok."""
    if len(ref_tokens) != len(ref_margins):
        raise ValueError("one margin per reference token")
    for step, (want, margin) in enumerate(zip(ref_tokens, ref_margins)):
        if margin < tol:
            return {"ok": True, "compared": step, "stop": "margin", "stop_step": step}
        got = got_tokens[step] if step < len(got_tokens) else None
        if got != want:
            return {"ok": False, "compared": step, "stop": "mismatch", "mismatch": [step, want, got]}
    return {"ok": True, "compared": len(ref_tokens), "stop": "end"}


# ---------------------------------------------------------------- prompts and tokens


def make_prompts(n: int, word_ids: list[int], bos: int = 128000, seed: int = 0) -> list[list[int]]:
    """`n` (>= 8) prompts of token ids: BOS, then random word tokens, of the lengths in
    PROMPT_LENGTHS (block boundaries at 16, several blocks, up to 1000 tokens)."""
    if n < 8:
        raise ValueError("at least 8 prompts")
    rng = random.Random(seed)
    lengths = [PROMPT_LENGTHS[i % len(PROMPT_LENGTHS)] for i in range(n)]
    return [[bos] + [rng.choice(word_ids) for _ in range(length - 1)] for length in lengths]


def byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in -> byte (the table inferd's logprobs use)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_texts(tokenizer_json: dict[str, Any]) -> dict[int, str]:
    """id -> the text inferd reports for it in logprobs: the byte-level bytes of the piece
    (lossy UTF-8), or the piece itself when it is not byte-level."""
    table = byte_decoder()
    pieces: dict[int, str] = {i: p for p, i in tokenizer_json["model"]["vocab"].items()}
    for t in tokenizer_json.get("added_tokens", []):
        pieces[t["id"]] = t["content"]
    out = {}
    for i, piece in pieces.items():
        if all(c in table for c in piece):
            out[i] = bytes(table[c] for c in piece).decode("utf-8", "replace")
        else:
            out[i] = piece
    return out


def ids_by_text(texts: dict[int, str]) -> dict[str, list[int]]:
    by: dict[str, list[int]] = {}
    for i, t in sorted(texts.items()):
        by.setdefault(t, []).append(i)
    return by


# ---------------------------------------------------------------- the reference (torch)


def compute_reference(model: Any, prompts: list[list[int]], steps: int) -> dict[str, Any]:
    """Greedy tokens, top-2 margins and first-step log-probabilities of `model` (bf16, on
    the GPU), then the bf16-vs-fp32 calibration (the model is left in fp32)."""
    import torch

    dev = next(model.parameters()).device
    tokens, margins, first_top, floors, firsts = [], [], [], [], []
    max_abs_logit = 0.0
    t0 = time.monotonic()
    with torch.inference_mode():
        for prompt in prompts:
            res = model(input_ids=torch.tensor([prompt], device=dev), use_cache=True, logits_to_keep=1)
            logits = res.logits[0, -1].float()
            past = res.past_key_values
            lp = torch.log_softmax(logits, dim=-1)
            firsts.append(lp)
            max_abs_logit = max(max_abs_logit, float(logits.abs().max()))
            top = torch.topk(lp, TOP_KEEP)
            first_top.append([[int(i), float(v)] for v, i in zip(top.values, top.indices)])
            floors.append(float(top.values[-1]))
            toks, gaps = [], []
            for step in range(steps):
                best = torch.topk(logits, 2)
                tok = int(best.indices[0])
                toks.append(tok)
                gaps.append(float(best.values[0] - best.values[1]))
                if step + 1 == steps:
                    break
                res = model(
                    input_ids=torch.tensor([[tok]], device=dev),
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                )
                past = res.past_key_values
                logits = res.logits[0, -1].float()
            tokens.append(toks)
            margins.append(gaps)
            del past, res
        t1 = time.monotonic()
        torch.cuda.empty_cache()
        model.float()
        calibration = 0.0
        for prompt, lp16 in zip(prompts, firsts):
            res = model(input_ids=torch.tensor([prompt], device=dev), logits_to_keep=1)
            lp32 = torch.log_softmax(res.logits[0, -1].float(), dim=-1)
            calibration = max(calibration, float((lp32 - lp16).abs().max()))
    tol = tolerance(calibration, max_abs_logit)
    return {
        "prompts": prompts,
        "steps": steps,
        "tokens": tokens,
        "margins": margins,
        "first_top": first_top,
        "first_floor": floors,
        "calibration_bf16_vs_fp32": calibration,
        "max_abs_logit": max_abs_logit,
        "tol_factor": TOL_FACTOR,
        "tolerance": tol,
        "reference_seconds": round(t1 - t0, 2),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev),
    }


# ---------------------------------------------------------------- inferd


def post_json(url: str, body: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"HTTP {e.code} from {url}: {e.read()[:500]!r}") from e


def ask_inferd(base_url: str, model_id: str, prompt: list[int], steps: int) -> dict[str, Any]:
    body = {
        "model": model_id,
        "prompt": prompt,
        "max_tokens": steps,
        "temperature": 0,
        "ignore_eos": True,
        "logprobs": LOGPROBS,
    }
    r = post_json(f"{base_url}/completions", body)
    lp = r["choices"][0]["logprobs"]
    return {"tokens": lp["tokens"], "top0": lp["top_logprobs"][0] if lp["top_logprobs"] else {}}


def judge(ref: dict[str, Any], answers: list[dict[str, Any]], texts: dict[int, str]) -> dict[str, Any]:
    """Apply the rule to inferd's answers (token texts) against the reference (ids)."""
    by_text = ids_by_text(texts)
    tol = ref["tolerance"]
    per_prompt = []
    for k, answer in enumerate(answers):
        ref_top = {i: v for i, v in ref["first_top"][k]}
        got_top = [(by_text.get(t, []), float(v)) for t, v in answer["top0"].items()]
        diff = first_step_max_diff(ref_top, ref["first_floor"][k], got_top)
        want = [texts.get(i, f"<id {i}>") for i in ref["tokens"][k]]
        agree = token_agreement(want, ref["margins"][k], answer["tokens"], tol)
        per_prompt.append(
            {
                "prompt_len": len(ref["prompts"][k]),
                "first_step_max_diff": diff,
                "first_step_ok": diff <= tol and len(got_top) > 0,
                **agree,
            }
        )
    ok = all(p["ok"] and p["first_step_ok"] for p in per_prompt)
    return {
        "ok": ok,
        "tolerance": tol,
        "prompts": len(per_prompt),
        "first_step_max_diff": max(p["first_step_max_diff"] for p in per_prompt),
        "steps_compared": sum(p["compared"] for p in per_prompt),
        "steps_total": sum(len(t) for t in ref["tokens"]),
        "per_prompt": per_prompt,
    }


def compare(args: argparse.Namespace) -> int:
    ref = json.loads(args.reference.read_text())
    texts = token_texts(json.loads((args.model_dir / "tokenizer.json").read_text()))
    prompts, steps = ref["prompts"], ref["steps"]
    result: dict[str, Any] = {"model": ref.get("model"), "reference": {
        k: ref[k] for k in ("calibration_bf16_vs_fp32", "max_abs_logit", "tol_factor", "tolerance", "device", "torch")
        if k in ref
    }}
    t0 = time.monotonic()
    sequential = [ask_inferd(args.url, args.model_id, p, steps) for p in prompts]
    t1 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        together = list(pool.map(lambda p: ask_inferd(args.url, args.model_id, p, steps), prompts))
    t2 = time.monotonic()
    result["sequential"] = judge(ref, sequential, texts) | {"seconds": round(t1 - t0, 2)}
    result["concurrent"] = judge(ref, together, texts) | {"seconds": round(t2 - t1, 2)}
    result["ok"] = result["sequential"]["ok"] and result["concurrent"]["ok"]
    args.out.write_text(json.dumps(result, indent=2))
    for mode in ("sequential", "concurrent"):
        r = result[mode]
        print(
            f"{result['model']} {mode}: {'ok' if r['ok'] else 'FAILED'}; {r['prompts']} prompts, "
            f"first-step max |dlogprob| {r['first_step_max_diff']:.4f} (tolerance {r['tolerance']:.4f}), "
            f"{r['steps_compared']}/{r['steps_total']} greedy steps compared",
            flush=True,
        )
    return 0 if result["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="check a running inferd against a reference")
    c.add_argument("--url", required=True, help="inferd's base URL, e.g. http://127.0.0.1:8080/v1")
    c.add_argument("--model-id", required=True)
    c.add_argument("--model-dir", type=Path, required=True, help="for tokenizer.json")
    c.add_argument("--reference", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
