//! inferd: a self-hosted, OpenAI-compatible model server.
//!
//! Dependencies point one way: `api → backend ← engine → model → inferd-kernels`.

pub mod api;
pub mod backend;
pub mod cli;
pub mod config;
pub mod engine;
pub mod gateway;
pub mod model;
pub mod serve;
pub mod telemetry;
