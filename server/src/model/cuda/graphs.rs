//! Decode steps as CUDA graphs: one graph per batch-size bucket (`step_meta::decode_buckets`),
//! captured the first time a step of that bucket runs (right after running it eagerly, which
//! also builds its GEMM plans) and replayed after: a decode step becomes one meta upload, one
//! graph launch and the sampling reductions, instead of ~12 launches per layer.
//!
//! A graph reads and writes fixed device addresses: the step buffers ([`super::scratch`]),
//! the packed meta at the padded layout of `StepMeta::pack_padded`, and one KV cache. So the
//! graphs are dropped when a step buffer is reallocated, and a graph is only replayed on
//! the cache it was captured with.

use std::collections::HashMap;

use inferd_kernels::cuda::cudarc::driver::CudaGraph;

use crate::model::step_meta::{bucket_for, decode_buckets};

/// The longest context a decode graph serves (vLLM's `max_seq_len_to_capture`): a graph's
/// attention launch is sized for it (split-K partitions, table width, whatever the step's
/// real contexts), so longer steps run eagerly rather than make every replay pay for them.
pub(super) const MAX_GRAPH_CONTEXT: usize = 8192;

/// A captured graph. Only the engine thread that owns the decoder touches it.
struct Graph(CudaGraph);

// SAFETY: a CUDA graph may be used from any thread as long as uses are serialized; the
// decoder (and so this) is owned and used by one thread at a time (`CausalLm` is `Send`, the
// decoder's interior state is `RefCell`, so it is not `Sync`).
unsafe impl Send for Graph {}

pub(super) struct DecodeGraphs {
    buckets: Vec<usize>,
    /// Block-table entries of every graph (`max_context / block_size`, rounded up).
    pub width: usize,
    /// The context every graph's attention launch is sized for (its split-K partitions;
    /// at most [`MAX_GRAPH_CONTEXT`]): longer steps run eagerly.
    pub max_context: usize,
    captured: HashMap<usize, Graph>,
    /// The KV cache the captured graphs write ([`super::CudaKvCache::id`]).
    cache: Option<u64>,
    /// Why graphs are off (`enforce_eager`, no reservation, a failed capture).
    pub off: Option<String>,
}

impl DecodeGraphs {
    pub fn off(reason: &str) -> Self {
        Self {
            buckets: vec![],
            width: 0,
            max_context: 0,
            captured: HashMap::new(),
            cache: None,
            off: Some(reason.to_string()),
        }
    }

    pub fn new(max_seqs: usize, max_context: usize, block_size: usize) -> Self {
        let max_context = max_context.clamp(1, MAX_GRAPH_CONTEXT);
        Self {
            buckets: decode_buckets(max_seqs),
            width: max_context.div_ceil(block_size.max(1)).max(1),
            max_context,
            captured: HashMap::new(),
            cache: None,
            off: None,
        }
    }

    /// The bucket a step of `n` sequences pads to, when graphs are on and one holds it.
    pub fn bucket(&self, n: usize) -> Option<usize> {
        self.off
            .as_ref()
            .map_or_else(|| bucket_for(&self.buckets, n), |_| None)
    }

    /// The graph of `bucket` captured on cache `cache`.
    pub fn get(&self, bucket: usize, cache: u64) -> Option<&CudaGraph> {
        (self.cache == Some(cache))
            .then(|| self.captured.get(&bucket).map(|g| &g.0))
            .flatten()
    }

    pub fn insert(&mut self, bucket: usize, cache: u64, graph: CudaGraph) {
        if self.cache != Some(cache) {
            self.captured.clear();
            self.cache = Some(cache);
        }
        self.captured.insert(bucket, Graph(graph));
    }

    /// Drops every graph (a step buffer they read moved).
    pub fn clear(&mut self) {
        self.captured.clear();
    }

    pub fn disable(&mut self, reason: String) {
        tracing::warn!(%reason, "CUDA graphs off: decode steps run eagerly");
        self.captured.clear();
        self.off = Some(reason);
    }

    pub fn captured(&self) -> usize {
        self.captured.len()
    }
}
