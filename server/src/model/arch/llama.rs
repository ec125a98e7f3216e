//! The llama family (llama 2/3, SmolLM, Mistral-style GQA without a sliding window):
//! pre-norm blocks of grouped-query attention and a SiLU-gated MLP, RMS norms, RoPE.

use super::{Architecture, FormatTable, WeightNames};
use crate::model::layers::{Activation, RopeStyle};

pub const LLAMA: Architecture = Architecture {
    name: "llama",
    gguf_names: &["llama"],
    hf_model_types: &["llama", "mistral"],
    gguf: FormatTable {
        names: WeightNames {
            embed: "token_embd.weight",
            final_norm: "output_norm.weight",
            lm_head: "output.weight",
            attn_norm: "blk.{i}.attn_norm.weight",
            q: "blk.{i}.attn_q.weight",
            k: "blk.{i}.attn_k.weight",
            v: "blk.{i}.attn_v.weight",
            o: "blk.{i}.attn_output.weight",
            mlp_norm: "blk.{i}.ffn_norm.weight",
            gate: "blk.{i}.ffn_gate.weight",
            up: "blk.{i}.ffn_up.weight",
            down: "blk.{i}.ffn_down.weight",
        },
        rope_style: RopeStyle::Interleaved,
    },
    hf: FormatTable {
        names: WeightNames {
            embed: "model.embed_tokens.weight",
            final_norm: "model.norm.weight",
            lm_head: "lm_head.weight",
            attn_norm: "model.layers.{i}.input_layernorm.weight",
            q: "model.layers.{i}.self_attn.q_proj.weight",
            k: "model.layers.{i}.self_attn.k_proj.weight",
            v: "model.layers.{i}.self_attn.v_proj.weight",
            o: "model.layers.{i}.self_attn.o_proj.weight",
            mlp_norm: "model.layers.{i}.post_attention_layernorm.weight",
            gate: "model.layers.{i}.mlp.gate_proj.weight",
            up: "model.layers.{i}.mlp.up_proj.weight",
            down: "model.layers.{i}.mlp.down_proj.weight",
        },
        rope_style: RopeStyle::Halves,
    },
    activation: Activation::Silu,
};
