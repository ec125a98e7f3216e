//! Rotary position embeddings: the cos/sin tables and their application to q and k.

use candle_core::{DType, Device, Tensor};
use inferd_kernels::reference::rotary::{inv_freqs, RopeScaling};

use crate::model::ModelError;

/// Which RoPE pairing the q/k weights expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// GGUF llama weights (llama.cpp permutes q/k): pairs (2i, 2i+1).
    Interleaved,
    /// HF safetensors weights: pairs (i, i + d/2).
    Halves,
}

/// The cos/sin tables of every position the model serves.
pub struct Rope {
    style: RopeStyle,
    /// `[max_position, head_dim / 2]`, in the model dtype.
    cos: Tensor,
    sin: Tensor,
}

/// The table rows of one step's tokens: `[tokens, 1, head_dim / 2]`.
pub struct RopeAt {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// Tables for `max_pos` positions, computed in f32 (inverse frequencies scaled as
    /// `scaling` says) and stored in `dtype`.
    pub fn new(
        style: RopeStyle,
        head_dim: usize,
        theta: f32,
        scaling: RopeScaling,
        max_pos: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let inv = inv_freqs(head_dim, theta, scaling);
        let inv = Tensor::new(inv.as_slice(), device)?;
        let freqs = Tensor::arange(0, max_pos as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_pos, 1))?
            .matmul(&inv.reshape((1, head_dim / 2))?)?;
        Ok(Self {
            style,
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
        })
    }

    /// Positions the tables cover.
    pub fn max_positions(&self) -> Result<usize, ModelError> {
        Ok(self.cos.dim(0)?)
    }

    /// The rows of `positions`; a position beyond the tables is a batch error.
    pub fn at(&self, positions: &[u32]) -> Result<RopeAt, ModelError> {
        let max_pos = self.max_positions()?;
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= max_pos) {
            return Err(ModelError::Batch(format!(
                "position {p} is beyond the model's {max_pos} positions"
            )));
        }
        let t = positions.len();
        let pos = Tensor::from_slice(positions, t, self.cos.device())?;
        let half = self.cos.dim(1)?;
        Ok(RopeAt {
            cos: self.cos.index_select(&pos, 0)?.reshape((t, 1, half))?,
            sin: self.sin.index_select(&pos, 0)?.reshape((t, 1, half))?,
        })
    }

    /// Rotates `x: [tokens, heads, head_dim]`, token `i` at the position `at` holds for row `i`.
    pub fn apply(&self, x: &Tensor, at: &RopeAt) -> Result<Tensor, ModelError> {
        let (t, heads, d) = x.dims3()?;
        // Every token is its own "batch" element, so each gets its own position.
        let x = x.reshape((t, heads, 1, d))?;
        let y = match self.style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &at.cos, &at.sin)?,
            RopeStyle::Halves => candle_nn::rotary_emb::rope(&x, &at.cos, &at.sin)?,
        };
        Ok(y.reshape((t, heads, d))?)
    }
}
