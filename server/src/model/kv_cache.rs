//! The paged KV cache storage: per layer, K and V tensors of
//! `[num_blocks, block_size, num_kv_heads, head_dim]`. Which block belongs to whom is the
//! engine's business (`engine::kv`); this is only the memory, on the model's device and
//! in the dtype its attention kernel expects.

use candle_core::{DType, Device, Tensor};

use super::{ModelError, ModelShape};

pub struct KvCache {
    pub block_size: usize,
    pub num_blocks: usize,
    layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn new(
        shape: &ModelShape,
        num_blocks: usize,
        block_size: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let dims = (num_blocks, block_size, shape.num_kv_heads, shape.head_dim);
        let layers = (0..shape.num_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(dims, dtype, device)?,
                    Tensor::zeros(dims, dtype, device)?,
                ))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Self {
            block_size,
            num_blocks,
            layers,
        })
    }

    /// K and V cache of one layer.
    pub fn layer(&self, i: usize) -> (&Tensor, &Tensor) {
        let (k, v) = &self.layers[i];
        (k, v)
    }
}
