//! The internal protocol between `inferd gateway` and its `inferd serve` replicas.
//!
//! The gateway has already parsed and validated the OpenAI request into a
//! [`GenerateRequest`]; it forwards that as-is and gets [`GenEvent`]s back, so there is no
//! second OpenAI mapping to keep in sync. One exchange:
//!
//! - `POST /internal/v1/generate`, JSON body [`WireRequest`], headers `x-request-id`
//!   (the request's id) and `x-inferd-protocol: 1` (any other value is a 400, so a
//!   gateway/engine version skew fails loudly).
//! - Refused at admission: the status `api::error` gives the [`BackendError`] (plus
//!   `Retry-After` for `Overloaded`), body [`WireRefusal`].
//! - Admitted: 200, `content-type: application/x-ndjson`, one [`WireFrame`] per line: first
//!   `Admitted`, then the samples' `Event`/`Error` frames as they come (interleaved). A
//!   sample ends with its `Finished` event or its `Error` frame.

use serde::{Deserialize, Serialize};

use super::{BackendError, GenEvent, GenerateRequest};

/// The route of the generate call.
pub const GENERATE_PATH: &str = "/internal/v1/generate";
/// The header naming the protocol version.
pub const PROTOCOL_HEADER: &str = "x-inferd-protocol";
/// The only version this build speaks.
pub const PROTOCOL_VERSION: &str = "1";
/// The content type of an admitted response.
pub const NDJSON: &str = "application/x-ndjson";

/// The body of a generate call: `n` samples of one request (they share the prompt's KV).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireRequest {
    pub request: GenerateRequest,
    pub n: usize,
}

/// One line of an admitted response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFrame {
    /// Always the first frame: the prompt tokens of each sample, in sample order.
    Admitted { prompt_tokens: Vec<usize> },
    /// An event of sample `index`.
    Event { index: usize, event: GenEvent },
    /// Sample `index` failed; it has no further frames.
    Error { index: usize, error: BackendError },
}

/// The body of a refused generate call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireRefusal {
    pub backend_error: BackendError,
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
