//! Model code: the shared layers (`layers/`), architectures as weight-name tables and
//! wiring specs (`arch/`), the decoder they are built into, loading, tokenizer and chat
//! template. The model never imports tokio or axum; it sees a flat ragged batch and a
//! paged KV cache.

pub mod arch;
pub mod batch;
pub mod chat_template;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod decoder;
pub mod kv_cache;
pub mod layers;
pub mod loader;
pub mod logits;
pub mod step_meta;
pub mod tokenizer;

pub use batch::{ForwardBatch, SeqInBatch};
pub use kv_cache::KvCache;
pub use logits::{Candidates, Logits, RowAnswer, RowNeed, MAX_CANDIDATES};

use candle_core::DType;

/// Shape facts the engine needs to size and address the KV cache.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    /// The longest context the model was trained for.
    pub max_position_embeddings: usize,
}

impl ModelShape {
    /// Bytes of K and V one token occupies across all layers, in a cache of `dtype`.
    pub fn kv_bytes_per_token(&self, dtype: DType) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype.size_in_bytes()
    }
}

/// Errors of the model layer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("kernel: {0}")]
    Kernel(#[from] inferd_kernels::KernelError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: missing or invalid metadata `{key}`: {reason}")]
    Metadata {
        path: String,
        key: String,
        reason: String,
    },
    #[error("{path}: weight `{name}`: {reason}")]
    Weight {
        path: String,
        name: String,
        reason: String,
    },
    #[error("{path}: unsupported model: {reason}")]
    Unsupported { path: String, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error("chat template: {0}")]
    Template(#[from] chat_template::TemplateError),
    #[cfg(feature = "cuda")]
    #[error("CUDA: {0}")]
    Cuda(#[from] inferd_kernels::cuda::CudaError),
    #[error("invalid batch: {0}")]
    Batch(String),
}

/// A causal language model that runs one forward pass over a flat, ragged batch.
pub trait CausalLm: Send {
    fn shape(&self) -> &ModelShape;

    /// Runs the batch: writes the new tokens' K/V into `cache` and returns the logits of
    /// the rows the batch asked for (`SeqInBatch::wants_logits`), in batch order.
    fn forward(&self, batch: &ForwardBatch, cache: &KvCache) -> Result<Logits, ModelError>;
}

/// What a loaded model is, by what it can run. Causal LMs today; an encoder (embeddings)
/// becomes a second kind, so that every caller decides what it does with each.
pub enum Model {
    CausalLm(Box<dyn CausalLm>),
}

impl Model {
    pub fn shape(&self) -> &ModelShape {
        match self {
            Model::CausalLm(m) => m.shape(),
        }
    }
}
