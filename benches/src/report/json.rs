//! results.json: the whole [`Report`], pretty-printed; reading it back gives the same value.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Report, FORMAT};

pub fn to_string(report: &Report) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(report)?)
}

pub fn from_str(text: &str) -> anyhow::Result<Report> {
    let report: Report = serde_json::from_str(text)?;
    anyhow::ensure!(
        report.format == FORMAT,
        "results format {} (this bench reads {FORMAT})",
        report.format
    );
    Ok(report)
}

pub fn write(report: &Report, path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::write(path, to_string(report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_owned())
}

pub fn read(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
