//! Test harness: starts the real `inferd` binary with a real model on an ephemeral port and
//! talks to it over real sockets. Each test gets its own server (killed on drop), so tests
//! never share engine state.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The id the default catalog gives SmolLM2.
pub const SMOLLM2_ID: &str = "smollm2-135m-instruct";

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .parent()
    .expect("tests/ has a parent")
    .to_path_buf()
}

/// The SmolLM2 GGUF fetched by `make models`. Panics with instructions if missing.
pub fn smollm2_gguf() -> PathBuf {
    let p = workspace_root().join("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run `make models` first",
        p.display()
    );
    p
}

/// The `inferd` binary built by `cargo build --release` (next to this test executable).
pub fn inferd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("INFERD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = dir.join(format!("inferd{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --release -p inferd`, done by `make test`)",
        bin.display()
    );
    bin
}

/// Engine limits for a test server's catalog entry.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub dequantize: bool,
    pub max_model_len: usize,
    pub kv_cache_tokens: usize,
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub max_waiting: usize,
    pub max_body_bytes: usize,
    pub drain_timeout_secs: u64,
    /// Share the KV blocks of identical prompt prefixes (`enable_prefix_caching`).
    pub enable_prefix_caching: bool,
    /// Default deadline of requests without the header (`request_timeout_secs`).
    pub request_timeout_secs: Option<u64>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            dequantize: true,
            max_model_len: 2048,
            kv_cache_tokens: 16384,
            max_num_seqs: 32,
            max_num_batched_tokens: 2048,
            block_size: 16,
            max_waiting: 256,
            max_body_bytes: 1024 * 1024,
            drain_timeout_secs: 30,
            enable_prefix_caching: true,
            request_timeout_secs: None,
        }
    }
}

/// A running `inferd serve`. Killed when dropped.
pub struct Server {
    pub base_url: String,
    pub model: String,
    pub child: Child,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "inferd-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A catalog with one SmolLM2 entry.
pub fn smollm2_catalog(o: &ServerOptions) -> String {
    let mut catalog = format!(
        "[[model]]\nid = \"{SMOLLM2_ID}\"\npath = \"{}\"\ndequantize = {}\nmax_model_len = {}\nkv_cache_tokens = {}\nmax_num_seqs = {}\nmax_num_batched_tokens = {}\nblock_size = {}\nmax_waiting = {}\nenable_prefix_caching = {}\n",
        smollm2_gguf().display(),
        o.dequantize,
        o.max_model_len,
        o.kv_cache_tokens,
        o.max_num_seqs,
        o.max_num_batched_tokens,
        o.block_size,
        o.max_waiting,
        o.enable_prefix_caching,
    );
    if let Some(t) = o.request_timeout_secs {
        catalog.push_str(&format!("request_timeout_secs = {t}\n"));
    }
    catalog
}

/// Starts `inferd serve` with SmolLM2 and the default test limits.
pub async fn start_default_server() -> Server {
    start_server(&ServerOptions::default()).await
}

/// Starts `inferd serve` with SmolLM2 and the given limits, and waits until `/ready`.
pub async fn start_server(o: &ServerOptions) -> Server {
    start_with_catalog(&smollm2_catalog(o), SMOLLM2_ID, o).await
}

/// Starts `inferd serve` with any catalog text.
pub async fn start_with_catalog(catalog: &str, model: &str, o: &ServerOptions) -> Server {
    start_process(&Launch::serve(catalog, model, o)).await
}

/// How to start one `inferd` process.
#[derive(Clone, Debug)]
pub struct Launch {
    /// `serve` or `gateway`.
    pub role: &'static str,
    /// The models.toml text.
    pub catalog: String,
    /// The model id tests talk to.
    pub model: String,
    pub options: ServerOptions,
    /// 0: an ephemeral port.
    pub port: u16,
    /// Extra environment (e.g. AWS credentials for the gateway's Bedrock backend).
    pub env: Vec<(String, String)>,
}

impl Launch {
    pub fn serve(catalog: &str, model: &str, o: &ServerOptions) -> Self {
        Launch {
            role: "serve",
            catalog: catalog.to_owned(),
            model: model.to_owned(),
            options: o.clone(),
            port: 0,
            env: Vec::new(),
        }
    }

    pub fn gateway(catalog: &str, model: &str) -> Self {
        Launch {
            role: "gateway",
            ..Self::serve(catalog, model, &ServerOptions::default())
        }
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A port nothing listens on right now (bound, read, released), for a replica that a
/// test starts later at an address the gateway already knows.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Starts an `inferd` process and waits until it listens and `/ready` answers 200.
pub async fn start_process(launch: &Launch) -> Server {
    let o = &launch.options;
    let dir = TempDir::new(launch.role);
    let models = dir.0.join("models.toml");
    std::fs::write(&models, &launch.catalog).expect("write models.toml");
    let mut command = Command::new(inferd_bin());
    command
        .arg(launch.role)
        .args(["--host", "127.0.0.1", "--port", &launch.port.to_string()])
        .arg("--models")
        .arg(&models)
        .arg("--max-body-bytes")
        .arg(o.max_body_bytes.to_string())
        .arg("--drain-timeout-secs")
        .arg(o.drain_timeout_secs.to_string())
        .env(
            "RUST_LOG",
            std::env::var("INFERD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn inferd");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base_url = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await.expect("read inferd stdout") {
            if let Some(url) = line.strip_prefix("inferd listening on ") {
                return url.trim().to_string();
            }
        }
        panic!("inferd {} exited before listening", launch.role);
    })
    .await
    .expect("inferd did not start listening within 180s");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let server = Server {
        base_url,
        model: launch.model.clone(),
        child,
        _dir: dir,
    };
    server.wait_ready().await;
    server
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Polls `/ready` until it answers 200 (the listener is already bound, so this is
    /// waiting on a condition, not on time).
    pub async fn wait_ready(&self) {
        let c = client();
        for _ in 0..600 {
            if let Ok(r) = c.get(self.url("/ready")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} never became ready", self.base_url);
    }

    /// `host:port` the server listens on (what a gateway's `urls` lists).
    pub fn addr(&self) -> String {
        self.base_url.trim_start_matches("http://").to_owned()
    }

    /// Kills the process at once (SIGKILL): a replica that dies, not one that drains.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The server's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("child is running")
    }

    /// Sends SIGTERM to the server (graceful drain), through `kill(1)`.
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -TERM {} failed: {status}",
            self.pid()
        );
    }

    /// The Prometheus text of `GET /metrics` (panics unless it answers 200).
    pub async fn metrics_text(&self) -> String {
        let r = client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert!(r.status().is_success(), "GET /metrics: {}", r.status());
        r.text().await.expect("read /metrics")
    }
}

/// The value of a series in Prometheus text exposition, summed over every sample that
/// matches: `name` alone matches the metric with any labels; `name{k="v",...}` matches
/// samples of `name` that carry at least those labels (in any order, others allowed).
/// `None` if no sample matches.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    let (name, wanted) = split_series(series);
    let mut sum = None;
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // `series value [timestamp]`; label values may contain spaces, so split after `}`.
        let (key, rest) = match line.rfind('}') {
            Some(end) => (&line[..=end], &line[end + 1..]),
            None => match line.split_once(char::is_whitespace) {
                Some((k, r)) => (k, r),
                None => continue,
            },
        };
        let (got_name, got_labels) = split_series(key);
        if got_name != name || !wanted.iter().all(|l| got_labels.contains(l)) {
            continue;
        }
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().ok()?,
        };
        *sum.get_or_insert(0.0) += value;
    }
    sum
}

/// `name{a="x",b="y"}` → (`name`, [`a="x"`, `b="y"`]). Label values with commas inside
/// quotes are kept whole.
fn split_series(series: &str) -> (&str, Vec<String>) {
    let Some(open) = series.find('{') else {
        return (series.trim(), Vec::new());
    };
    let name = series[..open].trim();
    let inner = series[open + 1..].trim_end().trim_end_matches('}');
    let mut labels = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                labels.push(std::mem::take(&mut current).trim().to_string());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        labels.push(current.trim().to_string());
    }
    (name, labels)
}

/// An incremental SSE reader: feed it network chunks, get each event's `data` (multi-line
/// data joined with `\n`), ignoring comments and other fields. Handles lines split across
/// chunks and `\r\n` line ends.
#[derive(Default)]
pub struct SseParser {
    pending: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8(line).expect("SSE lines are UTF-8");
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data
                    .push(value.strip_prefix(' ').unwrap_or(value).to_owned());
            }
        }
        events
    }
}

/// An HTTP client with a generous overall timeout (CPU inference is slow, never hangs).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("reqwest client")
}

/// Parses an SSE body into its `data:` payloads (in order), `[DONE]` included.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .flat_map(|event| event.lines())
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim_start().to_string())
        .collect()
}

pub mod fake_bedrock;
pub mod oracle;
mod requests;

pub use requests::*;
