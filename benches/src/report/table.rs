//! The terminal view: a progress bar per level, one row per finished level, and at the end
//! the targets side by side. The cells are shared with summary.md.

use indicatif::{ProgressBar, ProgressStyle};

use super::{mib, LevelResult, Report};
use crate::metrics::Stats;

/// A progress bar counting `len` requests (hidden when `enabled` is false or stderr is not
/// a terminal).
pub fn progress_bar(len: usize, label: &str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    let style =
        ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
            .expect("template")
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Columns of the per-level table.
pub const HEADERS: [&str; 14] = [
    "target",
    "level",
    "ok",
    "fail",
    "req/s",
    "out tok/s",
    "total tok/s",
    "TTFT p50",
    "TTFT p90",
    "TTFT p99",
    "TPOT p50",
    "ITL p50",
    "ITL p90",
    "ITL p99",
];

/// Extra columns after [`HEADERS`], shown when they have data.
pub const EXTRA: [&str; 5] = ["E2E p50", "goodput", "tok in/out", "cached tok", "peak RSS"];

fn ms(s: &Option<Stats>, f: fn(&Stats) -> f64) -> String {
    s.as_ref().map_or("-".into(), |s| format!("{:.1}", f(s)))
}

/// The cells of one row: [`HEADERS`] then [`EXTRA`].
pub fn cells(r: &LevelResult) -> Vec<String> {
    let s = &r.summary;
    vec![
        r.target.clone(),
        r.level.label(),
        s.completed.to_string(),
        s.failed.to_string(),
        format!("{:.2}", s.request_throughput),
        format!("{:.1}", s.output_throughput),
        format!("{:.1}", s.total_token_throughput),
        ms(&s.ttft_ms, |s| s.p50),
        ms(&s.ttft_ms, |s| s.p90),
        ms(&s.ttft_ms, |s| s.p99),
        ms(&s.tpot_ms, |s| s.p50),
        ms(&s.itl_ms, |s| s.p50),
        ms(&s.itl_ms, |s| s.p90),
        ms(&s.itl_ms, |s| s.p99),
        ms(&s.e2e_ms, |s| s.p50),
        s.goodput.map_or("-".into(), |g| format!("{g:.2}/s")),
        match s.completed {
            0 => "-".into(),
            n => format!(
                "{}/{}",
                s.input_tokens / n as u64,
                s.output_tokens / n as u64
            ),
        },
        s.cached_tokens.to_string(),
        r.memory
            .map_or("-".into(), |m| mib(m.rss_bytes.max(m.hwm_bytes))),
    ]
}

/// Right-aligned columns (the first two left-aligned) with a header rule.
pub fn grid(headers: &[&str], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([headers[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..headers.len()).map(width).collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < 2 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(&headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out += &line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
    for r in rows {
        out += &line(r);
    }
    out
}

/// Widths of the live table, printed a row at a time as levels finish.
fn live_widths() -> Vec<usize> {
    let mut w: Vec<usize> = HEADERS
        .iter()
        .chain(EXTRA.iter())
        .map(|h| h.len().max(7))
        .collect();
    w[0] = 12;
    w[1] = 8;
    w
}

fn live_line(cells: &[String]) -> String {
    let w = live_widths();
    let padded: Vec<String> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < 2 {
                format!("{c:<w$}", w = w[i])
            } else {
                format!("{c:>w$}", w = w[i])
            }
        })
        .collect();
    padded.join(" ").trim_end().to_owned()
}

/// Header of the live table (latencies in ms).
pub fn live_header() -> String {
    let h: Vec<String> = HEADERS
        .iter()
        .chain(EXTRA.iter())
        .map(|h| h.to_string())
        .collect();
    live_line(&h)
}

/// One finished level in the live table.
pub fn live_row(r: &LevelResult) -> String {
    live_line(&cells(r))
}

/// The per-level table of `results` (all columns of [`HEADERS`] and [`EXTRA`]).
pub fn level_table(results: &[&LevelResult]) -> String {
    let headers: Vec<&str> = HEADERS.iter().chain(EXTRA.iter()).copied().collect();
    grid(
        &headers,
        &results.iter().map(|r| cells(r)).collect::<Vec<_>>(),
    )
}

/// Ratios of every other target to the first, per level: output throughput (higher is
/// better) and TTFT, TPOT, ITL medians (lower is better). Empty with one target.
pub fn ratio_rows(report: &Report) -> Vec<Vec<String>> {
    let Some(base) = report.targets.first() else {
        return vec![];
    };
    let mut rows = vec![];
    for level in report.levels() {
        let Some(b) = report.result(&base.name, &level) else {
            continue;
        };
        for t in &report.targets[1..] {
            let Some(r) = report.result(&t.name, &level) else {
                continue;
            };
            let (bs, rs) = (&b.summary, &r.summary);
            let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
                (Some(x), Some(y)) if y > 0.0 => format!("{:.2}x", x / y),
                _ => "-".into(),
            };
            let p50 = |s: &Option<Stats>| s.as_ref().map(|s| s.p50);
            rows.push(vec![
                format!("{} / {}", t.name, base.name),
                level.label(),
                ratio(Some(rs.output_throughput), Some(bs.output_throughput)),
                ratio(Some(rs.request_throughput), Some(bs.request_throughput)),
                ratio(p50(&rs.ttft_ms), p50(&bs.ttft_ms)),
                ratio(p50(&rs.tpot_ms), p50(&bs.tpot_ms)),
                ratio(p50(&rs.itl_ms), p50(&bs.itl_ms)),
            ]);
        }
    }
    rows
}

pub const RATIO_HEADERS: [&str; 7] = [
    "targets",
    "level",
    "out tok/s",
    "req/s",
    "TTFT p50",
    "TPOT p50",
    "ITL p50",
];

/// The closing terminal summary: every level of every target, then the ratios.
pub fn final_table(report: &Report) -> String {
    let levels = report.levels();
    let mut rows: Vec<&LevelResult> = report.results.iter().collect();
    rows.sort_by_key(|r| levels.iter().position(|l| *l == r.level)); // stable: targets in order
    let mut out = level_table(&rows);
    let ratios = ratio_rows(report);
    if !ratios.is_empty() {
        out += "\nratios vs the first target (throughput: higher is better; latencies: lower is better)\n";
        out += &grid(&RATIO_HEADERS, &ratios);
    }
    out
}
