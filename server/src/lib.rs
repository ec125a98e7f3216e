//! inferd: a self-hosted, OpenAI-compatible model server.
//!
//! Dependencies point one way, down this list (a module uses only those below it):
//!
//! ```text
//! serve, gateway, cli   the two roles: build the backends, run the API, drain
//! device                where each model runs: `device` resolved against the build and host
//! api                   HTTP: routers, OpenAI wire types, validation, SSE, errors -> HTTP
//! backend               the Backend trait and its protocol types; local (-> engine, model),
//!                       upstream replicas, bedrock, the gateway's routing policy
//! engine                the engine thread: scheduler, KV blocks, sampling
//! model                 layers, architectures, loader, tokenizer, chat template
//! inferd-kernels        (crate) attention, cache writes, linear
//! ```
//!
//! `config` (the catalog) and `telemetry` (logs, metrics) are leaves that any layer may use.
//! The API never sees the engine or a tensor; the engine never sees a protocol or wire type.
//! See `docs/architecture.md` for the request path, the threads and the invariants.

pub mod api;
pub mod backend;
pub mod cli;
pub mod config;
pub mod device;
pub mod engine;
pub mod gateway;
pub mod model;
pub mod serve;
#[cfg(feature = "cuda")]
mod serve_cuda;
pub mod telemetry;
