//! The paged KV cache storage: per layer, K and V of `[num_blocks, block_size,
//! num_kv_heads, head_dim]`. Which block belongs to whom is the engine's business
//! (`engine::kv`); this is only the memory, on the model's device and in the dtype its
//! attention kernel expects. The engine owns it and hands it to every forward pass; each
//! decoder reads the variant of its own device.

use candle_core::{DType, Device, Tensor};

use super::{ModelError, ModelShape};

pub enum KvCache {
    /// candle tensors (the CPU decoder).
    Host(HostKvCache),
    /// Device buffers of the GPU decoder.
    #[cfg(feature = "cuda")]
    Cuda(super::cuda::CudaKvCache),
}

pub struct HostKvCache {
    layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    /// A zeroed cache of candle tensors on `device`.
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
        Ok(Self::Host(HostKvCache { layers }))
    }

    /// The candle tensors, or an error for a cache on another device.
    pub fn host(&self) -> Result<&HostKvCache, ModelError> {
        match self {
            KvCache::Host(h) => Ok(h),
            #[cfg(feature = "cuda")]
            KvCache::Cuda(_) => Err(ModelError::Batch(
                "the KV cache is on a GPU, this decoder runs on the CPU".into(),
            )),
        }
    }
}

impl HostKvCache {
    /// K and V cache of one layer.
    pub fn layer(&self, i: usize) -> (&Tensor, &Tensor) {
        let (k, v) = &self.layers[i];
        (k, v)
    }
}
