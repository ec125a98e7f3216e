//! A session: warm every target up, then run the levels one by one, every target within a
//! level (interleaved, so that a noisy machine hurts all targets alike), on identical
//! requests; print a row per level and collect the [`Report`].

use std::time::Duration;

use crate::cli::RunArgs;
use crate::client::Client;
use crate::machine::MachineInfo;
use crate::metrics::summarize;
use crate::report::{table, LevelResult, Report, FORMAT};
use crate::runner::{resolve_targets, run_level, Level, Target};
use crate::workload::{generate, level_seed, RequestOpts};

fn now() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S %z")
        .to_string()
}

/// Options of one target's requests.
pub fn request_opts(args: &RunArgs, target: &Target) -> RequestOpts {
    RequestOpts {
        endpoint: args.endpoint,
        model: target.model.clone(),
        ignore_eos: args.ignore_eos,
        temperature: args.temperature,
    }
}

/// Sends `args.warmup` requests (closed loop, up to 4 at a time); fails when all fail.
async fn warm_up(client: &Client, args: &RunArgs, target: &Target) -> anyhow::Result<()> {
    if args.warmup == 0 {
        return Ok(());
    }
    let convs = generate(args, args.seed ^ 0x00A1_10F1, args.warmup)?;
    let level = Level::Closed {
        concurrency: args.warmup.min(4),
    };
    let bar = table::progress_bar(
        args.warmup,
        &format!("{} warm-up", target.name),
        !args.no_progress,
    );
    let run = run_level(
        client,
        target,
        &level,
        convs,
        request_opts(args, target),
        0,
        bar,
    )
    .await;
    if run.records.iter().all(|r| !r.ok) {
        let why = run
            .records
            .first()
            .and_then(|r| r.error.clone())
            .unwrap_or_default();
        anyhow::bail!("{}: every warm-up request failed: {why}", target.name);
    }
    Ok(())
}

/// Runs the whole sweep; `command` is the command line recorded in the report. Prints the
/// table as levels finish (unless `quiet`).
pub async fn run(args: &RunArgs, command: Vec<String>, quiet: bool) -> anyhow::Result<Report> {
    args.validate().map_err(anyhow::Error::msg)?;
    let client = Client::new(args.api_key.clone(), Duration::from_secs_f64(args.timeout));
    let started_at = now();
    let machine = MachineInfo::detect();
    let targets = resolve_targets(&client, args.target_specs()).await?;
    let say = |s: String| {
        if !quiet {
            println!("{s}");
        }
    };
    say(format!("machine: {}", machine.one_line()));
    for t in &targets {
        say(format!("target {}: {} model {}", t.name, t.url, t.model));
    }
    for t in &targets {
        warm_up(&client, args, t).await?;
    }
    let mut results: Vec<LevelResult> = vec![];
    let mut printed_header = false;
    for (i, level) in Level::sweep(args).into_iter().enumerate() {
        let seed = level_seed(args.seed, i);
        let convs = generate(args, seed, args.num_prompts)?;
        for t in &targets {
            let label = format!("{} {}", t.name, level.label());
            let bar = table::progress_bar(args.num_prompts, &label, !args.no_progress && !quiet);
            let run = run_level(
                &client,
                t,
                &level,
                convs.clone(),
                request_opts(args, t),
                seed,
                bar,
            )
            .await;
            let summary = summarize(&run.records, run.duration_s, args.slo.as_ref());
            let result = LevelResult {
                target: t.name.clone(),
                level,
                summary,
                memory: run.memory,
                requests: run.records,
            };
            if !printed_header {
                say(format!("latencies in ms\n{}", table::live_header()));
                printed_header = true;
            }
            say(table::live_row(&result));
            results.push(result);
        }
    }
    Ok(Report {
        format: FORMAT,
        bench_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at,
        finished_at: now(),
        command,
        args: args.clone(),
        machine,
        load_average_end: crate::machine::load_average(),
        targets,
        results,
    })
}
