//! Command line: what to send (workload), where (targets), how hard (levels) and what to
//! write (reports). Parsing only; `runner` and `report` do the work.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// Load generator and reports for inferd and any OpenAI-compatible server.
///
/// Without a subcommand it runs a sweep: every level (concurrency or request rate) against
/// every target, interleaved level by level, with vLLM's metric definitions.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "inferd-bench",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Helpers for scripts (`make bench`) and for re-rendering reports.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Print a free TCP port on 127.0.0.1.
    FreePort,
    /// Wait until URL answers 2xx (e.g. http://127.0.0.1:8080/ready); fail after --timeout
    /// seconds, or as soon as process --pid has exited.
    WaitReady {
        url: String,
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Re-render summary.md and the SVG charts from a results.json.
    Report {
        results: PathBuf,
        /// Output directory (default: the directory of RESULTS).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Options of a sweep (and of the focused scenarios).
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunArgs {
    /// A server to measure: NAME=URL[,model=ID][,pid=PID]. Repeat to compare servers side
    /// by side (ratios are against the first). Without it: --url, --model, --server-pid.
    #[arg(long = "target", value_name = "NAME=URL[,model=ID][,pid=PID]")]
    pub targets: Vec<TargetSpec>,
    /// Base URL of the API when no --target is given.
    #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
    pub url: String,
    /// Model id for targets that name none (default: the first id of GET /models).
    #[arg(long)]
    pub model: Option<String>,
    /// Bearer token sent to every target.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    #[serde(skip)]
    pub api_key: Option<String>,
    /// API to stream from.
    #[arg(long, value_enum, default_value_t = Endpoint::Chat)]
    pub endpoint: Endpoint,
    /// What to send: random prompts, agent conversations, or requests from --jsonl.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Random)]
    pub workload: WorkloadKind,
    /// Prompt length in tokens (random: the user prompt; agent: each new user turn).
    #[arg(long, default_value_t = 128)]
    pub input_len: usize,
    /// Lengths are drawn uniformly from [len*(1-r), len*(1+r)] (vLLM's --random-range-ratio).
    #[arg(long, default_value_t = 0.0)]
    pub range_ratio: f64,
    /// Tokens to generate per request (max_tokens; exact with --ignore-eos).
    #[arg(long, alias = "max-tokens", default_value_t = 64)]
    pub output_len: usize,
    /// Send `ignore_eos: true` so that every request generates --output-len tokens.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub ignore_eos: bool,
    /// Sampling temperature of every request.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Agent workload: length of the shared system prompt with tool definitions, in tokens.
    #[arg(long, default_value_t = 1024)]
    pub agent_system_len: usize,
    /// Agent workload: turns per conversation (each includes all earlier replies).
    #[arg(long, default_value_t = 4)]
    pub agent_turns: usize,
    /// JSONL workload: one request body per line, with "messages" (chat) or "prompt".
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Closed loop: comma-separated numbers of requests kept in flight.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16", action = ArgAction::Set)]
    pub concurrency: Vec<usize>,
    /// Open loop instead: comma-separated arrival rates in requests/s ("inf": all at once).
    #[arg(long, value_delimiter = ',', action = ArgAction::Set)]
    #[serde(with = "inf_as_string")]
    pub request_rate: Vec<f64>,
    /// Open loop: gamma shape of the inter-arrival times (1 = Poisson; <1 burstier).
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Open loop: cap on requests in flight.
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Requests measured per level and target.
    #[arg(long, alias = "requests", default_value_t = 32)]
    pub num_prompts: usize,
    /// Requests sent to each target before the first level, excluded from the figures.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Per-request timeout in seconds (a timed-out request counts as failed).
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Seed of the workload and of the arrival times: same seed, same requests.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Service-level objectives for goodput, in ms: ttft=500,tpot=100[,e2e=…].
    #[arg(long)]
    pub slo: Option<Slo>,
    /// PID of the server (without --target): its peak memory is recorded.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write results.json, summary.md and SVG charts here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Run a focused scenario on the first target instead of the sweep.
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// POST /chat/completions
    Chat,
    /// POST /completions
    Completions,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat/completions",
            Endpoint::Completions => "completions",
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    Random,
    Agent,
    Jsonl,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// TTFT with a ~1,000-token cached prefix vs a cold one.
    PrefixCache,
    /// ITL of running streams while a ~2,000-token prompt is prefilled.
    PrefillInterference,
}

/// One server: `NAME=URL[,model=ID][,pid=PID]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSpec {
    pub name: String,
    pub url: String,
    pub model: Option<String>,
    pub pid: Option<u32>,
}

impl FromStr for TargetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or_default();
        let (name, url) = head
            .split_once('=')
            .filter(|(n, u)| !n.is_empty() && !u.is_empty())
            .ok_or_else(|| format!("{s:?}: expected NAME=URL[,model=ID][,pid=PID]"))?;
        let mut spec = TargetSpec {
            name: name.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            model: None,
            pid: None,
        };
        for part in parts {
            match part.split_once('=') {
                Some(("model", m)) if !m.is_empty() => spec.model = Some(m.to_owned()),
                Some(("pid", p)) => {
                    spec.pid = Some(p.parse().map_err(|_| format!("{s:?}: bad pid {p:?}"))?)
                }
                _ => return Err(format!("{s:?}: unknown option {part:?} (model=, pid=)")),
            }
        }
        Ok(spec)
    }
}

/// Service-level objectives in milliseconds; a request meets them when each given one holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

impl FromStr for Slo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut slo = Slo::default();
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected KEY=MS"))?;
            let ms: f64 = v
                .trim_end_matches("ms")
                .parse()
                .ok()
                .filter(|v: &f64| *v > 0.0)
                .ok_or_else(|| format!("{part:?}: expected a positive number of ms"))?;
            match k {
                "ttft" => slo.ttft_ms = Some(ms),
                "tpot" => slo.tpot_ms = Some(ms),
                "e2e" | "e2el" => slo.e2e_ms = Some(ms),
                _ => return Err(format!("{k:?}: unknown SLO (ttft, tpot, e2e)")),
            }
        }
        Ok(slo)
    }
}

impl std::fmt::Display for Slo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            ("ttft", self.ttft_ms),
            ("tpot", self.tpot_ms),
            ("e2e", self.e2e_ms),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}≤{v}ms")))
        .collect();
        f.write_str(&parts.join(", "))
    }
}

impl RunArgs {
    /// The targets to measure: the --target list, or one named "server" from --url.
    pub fn target_specs(&self) -> Vec<TargetSpec> {
        if self.targets.is_empty() {
            return vec![TargetSpec {
                name: "server".into(),
                url: self.url.trim_end_matches('/').to_owned(),
                model: self.model.clone(),
                pid: self.server_pid,
            }];
        }
        let mut specs = self.targets.clone();
        for s in &mut specs {
            s.model = s.model.clone().or_else(|| self.model.clone());
        }
        if let Some(first) = specs.first_mut() {
            first.pid = first.pid.or(self.server_pid);
        }
        specs
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        let names: Vec<_> = self.target_specs().into_iter().map(|t| t.name).collect();
        if names
            .iter()
            .enumerate()
            .any(|(i, n)| names[..i].contains(n))
        {
            return Err("--target names must be unique".into());
        }
        if self.request_rate.is_empty()
            && (self.concurrency.is_empty() || self.concurrency.contains(&0))
        {
            return Err("--concurrency needs positive values".into());
        }
        if self.request_rate.iter().any(|r| r.is_nan() || *r <= 0.0) {
            return Err("--request-rate needs positive values (or inf)".into());
        }
        if !(self.burstiness > 0.0 && self.burstiness.is_finite()) {
            return Err("--burstiness must be a positive number".into());
        }
        if self.num_prompts == 0 || self.output_len == 0 || self.input_len == 0 {
            return Err("--num-prompts, --input-len and --output-len must be positive".into());
        }
        if !(0.0..1.0).contains(&self.range_ratio) {
            return Err("--range-ratio must be in [0, 1)".into());
        }
        if self.timeout.is_nan() || self.timeout <= 0.0 {
            return Err("--timeout must be positive".into());
        }
        if self.workload == WorkloadKind::Jsonl && self.jsonl.is_none() {
            return Err("--workload jsonl needs --jsonl FILE".into());
        }
        if self.workload == WorkloadKind::Agent && self.agent_turns == 0 {
            return Err("--agent-turns must be positive".into());
        }
        Ok(())
    }
}

/// JSON has no infinity: rates are numbers, or "inf".
mod inf_as_string {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Rate {
        Finite(f64),
        Named(String),
    }

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let named = |x: &f64| {
            if x.is_finite() {
                Rate::Finite(*x)
            } else {
                Rate::Named("inf".into())
            }
        };
        v.iter().map(named).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let parse = |r: Rate| match r {
            Rate::Finite(x) => Ok(x),
            Rate::Named(n) => n
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("bad rate {n:?}"))),
        };
        Vec::<Rate>::deserialize(d)?
            .into_iter()
            .map(parse)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_slos_parse() {
        let t: TargetSpec = "llamacpp=http://127.0.0.1:8081/v1/,model=smol,pid=42"
            .parse()
            .unwrap();
        assert_eq!(t.name, "llamacpp");
        assert_eq!(t.url, "http://127.0.0.1:8081/v1");
        assert_eq!((t.model.as_deref(), t.pid), (Some("smol"), Some(42)));
        assert!("http://x".parse::<TargetSpec>().is_err());
        assert!("a=http://x,foo=1".parse::<TargetSpec>().is_err());
        let slo: Slo = "ttft=500,tpot=100ms".parse().unwrap();
        assert_eq!(
            (slo.ttft_ms, slo.tpot_ms, slo.e2e_ms),
            (Some(500.0), Some(100.0), None)
        );
        assert!("ttft=-1".parse::<Slo>().is_err());
    }

    #[test]
    fn cli_defaults_and_aliases() {
        let cli = Cli::parse_from([
            "inferd-bench",
            "--requests",
            "8",
            "--max-tokens",
            "5",
            "--request-rate",
            "2,inf",
        ]);
        let a = cli.run;
        assert_eq!((a.num_prompts, a.output_len), (8, 5));
        // Later options override earlier ones (make bench puts its defaults first).
        let over = Cli::parse_from([
            "b",
            "--concurrency",
            "1,4",
            "--num-prompts",
            "3",
            "--concurrency",
            "8",
            "--num-prompts",
            "5",
        ]);
        assert_eq!((over.run.concurrency, over.run.num_prompts), (vec![8], 5));
        assert_eq!(a.request_rate[1], f64::INFINITY);
        assert_eq!(a.target_specs()[0].url, "http://127.0.0.1:8080/v1");
        a.validate().unwrap();
        let cli = Cli::parse_from([
            "inferd-bench",
            "wait-ready",
            "http://x/ready",
            "--timeout",
            "3",
        ]);
        assert!(matches!(
            cli.command,
            Some(Command::WaitReady { timeout: 3, .. })
        ));
    }
}
