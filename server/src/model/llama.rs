//! The llama family (llama 2/3, SmolLM, Mistral-style GQA) over a paged KV cache.

use candle_core::{DType, Device, Tensor};

use super::linear::Linear;
use super::{CausalLm, ForwardBatch, KvCache, Logits, ModelError, ModelShape};

/// Which RoPE pairing the q/k weights expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// GGUF llama weights (llama.cpp permutes q/k): pairs (2i, 2i+1).
    Interleaved,
    /// HF safetensors weights: pairs (i, i + d/2).
    Halves,
}

pub struct LlamaLayer {
    pub attn_norm: Tensor,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub ffn_norm: Tensor,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

/// Everything a llama needs; built by the loader from GGUF or safetensors.
pub struct LlamaParts {
    pub shape: ModelShape,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_style: RopeStyle,
    /// `[vocab, hidden]` f32.
    pub embed: Tensor,
    pub layers: Vec<LlamaLayer>,
    pub final_norm: Tensor,
    pub lm_head: Linear,
    pub device: Device,
}

pub struct Llama {
    p: LlamaParts,
    /// `[max_position, head_dim / 2]`.
    cos: Tensor,
    sin: Tensor,
    scale: f32,
}

impl Llama {
    pub fn new(p: LlamaParts) -> Result<Self, ModelError> {
        let (cos, sin) = rope_tables(
            p.shape.head_dim,
            p.rope_theta,
            p.shape.max_position_embeddings,
            &p.device,
        )?;
        let scale = 1.0 / (p.shape.head_dim as f32).sqrt();
        Ok(Self { p, cos, sin, scale })
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor, ModelError> {
        // x: [tokens, heads, 1, d]; cos/sin: [tokens, 1, d/2]: every token is its own
        // "batch" element, so each gets its own position.
        Ok(match self.p.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin)?,
            RopeStyle::Halves => candle_nn::rotary_emb::rope(x, cos, sin)?,
        })
    }
}

fn rope_tables(
    head_dim: usize,
    theta: f32,
    max_pos: usize,
    device: &Device,
) -> Result<(Tensor, Tensor), ModelError> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / theta.powf(i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::new(inv.as_slice(), device)?;
    let freqs = Tensor::arange(0, max_pos as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((max_pos, 1))?
        .matmul(&inv.reshape((1, head_dim / 2))?)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// Per-step tensors shared by every layer.
struct StepInputs {
    cos: Tensor,
    sin: Tensor,
    slots: Tensor,
    block_tables: Tensor,
    context_lens: Tensor,
    query_start_loc: Tensor,
}

fn step_inputs(
    batch: &ForwardBatch,
    cos_table: &Tensor,
    sin_table: &Tensor,
    max_pos: usize,
    dev: &Device,
) -> Result<StepInputs, ModelError> {
    let t = batch.num_tokens();
    if let Some(&p) = batch.positions.iter().find(|&&p| p as usize >= max_pos) {
        return Err(ModelError::Batch(format!(
            "position {p} is beyond the model's {max_pos} positions"
        )));
    }
    let pos = Tensor::from_slice(&batch.positions, t, dev)?;
    let half = cos_table.dim(1)?;
    let cos = cos_table.index_select(&pos, 0)?.reshape((t, 1, half))?;
    let sin = sin_table.index_select(&pos, 0)?.reshape((t, 1, half))?;
    let n = batch.seqs.len();
    let width = batch
        .seqs
        .iter()
        .map(|s| s.block_table.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut tables = vec![0u32; n * width];
    let mut ctx = Vec::with_capacity(n);
    let mut qsl = Vec::with_capacity(n + 1);
    qsl.push(0u32);
    for (i, s) in batch.seqs.iter().enumerate() {
        tables[i * width..i * width + s.block_table.len()].copy_from_slice(&s.block_table);
        ctx.push(s.context_len as u32);
        qsl.push(qsl[i] + s.query_len as u32);
    }
    Ok(StepInputs {
        cos,
        sin,
        slots: Tensor::from_slice(&batch.slot_mapping, t, dev)?,
        block_tables: Tensor::from_vec(tables, (n, width), dev)?,
        context_lens: Tensor::from_vec(ctx, n, dev)?,
        query_start_loc: Tensor::from_vec(qsl, n + 1, dev)?,
    })
}

impl CausalLm for Llama {
    fn shape(&self) -> &ModelShape {
        &self.p.shape
    }

    fn forward(&self, batch: &ForwardBatch, cache: &KvCache) -> Result<Logits, ModelError> {
        let s = &self.p.shape;
        let dev = &self.p.device;
        let t = batch.num_tokens();
        let vocab = s.vocab_size;
        if t == 0 {
            return Ok(Logits {
                data: vec![],
                vocab,
            });
        }
        let inp = step_inputs(batch, &self.cos, &self.sin, s.max_position_embeddings, dev)?;
        let ids = Tensor::from_slice(&batch.token_ids, t, dev)?;
        let mut x = self.p.embed.index_select(&ids, 0)?;
        let eps = self.p.rms_norm_eps as f32;
        for (li, layer) in self.p.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let q = layer
                .wq
                .forward(&h)?
                .reshape((t, s.num_heads, 1, s.head_dim))?;
            let k = layer
                .wk
                .forward(&h)?
                .reshape((t, s.num_kv_heads, 1, s.head_dim))?;
            let v = layer
                .wv
                .forward(&h)?
                .reshape((t, s.num_kv_heads, s.head_dim))?;
            let q = self
                .rope(&q, &inp.cos, &inp.sin)?
                .reshape((t, s.num_heads, s.head_dim))?;
            let k = self
                .rope(&k, &inp.cos, &inp.sin)?
                .reshape((t, s.num_kv_heads, s.head_dim))?;
            let (kc, vc) = cache.layer(li);
            inferd_kernels::reshape_and_cache(&k, &v.contiguous()?, kc, vc, &inp.slots)?;
            let attn = inferd_kernels::paged_attention(
                &q,
                kc,
                vc,
                &inp.block_tables,
                &inp.context_lens,
                &inp.query_start_loc,
                self.scale,
            )?
            .reshape((t, s.num_heads * s.head_dim))?;
            x = (x + layer.wo.forward(&attn)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let up = layer.w_up.forward(&h)?;
            x = (x + layer.w_down.forward(&(gate * up)?)?)?;
        }
        let rows = batch.logit_rows();
        if rows.is_empty() {
            return Ok(Logits {
                data: vec![],
                vocab,
            });
        }
        let n = rows.len();
        let last = x.index_select(&Tensor::from_vec(rows, n, dev)?, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.p.final_norm, eps)?;
        let logits = self.p.lm_head.forward(&last)?;
        let data = logits
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Logits { data, vocab })
    }
}
