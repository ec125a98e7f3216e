//! The paged KV cache on a GPU: per layer, K and V device buffers of `[num_blocks,
//! block_size, num_kv_heads, head_dim]` in the model dtype (the layout of the CPU cache and
//! of `inferd_kernels::cuda::ops::attention`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use inferd_kernels::cuda::cudarc::driver::CudaSlice;
use inferd_kernels::cuda::ops::cache::CacheShape;
use inferd_kernels::cuda::Gpu;

use crate::model::{ModelError, ModelShape};

pub struct CudaKvCache {
    /// Unique per cache made in this process: what a captured CUDA graph was recorded on.
    pub(super) id: u64,
    pub(super) shape: CacheShape,
    /// Written by the decoder inside `forward(&self, ..)`; the engine thread is the only
    /// user (the cache is `Send`, not `Sync`).
    pub(super) layers: RefCell<Vec<(CudaSlice<u16>, CudaSlice<u16>)>>,
}

impl CudaKvCache {
    /// A zeroed cache on `gpu` (zeros: a padding row of attention reads finite values).
    pub fn new(
        gpu: &Arc<Gpu>,
        shape: &ModelShape,
        num_blocks: usize,
        block_size: usize,
    ) -> Result<Self, ModelError> {
        let cs = CacheShape {
            num_blocks,
            block_size,
            num_kv_heads: shape.num_kv_heads,
            head_dim: shape.head_dim,
        };
        let stream = gpu.stream();
        let layers = (0..shape.num_layers)
            .map(|_| {
                Ok((
                    stream.alloc_zeros::<u16>(cs.elements())?,
                    stream.alloc_zeros::<u16>(cs.elements())?,
                ))
            })
            .collect::<Result<Vec<_>, inferd_kernels::cuda::cudarc::driver::DriverError>>()
            .map_err(inferd_kernels::cuda::CudaError::from)?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shape: cs,
            layers: RefCell::new(layers),
        })
    }
}
