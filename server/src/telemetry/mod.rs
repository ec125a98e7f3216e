//! Logging: `tracing` events as text or JSON lines on stderr.
//!
//! The level filter comes from `RUST_LOG` (`EnvFilter` syntax, e.g.
//! `info,inferd::engine=debug`); without it, `info`. Invalid directives are
//! ignored rather than fatal. Every line carries the fields of the spans it
//! was logged in, so a `request_id` recorded on a request span appears in
//! every line of that request:
//!
//! - text: `2025-01-01T00:00:00Z  INFO request{request_id=abc}: inferd::api: done`
//! - JSON: `{"timestamp":…,"level":"INFO","fields":{"message":"done"},"target":…,
//!   "span":{"request_id":"abc","name":"request"},"spans":[{…}]}`
//!
//! `log`-crate records (e.g. from `hf-hub`, `ureq`) are forwarded too.

pub mod gateway_metrics;
pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (ANSI colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the current span and the span list.
    Json,
}

/// Crates whose debug and trace output carries secrets: SigV4's canonical requests and
/// signing keys, and the AWS runtime's request dumps with the `Authorization` header.
/// They are capped at `info` whatever `RUST_LOG` says, so no setting leaks a credential.
const SECRET_BEARING_TARGETS: [&str; 3] = ["aws_sigv4", "aws_smithy_runtime", "aws_config"];

/// The filter from `RUST_LOG`, defaulting to `info`; invalid directives are skipped.
/// [`SECRET_BEARING_TARGETS`] never log below `info`.
pub fn env_filter() -> EnvFilter {
    filter_from(&std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default())
}

/// [`env_filter`] for the given directives.
fn filter_from(directives: &str) -> EnvFilter {
    let mut filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse_lossy(directives);
    for target in SECRET_BEARING_TARGETS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// A subscriber writing `format` lines to `writer`, filtered by `filter`.
/// [`init`] installs one on stderr with [`env_filter`]; tests can use one with
/// `tracing::subscriber::with_default` and an in-memory writer.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

/// Install the global subscriber (stderr, `format`). Idempotent: returns
/// `false`, changing nothing, when a global subscriber is already set.
pub fn init(format: LogFormat) -> bool {
    let ansi = std::io::stderr().is_terminal();
    subscriber(format, env_filter(), std::io::stderr, ansi)
        .try_init()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An in-memory writer shared with the test.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn capture(format: LogFormat) -> String {
        let buf = Buf::default();
        let sub = subscriber(format, EnvFilter::new("info"), buf.clone(), false);
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("request", request_id = "req-42");
            let _g = span.enter();
            tracing::info!(tokens = 3, "first");
            tracing::warn!("second");
        });
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_log_setting_reveals_what_sigv4_traces() {
        for directives in [
            "trace",
            "inferd=debug,aws_sigv4=trace,aws_smithy_runtime=trace",
            "",
        ] {
            let buf = Buf::default();
            let sub = subscriber(LogFormat::Text, filter_from(directives), buf.clone(), false);
            tracing::subscriber::with_default(sub, || {
                tracing::trace!(target: "aws_sigv4::http_request::sign", "signing key 0xSECRET");
                tracing::debug!(target: "aws_smithy_runtime::client", "authorization: AWS4 SECRET");
                tracing::info!(target: "inferd::gateway", "kept");
            });
            let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert!(!out.contains("SECRET"), "{directives:?}: {out}");
            assert!(out.contains("kept"), "{directives:?}: {out}");
        }
    }

    #[test]
    fn json_lines_carry_span_fields() {
        let out = capture(LogFormat::Json);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        for line in lines {
            assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
            assert!(line.contains("\"request_id\":\"req-42\""), "{line}");
            assert!(line.contains("\"spans\":["), "{line}");
        }
    }

    #[test]
    fn text_lines_carry_span_fields() {
        let out = capture(LogFormat::Text);
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(
            out.lines()
                .all(|l| l.contains("request_id=\"req-42\"") || l.contains("request_id=req-42")),
            "{out}"
        );
    }

    #[test]
    fn init_is_idempotent() {
        init(LogFormat::Text);
        assert!(!init(LogFormat::Json));
    }
}
