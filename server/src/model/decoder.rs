//! The decoder-only transformer every causal architecture is wired into: embedding, pre-norm
//! blocks of attention and MLP with residuals, final norm, output projection. Built once
//! from a [`DecoderSpec`] and a weight-name table, whatever the file format.

use candle_core::{DType, Tensor};

use super::arch::{layer_name, DecoderSpec, WeightNames};
use super::layers::{Attention, GatedMlp, Linear, PagedBatch, RmsNorm, Rope, RopeAt};
use super::loader::source::TensorSource;
use super::{CausalLm, ForwardBatch, KvCache, Logits, ModelError, ModelShape};

/// One block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
pub struct DecoderLayer {
    attn_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    mlp: GatedMlp,
}

impl DecoderLayer {
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        at: &RopeAt,
        paged: &PagedBatch,
        kv: (&Tensor, &Tensor),
    ) -> Result<Tensor, ModelError> {
        let h = self.attn_norm.forward(x)?;
        let x = (x + self.attn.forward(&h, rope, at, paged, kv)?)?;
        let h = self.mlp_norm.forward(&x)?;
        Ok((x + self.mlp.forward(&h)?)?)
    }
}

pub struct Decoder {
    shape: ModelShape,
    /// `[vocab, hidden]` in the model dtype.
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    final_norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
}

impl Decoder {
    /// Reads every weight `names` lists from `src` and wires the layers as `spec` says.
    pub fn load(
        spec: &DecoderSpec,
        names: &WeightNames,
        src: &mut dyn TensorSource,
    ) -> Result<Self, ModelError> {
        let s = &spec.shape;
        let (h, inter) = (s.hidden_size, spec.intermediate_size);
        let (q_out, kv_out) = (s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim);
        let eps = spec.rms_norm_eps;
        let embed = src.float(names.embed, &[s.vocab_size, h])?;
        let lm_head = if spec.tie_word_embeddings {
            src.tied_linear(names.embed, &embed)?
        } else {
            src.linear(names.lm_head, s.vocab_size, h)?
        };
        let mut layers = Vec::with_capacity(s.num_layers);
        for i in 0..s.num_layers {
            let name = |template: &str| layer_name(template, i);
            let attn = [
                src.linear(&name(names.q), q_out, h)?,
                src.linear(&name(names.k), kv_out, h)?,
                src.linear(&name(names.v), kv_out, h)?,
                src.linear(&name(names.o), h, q_out)?,
            ];
            layers.push(DecoderLayer {
                attn_norm: RmsNorm::new(src.float(&name(names.attn_norm), &[h])?, eps),
                attn: Attention::new(attn, s.num_heads, s.num_kv_heads, s.head_dim),
                mlp_norm: RmsNorm::new(src.float(&name(names.mlp_norm), &[h])?, eps),
                mlp: GatedMlp {
                    gate: src.linear(&name(names.gate), inter, h)?,
                    up: src.linear(&name(names.up), inter, h)?,
                    down: src.linear(&name(names.down), h, inter)?,
                    activation: spec.activation,
                },
            });
        }
        let final_norm = RmsNorm::new(src.float(names.final_norm, &[h])?, eps);
        let rope = Rope::new(
            spec.rope_style,
            s.head_dim,
            spec.rope_theta,
            spec.rope_scaling,
            s.max_position_embeddings,
            src.device(),
            spec.dtype,
        )?;
        Ok(Self {
            shape: s.clone(),
            embed,
            layers,
            final_norm,
            lm_head,
            rope,
        })
    }
}

impl CausalLm for Decoder {
    fn shape(&self) -> &ModelShape {
        &self.shape
    }

    fn forward(&self, batch: &ForwardBatch, cache: &KvCache) -> Result<Logits, ModelError> {
        let dev = self.embed.device();
        let t = batch.num_tokens();
        let vocab = self.shape.vocab_size;
        if t == 0 {
            return Ok(Logits::full(vec![], vocab));
        }
        let cache = cache.host()?;
        let at = self.rope.at(&batch.positions)?;
        let paged = PagedBatch::new(batch, dev)?;
        let ids = Tensor::from_slice(&batch.token_ids, t, dev)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &self.rope, &at, &paged, cache.layer(i))?;
        }
        let rows = batch.logit_rows();
        if rows.is_empty() {
            return Ok(Logits::full(vec![], vocab));
        }
        let n = rows.len();
        let last = x.index_select(&Tensor::from_vec(rows, n, dev)?, 0)?;
        let last = self.final_norm.forward(&last)?;
        let data = self
            .lm_head
            .forward(&last)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Logits::full(data, vocab))
    }
}
