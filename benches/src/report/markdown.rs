//! summary.md: where and what was run, the figures per level and target, the ratios
//! between targets and the charts.

use std::fmt::Write;

use super::table::{cells, ratio_rows, EXTRA, HEADERS, RATIO_HEADERS};
use super::{mib, LevelResult, Report};
use crate::cli::WorkloadKind;

/// A GitHub-flavoured pipe table: the first `left` columns left-aligned, the rest
/// (numbers) right-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let mut out = format!("| {} |\n|", headers.join(" | "));
    for i in 0..headers.len() {
        out += if i < left { " --- |" } else { " ---: |" };
    }
    out += "\n";
    for r in rows {
        out += &format!(
            "| {} |\n",
            r.iter()
                .map(|c| c.replace('|', "\\|"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    out
}

fn workload(report: &Report) -> String {
    let a = &report.args;
    let lens = |n: usize| match a.range_ratio {
        r if r > 0.0 => format!("{n} ±{:.0}%", r * 100.0),
        _ => n.to_string(),
    };
    let what = match a.workload {
        WorkloadKind::Random => format!("random prompts of {} tokens", lens(a.input_len)),
        WorkloadKind::Agent => format!(
            "agent conversations of {} turns sharing a {}-token system prompt with tool definitions, {} new tokens per turn",
            a.agent_turns, a.agent_system_len, lens(a.input_len)
        ),
        WorkloadKind::Jsonl => format!("requests from {}", a.jsonl.as_deref().map_or("?".into(), |p| p.display().to_string())),
    };
    let eos = if a.ignore_eos { " (ignore_eos)" } else { "" };
    format!(
        "{what}; {} output tokens{eos}; streaming `/{}`; {} requests per level after {} warm-up; seed {}; timeout {} s",
        lens(a.output_len),
        a.endpoint.path(),
        a.num_prompts,
        a.warmup,
        a.seed,
        a.timeout
    )
}

/// The whole summary; `charts` are file names next to it.
pub fn render(report: &Report, charts: &[String]) -> String {
    let m = &report.machine;
    let mut s = String::from("# inferd-bench results\n\n");
    let _ = writeln!(
        s,
        "- **When**: {} → {}",
        report.started_at, report.finished_at
    );
    let _ = writeln!(
        s,
        "- **Machine**: {} (host `{}`, kernel {}, {}, {} physical cores)",
        m.one_line(),
        m.hostname,
        m.kernel,
        m.arch,
        m.physical_cores.map_or("?".into(), |c| c.to_string())
    );
    let _ = writeln!(
        s,
        "- **Bench**: inferd-bench {} — `{}`",
        report.bench_version,
        report.command.join(" ")
    );
    let load =
        |l: Option<[f64; 3]>| l.map_or("?".into(), |l| format!("{} / {} / {}", l[0], l[1], l[2]));
    let _ = writeln!(
        s,
        "- **Load average** (1/5/15 min; other work on the machine skews the figures): {} at the start, {} at the end",
        load(m.load_average),
        load(report.load_average_end)
    );
    let _ = writeln!(s, "- **Workload**: {}", workload(report));
    if let Some(slo) = &report.args.slo {
        let _ = writeln!(s, "- **SLO for goodput**: {slo}");
    }
    s += "\n## Targets\n\n";
    let targets: Vec<Vec<String>> = report
        .targets
        .iter()
        .map(|t| {
            let ids: Vec<String> = t.models["data"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|m| {
                            format!(
                                "{} ({})",
                                m["id"].as_str().unwrap_or("?"),
                                m["owned_by"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mem = report
                .peak_memory(&t.name)
                .map_or("-".into(), |m| mib(m.rss_bytes.max(m.hwm_bytes)));
            vec![
                t.name.clone(),
                t.url.clone(),
                t.model.clone(),
                ids.join(", "),
                mem,
            ]
        })
        .collect();
    s += &table(
        &["name", "url", "model", "GET /models", "peak RSS"],
        &targets,
        4,
    );
    s += "\n## Results\n\nLatencies in ms (TTFT, TPOT, ITL, E2E: vLLM's definitions, see below).\n\n";
    let levels = report.levels();
    let mut ordered: Vec<&LevelResult> = report.results.iter().collect();
    ordered.sort_by_key(|r| levels.iter().position(|l| *l == r.level));
    let headers: Vec<&str> = HEADERS.iter().chain(EXTRA.iter()).copied().collect();
    s += &table(
        &headers,
        &ordered.iter().map(|r| cells(r)).collect::<Vec<_>>(),
        2,
    );
    let ratios = ratio_rows(report);
    if !ratios.is_empty() {
        s += "\n## Side by side\n\nEach target against the first: throughput ratios above 1 and latency ratios below 1 favour it.\n\n";
        s += &table(&RATIO_HEADERS, &ratios, 2);
    }
    let failures: Vec<String> = ordered
        .iter()
        .flat_map(|r| {
            r.summary
                .errors
                .iter()
                .map(move |(e, n)| format!("- {} {}: {n} × {e}", r.target, r.level.label()))
        })
        .collect();
    if !failures.is_empty() {
        s += "\n## Failures\n\n";
        s += &failures.join("\n");
        s += "\n";
    }
    if !charts.is_empty() {
        s += "\n## Charts\n\n";
        for c in charts {
            let _ = writeln!(s, "![{c}]({c})\n");
        }
    }
    s += "\n## Definitions\n\n\
- **TTFT**: request sent → first chunk carrying generated text. **ITL**: gaps between consecutive \
content chunks, over all requests. **TPOT**: (E2E − TTFT) / (output tokens − 1) per request. \
**E2E**: request sent → last SSE event.\n\
- Throughputs divide by the level's duration (first request sent → last one done); token counts \
come from the server's `usage` (prompt tokens include the chat template).\n\
- Percentiles use linear interpolation (numpy's default), over completed requests only.\n\
- **goodput**: completed requests meeting every SLO per second. **cached tok**: prompt tokens \
the server reported as served from its prefix cache.\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_table() {
        let t = table(
            &["a", "b", "c"],
            &[vec!["x".into(), "y|z".into(), "1".into()]],
            2,
        );
        assert_eq!(
            t,
            "| a | b | c |\n| --- | --- | ---: |\n| x | y\\|z | 1 |\n"
        );
    }
}
