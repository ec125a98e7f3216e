//! inferd-bench: see `inferd-bench --help` and the README's "Benchmarks" section.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use inferd_bench::cli::{Cli, Command, RunArgs, Scenario};
use inferd_bench::client::Client;
use inferd_bench::report::{self, json, table};
use inferd_bench::runner::resolve_targets;
use inferd_bench::{scenarios, sweep};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::FreePort) => {
            let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            Ok(())
        }
        Some(Command::WaitReady { url, timeout, pid }) => wait_ready(&url, timeout, pid).await,
        Some(Command::Report { results, out }) => {
            let r = json::read(&results)?;
            let dir = out.unwrap_or_else(|| results.parent().map(Into::into).unwrap_or_default());
            let files = report::write_all(&r, &dir)?;
            print!("{}", table::final_table(&r));
            files.iter().for_each(|f| println!("wrote {}", f.display()));
            Ok(())
        }
        None => match cli.run.scenario {
            Some(s) => scenario(&cli.run, s).await,
            None => run(&cli.run).await,
        },
    }
}

async fn run(args: &RunArgs) -> anyhow::Result<()> {
    let report = sweep::run(args, std::env::args().collect(), false).await?;
    println!("\n{}", table::final_table(&report));
    if let Some(dir) = &args.out {
        for f in report::write_all(&report, dir)? {
            println!("wrote {}", f.display());
        }
    }
    let failed: usize = report.results.iter().map(|r| r.summary.failed).sum();
    if failed > 0 {
        eprintln!("{failed} request(s) failed; see the errors in the report");
    }
    Ok(())
}

async fn scenario(args: &RunArgs, s: Scenario) -> anyhow::Result<()> {
    let client = Client::new(args.api_key.clone(), Duration::from_secs_f64(args.timeout));
    let spec = args.target_specs().swap_remove(0);
    let t = resolve_targets(&client, vec![spec]).await?.swap_remove(0);
    match s {
        Scenario::PrefixCache => scenarios::prefix_cache(client.http(), &t.url, &t.model).await,
        Scenario::PrefillInterference => {
            scenarios::prefill_interference(client.http(), &t.url, &t.model).await
        }
    }
}

/// Polls `url` until it answers 2xx.
async fn wait_ready(url: &str, timeout: u64, pid: Option<u32>) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let ok = http.get(url).timeout(Duration::from_secs(2)).send().await;
        if ok.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            bail!(
                "process {} exited before {url} was ready",
                pid.unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("{url} not ready after {timeout} s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
