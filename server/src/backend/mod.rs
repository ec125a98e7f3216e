//! The seam between the API and whatever generates text: the local engine (`serve`), or
//! upstream inferd replicas and AWS Bedrock behind a routing policy (`gateway`). The API
//! layer only sees this module. Wire (OpenAI) types never appear here, and the engine's
//! types never leak past it: the protocol types of [`types`] are this layer's own, and
//! `local` maps them to the engine's.
//!
//! Every protocol type is serde-serializable: the gateway forwards them to replicas as-is
//! (see `wire`), so a field added there travels without a second mapping.

pub mod bedrock;
pub mod local;
pub mod policy;
#[cfg(test)]
pub(crate) mod testing;
mod types;
pub mod upstream;
pub mod wire;

use std::pin::Pin;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;

pub use types::*;

pub type GenStream = Pin<Box<dyn Stream<Item = Result<GenEvent, BackendError>> + Send>>;

/// An admitted generation: the prompt was accepted and work is under way.
pub struct Generation {
    /// Prompt tokens when the backend knows them at admission (0 otherwise: Bedrock
    /// reports usage only at the end).
    pub prompt_tokens: usize,
    pub events: GenStream,
    /// Which backend serves it, for the `x-inferd-backend` header and per-backend metrics:
    /// `local`, `replica:<addr>` or `bedrock`.
    pub served_by: String,
}

/// The one generation of an `n = 1` admission.
pub fn only_generation(mut generations: Vec<Generation>) -> Result<Generation, BackendError> {
    match generations.len() {
        1 => generations
            .pop()
            .ok_or_else(|| BackendError::Internal("no generation admitted".into())),
        k => Err(BackendError::Internal(format!(
            "the backend admitted {k} generations for n = 1"
        ))),
    }
}

/// The backend kinds `Generation::served_by` starts with.
pub const SERVED_BY_LOCAL: &str = "local";
pub const SERVED_BY_BEDROCK: &str = "bedrock";

/// `replica:<addr>` for a generation an upstream replica serves.
pub fn served_by_replica(addr: &str) -> String {
    format!("replica:{addr}")
}

/// The kind part of a `served_by` value (`replica:10.0.0.7:8080` -> `replica`): a
/// bounded label for metrics.
pub fn served_by_kind(served_by: &str) -> &str {
    served_by.split(':').next().unwrap_or(served_by)
}

/// Something that can generate for the models it lists. Further kinds of work (embeddings)
/// join as methods with a default body that refuses them, so a backend implements only
/// what it serves.
pub trait Backend: Send + Sync + 'static {
    /// Models this backend serves.
    fn models(&self) -> Vec<ModelCard>;

    /// Admit `n` parallel samples of one request (OpenAI `n`, at least 1), in sample
    /// order. Returns once the backend has accepted (or refused) the request, before any
    /// token: the API picks its response status from this result. Seeded samples must
    /// differ from each other (the local engine offsets the seed by the sample index).
    /// The one method every backend writes.
    fn generate_n(
        &self,
        request: GenerateRequest,
        n: usize,
    ) -> BoxFuture<'_, Result<Vec<Generation>, BackendError>>;

    /// Admit one generation: `generate_n` with one sample. Not meant to be overridden.
    fn generate(
        &self,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<Generation, BackendError>> {
        Box::pin(async move { only_generation(self.generate_n(request, 1).await?) })
    }

    /// Whether the backend can take requests now (`/ready`).
    fn is_ready(&self) -> bool;

    /// Generations admitted and not finished yet (drain waits for 0).
    fn in_flight(&self) -> usize {
        0
    }

    /// When admission may take long (the gateway holding a request while GPU replicas
    /// scale up), a streaming response is started after this long and SSE comments keep
    /// the connection alive until a backend is chosen. `None`: admission is quick; the
    /// response starts once it is done.
    fn admission_keepalive(&self) -> Option<Duration> {
        None
    }
}
