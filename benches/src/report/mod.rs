//! The results of a session and the files written from them: results.json (everything, raw
//! per-request timings included), summary.md and SVG charts; plus the terminal table.

pub mod json;
pub mod markdown;
pub mod svg;
pub mod table;

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cli::RunArgs;
use crate::client::RequestRecord;
use crate::machine::{MachineInfo, Memory};
use crate::metrics::Summary;
use crate::runner::{Level, Target};

/// Bumped when results.json changes incompatibly.
pub const FORMAT: u32 = 1;

/// Everything a session measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format: u32,
    pub bench_version: String,
    pub started_at: String,
    pub finished_at: String,
    /// The command line, as typed.
    pub command: Vec<String>,
    pub args: RunArgs,
    pub machine: MachineInfo,
    /// Load averages when the session ended (the machine's are from its start).
    #[serde(default)]
    pub load_average_end: Option<[f64; 3]>,
    pub targets: Vec<Target>,
    /// In the order run: level by level, every target within a level.
    pub results: Vec<LevelResult>,
}

/// One level on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelResult {
    pub target: String,
    pub level: Level,
    pub summary: Summary,
    /// Server memory during the level (peak RSS sampled, VmHWM at the end).
    pub memory: Option<Memory>,
    pub requests: Vec<RequestRecord>,
}

impl Report {
    /// The distinct levels, in the order run.
    pub fn levels(&self) -> Vec<Level> {
        let mut out: Vec<Level> = vec![];
        for r in &self.results {
            if !out.contains(&r.level) {
                out.push(r.level);
            }
        }
        out
    }

    pub fn result(&self, target: &str, level: &Level) -> Option<&LevelResult> {
        self.results
            .iter()
            .find(|r| r.target == target && r.level == *level)
    }

    /// The x-axis name of the sweep.
    pub fn x_name(&self) -> &'static str {
        match self.levels().first() {
            Some(Level::Open { .. }) => "request rate (req/s)",
            _ => "concurrency",
        }
    }

    /// The peak memory of a target over the whole session.
    pub fn peak_memory(&self, target: &str) -> Option<Memory> {
        self.results
            .iter()
            .filter(|r| r.target == target)
            .filter_map(|r| r.memory)
            .reduce(|a, b| Memory {
                rss_bytes: a.rss_bytes.max(b.rss_bytes),
                hwm_bytes: a.hwm_bytes.max(b.hwm_bytes),
            })
    }
}

/// Writes results.json, summary.md and the charts into `dir`; returns the files written.
pub fn write_all(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = vec![json::write(report, &dir.join("results.json"))?];
    files.extend(svg::write_charts(report, dir)?);
    let charts: Vec<String> = files[1..]
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let md = dir.join("summary.md");
    std::fs::write(&md, markdown::render(report, &charts))
        .with_context(|| format!("writing {}", md.display()))?;
    files.push(md);
    Ok(files)
}

/// "123.4 MiB".
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}
