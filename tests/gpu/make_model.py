#!/usr/bin/env python3
"""Random-weight Llama-3-shaped models for the GPU check (scripts/gpu-check.sh).

`make_model.py --shape 8b --out DIR [--reference REF.json]` builds a model with the real
configuration of Llama-3.1-8B (or `1b`: Llama-3.2-1B) and random weights (transformers'
own initialisation, `torch.manual_seed(0)`, on the GPU, bf16), writes it with
`save_pretrained` (safetensors) plus a tokenizer built here (no download), and, with
`--reference`, the greedy reference inferd is checked against (greedy_agreement.py),
computed from the model still in memory.

The tokenizer is a byte-level BPE like Llama 3's: 128,000 regular tokens (the 256 byte
symbols, every word of benches/data/words.txt as one token with its leading space, so
that inferd-bench's prompts are one token per word, and filler tokens up to 128,000) and
Llama 3's 256 special tokens (`<|begin_of_text|>` = 128000 ... `<|eot_id|>` = 128009).
Every token id has its own text, so the ids inferd generates can be read back from the
token texts of its logprobs (bar the 128 single bytes >= 0x80, which are not valid UTF-8
alone; greedy_agreement.py compares those by text).

Only `config_dict`, `byte_level_alphabet` and the vocabulary layout are pure Python (the
CPU tests import them); torch, transformers and tokenizers are imported where used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# The two shapes, from the published config.json files of meta-llama/Llama-3.2-1B and
# meta-llama/Llama-3.1-8B (the weights are random; only the shapes and RoPE are theirs).
SHAPES: dict[str, dict[str, Any]] = {
    "1b": {
        "name": "llama-3.2-1b-random",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "tie_word_embeddings": True,
        "rope_factor": 32.0,
    },
    "8b": {
        "name": "llama-3.1-8b-random",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "tie_word_embeddings": False,
        "rope_factor": 8.0,
    },
}

VOCAB_SIZE = 128256
REGULAR_TOKENS = 128000  # Llama 3: ids below are BPE tokens, 128000.. are special
BOS_ID, EOS_ID, EOT_ID = 128000, 128001, 128009
ROPE_THETA = 500000.0
SEED = 0

# Llama 3's named special tokens; every other id in 128000..128255 is reserved_special_token_N.
NAMED_SPECIAL = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128004: "<|finetune_right_pad_id|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128008: "<|eom_id|>",
    128009: "<|eot_id|>",
    128010: "<|python_tag|>",
}

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def config_dict(shape: str, rope_scaling: str = "llama3") -> dict[str, Any]:
    """The model's config.json in the published (legacy-key) form: `rope_theta` and
    `rope_scaling`, which every transformers 5.x still reads (and turns into its
    `rope_parameters`) and which inferd reads."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")
    if rope_scaling not in ("llama3", "none"):
        raise ValueError(f"rope_scaling must be llama3 or none, got {rope_scaling!r}")
    s = SHAPES[shape]
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "head_dim": s["head_dim"],
        "hidden_act": "silu",
        "hidden_size": s["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": s["intermediate_size"],
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "num_attention_heads": s["num_attention_heads"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_key_value_heads": s["num_key_value_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_theta": ROPE_THETA,
        "rope_scaling": None,
        "tie_word_embeddings": s["tie_word_embeddings"],
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
    }
    if rope_scaling == "llama3":
        cfg["rope_scaling"] = {
            "factor": s["rope_factor"],
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        }
    return cfg


def weight_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Llama checkpoint with this config, by its safetensors name."""
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not cfg["tie_word_embeddings"]:
        out["lm_head.weight"] = (v, h)
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}"
        out.update(
            {
                f"{p}.input_layernorm.weight": (h,),
                f"{p}.post_attention_layernorm.weight": (h,),
                f"{p}.self_attn.q_proj.weight": (q, h),
                f"{p}.self_attn.k_proj.weight": (kv, h),
                f"{p}.self_attn.v_proj.weight": (kv, h),
                f"{p}.self_attn.o_proj.weight": (h, q),
                f"{p}.mlp.gate_proj.weight": (i, h),
                f"{p}.mlp.up_proj.weight": (i, h),
                f"{p}.mlp.down_proj.weight": (h, i),
            }
        )
    return out


def num_params(cfg: dict[str, Any]) -> int:
    total = 0
    for shape in weight_shapes(cfg).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order (ids 0..255)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    by_byte = dict(zip(bs, cs))
    return [chr(by_byte[b]) for b in range(256)]


def read_words(path: Path) -> list[str]:
    words = [w.strip() for w in path.read_text().splitlines() if w.strip()]
    if not words:
        raise ValueError(f"{path}: no words")
    return words


def vocabulary(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE vocabulary (piece -> id, REGULAR_TOKENS entries) and merges: the byte symbols,
    then for each word the chain of its leading-space prefixes ("Ġt", "Ġth", "Ġthe"), each
    made by one merge, then fillers `<t123456>` (reachable only by generating them)."""
    alphabet = byte_level_alphabet()
    vocab: dict[str, int] = {c: i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    space = alphabet[ord(" ")]  # "Ġ"
    for word in words:
        cur = space
        for ch in word:
            if ch not in vocab:
                raise ValueError(f"word {word!r}: {ch!r} is not a byte-level symbol")
            nxt = cur + ch
            if nxt not in vocab:
                vocab[nxt] = len(vocab)
                merges.append((cur, ch))
            cur = nxt
    if len(vocab) > REGULAR_TOKENS:
        raise ValueError(f"{len(vocab)} word pieces do not fit in {REGULAR_TOKENS} tokens")
    n = len(vocab)
    while n < REGULAR_TOKENS:
        vocab[f"<t{n}>"] = n
        n += 1
    return vocab, merges


def special_tokens() -> list[str]:
    names = []
    reserved = 0
    for i in range(REGULAR_TOKENS, VOCAB_SIZE):
        if i in NAMED_SPECIAL:
            names.append(NAMED_SPECIAL[i])
        else:
            names.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return names


def write_tokenizer(out: Path, words: list[str]) -> None:
    """tokenizer.json (tokenizers' format), tokenizer_config.json (BOS/EOS, add_bos_token,
    chat template) and special_tokens_map.json into `out`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab, merges = vocabulary(words)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    added = tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens()])
    if added != VOCAB_SIZE - REGULAR_TOKENS or tok.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size(True)} tokens, expected {VOCAB_SIZE}")
    for i, name in NAMED_SPECIAL.items():
        if tok.token_to_id(name) != i:
            raise RuntimeError(f"{name} is id {tok.token_to_id(name)}, expected {i}")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": NAMED_SPECIAL[BOS_ID],
                "eos_token": NAMED_SPECIAL[EOS_ID],
                "add_bos_token": True,
                "add_eos_token": False,
                "model_max_length": 131072,
                "tokenizer_class": "PreTrainedTokenizerFast",
                "chat_template": CHAT_TEMPLATE,
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": NAMED_SPECIAL[BOS_ID], "eos_token": NAMED_SPECIAL[EOS_ID]}, indent=2)
    )


def build_model(cfg: dict[str, Any]) -> Any:
    """The random-weight model on the GPU in bf16 (transformers' initialisation, seed 0)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    # As transformers reads a published config.json (legacy RoPE keys included).
    config = LlamaConfig.from_dict(dict(cfg))
    torch.manual_seed(SEED)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.eval()
    return model


def rope_of(config: Any) -> Any:
    """The RoPE settings a transformers config resolved to (5.x: rope_parameters)."""
    rope = getattr(config, "rope_parameters", None)
    if rope is None:
        rope = {"rope_theta": getattr(config, "rope_theta", None), **(getattr(config, "rope_scaling", None) or {})}
    return json.loads(json.dumps(rope, sort_keys=True, default=str))


def save(model: Any, cfg: dict[str, Any], out: Path, words: list[str]) -> None:
    from transformers import AutoConfig

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    write_tokenizer(out, words)
    # transformers 5 writes its own `rope_parameters`; the published keys go beside them so
    # that a reader of the original format (inferd) sees the same RoPE.
    path = out / "config.json"
    written = json.loads(path.read_text())
    for key in ("rope_theta", "rope_scaling"):
        written[key] = cfg[key]
    path.write_text(json.dumps(written, indent=2, sort_keys=True))
    reloaded = AutoConfig.from_pretrained(str(out))
    if rope_of(reloaded) != rope_of(model.config):
        raise RuntimeError(
            f"config.json reloads with RoPE {rope_of(reloaded)}, the model has {rope_of(model.config)}"
        )
    files = sorted(p.name for p in out.glob("*.safetensors"))
    if not files:
        raise RuntimeError(f"save_pretrained wrote no safetensors into {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", type=Path, required=True, help="model directory to write")
    ap.add_argument("--words", type=Path, required=True, help="benches/data/words.txt")
    ap.add_argument("--rope-scaling", choices=["llama3", "none"], default="llama3")
    ap.add_argument("--reference", type=Path, help="also write the greedy reference here")
    ap.add_argument("--steps", type=int, default=32, help="greedy steps of the reference")
    ap.add_argument("--prompts", type=int, default=16, help="reference prompts (>= 8)")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    cfg = config_dict(args.shape, args.rope_scaling)
    words = read_words(args.words)
    t0 = time.monotonic()
    model = build_model(cfg)
    t1 = time.monotonic()
    save(model, cfg, args.out, words)
    t2 = time.monotonic()
    size = sum(p.stat().st_size for p in args.out.glob("*.safetensors"))
    print(
        f"{SHAPES[args.shape]['name']}: {num_params(cfg) / 1e9:.3f} B params, {size / 2**30:.2f} GiB "
        f"safetensors in {args.out} (init {t1 - t0:.1f} s, save {t2 - t1:.1f} s)",
        flush=True,
    )
    if args.reference:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import greedy_agreement

        ref = greedy_agreement.compute_reference(
            model, greedy_agreement.make_prompts(args.prompts, words_vocab(words)), args.steps
        )
        ref["model"] = SHAPES[args.shape]["name"]
        ref["shape"] = args.shape
        ref["rope_scaling"] = args.rope_scaling
        args.reference.write_text(json.dumps(ref))
        print(
            f"reference: {len(ref['prompts'])} prompts x {args.steps} steps, tolerance "
            f"{ref['tolerance']:.4f} ({time.monotonic() - t2:.1f} s)",
            flush=True,
        )
    return 0


def words_vocab(words: list[str]) -> list[int]:
    """The ids of the word tokens (what prompts are drawn from)."""
    vocab, _ = vocabulary(words)
    space = byte_level_alphabet()[ord(" ")]
    return sorted({vocab[space + w] for w in words})


if __name__ == "__main__":
    sys.exit(main())
