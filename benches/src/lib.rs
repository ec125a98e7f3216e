//! inferd-bench: a load generator and reports for inferd and any OpenAI-compatible server.
//!
//! `cli` parses, `workload` builds requests, `client` streams one and times it, `runner`
//! drives closed and open loops, `metrics` turns records into vLLM's figures, `sweep` runs
//! a session over targets and levels, `report` writes JSON, Markdown, SVG and the terminal
//! table, `machine` says where it ran. `scenarios` holds focused engine checks.

pub mod cli;
pub mod client;
pub mod machine;
pub mod metrics;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod sweep;
pub mod workload;
