"""The agreement rule of greedy_agreement.py (pure Python; its torch part is not imported)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

import greedy_agreement as ga


def test_importing_it_imports_no_torch() -> None:
    code = "import sys, greedy_agreement, report; sys.exit(1 if 'torch' in sys.modules else 0)"
    res = subprocess.run([sys.executable, "-c", code], cwd=Path(ga.__file__).parent, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_tolerance_is_factor_times_calibration() -> None:
    assert ga.tolerance(0.05, 1.0) == pytest.approx(0.1)
    assert ga.tolerance(0.05, 1.0, factor=3) == pytest.approx(0.15)


def test_tolerance_floor_is_one_bf16_ulp_of_the_largest_logit() -> None:
    assert ga.tolerance(0.0, 12.8) == pytest.approx(0.1)  # 2^-7 x 12.8
    assert ga.tolerance(0.01, 25.6) == pytest.approx(0.2)


@pytest.mark.parametrize("cal, logit", [(-0.1, 1.0), (0.1, -1.0), (math.nan, 1.0), (math.inf, 1.0)])
def test_tolerance_refuses_bad_inputs(cal: float, logit: float) -> None:
    with pytest.raises(ValueError):
        ga.tolerance(cal, logit)


def test_first_step_max_diff_known_ids() -> None:
    ref = {1: -0.5, 2: -1.0, 3: -3.0}
    got = [([1], -0.52), ([2], -0.9), ([3], -3.0)]
    assert ga.first_step_max_diff(ref, -5.0, got) == pytest.approx(0.1)


def test_first_step_max_diff_ambiguous_text_takes_the_closest_id() -> None:
    ref = {1: -0.5, 2: -2.0}
    assert ga.first_step_max_diff(ref, -5.0, [([1, 2], -1.9)]) == pytest.approx(0.1)


def test_first_step_max_diff_unknown_ids_against_the_floor() -> None:
    ref = {1: -0.5}
    # above the floor: differs by at least lp - floor
    assert ga.first_step_max_diff(ref, -5.0, [([9], -4.0)]) == pytest.approx(1.0)
    # below the floor too: no evidence of a difference
    assert ga.first_step_max_diff(ref, -5.0, [([9], -6.0)]) == 0.0
    # no ids for the text at all: the same
    assert ga.first_step_max_diff(ref, -5.0, [([], -4.5)]) == pytest.approx(0.5)
    assert ga.first_step_max_diff(ref, -5.0, []) == 0.0


def test_token_agreement_all_equal() -> None:
    r = ga.token_agreement(["a", "b", "c"], [1.0, 1.0, 1.0], ["a", "b", "c"], 0.1)
    assert r == {"ok": True, "compared": 3, "stop": "end"}


def test_token_agreement_mismatch() -> None:
    r = ga.token_agreement(["a", "b", "c"], [1.0, 1.0, 1.0], ["a", "x", "c"], 0.1)
    assert r["ok"] is False and r["stop"] == "mismatch" and r["compared"] == 1
    assert r["mismatch"] == [1, "b", "x"]


def test_token_agreement_stops_at_a_small_margin_before_the_mismatch() -> None:
    r = ga.token_agreement(["a", "b", "c"], [1.0, 0.05, 1.0], ["a", "x", "y"], 0.1)
    assert r == {"ok": True, "compared": 1, "stop": "margin", "stop_step": 1}
    # a margin equal to the tolerance is still compared
    r = ga.token_agreement(["a", "b"], [1.0, 0.1], ["a", "x"], 0.1)
    assert r["ok"] is False and r["mismatch"] == [1, "b", "x"]


def test_token_agreement_short_answer_is_a_mismatch() -> None:
    r = ga.token_agreement(["a", "b"], [1.0, 1.0], ["a"], 0.1)
    assert r["ok"] is False and r["mismatch"] == [1, "b", None]


def test_token_agreement_needs_one_margin_per_token() -> None:
    with pytest.raises(ValueError):
        ga.token_agreement(["a", "b"], [1.0], ["a", "b"], 0.1)


def test_make_prompts() -> None:
    words = [10, 11, 12, 13]
    prompts = ga.make_prompts(16, words, bos=7, seed=3)
    assert [len(p) for p in prompts] == ga.PROMPT_LENGTHS
    assert all(p[0] == 7 and set(p[1:]) <= set(words) for p in prompts)
    assert prompts == ga.make_prompts(16, words, bos=7, seed=3)
    assert prompts != ga.make_prompts(16, words, bos=7, seed=4)
    assert [len(p) for p in ga.make_prompts(18, words)][16:] == ga.PROMPT_LENGTHS[:2]
    with pytest.raises(ValueError):
        ga.make_prompts(7, words)


def test_byte_decoder_is_gpt2s_table() -> None:
    table = ga.byte_decoder()
    assert len(table) == 256 and sorted(table.values()) == list(range(256))
    assert table["Ġ"] == 0x20 and table["Ċ"] == 0x0A and table["!"] == 0x21 and table["ā"] == 0x01


def test_token_texts_and_ids_by_text() -> None:
    tok = {
        "model": {"vocab": {"Ġhello": 0, "hello": 1, "ĠÃ©": 2, "<unk>": 3, "Ġ": 4, "\u2581x": 5}},
        "added_tokens": [{"id": 6, "content": "<|begin_of_text|>"}, {"id": 4, "content": " "}],
    }
    texts = ga.token_texts(tok)
    assert texts[0] == " hello" and texts[1] == "hello" and texts[2] == " é"
    assert texts[3] == "<unk>"  # '<', 'u', ... are all byte-level stand-ins of themselves
    assert texts[5] == "\u2581x"  # not byte-level: the piece itself
    assert texts[6] == "<|begin_of_text|>"
    by = ga.ids_by_text({0: " a", 1: "b", 2: " a"})
    assert by == {" a": [0, 2], "b": [1]}


def test_judge_ok_and_failed() -> None:
    texts = {0: "a", 1: "b", 2: "c"}
    ref = {
        "tolerance": 0.1,
        "prompts": [[9, 9], [9]],
        "tokens": [[0, 1], [2, 2]],
        "margins": [[1.0, 1.0], [1.0, 0.01]],
        "first_top": [[[0, -0.1], [1, -2.5]], [[2, -0.2], [0, -2.0]]],
        "first_floor": [-6.0, -6.0],
    }
    good = [
        {"tokens": ["a", "b"], "top0": {"a": -0.12, "b": -2.45}},
        {"tokens": ["c", "a"], "top0": {"c": -0.2}},  # second step below the margin: not compared
    ]
    r = ga.judge(ref, good, texts)
    assert r["ok"] is True and r["prompts"] == 2
    assert r["steps_compared"] == 3 and r["steps_total"] == 4
    assert r["first_step_max_diff"] == pytest.approx(0.05)

    bad = [
        {"tokens": ["a", "c"], "top0": {"a": -0.1}},  # a greedy mismatch
        {"tokens": ["c", "c"], "top0": {}},  # no log-probabilities at all
    ]
    r = ga.judge(ref, bad, texts)
    assert r["ok"] is False
    assert r["per_prompt"][0]["ok"] is False and r["per_prompt"][0]["mismatch"] == [1, "b", "c"]
    assert r["per_prompt"][1]["first_step_ok"] is False

    far = [
        {"tokens": ["a", "b"], "top0": {"a": -0.5}},  # first step 0.4 away
        good[1],
    ]
    r = ga.judge(ref, far, texts)
    assert r["ok"] is False and r["per_prompt"][0]["first_step_ok"] is False
    assert r["first_step_max_diff"] == pytest.approx(0.4)
